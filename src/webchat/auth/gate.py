"""The Gatekeeper: everything the security middleware and the auth routes ask about a request.

One object per app, built by the composition root from the settings: the Host names served,
the trusted proxies, the authenticator of the ``--auth`` mode, the session cookies, the
failure limiter and the open sockets of each user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.requests import HTTPConnection
from starlette.types import Scope

from webchat.auth.authenticators import (
    Authenticator,
    NoAuthenticator,
    ProxyAuthenticator,
    UsersAuthenticator,
)
from webchat.auth.limits import FailureLimiter
from webchat.auth.network import LOOPBACK_HOSTS, HostPolicy, ProxyTrust, is_loopback
from webchat.auth.principal import AuthMode, Principal
from webchat.auth.sessions import Revocations, SessionCookies
from webchat.auth.sockets import LiveSockets
from webchat.auth.users import UsersFile
from webchat.settings import ServerSettings, SettingsError

__all__ = ["Gatekeeper", "auth_mode", "check_auth_settings"]

log = logging.getLogger("webchat.auth")

USERS_WATCH_INTERVAL = 0.25
"""How often the users file is checked for removed users whose sockets must close."""


def auth_mode(settings: ServerSettings) -> AuthMode:
    """The ``--auth`` mode in force: as given, else ``none`` on a loopback address."""
    if settings.auth is not None:
        return settings.auth
    if is_loopback(settings.host):
        return "none"
    raise SettingsError(
        f"--host {settings.host} accepts connections from other machines, and no "
        "authentication is configured: choose --auth users, --auth proxy or --auth oidc "
        "(or pass --auth none to serve without authentication)"
    )


def allowed_hosts(settings: ServerSettings, mode: AuthMode) -> list[str]:
    if settings.allowed_hosts:
        return settings.allowed_hosts
    if is_loopback(settings.host):
        return list(LOOPBACK_HOSTS)
    if mode != "none":
        raise SettingsError(
            f"--auth {mode} on --host {settings.host} needs --allowed-hosts: the host names "
            "browsers reach this server by (it refuses any other Host header)"
        )
    return ["*"]


def check_auth_settings(settings: ServerSettings) -> AuthMode:
    """Fail at start-up, with the option to fix, on settings that cannot be served."""
    mode = auth_mode(settings)
    allowed_hosts(settings, mode)
    if mode == "proxy" and not settings.trusted_proxies:
        raise SettingsError("--auth proxy needs --trusted-proxies (CIDRs of the proxies)")
    try:
        ProxyTrust(settings.trusted_proxies)
    except ValueError as exc:
        raise SettingsError(f"--trusted-proxies: {exc}") from None
    if mode == "oidc" and not (settings.oidc_issuer and settings.oidc_client_id):
        raise SettingsError("--auth oidc needs oidc_issuer and oidc_client_id")
    return mode


class Gatekeeper:
    def __init__(
        self,
        settings: ServerSettings,
        secret: bytes,
        revocations: Revocations,
    ) -> None:
        self.settings = settings
        self.mode = check_auth_settings(settings)
        self.hosts = HostPolicy(allowed_hosts(settings, self.mode))
        self.proxies = ProxyTrust(settings.trusted_proxies)
        self.allowed_origins = list(settings.allowed_origins)
        self.sessions = SessionCookies(
            secret, revocations, max_age=settings.session_max_age, path=settings.root or "/"
        )
        self.failures = FailureLimiter(settings.auth_failures_per_minute)
        self.sockets = LiveSockets()
        self.users: UsersFile | None = None
        self.authenticator: Authenticator = self._authenticator()
        self._watcher: asyncio.Task[None] | None = None

    def _authenticator(self) -> Authenticator:
        settings = self.settings
        if self.mode == "users":
            self.users = UsersFile(settings.users)
            self.users.load()
            if not self.users.users():
                log.warning(
                    "no users in %s yet: add one with `webchat users add NAME`", settings.users
                )
            return UsersAuthenticator(self.users, self.sessions)
        if self.mode == "proxy":
            return ProxyAuthenticator(
                user_header=settings.proxy_user_header,
                email_header=settings.proxy_email_header,
                groups_header=settings.proxy_groups_header,
                admin_groups=settings.admin_groups,
            )
        if self.mode == "oidc":
            from webchat.auth.oidc import OidcAuthenticator

            return OidcAuthenticator(settings, self.sessions)
        return NoAuthenticator()

    @property
    def has_login_page(self) -> bool:
        return self.mode in ("users", "oidc")

    # -- per request ---------------------------------------------------------------------

    def peer(self, scope: Scope) -> str | None:
        client = scope.get("client")
        return client[0] if client else None

    def from_proxy(self, scope: Scope) -> bool:
        return self.proxies.trusts(self.peer(scope))

    def client_address(self, conn: HTTPConnection) -> str:
        """The address failures are counted against: the client a trusted proxy names,
        else the peer."""
        peer = self.peer(conn.scope) or "unknown"
        if self.from_proxy(conn.scope):
            forwarded = conn.headers.get("x-forwarded-for", "")
            hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
            if hops:
                return hops[-1]
        return peer

    async def identify(self, conn: HTTPConnection) -> Principal | None:
        return await self.authenticator.authenticate(conn, from_proxy=self.from_proxy(conn.scope))

    # -- users leaving -------------------------------------------------------------------

    def start(self) -> None:
        if self.users is not None and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_users(), name="webchat-users-watch")

    async def _watch_users(self) -> None:
        """Close the sockets of users removed from the file, whoever reloaded it (a request
        may have seen the change first): one stat() and one look-up per socket a tick."""
        users = self.users
        assert users is not None
        while True:
            await asyncio.sleep(USERS_WATCH_INTERVAL)
            try:
                users.refresh()
            except Exception:
                log.exception("could not re-read the users file %s", users.path)
                continue
            self.end_sockets_of_signed_out()

    def end_sockets_of_signed_out(self) -> int:
        closed = self.sockets.close_where(
            lambda p: not self.authenticator.signed_in(p), "signed out"
        )
        if closed:
            log.info("closed %d WebSocket(s) of removed users", closed)
        return closed

    def end_session_sockets(self, session_id: str) -> int:
        return self.sockets.close_where(lambda p: p.session_id == session_id, "logged out")

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self.sockets.aclose()
