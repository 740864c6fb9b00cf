"""Who is asking: the one value every route, the WebSocket and the core check ownership with."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

AuthMode = Literal["none", "users", "proxy", "oidc"]
Role = Literal["user", "admin"]
Via = Literal["none", "session", "token", "proxy"]
"""How the request proved who it is: ``session`` (cookie) and ``proxy`` (a header the
browser's proxy adds) ride along with any request a browser sends, so state-changing requests
made that way must also pass the cross-site checks; ``token`` (``Authorization: Bearer``) is
sent only by programs that hold it."""

__all__ = ["LOCAL_USER", "AuthMode", "Principal", "Role", "Via"]


class Principal(BaseModel):
    """An authenticated user. ``id`` is what conversations are owned by (stable for the
    user's lifetime); ``name`` is what the UI shows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    role: Role = "user"
    email: str | None = None
    groups: tuple[str, ...] = ()
    via: Via = "session"
    session_id: str | None = None
    """The login session this request belongs to (cookie logins only), so log-out can end
    exactly that session's sockets."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def browser_borne(self) -> bool:
        """Whether a cross-site page could make the browser send this credential."""
        return self.via in ("session", "proxy", "none")


LOCAL_USER = Principal(id="local", name="local", role="admin", via="none")
"""The one implicit user of ``--auth none``: it owns every conversation made without auth."""
