"""One model call's stream, turned into events and blocks the same way for every provider.

Provider adapters only translate their wire format into ``add_text`` / ``add_thinking`` /
``add_tool_call`` / ``set_usage`` calls; ``stream_inference`` owns the event protocol:
``start``, ``partial``..., then ``tool-call``... and ``final`` on success, ``error`` on failure,
``interrupt`` on cancellation. Every failure is re-raised as an ``EngineError``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from webchat.engines.base import EngineError, RunContext
from webchat.engines.settings import StepSettings
from webchat.events import (
    ErrorEvent,
    EventMeta,
    FinalEvent,
    InterruptEvent,
    PartialEvent,
    PartialThinkingEvent,
    StartEvent,
    ToolCall,
    ToolCallEvent,
    Usage,
    new_id,
)
from webchat.observability import tracing
from webchat.observability.hooks import observe_time_to_first_token
from webchat.turns import Block, Turn


class InferenceStream:
    """Accumulates the output of one model call and publishes the matching events."""

    def __init__(self, ctx: RunContext, settings: StepSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.model = settings.resolved_model()
        self.text = ""
        self.thinking = ""
        self.tool_calls: list[ToolCall] = []
        self.usage: Usage | None = None
        self.stop_reason: str | None = None
        # One id for every event of this model call, so clients can group its deltas.
        self.message_id = new_id()
        self._started = time.monotonic()
        self._token_seen = False
        self._delta_meta: EventMeta | None = None

    def _per_delta_meta(self) -> EventMeta:
        """The metadata every delta of this call shares, made once: a token costs an event,
        not an event plus its metadata (events are not changed once published)."""
        if self._delta_meta is None:
            self._delta_meta = self._meta()
        return self._delta_meta

    def _meta(self, **fields: Any) -> Any:
        return self.ctx.meta(message_id=self.message_id, model=self.model, **fields)

    async def start(self) -> None:
        self._started = time.monotonic()
        self._token_seen = False
        await self.ctx.publish(
            StartEvent(
                meta=self._meta(
                    temperature=self.settings.temperature,
                    top_p=self.settings.top_p,
                    max_tokens=self.settings.max_tokens,
                )
            )
        )

    async def add_text(self, delta: str) -> None:
        if not delta:
            return
        self.text += delta
        self._first_token()
        # Only the delta crosses the transport: the text so far is in the final event, and
        # carrying it on every delta made each answer's traffic quadratic in its length.
        await self.ctx.publish(PartialEvent(meta=self._per_delta_meta(), delta=delta))

    async def add_thinking(self, delta: str) -> None:
        if not delta:
            return
        self.thinking += delta
        self._first_token()
        await self.ctx.publish(PartialThinkingEvent(meta=self._per_delta_meta(), delta=delta))

    def _first_token(self) -> None:
        if not self._token_seen:
            self._token_seen = True
            observe_time_to_first_token(time.monotonic() - self._started, self.settings.api_type)

    def add_tool_call(self, call_id: str, name: str, arguments_json: str) -> None:
        self.tool_calls.append(ToolCall(id=call_id, name=name, input=arguments_json))

    def set_usage(self, usage: Usage) -> None:
        self.usage = usage

    def _duration_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    async def finish(self, turn: Turn) -> Turn:
        if self.thinking:
            turn.append(Block.reasoning(self.thinking))
        if self.text:
            turn.append(Block.llm_text(self.text))
        for call in self.tool_calls:
            turn.append(Block.tool_call(call.id, call.name, decode_arguments(call.input)))
            await self.ctx.publish(ToolCallEvent(meta=self._meta(), tool_call=call))
        turn.metadata.model = self.model
        if self.usage is not None:
            previous = turn.metadata.usage
            turn.metadata.usage = self.usage if previous is None else previous + self.usage
        turn.metadata.stop_reason = self.stop_reason
        await self.ctx.publish(
            FinalEvent(
                meta=self._meta(
                    usage=self.usage,
                    stop_reason=self.stop_reason,
                    duration_ms=self._duration_ms(),
                ),
                text=self.text,
            )
        )
        return turn

    async def fail(self, error: EngineError) -> None:
        await self.ctx.publish(
            ErrorEvent(meta=self._meta(duration_ms=self._duration_ms()), error_string=str(error))
        )

    async def interrupt(self) -> None:
        await self.ctx.publish(
            InterruptEvent(
                meta=self._meta(stop_reason="cancelled", duration_ms=self._duration_ms()),
                text=self.text,
            )
        )


def decode_arguments(arguments_json: str) -> Any:
    """Tool arguments as data; text that is not JSON is kept so the tool loop can report it."""
    if not arguments_json.strip():
        return {}
    try:
        return json.loads(arguments_json)
    except ValueError:
        return arguments_json


async def stream_inference(
    turn: Turn,
    ctx: RunContext,
    settings: StepSettings,
    produce: Callable[[InferenceStream], Awaitable[None]],
    to_engine_error: Callable[[Exception], EngineError],
) -> Turn:
    """Run ``produce`` inside the event protocol and return ``turn`` with the new blocks."""
    stream = InferenceStream(ctx, settings)
    with tracing.model_call(settings.api_type, stream.model, turn.last_user_text()) as span:
        await stream.start()
        try:
            await produce(stream)
        except asyncio.CancelledError:
            await stream.interrupt()
            raise
        except EngineError as exc:
            await stream.fail(exc)
            raise
        except Exception as exc:
            error = to_engine_error(exc)
            await stream.fail(error)
            # Not ``from exc``: SDK errors can quote the request (API key included), and a
            # chained cause would print it in any traceback. The EngineError message says
            # what happened.
            raise error from None
        turn = await stream.finish(turn)
        span.finish(usage=stream.usage, stop_reason=stream.stop_reason, output=stream.text)
        return turn
