"""``--auth oidc`` against a real OpenID Connect provider (``oidc-provider-mock``), with the
real app under uvicorn; the ID token checks also directly, with tokens signed here."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from tests.support.live_server import LiveServer, live_server
from tests.support.oidc_provider import PROVIDER_WARNINGS, OidcProvider, oidc_provider
from webchat.auth.oidc import (
    FLOW_COOKIE,
    IdTokenError,
    UnknownSigningKey,
    safe_next,
    validate_id_token,
)
from webchat.auth.sessions import SESSION_COOKIE

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)

SECRET_KEY = "test-deployment-secret-0123456789abcdef"
PROFILES_YAML = "profiles: [{slug: default, step_settings: {api_type: offline}}]\n"


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with oidc_provider() as running:
        running.set_user(
            "alice",
            {
                "preferred_username": "alice",
                "name": "Alice Liddell",
                "email": "alice@example.org",
                "groups": ["admins", "staff"],
            },
        )
        running.set_user("bob", {"name": "Bob", "email": "bob@example.org", "groups": "staff"})
        running.set_user("carol", {"email": "carol@example.org"})
        yield running


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("oidc") / "profiles.yaml"
    path.write_text(PROFILES_YAML)
    return path


def oidc_settings(provider: OidcProvider, profiles: Path, **extra: Any) -> dict[str, Any]:
    return {
        "db": ":memory:",
        "profiles": str(profiles),
        "auth": "oidc",
        "oidc_issuer": provider.issuer,
        "oidc_client_id": "webchat",
        "oidc_client_secret": "s3cret",
        "allowed_hosts": ["127.0.0.1", "localhost"],
        "admin_groups": ["admins"],
        "secret_key": SECRET_KEY,
        **extra,
    }


@pytest.fixture(scope="module")
def server(provider: OidcProvider, profiles: Path) -> Iterator[LiveServer]:
    with live_server(**oidc_settings(provider, profiles)) as running:
        yield running


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    """A browser without cookies that does not follow redirects (each hop is checked)."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def start_login(client: httpx.Client, next_path: str | None = None) -> str:
    """``/auth/oidc/login``; the provider's authorize URL it redirects to."""
    params = {"next": next_path} if next_path is not None else {}
    response = client.get("/auth/oidc/login", params=params)
    assert response.status_code == 303, response.text
    location: str = response.headers["location"]
    return location


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = {**query(url), **changes}
    return urlunsplit(parts._replace(query=urlencode(params)))


def log_in(
    client: httpx.Client, provider: OidcProvider, sub: str, next_path: str | None = None
) -> httpx.Response:
    """The whole round trip; the callback's response."""
    callback = provider.authorize(start_login(client, next_path), sub)
    return client.get(callback)


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


# -- the log-in ------------------------------------------------------------------------------


def test_login_redirects_to_the_provider_with_state_nonce_and_pkce(
    client: httpx.Client, server: LiveServer, provider: OidcProvider
) -> None:
    response = client.get("/auth/oidc/login", params={"next": "/?conv_id=abc"})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(f"{provider.issuer}/oauth2/authorize?")
    params = query(location)
    assert params["response_type"] == "code"
    assert params["client_id"] == "webchat"
    assert params["redirect_uri"] == f"{server.url}/auth/oidc/callback"
    assert params["scope"].split() == ["openid", "email", "profile"]
    assert len(params["state"]) >= 32
    assert len(params["nonce"]) >= 32
    assert params["state"] != params["nonce"]
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    # What the callback checks rides in a signed cookie, not in this process's memory.
    (cookie,) = [c for c in set_cookies(response) if c.startswith(FLOW_COOKIE + "=")]
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=lax", "max-age=600", "path=/"} <= flags
    # A second log-in gets fresh values.
    again = query(start_login(client))
    assert again["state"] != params["state"] and again["nonce"] != params["nonce"]


def test_a_full_login_issues_the_session_and_lands_on_next(
    client: httpx.Client, provider: OidcProvider
) -> None:
    assert client.get("/auth/me").status_code == 401
    response = log_in(client, provider, "alice", next_path="/?conv_id=abc")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/?conv_id=abc"
    cookies = set_cookies(response)
    assert any(c.startswith(SESSION_COOKIE + "=") and "HttpOnly" in c for c in cookies)
    assert any(c.startswith(FLOW_COOKIE + "=") and "Max-Age=0" in c for c in cookies)
    assert FLOW_COOKIE not in client.cookies
    me = client.get("/auth/me")
    assert me.status_code == 200
    assert me.json() == {
        "id": "oidc:alice",
        "name": "alice",
        "role": "admin",
        "email": "alice@example.org",
        "groups": ["admins", "staff"],
        "mode": "oidc",
    }
    # The session is ordinary from here on: the API serves it.
    assert client.get("/api/conversations").status_code == 200


def test_names_roles_and_groups_come_from_the_claims(
    server: LiveServer, provider: OidcProvider
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as bob:
        assert log_in(bob, provider, "bob").status_code == 303
        me = bob.get("/auth/me").json()
    # No preferred_username: the name; one group as a plain string; not an admin.
    assert (me["id"], me["name"], me["role"], me["groups"]) == (
        "oidc:bob",
        "Bob",
        "user",
        ["staff"],
    )
    with httpx.Client(base_url=server.url, timeout=10) as carol:
        assert log_in(carol, provider, "carol").status_code == 303
        me = carol.get("/auth/me").json()
    assert (me["id"], me["name"], me["role"], me["groups"]) == (
        "oidc:carol",
        "carol@example.org",
        "user",
        [],
    )


def test_the_same_subject_is_the_same_user_in_every_login(
    server: LiveServer, provider: OidcProvider
) -> None:
    ids = []
    for _ in range(2):
        with httpx.Client(base_url=server.url, timeout=10) as browser:
            assert log_in(browser, provider, "bob").status_code == 303
            ids.append(browser.get("/auth/me").json()["id"])
    assert ids == ["oidc:bob", "oidc:bob"]


def test_two_tabs_logging_in_at_once_both_succeed(
    client: httpx.Client, provider: OidcProvider
) -> None:
    first = start_login(client, "/?tab=1")
    second = start_login(client, "/?tab=2")
    first_back = provider.authorize(first, "alice")
    second_back = provider.authorize(second, "alice")
    response = client.get(first_back)
    assert (response.status_code, response.headers.get("location")) == (303, "/?tab=1")
    response = client.get(second_back)
    assert (response.status_code, response.headers.get("location")) == (303, "/?tab=2")


def test_the_callback_may_reach_another_process(
    client: httpx.Client, server: LiveServer, provider: OidcProvider, profiles: Path
) -> None:
    """Nothing of the log-in is kept in the process that started it: another process of the
    deployment (same secret) finishes it."""
    callback = provider.authorize(start_login(client), "alice")
    with live_server(**oidc_settings(provider, profiles)) as other:
        parts = urlsplit(callback)
        elsewhere = f"{other.url}{parts.path}?{parts.query}"
        response = client.get(elsewhere)
        assert response.status_code == 303, response.text
        assert client.get(f"{other.url}/auth/me").json()["id"] == "oidc:alice"
    assert client.get("/auth/me").json()["id"] == "oidc:alice"  # and it holds on the first


def test_under_a_root_prefix(provider: OidcProvider, profiles: Path) -> None:
    with (
        live_server(**oidc_settings(provider, profiles, root="/chat")) as rooted,
        httpx.Client(base_url=rooted.url, timeout=10) as browser,
    ):
        response = browser.get("/auth/oidc/login")
        assert response.status_code == 303
        assert query(response.headers["location"])["redirect_uri"] == (
            f"{rooted.url}/auth/oidc/callback"
        )
        assert rooted.url.endswith("/chat")
        assert any("Path=/chat" in c for c in set_cookies(response))
        callback = provider.authorize(response.headers["location"], "alice")
        response = browser.get(callback)
        assert (response.status_code, response.headers["location"]) == (303, "/chat/")
        assert browser.get("/auth/me").json()["id"] == "oidc:alice"


# -- what is refused -------------------------------------------------------------------------


def assert_refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert words in response.json()["error"]
    assert not any(c.startswith(SESSION_COOKIE + "=") for c in set_cookies(response))


def test_a_callback_with_another_state_is_refused(
    client: httpx.Client, provider: OidcProvider
) -> None:
    callback = provider.authorize(start_login(client), "alice")
    forged = with_query(callback, state="not-the-state-we-sent")
    assert_refused(client.get(forged), 400, "log in again")
    assert client.get("/auth/me").status_code == 401
    # The genuine log-in is still pending and still works.
    assert client.get(callback).status_code == 303


def test_a_callback_in_another_browser_is_refused(
    client: httpx.Client, server: LiveServer, provider: OidcProvider
) -> None:
    """Login CSRF: an attacker's own code and state, sent to the victim's browser."""
    callback = provider.authorize(start_login(client), "alice")
    with httpx.Client(base_url=server.url, timeout=10) as victim:
        assert_refused(victim.get(callback), 400, "another browser")
        assert victim.get("/auth/me").status_code == 401


def test_a_tampered_flow_cookie_is_refused(client: httpx.Client, provider: OidcProvider) -> None:
    callback = provider.authorize(start_login(client), "alice")
    value = client.cookies[FLOW_COOKIE]
    client.cookies.set(FLOW_COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert_refused(client.get(callback), 400, "log in again")


def test_a_callback_is_used_once(client: httpx.Client, provider: OidcProvider) -> None:
    callback = provider.authorize(start_login(client), "alice")
    assert client.get(callback).status_code == 303
    assert_refused(client.get(callback), 400, "log in again")


def test_the_provider_refusing_is_a_400(client: httpx.Client, provider: OidcProvider) -> None:
    callback = provider.deny(start_login(client))
    assert query(callback)["error"] == "access_denied"
    response = client.get(callback)
    assert_refused(response, 400, "refused the log-in (access_denied)")
    assert client.get("/auth/me").status_code == 401
    # The mock leaves the state out of its error redirect; with it, that log-in is spent.
    state = query(start_login(client))["state"]
    assert_refused(client.get(with_query(callback, state=state)), 400, "(access_denied)")
    spent = f"/auth/oidc/callback?{urlencode({'state': state, 'code': 'x'})}"
    assert_refused(client.get(spent), 400, "log in again")


def test_an_unknown_code_is_a_400(client: httpx.Client, provider: OidcProvider) -> None:
    callback = provider.authorize(start_login(client), "alice")
    assert_refused(client.get(with_query(callback, code="made-up")), 400, "authorization code")


def test_an_id_token_for_another_nonce_is_refused(
    client: httpx.Client, provider: OidcProvider
) -> None:
    """The provider is asked with a nonce other than the one webchat chose (an ID token of
    another log-in): the state matches, the exchange succeeds, the ID token must not."""
    authorize = start_login(client)
    callback = provider.authorize(
        with_query(authorize, nonce="someone-elses-nonce-0123456789"), "alice"
    )
    assert query(callback)["state"] == query(authorize)["state"]
    assert_refused(client.get(callback), 400, "'nonce' claim is not valid")
    assert client.get("/auth/me").status_code == 401


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "evil.example",
        "javascript:alert(1)",
    ],
)
def test_next_never_leaves_the_site(
    client: httpx.Client, provider: OidcProvider, target: str
) -> None:
    response = log_in(client, provider, "alice", next_path=target)
    assert (response.status_code, response.headers["location"]) == (303, "/")


def test_only_the_allowed_groups_may_log_in(provider: OidcProvider, profiles: Path) -> None:
    settings = oidc_settings(provider, profiles, oidc_allowed_groups=["admins", "ops"])
    with live_server(**settings) as guarded:
        with httpx.Client(base_url=guarded.url, timeout=10) as bob:
            response = log_in(bob, provider, "bob")  # staff only
            assert_refused(response, 403, "your account is not in an allowed group")
            assert bob.get("/auth/me").status_code == 401
            assert FLOW_COOKIE not in bob.cookies
        with httpx.Client(base_url=guarded.url, timeout=10) as alice:
            assert log_in(alice, provider, "alice").status_code == 303
            assert alice.get("/auth/me").json()["role"] == "admin"


def test_an_unreachable_provider_does_not_stop_the_server(profiles: Path) -> None:
    """Discovery is lazy: the server starts and serves; the log-in says what is wrong."""
    unreachable = OidcProvider(issuer="http://127.0.0.1:9")
    with (
        live_server(**oidc_settings(unreachable, profiles)) as running,
        httpx.Client(base_url=running.url, timeout=30) as browser,
    ):
        assert browser.get("/healthz").status_code == 200
        response = browser.get("/auth/oidc/login")
        assert response.status_code == 502
        assert response.json() == {"error": "cannot fetch the identity provider's configuration"}


def test_a_provider_gone_during_the_login_is_a_502(profiles: Path) -> None:
    with contextlib.ExitStack() as provider_running:
        going = provider_running.enter_context(oidc_provider())
        with (
            live_server(**oidc_settings(going, profiles)) as running,
            httpx.Client(base_url=running.url, timeout=30) as browser,
        ):
            callback = going.authorize(start_login(browser), "alice")
            provider_running.close()  # the provider stops before the browser comes back
            response = browser.get(callback)
            assert_refused(response, 502, "cannot reach the identity provider's token endpoint")


# -- next ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "root", "expected"),
    [
        (None, "", "/"),
        ("/", "", "/"),
        ("/?conv_id=x#frag", "", "/?conv_id=x#frag"),
        ("/api/x", "", "/api/x"),
        ("//evil.example", "", "/"),
        ("///evil.example", "", "/"),
        ("/\\evil.example", "", "/"),
        ("\\\\evil.example", "", "/"),
        ("/\n/evil.example", "", "/"),
        ("http://evil.example/", "", "/"),
        ("evil", "", "/"),
        ("/" + "a" * 2000, "", "/"),
        ("/chat/?conv_id=x", "/chat", "/chat/?conv_id=x"),
        ("/chat", "/chat", "/chat"),
        ("/chatroom", "/chat", "/chat/"),
        ("/other", "/chat", "/chat/"),
    ],
)
def test_safe_next(value: str | None, root: str, expected: str) -> None:
    assert safe_next(value, root) == expected


# -- the ID token, directly ------------------------------------------------------------------

ISSUER = "https://id.example"
CLIENT = "webchat"
NONCE = "the-nonce-of-this-login"


@pytest.fixture(scope="module")
def provider_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "provider-1"})


@pytest.fixture(scope="module")
def jwks(provider_key: RSAKey) -> KeySet:
    return KeySet.import_key_set({"keys": [provider_key.as_dict(private=False)]})


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": CLIENT,
        "exp": now + 300,
        "iat": now,
        "nonce": NONCE,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, payload: dict[str, Any], alg: str = "RS256", kid: str = "provider-1") -> str:
    return jwt.encode({"alg": alg, "kid": kid}, payload, key, algorithms=[alg])


def check(token: str, jwks: KeySet, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"keys": jwks, "issuer": ISSUER, "client_id": CLIENT, "nonce": NONCE}
    kwargs.update(overrides)
    return validate_id_token(token, **kwargs)


def test_a_genuine_id_token_is_accepted(provider_key: RSAKey, jwks: KeySet) -> None:
    assert check(sign(provider_key, claims()), jwks)["sub"] == "alice"
    # Several audiences: accepted when ours is one of them and azp names us.
    token = sign(provider_key, claims(aud=["other", CLIENT], azp=CLIENT))
    assert check(token, jwks)["sub"] == "alice"


def test_an_id_token_signed_with_another_key_is_refused(jwks: KeySet) -> None:
    forger = RSAKey.generate_key(2048, parameters={"kid": "provider-1"})
    with pytest.raises(IdTokenError, match="signature is not valid"):
        check(sign(forger, claims()), jwks)


def test_an_id_token_with_an_unknown_key_id_asks_for_the_keys_again(jwks: KeySet) -> None:
    rotated = RSAKey.generate_key(2048, parameters={"kid": "provider-2"})
    with pytest.raises(UnknownSigningKey):
        check(sign(rotated, claims(), kid="provider-2"), jwks)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"nonce": "another-login"}, "'nonce' claim is not valid"),
        ({"nonce": None}, "no 'nonce' claim"),
        ({"aud": "another-client"}, "'aud' claim is not valid"),
        ({"aud": ["another-client"], "azp": CLIENT}, "'aud' claim is not valid"),
        ({"aud": [CLIENT, "other"], "azp": "other"}, "'azp' claim is not valid"),
        ({"iss": "https://evil.example"}, "'iss' claim is not valid"),
        ({"exp": int(time.time()) - 3600}, "has expired"),
        ({"iat": int(time.time()) + 3600}, "'iat' claim is not valid"),
        ({"sub": None}, "no 'sub' claim"),
        ({"sub": ""}, "'sub' claim is not valid"),
        ({"at_hash": "bm90LXRoZS1oYXNo"}, "'at_hash' claim is not valid"),
    ],
)
def test_an_id_token_with_wrong_claims_is_refused(
    provider_key: RSAKey, jwks: KeySet, changes: dict[str, Any], problem: str
) -> None:
    token = sign(provider_key, claims(**changes))
    with pytest.raises(IdTokenError, match=problem):
        check(token, jwks, access_token="the-access-token")


def test_no_nonce_to_check_is_refused(provider_key: RSAKey, jwks: KeySet) -> None:
    """Authlib skips the nonce check when given none; this function never does."""
    token = sign(provider_key, claims(nonce=None))
    with pytest.raises(IdTokenError, match="no nonce"):
        check(token, jwks, nonce="")


def test_unsigned_and_symmetric_tokens_are_refused(provider_key: RSAKey, jwks: KeySet) -> None:
    none_header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    payload = sign(provider_key, claims()).split(".")[1]
    with pytest.raises(IdTokenError):
        check(f"{none_header.decode()}.{payload}.", jwks, algorithms=["RS256", "none"])
    secret = OctKey.import_key("s3cret-s3cret-s3cret-s3cret-s3cret")
    with pytest.raises(IdTokenError):
        check(sign(secret, claims(), alg="HS256"), jwks, algorithms=["RS256", "HS256"])
    with pytest.raises(IdTokenError, match="no supported algorithm"):
        check(sign(provider_key, claims()), jwks, algorithms=["HS256", "none"])
    with pytest.raises(IdTokenError, match="algorithm not allowed"):
        check(sign(provider_key, claims(), alg="RS512"), jwks, algorithms=["RS256"])


def test_garbage_is_refused(jwks: KeySet) -> None:
    for token in ["", "not-a-jwt", "a.b.c", "e30.e30.e30"]:
        with pytest.raises(IdTokenError):
            check(token, jwks)
