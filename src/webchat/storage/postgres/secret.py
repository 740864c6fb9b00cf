"""The deployment's secret kept in PostgreSQL, the store of record.

With ``--db postgresql://…`` every process of a deployment shares the database, so the secret
lives there: created once (the first process to start wins, atomically) and read by all. In
Redis it would be lost with a flush, logging every browser out and changing every
fingerprint; in a file it would differ between machines.
"""

from __future__ import annotations

import secrets

import asyncpg

from webchat.storage.postgres import sql
from webchat.storage.postgres.migrations import migrate

__all__ = ["postgres_secret"]

_BYTES = 32


async def postgres_secret(url: str) -> bytes:
    """The secret stored in the database at ``url``, created there if it has none."""
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)  # the table may not exist yet if no store opened this database
        await conn.execute(sql.CLAIM_SECRET, secrets.token_hex(_BYTES))
        value = await conn.fetchval(sql.SELECT_SECRET)
    finally:
        await conn.close()
    return str(value).encode("ascii")
