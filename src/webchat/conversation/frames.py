"""UI frames: what a browser receives for each event of a conversation.

A frame is ``{"sem": true, "event": {"type", "id", "seq", "conv_id", "session_id",
"inference_id", "turn_id", ...fields}}``. Its JSON text is built once, when the frame is made,
because the same frame goes to every client of the conversation and to the timeline.

Frame sequence numbers
----------------------
Clients resume with ``since=<frame seq>``, so every frame needs its own ``seq``, and every
server process must give the same frame the same ``seq`` without talking to the others. The
transport already gives each message such a number (in memory: 1, 2, 3...; Redis: ``ms * 1000
+ n`` from the stream entry id), so a frame's seq is derived from its message's::

    frame seq = message seq * FRAMES_PER_EVENT + slot        (FRAMES_PER_EVENT = 4)

One event yields at most four frames. ``slot`` is fixed per frame *kind* within an event
rather than being the frame's index in the list: ``final`` gives ``llm.thinking.final`` at
slot 0 (only if this process saw the thinking) and ``llm.final`` at slot 1. So a process that
joined mid-message and lacks the translator state for an optional frame leaves its slot empty
instead of shifting the next frame onto a seq that means something else elsewhere. Seqs are
therefore sparse but strictly increasing, and equal seqs always denote the same frame.

``message_seq_of`` inverts the mapping; ``transport_after_seq`` turns a client's ``since``
into the transport's ``after_seq``. With Redis seqs (``ms * 1000 + n``), frame seqs stay below
2**53, the largest integer a browser's JSON numbers hold exactly, until the year 2041.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import InitVar, dataclass, field
from typing import Any, TypeVar

import orjson

from webchat.events import (
    AgentModeSwitchEvent,
    CanonicalRunFailedEvent,
    CanonicalRunFinishedEvent,
    CanonicalRunStartedEvent,
    CanonicalRunStoppedEvent,
    ConversationDeletedEvent,
    ErrorEvent,
    Event,
    FinalEvent,
    InfoEvent,
    InterruptEvent,
    LogEvent,
    PartialEvent,
    PartialThinkingEvent,
    ProviderCallFinishedEvent,
    ReasoningDeltaEvent,
    ReasoningSegmentFinishedEvent,
    ReasoningSegmentStartedEvent,
    RunCancelledEvent,
    RunFailedEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StartEvent,
    TextDeltaEvent,
    TextSegmentFinishedEvent,
    TextSegmentStartedEvent,
    ToolCall,
    ToolCallArgumentsDeltaEvent,
    ToolCallEvent,
    ToolCallExecuteEvent,
    ToolCallExecutionResultEvent,
    ToolCallRequestedEvent,
    ToolCallStartedEvent,
    ToolExecutionStartedEvent,
    ToolResultEvent,
    ToolResultReadyEvent,
    Usage,
    UserMessageEvent,
)
from webchat.events.canonical import CANONICAL_TOOL_EVENTS

logger = logging.getLogger(__name__)

FRAMES_PER_EVENT = 4

SHORT_DELTAS = frozenset({"llm.delta", "llm.thinking.delta", "tool.delta"})
"""Frame types sent short (without the envelope) when they carry a ``delta`` of a stream whose
opening frame went out before them. A token is then its text, its seq and its stream's id."""

DELETED_FRAME = "conversation.deleted"
"""The last frame of a deleted conversation (its clients are closed after it)."""

# The fallback for what orjson refuses (an integer beyond 64 bits): one encoder for every
# call, because ``json.dumps`` with options builds a new encoder each time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def encode_json(value: Any) -> str:
    """Compact JSON text of ``value``, as every frame is sent and stored.

    orjson, because a frame is encoded once per event on the hot path and orjson does it
    ~7x faster than the standard library (``bench.micro``'s ``frame``); anything that is not
    JSON becomes its ``str``, as before.
    """
    try:
        return orjson.dumps(value, default=str, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _ENCODER.encode(value)


MAX_OPEN_STREAMS = 1024
"""Streams (a message's text or thinking, a tool call's arguments) any one map remembers at
once: a producer that dies mid-message never sends the end that would release its entry, so
no such map may grow without bound."""


_K = TypeVar("_K")
_V = TypeVar("_V")


def remember(streams: dict[_K, _V], key: _K, value: _V) -> _K | None:
    """Insert ``streams[key] = value``, first forgetting the oldest entry if the map holds
    ``MAX_OPEN_STREAMS``; returns the forgotten key, if any (dicts keep insertion order)."""
    forgotten = None
    if len(streams) >= MAX_OPEN_STREAMS:
        forgotten = next(iter(streams))
        del streams[forgotten]
    streams[key] = value
    return forgotten


def frame_seq(message_seq: int, slot: int) -> int:
    """The seq of the frame in ``slot`` of the event in transport message ``message_seq``."""
    if message_seq < 0:
        raise ValueError(f"message seq must be >= 0, got {message_seq}")
    if not 0 <= slot < FRAMES_PER_EVENT:
        raise ValueError(f"frame slot must be in [0, {FRAMES_PER_EVENT}), got {slot}")
    return message_seq * FRAMES_PER_EVENT + slot


def message_seq_of(seq: int) -> int:
    """The transport message seq a frame seq was derived from."""
    if seq < 0:
        raise ValueError(f"frame seq must be >= 0, got {seq}")
    return seq // FRAMES_PER_EVENT


def transport_after_seq(since: int) -> int:
    """The ``after_seq`` whose replay contains every frame with seq greater than ``since``.

    It re-reads the message ``since`` belongs to, because that message may have frames after
    ``since``; the coordinator's seq skipping drops the frames the client already has.
    """
    return max(message_seq_of(since) - 1, 0)


@dataclass(frozen=True, slots=True)
class Frame:
    """One UI frame; ``json`` is its wire text, computed once at construction.

    ``data`` is shared by every holder of the frame (pool queues, buffer, timeline) and
    ``json`` would not follow a change: treat it as read-only.
    """

    seq: int
    type: str
    data: dict[str, Any]
    conv_id: str
    id: str | None = None
    session_id: str | None = None
    inference_id: str | None = None
    turn_id: str | None = None
    short: bool = False
    """A delta that leaves out the envelope (conv_id and the three ids): it has the envelope of
    its stream's opening frame, which every client got before it (see ``StreamEnvelopes``)."""
    wire: InitVar[str | None] = None
    """The frame's wire text when it is already known (read back from storage): kept as is
    instead of being encoded again."""
    json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self, wire: str | None) -> None:
        if wire is None:
            wire = encode_json({"sem": True, "event": self.event()})
        object.__setattr__(self, "json", wire)

    @classmethod
    def from_json(cls, seq: int, text: str, conv_id: str = "") -> Frame:
        """A frame back from its wire text (e.g. a persisted timeline row stored under ``seq``);
        ``conv_id`` is the conversation's, for a short frame that does not say it.

        Raises ``ValueError`` when ``text`` is not a frame or carries a different seq.
        """
        try:
            decoded = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"frame {seq} is not valid JSON: {exc}") from exc
        event = decoded.get("event") if isinstance(decoded, dict) else None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ValueError(f"frame {seq} has no event object with a type")
        if event.get("seq") != seq:
            raise ValueError(f"frame stored under seq {seq} carries seq {event.get('seq')!r}")
        envelope = ("type", "id", "seq", "conv_id", "session_id", "inference_id", "turn_id")
        return cls(
            short="conv_id" not in event,
            seq=seq,
            type=event["type"],
            data={k: v for k, v in event.items() if k not in envelope},
            conv_id=str(event.get("conv_id", conv_id)),
            id=event.get("id"),
            session_id=event.get("session_id"),
            inference_id=event.get("inference_id"),
            turn_id=event.get("turn_id"),
            wire=text,
        )

    def event(self) -> dict[str, Any]:
        """The ``event`` object of the wire form (a new dict on every call)."""
        event: dict[str, Any] = {"type": self.type}
        if self.id is not None:
            event["id"] = self.id
        event["seq"] = self.seq
        if not self.short:
            event["conv_id"] = self.conv_id
            for key in ("session_id", "inference_id", "turn_id"):
                value = getattr(self, key)
                if value is not None:
                    event[key] = value
        for key, value in self.data.items():
            # The envelope is what clients route on; a field must never overwrite it.
            event.setdefault(key, value)
        return event


@dataclass(frozen=True, slots=True)
class FrameSpec:
    """A frame before it has a seq: its slot within its event, type, id and fields."""

    slot: int
    type: str
    data: dict[str, Any]
    id: str | None = None


@dataclass(slots=True)
class _Stream:
    """What the translator knows of one streamed text (a message's text or its thinking).

    Frames carry only deltas; the text is kept for the end of a segment whose producer does
    not send it (``text-segment-finished`` without ``text``). A message may stream several
    segments (e.g. text, a server tool's output, more text): the finished ones are kept in
    ``prefix`` so that ``llm.final`` carries the whole message.
    """

    prefix: str = ""
    text: str | None = ""  # the open segment's text so far; None: unknown (start not seen)
    open: bool = True

    def whole(self) -> str | None:
        return None if self.text is None else self.prefix + self.text

    def take(self, carried: str) -> None:
        """Adopt a producer's accumulated text: the segment's own, or already the message's."""
        if self.prefix and carried.startswith(self.prefix):
            carried = carried[len(self.prefix) :]
        self.text = carried


class _Streams:
    """The open streams of one kind, by key, forgetting the oldest beyond a bound."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._streams: OrderedDict[str, _Stream] = OrderedDict()

    def pop(self, key: str) -> _Stream | None:
        return self._streams.pop(key, None)

    def is_open(self, key: str) -> bool:
        stream = self._streams.get(key)
        return stream is not None and stream.open

    def start(self, key: str) -> _Stream:
        """Open a new segment; a segment left open before it counts as finished."""
        stream = self._streams.get(key)
        if stream is None:
            return self._add(key, _Stream())
        if stream.open and stream.text is not None:
            stream.prefix += stream.text
        stream.text, stream.open = "", True
        self._streams.move_to_end(key)
        return stream

    def delta(self, key: str, delta: str, carried: str | None) -> str | None:
        """Add a delta; return the whole text so far, or None when it is not known.

        ``carried`` is the producer's accumulated text, if it sends one: an empty one next to a
        non-empty delta is not an accumulation, so it is ignored.
        """
        stream = self._streams.get(key)
        if stream is None:
            # Joined mid-stream: only a producer's accumulation can tell the text.
            stream = self._add(key, _Stream(text=None))
        else:
            self._streams.move_to_end(key)
            if not stream.open:
                stream.text, stream.open = "", True
        if carried is not None and (carried or not delta):
            stream.take(carried)
        elif stream.text is not None:
            stream.text += delta
        return stream.whole()

    def finish(self, key: str, carried: str | None) -> str | None:
        """Close the open segment; return the whole text, or None when it is not known.

        The stream is kept (closed) so that a later segment of the same key continues it.
        """
        stream = self._streams.get(key)
        if stream is None:
            # Nothing seen: an empty text could as well be a producer that does not send one.
            self._add(key, _Stream(prefix=carried or "", open=False))
            return carried or None
        if carried:
            stream.take(carried)
        whole = stream.whole()
        stream.prefix = whole if whole is not None else stream.prefix
        stream.text, stream.open = "", False
        return whole

    def _add(self, key: str, stream: _Stream) -> _Stream:
        forgotten = remember(self._streams, key, stream)
        if forgotten is not None:
            logger.warning("forgetting %s of %s: no end arrived", self.what, forgotten)
        return stream


class FrameTranslator:
    """Turns one conversation's events into frame specs, in event order.

    It is stateful (it remembers which messages are streaming text and thinking), so one
    conversation keeps one translator across stream coordinators, and events must be fed in
    order. Both of geppetto's vocabularies map onto the same frames: the legacy one (``start``,
    ``partial``, ``final``, ``tool-call`` ...) and the canonical one (``text-delta``,
    ``reasoning-delta``, ``tool-call-requested``, ``run-started`` ...). Text and thinking
    frames carry the message id, tool frames the tool call id.
    """

    def __init__(self, conv_id: str) -> None:
        self.conv_id = conv_id
        self._thinking = _Streams("thinking")
        self._text = _Streams("text")
        # Ids (messages, tool calls) this translator sent a frame with the full envelope for:
        # their deltas go out short (clients take the envelope from that frame).
        self._announced: OrderedDict[str, None] = OrderedDict()

    def to_frames(self, event: Event, message_seq: int) -> list[Frame]:
        """The frames of ``event``, stamped with seqs derived from its transport message."""
        specs = self.translate(event)
        slots = [spec.slot for spec in specs]
        if slots != sorted(set(slots)) or any(not 0 <= s < FRAMES_PER_EVENT for s in slots):
            raise ValueError(f"event {event.type!r} produced invalid frame slots {slots}")
        meta = event.meta
        frames = []
        for spec in specs:
            short = self._short(spec)
            frames.append(
                Frame(
                    seq=frame_seq(message_seq, spec.slot),
                    type=spec.type,
                    data=spec.data,
                    conv_id=self.conv_id,
                    id=spec.id,
                    session_id=meta.session_id,
                    inference_id=meta.inference_id,
                    turn_id=meta.turn_id,
                    short=short,
                )
            )
        return frames

    def _short(self, spec: FrameSpec) -> bool:
        """Whether ``spec`` goes out without its envelope: a delta of a stream whose id this
        translator already sent with the envelope; any other frame with an id announces it."""
        if spec.id is None:
            return False
        if spec.id in self._announced:
            self._announced.move_to_end(spec.id)
            return spec.type in SHORT_DELTAS and "delta" in spec.data
        remember(self._announced, spec.id, None)
        return False

    def translate(self, event: Event) -> list[FrameSpec]:
        """The frame specs of ``event``; events this server does not know become debug logs."""
        message_id = event.meta.message_id
        data: dict[str, Any]
        if isinstance(event, UserMessageEvent):
            fields: dict[str, Any] = {"text": event.text}
            if event.parent_turn_id is not None:
                fields["parent_turn_id"] = event.parent_turn_id
            if event.attachments:
                fields["attachments"] = event.attachments
            return [FrameSpec(0, "chat.user_message", fields, message_id)]
        if isinstance(event, RunStartedEvent):
            return [FrameSpec(0, "run.started", {"profile": event.profile}, message_id)]
        if isinstance(event, RunFinishedEvent):
            timing = {} if event.duration_ms is None else {"duration_ms": event.duration_ms}
            return [FrameSpec(0, "run.finished", timing, message_id)]
        if isinstance(event, RunFailedEvent):
            return [FrameSpec(0, "run.failed", {"error": event.error_string}, message_id)]
        if isinstance(event, RunCancelledEvent):
            return [FrameSpec(0, "run.cancelled", {"reason": event.reason}, message_id)]
        if isinstance(event, ConversationDeletedEvent):
            return [FrameSpec(0, DELETED_FRAME, {}, message_id)]
        if isinstance(event, StartEvent):
            return [FrameSpec(0, "llm.start", {"model": event.meta.model}, message_id)]
        if isinstance(event, PartialEvent):
            return [FrameSpec(0, "llm.delta", {"delta": event.delta}, message_id)]
        if isinstance(event, PartialThinkingEvent):
            return self._thinking_delta(message_id, event.delta, event.completion)
        if isinstance(event, FinalEvent):
            self._text.pop(message_id)
            data = _final_data(event.text, event.meta.usage, event.meta.stop_reason)
            return [*self._thinking_final(message_id), FrameSpec(1, "llm.final", data, message_id)]
        if isinstance(event, InterruptEvent):
            self._text.pop(message_id)
            data = {"text": event.text, "interrupted": True}
            return [*self._thinking_final(message_id), FrameSpec(1, "llm.final", data, message_id)]
        if isinstance(event, ErrorEvent):
            self._thinking.pop(message_id)
            self._text.pop(message_id)
            return [FrameSpec(0, "error", {"error": event.error_string}, message_id)]
        if isinstance(event, ToolCallEvent):
            data = {"name": event.tool_call.name, "input": _tool_input(event.tool_call)}
            return [FrameSpec(0, "tool.start", data, event.tool_call.id)]
        if isinstance(event, ToolCallExecuteEvent):
            return [FrameSpec(0, "tool.delta", {"status": "running"}, event.tool_call.id)]
        if isinstance(event, (ToolCallExecutionResultEvent, ToolResultEvent)):
            tool_result = event.tool_result
            data = {"result": tool_result.result, "error": (event.meta.extra or {}).get("error")}
            if tool_result.name:
                data["name"] = tool_result.name
            return [
                FrameSpec(0, "tool.result", data, tool_result.id),
                FrameSpec(1, "tool.done", {}, tool_result.id),
            ]
        if isinstance(event, LogEvent):
            data = {"level": event.level, "message": event.message, "fields": event.fields}
            return [FrameSpec(0, "log", data, message_id)]
        if isinstance(event, InfoEvent):
            data = {"level": "info", "message": event.message, "data": event.data}
            return [FrameSpec(0, "log", data, message_id)]
        if isinstance(event, AgentModeSwitchEvent):
            data = {"message": event.message, "data": event.data}
            return [FrameSpec(0, "agent.mode", data, message_id)]
        canonical = self._translate_canonical(event)
        if canonical is not None:
            return canonical
        if isinstance(event, ProviderCallFinishedEvent):
            # The provider call is over: no segment of its message follows.
            self._text.pop(message_id)
            self._thinking.pop(message_id)
        # Unknown (or newly registered) types still reach the client, so nothing is lost.
        data = {"level": "debug", "message": f"event {event.type}", "event": event.to_dict()}
        return [FrameSpec(0, "log", data, message_id)]

    def _translate_canonical(self, event: Event) -> list[FrameSpec] | None:
        """The frame specs of a canonical geppetto event with a UI meaning, else None."""
        message_id = event.meta.message_id
        data: dict[str, Any]
        if isinstance(event, CanonicalRunStartedEvent):
            data = {"profile": None}
            if event.prompt:
                data["prompt"] = event.prompt
            return [FrameSpec(0, "run.started", data, message_id)]
        if isinstance(event, CanonicalRunFinishedEvent):
            data = {"status": event.status} if event.status else {}
            return [FrameSpec(0, "run.finished", data, message_id)]
        if isinstance(event, CanonicalRunStoppedEvent):
            return [FrameSpec(0, "run.cancelled", {"reason": event.reason or ""}, message_id)]
        if isinstance(event, CanonicalRunFailedEvent):
            return [FrameSpec(0, "run.failed", {"error": event.error_string or ""}, message_id)]
        if isinstance(event, TextSegmentStartedEvent):
            self._text.start(message_id)
            return [FrameSpec(0, "llm.start", {"model": event.meta.model}, message_id)]
        if isinstance(event, TextDeltaEvent):
            self._text.delta(message_id, event.delta, event.text)
            return [FrameSpec(0, "llm.delta", {"delta": event.delta}, message_id)]
        if isinstance(event, TextSegmentFinishedEvent):
            text = self._text.finish(message_id, event.text)
            stop_reason = event.meta.stop_reason or event.finish_reason
            data = _final_data(text, event.meta.usage, stop_reason)
            return [*self._thinking_final(message_id), FrameSpec(1, "llm.final", data, message_id)]
        if isinstance(event, ReasoningSegmentStartedEvent):
            self._thinking.start(message_id)
            return [FrameSpec(0, "llm.thinking.start", {}, message_id)]
        if isinstance(event, ReasoningDeltaEvent):
            return self._thinking_delta(message_id, event.delta, event.text)
        if isinstance(event, ReasoningSegmentFinishedEvent):
            text = self._thinking.finish(message_id, event.text)
            return [FrameSpec(0, "llm.thinking.final", {"text": text}, message_id)]
        return self._translate_canonical_tool(event)

    def _translate_canonical_tool(self, event: Event) -> list[FrameSpec] | None:
        if not isinstance(event, CANONICAL_TOOL_EVENTS):
            return None
        call_id = event.tool_call_id or event.correlation.tool_call_id or event.meta.message_id
        data: dict[str, Any]
        if isinstance(event, ToolCallStartedEvent):
            data = {"name": event.tool_name, "input": None}
            return [FrameSpec(0, "tool.start", data, call_id)]
        if isinstance(event, ToolCallArgumentsDeltaEvent):
            data = {"status": "pending", "delta": event.delta}
            return [FrameSpec(0, "tool.delta", data, call_id)]
        if isinstance(event, ToolCallRequestedEvent):
            call = ToolCall(id=call_id, name=event.tool_name, input=event.input)
            data = {"name": call.name, "input": _tool_input(call)}
            return [FrameSpec(0, "tool.start", data, call_id)]
        if isinstance(event, ToolExecutionStartedEvent):
            return [FrameSpec(0, "tool.delta", {"status": "running"}, call_id)]
        if isinstance(event, ToolResultReadyEvent):
            error = (event.meta.extra or {}).get("error")
            if error is None and event.status == "error":
                error = event.result or "error"
            data = {"result": event.result, "error": error}
            if event.tool_name:
                data["name"] = event.tool_name
            return [FrameSpec(0, "tool.result", data, call_id)]
        data = {"status": event.status} if event.status else {}
        return [FrameSpec(0, "tool.done", data, call_id)]

    def _thinking_delta(self, message_id: str, delta: str, carried: str | None) -> list[FrameSpec]:
        specs: list[FrameSpec] = []
        if not self._thinking.is_open(message_id):
            specs.append(FrameSpec(0, "llm.thinking.start", {}, message_id))
        self._thinking.delta(message_id, delta, carried)
        specs.append(FrameSpec(1, "llm.thinking.delta", {"delta": delta}, message_id))
        return specs

    def _thinking_final(self, message_id: str) -> list[FrameSpec]:
        """``llm.thinking.final`` (slot 0) if ``message_id``'s thinking is still open."""
        thinking = self._thinking.pop(message_id)
        if thinking is None or not thinking.open:
            return []
        return [FrameSpec(0, "llm.thinking.final", {"text": thinking.whole()}, message_id)]


def _final_data(text: str | None, usage: Usage | None, stop_reason: str | None) -> dict[str, Any]:
    return {
        "text": text,
        "usage": usage.model_dump(mode="json", exclude_none=True) if usage else None,
        "stop_reason": stop_reason,
    }


def _tool_input(call: ToolCall) -> Any:
    """The decoded arguments, or the raw text when it is not JSON (so the UI shows it as is)."""
    try:
        return call.arguments()
    except ValueError:
        return call.input


class StreamEnvelopes:
    """Gives short frames (decoded ``event`` objects) the envelope of their stream again.

    For consumers that route frames by their ids (a run's followers, the timeline's branch
    filter): every frame with an envelope and an ``id`` is remembered, and a later short frame
    of that id gets the remembered ``conv_id``, ``session_id``, ``inference_id`` and
    ``turn_id``. Bounded like the translator's own memory of ids.
    """

    _KEYS = ("conv_id", "session_id", "inference_id", "turn_id")

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def fill(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` itself, with the envelope of its stream added if it had none."""
        key = event.get("id")
        if not isinstance(key, str):
            return event
        if "conv_id" in event:
            if key not in self._by_id:
                remember(self._by_id, key, {k: event[k] for k in self._KEYS if k in event})
            return event
        envelope = self._by_id.get(key)
        if envelope is not None:
            event.update(envelope)
        return event
