"""Event sinks: where an inference publishes what happens.

A sink is anything with ``async publish_event(event)``. Engines and the tool loop only know this
interface; the conversation core decides what stands behind it (a transport topic, a filter, a
fan-out to several sinks, an extractor that collects usage).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TextIO, runtime_checkable

from webchat.events.models import Event


@runtime_checkable
class EventSink(Protocol):
    async def publish_event(self, event: Event) -> None: ...


class CollectingSink:
    """Keeps every event in memory, in order. For tests, demos and one-shot runs."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    async def publish_event(self, event: Event) -> None:
        self.events.append(event)
        async with self._changed:
            self._changed.notify_all()

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    async def wait_for(self, predicate: Callable[[list[Event]], bool]) -> None:
        """Return once ``predicate(events)`` holds; bound it with ``asyncio.timeout``."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self.events))


class FanoutSink:
    """Publishes each event to several sinks, in the order given."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = tuple(sinks)

    async def publish_event(self, event: Event) -> None:
        for sink in self.sinks:
            await sink.publish_event(event)


class FilterSink:
    """Passes on only the events ``keep`` accepts."""

    def __init__(self, inner: EventSink, keep: Callable[[Event], bool]) -> None:
        self.inner = inner
        self.keep = keep

    async def publish_event(self, event: Event) -> None:
        if self.keep(event):
            await self.inner.publish_event(event)


class ExtractorSink:
    """Lets ``extract`` see every event (e.g. to total usage), then passes it on unchanged."""

    def __init__(
        self, inner: EventSink, extract: Callable[[Event], Awaitable[None] | None]
    ) -> None:
        self.inner = inner
        self.extract = extract

    async def publish_event(self, event: Event) -> None:
        outcome = self.extract(event)
        if outcome is not None:
            await outcome
        await self.inner.publish_event(event)


class JsonLinesSink:
    """Writes each event as one JSON line to a text stream (e.g. stdout), flushed per line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    async def publish_event(self, event: Event) -> None:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()
