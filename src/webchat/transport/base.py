"""The pub/sub contract shared by every transport backend.

Engines publish events to a conversation's topic; stream coordinators subscribe to it. Both
sides only see these protocols, so the in-memory and Redis backends are interchangeable and a
deployment picks one by configuration.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from webchat.events.models import Event, parse_event
from webchat.transport.pipelined import PipelinedTransport, WriteBehind

TOPIC_PREFIX = "chat:"

SEQ_EPOCH_MS = 1_735_689_600_000
"""2025-01-01T00:00:00Z. Seqs count from here so frame seqs (seq * 4 + slot) stay below 2**53,
the largest integer a browser holds exactly, for about seventy years."""
SEQ_PER_MS = 1000


def clock_seq() -> int:
    """The seq of "now": the same shape as a Redis entry id's seq (ms since epoch * 1000).

    The in-memory backend never goes below it, so its seqs keep increasing across restarts
    of the server, just as Redis's do, and persisted frame seqs stay valid.
    """
    return (time.time_ns() // 1_000_000 - SEQ_EPOCH_MS) * SEQ_PER_MS


def topic_for(conv_id: str) -> str:
    """The topic (Redis stream key) carrying one conversation's events."""
    return f"{TOPIC_PREFIX}{conv_id}"


class TransportClosedError(RuntimeError):
    """The transport was closed; it cannot publish or subscribe any more."""


class TransportMessage:
    """One published payload as every reader of the topic sees it.

    ``seq`` is monotonic per topic and identical in every process, so it can be handed to
    clients as a resume point (``after_seq``); ``id`` is the backend's own position.

    A message published in-process (``publish_event`` of the in-memory backend) carries the
    event object itself, and its ``payload`` is only encoded if someone reads it: the stream
    coordinator takes ``to_event()``, so a token crosses the process without a JSON round trip.
    Events are not changed once published, so sharing the object is safe.
    """

    __slots__ = ("_event", "_payload", "id", "seq", "topic", "uuid")

    def __init__(
        self,
        topic: str,
        id: str,
        seq: int,
        payload: bytes | None = None,
        uuid: str = "",
        *,
        event: Event | None = None,
    ) -> None:
        if payload is None and event is None:
            raise ValueError("a transport message needs a payload or an event")
        self.topic = topic
        self.id = id
        self.seq = seq
        self.uuid = uuid
        """The publisher's own id of the message (watermill's ``_watermill_message_uuid``): a
        message written twice (a publish retried after an answer was lost) has one uuid under
        two entry ids, so readers can drop the second copy. Empty when the producer gave none."""
        self._payload = payload
        self._event = event

    @property
    def payload(self) -> bytes:
        """The event in geppetto's wire form (encoded on first use for in-process messages)."""
        if self._payload is None:
            assert self._event is not None
            self._payload = self._event.to_json().encode()
        return self._payload

    def to_event(self) -> Event:
        """The event: the published object in-process, else parsed from the payload.

        Raises ``EventParseError`` for a payload that is not an event.
        """
        if self._event is None:
            self._event = parse_event(self.payload)
        return self._event

    def _key(self) -> tuple[str, str, int, str, bytes]:
        return (self.topic, self.id, self.seq, self.uuid, self.payload)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TransportMessage):
            return NotImplemented
        return other is self or self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.topic, self.id, self.seq))

    def __repr__(self) -> str:
        return f"TransportMessage(topic={self.topic!r}, id={self.id!r}, seq={self.seq})"


@runtime_checkable
class Subscription(Protocol):
    """One reader of one topic; iterate it for messages, in publish order."""

    def __aiter__(self) -> AsyncIterator[TransportMessage]: ...

    async def close(self) -> None:
        """Idempotent; ends the iteration (buffered, undelivered messages are dropped)."""
        ...


@runtime_checkable
class Transport(Protocol):
    async def publish(self, topic: str, payload: bytes) -> TransportMessage: ...

    async def subscribe(self, topic: str, *, after_seq: int | None = None) -> Subscription:
        """A live subscription, with no join race.

        When this returns, every message published after the call returned (and, with
        ``after_seq``, every retained message with a greater ``seq``) will be delivered, in
        order, exactly once.
        """
        ...

    async def close(self) -> None:
        """Closes every subscription and connection and awaits every task the transport owns."""
        ...


@runtime_checkable
class DeletableTopics(Protocol):
    """A transport that can drop a topic and everything it retains (both backends can)."""

    async def delete_topic(self, topic: str) -> None: ...


@runtime_checkable
class EventTransport(Protocol):
    """A transport that hands events across as objects (the in-memory one: same process)."""

    async def publish_event(self, topic: str, event: Event) -> TransportMessage: ...


class TopicSink:
    """The base event sink: an engine's events land on the conversation's topic.

    Events are published in geppetto's wire form, so Go consumers of the same Redis read them;
    a transport that stays in the process takes the event object instead.
    """

    def __init__(self, transport: Transport, topic: str) -> None:
        self.transport = transport
        self.topic = topic
        self._direct = transport if isinstance(transport, EventTransport) else None
        self._behind = (
            WriteBehind(transport, topic) if isinstance(transport, PipelinedTransport) else None
        )

    @classmethod
    def for_conversation(cls, transport: Transport, conv_id: str) -> TopicSink:
        return cls(transport, topic_for(conv_id))

    async def publish_event(self, event: Event) -> None:
        if self._direct is not None:
            await self._direct.publish_event(self.topic, event)
        elif self._behind is not None:
            await self._behind.publish_event(event)
        else:
            await self.transport.publish(self.topic, event.to_json().encode())
