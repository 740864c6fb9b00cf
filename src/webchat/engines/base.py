"""The engine interface and the context an inference runs in.

An engine takes a turn, streams events to the sinks of the run, and returns the turn with the
blocks the model produced appended. Middlewares and the tool loop wrap engines through the same
``Handler`` shape, so a composed chain is itself just a handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from webchat.events import Event, EventMeta, EventSink
from webchat.turns import Turn


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """A tool as offered to a model: name, description and JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


SnapshotPhase = Literal["pre_inference", "post_inference", "post_tools"]
SnapshotHook = Callable[[Turn, SnapshotPhase], Awaitable[None]]
"""Called by the tool loop with the turn as it stands at each phase of a run."""


@dataclass(frozen=True, slots=True)
class RunContext:
    """Where a run publishes, the ids that correlate its events, and the tools it offers."""

    sinks: tuple[EventSink, ...] = ()
    session_id: str | None = None
    inference_id: str | None = None
    turn_id: str | None = None
    tools: tuple[ToolDefinition, ...] = ()
    snapshot_hook: SnapshotHook | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self, **fields: Any) -> EventMeta:
        """Event metadata carrying this run's correlation ids, plus ``fields``."""
        return EventMeta(
            session_id=self.session_id,
            inference_id=self.inference_id,
            turn_id=self.turn_id,
            **fields,
        )

    async def publish(self, event: Event) -> None:
        for sink in self.sinks:
            await sink.publish_event(event)

    def with_tools(self, tools: Sequence[ToolDefinition]) -> RunContext:
        return replace(self, tools=tuple(tools))


Handler = Callable[[Turn, RunContext], Awaitable[Turn]]
"""Anything that runs a turn: an engine's ``run_inference``, a middleware chain, the tool loop."""


class Engine(Protocol):
    async def run_inference(self, turn: Turn, ctx: RunContext) -> Turn:
        """Run one model call on ``turn``; append the produced blocks and return the turn."""
        ...


class EngineError(RuntimeError):
    """A provider call failed. The message is meant for a human; it never holds secrets."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code
        self.retryable = retryable


DETAIL_LIMIT = 200
"""Characters of a provider's own explanation kept in an ``EngineError`` message."""


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` replaced: provider messages may echo the request's key."""
    return text.replace(secret, "[redacted]") if secret else text


def short_detail(text: str, secret: str | None, limit: int = DETAIL_LIMIT) -> str:
    """One line of at most ``limit`` characters, scrubbed *before* the cut so a cut key
    cannot leave a prefix of itself behind."""
    text = " ".join(scrub(text, secret).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
