"""Turns and blocks: the provider-neutral record of a conversation.

A turn is an ordered list of blocks. Engines read the blocks to build a provider request and
append the blocks the model produced; the tool loop appends ``tool_use`` blocks holding tool
results. Each turn in a session is a complete transcript up to that point, so any turn can be
replayed to a model on its own.

Turns form a tree: ``TurnMetadata.parent_turn_id`` names the turn a turn continues. Forking
from a turn other than the latest (to regenerate an answer, or to edit an earlier message)
starts a branch, and because each turn carries its whole transcript, a branch's history is
exactly its tip's blocks: no other branch can leak into it.

A user block may carry attachments: ``payload["attachments"]`` is a list of references
(``id``, ``name``, ``media_type``, ``size``, ``kind``: "image" or "text"), never the bytes,
which would otherwise be copied into every later turn. The bytes of a run's attachments travel
with the turn the engine is given, in memory only (``Turn.attachment_data``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from webchat.events.models import Usage, new_id


class BlockKind(StrEnum):
    USER = "user"
    LLM_TEXT = "llm_text"
    TOOL_CALL = "tool_call"
    TOOL_USE = "tool_use"  # the result of a tool call
    SYSTEM = "system"
    REASONING = "reasoning"
    OTHER = "other"


_DEFAULT_ROLES = {
    BlockKind.USER: "user",
    BlockKind.LLM_TEXT: "assistant",
    BlockKind.TOOL_CALL: "assistant",
    BlockKind.TOOL_USE: "tool",
    BlockKind.SYSTEM: "system",
    BlockKind.REASONING: "assistant",
    BlockKind.OTHER: "",
}


class Block(BaseModel):
    """One unit of a turn. Payload keys by kind: ``text`` for text kinds (and, on ``user``,
    ``attachments``: references to uploaded files, see the module docstring); ``id``,
    ``name``, ``args`` for ``tool_call``; ``id``, ``result`` (and ``error`` on failure) for
    ``tool_use``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    kind: BlockKind
    role: str = ""
    payload: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        if not self.role:
            self.role = _DEFAULT_ROLES[self.kind]

    @property
    def text(self) -> str:
        value = self.payload.get("text", "")
        return value if isinstance(value, str) else str(value)

    @classmethod
    def user(cls, text: str, attachments: list[dict[str, Any]] | None = None) -> Block:
        """A user message; ``attachments`` (references, no bytes) only when there are any,
        so a block without them is stored exactly as before."""
        payload: dict[str, Any] = {"text": text}
        if attachments:
            payload["attachments"] = [dict(ref) for ref in attachments]
        return cls(kind=BlockKind.USER, payload=payload)

    @property
    def attachments(self) -> list[dict[str, Any]]:
        """The attachment references of a user block (empty for every other block)."""
        refs = self.payload.get("attachments") if self.kind == BlockKind.USER else None
        return [r for r in refs if isinstance(r, dict)] if isinstance(refs, list) else []

    @classmethod
    def system(cls, text: str) -> Block:
        return cls(kind=BlockKind.SYSTEM, payload={"text": text})

    @classmethod
    def llm_text(cls, text: str) -> Block:
        return cls(kind=BlockKind.LLM_TEXT, payload={"text": text})

    @classmethod
    def reasoning(cls, text: str) -> Block:
        return cls(kind=BlockKind.REASONING, payload={"text": text})

    @classmethod
    def tool_call(cls, call_id: str, name: str, args: Any) -> Block:
        return cls(kind=BlockKind.TOOL_CALL, payload={"id": call_id, "name": name, "args": args})

    @classmethod
    def tool_use(cls, call_id: str, result: Any, *, error: str | None = None) -> Block:
        payload: dict[str, Any] = {"id": call_id, "result": result}
        if error is not None:
            payload["error"] = error
        return cls(kind=BlockKind.TOOL_USE, payload=payload)


class TurnMetadata(BaseModel):
    """Facts about the inference that produced a turn."""

    model_config = ConfigDict(extra="allow")

    session_id: str | None = None
    inference_id: str | None = None
    model: str | None = None
    usage: Usage | None = None
    stop_reason: str | None = None
    error: str | None = None
    parent_turn_id: str | None = None
    """The turn this one continues (``None``: a root, with no history before its prompt).

    Siblings (turns with the same parent) are the branches a regenerate or an edit made. A
    turn stored before branches existed has no such key at all (see ``has_parent_link``).
    """

    @property
    def has_parent_link(self) -> bool:
        """Whether ``parent_turn_id`` was ever set (even to ``None``, for a root).

        A turn stored before branches existed lacks the key; such histories were linear, so
        its parent is the turn before it (``webchat.sessions.branches.link_legacy``).
        """
        return "parent_turn_id" in self.model_fields_set


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    blocks: list[Block] = Field(default_factory=list)
    metadata: TurnMetadata = Field(default_factory=TurnMetadata)
    data: dict[str, Any] = Field(default_factory=dict)

    # In memory only (never serialised): the bytes of the attachments this run's transcript
    # refers to, by attachment id, loaded from the store when the run starts.
    _attachment_data: dict[str, bytes] = PrivateAttr(default_factory=dict)

    @property
    def attachment_data(self) -> dict[str, bytes]:
        """The bytes of the transcript's attachments, by id, for the engine of this run
        (empty for a turn read back from storage: a run's start loads them)."""
        return self._attachment_data

    def set_attachment_data(self, data: dict[str, bytes]) -> None:
        self._attachment_data = dict(data)

    def append(self, *blocks: Block) -> Turn:
        self.blocks.extend(blocks)
        return self

    def blocks_of(self, kind: BlockKind) -> list[Block]:
        return [b for b in self.blocks if b.kind == kind]

    def last_user_text(self) -> str:
        for block in reversed(self.blocks):
            if block.kind == BlockKind.USER:
                return block.text
        return ""

    def pending_tool_calls(self) -> list[Block]:
        """``tool_call`` blocks that have no ``tool_use`` block with the same id yet."""
        answered = {b.payload.get("id") for b in self.blocks if b.kind == BlockKind.TOOL_USE}
        return [
            b
            for b in self.blocks
            if b.kind == BlockKind.TOOL_CALL and b.payload.get("id") not in answered
        ]

    def assistant_text(self, since: int = 0) -> str:
        """The model's text in blocks from index ``since`` on, joined in order."""
        return "".join(b.text for b in self.blocks[since:] if b.kind == BlockKind.LLM_TEXT)

    def fork(self, *new_blocks: Block) -> Turn:
        """A new turn (fresh id, empty metadata) carrying a copy of this transcript."""
        copied = [b.model_copy(deep=True) for b in self.blocks]
        return Turn(blocks=[*copied, *new_blocks], data=dict(self.data))
