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
from webchat.errors import UnknownConversationError
from webchat.storage import Store


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
        return [Frame.from_json(seq, text) for seq, text in rows if seq <= boundary]

    async def require_stored(self, conv_id: str) -> None:
        """404 for a conversation neither in memory (checked by the caller) nor stored."""
        if await self.store.get_conversation(conv_id) is None:
            raise UnknownConversationError(f"unknown conversation {conv_id!r}")

    async def timeline(self, conv_id: str, since: int = 0) -> dict[str, Any]:
        conversation = self.manager.find(conv_id)
        if conversation is None:
            await self.require_stored(conv_id)
            rows = await self.store.frames_since(conv_id, since)
            frames = [json.loads(text)["event"] for _, text in rows]
            last = rows[-1][0] if rows else await self.store.last_seq(conv_id)
            return {"conv_id": conv_id, "frames": frames, "last_seq": max(last, since)}
        frames = conversation.backlog(since, await self.older_frames(conversation, since))
        return {
            "conv_id": conv_id,
            "frames": [f.event() for f in frames],
            "last_seq": conversation.last_seq,
        }

    async def describe(self, conv_id: str) -> dict[str, Any]:
        """The conversation as it is: from memory when loaded, else from the store (a read
        never loads or creates a conversation)."""
        conversation = self.manager.find(conv_id)
        if conversation is None:
            record = await self.store.get_conversation(conv_id)
            if record is None:
                raise UnknownConversationError(f"unknown conversation {conv_id!r}")
            turns = await self.store.load_turns(conv_id)
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
                "turns": [t.model_dump(mode="json", exclude_none=True) for t in turns],
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
            "turns": [t.model_dump(mode="json", exclude_none=True) for t in conversation.turns],
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
