"""A real OpenID Connect provider for tests: ``oidc-provider-mock`` (Authlib + Flask) served
from a background thread on ``localhost``.

It signs real RS256 ID tokens, publishes its JWKS and discovery document, accepts any client
id and secret, and asks for a subject on its authorize page (a browser types one; a test
without a browser posts the form with :meth:`OidcProvider.authorize`). Claims of a subject are
set with :meth:`OidcProvider.set_user`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import authlib.deprecate  # type: ignore[import-untyped]  # its "always" filter, installed first
import httpx

with warnings.catch_warnings():
    # The mock still imports authlib.jose (deprecated in favour of joserfc); webchat does not.
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from oidc_provider_mock import User, run_server_in_thread  # type: ignore[import-untyped]

PROVIDER_WARNINGS = "ignore:get_jwt_config:DeprecationWarning"
"""The mock's token endpoint uses an Authlib server API Authlib deprecates (the provider's
side, not webchat's): ``pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)``."""


@dataclass(frozen=True)
class OidcProvider:
    issuer: str
    """``http://localhost:<port>``: the mock names itself after the Host it is asked by, so
    everyone (webchat and the browser) must reach it by this URL."""

    def set_user(self, sub: str, claims: Mapping[str, Any]) -> None:
        """Replace the claims the provider puts in ``sub``'s ID token (``groups``, ``email``,
        ``preferred_username``…)."""
        response = httpx.put(f"{self.issuer}/users/{sub}", json=dict(claims), timeout=10)
        response.raise_for_status()

    def authorize(self, authorize_url: str, sub: str) -> str:
        """Do what a person on the authorize page does (type ``sub``, press Authorize) and
        return where the provider sends the browser back to: webchat's callback URL."""
        response = httpx.post(authorize_url, data={"sub": sub}, timeout=10)
        assert response.status_code in (302, 303), (response.status_code, response.text[:500])
        return response.headers["location"]

    def deny(self, authorize_url: str) -> str:
        """Press Deny on the authorize page; the callback URL with ``error=access_denied``."""
        response = httpx.post(authorize_url, data={"action": "deny"}, timeout=10)
        assert response.status_code in (302, 303), (response.status_code, response.text[:500])
        return response.headers["location"]


@contextlib.contextmanager
def oidc_provider(
    users: Sequence[User] = (), *, require_nonce: bool = True
) -> Iterator[OidcProvider]:
    """A provider on a free port for the duration of the ``with``. ``require_nonce``: refuse
    authorization requests without a nonce (webchat must always send one)."""
    with run_server_in_thread(port=0, require_nonce=require_nonce, user_claims=users) as server:
        yield OidcProvider(issuer=f"http://localhost:{server.server_port}")
