"""``--auth oidc``: log in with an OpenID Connect provider (Keycloak, Authentik, Google…).

The authorization code flow, with state, nonce and PKCE (S256):

1. ``GET {root}/auth/oidc/login?next=/path`` sends the browser to the provider's authorize
   endpoint. The values the callback must check (state, nonce, the PKCE verifier, where to go
   afterwards) ride in a short-lived cookie signed with the deployment's secret, not in this
   process's memory: behind a load balancer another process may receive the callback, and a
   restart in between must not break a log-in.
2. ``GET {root}/auth/oidc/callback`` checks the state against that cookie, exchanges the code
   at the token endpoint, and validates the ID token (signature against the provider's JWKS,
   ``iss``, ``aud``, ``exp``, ``iat``, ``nonce``, ``azp``, ``at_hash``). Then it issues the
   ordinary session cookie (``webchat.auth.sessions``); from there on the provider is not
   asked again until the session expires, so every later request costs no network call.

The provider's metadata (``{issuer}/.well-known/openid-configuration``) is fetched on the
first log-in, not at start-up (a provider that is down must not keep the server from serving
signed-in users), and cached; its keys are fetched again when a token names a key id not seen
yet (key rotation). All of it is async HTTP: nothing blocks the event loop.

Authlib builds the authorize URL and PKCE challenge, makes the token request (with the client
authentication method the provider supports) and validates the ID token's claims; joserfc
(Authlib's JOSE successor) verifies the signature.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import httpx
import httpx2
from authlib.integrations.base_client.errors import (  # type: ignore[import-untyped]
    OAuthError,
)
from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
    AsyncOAuth2Client,
)
from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
    prepare_grant_uri,
)
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]
from fastapi import APIRouter, Query, Request
from itsdangerous import BadSignature
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse, RedirectResponse, Response

from webchat.auth.authenticators import SessionAuthenticator
from webchat.auth.principal import AuthMode, Principal
from webchat.auth.sessions import SessionCookies
from webchat.settings import ServerSettings

if TYPE_CHECKING:
    from webchat.auth.gate import Gatekeeper

__all__ = [
    "FLOW_COOKIE",
    "FLOW_MAX_AGE",
    "IdTokenError",
    "OidcAuthenticator",
    "OidcError",
    "ProviderMetadata",
    "UnknownSigningKey",
    "router",
    "safe_next",
    "validate_id_token",
]

log = logging.getLogger("webchat.auth.oidc")

FLOW_COOKIE = "webchat_oidc"
FLOW_MAX_AGE = 600
"""Seconds a log-in may take at the provider (typing a password, a second factor)."""
MAX_PENDING_FLOWS = 3
"""Log-ins kept in the cookie at once: two tabs sent to the log-in page together must both
come back signed in, so a new log-in does not overwrite the one still at the provider."""
MAX_NEXT_LENGTH = 1024
HTTP_TIMEOUT = 10.0
CLOCK_LEEWAY = 60
"""Seconds of clock difference with the provider tolerated on ``exp``/``iat``/``nbf``."""
JWKS_REFRESH_INTERVAL = 60.0
"""A token naming an unknown key id fetches the keys again at most this often: enough for key
rotation, too little for forged tokens to make us hammer the provider."""
MAX_COOKIE_GROUPS_CHARS = 1500
"""Beyond this, only the groups this server acts on are kept in the session cookie (browsers
drop cookies over 4 KB, and some directories put hundreds of groups in a token)."""
SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""Asymmetric algorithms only: ``none`` is never accepted, and HS* (keyed with the client
secret) is not supported."""

_PROVIDER_ERROR_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class OidcError(Exception):
    """A log-in that cannot go on, with what the browser is told (never a secret)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class IdTokenError(OidcError):
    """The ID token is not one this server may believe."""


class UnknownSigningKey(Exception):
    """The ID token names a key id the key set lacks: the provider may have rotated its keys
    since they were fetched (the caller fetches them again, once)."""


class ProviderMetadata(BaseModel):
    """The parts of the provider's discovery document this flow uses."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    token_endpoint_auth_methods_supported: list[str] = Field(
        default_factory=lambda: ["client_secret_basic"]  # the spec's default
    )
    id_token_signing_alg_values_supported: list[str] = Field(default_factory=lambda: ["RS256"])


class _Flow(BaseModel):
    """One log-in on its way through the provider."""

    model_config = ConfigDict(extra="forbid")

    state: str
    nonce: str
    verifier: str
    next: str
    redirect_uri: str
    iat: float


def safe_next(value: str | None, root: str) -> str:
    """Where to send the browser after logging in: ``value`` if it is a path on this server
    (under ``root``), else ``{root}/``. Anything else would make the log-in an open redirect
    (``//evil.example``, ``/\\evil.example``, ``https://evil.example``, a tab or newline that
    browsers strip before resolving)."""
    default = root + "/"
    if not value or len(value) > MAX_NEXT_LENGTH:
        return default
    if not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    if root and not (parts.path == root or parts.path.startswith(root + "/")):
        return default
    return value


def validate_id_token(
    id_token: str,
    *,
    keys: KeySet,
    issuer: str,
    client_id: str,
    nonce: str,
    algorithms: Iterable[str] = ("RS256",),
    access_token: str | None = None,
    now: int | None = None,
    leeway: int = CLOCK_LEEWAY,
) -> dict[str, Any]:
    """The claims of ``id_token`` if the provider signed it for this client and this log-in;
    else :class:`IdTokenError` naming what is wrong (:class:`UnknownSigningKey` when it names
    a key ``keys`` lacks).

    ``nonce`` is required: Authlib checks the nonce only when it is given one, so an empty
    nonce here would silently accept a token replayed from another log-in.
    """
    if not nonce:
        raise IdTokenError("no nonce to check the ID token against")
    allowed = [alg for alg in algorithms if alg in SIGNING_ALGORITHMS]
    if not allowed:
        raise IdTokenError("the identity provider signs ID tokens with no supported algorithm")
    try:
        token = jwt.decode(
            id_token,
            keys,
            registry=JWSRegistry(algorithms=allowed, strict_check_header=False),
        )
    except InvalidKeyIdError:
        raise UnknownSigningKey() from None
    except BadSignatureError:
        raise IdTokenError("the ID token's signature is not valid") from None
    except UnsupportedAlgorithmError:
        raise IdTokenError("the ID token is signed with an algorithm not allowed") from None
    except (JoseError, ValueError) as exc:
        raise IdTokenError(f"the ID token cannot be read ({type(exc).__name__})") from None
    claims = CodeIDToken(
        token.claims,
        token.header,
        {
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
            "nonce": {"essential": True, "value": nonce},
        },
        {"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )
    try:
        claims.validate(now=now, leeway=leeway)
    except ExpiredTokenError:
        raise IdTokenError("the ID token has expired") from None
    except MissingClaimError as exc:
        raise IdTokenError(f"the ID token has no {exc.claim!r} claim") from None
    except ClaimError as exc:
        raise IdTokenError(f"the ID token's {exc.claim!r} claim is not valid") from None
    # Checked above through Authlib already; said again here so that no change of library
    # behaviour can ever let a token of another log-in through.
    if not hmac.compare_digest(str(token.claims.get("nonce", "")), nonce):
        raise IdTokenError("the ID token's 'nonce' claim is not valid")
    return dict(token.claims)


def _string_claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return (value.strip() or None) if isinstance(value, str) else None


def _groups_claim(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """A list of group names; a single string (some providers' shape for one group) is one
    group. Anything else is no groups."""
    value = claims.get(name)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(g.strip() for g in value if isinstance(g, str) and g.strip()))


class OidcAuthenticator(SessionAuthenticator):
    """Requests are authenticated by the session cookie the callback issues (the inherited
    ``authenticate``); this class also runs the log-in itself."""

    mode: AuthMode = "oidc"

    def __init__(self, settings: ServerSettings, sessions: SessionCookies) -> None:
        super().__init__(sessions)
        if not (settings.oidc_issuer and settings.oidc_client_id):
            raise ValueError("--auth oidc needs oidc_issuer and oidc_client_id")
        self.settings = settings
        self.issuer = settings.oidc_issuer.strip()
        self.client_id = settings.oidc_client_id
        secret = settings.oidc_client_secret
        self.client_secret = secret.get_secret_value() if secret is not None else None
        self.scopes = " ".join(dict.fromkeys(["openid", *settings.oidc_scopes.split()]))
        self.groups_claim = settings.oidc_groups_claim
        self.allowed_groups = frozenset(settings.oidc_allowed_groups)
        self.admin_groups = frozenset(settings.admin_groups)
        self.root = settings.root
        self._flows = sessions.signer("webchat.oidc")
        self._metadata: ProviderMetadata | None = None
        self._keys: KeySet | None = None
        self._keys_fetched_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    # -- the provider ----------------------------------------------------------------------

    async def _get_json(self, url: str, what: str) -> Any:
        try:
            async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                response = await http.get(url, headers={"accept": "application/json"})
            response.raise_for_status()
            return response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            log.warning("OIDC: cannot fetch %s from %s: %s", what, url, exc)
            raise OidcError(f"cannot fetch the identity provider's {what}", 502) from None

    async def metadata(self) -> ProviderMetadata:
        """The discovery document, fetched once (a failure is not cached: the next log-in
        tries again)."""
        if self._metadata is not None:
            return self._metadata
        async with self._lock:
            if self._metadata is None:
                raw = await self._get_json(self.discovery_url, "configuration")
                try:
                    metadata = ProviderMetadata.model_validate(raw)
                except ValidationError:
                    log.warning("OIDC: %s is not an OpenID configuration", self.discovery_url)
                    raise OidcError(
                        "the identity provider's configuration is not valid", 502
                    ) from None
                # OpenID Connect Discovery 4.3: the document must be the issuer's own (a
                # trailing slash is forgiven: configurations differ on it more than providers).
                if metadata.issuer.rstrip("/") != self.issuer.rstrip("/"):
                    log.warning(
                        "OIDC: %s names issuer %r, not %r",
                        self.discovery_url,
                        metadata.issuer,
                        self.issuer,
                    )
                    raise OidcError(
                        "the identity provider's configuration names another issuer", 502
                    )
                self._metadata = metadata
        return self._metadata

    async def keys(self, *, refresh: bool = False) -> KeySet:
        """The provider's signing keys; ``refresh`` fetches them again unless that was done
        less than ``JWKS_REFRESH_INTERVAL`` ago."""
        metadata = await self.metadata()
        async with self._lock:
            stale = refresh and time.monotonic() - self._keys_fetched_at > JWKS_REFRESH_INTERVAL
            if self._keys is None or stale:
                raw = await self._get_json(metadata.jwks_uri, "signing keys")
                try:
                    keys = KeySet.import_key_set(raw)
                except (JoseError, ValueError, TypeError, KeyError):
                    log.warning("OIDC: cannot read the keys at %s", metadata.jwks_uri)
                    raise OidcError(
                        "the identity provider's signing keys are not valid", 502
                    ) from None
                self._keys = keys
                self._keys_fetched_at = time.monotonic()
            return self._keys

    def token_auth_method(self, metadata: ProviderMetadata) -> str:
        if self.client_secret is None:
            return "none"  # a public client: PKCE is what protects the code
        supported = metadata.token_endpoint_auth_methods_supported
        if "client_secret_basic" not in supported and "client_secret_post" in supported:
            return "client_secret_post"
        return "client_secret_basic"

    # -- the log-in ------------------------------------------------------------------------

    def redirect_uri(self, request: Request) -> str:
        """Built from the request (its Host passed the allowed-hosts check; its scheme is the
        browser's even behind a trusted proxy), so it is the address the browser used."""
        return f"{request.url.scheme}://{request.url.netloc}{self.root}/auth/oidc/callback"

    def _pending(self, request: Request) -> list[_Flow]:
        text = request.cookies.get(FLOW_COOKIE)
        if not text:
            return []
        try:
            raw = self._flows.loads(text, max_age=FLOW_MAX_AGE)
            flows = [_Flow.model_validate(item) for item in raw]
        except (BadSignature, ValidationError, TypeError):
            return []
        now = time.time()
        return [flow for flow in flows if now - flow.iat <= FLOW_MAX_AGE]

    def _keep(self, response: Response, request: Request, flows: Sequence[_Flow]) -> None:
        secure = request.url.scheme == "https"
        path = self.sessions.path
        if not flows:
            response.delete_cookie(
                FLOW_COOKIE, path=path, httponly=True, samesite="lax", secure=secure
            )
            return
        response.set_cookie(
            FLOW_COOKIE,
            self._flows.dumps([flow.model_dump(mode="json") for flow in flows]),
            max_age=FLOW_MAX_AGE,
            path=path,
            httponly=True,
            samesite="lax",  # sent on the provider's top-level redirect back to us
            secure=secure,
        )

    async def start_login(self, request: Request, next_path: str | None) -> Response:
        metadata = await self.metadata()
        flow = _Flow(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            next=safe_next(next_path, self.root),
            redirect_uri=self.redirect_uri(request),
            iat=time.time(),
        )
        url: str = prepare_grant_uri(
            metadata.authorization_endpoint,
            self.client_id,
            "code",
            redirect_uri=flow.redirect_uri,
            scope=self.scopes,
            state=flow.state,
            nonce=flow.nonce,
            code_challenge=create_s256_code_challenge(flow.verifier),
            code_challenge_method="S256",
        )
        response = RedirectResponse(url, status_code=303)
        pending = [flow, *self._pending(request)][:MAX_PENDING_FLOWS]
        self._keep(response, request, pending)
        return response

    async def finish_login(self, request: Request, gate: Gatekeeper) -> Response:
        params = request.query_params
        pending = self._pending(request)
        state = params.get("state", "")
        flow = next((f for f in pending if state and hmac.compare_digest(f.state, state)), None)
        rest = [f for f in pending if f is not flow]
        try:
            error = params.get("error")
            if error:
                # Told before the state is checked (not every provider repeats the state on
                # an error): an error logs nobody in, whoever sent it.
                shown = error if _PROVIDER_ERROR_RE.fullmatch(error) else "error"
                log.warning(
                    "OIDC: the provider refused the log-in: %r %r",
                    error[:64],
                    params.get("error_description", "")[:200],
                )
                raise OidcError(f"the identity provider refused the log-in ({shown})")
            if flow is None:
                # No log-in of this browser has that state: a stale or forged callback (login
                # CSRF). The browser's pending log-ins stay as they are.
                raise OidcError(
                    "the log-in has expired or was started in another browser: log in again"
                )
            code = params.get("code")
            if not code:
                raise OidcError("the identity provider sent no authorization code")
            claims = await self._exchange(flow, code)
            principal = self.principal_from_claims(claims)
        except OidcError as exc:
            log.warning("OIDC: log-in refused: %s", exc.message)
            response: Response = _error_response(exc)
            if flow is not None:
                self._keep(response, request, rest)  # that log-in is spent either way
            return response
        if self.allowed_groups and not self.allowed_groups.intersection(principal.groups):
            log.warning("OIDC: %s is in none of the allowed groups", principal.id)
            response = JSONResponse(
                {"error": "your account is not in an allowed group"}, status_code=403
            )
            self._keep(response, request, rest)
            return response
        response = RedirectResponse(flow.next, status_code=303)
        gate.sessions.issue(response, principal, secure=request.url.scheme == "https")
        self._keep(response, request, rest)
        log.info("OIDC: %s (%s) logged in", principal.id, principal.name)
        return response

    async def _exchange(self, flow: _Flow, code: str) -> dict[str, Any]:
        """The code for tokens at the token endpoint, and the validated ID token's claims."""
        metadata = await self.metadata()
        try:
            async with AsyncOAuth2Client(
                client_id=self.client_id,
                client_secret=self.client_secret,
                token_endpoint_auth_method=self.token_auth_method(metadata),
                timeout=HTTP_TIMEOUT,
            ) as client:
                token: Mapping[str, Any] = await client.fetch_token(
                    metadata.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    redirect_uri=flow.redirect_uri,
                    code_verifier=flow.verifier,
                )
        except OAuthError as exc:
            log.warning("OIDC: the token endpoint refused the code: %s", exc)
            raise OidcError("the identity provider refused the authorization code") from None
        except (httpx2.HTTPStatusError, httpx.HTTPStatusError) as exc:
            log.warning("OIDC: the token endpoint answered %s", exc.response.status_code)
            raise OidcError("the identity provider's token endpoint failed", 502) from None
        except (httpx2.HTTPError, httpx.HTTPError) as exc:
            # Authlib's client is built on httpx2 where it is installed, else on httpx.
            log.warning("OIDC: cannot reach the token endpoint: %s", exc)
            raise OidcError("cannot reach the identity provider's token endpoint", 502) from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("the identity provider sent no ID token (is 'openid' a scope?)")
        access_token = token.get("access_token")

        async def validate(keys: KeySet) -> dict[str, Any]:
            return validate_id_token(
                id_token,
                keys=keys,
                issuer=metadata.issuer,
                client_id=self.client_id,
                nonce=flow.nonce,
                algorithms=metadata.id_token_signing_alg_values_supported,
                access_token=access_token if isinstance(access_token, str) else None,
            )

        try:
            try:
                return await validate(await self.keys())
            except UnknownSigningKey:
                return await validate(await self.keys(refresh=True))  # rotated keys?
        except UnknownSigningKey:
            raise IdTokenError(
                "the ID token is signed with a key the provider does not list"
            ) from None

    def principal_from_claims(self, claims: Mapping[str, Any]) -> Principal:
        """Who the validated claims say logged in. The id is ``oidc:<sub>``: ``sub`` is the
        one claim the provider promises never to reassign or change (a name or an e-mail
        address may be), and conversations are owned by the id."""
        sub = _string_claim(claims, "sub")
        if sub is None:
            raise IdTokenError("the ID token has no 'sub' claim")
        email = _string_claim(claims, "email")
        name = (
            _string_claim(claims, "preferred_username")
            or _string_claim(claims, "name")
            or email
            or sub
        )
        groups = _groups_claim(claims, self.groups_claim)
        if sum(len(g) + 1 for g in groups) > MAX_COOKIE_GROUPS_CHARS:
            relevant = self.admin_groups | self.allowed_groups
            groups = tuple(g for g in groups if g in relevant)
        admin = bool(self.admin_groups.intersection(groups))
        return Principal(
            id=f"oidc:{sub}",
            name=name,
            email=email,
            groups=groups,
            role="admin" if admin else "user",
            via="session",
        )


def _error_response(exc: OidcError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


# -- routes (included by the app at the settings' root prefix) ------------------------------

router = APIRouter(prefix="/auth/oidc", include_in_schema=False)


def _oidc(request: Request) -> tuple[Gatekeeper, OidcAuthenticator] | JSONResponse:
    gate: Gatekeeper = request.app.state.gate
    authenticator = gate.authenticator
    if not isinstance(authenticator, OidcAuthenticator):
        return JSONResponse(
            {"error": f"OpenID Connect log-in is not used with --auth {gate.mode}"},
            status_code=404,
        )
    return gate, authenticator


@router.get("/login")
async def oidc_login(
    request: Request, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    """Off to the provider; ``next`` is where to land afterwards (a path on this server)."""
    found = _oidc(request)
    if isinstance(found, JSONResponse):
        return found
    _, authenticator = found
    try:
        return await authenticator.start_login(request, next_path)
    except OidcError as exc:
        return _error_response(exc)


@router.get("/callback")
async def oidc_callback(request: Request) -> Response:
    """Back from the provider: the session cookie and a redirect to ``next``, or an error."""
    found = _oidc(request)
    if isinstance(found, JSONResponse):
        return found
    gate, authenticator = found
    try:
        return await authenticator.finish_login(request, gate)
    except OidcError as exc:
        return _error_response(exc)
