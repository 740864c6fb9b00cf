"""Frames streamed one at a time are written in batches: one transaction per tick.

The stores here wait a long ``batch_interval`` (far longer than any test), so a batch is cut
only by what must cut it (a flush, a read, a close, a full batch): what these tests see does
not depend on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.storage.helpers import make_frames, make_record, make_turns
from webchat.storage import SQLiteStore
from webchat.storage.redis_store import RedisStore

LONG_TICK = 3600.0
GUARD = 10.0  # a bound on a wait that would otherwise hang the run, never a measurement


@pytest.fixture
async def ticking(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(db_path, batch_interval=LONG_TICK)
    await store.open()
    yield store
    await store.close()


async def stream(store: SQLiteStore | RedisStore, conv_id: str, seqs: range) -> None:
    """One frame per loop turn, as a run's stream coordinator appends them."""
    for frame in make_frames(conv_id, seqs):
        store.append_frames(conv_id, [frame])
        await asyncio.sleep(0)


def wal_frames(db_path: Path) -> int:
    """Pages appended to the write-ahead log since it was last reset: every committed
    transaction appends at least one, so 200 transactions cannot fit in a handful."""
    conn = sqlite3.connect(db_path)
    try:
        _busy, log, _checkpointed = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(log)
    finally:
        conn.close()


async def test_a_streamed_tick_is_one_transaction(ticking: SQLiteStore, db_path: Path) -> None:
    ticking.save_conversation(make_record())
    await ticking.flush()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # start counting from an empty log
    conn.close()

    await stream(ticking, "conv-1", range(1, 201))
    assert ticking.queued == 200  # nothing was taken while the tick lasted
    await ticking.flush()

    assert ticking.writes_applied == 201
    # One transaction of 200 small rows is a few pages; 200 transactions would be >= 200.
    assert wal_frames(db_path) < 20


async def test_unbatched_store_commits_per_frame_for_comparison(db_path: Path) -> None:
    """The same stream, flushed frame by frame: what the wal count above rules out."""
    store = SQLiteStore(db_path, batch_interval=0)
    await store.open()
    try:
        store.save_conversation(make_record())
        await store.flush()
        conn = sqlite3.connect(db_path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        for frame in make_frames("conv-1", range(1, 201)):
            store.append_frames("conv-1", [frame])
            await store.flush()
        assert wal_frames(db_path) >= 200
    finally:
        await store.close()


async def test_a_read_includes_the_pending_batch(ticking: SQLiteStore) -> None:
    frames = make_frames("conv-1", range(1, 51))
    await stream(ticking, "conv-1", range(1, 51))
    async with asyncio.timeout(GUARD):  # the tick is an hour: only the read can end it
        assert await ticking.frames_since("conv-1", 0) == [(f.seq, f.json) for f in frames]
        assert await ticking.last_seq("conv-1") == 50
        assert await ticking.frames_since("conv-1", 25) == [(f.seq, f.json) for f in frames[25:]]


async def test_close_writes_the_pending_batch(db_path: Path) -> None:
    store = SQLiteStore(db_path, batch_interval=LONG_TICK)
    await store.open()
    store.save_conversation(make_record())
    await stream(store, "conv-1", range(1, 101))
    async with asyncio.timeout(GUARD):
        await store.close()  # no flush first: close alone must write the batch

    reopened = SQLiteStore(db_path)
    await reopened.open()
    try:
        frames = make_frames("conv-1", range(1, 101))
        assert await reopened.frames_since("conv-1", 0) == [(f.seq, f.json) for f in frames]
        assert await reopened.get_conversation("conv-1") == make_record(last_seq=100)
    finally:
        await reopened.close()


async def test_a_batch_keeps_the_order_writes_were_made_in(ticking: SQLiteStore) -> None:
    turns = make_turns()
    ticking.save_conversation(make_record(title="first"))
    ticking.save_turn("conv-1", 0, turns[0])
    await stream(ticking, "conv-1", range(1, 6))
    ticking.save_conversation(make_record(title="second", updated_at=200.0))
    ticking.save_turn("conv-1", 0, turns[2])  # the same index again: the later one wins
    await stream(ticking, "conv-1", range(6, 11))
    ticking.rename_conversation("conv-1", "renamed")
    assert ticking.queued > 10  # all in one batch

    record = await ticking.get_conversation("conv-1")
    assert record is not None
    assert (record.title, record.updated_at) == ("renamed", 200.0)
    assert await ticking.load_turns("conv-1") == [turns[2]]
    assert [seq for seq, _ in await ticking.frames_since("conv-1", 0)] == list(range(1, 11))


async def test_a_failed_write_in_a_batch_is_reported_and_the_rest_land(
    ticking: SQLiteStore, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ticking.save_conversation(make_record())
    await ticking.flush()
    # Another connection makes the database itself refuse one frame, as a full disk or a
    # constraint would.
    conn = sqlite3.connect(db_path)
    conn.execute(
        "CREATE TRIGGER reject_13 BEFORE INSERT ON frames WHEN new.seq = 13 "
        "BEGIN SELECT RAISE(ABORT, 'frame 13 refused'); END"
    )
    conn.commit()
    conn.close()
    caplog.set_level(logging.ERROR, logger="webchat.storage")

    await stream(ticking, "conv-1", range(1, 31))
    await ticking.flush()

    assert ticking.write_errors == 1
    assert ticking.writes_applied == 1 + 29
    logged = [r for r in caplog.records if r.name == "webchat.storage" and r.exc_info]
    assert any("frame 13 refused" in str(r.exc_info[1]) for r in logged if r.exc_info)
    assert [seq for seq, _ in await ticking.frames_since("conv-1", 0)] == [
        s for s in range(1, 31) if s != 13
    ]


async def test_a_full_batch_does_not_wait_for_the_tick(db_path: Path) -> None:
    store = SQLiteStore(db_path, batch_size=10, batch_interval=LONG_TICK)
    await store.open()
    try:
        await stream(store, "conv-1", range(1, 11))
        # Nobody flushes: the full batch alone must start the write. Polled (the store has
        # no event for it); the guard is an hour shorter than the tick.
        async with asyncio.timeout(GUARD):
            while True:
                if store.writes_applied == 10:
                    break
                await asyncio.sleep(0.01)
        assert store.write_errors == 0
    finally:
        await store.close()


def test_batch_interval_must_not_be_negative(db_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_interval"):
        SQLiteStore(db_path, batch_interval=-1)


# -- the Redis store: a batch's frames are one script call per conversation -------------------


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_url, prefix=f"test-{uuid.uuid4().hex}:")
    await store.open()
    yield store
    await store.close()


async def test_redis_frames_of_many_conversations_in_one_batch(redis_store: RedisStore) -> None:
    # Interleaved, and more frames of one conversation than one script call takes.
    for seq in range(1, 2501):
        for conv_id in ("conv-a", "conv-b"):
            redis_store.append_frames(conv_id, make_frames(conv_id, [seq]))
    redis_store.save_conversation(make_record("conv-a"))

    for conv_id in ("conv-a", "conv-b"):
        frames = make_frames(conv_id, range(1, 2501))
        assert await redis_store.frames_since(conv_id, 0) == [(f.seq, f.json) for f in frames]
        assert await redis_store.last_seq(conv_id) == 2500
    assert await redis_store.get_conversation("conv-a") == make_record("conv-a", last_seq=2500)
    assert redis_store.write_errors == 0


async def test_redis_frames_written_twice_keep_the_first_text(redis_store: RedisStore) -> None:
    first = make_frames("conv-1", range(1, 4))
    redis_store.append_frames("conv-1", first)
    await redis_store.flush()
    again = make_frames("conv-2", range(1, 4))  # same seqs, other text
    redis_store.append_frames("conv-1", again)
    redis_store.append_frames("conv-1", make_frames("conv-1", [4]))
    expected = [*first, *make_frames("conv-1", [4])]
    assert await redis_store.frames_since("conv-1", 0) == [(f.seq, f.json) for f in expected]


async def test_a_delete_after_appends_in_one_batch_wins(
    ticking: SQLiteStore, redis_store: RedisStore
) -> None:
    """Compaction deletes superseded deltas right after appending them: in one batch, the
    delete must still run after the appends it follows, on both stores."""
    for store in (ticking, redis_store):
        store.append_frames("conv-1", make_frames("conv-1", range(1, 11)))
        store.delete_frames("conv-1", [2, 3, 4])
        store.append_frames("conv-1", make_frames("conv-1", [11]))
        got = await store.frames_since("conv-1", 0)
        assert [seq for seq, _ in got] == [1, *range(5, 12)], type(store).__name__
