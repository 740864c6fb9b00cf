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
from dataclasses import dataclass, field
from typing import Any

from webchat.events import (
    AgentModeSwitchEvent,
    ErrorEvent,
    Event,
    FinalEvent,
    InfoEvent,
    InterruptEvent,
    LogEvent,
    PartialEvent,
    PartialThinkingEvent,
    RunCancelledEvent,
    RunFailedEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StartEvent,
    ToolCall,
    ToolCallEvent,
    ToolCallExecuteEvent,
    ToolCallExecutionResultEvent,
    ToolResultEvent,
    UserMessageEvent,
)

logger = logging.getLogger(__name__)

FRAMES_PER_EVENT = 4

# One encoder for every frame: ``json.dumps`` with options builds a new encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)

# Message ids whose thinking is remembered at once; a producer that dies mid-message never
# sends the final that would release its entry, so the map must not grow without bound.
_MAX_OPEN_THINKING = 1024


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
    json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "json", _ENCODER.encode({"sem": True, "event": self.event()}))

    @classmethod
    def from_json(cls, seq: int, text: str) -> Frame:
        """A frame back from its wire text (e.g. a persisted timeline row stored under ``seq``).

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
            seq=seq,
            type=event["type"],
            data={k: v for k, v in event.items() if k not in envelope},
            conv_id=str(event.get("conv_id", "")),
            id=event.get("id"),
            session_id=event.get("session_id"),
            inference_id=event.get("inference_id"),
            turn_id=event.get("turn_id"),
        )

    def event(self) -> dict[str, Any]:
        """The ``event`` object of the wire form (a new dict on every call)."""
        event: dict[str, Any] = {"type": self.type}
        if self.id is not None:
            event["id"] = self.id
        event["seq"] = self.seq
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


class FrameTranslator:
    """Turns one conversation's events into frame specs, in event order.

    It is stateful (it remembers which messages are streaming thinking), so one conversation
    keeps one translator across stream coordinators, and events must be fed in order.
    """

    def __init__(self, conv_id: str) -> None:
        self.conv_id = conv_id
        self._thinking: OrderedDict[str, str] = OrderedDict()

    def to_frames(self, event: Event, message_seq: int) -> list[Frame]:
        """The frames of ``event``, stamped with seqs derived from its transport message."""
        specs = self.translate(event)
        slots = [spec.slot for spec in specs]
        if slots != sorted(set(slots)) or any(not 0 <= s < FRAMES_PER_EVENT for s in slots):
            raise ValueError(f"event {event.type!r} produced invalid frame slots {slots}")
        meta = event.meta
        return [
            Frame(
                seq=frame_seq(message_seq, spec.slot),
                type=spec.type,
                data=spec.data,
                conv_id=self.conv_id,
                id=spec.id,
                session_id=meta.session_id,
                inference_id=meta.inference_id,
                turn_id=meta.turn_id,
            )
            for spec in specs
        ]

    def translate(self, event: Event) -> list[FrameSpec]:
        """The frame specs of ``event``; events this server does not know become debug logs."""
        message_id = event.meta.message_id
        data: dict[str, Any]
        if isinstance(event, UserMessageEvent):
            return [FrameSpec(0, "chat.user_message", {"text": event.text}, message_id)]
        if isinstance(event, RunStartedEvent):
            return [FrameSpec(0, "run.started", {"profile": event.profile}, message_id)]
        if isinstance(event, RunFinishedEvent):
            return [FrameSpec(0, "run.finished", {}, message_id)]
        if isinstance(event, RunFailedEvent):
            return [FrameSpec(0, "run.failed", {"error": event.error}, message_id)]
        if isinstance(event, RunCancelledEvent):
            return [FrameSpec(0, "run.cancelled", {"reason": event.reason}, message_id)]
        if isinstance(event, StartEvent):
            return [FrameSpec(0, "llm.start", {"model": event.meta.model}, message_id)]
        if isinstance(event, PartialEvent):
            data = {"delta": event.delta, "cumulative": event.completion}
            return [FrameSpec(0, "llm.delta", data, message_id)]
        if isinstance(event, PartialThinkingEvent):
            return self._thinking_delta(event)
        if isinstance(event, FinalEvent):
            usage = event.meta.usage
            data = {
                "text": event.text,
                "usage": usage.model_dump(mode="json", exclude_none=True) if usage else None,
                "stop_reason": event.meta.stop_reason,
            }
            return [*self._thinking_final(message_id), FrameSpec(1, "llm.final", data, message_id)]
        if isinstance(event, InterruptEvent):
            data = {"text": event.text, "interrupted": True}
            return [*self._thinking_final(message_id), FrameSpec(1, "llm.final", data, message_id)]
        if isinstance(event, ErrorEvent):
            self._thinking.pop(message_id, None)
            return [FrameSpec(0, "error", {"error": event.error_string}, message_id)]
        if isinstance(event, ToolCallEvent):
            data = {"name": event.tool_call.name, "input": _tool_input(event.tool_call)}
            return [FrameSpec(0, "tool.start", data, event.tool_call.id)]
        if isinstance(event, ToolCallExecuteEvent):
            return [FrameSpec(0, "tool.delta", {"status": "running"}, event.tool_call.id)]
        if isinstance(event, (ToolCallExecutionResultEvent, ToolResultEvent)):
            extra = event.meta.extra or {}
            call_id = event.tool_result.id
            data = {"result": event.tool_result.result, "error": extra.get("error")}
            return [
                FrameSpec(0, "tool.result", data, call_id),
                FrameSpec(1, "tool.done", {}, call_id),
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
        # Unknown (or newly registered) types still reach the client, so nothing is lost.
        data = {"level": "debug", "message": f"event {event.type}", "event": event.to_dict()}
        return [FrameSpec(0, "log", data, message_id)]

    def _thinking_delta(self, event: PartialThinkingEvent) -> list[FrameSpec]:
        message_id = event.meta.message_id
        specs: list[FrameSpec] = []
        if message_id not in self._thinking:
            specs.append(FrameSpec(0, "llm.thinking.start", {}, message_id))
            if len(self._thinking) >= _MAX_OPEN_THINKING:
                forgotten, _ = self._thinking.popitem(last=False)
                logger.warning("forgetting thinking of message %s: no final arrived", forgotten)
        self._thinking[message_id] = event.completion
        data = {"delta": event.delta, "cumulative": event.completion}
        specs.append(FrameSpec(1, "llm.thinking.delta", data, message_id))
        return specs

    def _thinking_final(self, message_id: str) -> list[FrameSpec]:
        thinking = self._thinking.pop(message_id, None)
        if thinking is None:
            return []
        return [FrameSpec(0, "llm.thinking.final", {"text": thinking}, message_id)]


def _tool_input(call: ToolCall) -> Any:
    """The decoded arguments, or the raw text when it is not JSON (so the UI shows it as is)."""
    try:
        return call.arguments()
    except ValueError:
        return call.input
