"""Durable conversations (SQLite, PostgreSQL or Redis): records, turns and the frame
timeline, so a restarted server can
list its conversations, continue them and replay ``since`` from disk; and what users do with
them: rename, delete, search and feedback on answers."""

from webchat.storage.base import (
    AttachmentRecord,
    ConversationRecord,
    Feedback,
    NullStore,
    Rating,
    Store,
)
from webchat.storage.postgres import PostgresStore
from webchat.storage.sqlite import SCHEMA_VERSION, SchemaVersionError, SQLiteStore

__all__ = [
    "SCHEMA_VERSION",
    "AttachmentRecord",
    "ConversationRecord",
    "Feedback",
    "NullStore",
    "PostgresStore",
    "Rating",
    "SQLiteStore",
    "SchemaVersionError",
    "Store",
]
