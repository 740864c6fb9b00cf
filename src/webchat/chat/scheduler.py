"""RunScheduler: one active run per conversation, and what a run request gets otherwise.

The busy policies: ``reject`` (409), ``enqueue`` (queued, started when the active run ends)
and ``interrupt`` (the active run is cancelled, then the new one starts). The scheduler takes
and hands over the conversation's run lock (through the Coordination, so it holds across
processes), persists conversations as runs start and end, cancels runs wherever they run,
closes the runs of processes that died, and owns the background tasks all this spawns.

A run's attachments are checked on submit (ids of this conversation, kinds its profile
takes) and their bytes loaded from the store when it starts, with those of every attachment
earlier on its branch, so the engine sees the files of the whole history it is given
(``webchat.chat.attachments``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from webchat.auth.principal import LOCAL_USER, Principal
from webchat.chat.access import ConversationAccess
from webchat.chat.attachments import (
    AttachmentService,
    attachment_ref,
    history_ids,
)
from webchat.chat.coordination import Coordination, PendingRun
from webchat.chat.quotas import RunQuotas
from webchat.chat.reads import ConversationReads
from webchat.conversation import Conversation, ConversationManager, EngineBuilder
from webchat.conversation.pool import SERVICE_RESTART_CODE
from webchat.errors import ConversationBusyError, InvalidRequestError, WebchatError
from webchat.events import EventMeta, RunFailedEvent, new_id
from webchat.observability import tracing
from webchat.observability.runs import RunObservation
from webchat.profiles import BusyPolicy, Profile, ProfileRegistry
from webchat.sessions import InferenceHandle, SessionBusyError, UnknownTurnError
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


def unknown_parent(conv_id: str, parent_turn_id: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"unknown parent_turn_id {parent_turn_id!r}: conversation {conv_id!r} has no such turn",
        parent_turn_id=parent_turn_id,
    )


class RunRequest(BaseModel):
    """Body of ``POST /chat``."""

    prompt: str = Field(min_length=1)
    conv_id: str | None = None
    overrides: dict[str, Any] | None = None
    parent_turn_id: str | None = Field(
        default=None,
        max_length=256,
        description="The turn the run continues: absent or null, the tip of the current "
        "branch (the most recently created turn); a turn id, a branch from that turn (a "
        "regenerate sends the parent of the answer's turn, an edit the parent of the edited "
        "message's turn); an empty string, a new root with no history. An unknown id is a "
        "400.",
    )
    attachments: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Ids of files uploaded to this conversation (POST "
        "/api/conversations/{conv_id}/attachments) that this message carries, at most "
        "attachment_max_files (10 by default; 413 beyond). An id the conversation does not have "
        "is a 400; a kind the profile does not take, a 403. The user turn keeps them (its "
        "user block's payload.attachments).",
    )


class RunAccepted(BaseModel):
    """What a run request gets back: the ids to follow the run by."""

    conv_id: str
    session_id: str
    run_id: str = Field(description="legacy alias of session_id")
    inference_id: str
    turn_id: str | None = None
    parent_turn_id: str | None = Field(
        default=None,
        description="Running: the turn this run continues (absent: it starts a root). "
        "Queued: the parent as requested (absent: the tip when the run starts; an empty "
        "string: a new root).",
    )
    status: Literal["running", "queued"]
    queue_position: int | None = None


class RunScheduler:
    def __init__(
        self,
        settings: ServerSettings,
        profiles: ProfileRegistry,
        transport: Transport,
        store: Store,
        builder: EngineBuilder,
        coordination: Coordination,
        manager: ConversationManager,
        reads: ConversationReads,
        *,
        access: ConversationAccess,
        quotas: RunQuotas | None = None,
        shared_state: bool = False,
    ) -> None:
        """``quotas``: per-user run limits (None: unlimited, as for ``--auth none``)."""
        self.settings = settings
        self.profiles = profiles
        self.transport = transport
        self.store = store
        self.builder = builder
        self.coordination = coordination
        self.manager = manager
        self.reads = reads
        self.access = access
        self.attachments = AttachmentService(
            store,
            access,
            max_bytes=settings.attachment_max_bytes,
            max_files=settings.attachment_max_files,
        )
        self.quotas = quotas
        self.shared_state = shared_state
        """True when other processes may run this deployment's conversations too."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained = False
        self.runs_started = 0

    async def start(self) -> None:
        await self.coordination.start(self._cancel_here, self._close_orphan)

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
                c.close_clients(SERVICE_RESTART_CODE, "server restarting", drain=left)
                for c in conversations
            )
        )

    async def wait_for_tasks(self) -> None:
        """Return once every background task this scheduler spawned has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def busy_policy(self, profile: Profile) -> BusyPolicy:
        return profile.busy_policy or self.settings.busy_policy

    # -- runs ------------------------------------------------------------------------------

    async def submit(
        self, profile_slug: str, request: RunRequest, user: Principal = LOCAL_USER
    ) -> RunAccepted:
        """Start (or queue) a run by ``user`` in a conversation of theirs (a new id becomes
        theirs); raises a ``WebchatError`` with the right status otherwise."""
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
        profile = self.profiles.get(profile_slug)
        # Validate the request before any policy decision, so a bad one never waits in line.
        self.builder.build_config(profile.slug, request.overrides)
        await self.access.claim(conv_id, user, to_write=True)
        await self._check_parent(conv_id, request.parent_turn_id)
        await self.attachments.for_run(conv_id, profile, request.attachments)
        inference_id = new_id()
        if self.quotas is not None:
            await self.quotas.acquire(user.id, inference_id)
        try:
            return await self._admit(conv_id, profile, request, inference_id)
        except BaseException:
            await self._release_slot(conv_id, inference_id, user.id)
            raise

    async def _admit(
        self, conv_id: str, profile: Profile, request: RunRequest, inference_id: str
    ) -> RunAccepted:
        holder = await self.coordination.try_lock(conv_id, inference_id)
        if holder is not None and await self._ending(conv_id, holder):
            holder = await self.coordination.try_lock(conv_id, inference_id)
        if holder is not None:
            policy = self.busy_policy(profile)
            if policy == "reject":
                raise await self._busy(conv_id, holder)
            if policy == "enqueue":
                pending = PendingRun(
                    profile.slug,
                    request.prompt,
                    request.overrides,
                    inference_id,
                    parent_turn_id=request.parent_turn_id,
                    attachments=list(request.attachments),
                    trace_context=tracing.inject(),  # whoever runs it continues this trace
                )
                return await self._enqueue(conv_id, profile.slug, pending)
            await self._take_over(conv_id, holder, inference_id)
        try:
            return await self._start(
                conv_id,
                profile.slug,
                request.prompt,
                request.overrides,
                inference_id,
                parent_turn_id=request.parent_turn_id,
                attachments=request.attachments,
            )
        except BaseException:
            await self.coordination.unlock(conv_id, inference_id)
            raise

    async def _release_slot(self, conv_id: str, inference_id: str, owner: str | None) -> None:
        """Give back the quota slot of a run that ended (or never started). The run's user
        is the conversation's owner: nobody else may start runs in it."""
        if self.quotas is None:
            return
        if owner is None:
            owner = await self.access.owner(conv_id)
        if owner is not None:
            try:
                await self.quotas.release(owner, inference_id)
            except Exception:  # Redis away: the slot's lease frees it later
                log.warning("could not release the run slot of %s", inference_id)

    async def _start(
        self,
        conv_id: str,
        profile_slug: str,
        prompt: str,
        overrides: dict[str, Any] | None,
        inference_id: str,
        *,
        parent_turn_id: str | None = None,
        attachments: Sequence[str] = (),
        trace_context: Mapping[str, str] | None = None,
    ) -> RunAccepted:
        """Start a run; the caller holds the conversation's run lock for ``inference_id``.
        ``trace_context``: the trace of the request that queued it, if it was queued."""
        conversation = await self.manager.get_or_create(conv_id, profile_slug, overrides)
        if self.shared_state:
            await self.reads.catch_up(conversation)
        try:
            refs, data = await self._attachments_for(conversation, parent_turn_id, attachments)
            # ``Conversation.start_run`` is this plus the attachments, which it does not take.
            conversation.touch()
            run = RunObservation(
                conv_id, inference_id, profile_slug, prompt, trace_context=trace_context
            )
            with run.activate():
                handle = conversation.session.start_inference(
                    prompt,
                    inference_id=inference_id,
                    parent_turn_id=parent_turn_id,
                    attachments=refs,
                    attachment_data=data,
                )
        except SessionBusyError:
            raise await self._busy(conv_id, inference_id) from None
        except UnknownTurnError as exc:
            # Checked on submit already; only a parent that was then still running elsewhere
            # (and so could not be checked) gets here, when that run left no turn behind.
            raise unknown_parent(conv_id, exc.turn_id) from None
        self.runs_started += 1
        self.manager.persist(conversation, title=prompt)
        handle.add_done_callback(lambda h: self._spawn(self._finish(conversation, h, run)))
        return RunAccepted(
            conv_id=conv_id,
            session_id=handle.session_id,
            run_id=handle.session_id,
            inference_id=handle.inference_id,
            turn_id=handle.turn_id,
            parent_turn_id=handle.parent_turn_id,
            status="running",
        )

    async def _attachments_for(
        self, conversation: Conversation, parent_turn_id: str | None, ids: Sequence[str]
    ) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
        """The references the new user block keeps, and the bytes of every attachment the
        run's transcript holds (its branch's and its own), read from the store now: the
        run may have been submitted to another process, or queued a while.

        Nothing else runs in the conversation meanwhile (the caller holds its run lock), so
        the branch resolved here is the one the run starts on. Raises ``UnknownTurnError``.
        """
        parent = conversation.session.parent_for(parent_turn_id)
        wanted = list(dict.fromkeys(ids))
        records = []
        if wanted:
            stored = {r.id: r for r in await self.store.list_attachments(conversation.conv_id)}
            records = [stored[i] for i in wanted if i in stored]
        needed = [*history_ids(parent), *(r.id for r in records)]
        data = await self.attachments.load_data(conversation.conv_id, needed) if needed else {}
        return [attachment_ref(r) for r in records], data

    async def _check_parent(self, conv_id: str, parent_turn_id: str | None) -> None:
        """Reject a parent the conversation does not have, before any lock or quota is taken
        (so a bad request never waits in line, nor costs a run slot).

        Memory answers for a loaded conversation, else the store. A turn still being made
        by a run cannot be checked against what is stored (in another process it is not
        even in memory): while a run is active, a parent this process cannot find is let
        through and checked again when the run starts, once that turn exists.
        """
        if not parent_turn_id:  # None: the tip; "": a new root. Both always exist.
            return
        conversation = self.manager.find(conv_id)
        if conversation is not None:
            active = conversation.session.active
            if any(t.id == parent_turn_id for t in conversation.turns) or (
                active is not None and active.turn_id == parent_turn_id
            ):
                return
        if conversation is None or self.shared_state:
            stored = await self.store.load_turns(conv_id)
            if any(t.id == parent_turn_id for t in stored):
                return
        if self.shared_state and await self.coordination.holder(conv_id) is not None:
            return
        raise unknown_parent(conv_id, parent_turn_id)

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

    async def _enqueue(self, conv_id: str, profile_slug: str, pending: PendingRun) -> RunAccepted:
        conversation = await self.manager.join(conv_id, profile_slug)
        position = await self.coordination.enqueue(conv_id, pending)
        conversation.queued = position
        return RunAccepted(
            conv_id=conv_id,
            session_id=conversation.session_id,
            run_id=conversation.session_id,
            inference_id=pending.inference_id,
            parent_turn_id=pending.parent_turn_id,
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

    async def _finish(
        self, conversation: Conversation, handle: InferenceHandle, run: RunObservation
    ) -> None:
        """After a run: persist it, then hand the lock to the next queued run or release it."""
        conv_id = conversation.conv_id
        await run.end(handle)
        self.manager.persist(conversation)
        await self._release_slot(conv_id, handle.inference_id, None)
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
                    parent_turn_id=pending.parent_turn_id,
                    attachments=pending.attachments,
                    trace_context=pending.trace_context,
                )
                return
            except Exception as exc:
                # The client was promised this inference id: end it visibly.
                log.warning("queued run %s could not start: %s", pending.inference_id, exc)
                await self._release_slot(conv_id, pending.inference_id, None)
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
            record.session_id if record else conversation.session_id if conversation else None
        )
        meta = EventMeta(session_id=session_id, inference_id=inference_id)
        sink = TopicSink(self.transport, topic_for(conv_id))
        await sink.publish_event(RunFailedEvent(meta=meta, error=error))

    def _cancel_here(self, conv_id: str, inference_id: str) -> None:
        conversation = self.manager.find(conv_id)
        if conversation is not None:
            conversation.cancel_inference(inference_id)

    async def _close_orphan(self, conv_id: str, inference_id: str) -> None:
        """The process running ``inference_id`` died: tell the clients, start what waits."""
        log.warning("closing run %s of %s: its server stopped", inference_id, conv_id)
        await self._release_slot(conv_id, inference_id, None)
        await self._publish_failure(
            conv_id, inference_id, "the server running this inference stopped"
        )
        self._spawn(self._start_next(conv_id, held=None))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self, conv_id: str, user: Principal = LOCAL_USER) -> dict[str, Any]:
        """Cancel the active run wherever it runs; returns once it has let go (or 15 s)."""
        await self.access.check_act(conv_id, user)
        holder = await self.coordination.holder(conv_id)
        if holder is not None and await self._ending(conv_id, holder):
            holder = None  # it had ended already; only its lock was still being let go
        if holder is None:
            if self.manager.find(conv_id) is None:
                await self.reads.require_stored(conv_id)
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

    async def _busy(self, conv_id: str, inference_id: str) -> ConversationBusyError:
        conversation = self.manager.find(conv_id)
        last_seq = conversation.last_seq if conversation else await self.store.last_seq(conv_id)
        return ConversationBusyError(
            "a run is already active in this conversation",
            conv_id=conv_id,
            inference_id=inference_id,
            last_seq=last_seq,
        )
