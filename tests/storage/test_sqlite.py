import asyncio
import inspect
import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.storage.helpers import make_frames, make_record, make_turns
from webchat.storage import (
    SCHEMA_VERSION,
    NullStore,
    SchemaVersionError,
    SQLiteStore,
    Store,
)


async def reopen(path: str | Path) -> SQLiteStore:
    store = SQLiteStore(path)
    await store.open()
    return store


async def test_round_trip_survives_reopen(db_path):
    store = await reopen(db_path)
    frames = make_frames("conv-1", range(1, 51))
    turns = make_turns()
    older = make_record("conv-0", updated_at=90.0, overrides=None, title="older")
    newer = make_record("conv-1", updated_at=100.0)
    store.save_conversation(older)
    store.save_conversation(newer)
    for index, turn in enumerate(turns):
        store.save_turn("conv-1", index, turn)
    store.append_frames("conv-1", frames[:25])
    store.append_frames("conv-1", frames[25:])
    await store.close()

    again = await reopen(db_path)
    try:
        assert await again.list_conversations() == [
            newer.model_copy(update={"last_seq": 50}),
            older,
        ]
        assert await again.get_conversation("conv-1") == newer.model_copy(update={"last_seq": 50})
        assert await again.get_conversation("nope") is None
        assert await again.load_turns("conv-1") == turns
        replay = await again.frames_since("conv-1", 20)
        assert replay == [(f.seq, f.json) for f in frames[20:]]
        assert [seq for seq, _ in replay] == list(range(21, 51))
        assert await again.frames_since("conv-1", 45, limit=2) == [
            (46, frames[45].json),
            (47, frames[46].json),
        ]
        assert await again.last_seq("conv-1") == 50
        assert await again.last_seq("conv-0") == 0
        assert await again.load_turns("conv-0") == []
        assert await again.frames_since("conv-0", 0) == []
    finally:
        await again.close()


async def test_writes_never_touch_disk_on_the_event_loop(db_path, monkeypatch):
    # Every statement SQLite runs is recorded with the thread that ran it.
    statements: list[tuple[int, str]] = []
    real_connect = sqlite3.connect

    def traced_connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: statements.append((threading.get_ident(), sql)))
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    store = await reopen(db_path)
    try:
        loop_thread = threading.get_ident()
        frames = make_frames("conv-1", range(1, 20_001))
        assert not inspect.iscoroutinefunction(store.append_frames)
        statements.clear()

        for frame in frames:
            store.append_frames("conv-1", [frame])

        # Nothing awaited, so the writer cannot have taken anything yet: all work deferred.
        assert store.queued == 20_000
        assert statements == []

        await store.flush()
        assert store.queued == 0
        assert store.writes_applied == 20_000
        replay = await store.frames_since("conv-1", 0, limit=30_000)
        assert replay == [(f.seq, f.json) for f in frames]
        assert statements, "the trace saw no statements; the test would prove nothing"
        assert all(thread != loop_thread for thread, _ in statements)
        # One transaction per batch of 500.
        assert sum(sql == "BEGIN IMMEDIATE" for _, sql in statements) == 40
    finally:
        await store.close()


async def test_close_writes_everything_queued(db_path):
    store = await reopen(db_path)
    record = make_record()
    turns = make_turns()
    frames = make_frames("conv-1", range(1, 1_201))
    store.save_conversation(record)
    for index, turn in enumerate(turns):
        store.save_turn("conv-1", index, turn)
    store.append_frames("conv-1", frames)
    assert store.queued > 0
    await store.close()
    assert store.queued == 0

    again = await reopen(db_path)
    try:
        assert await again.get_conversation("conv-1") == record.model_copy(
            update={"last_seq": 1_200}
        )
        assert await again.load_turns("conv-1") == turns
        assert await again.frames_since("conv-1", 0) == [(f.seq, f.json) for f in frames]
    finally:
        await again.close()


async def test_memory_database_works():
    store = await reopen(":memory:")
    try:
        record = make_record()
        turn = make_turns()[1]
        store.save_conversation(record)
        store.save_turn("conv-1", 0, turn)
        store.append_frames("conv-1", make_frames("conv-1", range(1, 6)))
        await store.flush()
        assert await store.get_conversation("conv-1") == record.model_copy(update={"last_seq": 5})
        assert await store.load_turns("conv-1") == [turn]
        assert [seq for seq, _ in await store.frames_since("conv-1", 2)] == [3, 4, 5]
    finally:
        await store.close()


async def test_duplicate_frame_seq_is_ignored(store):
    first = make_frames("conv-1", range(1, 4))
    duplicate = make_frames("conv-1", [2])[0]
    object.__setattr__(duplicate, "json", '{"replayed":true}')
    store.append_frames("conv-1", first)
    store.append_frames("conv-1", [duplicate, *make_frames("conv-1", [4])])
    await store.flush()
    assert store.write_errors == 0
    assert await store.frames_since("conv-1", 0) == [
        (f.seq, f.json) for f in [*first, *make_frames("conv-1", [4])]
    ]


async def test_failed_write_is_counted_logged_and_others_still_apply(store, caplog):
    caplog.set_level(logging.ERROR, logger="webchat.storage")
    frames = make_frames("conv-1", range(1, 11))
    bad = make_frames("conv-1", [5])[0]
    object.__setattr__(bad, "json", object())  # sqlite cannot bind it
    # Good frames around the bad one land in the same batch as it.
    store.append_frames("conv-1", [*frames[:4], bad, *frames[5:]])
    await store.flush()

    assert store.write_errors == 1
    assert store.writes_applied == 9
    failures = [r for r in caplog.records if r.name == "webchat.storage" and r.exc_info]
    assert failures, "the failure was not logged with its traceback"

    store.append_frames("conv-1", [frames[4]])
    store.save_conversation(make_record())
    await store.flush()
    assert store.write_errors == 1
    assert await store.frames_since("conv-1", 0) == [(f.seq, f.json) for f in frames]
    assert (await store.get_conversation("conv-1")) is not None


async def test_read_right_after_write_sees_it(store):
    record = make_record()
    store.save_conversation(record)
    assert await store.get_conversation("conv-1") == record

    store.save_conversation(make_record("conv-2", updated_at=200.0))
    assert [r.conv_id for r in await store.list_conversations()] == ["conv-2", "conv-1"]

    turns = make_turns()
    store.save_turn("conv-1", 0, turns[0])
    assert await store.load_turns("conv-1") == turns[:1]

    frames = make_frames("conv-1", range(1, 4))
    store.append_frames("conv-1", frames)
    assert await store.frames_since("conv-1", 0) == [(f.seq, f.json) for f in frames]

    store.append_frames("conv-1", make_frames("conv-1", [9]))
    assert await store.last_seq("conv-1") == 9


async def test_reopen_keeps_data_and_schema(db_path):
    store = await reopen(db_path)
    store.save_conversation(make_record())
    store.append_frames("conv-1", make_frames("conv-1", [1]))
    await store.close()

    with sqlite3.connect(db_path) as conn:
        schema_before = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master"))
        # A row the store never wrote: a schema rebuild would lose it.
        conn.execute(
            "INSERT INTO frames (conv_id, seq, type, json) VALUES ('conv-1', 2, 'log', '{}')"
        )
    conn.close()

    again = await reopen(db_path)
    try:
        assert await again.frames_since("conv-1", 0) == [
            (1, make_frames("conv-1", [1])[0].json),
            (2, "{}"),
        ]
        assert (await again.get_conversation("conv-1")) is not None
    finally:
        await again.close()

    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert sorted(conn.execute("SELECT type, name, sql FROM sqlite_master")) == schema_before
    conn.close()


async def test_newer_schema_is_refused(db_path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = SQLiteStore(db_path)
    with pytest.raises(SchemaVersionError):
        await store.open()
    await store.close()


async def test_save_turn_upserts_and_snapshots_at_call_time(store):
    turns = make_turns()
    store.save_turn("conv-1", 0, turns[0])
    store.save_turn("conv-1", 1, turns[1])
    store.save_turn("conv-1", 0, turns[2])  # replaces index 0
    turns[1].data["changed_after_save"] = True
    assert await store.load_turns("conv-1") == [
        turns[2],
        turns[1].model_copy(update={"data": {}}),
    ]


async def test_conversation_upsert_keeps_created_at(store):
    store.save_conversation(make_record(created_at=1.0, updated_at=2.0))
    store.save_conversation(make_record(created_at=9.0, updated_at=3.0, title="renamed"))
    record = await store.get_conversation("conv-1")
    assert record is not None
    assert (record.created_at, record.updated_at, record.title) == (1.0, 3.0, "renamed")


async def test_list_conversations_newest_first_with_paging(store):
    for i, updated in enumerate([5.0, 1.0, 9.0, 3.0]):
        store.save_conversation(make_record(f"conv-{i}", updated_at=updated))
    ids = [r.conv_id for r in await store.list_conversations()]
    assert ids == ["conv-2", "conv-0", "conv-3", "conv-1"]
    page = await store.list_conversations(limit=2, offset=1)
    assert [r.conv_id for r in page] == ["conv-0", "conv-3"]


async def test_close_is_idempotent_and_later_writes_are_dropped(db_path, caplog):
    store = await reopen(db_path)
    store.append_frames("conv-1", make_frames("conv-1", [1]))
    await asyncio.gather(store.close(), store.close())
    await store.close()
    caplog.set_level(logging.WARNING, logger="webchat.storage")
    store.append_frames("conv-1", make_frames("conv-1", [2]))
    assert store.queued == 0
    assert store.write_errors == 1
    assert any(r.name == "webchat.storage" for r in caplog.records)
    await store.flush()  # nothing pending: returns
    with pytest.raises(RuntimeError):
        await store.frames_since("conv-1", 0)
    with pytest.raises(RuntimeError):
        await store.open()

    again = await reopen(db_path)
    try:
        assert [seq for seq, _ in await again.frames_since("conv-1", 0)] == [1]
    finally:
        await again.close()


async def test_writes_queued_before_open_are_kept(db_path):
    store = SQLiteStore(db_path)
    store.save_conversation(make_record())
    with pytest.raises(RuntimeError):
        await store.flush()
    await store.open()
    try:
        assert await store.get_conversation("conv-1") == make_record()
    finally:
        await store.close()


async def test_flush_fails_rather_than_hangs_when_the_writer_dies(db_path):
    store = await reopen(db_path)
    writer = next(t for t in asyncio.all_tasks() if t.get_name().startswith("sqlite-writer:"))
    writer.cancel()
    store.append_frames("conv-1", make_frames("conv-1", [1]))
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(store.flush(), timeout=5)
    await store.close()
    assert store.write_errors == 1  # the frame nobody wrote
    await store.flush()  # closed: nothing left to wait for


async def test_null_store_satisfies_the_protocol():
    stores: list[Store] = [NullStore(), SQLiteStore(":memory:")]
    null = stores[0]
    await null.open()
    null.save_conversation(make_record())
    null.append_frames("conv-1", make_frames("conv-1", [1]))
    null.save_turn("conv-1", 0, make_turns()[0])
    await null.flush()
    assert await null.get_conversation("conv-1") is None
    assert await null.list_conversations() == []
    assert await null.load_turns("conv-1") == []
    assert await null.frames_since("conv-1", 0) == []
    assert await null.last_seq("conv-1") == 0
    assert await null.count_conversations("alice") == 0
    assert await null.owner_of("conv-1") is None
    assert (null.queued, null.writes_applied, null.write_errors) == (0, 0, 0)
    await null.close()


# The schema as version 1 shipped it, verbatim: a database written before ownership existed.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    conv_id      TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL,
    profile_slug TEXT NOT NULL,
    overrides    TEXT,
    signature    TEXT NOT NULL DEFAULT '',
    title        TEXT NOT NULL DEFAULT '',
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    last_seq     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS conversations_by_update
    ON conversations (updated_at DESC, conv_id DESC);
CREATE TABLE IF NOT EXISTS turns (
    conv_id TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    turn_id TEXT NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (conv_id, idx)
);
CREATE TABLE IF NOT EXISTS frames (
    conv_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    json    TEXT NOT NULL,
    PRIMARY KEY (conv_id, seq)
);
PRAGMA user_version = 1;
"""


def schema_of(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as conn:
        rows = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master"))
    conn.close()
    return rows


async def test_a_version_1_database_is_migrated_in_place(db_path, tmp_path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute(
            "INSERT INTO conversations VALUES ('old', 'sess-1', 'default', NULL, 'sig', 't', "
            "1.0, 2.0, 0)"
        )
        conn.execute("INSERT INTO frames VALUES ('old', 1, 'log', '{}')")
    conn.close()

    store = await reopen(db_path)
    try:
        old = await store.get_conversation("old")
        assert old is not None
        assert (old.owner, old.title, old.last_seq) == ("", "t", 1)
        assert await store.frames_since("old", 0) == [(1, "{}")]
        assert await store.owner_of("old") is None
        assert await store.claim_owner("old", "alice") == "alice"
        store.save_conversation(make_record("new", owner="alice", updated_at=3.0))
        assert [r.conv_id for r in await store.list_conversations(owner="alice")] == ["new"]
        assert await store.count_conversations("") == 1
    finally:
        await store.close()

    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (4,)
        plan = " ".join(
            str(row)
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT conv_id FROM conversations WHERE owner = ? "
                "ORDER BY updated_at DESC, conv_id DESC",
                ("alice",),
            )
        )
    conn.close()
    assert "conversations_by_owner" in plan and "TEMP B-TREE" not in plan

    # Migrated and new databases end with the same schema.
    fresh_path = tmp_path / "fresh.db"
    fresh = await reopen(fresh_path)
    await fresh.close()
    assert schema_of(db_path) == schema_of(fresh_path)


async def test_a_failed_migration_leaves_the_database_as_it_was(db_path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute("CREATE TABLE owners (x)")  # in the way of step 2
    conn.close()
    before = schema_of(db_path)
    store = SQLiteStore(db_path)
    with pytest.raises(sqlite3.OperationalError):
        await store.open()
    await store.close()
    assert schema_of(db_path) == before
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()


async def test_a_claim_is_committed_before_it_answers(db_path):
    store = await reopen(db_path)
    try:
        assert await store.claim_owner("conv-1", "alice") == "alice"
        # Another connection (another process) sees it at once, not after a flush.
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("SELECT owner FROM owners").fetchall() == [("alice",)]
        conn.close()
    finally:
        await store.close()


async def test_a_claim_waits_for_another_process_holding_the_write_lock(db_path):
    store = await reopen(db_path)
    try:
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO owners VALUES ('conv-1', 'bob', 0)")
        claim = asyncio.create_task(store.claim_owner("conv-1", "alice"))
        await asyncio.sleep(0.2)
        assert not claim.done()  # waiting on the busy timeout, not failed
        other.execute("COMMIT")
        other.close()
        assert await asyncio.wait_for(claim, timeout=5) == "bob"
    finally:
        await store.close()
