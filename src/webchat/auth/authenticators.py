"""How each ``--auth`` mode tells who is asking.

An authenticator answers one question per request, ``authenticate``: the Principal, or None
for "not signed in". The gatekeeper (``webchat.auth.gate``) decides what None means for the
route (401 JSON, a redirect to the log-in page, a refused handshake).
"""

from __future__ import annotations

import logging
from typing import Protocol

from starlette.requests import HTTPConnection

from webchat.auth.principal import LOCAL_USER, AuthMode, Principal
from webchat.auth.sessions import SessionCookies
from webchat.auth.users import UsersFile, UsersFileError

log = logging.getLogger("webchat.auth")

__all__ = [
    "Authenticator",
    "NoAuthenticator",
    "ProxyAuthenticator",
    "SessionAuthenticator",
    "UsersAuthenticator",
    "bearer_token",
]


def bearer_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator(Protocol):
    mode: AuthMode

    async def authenticate(self, conn: HTTPConnection, *, from_proxy: bool) -> Principal | None:
        """``from_proxy``: the peer is a trusted reverse proxy (``--trusted-proxies``)."""
        ...

    def signed_in(self, principal: Principal) -> bool:
        """Whether ``principal`` (authenticated earlier) may still be served: the check a
        long-lived WebSocket is held to when users change."""
        ...


class NoAuthenticator:
    """``--auth none``: everyone is the one local user."""

    mode: AuthMode = "none"

    async def authenticate(self, conn: HTTPConnection, *, from_proxy: bool) -> Principal | None:
        return LOCAL_USER

    def signed_in(self, principal: Principal) -> bool:
        return True


class SessionAuthenticator:
    """Signed-in browsers: the session cookie. Base of the modes with a log-in page."""

    mode: AuthMode = "oidc"

    def __init__(self, sessions: SessionCookies) -> None:
        self.sessions = sessions

    async def authenticate(self, conn: HTTPConnection, *, from_proxy: bool) -> Principal | None:
        data = await self.sessions.read(conn)
        return data.principal() if data is not None else None

    def signed_in(self, principal: Principal) -> bool:
        return True


class UsersAuthenticator(SessionAuthenticator):
    """``--auth users``: an API token (``Authorization: Bearer``) or a session cookie, both
    checked against the users file as it is now, so removing a user takes effect at once."""

    mode: AuthMode = "users"

    def __init__(self, users: UsersFile, sessions: SessionCookies) -> None:
        super().__init__(sessions)
        self.users = users

    async def authenticate(self, conn: HTTPConnection, *, from_proxy: bool) -> Principal | None:
        try:
            self.users.refresh()  # one stat() while the file is unchanged
        except UsersFileError as exc:
            # A broken edit of the file: it fails closed (nobody is signed in) until fixed.
            log.error("users file unusable, refusing every user: %s", exc)
            return None
        token = bearer_token(conn)
        if token is not None:
            record = self.users.verify_token(token)
            if record is None:
                return None
            return Principal(id=record.name, name=record.name, role=record.role, via="token")
        data = await self.sessions.read(conn)
        if data is None:
            return None
        record = self.users.get(data.name)
        if record is None or record.uid != data.uid:
            return None  # removed (or removed and added again: another person)
        return data.principal(role=record.role)

    def signed_in(self, principal: Principal) -> bool:
        return self.users.get(principal.id) is not None


class ProxyAuthenticator:
    """``--auth proxy``: a reverse proxy (oauth2-proxy, Authelia…) has authenticated the user
    and says who in a header. Only a trusted peer may say so; from anyone else the header
    is ignored."""

    mode: AuthMode = "proxy"

    def __init__(
        self,
        *,
        user_header: str,
        email_header: str | None,
        groups_header: str | None,
        admin_groups: list[str],
    ) -> None:
        self.user_header = user_header.lower()
        self.email_header = email_header.lower() if email_header else None
        self.groups_header = groups_header.lower() if groups_header else None
        self.admin_groups = frozenset(admin_groups)

    async def authenticate(self, conn: HTTPConnection, *, from_proxy: bool) -> Principal | None:
        if not from_proxy:
            return None
        user = conn.headers.get(self.user_header, "").strip()
        if not user:
            return None
        email = conn.headers.get(self.email_header, "").strip() if self.email_header else ""
        raw_groups = conn.headers.get(self.groups_header, "") if self.groups_header else ""
        groups = tuple(g.strip() for g in raw_groups.split(",") if g.strip())
        return Principal(
            id=user,
            name=user,
            email=email or None,
            groups=groups,
            role="admin" if self.admin_groups.intersection(groups) else "user",
            via="proxy",
        )

    def signed_in(self, principal: Principal) -> bool:
        return True
