"""Fixtures for transport tests: a real redis-server per session and both backends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.transport.helpers import close
from webchat.transport import InMemoryTransport, RedisStreamsTransport, Transport, topic_for


@pytest.fixture
def topic() -> str:
    """A topic no other test uses, so the shared server never needs flushing."""
    return topic_for(f"test-{uuid.uuid4().hex}")


@pytest.fixture(params=["memory", "redis"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    backend: Transport
    if request.param == "memory":
        backend = InMemoryTransport()
    else:
        backend = RedisStreamsTransport(request.getfixturevalue("redis_url"))
    try:
        yield backend
    finally:
        await close(backend)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Every background task a test started must be finished once its fixtures are closed."""
    before = asyncio.all_tasks()
    yield
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not leaked, f"tasks still pending after close: {leaked}"
