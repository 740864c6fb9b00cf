"""The write queue every store shares: writes are plain calls that only queue, and a writer
task owned by the queue applies them a batch at a time, so a streaming run never waits on a
database.

Each store gives the queue one thing, how to apply a batch (``apply``), and the queue owns
everything else: the pending writes, their numbering (a flush waits for its own number, not
for the queue to be empty), the counters, and the writer's lifecycle from ``start`` to a
``close`` that drains what was queued. The policies that differ between stores are
parameters: how long a batch may gather (SQLite waits a tick so a stream costs one commit per
tick), which errors mean "the server is away, keep the batch and retry" (PostgreSQL, Redis),
and how long a close waits for an unreachable server before it gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar

logger = logging.getLogger("webchat.storage")

W = TypeVar("W")

Errors = tuple[type[Exception], ...]

_FIRST_BACKOFF: Final = 0.1
_MAX_BACKOFF: Final = 2.0


class WriteQueue(Generic[W]):
    """Pending writes of one store, and the task that applies them.

    ``apply`` takes a batch and answers (applied, failed); it may raise one of ``retry``
    (the batch stays queued and is retried with backoff) and must handle the database's
    refusals itself (see ``replay_on_failure``). ``name`` is what logs call the store: never
    a URL that may hold a password.
    """

    def __init__(
        self,
        apply: Callable[[list[W]], Awaitable[tuple[int, int]]],
        *,
        name: str,
        task_name: str,
        kind_of: Callable[[W], str],
        batch_size: int = 500,
        batch_interval: float = 0.0,
        retry: Errors = (),
        close_timeout: float | None = None,
    ) -> None:
        self._apply = apply
        self._name = name
        self._task_name = task_name
        self._kind_of = kind_of
        self._batch_size = batch_size
        self._batch_interval = batch_interval
        self._retry = retry
        self._close_timeout = close_timeout
        self._pending: deque[W] = deque()
        self._wakeup = asyncio.Event()
        # Ends the writer's wait for more writes: a flush, a close or a full batch.
        self._urgent = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        # Writes are accepted until the writer has drained the queue for good, so a stream
        # still finishing while the store closes is written, not dropped.
        self._accepting = True
        self._close_task: asyncio.Task[None] | None = None
        self._closed = False
        # Writes are numbered as they are queued; flush waits for its number to be written.
        self._enqueued = 0
        self._done = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._writes_applied = 0
        self._write_errors = 0
        self._dropped = 0

    @property
    def queued(self) -> int:
        """Writes accepted but not yet taken by the writer (a batch being retried counts)."""
        return len(self._pending)

    @property
    def writes_applied(self) -> int:
        return self._writes_applied

    @property
    def write_errors(self) -> int:
        return self._write_errors

    @property
    def closed(self) -> bool:
        return self._closed

    def check_not_closed(self) -> None:
        """A store opens once: after ``close`` has begun, opening again is an error."""
        if self._closed or self._close_task is not None:
            raise RuntimeError("store is closed")

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer; writes queued before this are kept and written first."""
        self._writer = asyncio.create_task(self._write_loop(), name=self._task_name)
        self._writer.add_done_callback(self._writer_stopped)
        if self._pending:
            self._wakeup.set()

    async def close(self, release: Callable[[], Awaitable[None]]) -> None:
        """Write everything queued, then ``release`` the store's connection. Safe to call
        twice or concurrently: every caller waits for the one close."""
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close(release))
        # Shielded: a caller giving up on close must not abandon the final flush half way.
        await asyncio.shield(self._close_task)

    async def _close(self, release: Callable[[], Awaitable[None]]) -> None:
        self._stopping = True
        self._wakeup.set()
        self._urgent.set()
        writer = self._writer
        if writer is not None:
            # wait() rather than await: the writer's own failure must not abort the close.
            done, _ = await asyncio.wait([writer], timeout=self._close_timeout)
            if not done:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            elif writer.cancelled():
                logger.error("storage writer for %s was cancelled", self._name)
            elif (error := writer.exception()) is not None:
                logger.error("storage writer for %s failed", self._name, exc_info=error)
        self._accepting = False
        if self._pending:
            logger.error("closing %s with %d unwritten writes", self._name, len(self._pending))
            self._write_errors += len(self._pending)
            self._pending.clear()
        # Whatever was not written by now never will be; a later flush has nothing to wait for.
        self._done = self._enqueued
        await release()
        self._closed = True
        self._fail_waiters(RuntimeError("store closed"))

    # -- writes (never block) ------------------------------------------------------------

    def put(self, write: W) -> None:
        if not self._accepting:
            # Raising here would break a stream that outlived shutdown; losing the write is
            # the lesser harm, and it is counted.
            self._write_errors += 1
            self._dropped += 1
            if self._dropped == 1:  # once: a stream outliving shutdown would flood the log
                logger.warning(
                    "store %s is closed; dropping a %s write (further drops only counted)",
                    self._name,
                    self._kind_of(write),
                )
            return
        self._pending.append(write)
        self._enqueued += 1
        self._wakeup.set()
        if len(self._pending) >= self._batch_size:
            self._urgent.set()

    async def flush(self) -> None:
        """Return once every write queued before this call has been applied (or failed)."""
        target = self._enqueued
        if self._done >= target:
            return
        if self._writer is None or self._writer.done():
            raise RuntimeError("store is not open")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._urgent.set()
        await future

    # -- the writer task -----------------------------------------------------------------

    async def _write_loop(self) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            if not self._pending:
                if self._stopping:
                    self._accepting = False
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._gather_batch()
            batch = [self._pending[i] for i in range(min(self._batch_size, len(self._pending)))]
            if not self._retry:
                # Nothing will be retried: the batch is the writer's from now on.
                self._take(len(batch))
            try:
                applied, failed = await self._apply(batch)
            except self._retry as exc:
                logger.warning(
                    "%s unreachable (%s); %d writes kept, retrying in %.1fs",
                    self._name,
                    type(exc).__name__,
                    len(self._pending),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            except Exception:
                # apply handles the database's refusals; this is a bug, the writer lives on.
                logger.exception("storage writer for %s hit an unexpected error", self._name)
                applied, failed = 0, len(batch)
            backoff = _FIRST_BACKOFF
            if self._retry:
                self._take(len(batch))
            self._writes_applied += applied
            self._write_errors += failed
            self._done += len(batch)
            self._release_waiters()

    def _take(self, count: int) -> None:
        for _ in range(count):
            self._pending.popleft()

    async def _gather_batch(self) -> None:
        """Let a tick's writes pile up, so a stream of frames costs one transaction per
        ``batch_interval``, not one per frame; nobody waits: a flush (every read does one),
        a close or a full batch ends the wait at once."""
        if self._batch_interval <= 0:
            return
        self._urgent.clear()
        if self._waiters or self._stopping or len(self._pending) >= self._batch_size:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._batch_interval):
                await self._urgent.wait()

    def _release_waiters(self) -> None:
        still_waiting = []
        for target, future in self._waiters:
            if future.done():
                continue
            if target <= self._done:
                future.set_result(None)
            else:
                still_waiting.append((target, future))
        self._waiters = still_waiting

    def _writer_stopped(self, task: asyncio.Task[None]) -> None:
        # Without this, a flush waiting on a writer that was cancelled would wait forever.
        if self._waiters:
            self._fail_waiters(RuntimeError("storage writer stopped"))

    def _fail_waiters(self, error: Exception) -> None:
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(error)


async def replay_on_failure(
    batch: list[W],
    run: Callable[[list[W]], Awaitable[None]],
    *,
    refused: Errors,
    name: str,
    kind_of: Callable[[W], str],
    retry: Errors = (),
) -> tuple[int, int]:
    """Apply ``batch`` with ``run`` (one transaction); if the database refuses it, replay it
    one write per transaction, so a bad write does not take the good ones down with it.
    Returns (applied, failed). Errors in ``retry`` are the connection's, not the writes':
    they propagate, so the queue keeps the batch."""
    try:
        await run(batch)
        return len(batch), 0
    except retry:
        raise
    except refused:
        logger.exception(
            "writing a batch of %d to %s failed; retrying one at a time", len(batch), name
        )
    failed = 0
    for write in batch:
        try:
            await run([write])
        except retry:
            raise
        except refused:
            failed += 1
            if failed == 1:
                logger.exception("a %s write to %s failed", kind_of(write), name)
    if failed > 1:
        logger.error("%d of %d writes to %s failed", failed, len(batch), name)
    return len(batch) - failed, failed
