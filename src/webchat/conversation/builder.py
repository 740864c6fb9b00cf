"""EngineBuilder: the one place that turns a profile and overrides into a running engine.

``build_config`` resolves a request (profile slug + overrides) into an ``EngineConfig`` and
rejects what the profile does not allow; ``build_from_config`` composes the provider engine,
the middleware chain, the tool loop and the event sink for one conversation. Route handlers
and the conversation manager never compose anything themselves.

Middleware order on every model call: tool-result reorder (outermost), the configured
middlewares in listed order, then the system prompt (innermost).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from webchat.agents import AgentBinding, create_agent_engine, is_import_path, load_tool
from webchat.conversation.config import EngineConfig, fingerprint
from webchat.engines import Engine, RunContext, StepSettings, create_engine
from webchat.errors import InvalidRequestError, OverridesNotAllowedError, WebchatError
from webchat.events import EventSink
from webchat.middleware import (
    Middleware,
    compose,
    system_prompt_middleware,
    tool_result_reorder_middleware,
    turn_logging_middleware,
)
from webchat.profiles import MiddlewareUse, Overrides, Profile, ProfileRegistry
from webchat.tools import Tool, ToolLoop, ToolLoopSettings, ToolRegistry, calculator_tool
from webchat.tools.mcp import McpPool, McpToolRegistry
from webchat.transport import TopicSink, Transport, topic_for
from webchat.turns import Turn

MiddlewareFactory = Callable[[dict[str, Any]], Middleware]
ToolFactory = Callable[[], Tool]
SinkWrapper = Callable[[str, EventSink], EventSink]
"""Wraps a conversation's base sink (conv_id, sink) -> sink: filters, extractors, fan-out."""


class ProviderKeys(BaseModel, frozen=True):
    """Keys from the server's settings, used when a profile names a provider without a key."""

    openai: SecretStr | None = None
    anthropic: SecretStr | None = None

    def for_api(self, api_type: str) -> SecretStr | None:
        return {"openai": self.openai, "anthropic": self.anthropic}.get(api_type)


@dataclass(frozen=True, slots=True)
class _MiddlewareEntry:
    factory: MiddlewareFactory
    config_model: type[BaseModel] | None


class ComposedEngine:
    """A conversation's engine: provider + middlewares + tool loop, built from one config."""

    def __init__(self, config: EngineConfig, provider: Engine, loop: ToolLoop) -> None:
        self.config = config
        self.provider = provider
        self.loop = loop

    async def run_inference(self, turn: Turn, ctx: RunContext) -> Turn:
        if isinstance(self.loop.registry, McpToolRegistry):
            await self.loop.registry.prepare()  # MCP tools: opened on first use, then listed
        return await self.loop.run(turn, ctx)

    async def aclose(self) -> None:
        close = getattr(self.provider, "aclose", None)
        if close is not None:
            await close()


class EngineBuilder:
    """Builds configs and engines, and signs configs.

    ``fingerprint_key`` keys the fingerprints of secrets in every signature this builder
    makes (see ``webchat.conversation.config``). Processes that must agree on signatures,
    i.e. every process of a deployment, must be given the same key: the composition root
    derives it from the deployment's secret. Left out, a random key is made for this builder
    alone: fine for tests and for a single process without a configured secret, where only
    that process compares its signatures. (Records it stores then carry fingerprints a later
    process cannot reproduce; stored signatures are only shown, never compared.)
    """

    def __init__(
        self,
        profiles: ProfileRegistry,
        transport: Transport,
        *,
        provider_keys: ProviderKeys | None = None,
        sink_wrappers: tuple[SinkWrapper, ...] = (),
        mcp_pool: McpPool | None = None,
        fingerprint_key: bytes | None = None,
    ) -> None:
        if fingerprint_key is not None and not fingerprint_key:
            raise ValueError("fingerprint_key must not be empty (pass None for a random key)")
        self._fingerprint_key = (
            fingerprint_key if fingerprint_key is not None else secrets.token_bytes(32)
        )
        self.profiles = profiles
        self.mcp = mcp_pool or McpPool()
        """MCP connections shared by conversations; whoever passes the pool closes it."""
        self.transport = transport
        self.provider_keys = provider_keys or ProviderKeys()
        self.sink_wrappers = sink_wrappers
        self._middlewares: dict[str, _MiddlewareEntry] = {}
        self._tools: dict[str, ToolFactory] = {}
        self.register_middleware("logging", lambda config: turn_logging_middleware())
        self.register_tool("calculator", calculator_tool)

    # -- registries an application extends -------------------------------------------------

    def register_middleware(
        self,
        name: str,
        factory: MiddlewareFactory,
        *,
        config_model: type[BaseModel] | None = None,
    ) -> None:
        """Make middleware ``name`` usable in profiles and overrides; ``config_model``
        validates its config at ``build_config`` time, so bad config is a 400, not a crash."""
        self._middlewares[name] = _MiddlewareEntry(factory, config_model)

    def register_tool(self, name: str, factory: ToolFactory) -> None:
        """Make tool ``name`` usable in profiles; ``factory`` builds it for a conversation."""
        self._tools[name] = factory

    def add_sink_wrapper(self, wrapper: SinkWrapper) -> None:
        """Wrap every conversation's event sink (outermost last), e.g. with an extractor."""
        self.sink_wrappers = (*self.sink_wrappers, wrapper)

    def check_profiles(self) -> None:
        """Build every profile's config once; raises ``ValueError`` naming the first profile
        whose tools or middlewares this builder does not know."""
        for profile in self.profiles.all():
            try:
                self.build_config(profile.slug)
            except WebchatError as exc:
                raise ValueError(f"profile {profile.slug!r}: {exc.message}") from None

    @property
    def middleware_names(self) -> list[str]:
        return sorted(self._middlewares)

    @property
    def tool_names(self) -> list[str]:
        return sorted(self._tools)

    # -- composition -----------------------------------------------------------------------

    def signature(self, config: EngineConfig) -> str:
        """``config``'s signature with secrets fingerprinted under this builder's key: what
        the manager compares to decide whether a conversation's engine must be rebuilt, and
        what the API shows as a conversation's configuration."""
        return config.signature(self._fingerprint_key)

    def fingerprint(self, secret: str) -> str:
        """``secret``'s fingerprint as this builder's signatures show it, so a caller can
        recognise a secret in a signature without being handed the key."""
        return fingerprint(secret, self._fingerprint_key)

    def build_config(
        self, profile_slug: str, overrides: Overrides | Mapping[str, Any] | None = None
    ) -> EngineConfig:
        """The config a request asks for; raises 404/403/400-class errors on bad input."""
        profile = self.profiles.get(profile_slug)
        parsed = self._parse_overrides(overrides)
        if not parsed.is_empty() and not profile.allow_overrides:
            raise OverridesNotAllowedError(
                f"profile {profile.slug!r} does not allow overrides", profile=profile.slug
            )
        middlewares = profile.middlewares if parsed.middlewares is None else parsed.middlewares
        tools = profile.tools if parsed.tools is None else parsed.tools
        config = EngineConfig(
            profile_slug=profile.slug,
            system_prompt=(
                profile.default_prompt if parsed.system_prompt is None else parsed.system_prompt
            ),
            middlewares=tuple(self._check_middleware(use) for use in middlewares),
            tools=tuple(self._check_tools(tools)),
            step_settings=self._step_settings(profile, parsed.step_settings),
            tool_loop=profile.tool_loop,
            mcp_servers=tuple(profile.mcp_servers),
            agent=profile.agent,
        )
        self.signature(config)  # fail here, as a bad request, if anything is not canonical JSON
        return config

    def build_from_config(
        self, conv_id: str, config: EngineConfig
    ) -> tuple[ComposedEngine, EventSink]:
        static = [self._make_tool(entry) for entry in config.tools]
        tools = (
            self.mcp.registry(static, config.mcp_servers)
            if config.mcp_servers
            else ToolRegistry(static)
        )
        provider = (
            self._make_agent(conv_id, config, tools)
            if config.agent
            else create_engine(config.step_settings)
        )
        chain = compose(
            provider.run_inference,
            [
                tool_result_reorder_middleware,
                *(self._make_middleware(use) for use in config.middlewares),
                system_prompt_middleware(config.system_prompt),
            ],
        )
        loop = ToolLoop(
            chain,
            tools,
            ToolLoopSettings(
                max_iterations=config.tool_loop.max_iterations,
                tool_timeout=config.tool_loop.tool_timeout,
                max_parallel=config.tool_loop.max_parallel,
                # MCP tools come and go with their server's listing; the registry holds only
                # what the config allows, so it is the allow-list then.
                allowed_tools=None if config.mcp_servers else frozenset(t.name for t in static),
            ),
        )
        sink: EventSink = TopicSink(self.transport, topic_for(conv_id))
        for wrap in self.sink_wrappers:
            sink = wrap(conv_id, sink)
        return ComposedEngine(config, provider, loop), sink

    # -- validation helpers ----------------------------------------------------------------

    @staticmethod
    def _parse_overrides(overrides: Overrides | Mapping[str, Any] | None) -> Overrides:
        if overrides is None:
            return Overrides()
        if isinstance(overrides, Overrides):
            return overrides
        try:
            return Overrides.model_validate(overrides)
        except ValidationError as exc:
            raise InvalidRequestError(f"invalid overrides: {_first_problem(exc)}") from None

    def _check_middleware(self, use: MiddlewareUse) -> MiddlewareUse:
        entry = self._middlewares.get(use.name)
        if entry is None:
            raise InvalidRequestError(
                f"unknown middleware {use.name!r}; known: {', '.join(self.middleware_names)}"
            )
        if entry.config_model is not None:
            try:
                entry.config_model.model_validate(use.config)
            except ValidationError as exc:
                raise InvalidRequestError(
                    f"invalid config for middleware {use.name!r}: {_first_problem(exc)}"
                ) from None
        return use

    def _check_tools(self, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in self._tools and not is_import_path(n)]
        if unknown:
            raise InvalidRequestError(
                f"unknown tool(s) {unknown}; known: {', '.join(self.tool_names)}"
            )
        # Import paths only as the server's profiles declare them (imported and checked at
        # startup): a request must never make the server import code.
        declared = {t for p in self.profiles.all() for t in p.tools if is_import_path(t)}
        undeclared = [n for n in names if is_import_path(n) and n not in declared]
        if undeclared:
            raise InvalidRequestError(
                f"tool(s) {undeclared} are not declared by any profile; requests may name "
                f"registered tools ({', '.join(self.tool_names)}) and the profiles' import paths"
            )
        entries = list(dict.fromkeys(names))  # keep order, drop repeats
        tool_names = [self._make_tool(e).name if is_import_path(e) else e for e in entries]
        repeated = sorted({n for n in tool_names if tool_names.count(n) > 1})
        if repeated:
            raise InvalidRequestError(f"more than one tool is named {repeated}")
        return entries

    def _step_settings(self, profile: Profile, changes: dict[str, Any] | None) -> StepSettings:
        settings = profile.step_settings
        if changes:
            forbidden = sorted(set(changes) - set(profile.overridable_settings))
            if forbidden:
                raise InvalidRequestError(
                    f"profile {profile.slug!r} does not let requests change {forbidden}; "
                    f"allowed: {profile.overridable_settings}"
                )
            try:
                settings = StepSettings.model_validate({**settings.model_dump(), **changes})
            except ValidationError as exc:
                raise InvalidRequestError(
                    f"invalid step_settings override: {_first_problem(exc)}"
                ) from None
        if settings.api_key is None:
            key = self.provider_keys.for_api(settings.api_type)
            if key is not None:
                settings = settings.model_copy(update={"api_key": key})
        return settings

    def _make_middleware(self, use: MiddlewareUse) -> Middleware:
        return self._middlewares[use.name].factory(dict(use.config))

    def _make_tool(self, entry: str) -> Tool:
        """A registered tool by name, or a function a profile names by import path."""
        factory = self._tools.get(entry)
        return factory() if factory is not None else load_tool(entry)

    def _make_agent(self, conv_id: str, config: EngineConfig, tools: ToolRegistry) -> Engine:
        """The profile's Python agent, in the provider engine's place (middlewares, the tool
        loop and the sink still wrap it), with the same tools the tool loop holds."""
        assert config.agent is not None
        return create_agent_engine(
            AgentBinding(
                path=config.agent,
                conv_id=conv_id,
                profile=config.profile_slug,
                settings=config.step_settings,
                tools=tools,
                tool_timeout=config.tool_loop.tool_timeout,
            )
        )


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])
