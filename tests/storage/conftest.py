import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.storage.helpers import OpenStore
from webchat.storage import SQLiteStore, Store
from webchat.storage.postgres import PostgresStore
from webchat.storage.redis_store import RedisStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "webchat.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(db_path)
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """The store contract on every store: each call opens another store on the same data
    (for PostgreSQL, a fresh database of the session's real server)."""
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "webchat.db"

        def make() -> Store:
            return SQLiteStore(path)
    elif request.param == "postgres":
        database: str = request.getfixturevalue("postgres_url")

        def make() -> Store:
            return PostgresStore(database)
    else:
        url: str = request.getfixturevalue("redis_url")
        prefix = f"test-{uuid.uuid4().hex}:"  # the session's Redis is shared by every test

        def make() -> Store:
            return RedisStore(url, prefix=prefix)

    async def open_one() -> Store:
        store = make()
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        await store.close()
