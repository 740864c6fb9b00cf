"""The consumer half shared by both backends: a queue between producer and iterator.

Backends only decide how messages reach the queue; ending, error delivery and idempotent close
behave the same everywhere, so consumers can switch backends without changing their loops.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from webchat.transport.base import TransportMessage

# ``None`` marks the end of the iteration; an exception is raised once to the consumer.
_Item = TransportMessage | Exception | None


class QueuedSubscription:
    def __init__(self, topic: str, maxsize: int = 0) -> None:
        self.topic = topic
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize)
        self._closed = False
        self._ended = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> QueuedSubscription:
        return self

    async def __anext__(self) -> TransportMessage:
        if self._closed or self._ended:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, TransportMessage):
            return item
        self._ended = True
        if item is None:
            raise StopAsyncIteration
        raise item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop()
        # The producer is stopped, so after draining there is room for the end marker, which
        # wakes a consumer blocked in ``__anext__``.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def _stop(self) -> None:
        """Detach from the producer; nothing may be put on the queue after this returns."""

    async def __aenter__(self) -> QueuedSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
