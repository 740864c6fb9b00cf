"""The pub/sub contract shared by every transport backend.

Engines publish events to a conversation's topic; stream coordinators subscribe to it. Both
sides only see these protocols, so the in-memory and Redis backends are interchangeable and a
deployment picks one by configuration.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from webchat.events.models import Event

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


@dataclass(frozen=True, slots=True)
class TransportMessage:
    """One published payload as every reader of the topic sees it.

    ``seq`` is monotonic per topic and identical in every process, so it can be handed to
    clients as a resume point (``after_seq``); ``id`` is the backend's own position.
    """

    topic: str
    id: str
    seq: int
    payload: bytes
    uuid: str = ""
    """The publisher's own id of the message (watermill's ``_watermill_message_uuid``): a
    message written twice (a publish retried after an answer was lost) has one uuid under two
    entry ids, so readers can drop the second copy. Empty when the producer gave none."""


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


class TopicSink:
    """The base event sink: an engine's events land on the conversation's topic.

    Events are published in geppetto's wire form, so Go consumers of the same Redis read them.
    """

    def __init__(self, transport: Transport, topic: str) -> None:
        self.transport = transport
        self.topic = topic

    @classmethod
    def for_conversation(cls, transport: Transport, conv_id: str) -> TopicSink:
        return cls(transport, topic_for(conv_id))

    async def publish_event(self, event: Event) -> None:
        await self.transport.publish(self.topic, event.to_json().encode())
