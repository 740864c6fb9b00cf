"""Shared helpers: a realistic event stream and bounded waits on subscriptions."""

from __future__ import annotations

import asyncio
import json

from webchat.events import (
    AgentModeSwitchEvent,
    ErrorEvent,
    Event,
    EventMeta,
    FinalEvent,
    GenericEvent,
    InfoEvent,
    InterruptEvent,
    LogEvent,
    PartialEvent,
    PartialThinkingEvent,
    StartEvent,
    ToolCall,
    ToolCallEvent,
    ToolCallExecuteEvent,
    ToolCallExecutionResultEvent,
    ToolResult,
    Usage,
)
from webchat.transport import Subscription, Transport, TransportMessage

WAIT = 10.0


def make_events(count: int) -> list[Event]:
    """``count`` events of every kind, shaped like a few tool-using inferences."""
    events: list[Event] = []
    n = 0
    while len(events) < count:
        n += 1
        meta = EventMeta(
            session_id="sess-1", inference_id=f"inf-{n}", turn_id=f"turn-{n}", model="m-1"
        )
        text = ""
        events.append(StartEvent(meta=meta))
        for word in ("Hé", " wörld", " 🚀", ' "quoted"\n'):
            text += word
            events.append(PartialEvent(meta=meta, delta=word, completion=text))
        events.append(PartialThinkingEvent(meta=meta, delta="hmm", completion="hmm"))
        call = ToolCall(id=f"call-{n}", name="lookup", input=json.dumps({"q": n}))
        events.append(ToolCallEvent(meta=meta, tool_call=call))
        events.append(ToolCallExecuteEvent(meta=meta, tool_call=call))
        events.append(
            ToolCallExecutionResultEvent(meta=meta, tool_result=ToolResult(id=call.id, result="42"))
        )
        events.append(LogEvent(meta=meta, level="debug", message="step", fields={"n": n}))
        events.append(InfoEvent(meta=meta, message="note", data={"k": [1, 2]}))
        events.append(
            AgentModeSwitchEvent(meta=meta, message="switch", data={"from": "a", "to": "b"})
        )
        events.append(GenericEvent(type="custom-future-event", meta=meta, extra_field={"x": 1}))
        if n % 5 == 0:
            events.append(ErrorEvent(meta=meta, error_string="boom"))
        elif n % 7 == 0:
            events.append(InterruptEvent(meta=meta, text=text))
        else:
            final_meta = meta.model_copy(
                update={"stop_reason": "stop", "usage": Usage(input_tokens=3, output_tokens=n)}
            )
            events.append(FinalEvent(meta=final_meta, text=text))
    return events[:count]


async def take(sub: Subscription, count: int) -> list[TransportMessage]:
    """Exactly the next ``count`` messages, or fail after ``WAIT`` seconds."""
    got: list[TransportMessage] = []
    if count == 0:
        return got
    async with asyncio.timeout(WAIT):
        async for message in sub:
            got.append(message)
            if len(got) == count:
                break
    assert len(got) == count, f"subscription ended after {len(got)} of {count} messages"
    return got


async def close(*closables: Subscription | Transport) -> None:
    """Close each, failing (instead of hanging the run) if a close does not finish."""
    async with asyncio.timeout(WAIT):
        for closable in closables:
            await closable.close()
