"""Pub/sub between engines and stream coordinators: in-memory or Redis Streams."""

from __future__ import annotations

from typing import Any, Literal

from webchat.transport.base import (
    TOPIC_PREFIX,
    DeletableTopics,
    Subscription,
    TopicSink,
    Transport,
    TransportClosedError,
    TransportMessage,
    topic_for,
)
from webchat.transport.memory import InMemoryTransport
from webchat.transport.redis_streams import (
    RedisStreamsTransport,
    entry_id_from_seq,
    seq_from_entry_id,
)

TransportKind = Literal["memory", "redis"]


def create_transport(
    kind: TransportKind, redis_url: str | None = None, **options: Any
) -> Transport:
    """Build the configured backend; ``options`` go to its constructor."""
    if kind == "memory":
        return InMemoryTransport(**options)
    if kind == "redis":
        if not redis_url:
            raise ValueError("the redis transport needs a redis_url")
        return RedisStreamsTransport(redis_url, **options)
    raise ValueError(f"unknown transport kind {kind!r} (expected 'memory' or 'redis')")


__all__ = [
    "TOPIC_PREFIX",
    "DeletableTopics",
    "InMemoryTransport",
    "RedisStreamsTransport",
    "Subscription",
    "TopicSink",
    "Transport",
    "TransportClosedError",
    "TransportKind",
    "TransportMessage",
    "create_transport",
    "entry_id_from_seq",
    "seq_from_entry_id",
    "topic_for",
]
