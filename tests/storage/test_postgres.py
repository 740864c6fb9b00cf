"""What only the PostgreSQL store has to show, on a real server: versioned migrations applied
at start, every row of a deleted conversation gone, search words cut like SQLite's, writes
kept through a server restart, the deployment secret, and ``--db`` URLs that never leak their
password. The shared store contract (``open_store``) runs on it too, from the other modules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.storage.helpers import OpenStore, make_frames, make_record
from tests.storage.test_attachments import (
    test_delete_conversation_removes_only_its_attachments,
    test_round_trip_and_listing,
)
from tests.storage.test_management import exchange, fill, found
from tests.support.postgres import PostgresServer
from webchat.auth.secret import deployment_secret, secret_file_path
from webchat.server.composition import make_store
from webchat.settings import SettingsError, load_settings
from webchat.storage import SchemaVersionError, SQLiteStore, Store
from webchat.storage.postgres import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    PostgresStore,
    migrate,
    postgres_secret,
    redacted,
)
from webchat.storage.redis_store import RedisStore

__all__ = [  # the attachment contract, collected here again on PostgreSQL (``open_store``)
    "test_delete_conversation_removes_only_its_attachments",
    "test_round_trip_and_listing",
]


@pytest.fixture
async def open_store(postgres_url: str) -> AsyncIterator[OpenStore]:
    """Stores on one fresh database: the attachment tests imported above run on it."""
    opened: list[Store] = []

    async def open_one() -> Store:
        store = PostgresStore(postgres_url)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        await store.close()


async def versions(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [(int(r["version"]), str(r["name"])) for r in rows]


async def scalar(url: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


# -- migrations -------------------------------------------------------------------------------


async def test_migrations_are_applied_at_start_once_and_recorded(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    store.save_conversation(make_record("c1", owner="alice"))
    await store.close()
    assert await versions(postgres_url) == [(m.version, m.name) for m in MIGRATIONS]
    assert len(MIGRATIONS) == SCHEMA_VERSION

    again = PostgresStore(postgres_url)
    await again.open()  # nothing left to apply: the data is untouched
    try:
        assert await again.get_conversation("c1") == make_record("c1", owner="alice")
    finally:
        await again.close()
    assert len(await versions(postgres_url)) == len(MIGRATIONS)


async def test_a_later_step_is_applied_to_an_existing_database(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await migrate(conn) == list(range(1, SCHEMA_VERSION + 1))
        await conn.execute(
            "INSERT INTO conversations (conv_id, session_id, profile_slug, created_at, "
            "updated_at) VALUES ('old', 's', 'default', 1, 2)"
        )
        step = Migration(
            SCHEMA_VERSION + 1,
            "pinned conversations",
            ("ALTER TABLE conversations ADD COLUMN pinned boolean NOT NULL DEFAULT false",),
        )
        assert await migrate(conn, (*MIGRATIONS, step)) == [step.version]
        assert await migrate(conn, (*MIGRATIONS, step)) == []  # once
        assert (
            await conn.fetchval("SELECT pinned FROM conversations WHERE conv_id = 'old'") is False
        )
    finally:
        await conn.close()
    assert (await versions(postgres_url))[-1] == (step.version, "pinned conversations")


async def test_a_failed_step_leaves_the_database_as_it_was(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await migrate(conn)
        broken = Migration(
            SCHEMA_VERSION + 1,
            "half done",
            ("CREATE TABLE half_done (x int)", "ALTER TABLE no_such_table ADD COLUMN y int"),
        )
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, (*MIGRATIONS, broken))
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await conn.close()
    assert [v for v, _ in await versions(postgres_url)] == list(range(1, SCHEMA_VERSION + 1))


async def test_a_database_from_a_newer_version_is_refused(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        future = Migration(SCHEMA_VERSION + 1, "from the future", ("SELECT 1",))
        await migrate(conn, (*MIGRATIONS, future))
    finally:
        await conn.close()
    store = PostgresStore(postgres_url)
    with pytest.raises(SchemaVersionError, match=f"version {SCHEMA_VERSION + 1}"):
        await store.open()
    await store.close()


async def test_processes_starting_together_migrate_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        assert [v for v, _ in await versions(postgres_url)] == list(range(1, SCHEMA_VERSION + 1))
        claims = await asyncio.gather(
            *(store.claim_owner("c1", f"user-{i}") for i, store in enumerate(stores))
        )
        assert len(set(claims)) == 1
    finally:
        for store in stores:
            await store.close()


async def test_migrations_must_be_numbered_in_order(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        with pytest.raises(ValueError, match="numbered"):
            await migrate(conn, (*MIGRATIONS, Migration(SCHEMA_VERSION + 2, "a gap", ())))
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await conn.close()


# -- delete, search, odd text -------------------------------------------------------------------


async def test_delete_removes_every_row_but_the_claim(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await fill(store, "doomed", "alice")
        await fill(store, "kept", "alice")
        assert await store.delete_conversation("doomed")
    finally:
        await store.close()
    tables = ("conversations", "turns", "frames", "search_text", "feedback", "attachments")
    for table in tables:
        query = f"SELECT count(*) FROM {table} WHERE conv_id = $1"
        assert await scalar(postgres_url, query, "doomed") == 0, table
        if table != "attachments":
            assert await scalar(postgres_url, query, "kept") != 0, table
    assert await scalar(postgres_url, "SELECT owner FROM owners WHERE conv_id = 'doomed'") == (
        "alice"
    )


async def test_search_cuts_words_as_sqlite_does(postgres_url: str) -> None:
    """PostgreSQL's own parser keeps an address or a hyphenated word whole and folds no
    diacritics; the store must find what the SQLite store finds."""
    sqlite = SQLiteStore(":memory:")
    postgres = PostgresStore(postgres_url)
    for store in (sqlite, postgres):
        await store.open()
    try:
        for store in (sqlite, postgres):
            store.save_conversation(make_record("c1", owner="alice", title="Crème Brûlée"))
            store.save_conversation(make_record("c2", owner="alice", title="x", updated_at=200))
            store.save_turn("c2", 0, exchange("mail bob@example.com", "see foo-bar_baz/qux"))
        queries = [
            "creme brulee",
            "BRÛL",
            "example",
            "bob example com",
            "bar baz",
            "qux foo",
            "straße",
            "crème example",
            "ample",
        ]
        for query in queries:
            assert await found(postgres, query) == await found(sqlite, query), query
        assert await found(postgres, "creme brulee") == ["c1"]
        assert await found(postgres, "example") == ["c2"]
        assert await found(postgres, "ample") == []  # a prefix of a word, not any substring
    finally:
        for store in (sqlite, postgres):
            await store.close()


async def test_turns_come_back_exactly_with_their_branch_links(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        root = exchange("first", "answer")
        branch = exchange("again", "other answer", root)
        branch.metadata.parent_turn_id = root.id
        sibling = exchange("edited", "third answer", root)
        sibling.metadata.parent_turn_id = root.id
        turns = [root, branch, sibling]
        for index, turn in enumerate(turns):
            store.save_turn("c1", index, turn)
        loaded = await store.load_turns("c1")
        assert [t.model_dump_json() for t in loaded] == [t.model_dump_json() for t in turns]
        assert [t.metadata.parent_turn_id for t in loaded] == [None, root.id, root.id]
    finally:
        await store.close()


async def test_text_postgres_cannot_hold_is_saved_not_dropped(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        store.save_conversation(make_record("c1", owner="alice", title="nul\x00title"))
        store.save_feedback("c1", "t1", "up", "nul\x00comment")
        store.rename_conversation("c1", "renamed\x00")
        record = await store.get_conversation("c1")
        assert record is not None and record.title == "renamed\ufffd"
        assert (await store.load_feedback("c1"))["t1"].comment == "nul\ufffdcomment"
        assert store.write_errors == 0
    finally:
        await store.close()


async def test_a_refused_write_is_counted_and_the_rest_of_its_batch_applies(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        store.append_frames("c1", make_frames("c1", range(1, 4)))
        store.append_frames("bad\x00id", make_frames("bad", [1]))  # PostgreSQL refuses NUL
        store.append_frames("c1", make_frames("c1", range(4, 6)))
        with caplog.at_level(logging.ERROR, logger="webchat.storage"):
            assert [s for s, _ in await store.frames_since("c1", 0)] == [1, 2, 3, 4, 5]
        assert store.write_errors == 1
        assert store.writes_applied == 5
        assert "retrying one at a time" in caplog.text
    finally:
        await store.close()


# -- an unreachable server -----------------------------------------------------------------------


async def test_writes_queued_while_the_server_is_down_are_written_when_it_is_back() -> None:
    server = PostgresServer()
    await asyncio.to_thread(server.start)
    try:
        url = await asyncio.to_thread(server.create_database)
        store = PostgresStore(url, close_timeout=1.0)
        await store.open()
        try:
            store.append_frames("c1", make_frames("c1", range(1, 3)))
            await store.flush()
            await asyncio.to_thread(server.stop)
            store.append_frames("c1", make_frames("c1", range(3, 6)))
            store.save_conversation(make_record("c1", owner="alice", last_seq=5))
            await asyncio.to_thread(server.start)  # back on the same port
            assert [s for s, _ in await store.frames_since("c1", 0)] == [1, 2, 3, 4, 5]
            assert await store.last_seq("c1") == 5
            assert store.write_errors == 0

            # Down for good: close waits ``close_timeout``, then counts what it could not write.
            await asyncio.to_thread(server.stop)
            store.append_frames("c1", make_frames("c1", range(6, 9)))
            await store.close()
            assert store.write_errors == 3
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(server.cleanup)


async def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    store = PostgresStore("postgresql://alice:hunter2-secret@127.0.0.1:1/webchat")
    with pytest.raises(RuntimeError, match="cannot connect to PostgreSQL") as raised:
        await store.open()
    assert "hunter2-secret" not in str(raised.value)
    assert "alice:***@127.0.0.1:1/webchat" in str(raised.value)
    await store.close()


# -- the deployment secret ------------------------------------------------------------------------


async def test_the_secret_is_made_once_and_shared(postgres_url: str) -> None:
    secrets = await asyncio.gather(*(postgres_secret(postgres_url) for _ in range(5)))
    assert len(set(secrets)) == 1 and len(secrets[0]) >= 32
    assert await postgres_secret(postgres_url) == secrets[0]  # and kept


async def test_with_a_postgres_db_the_secret_is_not_in_redis(postgres_url: str) -> None:
    # Redis is flushable there; an unreachable Redis URL shows it is not even asked.
    settings = load_settings(db=postgres_url, transport="redis", redis_url="redis://127.0.0.1:1/0")
    secret = await deployment_secret(settings, shared=True)
    assert secret == await postgres_secret(postgres_url)
    assert secret_file_path(settings) is None  # and no file named after the URL


# -- --db --------------------------------------------------------------------------------------


def test_a_postgres_db_is_the_store_even_with_the_redis_transport() -> None:
    url = "postgresql://webchat:pw@db.internal:5432/webchat"
    for transport in ("memory", "redis"):
        assert isinstance(make_store(load_settings(db=url, transport=transport)), PostgresStore)
    assert isinstance(make_store(load_settings(db=":memory:", transport="redis")), RedisStore)
    assert isinstance(make_store(load_settings(db=":memory:")), SQLiteStore)


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("postgresql://u:hunter2@h:99999/db", "Port out of range"),
        ("postgresql://u:hunter2@h/one/two", "names one database"),
        ("postgresql://u:hunter2@h/db#x", "no #fragment"),
        ("mysql://u:hunter2@h/db", "must start with postgresql://"),
    ],
)
def test_a_bad_db_url_is_a_clear_error_without_the_password(db: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        load_settings(db=db)
    assert "hunter2" not in str(raised.value)


def test_a_db_url_is_shown_without_its_password() -> None:
    assert redacted("postgresql://u:hunter2@h:5432/db?sslmode=require") == (
        "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert redacted("postgres://h/db") == "postgres://h/db"
    assert redacted("data/webchat.sqlite3") == "data/webchat.sqlite3"
