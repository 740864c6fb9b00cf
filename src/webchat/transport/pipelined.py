"""Write-behind publishing for transports whose publish is a network round trip (Redis).

An engine awaits each publish; if every token waited for its own ``XADD`` reply, a run
would stream one token per round trip. ``WriteBehind`` lets deltas go without waiting (the
transport writes them in order, batched), and makes every other event a sync point: it
waits until everything before it, and itself, is written. So a run still learns of a failed
publish (at the latest at its ``final`` or ``run.finished``, which raise it, exactly as a
failed publish did before), a run's terminal event is in Redis before the run lock is
released, and the entries a run may leave unwritten at any moment are a bounded tail of
deltas.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from webchat.events.models import Event, PartialEvent, PartialThinkingEvent

if TYPE_CHECKING:
    from webchat.transport.base import TransportMessage

MAX_UNCONFIRMED = 1000
"""Deltas a sink lets run ahead of Redis before it waits: bounds memory during an outage."""

_DELTAS = (PartialEvent, PartialThinkingEvent)


@runtime_checkable
class PipelinedTransport(Protocol):
    def publish_nowait(self, topic: str, payload: bytes) -> asyncio.Future[TransportMessage]: ...


class WriteBehind:
    """One topic's unconfirmed publishes; the first failure among them is raised once."""

    def __init__(
        self, transport: PipelinedTransport, topic: str, *, max_unconfirmed: int = MAX_UNCONFIRMED
    ) -> None:
        self._transport = transport
        self._topic = topic
        self._max_unconfirmed = max_unconfirmed
        self._unconfirmed: deque[asyncio.Future[TransportMessage]] = deque()

    async def publish_event(self, event: Event) -> None:
        future = self._transport.publish_nowait(self._topic, event.to_json().encode())
        self._unconfirmed.append(future)
        if isinstance(event, _DELTAS) and len(self._unconfirmed) < self._max_unconfirmed:
            self._check()
            return
        # ``wait``, not ``await``: cancelling this caller must not cancel the queued entry
        # (it is written anyway; skipping it would leave a hole in the stream).
        # Entries of a topic are confirmed in order: the newest done means all are; at the
        # cap, a delta waits for the oldest only.
        await asyncio.wait([self._unconfirmed[0] if isinstance(event, _DELTAS) else future])
        self._check()

    def _check(self) -> None:
        """Forget confirmed publishes; raise the first failure among them."""
        error: BaseException | None = None
        while self._unconfirmed and self._unconfirmed[0].done():
            done = self._unconfirmed.popleft()
            failure = None if done.cancelled() else done.exception()
            if error is None and failure is not None:
                error = failure
        if error is not None:
            raise error
