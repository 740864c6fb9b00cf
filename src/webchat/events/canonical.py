"""geppetto's canonical event vocabulary: run, provider-call, segment and tool lifecycles.

Current Go producers publish these instead of (or beside) the legacy ``start`` / ``partial`` /
``final`` / ``tool-call`` set. Each one carries, besides ``meta``, a ``correlation`` object of
explicit ids. Go tool-execution events come with an empty ``meta`` and put the run's ids only
in ``correlation``, so parsing copies them onto ``meta`` where ``meta`` lacks them
(``correlation.run_id`` is geppetto's inference id): frames and routing read ``meta`` alone.

Field defaults follow the Go struct tags: a field Go always writes defaults to ``""`` and is
always written here too; a field Go omits when empty (``omitempty``) defaults to ``None`` and
is omitted likewise. The one exception is the accumulated text of a delta (``text``,
``arguments``): it defaults to ``None`` so that a producer which does not send it can be told
apart from an empty accumulation.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from webchat.events.models import Event, Usage


class Correlation(BaseModel):
    """The explicit ids a canonical event is joined on (all optional)."""

    model_config = ConfigDict(extra="allow")

    session_id: str | None = None
    run_id: str | None = None
    turn_id: str | None = None
    provider_call_id: str | None = None
    segment_id: str | None = None
    tool_call_id: str | None = None


class CorrelatedEvent(Event):
    """Base of the canonical events: an event plus its ``correlation``."""

    correlation: Correlation = Field(default_factory=Correlation)

    @model_validator(mode="after")
    def _meta_from_correlation(self) -> Self:
        corr, meta = self.correlation, self.meta
        update: dict[str, Any] = {}
        if corr.session_id and not meta.session_id:
            update["session_id"] = corr.session_id
        if corr.run_id and not meta.inference_id:
            update["inference_id"] = corr.run_id
        if corr.turn_id and not meta.turn_id:
            update["turn_id"] = corr.turn_id
        if update:
            # A copy: the caller's meta object may be shared by other events.
            self.meta = meta.model_copy(update=update)
        return self


# Run lifecycle.


class CanonicalRunStartedEvent(CorrelatedEvent):
    type: Literal["run-started"] = "run-started"
    prompt: str | None = None


class CanonicalRunFinishedEvent(CorrelatedEvent):
    type: Literal["run-finished"] = "run-finished"
    status: str | None = None


class CanonicalRunStoppedEvent(CorrelatedEvent):
    """The run was stopped before it finished (geppetto's cancel)."""

    type: Literal["run-stopped"] = "run-stopped"
    reason: str | None = None


class CanonicalRunFailedEvent(CorrelatedEvent):
    type: Literal["run-failed"] = "run-failed"
    error_string: str | None = None


# Provider calls: one request to a model API; not part of the visible transcript.


class ProviderCallStartedEvent(CorrelatedEvent):
    type: Literal["provider-call-started"] = "provider-call-started"


class ProviderCallMetadataUpdatedEvent(CorrelatedEvent):
    type: Literal["provider-call-metadata-updated"] = "provider-call-metadata-updated"
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage | None = None


class ProviderCallFinishedEvent(CorrelatedEvent):
    type: Literal["provider-call-finished"] = "provider-call-finished"
    stop_reason: str | None = None
    finish_class: str | None = None
    usage: Usage | None = None
    duration_ms: int | None = None
    has_tool_calls: bool | None = None


# Transcript text segments.


class TextSegmentStartedEvent(CorrelatedEvent):
    type: Literal["text-segment-started"] = "text-segment-started"
    role: str | None = None


class TextDeltaEvent(CorrelatedEvent):
    """A streamed text delta; ``text`` is the segment's text so far (when the producer sends it)."""

    type: Literal["text-delta"] = "text-delta"
    delta: str = ""
    text: str | None = None
    sequence: int | None = None


class TextSegmentFinishedEvent(CorrelatedEvent):
    type: Literal["text-segment-finished"] = "text-segment-finished"
    text: str = ""
    finish_reason: str | None = None


# Reasoning ("thinking") segments.


class ReasoningSegmentStartedEvent(CorrelatedEvent):
    type: Literal["reasoning-segment-started"] = "reasoning-segment-started"
    source: str | None = None


class ReasoningDeltaEvent(CorrelatedEvent):
    type: Literal["reasoning-delta"] = "reasoning-delta"
    delta: str = ""
    text: str | None = None
    sequence: int | None = None
    source: str | None = None


class ReasoningSegmentFinishedEvent(CorrelatedEvent):
    type: Literal["reasoning-segment-finished"] = "reasoning-segment-finished"
    text: str | None = None
    finish_reason: str | None = None
    source: str | None = None


# Tool calls: requested by the model, then executed.


class ToolCallStartedEvent(CorrelatedEvent):
    """The model began writing a tool call; its arguments follow as deltas."""

    type: Literal["tool-call-started"] = "tool-call-started"
    tool_call_id: str = ""
    tool_name: str | None = None


class ToolCallArgumentsDeltaEvent(CorrelatedEvent):
    """A streamed piece of a tool call's JSON arguments; ``arguments`` is all of them so far."""

    type: Literal["tool-call-arguments-delta"] = "tool-call-arguments-delta"
    tool_call_id: str = ""
    delta: str = ""
    arguments: str | None = None
    sequence: int | None = None


class ToolCallRequestedEvent(CorrelatedEvent):
    """The complete tool call; ``input`` is the JSON text of its arguments."""

    type: Literal["tool-call-requested"] = "tool-call-requested"
    tool_call_id: str = ""
    tool_name: str = ""
    input: str = ""


class ToolExecutionStartedEvent(CorrelatedEvent):
    type: Literal["tool-execution-started"] = "tool-execution-started"
    tool_call_id: str = ""
    tool_name: str | None = None
    input: str | None = None


class ToolResultReadyEvent(CorrelatedEvent):
    """A tool's result text; ``status`` is e.g. ``success`` or ``error``."""

    type: Literal["tool-result-ready"] = "tool-result-ready"
    tool_call_id: str = ""
    tool_name: str | None = None
    result: str = ""
    status: str | None = None


class ToolCallFinishedEvent(CorrelatedEvent):
    type: Literal["tool-call-finished"] = "tool-call-finished"
    tool_call_id: str = ""
    tool_name: str | None = None
    status: str | None = None


CANONICAL_TOOL_EVENTS = (  # no annotation: isinstance narrows to the six classes
    ToolCallStartedEvent,
    ToolCallArgumentsDeltaEvent,
    ToolCallRequestedEvent,
    ToolExecutionStartedEvent,
    ToolResultReadyEvent,
    ToolCallFinishedEvent,
)
"""The tool lifecycle of a call: each carries ``tool_call_id``."""

CANONICAL_EVENTS: tuple[type[Event], ...] = (
    CanonicalRunStartedEvent,
    CanonicalRunFinishedEvent,
    CanonicalRunStoppedEvent,
    CanonicalRunFailedEvent,
    ProviderCallStartedEvent,
    ProviderCallMetadataUpdatedEvent,
    ProviderCallFinishedEvent,
    TextSegmentStartedEvent,
    TextDeltaEvent,
    TextSegmentFinishedEvent,
    ReasoningSegmentStartedEvent,
    ReasoningDeltaEvent,
    ReasoningSegmentFinishedEvent,
    *CANONICAL_TOOL_EVENTS,
)
