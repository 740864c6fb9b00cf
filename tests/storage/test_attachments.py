"""Attachments in the store, one contract on SQLite and on a real Redis: saved durably before
the call returns, read back byte for byte, listed oldest first, and gone with their
conversation (and only theirs)."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.storage.helpers import make_record
from webchat.storage import AttachmentRecord, NullStore, SQLiteStore, Store
from webchat.storage.redis_store import RedisStore, _text

OpenStore = Callable[[], Awaitable[Store]]

BLOB = bytes(range(256)) * 40  # every byte value: nothing may be decoded or escaped


def record(conv_id: str, attachment_id: str, created_at: float, data: bytes) -> AttachmentRecord:
    return AttachmentRecord(
        id=attachment_id,
        conv_id=conv_id,
        owner="alice",
        name=f"{attachment_id}.png",
        media_type="image/png",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        created_at=created_at,
    )


@pytest.fixture(params=["sqlite", "redis", "null"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    opened: list[Store] = []
    null = NullStore()

    def make() -> Store:
        if request.param == "sqlite":
            return SQLiteStore(tmp_path / "webchat.db")
        if request.param == "redis":
            url: str = request.getfixturevalue("redis_url")
            return RedisStore(url, prefix=prefix)
        return null  # one process's memory: "reopening" is the same store

    prefix = f"test-{uuid.uuid4().hex}:"

    async def open_one() -> Store:
        store = make()
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        await store.close()


async def test_round_trip_and_listing(open_store: OpenStore) -> None:
    store = await open_store()
    await store.save_attachment(record("c1", "b", 2.0, BLOB), BLOB)
    await store.save_attachment(record("c1", "a", 1.0, b"x"), b"x")
    await store.save_attachment(record("c2", "z", 0.5, b"y"), b"y")
    found = await store.load_attachment("c1", "b")
    assert found is not None
    assert found == (record("c1", "b", 2.0, BLOB), BLOB)
    assert [r.id for r in await store.list_attachments("c1")] == ["a", "b"]
    assert await store.load_attachment("c2", "b") is None  # another conversation's id
    assert await store.load_attachment("c1", "nope") is None
    # Durable before the call returned: a second store (a restart, another process) reads it.
    again = await open_store()
    assert await again.load_attachment("c1", "b") == found


async def test_delete_conversation_removes_only_its_attachments(open_store: OpenStore) -> None:
    store = await open_store()
    store.save_conversation(make_record("c1", owner="alice"))
    await store.save_attachment(record("c1", "a", 1.0, BLOB), BLOB)
    await store.save_attachment(record("c2", "k", 1.0, b"kept"), b"kept")
    await store.delete_conversation("c1")
    assert await store.list_attachments("c1") == []
    assert await store.load_attachment("c1", "a") is None
    assert await store.load_attachment("c2", "k") is not None


async def test_redis_delete_leaves_no_attachment_key(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    store = RedisStore(redis_url, prefix=prefix)
    await store.open()
    try:
        store.save_conversation(make_record("doomed", owner="alice"))
        for i in range(3):
            await store.save_attachment(record("doomed", f"a{i}", float(i), BLOB), BLOB)
        await store.save_attachment(record("kept", "k", 1.0, b"k"), b"k")
        assert await store.delete_conversation("doomed")
        keys = {_text(k) for k in await store.redis.keys(prefix + "att*")}
        assert keys == {f"{prefix}att:kept:k", f"{prefix}atts:kept"}
    finally:
        await store.close()


async def test_a_version_3_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "webchat.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:  # back to what version 3 had
        conn.execute("DROP TABLE attachments")
        conn.execute("PRAGMA user_version = 3")
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.save_attachment(record("c1", "a", 1.0, BLOB), BLOB)
        assert (await store.load_attachment("c1", "a")) == (record("c1", "a", 1.0, BLOB), BLOB)
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (4,)
