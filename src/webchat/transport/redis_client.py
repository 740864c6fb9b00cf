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
from redis.asyncio.connection import AbstractConnection as Connection
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


# -- held connections: the per-token paths skip redis-py's per-command machinery -----------
#
# A client command costs a pool checkout (with its lock and metrics), argument encoding and a
# reply callback; for one XADD of a 100-byte token that is more than Redis's own work. The
# publisher and each subscription hold one connection instead and speak RESP on it directly.


def as_text(value: bytes | str) -> str:
    """A reply as text: bytes unless the URL asked for ``decode_responses``."""
    return value.decode() if isinstance(value, bytes) else value


def pack_command(*args: bytes) -> bytes:
    """One command in RESP (an array of bulk strings), as Redis reads it off the socket."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(b"\r\n")
    return b"".join(out)


async def hold_connection(client: aredis.Redis) -> Connection:
    """A connected connection taken out of ``client``'s pool until ``drop_connection``."""
    pool = client.connection_pool
    connection: Connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    return connection


async def drop_connection(client: aredis.Redis, connection: Connection) -> None:
    """Give a held connection back, closed: its state (a reply half read) is unknown."""
    try:
        await connection.disconnect(nowait=True)
    finally:
        await client.connection_pool.release(connection)
