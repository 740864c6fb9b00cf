"""What the two SQL stores (SQLite, PostgreSQL) share: the same tables and columns in the
same order, so one mapping between rows and records, and one shape of queued write (a kind,
naming the statement, and its parameters)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

from webchat.storage.base import AttachmentRecord, ConversationRecord

Write = tuple[str, tuple[Any, ...]]
"""A queued write: the kind of statement, and its parameters."""

# Everything of a conversation but its owner claim (see ``Store.delete_conversation``).
CONVERSATION_TABLES: Final = (
    "conversations",
    "turns",
    "frames",
    "search_text",
    "feedback",
    "attachments",
)

ATTACHMENT_COLUMNS: Final = "id, conv_id, owner, name, media_type, size, sha256, created_at"

KEEP_RENAMED: Final = "CASE WHEN conversations.renamed THEN conversations.{0} ELSE excluded.{0} END"
"""A column an upsert of a record must not overwrite once the conversation was renamed (the
process saving may have loaded the record before the rename)."""


def from_excluded(*columns: str) -> str:
    """The ``SET`` list of an upsert that takes ``columns`` from the row it was given."""
    return ",\n    ".join(f"{column} = excluded.{column}" for column in columns)


def write_kind(write: Write) -> str:
    return write[0]


def runs_of_a_kind(batch: list[Write]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """Consecutive writes of one kind, as one ``executemany`` each; order is kept."""
    start = 0
    while start < len(batch):
        kind = batch[start][0]
        end = start
        while end < len(batch) and batch[end][0] == kind:
            end += 1
        yield kind, [params for _, params in batch[start:end]]
        start = end


def record(row: tuple[Any, ...]) -> ConversationRecord:
    conv_id, session_id, slug, overrides, signature, title, created, updated, last_seq, owner = row
    return ConversationRecord(
        conv_id=conv_id,
        session_id=session_id,
        profile_slug=slug,
        overrides=None if overrides is None else json.loads(overrides),
        signature=signature,
        title=title,
        created_at=created,
        updated_at=updated,
        last_seq=last_seq,
        owner=owner,
    )


def attachment_params(attachment: AttachmentRecord) -> tuple[Any, ...]:
    """The record's columns, in ``ATTACHMENT_COLUMNS`` order."""
    return (
        attachment.id,
        attachment.conv_id,
        attachment.owner,
        attachment.name,
        attachment.media_type,
        attachment.size,
        attachment.sha256,
        attachment.created_at,
    )


def attachment(row: tuple[Any, ...]) -> AttachmentRecord:
    attachment_id, conv_id, owner, name, media_type, size, sha256, created_at = row
    return AttachmentRecord(
        id=attachment_id,
        conv_id=conv_id,
        owner=owner,
        name=name,
        media_type=media_type,
        size=size,
        sha256=sha256,
        created_at=created_at,
    )
