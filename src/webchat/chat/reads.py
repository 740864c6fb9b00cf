"""ConversationReads: what the read routes serve (description, listing, timeline, metrics).

A read never loads or creates a conversation: it answers from memory when the conversation
is loaded, else from the store (and the coordination, for what another process may run).
"""

from __future__ import annotations

import json
import time
from typing import Any

from webchat.chat.coordination import Coordination
from webchat.conversation import Conversation, ConversationManager, Frame
from webchat.conversation.compaction import compact
from webchat.conversation.frames import StreamEnvelopes
from webchat.errors import InvalidRequestError, UnknownConversationError
from webchat.sessions import UnknownTurnError, branches
from webchat.storage import Store
from webchat.turns import Turn


def unknown_branch(conv_id: str, turn_id: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"unknown branch {turn_id!r}: conversation {conv_id!r} has no such turn", branch=turn_id
    )


def turn_json(turn: Turn) -> dict[str, Any]:
    """A turn as the API shows it: ``None`` fields left out, except the parent link, which is
    always there (``null``: a root) so a client never mistakes a root for a missing field."""
    body = turn.model_dump(mode="json", exclude_none=True)
    body.setdefault("metadata", {})["parent_turn_id"] = turn.metadata.parent_turn_id
    return body


def tree_json(conv_id: str, turns: list[Turn], branch: str | None) -> dict[str, Any]:
    """``turns`` (all of them, or the branch ending at ``branch``), the current tip and each
    turn's children: what a client needs to draw and switch branches."""
    try:
        shown = turns if branch is None else branches.path_to(turns, branch)
    except UnknownTurnError:
        raise unknown_branch(conv_id, branch or "") from None
    tip = branches.tip(turns)
    return {
        "turns": [turn_json(t) for t in shown],
        "tip": tip.id if tip is not None else None,
        "children": branches.children(turns),
        "branch": branch,
    }


class ConversationReads:
    def __init__(
        self,
        manager: ConversationManager,
        store: Store,
        coordination: Coordination,
        *,
        shared_state: bool = False,
    ) -> None:
        self.manager = manager
        self.store = store
        self.coordination = coordination
        self.shared_state = shared_state
        """True when other processes may run this deployment's conversations too."""

    async def catch_up(self, conversation: Conversation) -> None:
        """Another process may have started this conversation, or run its last turns: take
        its identity (session id) and history from the store."""
        if not self.manager.is_durable(conversation):
            record = await self.store.get_conversation(conversation.conv_id)
            if record is not None:
                self.manager.adopt(conversation, record)
        stored = await self.store.load_turns(conversation.conv_id)
        if len(stored) > len(conversation.turns):
            conversation.adopt_history(stored)
            self.manager.note_saved_turns(conversation.conv_id, len(stored))

    async def older_frames(self, conversation: Conversation, since: int | None) -> list[Frame]:
        """Frames after ``since`` the conversation's buffer no longer holds (from storage)."""
        if since is None or conversation.buffer.covers(since):
            return []
        rows = await self.store.frames_since(conversation.conv_id, since)
        boundary = conversation.buffer.complete_after
        conv_id = conversation.conv_id
        return [Frame.from_json(seq, text, conv_id) for seq, text in rows if seq <= boundary]

    async def require_stored(self, conv_id: str) -> None:
        """404 for a conversation neither in memory (checked by the caller) nor stored."""
        if await self.store.get_conversation(conv_id) is None:
            raise UnknownConversationError(f"unknown conversation {conv_id!r}")

    async def stored_turns(self, conv_id: str) -> list[Turn]:
        """The stored history, with the parents of turns stored before branches existed."""
        turns = await self.store.load_turns(conv_id)
        branches.link_legacy(turns)
        return turns

    async def branch_ids(
        self, conv_id: str, conversation: Conversation | None, branch: str
    ) -> set[str]:
        """The ids of the turns on the branch ending at ``branch``; a 400 for an unknown one.

        Memory answers for a loaded conversation; the store when it is not loaded, or when
        another process may have made the turn since this one last caught up.
        """
        turns = conversation.turns if conversation is not None else None
        if turns is None or (self.shared_state and all(t.id != branch for t in turns)):
            turns = await self.stored_turns(conv_id)
        try:
            return {t.id for t in branches.path_to(turns, branch)}
        except UnknownTurnError:
            raise unknown_branch(conv_id, branch) from None

    async def timeline(
        self, conv_id: str, since: int = 0, branch: str | None = None
    ) -> dict[str, Any]:
        """Frames after ``since``; with ``branch``, only those of the turns on the branch
        ending there (frames of no turn stay). ``last_seq`` is the conversation's either way:
        seq is global, so a client resumes the same way whichever branch it shows."""
        conversation = self.manager.find(conv_id)
        if conversation is None:
            await self.require_stored(conv_id)
            keep = await self.branch_ids(conv_id, None, branch) if branch is not None else None
            rows = await self.store.frames_since(conv_id, since)
            frames = compact([Frame.from_json(seq, text, conv_id) for seq, text in rows])
            last = rows[-1][0] if rows else await self.store.last_seq(conv_id)
            return {
                "conv_id": conv_id,
                "frames": _on_branch(_events(frames), keep),
                "last_seq": max(last, since),
            }
        keep = await self.branch_ids(conv_id, conversation, branch) if branch is not None else None
        backlog = conversation.backlog(since, await self.older_frames(conversation, since))
        return {
            "conv_id": conv_id,
            "frames": _on_branch(_events(backlog), keep),
            "last_seq": conversation.last_seq,
        }

    async def describe(self, conv_id: str, branch: str | None = None) -> dict[str, Any]:
        """The conversation as it is: from memory when loaded, else from the store (a read
        never loads or creates a conversation).

        Every turn (or, with ``branch``, those of the branch ending at that turn), plus the
        tree: the current tip and each turn's children. A 400 for an unknown ``branch``.
        """
        conversation = self.manager.find(conv_id)
        if conversation is None:
            record = await self.store.get_conversation(conv_id)
            if record is None:
                raise UnknownConversationError(f"unknown conversation {conv_id!r}")
            turns = await self.stored_turns(conv_id)
            return {
                "conv_id": conv_id,
                "session_id": record.session_id,
                "profile": record.profile_slug,
                "signature": json.loads(record.signature) if record.signature else {},
                "rebuilds": 0,
                # Not loaded here, but another process may be running it.
                "running": await self.coordination.holder(conv_id) is not None,
                "queued": await self.coordination.queue_length(conv_id),
                "last_seq": max(record.last_seq, await self.store.last_seq(conv_id)),
                "clients": 0,
                **tree_json(conv_id, turns, branch),
            }
        if self.shared_state and not conversation.is_running:
            await self.catch_up(conversation)  # another process may have run the last turns
        return {
            "conv_id": conv_id,
            "session_id": conversation.session_id,
            "profile": conversation.profile_slug,
            "signature": json.loads(conversation.signature),
            "rebuilds": conversation.rebuilds,
            "running": conversation.is_running,
            "queued": await self.coordination.queue_length(conv_id),
            "last_seq": conversation.last_seq,
            "clients": conversation.client_count,
            **tree_json(conv_id, conversation.turns, branch),
        }

    async def list_conversations(
        self, limit: int = 100, *, owner: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``owner``: only that user's (None: everyone's)."""
        listed: dict[str, dict[str, Any]] = {}
        for record in await self.store.list_conversations(limit=limit, owner=owner):
            listed[record.conv_id] = {
                "conv_id": record.conv_id,
                "profile": record.profile_slug,
                "title": record.title,
                "owner": record.owner,
                "updated_at": record.updated_at,
                "running": False,
            }
        for conversation in self.manager.all():
            if not self.manager.is_durable(conversation):
                continue  # only joined: not history until something runs in it
            conversation_owner = self.manager.owner_of(conversation.conv_id)
            if owner is not None and conversation_owner != owner:
                continue
            entry = listed.setdefault(
                conversation.conv_id,
                {
                    "conv_id": conversation.conv_id,
                    "profile": conversation.profile_slug,
                    "title": "",
                    "owner": conversation_owner,
                    "updated_at": time.time(),
                },
            )
            entry["running"] = conversation.is_running
        return sorted(listed.values(), key=lambda e: e["updated_at"], reverse=True)[:limit]

    def metrics(self, *, runs_started: int) -> dict[str, float]:
        conversations = self.manager.all()
        return {
            "conversations": len(conversations),
            "active_runs": sum(1 for c in conversations if c.is_running),
            "connected_clients": sum(c.client_count for c in conversations),
            "frames_sent_total": self.manager.frames_sent_total(),
            "dropped_slow_clients_total": self.manager.clients_dropped_total(),
            "rebuilds_total": self.manager.rebuilds_total(),
            "runs_started_total": runs_started,
        }


def _events(frames: list[Frame]) -> list[dict[str, Any]]:
    """The frames' ``event`` objects, short ones with their stream's envelope again: an HTTP
    read is not the hot path, and its readers (branch filter, clients) route by the ids."""
    envelopes = StreamEnvelopes()
    return [envelopes.fill(frame.event()) for frame in frames]


def _on_branch(frames: list[dict[str, Any]], keep: set[str] | None) -> list[dict[str, Any]]:
    """The frames of turns in ``keep`` and those of no turn (``keep`` None: every frame)."""
    if keep is None:
        return frames
    return [f for f in frames if f.get("turn_id") is None or f["turn_id"] in keep]
