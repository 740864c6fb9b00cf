"""What a conversation store keeps, and the contract the server codes against.

The server writes from its streaming path, so every write method is a plain function that
only queues: a store must never make the event loop wait on disk. Reads are coroutines and see
every write the caller made before them, so a handler can write and then read back without
flushing by hand.

Ownership is the one exception to "writes only queue": ``claim_owner`` decides who owns a
conversation, so it must be atomic across every process of a deployment and durable before
it answers, and the caller has to wait for the answer anyway. It is a coroutine, applied at
once (after the caller's queued writes), never through the queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

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


class Store(Protocol):
    """A durable home for conversations, their turns and their frame timeline."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def save_conversation(self, record: ConversationRecord) -> None: ...

    def append_frames(self, conv_id: str, frames: Sequence[Frame]) -> None: ...

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

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def save_conversation(self, record: ConversationRecord) -> None:
        pass

    def append_frames(self, conv_id: str, frames: Sequence[Frame]) -> None:
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
