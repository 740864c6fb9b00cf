"""What a conversation store keeps, and the contract the server codes against.

The server writes from its streaming path, so every write method is a plain function that
only queues: a store must never make the event loop wait on disk. Reads are coroutines and see
every write the caller made before them, so a handler can write and then read back without
flushing by hand.

Ownership is the one exception to "writes only queue": ``claim_owner`` decides who owns a
conversation, so it must be atomic across every process of a deployment and durable before
it answers, and the caller has to wait for the answer anyway. It is a coroutine, applied at
once (after the caller's queued writes), never through the queue. ``delete_conversation`` is
the other: the client waits for it, and it must come after every write queued before it.

Attachments are the third: ``save_attachment`` completes before it returns, because the
uploader is told the attachment's id and may start a run with it at once (from any process).
They belong to their conversation: ``delete_conversation`` removes them with it.

Renames and feedback are ordinary queued writes. A rename sticks: a record saved later (by a
process that loaded the conversation before the rename, with the old title) keeps the new one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from webchat.turns.models import Turn

if TYPE_CHECKING:
    # Only a type here: the conversation package will import the store, not the reverse.
    from webchat.conversation.frames import Frame


class ConversationRecord(BaseModel):
    """What a restarted server needs to list a conversation and rebuild its engine.

    ``overrides`` are kept rather than the resolved engine config, so a restart rebuilds the
    engine from the profile as it is now plus what the user asked for. ``signature`` is already
    free of secrets. ``created_at`` is set by the first save; later saves keep it.
    ``owner`` is the user id that owns the conversation; empty for conversations made before
    ownership existed (``Store.owner_of`` then falls back to a claim, if any).
    """

    model_config = ConfigDict(extra="forbid")

    conv_id: str
    session_id: str
    profile_slug: str
    overrides: dict[str, Any] | None = None
    signature: str = ""
    title: str = ""
    created_at: float
    updated_at: float
    last_seq: int = 0
    owner: str = ""


Rating = Literal["up", "down"]


class Feedback(BaseModel):
    """A user's verdict on one answer (a turn): thumbs up or down, and/or a comment."""

    model_config = ConfigDict(extra="forbid")

    rating: Rating | None = None
    comment: str | None = None
    updated_at: float


def make_feedback(rating: Rating | None, comment: str | None) -> Feedback | None:
    """The feedback to store, stamped now; None when there is nothing left to keep (no rating,
    no comment): clearing both removes the feedback."""
    if rating is None and not comment:
        return None
    return Feedback(rating=rating, comment=comment or None, updated_at=time.time())


class AttachmentRecord(BaseModel):
    """What is known about an uploaded file, besides its bytes.

    ``name`` is already sanitised (no path, no control characters) and ``media_type`` is what
    the server sniffed from the bytes, never what the client claimed: both are safe to echo
    in headers. ``sha256`` (hex) lets a reader check the bytes it got back.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    conv_id: str
    owner: str
    name: str
    media_type: str
    size: int
    sha256: str
    created_at: float


class Store(Protocol):
    """A durable home for conversations, their turns and their frame timeline."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def save_conversation(self, record: ConversationRecord) -> None: ...

    def append_frames(self, conv_id: str, frames: Sequence[Frame]) -> None: ...

    def delete_frames(self, conv_id: str, seqs: Sequence[int]) -> None:
        """Forget stored frames (queued after the appends before it, like them): the deltas
        of a stream whose end, already appended, carries their whole text."""
        ...

    def save_turn(self, conv_id: str, index: int, turn: Turn) -> None: ...

    async def flush(self) -> None: ...

    async def get_conversation(self, conv_id: str) -> ConversationRecord | None: ...

    async def list_conversations(
        self, *, limit: int = 100, offset: int = 0, owner: str | None = None
    ) -> list[ConversationRecord]:
        """Newest activity first; only ``owner``'s records when ``owner`` is given."""
        ...

    async def count_conversations(self, owner: str) -> int:
        """How many stored conversation records ``owner`` has (for per-user quotas)."""
        ...

    async def claim_owner(self, conv_id: str, owner: str) -> str:
        """Make ``owner`` the owner of ``conv_id`` unless it already has one; return whoever
        owns it now.

        Atomic: of concurrent claims (from any process sharing the store) exactly one wins and
        every claimant is told the winner. Durable: a claim survives a restart. A record
        saved with a non-empty ``owner`` before any claim counts as an existing owner.
        """
        ...

    async def owner_of(self, conv_id: str) -> str | None:
        """The claimed owner, else the stored record's non-empty ``owner``, else ``None``."""
        ...

    async def load_turns(self, conv_id: str) -> list[Turn]: ...

    async def frames_since(
        self, conv_id: str, seq: int, *, limit: int = 10_000
    ) -> list[tuple[int, str]]: ...

    async def last_seq(self, conv_id: str) -> int: ...

    def rename_conversation(self, conv_id: str, title: str) -> None:
        """Queue a new title for a stored conversation; later record saves keep it."""
        ...

    async def delete_conversation(self, conv_id: str) -> bool:
        """Remove the conversation's record, turns, frames, search text and feedback, at once
        (after the caller's queued writes); True if a record existed.

        The owner claim is kept: ownership never changes once claimed (every process caches
        it, and nothing could tell them all that it changed), so a deleted id stays its
        owner's. It holds no content: only which user the id belonged to.
        """
        ...

    async def search_conversations(
        self, query: str, *, owner: str | None = None, limit: int = 50
    ) -> list[ConversationRecord]:
        """Conversations whose title or one turn's text holds every word of ``query``
        (``webchat.storage.search``), newest activity first; only ``owner``'s when given."""
        ...

    def save_feedback(
        self, conv_id: str, turn_id: str, rating: Rating | None, comment: str | None
    ) -> Feedback | None:
        """Queue the feedback on one turn (replacing any earlier one); no rating and no
        comment removes it. Returns what will be stored (None: removed)."""
        ...

    async def load_feedback(self, conv_id: str) -> dict[str, Feedback]:
        """The conversation's feedback by turn id."""
        ...

    async def count_feedback(self) -> dict[Rating, int]:
        """How many stored answers are rated up and down, over every conversation."""
        ...

    async def save_attachment(self, record: AttachmentRecord, data: bytes) -> None:
        """Store an uploaded file; durable (and readable by every process) when it returns."""
        ...

    async def load_attachment(
        self, conv_id: str, attachment_id: str
    ) -> tuple[AttachmentRecord, bytes] | None:
        """The attachment with its bytes, or None if ``conv_id`` has no such attachment."""
        ...

    async def list_attachments(self, conv_id: str) -> list[AttachmentRecord]:
        """The conversation's attachments, oldest first (records only, no bytes)."""
        ...

    @property
    def queued(self) -> int: ...

    @property
    def writes_applied(self) -> int: ...

    @property
    def write_errors(self) -> int: ...


class NullStore:
    """A store that remembers nothing but owners: for tests, and running without persistence.

    Ownership is kept (in memory, for the life of the process) because it is a permission,
    not a record: without it, a server running without persistence would let any user take
    over any conversation.
    """

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}
        # Kept like owners, for the life of the process: without them a run could not be
        # given the files its user just uploaded.
        self._attachments: dict[str, dict[str, tuple[AttachmentRecord, bytes]]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def save_conversation(self, record: ConversationRecord) -> None:
        pass

    def append_frames(self, conv_id: str, frames: Sequence[Frame]) -> None:
        pass

    def delete_frames(self, conv_id: str, seqs: Sequence[int]) -> None:
        pass

    def save_turn(self, conv_id: str, index: int, turn: Turn) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def get_conversation(self, conv_id: str) -> ConversationRecord | None:
        return None

    async def list_conversations(
        self, *, limit: int = 100, offset: int = 0, owner: str | None = None
    ) -> list[ConversationRecord]:
        return []

    async def count_conversations(self, owner: str) -> int:
        return 0

    async def claim_owner(self, conv_id: str, owner: str) -> str:
        check_owner(owner)
        # No await between the check and the set: atomic within the one event loop.
        return self._owners.setdefault(conv_id, owner)

    async def owner_of(self, conv_id: str) -> str | None:
        return self._owners.get(conv_id)

    async def load_turns(self, conv_id: str) -> list[Turn]:
        return []

    async def frames_since(
        self, conv_id: str, seq: int, *, limit: int = 10_000
    ) -> list[tuple[int, str]]:
        return []

    async def last_seq(self, conv_id: str) -> int:
        return 0

    def rename_conversation(self, conv_id: str, title: str) -> None:
        pass

    async def delete_conversation(self, conv_id: str) -> bool:
        self._attachments.pop(conv_id, None)
        return False

    async def search_conversations(
        self, query: str, *, owner: str | None = None, limit: int = 50
    ) -> list[ConversationRecord]:
        return []

    def save_feedback(
        self, conv_id: str, turn_id: str, rating: Rating | None, comment: str | None
    ) -> Feedback | None:
        return make_feedback(rating, comment)

    async def load_feedback(self, conv_id: str) -> dict[str, Feedback]:
        return {}

    async def count_feedback(self) -> dict[Rating, int]:
        return {"up": 0, "down": 0}

    async def save_attachment(self, record: AttachmentRecord, data: bytes) -> None:
        self._attachments.setdefault(record.conv_id, {})[record.id] = (record, bytes(data))

    async def load_attachment(
        self, conv_id: str, attachment_id: str
    ) -> tuple[AttachmentRecord, bytes] | None:
        return self._attachments.get(conv_id, {}).get(attachment_id)

    async def list_attachments(self, conv_id: str) -> list[AttachmentRecord]:
        found = [record for record, _ in self._attachments.get(conv_id, {}).values()]
        return sorted(found, key=lambda r: (r.created_at, r.id))

    @property
    def queued(self) -> int:
        return 0

    @property
    def writes_applied(self) -> int:
        return 0

    @property
    def write_errors(self) -> int:
        return 0


def check_owner(owner: str) -> None:
    """Refuse an empty owner: ``""`` means "no owner" in a record, so it cannot be claimed."""
    if not owner:
        raise ValueError("an owner must be a non-empty user id")
