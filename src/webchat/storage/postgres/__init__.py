"""PostgreSQL as the store of record: ``--db postgresql://…`` (see ``store``), with its
schema as numbered migrations applied at start (``migrations``) and search with the SQLite
store's semantics (``words``)."""

from webchat.storage.postgres.migrations import MIGRATIONS, SCHEMA_VERSION, Migration, migrate
from webchat.storage.postgres.secret import postgres_secret
from webchat.storage.postgres.store import PostgresStore
from webchat.storage.postgres.url import check_postgres_url, is_postgres_url, redacted

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "PostgresStore",
    "check_postgres_url",
    "is_postgres_url",
    "migrate",
    "postgres_secret",
    "redacted",
]
