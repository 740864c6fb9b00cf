"""ChatService: the application core the HTTP and WebSocket routes call.

A thin facade over the jobs it is made of: the RunScheduler (``webchat.chat.scheduler``)
owns the run policy (one active run per conversation; ``reject``, ``enqueue`` or
``interrupt`` when one is already active), cancels runs and persists conversations as runs
start and end; ConversationReads (``webchat.chat.reads``) serves descriptions, listings, the
timeline and metrics from memory or storage. The facade itself keeps idempotency keys and
joins clients to conversations. It never composes engines: that is the EngineBuilder's job,
reached through the ConversationManager.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from webchat.auth.principal import LOCAL_USER, Principal
from webchat.chat.access import ConversationAccess
from webchat.chat.coordination import (
    Coordination,
    StoredResponse,
    request_fingerprint,
)
from webchat.chat.quotas import RunQuotas
from webchat.chat.reads import ConversationReads
from webchat.chat.scheduler import (
    CONV_ID_PATTERN,
    DRAIN_TIMEOUT,
    LOCK_WAIT,
    PromptTooLargeError,
    RunAccepted,
    RunRequest,
    RunScheduler,
)
from webchat.conversation import (
    Client,
    Connection,
    Conversation,
    ConversationManager,
    EngineBuilder,
)
from webchat.errors import IdempotencyKeyReusedError, WebchatError
from webchat.profiles import BusyPolicy, Profile, ProfileRegistry
from webchat.settings import ServerSettings
from webchat.storage import Store
from webchat.transport import Transport

__all__ = [
    "CONV_ID_PATTERN",
    "DRAIN_TIMEOUT",
    "LOCK_WAIT",
    "ChatService",
    "PromptTooLargeError",
    "RunAccepted",
    "RunRequest",
]

log = logging.getLogger("webchat.chat")


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
        manager: ConversationManager,
        access: ConversationAccess | None = None,
        quotas: RunQuotas | None = None,
        shared_state: bool = False,
    ) -> None:
        """``manager`` is the ConversationManager the composition root built; ``access``
        decides who may use which conversation (default: ownership without a cap);
        ``quotas`` limits each user's runs (default: none)."""
        self.settings = settings
        self.profiles = profiles
        self.transport = transport
        self.store = store
        self.builder = builder
        self.manager = manager
        self.coordination = coordination
        self.shared_state = shared_state
        """True when other processes may run this deployment's conversations too."""
        self.access = access or ConversationAccess(store, max_conversations=None)
        self.reads = ConversationReads(manager, store, coordination, shared_state=shared_state)
        self.scheduler = RunScheduler(
            settings,
            profiles,
            transport,
            store,
            builder,
            coordination,
            manager,
            self.reads,
            access=self.access,
            quotas=quotas,
            shared_state=shared_state,
        )

    @property
    def runs_started(self) -> int:
        return self.scheduler.runs_started

    async def start(self) -> None:
        await self.scheduler.start()
        self.manager.start()

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Go down for a restart without cutting a stream short (idempotent); see
        ``RunScheduler.drain``."""
        await self.scheduler.drain(timeout)

    async def close(self) -> None:
        """Drain (see ``drain``), then release every conversation and this process's locks."""
        await self.drain()
        await self.manager.close()
        await self.scheduler.wait_for_tasks()
        await self.coordination.close()

    # -- profiles --------------------------------------------------------------------------

    def profile(self, slug: str) -> Profile:
        return self.profiles.get(slug)

    def busy_policy(self, profile: Profile) -> BusyPolicy:
        return self.scheduler.busy_policy(profile)

    # -- runs ------------------------------------------------------------------------------

    async def submit_once(
        self,
        profile_slug: str,
        request: RunRequest,
        idempotency_key: str | None,
        *,
        request_line: str,
        user: Principal = LOCAL_USER,
    ) -> StoredResponse:
        """``submit`` as an HTTP response; a repeated idempotency key gets the first one.

        A key is bound to its request: ``request_line`` (method and path), the body and the
        profile the request resolves to. The same key with another request gets a 422, never
        the response of a request it did not make. Keys are per user: another user's
        identical key is another key.
        """
        fingerprint = request_fingerprint(
            request_line, profile_slug, request.model_dump(mode="json")
        )
        if idempotency_key:
            idempotency_key = f"{user.id}:{idempotency_key}"
            try:
                first = await self.coordination.claim(idempotency_key, fingerprint)
            except IdempotencyKeyReusedError as exc:
                return StoredResponse(exc.status_code, {"error": exc.message})
            if first is not None:
                return first
        try:
            accepted = await self.submit(profile_slug, request, user)
            response = StoredResponse(
                200 if accepted.status == "running" else 202,
                accepted.model_dump(exclude_none=True),
            )
        except WebchatError as exc:
            response = StoredResponse(
                exc.status_code, {"error": exc.message, **exc.details}, exc.headers
            )
        except Exception as exc:
            # Still settle the key: a retry with it must get an answer, not wait forever.
            log.exception("run request failed")
            response = StoredResponse(500, {"error": f"internal error: {type(exc).__name__}"})
        if idempotency_key:
            await self.coordination.settle(idempotency_key, fingerprint, response)
        return response

    async def submit(
        self, profile_slug: str, request: RunRequest, user: Principal = LOCAL_USER
    ) -> RunAccepted:
        """Start (or queue) a run; raises a ``WebchatError`` with the right status otherwise."""
        return await self.scheduler.submit(profile_slug, request, user)

    async def cancel(self, conv_id: str, user: Principal = LOCAL_USER) -> dict[str, Any]:
        """Cancel the active run wherever it runs; returns once it has let go (or 15 s)."""
        return await self.scheduler.cancel(conv_id, user)

    # -- clients ---------------------------------------------------------------------------

    async def connect(
        self,
        conn: Connection,
        conv_id: str,
        profile_slug: str,
        since: int | None,
        *,
        hello: Callable[[Conversation], str] | None = None,
        user: Principal = LOCAL_USER,
    ) -> tuple[Conversation, Client]:
        """Join a conversation of ``user``'s (creating it, and making it theirs, if absent;
        never rebuilding it). Admins may join anyone's to watch.

        ``hello`` builds the greeting the client gets first (the route passes the wire
        protocol's ``ws.hello``); ``None``: no greeting.
        """
        await self.access.claim(conv_id, user, to_write=False)
        conversation = await self.manager.join(conv_id, profile_slug)
        older = await self.reads.older_frames(conversation, since)
        greeting = hello(conversation) if hello is not None else None
        client = conversation.attach(conn, since, older=older, hello=greeting)
        return conversation, client

    async def disconnect(self, conversation: Conversation, client: Client) -> None:
        """A client left; a conversation that was only joined goes with its last client."""
        conversation.detach(client)
        await self.manager.release_if_unused(conversation)

    # -- reading ---------------------------------------------------------------------------

    async def timeline(
        self,
        conv_id: str,
        since: int = 0,
        user: Principal = LOCAL_USER,
        *,
        branch: str | None = None,
    ) -> dict[str, Any]:
        """Frames after ``since``; with ``branch`` (a turn id), only that branch's."""
        await self.access.check_read(conv_id, user)
        return await self.reads.timeline(conv_id, since, branch)

    async def describe(
        self, conv_id: str, user: Principal = LOCAL_USER, *, branch: str | None = None
    ) -> dict[str, Any]:
        """The conversation as it is: from memory when loaded, else from the store (a read
        never loads or creates a conversation); with ``branch`` (a turn id), only the turns
        of the branch ending there."""
        await self.access.check_read(conv_id, user)
        return await self.reads.describe(conv_id, branch)

    async def list_conversations(
        self, limit: int = 100, user: Principal = LOCAL_USER
    ) -> list[dict[str, Any]]:
        """The user's conversations, newest first (an admin's list holds everyone's)."""
        owner = None if user.is_admin else user.id
        return await self.reads.list_conversations(limit, owner=owner)

    # -- metrics ---------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        return self.reads.metrics(runs_started=self.scheduler.runs_started)
