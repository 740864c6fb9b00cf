"""Redis Streams transport: every server process sees every event of a conversation.

Each topic is a stream with approximate MAXLEN trimming. Entries are laid out as
watermill-redisstream (the transport of Go geppetto and pinocchio) marshals them, so Go
producers and consumers share one Redis with us: ``_watermill_message_uuid`` (a UUID string),
``metadata`` (a msgpack map of strings, empty here) and ``payload`` (the event JSON). Reading
needs only ``payload``; the uuid, when present, lets readers drop a message written twice.

Publishing is pipelined (``_redis_publisher``): ``publish`` queues the entry and resolves when
the batch it rode in lands, so entries published while a batch is in flight share the next
round trip; ``publish_nowait`` returns that future without waiting (``TopicSink`` streams deltas
that way). Each subscription holds one connection and speaks ``XREAD`` on it directly, with
``COUNT`` large enough to take a whole burst in one reply; ``BLOCK`` returns as soon as an entry
arrives, so it bounds idle polling, not latency.

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
from collections.abc import Iterator
from typing import Any

import msgpack
import redis.asyncio as aredis
from redis.asyncio.connection import AbstractConnection as Connection

from webchat.transport._redis_publisher import RETRYABLE as _RETRYABLE
from webchat.transport._redis_publisher import Publisher
from webchat.transport._subscription import QueuedSubscription
from webchat.transport.base import (
    SEQ_EPOCH_MS,
    SEQ_PER_MS,
    TransportClosedError,
    TransportMessage,
)
from webchat.transport.redis_client import (
    as_text,
    drop_connection,
    hold_connection,
    pack_command,
    streaming_client,
)

logger = logging.getLogger(__name__)

PAYLOAD_FIELD = b"payload"
UUID_FIELD = b"_watermill_message_uuid"
METADATA_FIELD = b"metadata"
EMPTY_METADATA: bytes = msgpack.packb({})


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


def _entries(response: Any) -> Iterator[tuple[bytes | str, dict[Any, Any]]]:
    # Raw XREAD replies: RESP2 ``[[stream, [[id, [field, value, ...]], ...]]]``; RESP3 a
    # ``{stream: [...]}`` mapping. Fields come as a flat list (a mapping after redis-py's
    # callbacks), turned into a dict here, once per entry.
    if not response:
        return
    streams = response.values() if isinstance(response, dict) else (s[1] for s in response)
    for entries in streams:
        for entry in entries:
            entry_id, fields = entry[0], entry[1]
            if isinstance(fields, list):
                fields = dict(zip(fields[::2], fields[1::2], strict=True))
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
        topic = self.topic.encode()
        connection: Connection | None = None
        try:
            while True:
                try:
                    if connection is None:
                        connection = await hold_connection(owner.client)
                    async with asyncio.timeout(owner.block_ms / 1000 + owner.command_timeout):
                        await connection.send_packed_command(
                            pack_command(*owner._xread_head, topic, self._last_id.encode()),
                            check_health=False,
                        )
                        response = await connection.read_response()
                except _RETRYABLE as exc:
                    if connection is not None:
                        await drop_connection(owner.client, connection)
                        connection = None
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
                    entry_id = as_text(raw_id)
                    self._last_id = entry_id
                    message = self._message(entry_id, fields)
                    if message is not None:
                        await self._queue.put(message)
        finally:
            if connection is not None:
                await drop_connection(owner.client, connection)

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
            topic=self.topic, id=entry_id, seq=seq, payload=payload, uuid=as_text(message_uuid)
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

    Every subscription holds one pooled connection for its ``XREAD`` loop, and the publisher
    one for its pipelined ``XADD`` batches. A publish that Redis did not answer is retried
    (with the same uuid: one that was written after all is dropped by readers) for up to
    ``publish_retry_for`` seconds; subscriptions run their own backoff (``backoff_initial``
    doubling up to ``backoff_max``) that resumes from their cursor.
    """

    def __init__(
        self,
        url: str,
        *,
        maxlen: int | None = 10_000,
        block_ms: int = 1000,
        read_count: int = 1000,
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
        self._xread_head: tuple[bytes, ...] = (b"XREAD", b"COUNT", b"%d" % read_count)
        self._xread_head += (b"BLOCK", b"%d" % block_ms, b"STREAMS")
        self._publisher = Publisher(
            self.client,
            fields=(UUID_FIELD, METADATA_FIELD, PAYLOAD_FIELD),
            metadata=EMPTY_METADATA,
            maxlen=maxlen,
            seq_of=seq_from_entry_id,
            command_timeout=command_timeout,
            retry_for=publish_retry_for,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self._subscriptions: set[_RedisSubscription] = set()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("transport is closed")

    def _forget(self, subscription: _RedisSubscription) -> None:
        self._subscriptions.discard(subscription)

    async def publish(self, topic: str, payload: bytes) -> TransportMessage:
        """The message once Redis has it; it rides in the next pipelined batch."""
        return await self.publish_nowait(topic, payload)

    def publish_nowait(self, topic: str, payload: bytes) -> asyncio.Future[TransportMessage]:
        """Queue one entry behind every earlier one, without waiting for Redis.

        The future resolves to the message (its ``seq`` from the entry id) when its batch
        lands, or fails once the entry is given up (``publish_retry_for``). Waiting for it is
        optional: entries are written in call order either way.
        """
        self._check_open()
        return self._publisher.enqueue(topic, payload)

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
        return "0-0" if newest_id is None else as_text(newest_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Entries already accepted are written if Redis answers within one command timeout.
        await self._publisher.close(drain_for=self.command_timeout)
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self.client.aclose()
