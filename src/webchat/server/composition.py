"""The composition root: the one place that turns ``ServerSettings`` into running parts.

``compose`` builds the transport, the store, the run coordination, the MCP pool, the
EngineBuilder, the ConversationManager and the ChatService, and is the only code that knows
whether a deployment runs in one process ("memory") or shares its state in Redis ("redis").
``Components.aclose`` closes what it built, in reverse order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from webchat.auth.gate import Gatekeeper, auth_mode
from webchat.auth.revocations import LocalRevocations, RedisRevocations
from webchat.auth.secret import deployment_secret
from webchat.chat.access import ConversationAccess
from webchat.chat.coordination import Coordination, LocalCoordination, RedisCoordination
from webchat.chat.quotas import LocalRunQuotas, RedisRunQuotas, RunQuotas
from webchat.chat.service import ChatService
from webchat.conversation import (
    ConversationManager,
    EngineBuilder,
    ProviderKeys,
    SubscriberFactory,
)
from webchat.conversation.config import derive_fingerprint_key
from webchat.profiles import ProfileRegistry
from webchat.settings import ServerSettings
from webchat.storage import SQLiteStore, Store
from webchat.storage.postgres import PostgresStore, is_postgres_url
from webchat.storage.redis_store import RedisStore
from webchat.tools.mcp import McpPool
from webchat.transport import Transport, create_transport

__all__ = [
    "BuilderSetup",
    "Components",
    "compose",
    "load_profiles",
    "make_coordination",
    "make_quotas",
    "make_revocations",
    "make_store",
    "make_transport",
    "shares_state",
]

BuilderSetup = Callable[[EngineBuilder], None]
"""Application code that extends the one EngineBuilder: ``register_tool``,
``register_middleware``, ``add_sink_wrapper``."""


def load_profiles(settings: ServerSettings) -> ProfileRegistry:
    if settings.profiles is not None:
        return ProfileRegistry.from_file(settings.profiles)
    return ProfileRegistry.builtin(
        openai_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
        anthropic_key=(
            settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        ),
    )


def shares_state(settings: ServerSettings) -> bool:
    """Whether other processes may serve this deployment's conversations too (Redis)."""
    return settings.transport == "redis"


def make_transport(settings: ServerSettings) -> Transport:
    if shares_state(settings):
        return create_transport("redis", redis_url=settings.redis_url, maxlen=settings.redis_maxlen)
    return create_transport("memory")


def make_store(settings: ServerSettings) -> Store:
    """A ``postgresql://`` ``--db`` is the store of record, of one process or of all (Redis
    then carries only streams, locks and queues, so flushing it loses no history); else
    processes sharing a Redis transport share their state there too."""
    if is_postgres_url(settings.db):
        return PostgresStore(settings.db)
    if shares_state(settings):
        return RedisStore(settings.redis_url)
    return SQLiteStore(settings.db)


def make_coordination(settings: ServerSettings) -> Coordination:
    if shares_state(settings):
        return RedisCoordination(settings.redis_url)
    return LocalCoordination()


def make_revocations(settings: ServerSettings) -> LocalRevocations | RedisRevocations:
    if shares_state(settings):
        return RedisRevocations(settings.redis_url)
    return LocalRevocations()


def make_quotas(settings: ServerSettings) -> RunQuotas | None:
    """Per-user run quotas; none for ``--auth none``, whose one implicit user is everyone."""
    if auth_mode(settings) == "none":
        return None
    max_active, per_minute = settings.max_active_runs, settings.runs_per_minute
    if shares_state(settings):
        return RedisRunQuotas(settings.redis_url, max_active=max_active, per_minute=per_minute)
    return LocalRunQuotas(max_active=max_active, per_minute=per_minute)


@dataclass
class Components:
    """Everything ``compose`` built, in build order."""

    settings: ServerSettings
    profiles: ProfileRegistry
    transport: Transport
    store: Store
    gate: Gatekeeper
    revocations: LocalRevocations | RedisRevocations
    quotas: RunQuotas | None
    mcp: McpPool
    builder: EngineBuilder
    coordination: Coordination
    manager: ConversationManager
    service: ChatService

    async def aclose(self) -> None:
        """Close what ``compose`` built, in reverse order (the service closes the manager
        and the coordination it was given)."""
        await self.service.close()
        await self.gate.aclose()
        await self.mcp.aclose()  # after the runs that could call a tool are gone
        if self.quotas is not None:
            await self.quotas.close()
        await self.revocations.close()
        await self.store.close()
        await self.transport.close()


async def compose(
    settings: ServerSettings,
    profiles: ProfileRegistry | None = None,
    *,
    setup: BuilderSetup | None = None,
) -> Components:
    """Build (and open the store of) every part ``settings`` asks for. ``setup`` extends the
    EngineBuilder before the profiles are checked against it. The service is not started:
    the caller starts it, and calls ``Components.aclose`` when done."""
    profiles = profiles if profiles is not None else load_profiles(settings)
    transport = make_transport(settings)
    store = make_store(settings)
    await store.open()
    secret = await deployment_secret(settings, shared=shares_state(settings))
    revocations = make_revocations(settings)
    gate = Gatekeeper(settings, secret, revocations)
    quotas = make_quotas(settings)
    mcp = McpPool()  # MCP connections: opened on first use, closed by ``aclose``
    builder = EngineBuilder(
        profiles,
        transport,
        provider_keys=ProviderKeys(
            openai=settings.openai_api_key, anthropic=settings.anthropic_api_key
        ),
        mcp_pool=mcp,
        # Keyed by the deployment's secret: every process signs alike, and a fingerprint
        # never lets anyone confirm a guessed key.
        fingerprint_key=derive_fingerprint_key(secret),
    )
    if setup is not None:
        setup(builder)
    builder.check_profiles()  # a profile naming a tool no one registered: fail now
    coordination = make_coordination(settings)
    manager = ConversationManager(
        builder,
        SubscriberFactory(transport),
        evict_after=settings.evict_after,
        store=store,
    )
    service = ChatService(
        settings,
        profiles,
        transport,
        store,
        builder,
        coordination,
        shared_state=shares_state(settings),
        manager=manager,
        access=ConversationAccess(
            store,
            max_conversations=None if gate.mode == "none" else settings.max_conversations,
        ),
        quotas=quotas,
    )
    return Components(
        settings=settings,
        profiles=profiles,
        transport=transport,
        store=store,
        gate=gate,
        revocations=revocations,
        quotas=quotas,
        mcp=mcp,
        builder=builder,
        coordination=coordination,
        manager=manager,
        service=service,
    )
