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
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from webchat.chat.coordination import (
    Coordination,
    PendingRun,
    StoredResponse,
    request_fingerprint,
)
from webchat.conversation import (
    Client,
    Connection,
    Conversation,
    ConversationManager,
    EngineBuilder,
    Frame,
    SubscriberFactory,
)
from webchat.conversation.pool import SERVICE_RESTART_CODE
from webchat.errors import (
    ConversationBusyError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    UnknownConversationError,
    WebchatError,
)
from webchat.events import EventMeta, RunFailedEvent, new_id
from webchat.profiles import BusyPolicy, Profile, ProfileRegistry
from webchat.sessions import InferenceHandle, SessionBusyError
from webchat.settings import ServerSettings
from webchat.storage import Store
from webchat.transport import TopicSink, Transport, topic_for

log = logging.getLogger("webchat.chat")

CONV_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
DRAIN_TIMEOUT = 5.0
"""Seconds a shutdown waits for the last frames of cancelled runs to reach the clients."""
LOCK_WAIT = 15.0
"""Seconds an interrupting request waits for the active run to let go (lease expiry bound)."""


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


class ChatService:
    def __init__(
        self,
        settings: ServerSettings,
        profiles: ProfileRegistry,
        transport: Transport,
        store: Store,
        builder: EngineBuilder,
        coordination: Coordination,
        *,
        shared_state: bool = False,
        manager: ConversationManager | None = None,
    ) -> None:
        """``manager``: the ConversationManager the composition root built (default: one
        built here from ``builder``, ``transport``, ``store`` and ``settings``)."""
        self.settings = settings
        self.profiles = profiles
        self.transport = transport
        self.store = store
        self.builder = builder
        if manager is None:  # not ``or``: an empty manager is falsy (it has a length)
            manager = ConversationManager(
                builder,
                SubscriberFactory(transport),
                evict_after=settings.evict_after,
                store=store,
            )
        self.manager = manager
        self.coordination = coordination
        self.shared_state = shared_state
        """True when other processes may run this deployment's conversations too."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained = False
        self.runs_started = 0

    async def start(self) -> None:
        await self.coordination.start(self._cancel_here, self._close_orphan)
        self.manager.start()

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Go down for a restart without cutting a stream short (idempotent).

        Queued runs of this process are dropped and its active runs cancelled; every
        connected client then receives every frame up to and including its run's terminal
        frame (within ``timeout`` seconds in all) and is closed with 1012, so it reconnects
        with ``since`` to whichever process serves next.
        """
        if self._drained:
            return
        self._drained = True
        await self.coordination.clear_queues()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conversations = self.manager.all()
        await asyncio.gather(*(c.cancel_run(timeout) for c in conversations))
        left = max(deadline - loop.time(), 0.1)
        await asyncio.gather(
            *(
                c.pool.close(SERVICE_RESTART_CODE, "server restarting", drain=left)
                for c in conversations
            )
        )

    async def close(self) -> None:
        """Drain (see ``drain``), then release every conversation and this process's locks."""
        await self.drain()
        await self.manager.close()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.coordination.close()

    # -- profiles --------------------------------------------------------------------------

    def profile(self, slug: str) -> Profile:
        return self.profiles.get(slug)

    def busy_policy(self, profile: Profile) -> BusyPolicy:
        return profile.busy_policy or self.settings.busy_policy

    # -- runs ------------------------------------------------------------------------------

    async def submit_once(
        self,
        profile_slug: str,
        request: RunRequest,
        idempotency_key: str | None,
        *,
        request_line: str,
    ) -> StoredResponse:
        """``submit`` as an HTTP response; a repeated idempotency key gets the first one.

        A key is bound to its request: ``request_line`` (method and path), the body and the
        profile the request resolves to. The same key with another request gets a 422, never
        the response of a request it did not make.
        """
        fingerprint = request_fingerprint(
            request_line, profile_slug, request.model_dump(mode="json")
        )
        if idempotency_key:
            try:
                first = await self.coordination.claim(idempotency_key, fingerprint)
            except IdempotencyKeyReusedError as exc:
                return StoredResponse(exc.status_code, {"error": exc.message})
            if first is not None:
                return first
        try:
            accepted = await self.submit(profile_slug, request)
            response = StoredResponse(
                200 if accepted.status == "running" else 202,
                accepted.model_dump(exclude_none=True),
            )
        except WebchatError as exc:
            response = StoredResponse(exc.status_code, {"error": exc.message, **exc.details})
        except Exception as exc:
            # Still settle the key: a retry with it must get an answer, not wait forever.
            log.exception("run request failed")
            response = StoredResponse(500, {"error": f"internal error: {type(exc).__name__}"})
        if idempotency_key:
            await self.coordination.settle(idempotency_key, fingerprint, response)
        return response

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
        inference_id = new_id()
        holder = await self.coordination.try_lock(conv_id, inference_id)
        if holder is not None and await self._ending(conv_id, holder):
            holder = await self.coordination.try_lock(conv_id, inference_id)
        if holder is not None:
            policy = self.busy_policy(profile)
            if policy == "reject":
                raise await self._busy(conv_id, holder)
            if policy == "enqueue":
                pending = PendingRun(profile.slug, request.prompt, request.overrides, inference_id)
                return await self._enqueue(conv_id, profile.slug, pending)
            await self._take_over(conv_id, holder, inference_id)
        try:
            return await self._start(
                conv_id, profile.slug, request.prompt, request.overrides, inference_id
            )
        except BaseException:
            await self.coordination.unlock(conv_id, inference_id)
            raise

    async def _start(
        self,
        conv_id: str,
        profile_slug: str,
        prompt: str,
        overrides: dict[str, Any] | None,
        inference_id: str,
    ) -> RunAccepted:
        """Start a run; the caller holds the conversation's run lock for ``inference_id``."""
        conversation = await self.manager.get_or_create(conv_id, profile_slug, overrides)
        if self.shared_state:
            await self._catch_up(conversation)
        try:
            handle = conversation.session.start_inference(prompt, inference_id=inference_id)
        except SessionBusyError:
            raise await self._busy(conv_id, inference_id) from None
        conversation.touch()
        self.runs_started += 1
        self.manager.persist(conversation, title=prompt)
        handle.add_done_callback(lambda h: self._spawn(self._finish(conversation, h)))
        return RunAccepted(
            conv_id=conv_id,
            session_id=handle.session_id,
            run_id=handle.session_id,
            inference_id=handle.inference_id,
            turn_id=handle.turn_id,
            status="running",
        )

    async def _ending(self, conv_id: str, holder: str) -> bool:
        """Whether ``holder`` had already ended and has now let go of the lock.

        A run's terminal frame reaches clients a moment before its lock is released (the
        turn is persisted in between), so a client answering at once must not get a 409.
        """
        conversation = self.manager.find(conv_id)
        if conversation is None or not conversation.has_ended(holder):
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOCK_WAIT):
                await self._released(conv_id, holder)
                return True
        return False

    async def _catch_up(self, conversation: Conversation) -> None:
        """Another process may have started this conversation, or run its last turns: take
        its identity (session id) and history from the store."""
        if not self.manager.is_durable(conversation):
            record = await self.store.get_conversation(conversation.conv_id)
            if record is not None:
                self.manager.adopt(conversation, record)
        stored = await self.store.load_turns(conversation.conv_id)
        if len(stored) > len(conversation.session.turns):
            conversation.session.turns = stored
            self.manager.note_saved_turns(conversation.conv_id, len(stored))

    async def _enqueue(self, conv_id: str, profile_slug: str, pending: PendingRun) -> RunAccepted:
        conversation = await self.manager.join(conv_id, profile_slug)
        position = await self.coordination.enqueue(conv_id, pending)
        conversation.queued = position
        return RunAccepted(
            conv_id=conv_id,
            session_id=conversation.session.session_id,
            run_id=conversation.session.session_id,
            inference_id=pending.inference_id,
            status="queued",
            queue_position=position,
        )

    async def _take_over(self, conv_id: str, holder: str, inference_id: str) -> None:
        """Cancel the active run (wherever it runs) and take the lock once it lets go."""
        await self.coordination.request_cancel(conv_id, holder)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT
        while (current := await self.coordination.try_lock(conv_id, inference_id)) is not None:
            if loop.time() > deadline:
                raise await self._busy(conv_id, current)
            await asyncio.sleep(0.02)

    async def _finish(self, conversation: Conversation, handle: InferenceHandle) -> None:
        """After a run: persist it, then hand the lock to the next queued run or release it."""
        conv_id = conversation.conv_id
        self.manager.persist(conversation)
        await conversation.wait_for_end_frame(handle.inference_id)
        await self.store.flush()  # the next run may start on another process
        try:
            await self._start_next(conv_id, held=handle.inference_id)
        except Exception:
            # Redis failed mid-way: never keep (and renew) a lock no run of ours uses.
            log.exception("could not hand over the run lock of %s; releasing it", conv_id)
            with contextlib.suppress(Exception):
                await self.coordination.unlock(conv_id, handle.inference_id)

    async def _start_next(self, conv_id: str, held: str | None) -> None:
        while (pending := await self.coordination.dequeue(conv_id)) is not None:
            if held is not None:
                if not await self.coordination.hand_over(conv_id, held, pending.inference_id):
                    await self.coordination.requeue(conv_id, pending)
                    return
            elif await self.coordination.try_lock(conv_id, pending.inference_id) is not None:
                await self.coordination.requeue(conv_id, pending)
                return
            held = pending.inference_id
            conversation = self.manager.find(conv_id)
            if conversation is not None:
                conversation.queued = await self.coordination.queue_length(conv_id)
            try:
                await self._start(
                    conv_id,
                    pending.profile_slug,
                    pending.prompt,
                    pending.overrides,
                    pending.inference_id,
                )
                return
            except Exception as exc:
                # The client was promised this inference id: end it visibly.
                log.warning("queued run %s could not start: %s", pending.inference_id, exc)
                await self._publish_failure(
                    conv_id, pending.inference_id, f"queued run could not start: {exc}"
                )
        if held is not None:
            await self.coordination.unlock(conv_id, held)

    async def _publish_failure(self, conv_id: str, inference_id: str, error: str) -> None:
        record = await self.store.get_conversation(conv_id)
        conversation = self.manager.find(conv_id)
        # The stored record names the session: a process that only had clients join may
        # hold the conversation under a provisional session id of its own.
        session_id = (
            record.session_id
            if record
            else conversation.session.session_id
            if conversation
            else None
        )
        meta = EventMeta(session_id=session_id, inference_id=inference_id)
        sink = TopicSink(self.transport, topic_for(conv_id))
        await sink.publish_event(RunFailedEvent(meta=meta, error=error))

    def _cancel_here(self, conv_id: str, inference_id: str) -> None:
        conversation = self.manager.find(conv_id)
        active = conversation.session.active if conversation else None
        if active is not None and active.inference_id == inference_id:
            active.cancel()

    async def _close_orphan(self, conv_id: str, inference_id: str) -> None:
        """The process running ``inference_id`` died: tell the clients, start what waits."""
        log.warning("closing run %s of %s: its server stopped", inference_id, conv_id)
        await self._publish_failure(
            conv_id, inference_id, "the server running this inference stopped"
        )
        self._spawn(self._start_next(conv_id, held=None))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self, conv_id: str) -> dict[str, Any]:
        """Cancel the active run wherever it runs; returns once it has let go (or 15 s)."""
        holder = await self.coordination.holder(conv_id)
        if holder is not None and await self._ending(conv_id, holder):
            holder = None  # it had ended already; only its lock was still being let go
        if holder is None:
            if self.manager.find(conv_id) is None:
                await self._require_stored(conv_id)
            return {"conv_id": conv_id, "cancelled": False, "inference_id": None}
        await self.coordination.request_cancel(conv_id, holder)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOCK_WAIT):
                await self._released(conv_id, holder)
        return {"conv_id": conv_id, "cancelled": True, "inference_id": holder}

    async def _released(self, conv_id: str, inference_id: str) -> None:
        """Return once ``inference_id`` no longer holds the lock (it may run on another
        process, so there is nothing local to wait on: poll)."""
        while await self.coordination.holder(conv_id) == inference_id:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    # -- clients ---------------------------------------------------------------------------

    async def connect(
        self,
        conn: Connection,
        conv_id: str,
        profile_slug: str,
        since: int | None,
        *,
        hello: Callable[[Conversation], str] | None = None,
    ) -> tuple[Conversation, Client]:
        """Join a conversation (creating it if absent, never rebuilding it).

        ``hello`` builds the greeting the client gets first (the route passes the wire
        protocol's ``ws.hello``); ``None``: no greeting.
        """
        conversation = await self.manager.join(conv_id, profile_slug)
        older = await self._older_frames(conversation, since)
        greeting = hello(conversation) if hello is not None else None
        client = conversation.attach(conn, since, older=older, hello=greeting)
        return conversation, client

    async def disconnect(self, conversation: Conversation, client: Client) -> None:
        """A client left; a conversation that was only joined goes with its last client."""
        conversation.detach(client)
        await self.manager.release_if_unused(conversation)

    async def _older_frames(self, conversation: Conversation, since: int | None) -> list[Frame]:
        if since is None or conversation.buffer.covers(since):
            return []
        rows = await self.store.frames_since(conversation.conv_id, since)
        boundary = conversation.buffer.complete_after
        return [Frame.from_json(seq, text) for seq, text in rows if seq <= boundary]

    # -- reading ---------------------------------------------------------------------------

    async def _require_stored(self, conv_id: str) -> None:
        """404 for a conversation neither in memory (checked by the caller) nor stored."""
        if await self.store.get_conversation(conv_id) is None:
            raise UnknownConversationError(f"unknown conversation {conv_id!r}")

    async def timeline(self, conv_id: str, since: int = 0) -> dict[str, Any]:
        conversation = self.manager.find(conv_id)
        if conversation is None:
            await self._require_stored(conv_id)
            rows = await self.store.frames_since(conv_id, since)
            frames = [json.loads(text)["event"] for _, text in rows]
            last = rows[-1][0] if rows else await self.store.last_seq(conv_id)
            return {"conv_id": conv_id, "frames": frames, "last_seq": max(last, since)}
        frames = conversation.backlog(since, await self._older_frames(conversation, since))
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
            await self._catch_up(conversation)  # another process may have run the last turns
        return {
            "conv_id": conv_id,
            "session_id": conversation.session.session_id,
            "profile": conversation.profile_slug,
            "signature": json.loads(conversation.signature),
            "rebuilds": conversation.rebuilds,
            "running": conversation.is_running,
            "queued": await self.coordination.queue_length(conv_id),
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
            if not self.manager.is_durable(conversation):
                continue  # only joined: not history until something runs in it
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

    async def _busy(self, conv_id: str, inference_id: str) -> ConversationBusyError:
        conversation = self.manager.find(conv_id)
        last_seq = conversation.last_seq if conversation else await self.store.last_seq(conv_id)
        return ConversationBusyError(
            "a run is already active in this conversation",
            conv_id=conv_id,
            inference_id=inference_id,
            last_seq=last_seq,
        )

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
