"""The WebSocket clients of one conversation, each fed by its own writer task.

Broadcasting must never wait for a client: a run streams tokens into every connection, and one
stalled browser (or a dead network path that TCP has not noticed yet) would otherwise slow the
run and every other viewer. So ``broadcast`` only appends to per-client queues and returns;
each client's writer task does the sending. A client whose queue is full is dropped with close
code 4008 and told where to resume, which costs it a reconnect instead of costing the others.

``add`` and ``broadcast`` are synchronous on purpose: a joining client gets its backlog queued
and is registered for live frames without an ``await`` in between, so in asyncio no frame can
fall between the backlog and the live stream. Each client also keeps a seq floor (the newest
frame it was given): a frame at or below it is skipped, so a frame that reaches the pool by
two paths (a backlog read from storage that overlaps the live stream) is still sent once.

Sending without a wake-up per client
------------------------------------
Waking one writer task per client for every frame made task switching the pool's own
biggest cost (each wake-up costs about as much as the socket write it leads to). So when a
client's writer is idle (nothing queued, nothing in flight), ``broadcast`` starts the send
itself: it runs the ``send_text`` coroutine's first step by hand. A WebSocket send normally
completes in that step (the bytes go to the socket buffer), and then no task was woken at
all. If the send has to wait (the peer's socket buffer is full: uvicorn waits for the
transport to be writable again), the suspended coroutine is handed to the client's writer
task, which finishes it, then drains whatever was queued meanwhile; ``broadcast`` never
waits. Frames are still sent one per WebSocket message, in order, each at most once.

Coalescing
----------
A client that keeps up gets every delta as it comes. One whose queue already ends with a
delta of the same stream (its network is slower than the model) gets the new delta folded
into that queued one: one frame with both texts, under the newer seq (``compaction``). So a
slow network costs bytes, not frames, a long answer never fills the queue of a client that
is merely slow, and resuming with ``since`` stays exact, because a client's resume point is
the last frame it was *sent*.

The first step of a send therefore runs in the broadcaster's task (the stream coordinator),
the rest, if any, in the client's writer: a ``Connection`` must not tie its ``send_text`` to
the task it started in (Starlette's and uvicorn's WebSockets do not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Iterator, Sequence
from typing import Any, Protocol

from webchat.conversation.compaction import merge_deltas, mergeable
from webchat.conversation.frames import Frame, message_seq_of
from webchat.observability.hooks import observe_delivery_latency, observe_send_queue_depth
from webchat.transport.base import SEQ_EPOCH_MS, SEQ_PER_MS

logger = logging.getLogger(__name__)

SLOW_CONSUMER_CODE = 4008
GOING_AWAY_CODE = 1001
SERVICE_RESTART_CODE = 1012
"""Close code of a server going down for a restart: reconnect (with ``since``) soon."""
DRAIN_POLL = 0.01
LATENCY_SAMPLE = 16
"""One sent frame in this many has its publish->client latency and its client's queue depth
measured: a histogram observation per frame per client would cost as much as the send."""


def published_at(seq: int) -> float:
    """When (Unix seconds, to the millisecond) the event of frame ``seq`` was published: a
    transport seq is the millisecond of its publish times 1000, plus a counter."""
    return (message_seq_of(seq) // SEQ_PER_MS + SEQ_EPOCH_MS) / 1000


class Connection(Protocol):
    """What the pool needs of a WebSocket (Starlette's ``WebSocket`` fits)."""

    async def send_text(self, data: str, /) -> None: ...

    async def close(self, code: int = 1000, reason: str = "", /) -> None: ...


class _Merged:
    """Queued deltas of one stream, sent as one frame (built when it is sent, so folding in
    one more delta costs an append, however many are already folded)."""

    __slots__ = ("frames",)

    def __init__(self, first: Frame, second: Frame) -> None:
        self.frames = [first, second]

    @property
    def seq(self) -> int:
        return self.frames[-1].seq

    @property
    def json(self) -> str:
        return merge_deltas(self.frames).json


_Item = Frame | _Merged | str
"""What a client's queue holds: frames, folded deltas, per-client messages (``ws.hello``)."""

_Stalled = tuple[Coroutine[Any, Any, None], Any, _Item]
"""A send started by ``broadcast`` that had to wait: its coroutine, what it waits on, its item."""


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """Finish ``coro`` in the calling task; it was started by hand and yielded ``waiting``.

    This is ``yield from`` for a coroutine that already ran its first step: the task waits on
    what the coroutine waits on, and sends, throws (a cancel) and closes reach the coroutine.
    """
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                waiting = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting = coro.send(sent)
        except StopIteration:
            return


class Client:
    """One connection's queue and resume point; created by ``ConnectionPool.add``."""

    __slots__ = (
        "_exempt",
        "_high",
        "_items",
        "_sending",
        "_stalled",
        "_task",
        "_wake",
        "closed",
        "conn",
        "last_seq",
    )

    def __init__(self, conn: Connection, last_seq: int | None) -> None:
        self.conn = conn
        self.closed = False
        self.last_seq = last_seq
        """The seq a reconnect should resume after: the last frame sent, or the join point."""
        self._high = -1 if last_seq is None else last_seq
        # The newest frame seq queued or sent (or the join point): a frame at or below it
        # is never given to this client again, whichever path (backlog, live) it comes by.
        self._items: deque[_Item] = deque()
        # Items at the head of the queue that were queued at join (greeting and backlog): they
        # are already in memory in the frame buffer, so they do not count against the bound.
        self._exempt = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending = False  # the writer task is inside a send
        self._stalled: _Stalled | None = None  # a send broadcast started that must wait

    @property
    def _idle(self) -> bool:
        """Nothing queued or in flight: a new item may be sent at once."""
        return not self._items and not self._sending and self._stalled is None

    def _close_stalled(self, _: object = None) -> None:
        stalled, self._stalled = self._stalled, None
        if stalled is not None:
            stalled[0].close()

    @property
    def queued(self) -> int:
        """Items waiting to be sent, backlog included."""
        return len(self._items)

    @property
    def _live(self) -> int:
        return len(self._items) - self._exempt

    def _fold(self, frame: Frame) -> bool:
        """Fold ``frame`` into a queued delta of the same stream at the tail; False if none."""
        if not self._items:
            return False
        tail = self._items[-1]
        if isinstance(tail, Frame):
            if not mergeable(tail, frame):
                return False
            self._items[-1] = _Merged(tail, frame)
        elif isinstance(tail, _Merged) and mergeable(tail.frames[-1], frame):
            tail.frames.append(frame)
        else:
            return False
        self._high = frame.seq
        return True

    def _push(self, item: Frame | str) -> None:
        if isinstance(item, Frame):
            if self.last_seq is None:
                self.last_seq = item.seq - 1
            self._high = item.seq
        self._items.append(item)
        self._wake.set()

    def __repr__(self) -> str:
        return f"<Client last_seq={self.last_seq} queued={self.queued} closed={self.closed}>"


class ConnectionPool:
    """Clients of one conversation; see the module docstring.

    ``on_idle`` runs when the last client leaves (removed, dropped or gone), not when the pool
    itself is closed. ``clients_dropped`` counts slow-consumer drops only; clients whose send
    failed were already gone.
    """

    def __init__(
        self,
        on_idle: Callable[[], None] | None = None,
        max_queue: int = 1024,
        *,
        close_timeout: float = 5.0,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.on_idle = on_idle
        self.max_queue = max_queue
        self.close_timeout = close_timeout
        self.frames_sent = 0
        self.clients_dropped = 0
        self._clients: dict[Client, None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def count(self) -> int:
        return len(self._clients)

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients))

    def add(
        self,
        conn: Connection,
        backlog: Sequence[Frame] = (),
        *,
        since: int | None = None,
        hello: str | None = None,
    ) -> Client:
        """Register ``conn``: ``hello`` first, then ``backlog``, then every later broadcast.

        ``since`` is the client's own resume point, reported back to it if it is dropped
        before anything was sent; without it the first queued frame's seq stands in for it.
        """
        if self._closed:
            raise RuntimeError("connection pool is closed")
        client = Client(conn, since)
        if hello is not None:
            client._push(hello)
        for frame in backlog:
            if frame.seq > client._high:
                client._push(frame)
        client._exempt = len(client._items)
        client._task = self._spawn(self._write(client), f"ws-writer {id(client):x}")
        client._task.add_done_callback(client._close_stalled)
        self._clients[client] = None
        return client

    def broadcast(self, frame: Frame) -> None:
        """Send or queue ``frame`` for every client; never waits. Full clients are dropped."""
        overflowing: list[Client] = []
        failed: list[tuple[Client, Exception]] = []
        seq = frame.seq
        for client in self._clients:
            if seq <= client._high:
                continue  # it already has this frame (e.g. from its backlog)
            if client._idle:
                error = self._send_now(client, frame)
                if error is not None:
                    failed.append((client, error))
            elif client._fold(frame):
                continue
            elif client._live >= self.max_queue:
                overflowing.append(client)
            else:
                client._push(frame)
                observe_send_queue_depth(client._live)
        for client in overflowing:
            self._drop(client)
        for client, error in failed:
            self._send_failed(client, error)

    def _send_now(self, client: Client, item: Frame | str) -> Exception | None:
        """Start sending ``item`` to an idle client; the error if the send failed at once."""
        if isinstance(item, Frame):
            if client.last_seq is None:
                client.last_seq = item.seq - 1
            client._high = item.seq
            coro = client.conn.send_text(item.json)
        else:
            coro = client.conn.send_text(item)
        try:
            waiting = coro.send(None)
        except StopIteration:
            self._sent(client, item)
            return None
        except Exception as exc:
            return exc
        client._stalled = (coro, waiting, item)
        client._wake.set()
        return None

    def _sent(self, client: Client, item: _Item) -> None:
        if not isinstance(item, str):
            client.last_seq = item.seq
            self.frames_sent += 1
            if self.frames_sent % LATENCY_SAMPLE == 0:
                observe_delivery_latency(time.time() - published_at(item.seq))
                observe_send_queue_depth(client._live)

    def _send_failed(self, client: Client, exc: Exception) -> None:
        logger.info("WebSocket client gone (%s: %s); removing it", type(exc).__name__, exc)
        if self._detach(client):
            if client._task is not None:
                client._task.cancel()
            self._spawn(self._close_quietly(client, GOING_AWAY_CODE, "send failed"), "ws-close")

    def send_direct(self, client: Client, text: str) -> bool:
        """Queue a per-client message (``ws.hello``, ``ws.pong``) in order with the frames.

        Returns whether it was queued: not when the client is gone or was just dropped.
        """
        if client.closed:
            return False
        if client._idle:
            error = self._send_now(client, text)
            if error is not None:
                self._send_failed(client, error)
                return False
            return True
        if client._live >= self.max_queue:
            self._drop(client)
            return False
        client._push(text)
        return True

    def remove(self, client: Client) -> None:
        """Forget ``client`` and stop its writer; its connection is left to its owner."""
        if self._detach(client) and client._task is not None:
            client._task.cancel()

    async def close(
        self,
        code: int = GOING_AWAY_CODE,
        reason: str = "conversation closed",
        *,
        drain: float = 0.0,
    ) -> None:
        """Close every client with ``code`` and wait for every task the pool started.

        With ``drain``, first give each client up to that many seconds to receive what is
        queued for it (a restart must not cut the end of a run off its viewers).
        """
        if drain > 0:
            await self.drain(drain)
        self._closed = True
        clients = list(self._clients)
        self._clients.clear()
        for client in clients:
            client.closed = True
            client._items.clear()
            self._spawn(self._shutdown(client, code, reason), "ws-close")
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self, timeout: float) -> bool:
        """Wait until every client has been sent everything queued for it; False on timeout.

        Polled, because it runs once, at shutdown: a wake-up per client per frame is what the
        send path avoids.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while any(not client._idle for client in self._clients):  # noqa: ASYNC110
                    await asyncio.sleep(DRAIN_POLL)
                return True
        return False

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _detach(self, client: Client) -> bool:
        """Take ``client`` out of the pool; True if it was in it."""
        if client.closed or client not in self._clients:
            return False
        client.closed = True
        del self._clients[client]
        if not self._clients and not self._closed and self.on_idle is not None:
            try:
                self.on_idle()
            except Exception:
                logger.exception("connection pool on_idle callback failed")
        return True

    def _drop(self, client: Client) -> None:
        if not self._detach(client):
            return
        self.clients_dropped += 1
        reason = f"slow consumer: reconnect with since={client.last_seq or 0}"
        logger.warning(
            "dropping WebSocket client: %d frames queued (max %d); %s",
            client.queued,
            self.max_queue,
            reason,
        )
        client._items.clear()
        self._spawn(self._shutdown(client, SLOW_CONSUMER_CODE, reason), "ws-drop")

    async def _shutdown(self, client: Client, code: int, reason: str) -> None:
        task = client._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        client._close_stalled()
        await self._close_quietly(client, code, reason)

    async def _close_quietly(self, client: Client, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(self.close_timeout):
                await client.conn.close(code, reason)
        except Exception as exc:  # the peer may be gone already; closing is best effort
            logger.debug("closing WebSocket client failed: %r", exc)

    async def _write(self, client: Client) -> None:
        items = client._items
        send = client.conn.send_text
        while True:
            item: _Item
            stalled = client._stalled
            if stalled is not None:
                coro, waiting, item = stalled
                try:
                    await _resume(coro, waiting)
                except Exception as exc:
                    client._stalled = None
                    await self._write_failed(client, exc)
                    return
                client._stalled = None
                self._sent(client, item)
                continue
            if not items:
                client._wake.clear()
                await client._wake.wait()
                continue
            item = items.popleft()
            if client._exempt:
                client._exempt -= 1
            client._sending = True
            try:
                await send(item if isinstance(item, str) else item.json)
            except Exception as exc:
                await self._write_failed(client, exc)
                return
            finally:
                client._sending = False
            self._sent(client, item)

    async def _write_failed(self, client: Client, exc: Exception) -> None:
        logger.info("WebSocket client gone (%s: %s); removing it", type(exc).__name__, exc)
        if self._detach(client):
            await self._close_quietly(client, GOING_AWAY_CODE, "send failed")
