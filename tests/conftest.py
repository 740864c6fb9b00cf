"""Fixtures every test package may use: a real redis-server and a real PostgreSQL server,
each started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.support.redis_server import RedisServer, start_redis_server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis_server()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.running:  # a failed test may have left it stopped
        redis_server.start()
    return redis_server.url
