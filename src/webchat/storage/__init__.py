"""Durable conversations: records, turns and the frame timeline, so a restarted server can
list its conversations, continue them and replay ``since`` from disk."""

from webchat.storage.base import ConversationRecord, NullStore, Store
from webchat.storage.sqlite import SCHEMA_VERSION, SchemaVersionError, SQLiteStore

__all__ = [
    "SCHEMA_VERSION",
    "ConversationRecord",
    "NullStore",
    "SQLiteStore",
    "SchemaVersionError",
    "Store",
]
