"""Redis Streams transport: every server process sees every event of a conversation.

Each topic is a stream with approximate MAXLEN trimming. Entries are laid out as
watermill-redisstream (the transport of Go geppetto and pinocchio) marshals them, so Go
producers and consumers share one Redis with us: ``_watermill_message_uuid`` (a UUID string),
``metadata`` (a msgpack map of strings, empty here) and ``payload`` (the event JSON). Reading
needs only ``payload``; the uuid, when present, lets readers drop a message written twice.

Fan-out is done with plain cursor reads (``XREAD BLOCK`` from the subscription's own last id),
never consumer groups: a group would split the events between processes.

``seq`` is derived from the entry id, so every process computes the same value without
coordination: id ``ms-n`` gives ``seq = (ms - SEQ_EPOCH_MS) * 1000 + n``. This assumes fewer
than 1000 entries per millisecond per topic (Redis only increments ``n`` within one
millisecond). A chat conversation is orders of magnitude below that; entries that break it (or
whose ids were chosen by an outside producer) are skipped with an error log rather than given a
seq that would collide with a neighbour's.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack
import redis.asyncio as aredis
import redis.exceptions
from redis.typing import EncodableT, FieldT

from webchat.transport._subscription import QueuedSubscription
from webchat.transport.base import (
    SEQ_EPOCH_MS,
    SEQ_PER_MS,
    TransportClosedError,
    TransportMessage,
)
from webchat.transport.redis_client import streaming_client

logger = logging.getLogger(__name__)

PAYLOAD_FIELD = b"payload"
UUID_FIELD = b"_watermill_message_uuid"
METADATA_FIELD = b"metadata"
EMPTY_METADATA: bytes = msgpack.packb({})

# Transient failures worth waiting out; anything else (e.g. WRONGTYPE) ends the subscription.
_RETRYABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,
    OSError,
)


def seq_from_entry_id(entry_id: str | bytes) -> int:
    """``ms-n`` -> ``(ms - SEQ_EPOCH_MS) * 1000 + n``; ``ValueError`` if it cannot be one."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms_text, sep, n_text = text.partition("-")
    if not sep:
        raise ValueError(f"not a stream entry id: {text!r}")
    ms, n = int(ms_text), int(n_text)
    if ms < 0 or n < 0:
        raise ValueError(f"not a stream entry id: {text!r}")
    if ms < SEQ_EPOCH_MS:
        raise ValueError(f"entry id {text!r} is older than the seq epoch (2025-01-01)")
    if n >= SEQ_PER_MS:
        raise ValueError(
            f"entry id {text!r} has sequence part {n} >= {SEQ_PER_MS}; "
            "seq assumes fewer than 1000 entries per millisecond per topic"
        )
    return (ms - SEQ_EPOCH_MS) * SEQ_PER_MS + n


def entry_id_from_seq(seq: int) -> str:
    """The entry id a ``seq`` came from; ``XREAD`` from it returns exactly the later entries."""
    if seq < 0:
        raise ValueError(f"seq must be >= 0, got {seq}")
    ms, n = divmod(seq, SEQ_PER_MS)
    return f"{ms + SEQ_EPOCH_MS}-{n}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(response: Any) -> Iterator[tuple[bytes | str, dict[Any, Any]]]:
    # RESP2 replies ``[[stream, [(id, fields), ...]]]``; RESP3 a ``{stream: [...]}`` mapping.
    if not response:
        return
    streams = response.values() if isinstance(response, dict) else (s[1] for s in response)
    for entries in streams:
        for entry in entries:
            entry_id, fields = entry[0], entry[1]
            yield entry_id, fields or {}


class _RedisSubscription(QueuedSubscription):
    """Owns one reader task; the bounded queue makes a slow consumer pause the reader.

    Pausing costs nothing: unread entries stay in the stream. The cursor (``_last_id``) only
    moves past entries that were queued or deliberately skipped, so a reconnect resumes exactly
    where delivery stopped.
    """

    def __init__(self, owner: RedisStreamsTransport, topic: str, start_id: str) -> None:
        super().__init__(topic, maxsize=owner.buffer_size)
        self._owner = owner
        self._last_id = start_id
        self._task: asyncio.Task[None] | None = None

    def _start(self) -> None:
        self._task = asyncio.create_task(self._read_loop(), name=f"redis-sub {self.topic}")

    async def _read_loop(self) -> None:
        owner = self._owner
        delay = owner.backoff_initial
        failures = 0
        while True:
            try:
                async with asyncio.timeout(owner.block_ms / 1000 + owner.command_timeout):
                    response = await owner.client.xread(
                        {self.topic: self._last_id}, count=owner.read_count, block=owner.block_ms
                    )
            except _RETRYABLE as exc:
                failures += 1
                logger.warning(
                    "reading %s failed (%s: %s); retry %d in %.1fs from %s",
                    self.topic,
                    type(exc).__name__,
                    exc,
                    failures,
                    delay,
                    self._last_id,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, owner.backoff_max)
                continue
            except Exception as exc:
                logger.error("reading %s failed permanently: %r", self.topic, exc)
                await self._queue.put(exc)
                return
            if failures:
                logger.info("reading %s resumed after %d failures", self.topic, failures)
                failures, delay = 0, owner.backoff_initial
            for raw_id, fields in _entries(response):
                entry_id = _text(raw_id)
                self._last_id = entry_id
                message = self._message(entry_id, fields)
                if message is not None:
                    await self._queue.put(message)

    def _message(self, entry_id: str, fields: dict[Any, Any]) -> TransportMessage | None:
        # ``str`` keys and values appear only if the URL asked for ``decode_responses``.
        payload = fields.get(PAYLOAD_FIELD, fields.get(PAYLOAD_FIELD.decode()))
        if isinstance(payload, str):
            payload = payload.encode()
        if not isinstance(payload, bytes):
            logger.warning(
                "skipping entry %s of %s: no %r field", entry_id, self.topic, PAYLOAD_FIELD
            )
            return None
        try:
            seq = seq_from_entry_id(entry_id)
        except ValueError as exc:
            logger.error("skipping entry of %s: %s", self.topic, exc)
            return None
        message_uuid = fields.get(UUID_FIELD, fields.get(UUID_FIELD.decode(), b""))
        return TransportMessage(
            topic=self.topic, id=entry_id, seq=seq, payload=payload, uuid=_text(message_uuid)
        )

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # Cancelling interrupts a pending XREAD BLOCK at once (redis-py drops that
            # connection rather than pooling it mid-reply). A cancel can still be lost: on 3.11
            # ``asyncio.wait_for`` (redis-py's send path when a socket timeout is set, e.g. in
            # the URL) swallows one that races a finishing send, so repeat until it lands.
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.05)
            if not task.cancelled():
                task.exception()  # retrieved, so a failed reader is never reported twice
        self._owner._forget(self)


class RedisStreamsTransport:
    """Streams on a real Redis server, one ``redis.asyncio`` client and pool per transport.

    Every subscription holds one pooled connection while blocked in ``XREAD``. Client-level
    retries are off: a publish fails fast to its caller (a publish that timed out may still
    have been written), and subscriptions run their own backoff (``backoff_initial`` doubling
    up to ``backoff_max``) that resumes from their cursor.
    """

    def __init__(
        self,
        url: str,
        *,
        maxlen: int | None = 10_000,
        block_ms: int = 1000,
        read_count: int = 100,
        buffer_size: int = 1000,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        command_timeout: float = 5.0,
        publish_retry_for: float = 30.0,
        max_connections: int = 10_000,
    ) -> None:
        if block_ms <= 0:
            raise ValueError("block_ms must be > 0 (0 would block forever)")
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.read_count = read_count
        self.buffer_size = buffer_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.command_timeout = command_timeout
        self.publish_retry_for = publish_retry_for
        """Seconds a publish keeps retrying while Redis is unreachable, so a run survives a
        short outage (it completes once Redis is back) instead of failing at once."""
        # Deadlines are ``asyncio.timeout`` around each command (see redis_client.py).
        # Each live subscription keeps one connection blocked in XREAD: the pool must hold
        # one per followed conversation (redis-py's default of 100 capped a process at ~100).
        self.client: aredis.Redis = streaming_client(
            url, max_connections=max_connections, socket_connect_timeout=command_timeout
        )
        self._subscriptions: set[_RedisSubscription] = set()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("transport is closed")

    def _forget(self, subscription: _RedisSubscription) -> None:
        self._subscriptions.discard(subscription)

    async def publish(self, topic: str, payload: bytes) -> TransportMessage:
        self._check_open()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.publish_retry_for
        delay = self.backoff_initial
        # One uuid for every attempt: an attempt whose reply was lost may have been written.
        message_uuid = str(uuid.uuid4())
        fields: dict[FieldT, EncodableT] = {
            UUID_FIELD: message_uuid.encode(),
            METADATA_FIELD: EMPTY_METADATA,
            PAYLOAD_FIELD: payload,
        }
        while True:
            try:
                async with asyncio.timeout(self.command_timeout):
                    raw_id = await self.client.xadd(
                        topic, fields, maxlen=self.maxlen, approximate=True
                    )
                break
            except _RETRYABLE as exc:
                if loop.time() + delay > give_up:
                    raise
                logger.warning("publish to %s failed (%s); retrying in %.1fs", topic, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
        entry_id = _text(raw_id)
        return TransportMessage(
            topic=topic,
            id=entry_id,
            seq=seq_from_entry_id(entry_id),
            payload=payload,
            uuid=message_uuid,
        )

    async def subscribe(self, topic: str, *, after_seq: int | None = None) -> QueuedSubscription:
        self._check_open()
        if after_seq is None:
            # Pin the cursor now, not ``$`` in the loop: ``$`` would be resolved only when the
            # first XREAD runs and would miss anything published in between.
            start_id = await self._last_entry_id(topic)
        else:
            start_id = entry_id_from_seq(after_seq)
        subscription = _RedisSubscription(self, topic, start_id)
        self._subscriptions.add(subscription)
        subscription._start()
        return subscription

    async def delete_topic(self, topic: str) -> None:
        """Delete the topic's stream (its conversation was deleted), so a new conversation
        under the same id does not replay it. A reader still following it blocks on the
        missing key and sees the entries of a stream created again later (newer ids)."""
        self._check_open()
        async with asyncio.timeout(self.command_timeout):
            await self.client.delete(topic)

    async def _last_entry_id(self, topic: str) -> str:
        async with asyncio.timeout(self.command_timeout):
            newest = await self.client.xrevrange(topic, count=1)
        newest_id = newest[0][0] if newest else None
        return "0-0" if newest_id is None else _text(newest_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self.client.aclose()
