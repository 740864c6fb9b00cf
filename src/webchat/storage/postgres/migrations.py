"""The PostgreSQL schema, as numbered steps applied when a store opens.

``schema_migrations`` records each step applied (version, name, when). Opening a store
applies, in order, every step the database does not have, all in one transaction: a failed
step leaves the database as it was. A transaction-scoped advisory lock makes processes that
start together take turns, so each step runs once. A database that has a step this code does
not know (written by a newer webchat) is refused rather than misread.

Never edit a step that has shipped: add the next one.

Column choices: times are ``double precision`` seconds (the records' floats, exactly);
``overrides``, turns and frames are JSON *text*, not ``jsonb``: a frame is resent byte for
byte as stored, and ``jsonb`` would reorder keys and refuse ``\\u0000``. Search words are
``tsvector`` columns with GIN indexes (see ``webchat.storage.postgres.words``); a title's
words sit beside the title, each turn's in ``search_text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from webchat.storage.sqlite import SchemaVersionError

__all__ = ["LOCK_KEY", "MIGRATIONS", "SCHEMA_VERSION", "Connection", "Migration", "migrate"]

Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
"""A connection of its own or one of a pool's: either runs the migrations."""

LOCK_KEY: Final = 0x77656263_6861740D
"""The advisory lock migrations take ("webchat" + 13), per database."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "conversations, turns, frames, owners, search, feedback, attachments",
        (
            """CREATE TABLE conversations (
    conv_id      text PRIMARY KEY,
    session_id   text NOT NULL,
    profile_slug text NOT NULL,
    overrides    text,
    signature    text NOT NULL DEFAULT '',
    title        text NOT NULL DEFAULT '',
    title_words  tsvector NOT NULL DEFAULT '',
    renamed      boolean NOT NULL DEFAULT false,
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL,
    last_seq     bigint NOT NULL DEFAULT 0,
    owner        text NOT NULL DEFAULT ''
)""",
            "CREATE INDEX conversations_by_update ON conversations (updated_at DESC, conv_id DESC)",
            "CREATE INDEX conversations_by_owner "
            "ON conversations (owner, updated_at DESC, conv_id DESC)",
            "CREATE INDEX conversations_title_words ON conversations USING gin (title_words)",
            # Claims have their own table: a claim comes before the first record is saved and
            # must not be undone by a later record upsert.
            """CREATE TABLE owners (
    conv_id    text PRIMARY KEY,
    owner      text NOT NULL,
    claimed_at double precision NOT NULL
)""",
            """CREATE TABLE turns (
    conv_id text NOT NULL,
    idx     integer NOT NULL,
    turn_id text NOT NULL,
    body    text NOT NULL,
    PRIMARY KEY (conv_id, idx)
)""",
            """CREATE TABLE frames (
    conv_id text NOT NULL,
    seq     bigint NOT NULL,
    type    text NOT NULL,
    json    text NOT NULL,
    PRIMARY KEY (conv_id, seq)
)""",
            """CREATE TABLE search_text (
    conv_id text NOT NULL,
    idx     integer NOT NULL,
    words   tsvector NOT NULL,
    PRIMARY KEY (conv_id, idx)
)""",
            "CREATE INDEX search_text_words ON search_text USING gin (words)",
            """CREATE TABLE feedback (
    conv_id    text NOT NULL,
    turn_id    text NOT NULL,
    rating     text CHECK (rating IN ('up', 'down')),
    comment    text,
    updated_at double precision NOT NULL,
    PRIMARY KEY (conv_id, turn_id)
)""",
            """CREATE TABLE attachments (
    conv_id    text NOT NULL,
    id         text NOT NULL,
    owner      text NOT NULL,
    name       text NOT NULL,
    media_type text NOT NULL,
    size       bigint NOT NULL,
    sha256     text NOT NULL,
    created_at double precision NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (conv_id, id)
)""",
            # The deployment's secret, so every process and restart signs alike even when
            # Redis (which only carries streams, locks and queues here) is flushed.
            "CREATE TABLE deployment (key text PRIMARY KEY, value text NOT NULL)",
        ),
    ),
)

SCHEMA_VERSION: Final = MIGRATIONS[-1].version

_VERSION_TABLE: Final = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def _check_steps(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3...; got {versions}")


async def migrate(conn: Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the steps the database lacks, in one transaction; returns their versions."""
    _check_steps(migrations)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(_VERSION_TABLE)
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        have = {int(row["version"]) for row in rows}
        known = len(migrations)
        if have and max(have) > known:
            raise SchemaVersionError(
                f"the database has schema version {max(have)}; this server knows up to {known}"
            )
        applied = []
        for migration in migrations:
            if migration.version in have:
                continue
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
    return applied
