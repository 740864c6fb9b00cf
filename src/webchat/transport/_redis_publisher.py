"""Pipelined XADDs: every entry published while a batch is in flight goes in the next batch.

A run streams a token per event; one awaited ``XADD`` per token capped a conversation at one
token per round trip and spent more CPU in redis-py than Redis spent on the entry. Here one
writer task per transport owns one connection and sends every entry queued so far (of every
topic) as one pipelined write, then reads the replies in order. One connection and one FIFO
keep each stream's entries in publish order, across batches and retries.

Outages: a batch that fails on a dead connection is retried at once on a fresh one (after a
Redis restart every pooled connection is dead), then with backoff. Entries keep their uuid
across attempts, so one whose reply was lost and is written again is dropped by readers. An
entry is given up when its ``retry_for`` window is over; every later entry of its topic is
failed with it, because a stream with a hole in the middle of an answer is worse than an
answer that stops. A reply that is an error (``WRONGTYPE``) fails that entry alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aredis
import redis.exceptions
from redis.asyncio.connection import AbstractConnection as Connection

from webchat.transport.base import TransportClosedError, TransportMessage
from webchat.transport.redis_client import (
    as_text,
    drop_connection,
    hold_connection,
    pack_command,
)

logger = logging.getLogger("webchat.transport.redis_streams")

RETRYABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,
    OSError,
)

MAX_BATCH = 1000
"""Entries per pipelined write: bounds the bytes of one write and the replies read per batch."""


@dataclass(slots=True)
class PendingEntry:
    topic: str
    payload: bytes
    uuid: str
    command: bytes
    deadline: float
    future: asyncio.Future[TransportMessage] = field(repr=False)


class Publisher:
    """Owns the writer task and its connection; ``enqueue`` never waits."""

    def __init__(
        self,
        client: aredis.Redis,
        *,
        fields: tuple[bytes, bytes, bytes],
        metadata: bytes,
        maxlen: int | None,
        seq_of: Callable[[str], int],
        command_timeout: float,
        retry_for: float,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self._client = client
        self._uuid_field, self._metadata_field, self._payload_field = fields
        self._metadata = metadata
        self._trim: tuple[bytes, ...] = () if maxlen is None else (b"MAXLEN", b"~", b"%d" % maxlen)
        self._seq_of = seq_of
        self._command_timeout = command_timeout
        self._retry_for = retry_for
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._queue: deque[PendingEntry] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._connection: Connection | None = None

    def enqueue(self, topic: str, payload: bytes) -> asyncio.Future[TransportMessage]:
        """Queue one entry; the future resolves to its message once Redis has it."""
        loop = asyncio.get_running_loop()
        # One uuid for every attempt: an attempt whose reply was lost may have been written.
        message_uuid = str(uuid.uuid4())
        command = pack_command(
            b"XADD",
            topic.encode(),
            *self._trim,
            b"*",
            self._uuid_field,
            message_uuid.encode(),
            self._metadata_field,
            self._metadata,
            self._payload_field,
            payload,
        )
        future: asyncio.Future[TransportMessage] = loop.create_future()
        entry = PendingEntry(
            topic=topic,
            payload=payload,
            uuid=message_uuid,
            command=command,
            deadline=loop.time() + self._retry_for,
            future=future,
        )
        self._queue.append(entry)
        self._idle.clear()
        if self._task is None:
            self._task = asyncio.create_task(self._write_loop(), name="redis-publisher")
        self._wake.set()
        return future

    async def close(self, drain_for: float) -> None:
        """Write what is queued (for up to ``drain_for`` seconds), then stop."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_for):
                    await self._idle.wait()
            task.cancel()
            await asyncio.wait([task])
        self._fail(list(self._queue), TransportClosedError("transport is closed"))
        self._queue.clear()
        await self._release()

    async def _release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await drop_connection(self._client, connection)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._backoff_initial
        failures = 0
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            # Entries stay queued until their reply is read, so a failed batch is retried.
            batch = [self._queue[i] for i in range(min(MAX_BATCH, len(self._queue)))]
            try:
                await self._send(batch)
            except RETRYABLE as exc:
                await self._release()
                failures += 1
                if failures == 1:
                    continue  # pooled connections are all dead after a restart: one fresh try
                self._give_up_expired(loop.time() + delay, exc)
                if self._queue:
                    logger.warning(
                        "publishing %d entries failed (%s: %s); retry %d in %.1fs",
                        len(self._queue),
                        type(exc).__name__,
                        exc,
                        failures,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._backoff_max)
                continue
            except Exception as exc:
                # Not Redis being away: a reply we cannot read. Fail this batch rather than
                # leave its publishers waiting forever, and go on with a fresh connection.
                logger.exception("publishing a batch of %d entries failed", len(batch))
                await self._release()
                failed = {id(entry) for entry in batch}
                self._queue = deque(e for e in self._queue if id(e) not in failed)
                self._fail(batch, exc)
                continue
            if failures:
                logger.info("publishing resumed after %d failures", failures)
                failures, delay = 0, self._backoff_initial

    async def _send(self, batch: list[PendingEntry]) -> None:
        if self._connection is None:
            self._connection = await hold_connection(self._client)
        connection = self._connection
        async with asyncio.timeout(self._command_timeout):
            await connection.send_packed_command(
                [entry.command for entry in batch], check_health=False
            )
            for entry in batch:
                try:
                    raw_id = await connection.read_response()
                except redis.exceptions.ResponseError as exc:
                    self._queue.popleft()
                    logger.error("publishing to %s failed: %s", entry.topic, exc)
                    self._fail([entry], exc)
                    continue
                self._queue.popleft()
                self._land(entry, as_text(raw_id))

    def _land(self, entry: PendingEntry, entry_id: str) -> None:
        if entry.future.done():  # the publisher stopped waiting; the entry is written anyway
            return
        try:
            message = TransportMessage(
                topic=entry.topic,
                id=entry_id,
                seq=self._seq_of(entry_id),
                payload=entry.payload,
                uuid=entry.uuid,
            )
        except ValueError as exc:
            entry.future.set_exception(exc)
            return
        entry.future.set_result(message)

    def _give_up_expired(self, retry_at: float, error: Exception) -> None:
        """Fail entries whose window ends before the next attempt, and their topics' later
        entries (a hole in a stream is worse than its end)."""
        topics = {entry.topic for entry in self._queue if retry_at > entry.deadline}
        if not topics:
            return
        failed = [entry for entry in self._queue if entry.topic in topics]
        self._queue = deque(entry for entry in self._queue if entry.topic not in topics)
        logger.error(
            "giving up publishing %d entries to %d topics: %s: %s",
            len(failed),
            len(topics),
            type(error).__name__,
            error,
        )
        self._fail(failed, error)

    @staticmethod
    def _fail(entries: list[PendingEntry], error: Exception) -> None:
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(error)
