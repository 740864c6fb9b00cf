"""Browser log-ins: a signed session cookie, and the log-outs every process honours.

The cookie holds who logged in and when, signed (not encrypted: nothing in it is secret) with
the deployment's secret through ``itsdangerous``, so any process of the deployment can check
it and a restart keeps everyone logged in. A log-out must end that one session everywhere, so
its id is kept as revoked (in the run coordination: memory or Redis) until the cookie would
have expired anyway.
"""

from __future__ import annotations

import secrets
import time
from typing import Protocol

from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import HTTPConnection
from starlette.responses import Response

from webchat.auth.principal import Principal, Role

SESSION_COOKIE = "webchat_session"

__all__ = ["SESSION_COOKIE", "Revocations", "SessionCookies", "SessionData"]


class SessionData(BaseModel):
    """What a session cookie says: the principal it was issued to, and when."""

    model_config = ConfigDict(extra="forbid")

    sid: str
    id: str
    name: str
    role: Role = "user"
    uid: str | None = None
    """The users-file identity of ``--auth users`` (a name removed and added again is a new
    uid, so the old cookie stops working)."""
    email: str | None = None
    groups: tuple[str, ...] = ()
    iat: float

    def principal(self, *, role: Role | None = None) -> Principal:
        return Principal(
            id=self.id,
            name=self.name,
            role=role or self.role,
            email=self.email,
            groups=self.groups,
            via="session",
            session_id=self.sid,
        )


class Revocations(Protocol):
    """Where logged-out session ids are kept (``webchat.chat.coordination``)."""

    async def revoke_session(self, session_id: str, ttl: float) -> None: ...

    async def session_revoked(self, session_id: str) -> bool: ...


class SessionCookies:
    """Issues, reads and clears the session cookie (HttpOnly, SameSite=Lax, Secure on
    https), with an absolute lifetime of ``max_age`` seconds."""

    def __init__(
        self, secret: bytes, revocations: Revocations, *, max_age: float, path: str = "/"
    ) -> None:
        self._secret = secret
        self._serializer = self.signer("webchat.session")
        self.revocations = revocations
        self.max_age = max_age
        self.path = path

    def signer(self, salt: str) -> URLSafeTimedSerializer:
        """A serializer with the deployment's secret for another short-lived signed value
        (e.g. the OIDC log-in state); the distinct ``salt`` keeps it from passing as a
        session."""
        return URLSafeTimedSerializer(self._secret, salt=salt)

    def issue(
        self, response: Response, principal: Principal, *, secure: bool, uid: str | None = None
    ) -> SessionData:
        data = SessionData(
            sid=secrets.token_urlsafe(16),
            id=principal.id,
            name=principal.name,
            role=principal.role,
            uid=uid,
            email=principal.email,
            groups=principal.groups,
            iat=time.time(),
        )
        response.set_cookie(
            SESSION_COOKIE,
            self._serializer.dumps(data.model_dump(mode="json")),
            max_age=int(self.max_age),
            path=self.path,
            httponly=True,
            samesite="lax",
            secure=secure,
        )
        return data

    async def read(self, conn: HTTPConnection) -> SessionData | None:
        """The request's session, if its cookie is genuine, unexpired and not logged out."""
        text = conn.cookies.get(SESSION_COOKIE)
        if not text:
            return None
        try:
            raw = self._serializer.loads(text, max_age=int(self.max_age))
            data = SessionData.model_validate(raw)
        except (BadSignature, ValidationError):
            return None
        if time.time() - data.iat > self.max_age:
            return None
        if await self.revocations.session_revoked(data.sid):
            return None
        return data

    def presented(self, conn: HTTPConnection) -> bool:
        return bool(conn.cookies.get(SESSION_COOKIE))

    async def end(self, response: Response, data: SessionData | None, *, secure: bool) -> None:
        """Log out: forget the cookie in this browser and refuse it on every process."""
        if data is not None:
            remaining = max(1.0, self.max_age - (time.time() - data.iat))
            await self.revocations.revoke_session(data.sid, remaining)
        response.delete_cookie(
            SESSION_COOKIE, path=self.path, httponly=True, samesite="lax", secure=secure
        )
