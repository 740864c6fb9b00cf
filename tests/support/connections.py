"""A WebSocket stand-in that records what the server sends, for core-level tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any


class RecordingConnection:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self._changed = asyncio.Condition()

    async def send_text(self, data: str, /) -> None:
        self.sent.append(data)
        async with self._changed:
            self._changed.notify_all()

    async def close(self, code: int = 1000, reason: str = "", /) -> None:
        self.closed = (code, reason)
        async with self._changed:
            self._changed.notify_all()

    def events(self) -> list[dict[str, Any]]:
        """The ``event`` objects of the semantic frames received, in order."""
        return [m["event"] for m in map(json.loads, self.sent) if m.get("sem")]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events()]

    async def wait_for(self, predicate: Callable[[RecordingConnection], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def wait_for_type(self, frame_type: str, count: int = 1) -> None:
        await self.wait_for(lambda c: c.types().count(frame_type) >= count)
