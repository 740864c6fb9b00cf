"""Typed inference events and their JSON wire form.

The wire form is geppetto's: ``{"type": ..., "meta": {...}, <fields>}``, so Go agents and this
server can share one Redis stream. Empty optional fields are omitted, like Go's ``omitempty``.

Every event written here must decode into geppetto's Go structs. Their common part types the
top-level ``error`` as a Go ``error`` interface, which decodes nothing but ``null``: an error
message travels as ``error_string``, and ``error`` is never written (see ``Event``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def new_id() -> str:
    """A fresh random identifier (UUID4 string), used for messages, sessions, runs and turns."""
    return str(uuid.uuid4())


class Usage(BaseModel):
    """Token counts reported by a provider (names follow geppetto's)."""

    model_config = ConfigDict(extra="allow")

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def __add__(self, other: Usage) -> Usage:
        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=add(self.cached_tokens, other.cached_tokens),
            cache_creation_input_tokens=add(
                self.cache_creation_input_tokens, other.cache_creation_input_tokens
            ),
            cache_read_input_tokens=add(
                self.cache_read_input_tokens, other.cache_read_input_tokens
            ),
        )


class EventMeta(BaseModel):
    """Correlation ids and inference facts attached to every event."""

    model_config = ConfigDict(extra="allow")

    message_id: str = Field(default_factory=new_id)
    session_id: str | None = None
    inference_id: str | None = None
    turn_id: str | None = None
    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop_reason: str | None = None
    usage: Usage | None = None
    duration_ms: int | None = None
    extra: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_run_id(cls, data: Any) -> Any:
        # Older Go producers wrote the session id as ``run_id``.
        if isinstance(data, dict) and "run_id" in data:
            data = dict(data)
            run_id = data.pop("run_id")
            if not data.get("session_id") and run_id:
                data["session_id"] = run_id
        return data


class ToolCall(BaseModel):
    """A tool invocation requested by the model; ``input`` is the JSON text of the arguments."""

    id: str
    name: str
    input: str = ""

    def arguments(self) -> Any:
        """The decoded arguments (``{}`` for empty input); raises ``ValueError`` on bad JSON."""
        return json.loads(self.input) if self.input.strip() else {}


class ToolResult(BaseModel):
    """The outcome of a tool call, as text the model reads back; ``name`` is the tool's."""

    id: str
    result: str = ""
    name: str | None = None


class Event(BaseModel):
    """Base of every event; subclasses pin ``type`` and add their fields.

    A top-level ``error`` is never kept, because Go decodes only ``null`` there. Older entries
    of this server (and ``Event(error=...)`` callers) give the message as an ``error`` string:
    it is read as ``error_string``. Go writes its ``error`` as an object (usually ``{}``): an
    empty one is dropped, any other value is kept as ``error_detail``.
    """

    # Unknown fields from newer producers are kept, so relaying an event never loses data.
    model_config = ConfigDict(extra="allow")

    type: str
    meta: EventMeta = Field(default_factory=EventMeta)

    event_type: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _no_top_level_error(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "error" not in data:
            return data
        data = dict(data)
        error = data.pop("error")
        if isinstance(error, str) and not data.get("error_string"):
            data["error_string"] = error
        elif error not in (None, "", {}) and error != data.get("error_string"):
            data.setdefault("error_detail", error)
        return data

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class StartEvent(Event):
    type: Literal["start"] = "start"


class PartialEvent(Event):
    """A streamed text delta.

    ``completion`` (everything streamed so far) is geppetto's field, read when a producer
    sends it; webchat's engines leave it empty, so each delta costs its own size, not the
    size of the answer so far (the text so far is in ``final``).
    """

    type: Literal["partial"] = "partial"
    delta: str = ""
    completion: str = ""


class PartialThinkingEvent(Event):
    type: Literal["partial-thinking"] = "partial-thinking"
    delta: str = ""
    completion: str = ""


class FinalEvent(Event):
    type: Literal["final"] = "final"
    text: str = ""


class InterruptEvent(Event):
    """The inference was cancelled; ``text`` is what had been produced."""

    type: Literal["interrupt"] = "interrupt"
    text: str = ""


class ErrorEvent(Event):
    type: Literal["error"] = "error"
    error_string: str = ""


class ToolCallEvent(Event):
    type: Literal["tool-call"] = "tool-call"
    tool_call: ToolCall


class ToolCallExecuteEvent(Event):
    type: Literal["tool-call-execute"] = "tool-call-execute"
    tool_call: ToolCall


class ToolCallExecutionResultEvent(Event):
    type: Literal["tool-call-execution-result"] = "tool-call-execution-result"
    tool_result: ToolResult


class ToolResultEvent(Event):
    type: Literal["tool-result"] = "tool-result"
    tool_result: ToolResult


class LogEvent(Event):
    type: Literal["log"] = "log"
    level: str = "info"
    message: str = ""
    fields: dict[str, Any] | None = None


class InfoEvent(Event):
    type: Literal["info"] = "info"
    message: str = ""
    data: dict[str, Any] | None = None


class AgentModeSwitchEvent(Event):
    """Data carries ``from``, ``to`` and optionally ``analysis``."""

    type: Literal["agent-mode-switch"] = "agent-mode-switch"
    message: str = ""
    data: dict[str, Any] | None = None


class GenericEvent(Event):
    """Any event type this server does not know; every field is kept as-is."""


GEPPETTO_EVENTS: tuple[type[Event], ...] = (
    StartEvent,
    PartialEvent,
    PartialThinkingEvent,
    FinalEvent,
    InterruptEvent,
    ErrorEvent,
    ToolCallEvent,
    ToolCallExecuteEvent,
    ToolCallExecutionResultEvent,
    ToolResultEvent,
    LogEvent,
    InfoEvent,
    AgentModeSwitchEvent,
)
EVENT_TYPES: dict[str, type[Event]] = {}


def register_event_type(cls: type[Event]) -> type[Event]:
    """Make ``parse_event`` decode ``cls``'s ``type`` into ``cls`` (usable as a decorator)."""
    EVENT_TYPES[cls.model_fields["type"].default] = cls
    return cls


for _cls in GEPPETTO_EVENTS:
    register_event_type(_cls)


class EventParseError(ValueError):
    """The bytes are not an event: not JSON, not an object, or no ``type``."""


def parse_event(data: str | bytes | dict[str, Any]) -> Event:
    """Decode an event from its wire form.

    Known types become their typed class; unknown types become a ``GenericEvent`` so a newer
    producer never breaks this consumer. Known types with invalid fields raise
    ``EventParseError`` rather than silently losing data.
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise EventParseError(f"event is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EventParseError("event must be a JSON object")
    event_type = data.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise EventParseError("event has no 'type'")
    cls = EVENT_TYPES.get(event_type, GenericEvent)
    try:
        return cls.model_validate(data)
    except ValueError as exc:
        raise EventParseError(f"invalid {event_type!r} event: {exc}") from exc
