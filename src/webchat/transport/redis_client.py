"""How webchat connects to Redis: one place for the options every client needs.

- ``socket_timeout=None``: deadlines are ``asyncio.timeout`` around commands instead; with a
  socket timeout, redis-py sends through ``asyncio.wait_for``, which on Python 3.11 can
  swallow a caller's cancellation.
- One immediate retry: after Redis restarts, every pooled connection is dead and redis-py
  hands them out unchecked.
- Pools sized for the job: a blocking pool (callers wait for a free connection instead of
  failing) for short commands; a large pool where connections are held (XREAD BLOCK).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def command_client(url: str, *, max_connections: int = 64, wait: float = 20.0) -> aredis.Redis:
    """A client for short commands shared by many coroutines (store, coordination)."""
    pool = aredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait,
        socket_timeout=None,
        retry=Retry(NoBackoff(), 1),
    )
    return aredis.Redis(connection_pool=pool)


def streaming_client(url: str, *, max_connections: int, **options: Any) -> aredis.Redis:
    """A client whose connections may each be held in a blocking read for a long time."""
    return aredis.Redis.from_url(
        url,
        socket_timeout=None,
        retry=Retry(NoBackoff(), 1),
        max_connections=max_connections,
        **options,
    )
