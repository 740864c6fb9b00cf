import asyncio
import inspect
import json

import pytest

from webchat.conversation.buffer import FrameBuffer
from webchat.conversation.frames import Frame
from webchat.conversation.pool import SLOW_CONSUMER_CODE, ConnectionPool


def frame(seq: int) -> Frame:
    """A frame that is never folded into another (not a delta)."""
    return Frame(seq=seq, type="log", data={"message": f"t{seq}"}, conv_id="c")


def delta(seq: int, key: str = "m") -> Frame:
    return Frame(seq=seq, type="llm.delta", data={"delta": f"t{seq} "}, conv_id="c", id=key)


class FakeConnection:
    """A WebSocket stand-in: ``stuck`` never completes a send; ``fail`` raises on send."""

    def __init__(
        self, *, stuck: bool = False, fail: bool = False, hold: asyncio.Event | None = None
    ) -> None:
        self.stuck = stuck
        self.fail = fail
        self.hold = hold  # sends wait until it is set (a network slower than the model)
        self.received: list[str] = []
        self.close_calls: list[tuple[int, str]] = []
        self.closed = asyncio.Event()
        self._progress = asyncio.Event()
        self._never = asyncio.Event()

    async def send_text(self, data: str, /) -> None:
        if self.stuck:
            await self._never.wait()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise RuntimeError("peer went away")
        await asyncio.sleep(0)  # a real socket write yields to the loop
        self.received.append(data)
        self._progress.set()

    async def close(self, code: int = 1000, reason: str = "", /) -> None:
        self.close_calls.append((code, reason))
        self.closed.set()

    async def wait_for_count(self, count: int) -> None:
        while len(self.received) < count:
            self._progress.clear()
            await self._progress.wait()


@pytest.fixture
async def no_leaked_tasks():
    before = asyncio.all_tasks()
    yield
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not leaked, f"tasks still pending: {leaked}"


async def test_stuck_client_is_dropped_without_delaying_the_others(no_leaked_tasks):
    assert not inspect.iscoroutinefunction(ConnectionPool.broadcast)
    assert not inspect.iscoroutinefunction(ConnectionPool.add)
    pool = ConnectionPool(on_idle=None, max_queue=1024)
    fast = [FakeConnection() for _ in range(3)]
    stuck = FakeConnection(stuck=True)
    for conn in fast:
        pool.add(conn)
    stuck_client = pool.add(stuck)
    frames = [frame(seq) for seq in range(1, 5001)]

    dropped_at = None
    for item in frames:
        assert pool.broadcast(item) is None  # returns at once, never a coroutine
        if dropped_at is None and stuck_client.closed:
            dropped_at = item.seq
        # The stream coordinator yields between transport messages; so does this producer.
        await asyncio.sleep(0)

    async with asyncio.timeout(5):
        for conn in fast:
            await conn.wait_for_count(5000)
        await stuck.closed.wait()

    for conn in fast:
        assert conn.received == [f.json for f in frames]
        assert conn.close_calls == []
    # Frame 1 is stuck in flight, then the queue holds 1024 more; the next one overflows it.
    assert dropped_at is not None and 1024 < dropped_at <= 1026
    assert stuck.received == []
    code, reason = stuck.close_calls[0]
    assert code == SLOW_CONSUMER_CODE == 4008
    assert reason == "slow consumer: reconnect with since=0"
    assert len(stuck.close_calls) == 1
    assert pool.clients_dropped == 1
    assert pool.count == 3
    assert pool.frames_sent == 3 * 5000
    await pool.close()


async def test_drop_reason_names_the_last_frame_sent():
    pool = ConnectionPool(max_queue=2)
    conn = FakeConnection()
    client = pool.add(conn)
    pool.broadcast(frame(4))
    pool.broadcast(frame(8))
    async with asyncio.timeout(5):
        await conn.wait_for_count(2)
    conn.stuck = True
    for seq in (12, 16, 20, 24):
        pool.broadcast(frame(seq))
        await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await conn.closed.wait()
    assert client.closed
    assert conn.close_calls == [(4008, "slow consumer: reconnect with since=8")]
    await pool.close()


async def test_backlog_then_live_has_no_gap_and_no_duplicate(no_leaked_tasks):
    pool = ConnectionPool()
    buffer = FrameBuffer()
    late = FakeConnection()
    joined = asyncio.Event()

    def dispatch(item: Frame) -> None:
        buffer.append(item)
        pool.broadcast(item)

    async def producer() -> None:
        for seq in range(1, 401):
            dispatch(frame(seq))
            if seq == 150:
                joined.set()
            await asyncio.sleep(0)

    async def join() -> None:
        await joined.wait()
        pool.add(late, buffer.since(0), hello="HELLO")

    await asyncio.gather(producer(), join())
    async with asyncio.timeout(5):
        await late.wait_for_count(401)
    assert late.received[0] == "HELLO"
    assert late.received[1:] == [frame(seq).json for seq in range(1, 401)]
    await pool.close()


async def test_join_with_since_gets_only_later_frames():
    pool = ConnectionPool()
    buffer = FrameBuffer()
    for seq in (4, 8, 9, 12):
        buffer.append(frame(seq))
    conn = FakeConnection()
    client = pool.add(conn, buffer.since(8), since=8)
    assert client.last_seq == 8
    pool.broadcast(frame(16))
    async with asyncio.timeout(5):
        await conn.wait_for_count(3)
    assert conn.received == [frame(s).json for s in (9, 12, 16)]
    assert client.last_seq == 16
    await pool.close()


async def test_backlog_does_not_count_against_the_queue_bound():
    pool = ConnectionPool(max_queue=10)
    conn = FakeConnection()
    backlog = [frame(seq) for seq in range(1, 101)]
    pool.add(conn, backlog)
    for seq in range(101, 106):
        pool.broadcast(frame(seq))
    async with asyncio.timeout(5):
        await conn.wait_for_count(105)
    assert conn.received == [frame(seq).json for seq in range(1, 106)]
    assert pool.clients_dropped == 0
    await pool.close()


async def test_send_direct_is_ordered_with_frames():
    pool = ConnectionPool()
    conn = FakeConnection()
    client = pool.add(conn, hello="hello")
    pool.broadcast(frame(1))
    assert pool.send_direct(client, "pong")
    pool.broadcast(frame(2))
    async with asyncio.timeout(5):
        await conn.wait_for_count(4)
    assert conn.received == ["hello", frame(1).json, "pong", frame(2).json]
    assert pool.frames_sent == 2
    pool.remove(client)
    assert not pool.send_direct(client, "pong")
    await pool.close()


async def test_on_idle_runs_when_the_last_client_leaves():
    calls: list[str] = []
    pool = ConnectionPool(on_idle=lambda: calls.append("idle"))
    first = pool.add(FakeConnection())
    second = pool.add(FakeConnection())
    pool.remove(first)
    assert calls == []
    pool.remove(first)  # removing twice is harmless
    pool.remove(second)
    assert calls == ["idle"]
    assert pool.count == 0
    await pool.close()
    assert calls == ["idle"]  # closing the pool is not a client leaving


async def test_dropped_last_client_makes_the_pool_idle():
    calls: list[str] = []
    pool = ConnectionPool(on_idle=lambda: calls.append("idle"), max_queue=1)
    conn = FakeConnection(stuck=True)
    pool.add(conn)
    for seq in (1, 2, 3):
        pool.broadcast(frame(seq))
        await asyncio.sleep(0)
    assert calls == ["idle"]
    async with asyncio.timeout(5):
        await conn.closed.wait()
    await pool.close()


async def test_send_error_removes_the_client():
    calls: list[str] = []
    pool = ConnectionPool(on_idle=lambda: calls.append("idle"))
    good, gone = FakeConnection(), FakeConnection(fail=True)
    pool.add(good)
    gone_client = pool.add(gone)
    pool.broadcast(frame(1))
    async with asyncio.timeout(5):
        await gone.closed.wait()
        await good.wait_for_count(1)
    assert gone_client.closed
    assert pool.count == 1
    assert pool.clients_dropped == 0
    pool.broadcast(frame(2))
    async with asyncio.timeout(5):
        await good.wait_for_count(2)
    assert calls == []
    await pool.close()


async def test_remove_stops_sending_and_leaves_the_connection_open():
    pool = ConnectionPool()
    conn = FakeConnection()
    client = pool.add(conn)
    pool.remove(client)
    pool.broadcast(frame(1))
    await pool.close()
    assert conn.received == []
    assert conn.close_calls == []


async def test_close_closes_every_client_and_leaves_no_task(no_leaked_tasks):
    pool = ConnectionPool()
    conns = [FakeConnection(), FakeConnection(stuck=True), FakeConnection()]
    for conn in conns:
        pool.add(conn)
    pool.broadcast(frame(1))
    await asyncio.sleep(0)
    await pool.close()
    for conn in conns:
        assert conn.close_calls == [(1001, "conversation closed")]
    assert pool.count == 0
    with pytest.raises(RuntimeError):
        pool.add(FakeConnection())


class InstantConnection:
    """A WebSocket whose send completes without suspending, as a socket with room does.

    ``block()`` makes the next sends wait until ``unblock()`` (a peer whose buffer is full);
    ``fail`` makes them raise at once (a peer that is gone).
    """

    def __init__(self) -> None:
        self.received: list[str] = []
        self.close_calls: list[tuple[int, str]] = []
        self.closed = asyncio.Event()
        self.fail = False
        self.in_flight = 0
        self._progress = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def block(self) -> None:
        self._writable.clear()

    def unblock(self) -> None:
        self._writable.set()

    async def send_text(self, data: str, /) -> None:
        self.in_flight += 1
        try:
            if not self._writable.is_set():
                await self._writable.wait()
            if self.fail:
                raise OSError("peer went away")
            self.received.append(data)
            self._progress.set()
        finally:
            self.in_flight -= 1

    async def wait_for_count(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.received) < count:
                self._progress.clear()
                await self._progress.wait()

    async def close(self, code: int = 1000, reason: str = "", /) -> None:
        self.close_calls.append((code, reason))
        self.closed.set()


async def test_a_send_that_completes_at_once_wakes_no_task(no_leaked_tasks):
    pool = ConnectionPool()
    conns = [InstantConnection() for _ in range(3)]
    clients = [pool.add(conn) for conn in conns]
    for seq in (4, 8, 12):
        pool.broadcast(frame(seq))
        # Sent inside broadcast: no await, so no writer task ran.
        for conn in conns:
            assert conn.received[-1] == frame(seq).json
    assert pool.frames_sent == 9
    assert [c.last_seq for c in clients] == [12, 12, 12]
    assert all(not c.queued for c in clients)
    await pool.close()


async def test_a_send_that_must_wait_is_finished_by_the_writer_in_order():
    pool = ConnectionPool()
    slow, fast = InstantConnection(), InstantConnection()
    slow_client = pool.add(slow)
    pool.add(fast)
    slow.block()
    for seq in range(1, 11):
        pool.broadcast(frame(seq))
    # The fast peer got everything at once; the slow one has frame 1 in flight, 2-10 queued.
    assert fast.received == [frame(seq).json for seq in range(1, 11)]
    assert slow.received == []
    assert slow.in_flight == 1
    assert slow_client.queued == 9
    assert slow_client.last_seq == 0  # nothing sent yet: resume from before frame 1
    await asyncio.sleep(0.01)
    assert slow.received == []  # still waiting, and no duplicate send was started
    assert slow.in_flight == 1
    slow.unblock()
    pool.broadcast(frame(11))  # queued behind the backlog, not sent ahead of it
    await slow.wait_for_count(11)
    assert slow.received == [frame(seq).json for seq in range(1, 12)]
    assert slow_client.last_seq == 11
    assert pool.frames_sent == 22
    # Idle again: the next frame goes out inside broadcast.
    pool.broadcast(frame(12))
    assert slow.received[-1] == frame(12).json
    await pool.close()


async def test_a_stalled_send_counts_as_in_flight_for_the_queue_bound():
    pool = ConnectionPool(max_queue=3)
    conn = InstantConnection()
    client = pool.add(conn)
    pool.broadcast(frame(4))
    conn.block()
    for seq in (8, 12, 16, 20):  # 8 in flight, 12-20 queued (3 = the bound)
        pool.broadcast(frame(seq))
    assert not client.closed
    pool.broadcast(frame(24))
    assert client.closed
    async with asyncio.timeout(5):
        await conn.closed.wait()
    assert conn.close_calls == [(SLOW_CONSUMER_CODE, "slow consumer: reconnect with since=4")]
    assert conn.in_flight == 0  # the stalled send was ended, not left pending
    assert conn.received == [frame(4).json]
    await pool.close()


async def test_removing_a_client_cancels_its_stalled_send(no_leaked_tasks):
    pool = ConnectionPool()
    conn = InstantConnection()
    conn.block()
    client = pool.add(conn)
    pool.broadcast(frame(1))
    assert conn.in_flight == 1
    pool.remove(client)
    await pool.close()
    assert conn.in_flight == 0
    assert conn.received == []
    assert conn.close_calls == []


async def test_a_stalled_send_not_yet_resumed_is_closed_when_the_pool_closes(no_leaked_tasks):
    pool = ConnectionPool()
    conn = InstantConnection()
    conn.block()
    pool.add(conn)
    pool.broadcast(frame(1))  # stalls before the writer ever ran
    await pool.close()
    assert conn.in_flight == 0
    assert conn.close_calls == [(1001, "conversation closed")]


async def test_a_send_failing_at_once_removes_the_client():
    calls: list[str] = []
    pool = ConnectionPool(on_idle=lambda: calls.append("idle"))
    good, gone = InstantConnection(), InstantConnection()
    gone.fail = True
    pool.add(good)
    gone_client = pool.add(gone)
    pool.broadcast(frame(1))
    assert gone_client.closed
    assert pool.count == 1
    assert good.received == [frame(1).json]
    async with asyncio.timeout(5):
        await gone.closed.wait()
    assert gone.close_calls == [(1001, "send failed")]
    assert pool.clients_dropped == 0
    assert calls == []
    assert not pool.send_direct(gone_client, "pong")
    await pool.close()


async def test_send_direct_goes_out_at_once_when_idle_and_in_order_when_not():
    pool = ConnectionPool()
    conn = InstantConnection()
    client = pool.add(conn, hello="hello")
    await conn.wait_for_count(1)
    assert pool.send_direct(client, "pong")
    assert conn.received == ["hello", "pong"]
    conn.block()
    pool.broadcast(frame(1))
    assert pool.send_direct(client, "pong2")
    pool.broadcast(frame(2))
    conn.unblock()
    await conn.wait_for_count(5)
    assert conn.received == ["hello", "pong", frame(1).json, "pong2", frame(2).json]
    assert pool.frames_sent == 2
    await pool.close()


async def test_a_frame_reaching_a_client_by_backlog_and_live_is_sent_once(no_leaked_tasks):
    """A backlog read from storage may already hold frames the stream dispatches later."""
    pool = ConnectionPool()
    conn = FakeConnection()
    pool.add(conn, [frame(1), frame(2), frame(3)], since=0)
    for seq in (2, 3, 4):  # 2 and 3 arrive again, live; 4 is new
        pool.broadcast(frame(seq))
    async with asyncio.timeout(5):
        await conn.wait_for_count(4)
    pool.broadcast(frame(3))  # and once more after everything was sent
    pool.broadcast(frame(5))
    async with asyncio.timeout(5):
        await conn.wait_for_count(5)
    await pool.close()
    assert conn.received == [frame(seq).json for seq in (1, 2, 3, 4, 5)]


async def test_a_client_joining_after_since_never_gets_older_frames(no_leaked_tasks):
    pool = ConnectionPool()
    conn = FakeConnection()
    pool.add(conn, [frame(5), frame(6)], since=6)  # a caller's backlog may overlap ``since``
    pool.broadcast(frame(6))
    pool.broadcast(frame(7))
    async with asyncio.timeout(5):
        await conn.wait_for_count(1)
    await pool.close()
    assert conn.received == [frame(7).json]


async def test_close_with_drain_sends_what_is_queued_then_closes_with_the_code(no_leaked_tasks):
    pool = ConnectionPool()
    conns = [FakeConnection(), FakeConnection()]
    for conn in conns:
        pool.add(conn, [frame(seq) for seq in range(1, 201)], since=0)
    pool.broadcast(frame(201))
    await pool.close(1012, "server restarting", drain=5)
    for conn in conns:
        assert conn.received == [frame(seq).json for seq in range(1, 202)]
        assert conn.close_calls == [(1012, "server restarting")]


async def test_drain_gives_up_on_a_stuck_client(no_leaked_tasks):
    pool = ConnectionPool()
    stuck = FakeConnection(stuck=True)
    pool.add(stuck, [frame(1)], since=0)
    assert await pool.drain(0.05) is False
    await pool.close(1012, "server restarting")
    assert stuck.close_calls == [(1012, "server restarting")]


async def test_a_slow_client_gets_queued_deltas_of_a_stream_folded_into_one_frame(no_leaked_tasks):
    pool = ConnectionPool(max_queue=8)
    fast = FakeConnection()
    hold = asyncio.Event()
    slow = FakeConnection(hold=hold)
    pool.add(fast)
    pool.add(slow)
    frames = [delta(1), *[delta(seq) for seq in range(2, 5001)], frame(5001)]
    frames += [delta(seq, "other") for seq in range(5002, 5005)]
    for item in frames:
        pool.broadcast(item)
        await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await fast.wait_for_count(len(frames))
        hold.set()
        await slow.wait_for_count(4)
    # A client that keeps up gets every frame as it was made.
    assert fast.received == [f.json for f in frames]
    # The slow one: the delta in flight, the 4,999 queued behind it as one frame under the
    # last seq, the log, then the next stream's deltas folded too; far below max_queue.
    first, folded, log, other = (json.loads(text)["event"] for text in slow.received)
    assert first["seq"] == 1
    assert folded["seq"] == 5000 and folded["type"] == "llm.delta" and folded["id"] == "m"
    assert first["delta"] + folded["delta"] == "".join(f"t{seq} " for seq in range(1, 5001))
    assert log["seq"] == 5001
    assert (other["seq"], other["delta"]) == (5004, "t5002 t5003 t5004 ")
    assert not slow.close_calls and pool.clients_dropped == 0
    # Its resume point is the last frame it was sent, as for a client that got every delta.
    assert next(c for c in pool if c.conn is slow).last_seq == 5004
    await pool.close()
