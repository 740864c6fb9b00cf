"""ConversationManager: creates, rebuilds and evicts conversations.

The decisions (DESIGN section 2):

1. Joining (WebSocket) never rebuilds; it creates the conversation only if it is absent.
2. No rebuild under a running inference: a run request with a different config while a run
   is active raises ``ConversationBusyError`` and the caller applies its busy policy.
3. A rebuild replaces engine, sink, subscription and stream, and keeps session (history),
   connection pool (clients) and the frame ordinal ``seq``.
4. Identical inputs (same signature) return the same conversation with nothing rebuilt.
5. Concurrent calls for one ``conv_id`` build once (a lock per conversation); building one
   conversation never blocks another.
6. A conversation without clients, run or queued work for ``evict_after`` seconds is evicted.

With a store, a conversation that is not in memory (evicted, or the server restarted) comes
back with its session id, history, profile, overrides and seq, and every frame is persisted.

A deleted conversation is *forgotten*: its ``conversation.deleted`` frame (published on its
topic, so every process following it sees it after every earlier frame) reaches its clients,
who are then closed with ``DELETED_CODE``, and it is dropped without being persisted again.

Stored deltas of a stream whose end is stored are deleted, ``prune_after`` seconds later (by
the sweep, and at close): the end carries their whole text, so a history read from storage
costs a frame per message. Not at once, because another process may have loaded the
conversation mid-stream and still serve a joiner the stored part of that stream before its
own copy of the end arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from webchat.conversation.builder import EngineBuilder
from webchat.conversation.config import EngineConfig
from webchat.conversation.conversation import Conversation
from webchat.conversation.frames import DELETED_FRAME, Frame, transport_after_seq
from webchat.conversation.subscribers import SubscriberFactory
from webchat.errors import ConversationBusyError, UnknownConversationError, WebchatError
from webchat.profiles import Overrides
from webchat.storage import ConversationRecord, Store
from webchat.turns import Turn

log = logging.getLogger("webchat.conversations")

DELETED_CODE = 4404
"""Close code of a client whose conversation was deleted: do not reconnect to it."""
DELETED_DRAIN = 1.0
"""Seconds a deleted conversation's clients get to receive its last frames before the close."""
PRUNE_AFTER = 30.0
"""Seconds between storing a stream's end and deleting its stored deltas (module docstring)."""


class ConversationManager:
    def __init__(
        self,
        builder: EngineBuilder,
        subscribers: SubscriberFactory,
        *,
        evict_after: float = 600.0,
        buffer_frames: int = 10_000,
        store: Store | None = None,
        prune_after: float = PRUNE_AFTER,
    ) -> None:
        self.builder = builder
        self.prune_after = prune_after
        # (due, conv_id, seqs): stored deltas to delete once due, oldest first.
        self._prunable: deque[tuple[float, str, list[int]]] = deque()
        self.subscribers = subscribers
        self.store = store
        self.evict_after = evict_after
        self.buffer_frames = buffer_frames
        self._conversations: dict[str, Conversation] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._records: dict[str, ConversationRecord] = {}
        self._owners: dict[str, str] = {}
        # Counters of conversations that are gone, so totals never go backwards.
        self._retired = {"frames_sent": 0, "clients_dropped": 0, "rebuilds": 0}
        self._saved_turns: dict[str, int] = {}
        self._forgetting: set[asyncio.Task[bool]] = set()
        self.builds = 0
        self.evictions = 0

    # -- lookup ----------------------------------------------------------------------------

    def get(self, conv_id: str) -> Conversation:
        try:
            return self._conversations[conv_id]
        except KeyError:
            raise UnknownConversationError(
                f"unknown conversation {conv_id!r}", conv_id=conv_id
            ) from None

    def find(self, conv_id: str) -> Conversation | None:
        return self._conversations.get(conv_id)

    def all(self) -> list[Conversation]:
        return list(self._conversations.values())

    def __len__(self) -> int:
        return len(self._conversations)

    # -- get or create ---------------------------------------------------------------------

    async def join(self, conv_id: str, profile_slug: str) -> Conversation:
        """For a client joining: the existing conversation as it is, or a new one."""
        existing = self._conversations.get(conv_id)
        if existing is not None:
            existing.touch()
            return existing
        config = self.builder.build_config(profile_slug)
        async with self._lock(conv_id):
            existing = self._conversations.get(conv_id)
            if existing is not None:
                return existing
            record = await self._stored(conv_id)
            overrides: dict[str, Any] | None = None
            if record is not None:
                try:  # come back as it was, if its profile still exists
                    config = self.builder.build_config(record.profile_slug, record.overrides)
                    overrides = record.overrides
                except WebchatError:
                    log.warning("conversation %s: stored profile unusable", conv_id)
            return await self._create(conv_id, config, overrides, record)

    async def get_or_create(
        self,
        conv_id: str,
        profile_slug: str,
        overrides: Overrides | Mapping[str, Any] | None = None,
    ) -> Conversation:
        """For a run request: a conversation whose engine matches the request's config."""
        config = self.builder.build_config(profile_slug, overrides)  # 400/403/404 before locking
        overrides_data = _as_dict(overrides)
        signature = self.builder.signature(config)
        existing = self._conversations.get(conv_id)
        if existing is not None and existing.signature == signature:
            existing.touch()
            return existing
        async with self._lock(conv_id):
            existing = self._conversations.get(conv_id)
            if existing is None:
                record = await self._stored(conv_id)
                return await self._create(conv_id, config, overrides_data, record)
            if existing.signature != signature:
                await self._rebuild(existing, config, overrides_data)
            existing.touch()
            return existing

    def _lock(self, conv_id: str) -> asyncio.Lock:
        return self._locks.setdefault(conv_id, asyncio.Lock())

    async def _stored(self, conv_id: str) -> ConversationRecord | None:
        return await self.store.get_conversation(conv_id) if self.store is not None else None

    async def _create(
        self,
        conv_id: str,
        config: EngineConfig,
        overrides: dict[str, Any] | None,
        record: ConversationRecord | None,
    ) -> Conversation:
        turns: list[Turn] = []
        start_seq = 0
        if self.store is not None:
            # Claimed before the conversation is built (webchat.chat.access): the owner goes
            # into every record saved from here, for listings by owner.
            self._owners[conv_id] = await self.store.owner_of(conv_id) or ""
        if record is not None and self.store is not None:
            turns = await self.store.load_turns(conv_id)
            start_seq = max(record.last_seq, await self.store.last_seq(conv_id))
            self._records[conv_id] = record
            self._saved_turns[conv_id] = len(turns)
        engine, sink = self.builder.build_from_config(conv_id, config)
        # Read the topic from where storage ends (from its start for a new conversation),
        # never from "now": another process may already be publishing this conversation's
        # run, and a reader pinned at "now" would miss its first events for good.
        subscription, close_on_replace = await self.subscribers(
            conv_id, after_seq=transport_after_seq(start_seq)
        )
        conversation = Conversation(
            conv_id,
            config=config,
            signature=self.builder.signature(config),
            engine=engine,
            sink=sink,
            subscription=subscription,
            close_on_replace=close_on_replace,
            buffer_frames=self.buffer_frames,
            overrides=overrides,
            session_id=record.session_id if record else None,
            turns=turns,
            start_seq=start_seq,
            frame_listener=self._on_frames,
        )
        await conversation.stream.start()
        self._conversations[conv_id] = conversation
        self.builds += 1
        log.info(
            "conversation %s %s (profile %s)",
            conv_id,
            "restored" if record else "created",
            config.profile_slug,
        )
        return conversation

    def _on_frames(self, conv_id: str, frames: Sequence[Frame]) -> None:
        """Persist the frames; a deleted conversation's last frame is not stored (it would
        bring back what the delete removed) but makes this process forget it."""
        if any(frame.type == DELETED_FRAME for frame in frames):
            frames = [frame for frame in frames if frame.type != DELETED_FRAME]
            task = asyncio.create_task(self.forget(conv_id), name=f"forget {conv_id}")
            self._forgetting.add(task)
            task.add_done_callback(self._forgetting.discard)
        if self.store is not None and frames:
            self.store.append_frames(conv_id, frames)
            conversation = self._conversations.get(conv_id)
            if conversation is not None:
                superseded = conversation.stored_deltas.superseded(frames)
                if superseded:
                    due = time.monotonic() + self.prune_after
                    self._prunable.append((due, conv_id, superseded))

    def prune_stored_deltas(self, now: float | None = None) -> int:
        """Delete the stored deltas that are due (all of them with ``now=math.inf``); returns
        how many frames were deleted."""
        now = time.monotonic() if now is None else now
        deleted = 0
        while self._prunable and self._prunable[0][0] <= now:
            _, conv_id, seqs = self._prunable.popleft()
            if self.store is not None:
                self.store.delete_frames(conv_id, seqs)
                deleted += len(seqs)
        return deleted

    async def forget(self, conv_id: str) -> bool:
        """Drop a deleted conversation: its clients get what is queued for them (up to
        ``DELETED_DRAIN`` seconds) and are closed with ``DELETED_CODE``; nothing of it is
        persisted again. Idempotent; True if it was here."""
        conversation = self._conversations.get(conv_id)
        if conversation is None:
            return False
        async with self._lock(conv_id):
            if self._conversations.get(conv_id) is not conversation:
                return False
            await conversation.close_clients(
                DELETED_CODE, "conversation deleted", drain=DELETED_DRAIN
            )
            await self._remove(conv_id, persist=False)
        return True

    def persist(self, conversation: Conversation, *, title: str | None = None) -> None:
        """Queue the conversation's record (and any new turns) for the store; never waits."""
        if self.store is None:
            return
        now = time.time()
        previous = self._records.get(conversation.conv_id)
        record = ConversationRecord(
            conv_id=conversation.conv_id,
            session_id=conversation.session.session_id,
            profile_slug=conversation.profile_slug,
            overrides=conversation.overrides,
            signature=conversation.signature,
            title=(previous.title if previous and previous.title else (title or "")[:80]),
            created_at=previous.created_at if previous else now,
            updated_at=now,
            last_seq=conversation.last_seq,
            owner=self._owners.get(conversation.conv_id) or (previous.owner if previous else ""),
        )
        self._records[conversation.conv_id] = record
        self.store.save_conversation(record)
        for index in range(
            self._saved_turns.get(conversation.conv_id, 0), len(conversation.session.turns)
        ):
            self.store.save_turn(conversation.conv_id, index, conversation.session.turns[index])
        self._saved_turns[conversation.conv_id] = len(conversation.session.turns)

    def owner_of(self, conv_id: str) -> str:
        """The owner of a loaded conversation, as it was when it was loaded ('' if none)."""
        return self._owners.get(conv_id, "")

    def note_saved_turns(self, conv_id: str, count: int) -> None:
        """The store already holds the first ``count`` turns (another process wrote them)."""
        self._saved_turns[conv_id] = count

    async def _rebuild(
        self, conversation: Conversation, config: EngineConfig, overrides: dict[str, Any] | None
    ) -> None:
        if conversation.is_running:
            active = conversation.session.active
            raise ConversationBusyError(
                "a run is active; the engine cannot change until it ends",
                conv_id=conversation.conv_id,
                inference_id=active.inference_id if active else None,
                last_seq=conversation.last_seq,
            )
        engine, sink = self.builder.build_from_config(conversation.conv_id, config)
        old_engine = conversation.engine
        last_seq = conversation.stream.last_seq
        await conversation.release_stream()
        subscription, close_on_replace = await self.subscribers(
            conversation.conv_id, after_seq=transport_after_seq(last_seq)
        )
        conversation.replace_engine(
            config,
            self.builder.signature(config),
            overrides,
            engine,
            sink,
            subscription,
            close_on_replace,
        )
        await conversation.stream.start()
        await old_engine.aclose()
        self.builds += 1
        self.persist(conversation)
        log.info(
            "conversation %s rebuilt (profile %s, rebuild #%d)",
            conversation.conv_id,
            config.profile_slug,
            conversation.rebuilds,
        )

    # -- counters --------------------------------------------------------------------------

    def frames_sent_total(self) -> int:
        live = sum(c.pool.frames_sent for c in self._conversations.values())
        return self._retired["frames_sent"] + live

    def clients_dropped_total(self) -> int:
        live = sum(c.pool.clients_dropped for c in self._conversations.values())
        return self._retired["clients_dropped"] + live

    def rebuilds_total(self) -> int:
        return self._retired["rebuilds"] + sum(c.rebuilds for c in self._conversations.values())

    # -- eviction and shutdown -------------------------------------------------------------

    def is_idle(self, conversation: Conversation, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return (
            conversation.pool.count == 0
            and not conversation.is_running
            and conversation.queued == 0
            and now - conversation.last_activity >= self.evict_after
        )

    async def evict_idle(self, now: float | None = None) -> list[str]:
        """Evict every idle conversation now; returns their ids."""
        evicted = []
        for conv_id, conversation in list(self._conversations.items()):
            if not self.is_idle(conversation, now):
                continue
            async with self._lock(conv_id):
                if self._conversations.get(conv_id) is not conversation:
                    continue
                if not self.is_idle(conversation, now):
                    continue
                await self._remove(conv_id)
                self.evictions += 1
                evicted.append(conv_id)
        return evicted

    def is_durable(self, conversation: Conversation) -> bool:
        """Whether the conversation is (or is becoming) history: stored, or it has run here.

        A conversation that is only joined is not: it is never stored nor listed, and it goes
        away with its last client (``release_if_unused``), so joins of unknown ids cost
        memory only while connected.
        """
        return (
            conversation.conv_id in self._records
            or bool(conversation.session.turns)
            or conversation.is_running
            or conversation.queued > 0
        )

    def adopt(self, conversation: Conversation, record: ConversationRecord) -> None:
        """Make a conversation that was only joined here the stored one (another process
        started it): same session id, and it is durable from now on."""
        conversation.session.session_id = record.session_id
        self._records[conversation.conv_id] = record

    async def release_if_unused(self, conversation: Conversation) -> bool:
        """Drop a conversation that has no client left and is not durable; True if dropped."""
        conv_id = conversation.conv_id
        if conversation.pool.count or self.is_durable(conversation):
            return False
        async with self._lock(conv_id):
            if self._conversations.get(conv_id) is not conversation:
                return False
            if conversation.pool.count or self.is_durable(conversation):
                return False
            await self._remove(conv_id)
        return True

    async def _remove(self, conv_id: str, *, persist: bool = True) -> None:
        conversation = self._conversations.pop(conv_id)
        await conversation.close()
        if persist and self.is_durable(conversation):
            self.persist(conversation)
        self._records.pop(conv_id, None)
        self._owners.pop(conv_id, None)
        self._saved_turns.pop(conv_id, None)
        self._retired["frames_sent"] += conversation.pool.frames_sent
        self._retired["clients_dropped"] += conversation.pool.clients_dropped
        self._retired["rebuilds"] += conversation.rebuilds
        await self.subscribers.release(conv_id)
        self._locks.pop(conv_id, None)
        log.info("conversation %s closed", conv_id)

    def start(self, sweep_every: float | None = None) -> None:
        """Start the background eviction sweep (owned; stopped by ``close``)."""
        if self._sweeper is None:
            interval = sweep_every or max(1.0, min(60.0, self.evict_after / 4))
            self._sweeper = asyncio.create_task(self._sweep(interval), name="conversation-sweeper")

    async def _sweep(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.prune_stored_deltas()
                await self.evict_idle()
            except Exception:
                log.exception("eviction sweep failed")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        while self._forgetting:
            await asyncio.gather(*self._forgetting, return_exceptions=True)
        for conv_id in list(self._conversations):
            await self._remove(conv_id)
        self.prune_stored_deltas(math.inf)  # queued before the store's own close


def _as_dict(overrides: Overrides | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if overrides is None:
        return None
    if isinstance(overrides, Overrides):
        data = overrides.model_dump(mode="json", exclude_none=True)
    else:
        data = dict(overrides)
    return data or None
