"""ConversationManagement: what a user does to a conversation besides chatting in it.

Rename, delete, search, feedback on answers and export, each checked against ownership
(``ConversationAccess``): the owner may do everything; an admin may read (search, feedback,
export) but not act (rename, delete, rate: 403); anyone else is told the conversation does not
exist (404). It is stateless over the ``ChatService`` it is given, so holding one per service
or making one per request is the same.

Deleting is the one operation that involves every process. The conversation's run is cancelled
and its queue emptied first; then a ``conversation.deleted`` event is published on its topic.
Every process following the conversation (this one included) turns it into a frame, sends it to
its clients after every earlier frame, closes them with ``DELETED_CODE`` and forgets the
conversation without persisting it (``ConversationManager.forget``). Only then are the stored
conversation and its topic deleted, so nothing written late by a process that was still
streaming it brings it back. With state shared in Redis, the other processes get
``SHARED_GRACE`` seconds to read the event first; one that is cut off from Redis for longer
keeps serving its open tabs the deleted conversation until they reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict

from webchat.auth.principal import LOCAL_USER, Principal
from webchat.chat.reads import turn_json
from webchat.conversation import Conversation
from webchat.conversation.frames import DELETED_FRAME
from webchat.conversation.manager import DELETED_CODE
from webchat.errors import UnknownConversationError, WebchatError
from webchat.events import ConversationDeletedEvent, EventMeta
from webchat.sessions import branches
from webchat.storage import ConversationRecord, Feedback, Rating
from webchat.storage.search import own_blocks
from webchat.transport import DeletableTopics, TopicSink, topic_for
from webchat.turns.models import BlockKind, Turn

if TYPE_CHECKING:
    from webchat.chat.service import ChatService

__all__ = [
    "DELETED_CODE",
    "SHARED_GRACE",
    "ConversationExport",
    "ConversationManagement",
    "TurnNotFoundError",
    "export_markdown",
]

log = logging.getLogger("webchat.chat")

SHARED_GRACE: Final = 1.0
"""Seconds other processes get to read a deletion before the stored data and the topic go
(Redis only: a process blocked reading the topic wakes at once when the event is added)."""
DELETED_WAIT: Final = 2.0
"""Seconds to wait for this process's own copy of the deletion to come back off the topic; a
conversation whose stream is broken is forgotten without it."""
TOOL_TEXT_MAX: Final = 300
"""Characters of a tool call's input or result an export's transcript shows."""


class TurnNotFoundError(WebchatError):
    status_code = 404


class ConversationExport(BaseModel):
    """Everything stored of a conversation: its record, its turns (every branch, in creation
    order, each naming its parent), the tip of the current branch, and the feedback."""

    model_config = ConfigDict(extra="forbid")

    conversation: ConversationRecord
    turns: list[dict[str, Any]]
    tip: str | None
    feedback: dict[str, Feedback]
    exported_at: float


class ConversationManagement:
    def __init__(self, service: ChatService) -> None:
        self.service = service
        self.store = service.store
        self.manager = service.manager
        self.access = service.access

    # -- rename ----------------------------------------------------------------------------

    async def rename(
        self, conv_id: str, title: str, user: Principal = LOCAL_USER
    ) -> dict[str, Any]:
        """Give the conversation a new title; returns its summary (as listings show it)."""
        await self.access.check_act(conv_id, user)
        record = await self._require(conv_id)
        self.store.rename_conversation(conv_id, title)
        renamed = await self.store.get_conversation(conv_id)
        return self._summary(renamed or record, title=title)

    # -- delete ----------------------------------------------------------------------------

    async def delete(self, conv_id: str, user: Principal = LOCAL_USER) -> dict[str, Any]:
        """Delete the conversation everywhere (see the module docstring); returns once it is
        gone from this process, the store and the transport."""
        await self.access.check_act(conv_id, user)
        record = await self._require(conv_id)
        # Shielded: a client giving up must not leave it forgotten here but still stored.
        return await asyncio.shield(self._delete(record, user))

    async def _delete(self, record: ConversationRecord, user: Principal) -> dict[str, Any]:
        conv_id = record.conv_id
        await self._stop_runs(conv_id, user)
        conversation = self.manager.find(conv_id)
        session_id = conversation.session_id if conversation is not None else record.session_id
        event = ConversationDeletedEvent(meta=EventMeta(session_id=session_id))
        topic = topic_for(conv_id)
        await TopicSink(self.service.transport, topic).publish_event(event)
        if conversation is not None:
            await self._forget_here(conversation)
        if self.service.shared_state:
            await asyncio.sleep(SHARED_GRACE)
        await self.store.delete_conversation(conv_id)
        transport = self.service.transport
        if isinstance(transport, DeletableTopics):
            await transport.delete_topic(topic)
        log.info("conversation %s deleted by %s", conv_id, user.id)
        return {"conv_id": conv_id, "deleted": True}

    async def _stop_runs(self, conv_id: str, user: Principal) -> None:
        """Drop the queued runs (giving back their quota slots), then cancel the active one
        wherever it runs; nothing starts after it, the queue being empty."""
        coordination = self.service.coordination
        quotas = self.service.scheduler.quotas
        owner = await self.access.owner(conv_id)
        while (pending := await coordination.dequeue(conv_id)) is not None:
            if quotas is not None and owner is not None:
                with contextlib.suppress(Exception):  # Redis away: the slot's lease frees it
                    await quotas.release(owner, pending.inference_id)
        conversation = self.manager.find(conv_id)
        if conversation is not None:
            conversation.queued = 0
        await self.service.cancel(conv_id, user)

    async def _forget_here(self, conversation: Conversation) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DELETED_WAIT):
                await conversation.wait_for_frame(lambda frame: frame.type == DELETED_FRAME)
        # Usually already under way (the frame listener starts it); waits for it if so.
        await self.manager.forget(conversation.conv_id)

    # -- search ----------------------------------------------------------------------------

    async def search(
        self, query: str, limit: int = 50, user: Principal = LOCAL_USER
    ) -> list[dict[str, Any]]:
        """The user's conversations (an admin's: everyone's) whose title or messages hold
        every word of ``query``, newest first."""
        owner = None if user.is_admin else user.id
        records = await self.store.search_conversations(query, owner=owner, limit=limit)
        return [self._summary(record) for record in records]

    # -- feedback --------------------------------------------------------------------------

    async def save_feedback(
        self,
        conv_id: str,
        turn_id: str,
        rating: Rating | None,
        comment: str | None,
        user: Principal = LOCAL_USER,
    ) -> dict[str, Any]:
        """Rate one answer (replacing the earlier rating); no rating and no comment removes
        the feedback. Returns it as stored (all ``None`` but ``updated_at`` once removed)."""
        await self.access.check_act(conv_id, user)
        turns = await self._turns(conv_id)
        if all(turn.id != turn_id for turn in turns):
            raise TurnNotFoundError(f"unknown turn {turn_id!r} in conversation {conv_id!r}")
        feedback = self.store.save_feedback(conv_id, turn_id, rating, comment)
        saved = feedback or Feedback(updated_at=time.time())
        return {"conv_id": conv_id, "turn_id": turn_id, **saved.model_dump()}

    async def feedback(self, conv_id: str, user: Principal = LOCAL_USER) -> dict[str, Feedback]:
        """The conversation's feedback by turn id (what the UI shows again on a reload)."""
        await self.access.check_read(conv_id, user)
        await self._require(conv_id)
        return await self.store.load_feedback(conv_id)

    async def metrics(self) -> dict[str, float]:
        """Feedback counts for ``/metrics``: answers rated up and down now (they go down
        when a rating changes or its conversation is deleted)."""
        counts = await self.store.count_feedback()
        return {"feedback_up": counts["up"], "feedback_down": counts["down"]}

    # -- export ----------------------------------------------------------------------------

    async def export(self, conv_id: str, user: Principal = LOCAL_USER) -> ConversationExport:
        """The record, every turn and the feedback, as one document."""
        await self.access.check_read(conv_id, user)
        record = await self._require(conv_id)
        turns = await self._turns(conv_id)
        tip = branches.tip(turns)
        return ConversationExport(
            conversation=record,
            turns=[turn_json(turn) for turn in turns],
            tip=tip.id if tip is not None else None,
            feedback=await self.store.load_feedback(conv_id),
            exported_at=time.time(),
        )

    # -- helpers ---------------------------------------------------------------------------

    async def _require(self, conv_id: str) -> ConversationRecord:
        """The stored record; 404 for a conversation that is not history (never ran, or
        deleted). One that is running here for the first time has its record queued, and a
        read sees the queued writes."""
        record = await self.store.get_conversation(conv_id)
        if record is None:
            conversation = self.manager.find(conv_id)
            if conversation is None or not self.manager.is_durable(conversation):
                raise UnknownConversationError(f"unknown conversation {conv_id!r}")
            record = self._unstored_record(conversation)
        return record

    def _unstored_record(self, conversation: Conversation) -> ConversationRecord:
        """A record for a conversation the store keeps nothing of (the NullStore)."""
        now = time.time()
        return ConversationRecord(
            conv_id=conversation.conv_id,
            session_id=conversation.session_id,
            profile_slug=conversation.profile_slug,
            overrides=conversation.overrides,
            signature=conversation.signature,
            created_at=now,
            updated_at=now,
            last_seq=conversation.last_seq,
            owner=self.manager.owner_of(conversation.conv_id),
        )

    async def _turns(self, conv_id: str) -> list[Turn]:
        """The conversation's turns: from memory when loaded (caught up with the store when
        another process may have run the last ones), else from the store; 404 if unknown."""
        conversation = self.manager.find(conv_id)
        if conversation is None or not self.manager.is_durable(conversation):
            await self._require(conv_id)
            return await self.service.reads.stored_turns(conv_id)
        if self.service.shared_state and not conversation.is_running:
            await self.service.reads.catch_up(conversation)
        return list(conversation.turns)

    def _summary(self, record: ConversationRecord, *, title: str | None = None) -> dict[str, Any]:
        """A conversation as listings show it (``ConversationSummary``)."""
        conversation = self.manager.find(record.conv_id)
        return {
            "conv_id": record.conv_id,
            "profile": record.profile_slug,
            "title": record.title if title is None else title,
            "owner": record.owner,
            "updated_at": record.updated_at,
            "running": conversation is not None and conversation.is_running,
        }


# -- the Markdown transcript ----------------------------------------------------------------


def export_markdown(export: ConversationExport) -> str:
    """A readable transcript of the current branch (the path to the tip; other branches are
    counted, and kept whole in the JSON export): a heading per speaker, tool calls as one
    line each (input and result cut to ``TOOL_TEXT_MAX``), feedback under the answer."""
    record = export.conversation
    lines = [
        f"# {_one_line(record.title) or 'Conversation ' + record.conv_id}",
        "",
        f"- Conversation: {_code(record.conv_id)}",
        f"- Profile: {_code(record.profile_slug)}",
    ]
    if record.owner:
        lines.append(f"- Owner: {_code(record.owner)}")
    lines += [
        f"- Created: {_when(record.created_at)}",
        f"- Updated: {_when(record.updated_at)}",
        f"- Exported: {_when(export.exported_at)}",
    ]
    turns = [Turn.model_validate(data) for data in export.turns]
    shown = branches.path_to(turns, export.tip) if export.tip is not None else []
    for turn in shown:
        lines += ["", *_turn_lines(turn, export.feedback.get(turn.id))]
    if len(shown) < len(turns):
        hidden = len(turns) - len(shown)
        lines += ["", "---", "", f"*{hidden} more turn(s) on other branches: see the JSON export.*"]
    return "\n".join(lines).rstrip() + "\n"


def _turn_lines(turn: Turn, feedback: Feedback | None) -> list[str]:
    lines: list[str] = []
    speaker = ""
    tool_names: dict[str, str] = {}

    def section(name: str) -> None:
        nonlocal speaker
        if speaker != name:
            lines.extend([f"## {name}", ""])
            speaker = name

    for block in own_blocks(turn):
        payload = block.payload
        if block.kind == BlockKind.USER:
            section("User")
            lines += [block.text, ""]
        elif block.kind == BlockKind.LLM_TEXT:
            section("Assistant")
            lines += [block.text, ""]
        elif block.kind == BlockKind.TOOL_CALL:
            section("Assistant")
            name = str(payload.get("name", "tool"))
            tool_names[str(payload.get("id", ""))] = name
            lines += [f"- Tool call {_code(name)}: {_code(_short(payload.get('args')))}", ""]
        elif block.kind == BlockKind.TOOL_USE:
            section("Assistant")
            name = tool_names.get(str(payload.get("id", "")), "tool")
            if payload.get("error"):
                outcome = f"failed: {_code(_short(payload['error']))}"
            else:
                outcome = f"returned {_code(_short(payload.get('result')))}"
            lines += [f"- Tool {_code(name)} {outcome}", ""]
    metadata = turn.metadata
    if metadata.error:
        section("Assistant")
        ending = "Cancelled." if metadata.error == "cancelled" else f"Failed: {metadata.error}"
        lines += [f"*{_one_line(ending)}*", ""]
    if feedback is not None:
        verdict = {"up": "👍 up", "down": "👎 down", None: "no rating"}[feedback.rating]
        comment = f" — {_one_line(feedback.comment)}" if feedback.comment else ""
        lines += [f"> Feedback: {verdict}{comment}", ""]
    return lines


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = _one_line(text)
    return text if len(text) <= TOOL_TEXT_MAX else text[: TOOL_TEXT_MAX - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _code(text: str) -> str:
    """``text`` as inline code, whatever backticks it holds (a longer fence around them)."""
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
