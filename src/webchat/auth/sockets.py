"""The WebSockets each user holds open, so a log-out or a removed user ends them at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from starlette.websockets import WebSocket

from webchat.auth.principal import Principal

__all__ = ["SIGNED_OUT", "LiveSockets"]

SIGNED_OUT = 4401
"""Close code for a socket whose user logged out or was removed (4000-4999: the app's own)."""


class LiveSockets:
    def __init__(self) -> None:
        self._sockets: dict[WebSocket, Principal] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def holding(self, websocket: WebSocket, principal: Principal) -> Iterator[None]:
        self._sockets[websocket] = principal
        try:
            yield
        finally:
            self._sockets.pop(websocket, None)

    def __len__(self) -> int:
        return len(self._sockets)

    def close_where(self, ended: Callable[[Principal], bool], reason: str) -> int:
        """Close every socket whose principal ``ended`` says is no longer signed in."""
        doomed = [ws for ws, principal in self._sockets.items() if ended(principal)]
        for websocket in doomed:
            self._sockets.pop(websocket, None)
            task = asyncio.create_task(self._close(websocket, reason))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return len(doomed)

    @staticmethod
    async def _close(websocket: WebSocket, reason: str) -> None:
        with contextlib.suppress(Exception):  # it may be closing on its own already
            await websocket.close(code=SIGNED_OUT, reason=reason)

    async def aclose(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
