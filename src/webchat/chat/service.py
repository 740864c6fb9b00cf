"""ChatService: the application core the HTTP and WebSocket routes call.

It owns the run policy: one active run per conversation, and what a run request gets when one
is already active (``reject``: 409; ``enqueue``: queued, started when the active run ends;
``interrupt``: the active run is cancelled, then the new one starts). It also keeps
idempotency keys, persists conversations as runs start and end, and serves the timeline from
memory or storage. It never composes engines: that is the EngineBuilder's job, reached
through the ConversationManager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from webchat.conversation import (
    Client,
    Connection,
    Conversation,
    ConversationManager,
    EngineBuilder,
    Frame,
    SubscriberFactory,
)
from webchat.errors import (
    ConversationBusyError,
    InvalidRequestError,
    UnknownConversationError,
    WebchatError,
)
from webchat.events import EventMeta, RunFailedEvent, new_id
from webchat.profiles import BusyPolicy, Profile, ProfileRegistry
from webchat.sessions import InferenceHandle, SessionBusyError
from webchat.settings import ServerSettings
from webchat.storage import Store
from webchat.transport import Transport

log = logging.getLogger("webchat.chat")

CONV_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
IDEMPOTENCY_KEYS_KEPT = 10_000


class PromptTooLargeError(WebchatError):
    status_code = 413


class RunRequest(BaseModel):
    """Body of ``POST /chat``."""

    prompt: str = Field(min_length=1)
    conv_id: str | None = None
    overrides: dict[str, Any] | None = None


class RunAccepted(BaseModel):
    """What a run request gets back: the ids to follow the run by."""

    conv_id: str
    session_id: str
    run_id: str = Field(description="legacy alias of session_id")
    inference_id: str
    turn_id: str | None = None
    status: Literal["running", "queued"]
    queue_position: int | None = None


@dataclass(slots=True)
class _PendingRun:
    profile_slug: str
    prompt: str
    overrides: dict[str, Any] | None
    inference_id: str


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: dict[str, Any]


def hello_text(conversation: Conversation) -> str:
    """The ``ws.hello`` greeting: where the client joined, and what engine answers."""
    return json.dumps(
        {
            "sem": True,
            "event": {
                "type": "ws.hello",
                "conv_id": conversation.conv_id,
                "session_id": conversation.session.session_id,
                "profile": conversation.profile_slug,
                "last_seq": conversation.last_seq,
                "running": conversation.is_running,
                "engine": conversation.config.step_settings.api_type,
                "model": conversation.config.step_settings.resolved_model(),
            },
        },
        separators=(",", ":"),
    )


PONG_TEXT = json.dumps({"sem": True, "event": {"type": "ws.pong"}}, separators=(",", ":"))


class ChatService:
    def __init__(
        self,
        settings: ServerSettings,
        profiles: ProfileRegistry,
        transport: Transport,
        store: Store,
        builder: EngineBuilder,
    ) -> None:
        self.settings = settings
        self.profiles = profiles
        self.transport = transport
        self.store = store
        self.builder = builder
        self.manager = ConversationManager(
            builder,
            SubscriberFactory(transport),
            evict_after=settings.evict_after,
            store=store,
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._queues: dict[str, deque[_PendingRun]] = {}
        self._idempotency: OrderedDict[str, StoredResponse] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.runs_started = 0

    async def start(self) -> None:
        self.manager.start()

    async def close(self) -> None:
        """Drop queued runs, cancel active ones (each ends with ``run.cancelled``), flush."""
        for queue in self._queues.values():
            queue.clear()
        await self.manager.close()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- profiles --------------------------------------------------------------------------

    def profile(self, slug: str) -> Profile:
        return self.profiles.get(slug)

    def busy_policy(self, profile: Profile) -> BusyPolicy:
        return profile.busy_policy or self.settings.busy_policy

    # -- runs ------------------------------------------------------------------------------

    def remembered(self, idempotency_key: str | None) -> StoredResponse | None:
        if not idempotency_key:
            return None
        return self._idempotency.get(idempotency_key)

    def remember(self, idempotency_key: str | None, response: StoredResponse) -> None:
        if not idempotency_key:
            return
        self._idempotency[idempotency_key] = response
        while len(self._idempotency) > IDEMPOTENCY_KEYS_KEPT:
            self._idempotency.popitem(last=False)

    async def submit(self, profile_slug: str, request: RunRequest) -> RunAccepted:
        """Start (or queue) a run; raises a ``WebchatError`` with the right status otherwise."""
        if len(request.prompt) > self.settings.max_prompt_chars:
            raise PromptTooLargeError(
                f"prompt is {len(request.prompt)} characters; "
                f"the limit is {self.settings.max_prompt_chars}"
            )
        conv_id = request.conv_id or new_id()
        if not CONV_ID_PATTERN.match(conv_id):
            raise InvalidRequestError(
                "conv_id must be 1-128 characters of letters, digits and _ . : -"
            )
        profile = self.profile(profile_slug)
        # Validate the request before any policy decision, so a bad one never waits in line.
        self.builder.build_config(profile.slug, request.overrides)
        async with self._lock(conv_id):
            conversation = self.manager.find(conv_id)
            if conversation is not None and (conversation.is_running or conversation.queued):
                policy = self.busy_policy(profile)
                if policy == "reject":
                    raise _busy(conversation)
                if policy == "enqueue":
                    return self._enqueue(conversation, profile.slug, request)
                await self._interrupt(conversation)
            return await self._start(conv_id, profile.slug, request.prompt, request.overrides)

    def _lock(self, conv_id: str) -> asyncio.Lock:
        return self._locks.setdefault(conv_id, asyncio.Lock())

    async def _start(
        self,
        conv_id: str,
        profile_slug: str,
        prompt: str,
        overrides: dict[str, Any] | None,
        inference_id: str | None = None,
    ) -> RunAccepted:
        conversation = await self.manager.get_or_create(conv_id, profile_slug, overrides)
        try:
            handle = conversation.session.start_inference(prompt, inference_id=inference_id)
        except SessionBusyError:
            raise _busy(conversation) from None
        conversation.touch()
        self.runs_started += 1
        self.manager.persist(conversation, title=prompt)
        handle.add_done_callback(lambda h: self._run_ended(conversation, h))
        return RunAccepted(
            conv_id=conv_id,
            session_id=handle.session_id,
            run_id=handle.session_id,
            inference_id=handle.inference_id,
            turn_id=handle.turn_id,
            status="running",
        )

    def _enqueue(
        self, conversation: Conversation, profile_slug: str, request: RunRequest
    ) -> RunAccepted:
        queue = self._queues.setdefault(conversation.conv_id, deque())
        pending = _PendingRun(profile_slug, request.prompt, request.overrides, new_id())
        queue.append(pending)
        conversation.queued = len(queue)
        return RunAccepted(
            conv_id=conversation.conv_id,
            session_id=conversation.session.session_id,
            run_id=conversation.session.session_id,
            inference_id=pending.inference_id,
            status="queued",
            queue_position=len(queue),
        )

    async def _interrupt(self, conversation: Conversation) -> None:
        active = conversation.session.active
        if active is not None:
            active.cancel()
            with contextlib.suppress(Exception):
                await active.wait()

    def _run_ended(self, conversation: Conversation, handle: InferenceHandle) -> None:
        self.manager.persist(conversation)
        if self._queues.get(conversation.conv_id):
            self._spawn(self._start_next(conversation.conv_id))

    async def _start_next(self, conv_id: str) -> None:
        async with self._lock(conv_id):
            queue = self._queues.get(conv_id)
            conversation = self.manager.find(conv_id)
            if not queue or conversation is None or conversation.is_running:
                return
            pending = queue.popleft()
            conversation.queued = len(queue)
            try:
                await self._start(
                    conv_id,
                    pending.profile_slug,
                    pending.prompt,
                    pending.overrides,
                    inference_id=pending.inference_id,
                )
            except Exception as exc:
                # The client was promised this inference id: end it visibly.
                log.warning("queued run %s could not start: %s", pending.inference_id, exc)
                meta = EventMeta(
                    session_id=conversation.session.session_id,
                    inference_id=pending.inference_id,
                )
                await conversation.sink.publish_event(
                    RunFailedEvent(meta=meta, error=f"queued run could not start: {exc}")
                )
                if queue:
                    self._spawn(self._start_next(conv_id))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self, conv_id: str) -> dict[str, Any]:
        conversation = self.manager.find(conv_id)
        if conversation is None:
            if await self.store.get_conversation(conv_id) is None:
                raise UnknownConversationError(f"unknown conversation {conv_id!r}")
            return {"conv_id": conv_id, "cancelled": False, "inference_id": None}
        active = conversation.session.active
        if active is None:
            return {"conv_id": conv_id, "cancelled": False, "inference_id": None}
        active.cancel()
        with contextlib.suppress(Exception):
            await active.wait()
        return {"conv_id": conv_id, "cancelled": True, "inference_id": active.inference_id}

    # -- clients ---------------------------------------------------------------------------

    async def connect(
        self, conn: Connection, conv_id: str, profile_slug: str, since: int | None
    ) -> tuple[Conversation, Client]:
        """Join a conversation (creating it if absent, never rebuilding it)."""
        conversation = await self.manager.join(conv_id, profile_slug)
        older = await self._older_frames(conversation, since)
        client = conversation.attach(conn, since, older=older, hello=hello_text(conversation))
        return conversation, client

    async def _older_frames(self, conversation: Conversation, since: int | None) -> list[Frame]:
        if since is None or conversation.buffer.covers(since):
            return []
        rows = await self.store.frames_since(conversation.conv_id, since)
        first_buffered = conversation.buffer.first_seq
        return [
            Frame.from_json(seq, text)
            for seq, text in rows
            if first_buffered is None or seq < first_buffered
        ]

    # -- reading ---------------------------------------------------------------------------

    async def timeline(self, conv_id: str, since: int = 0) -> dict[str, Any]:
        conversation = self.manager.find(conv_id)
        if conversation is None:
            if await self.store.get_conversation(conv_id) is None:
                raise UnknownConversationError(f"unknown conversation {conv_id!r}")
            rows = await self.store.frames_since(conv_id, since)
            frames = [json.loads(text)["event"] for _, text in rows]
            last = rows[-1][0] if rows else await self.store.last_seq(conv_id)
            return {"conv_id": conv_id, "frames": frames, "last_seq": max(last, since)}
        older = await self._older_frames(conversation, since)
        newer = conversation.buffer.since(older[-1].seq if older else since)
        return {
            "conv_id": conv_id,
            "frames": [f.event() for f in (*older, *newer)],
            "last_seq": conversation.last_seq,
        }

    async def describe(self, conv_id: str) -> dict[str, Any]:
        conversation = self.manager.find(conv_id)
        if conversation is None:
            if await self.store.get_conversation(conv_id) is None:
                raise UnknownConversationError(f"unknown conversation {conv_id!r}")
            conversation = await self.manager.join(conv_id, self.profiles.default_slug)
        return {
            "conv_id": conv_id,
            "session_id": conversation.session.session_id,
            "profile": conversation.profile_slug,
            "signature": json.loads(conversation.signature),
            "rebuilds": conversation.rebuilds,
            "running": conversation.is_running,
            "queued": conversation.queued,
            "last_seq": conversation.last_seq,
            "clients": conversation.pool.count,
            "turns": [
                t.model_dump(mode="json", exclude_none=True) for t in conversation.session.turns
            ],
        }

    async def list_conversations(self, limit: int = 100) -> list[dict[str, Any]]:
        listed: dict[str, dict[str, Any]] = {}
        for record in await self.store.list_conversations(limit=limit):
            listed[record.conv_id] = {
                "conv_id": record.conv_id,
                "profile": record.profile_slug,
                "title": record.title,
                "updated_at": record.updated_at,
                "running": False,
            }
        for conversation in self.manager.all():
            entry = listed.setdefault(
                conversation.conv_id,
                {
                    "conv_id": conversation.conv_id,
                    "profile": conversation.profile_slug,
                    "title": "",
                    "updated_at": time.time(),
                },
            )
            entry["running"] = conversation.is_running
        return sorted(listed.values(), key=lambda e: e["updated_at"], reverse=True)[:limit]

    # -- metrics ---------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        conversations = self.manager.all()
        return {
            "conversations": len(conversations),
            "active_runs": sum(1 for c in conversations if c.is_running),
            "connected_clients": sum(c.pool.count for c in conversations),
            "frames_sent_total": self.manager.frames_sent_total(),
            "dropped_slow_clients_total": self.manager.clients_dropped_total(),
            "rebuilds_total": self.manager.rebuilds_total(),
            "runs_started_total": self.runs_started,
        }


def _busy(conversation: Conversation) -> ConversationBusyError:
    active = conversation.session.active
    return ConversationBusyError(
        "a run is already active in this conversation",
        conv_id=conversation.conv_id,
        inference_id=active.inference_id if active else None,
        last_seq=conversation.last_seq,
    )
