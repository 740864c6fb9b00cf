"""One agent run's output: the events browsers see and the blocks history keeps.

Agents produce text, thinking and tool calls in whatever order their code runs; this turns
that into the same protocol provider engines speak, so the UI, the timeline and replays need
no special case. Text and thinking stream as one message (``llm.start``, ``llm.delta``...,
``llm.final``). A tool call ends the message that was streaming, as a model's tool call ends
its model call, and text after it starts a new message, so the blocks read back in order as
assistant text, tool call, tool result, assistant text, which is also what chat APIs expect
when the history is replayed to a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from webchat.engines.base import EngineError, RunContext
from webchat.engines.settings import StepSettings
from webchat.engines.streaming import InferenceStream, decode_arguments
from webchat.events import (
    ErrorEvent,
    Event,
    FinalEvent,
    InterruptEvent,
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
    ToolResult,
    ToolResultEvent,
    Usage,
    UserMessageEvent,
)
from webchat.tools.registry import ToolError, ToolRegistry
from webchat.turns import Block, Turn

log = logging.getLogger("webchat.agents")

PROVIDER = "agent"

_OWN_EVENTS = (
    StartEvent,
    FinalEvent,
    InterruptEvent,
    ErrorEvent,
    UserMessageEvent,
    RunStartedEvent,
    RunFinishedEvent,
    RunFailedEvent,
    RunCancelledEvent,
)
"""Events webchat publishes itself around an agent; an agent yielding one would break the
one-start-one-end protocol clients rely on."""

NO_RESULT = "the agent reported no result for this tool call"


class AgentOutput:
    """Publishes one run's output and appends its blocks to ``turn``. See the module docstring."""

    def __init__(
        self,
        turn: Turn,
        ctx: RunContext,
        settings: StepSettings,
        *,
        model: str,
        tools: ToolRegistry,
        tool_timeout: float,
    ) -> None:
        self.turn = turn
        self.ctx = ctx
        self.settings = settings
        self.model = model
        self.tools = tools
        self.tool_timeout = tool_timeout
        self.usage: Usage | None = None
        self._stream: InferenceStream | None = None
        self._lock = asyncio.Lock()  # tool calls made concurrently (asyncio.gather) by an agent
        self._tool_names: dict[str, str] = {}
        self._unanswered: list[str] = []

    # -- text and thinking -----------------------------------------------------------------

    async def begin(self) -> None:
        """Open the run's first message, so clients see the answer start right away."""
        await self._open()

    @property
    def open_text(self) -> str:
        """Text of the message streaming now ("" when none is)."""
        return self._stream.text if self._stream is not None else ""

    async def text(self, delta: str) -> None:
        if delta:
            await (await self._open()).add_text(delta)

    async def thinking(self, delta: str) -> None:
        if delta:
            await (await self._open()).add_thinking(delta)

    def add_usage(self, usage: Usage) -> None:
        """Token counts to report; they are summed and travel on the run's last ``llm.final``."""
        self.usage = usage if self.usage is None else self.usage + usage

    async def _open(self) -> InferenceStream:
        if self._stream is None:
            stream = InferenceStream(self.ctx, self.settings)
            stream.model = self.model
            await stream.start()
            self._stream = stream
        return self._stream

    async def _end_message(self) -> None:
        """Finish the streaming message if it has any output (an empty one stays open, so a
        tool call made before any text does not leave an empty message behind)."""
        stream = self._stream
        if stream is not None and (stream.text or stream.thinking):
            self._stream = None
            stream.stop_reason = "tool_calls"
            await stream.finish(self.turn)

    # -- tool cards ------------------------------------------------------------------------

    async def tool_call(self, call: ToolCall, event: Event | None = None) -> None:
        """Show a tool call (``tool.start``) and record it; ``event`` is the agent's own."""
        async with self._lock:
            await self._end_message()
            self._tool_names[call.id] = call.name
            self._unanswered.append(call.id)
            self.turn.append(Block.tool_call(call.id, call.name, decode_arguments(call.input)))
            published = (
                ToolCallEvent(meta=self.ctx.meta(), tool_call=call)
                if event is None
                else self._with_ids(event)
            )
            await self.ctx.publish(published)

    async def tool_running(self, call: ToolCall) -> None:
        await self.ctx.publish(ToolCallExecuteEvent(meta=self.ctx.meta(), tool_call=call))

    async def tool_result(
        self, call_id: str, result: Any, error: str | None = None, event: Event | None = None
    ) -> None:
        """Show a tool's result (``tool.result``, ``tool.done``) and record it."""
        text = f"error: {error}" if error is not None else _as_text(result)
        if call_id in self._unanswered:
            self._unanswered.remove(call_id)
        self.turn.append(
            Block.tool_use(call_id, text if error is not None else result, error=error)
        )
        published = (
            ToolCallExecutionResultEvent(
                meta=self.ctx.meta(extra={"error": error} if error is not None else None),
                tool_result=ToolResult(id=call_id, result=text, name=self._tool_names.get(call_id)),
            )
            if event is None
            else self._with_ids(event)
        )
        await self.ctx.publish(published)

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | str | None) -> Any:
        """Run one of the offered tools with a card around it; raises ``ToolError`` on failure.

        Same rules as the tool loop: only tools offered in this run, arguments validated
        against the tool's schema, ``tool_timeout`` per call.
        """
        args: Any = {} if arguments is None else arguments
        if isinstance(args, Mapping):
            args = dict(args)
        call = ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=name, input=_as_text(args))
        await self.tool_call(call)
        await self.tool_running(call)
        error: str | None = None
        result: Any = None
        offered = {t.name for t in self.ctx.tools}
        tool = self.tools.get(name) if name in offered else None
        try:
            if tool is None:
                raise ToolError(
                    f"tool {name!r} is not available in this conversation; "
                    f"offered: {', '.join(sorted(offered)) or 'none'}"
                )
            async with asyncio.timeout(self.tool_timeout):
                result = await tool.call(args)
        except ToolError as exc:
            error = str(exc)
        except TimeoutError:
            error = f"tool {name!r} timed out after {self.tool_timeout:g}s"
        except Exception as exc:  # a crashing tool is reported like the tool loop does
            log.warning("tool %s failed in an agent run", name, exc_info=True)
            error = f"tool {name!r} failed: {type(exc).__name__}: {exc}"
        await self.tool_result(call.id, result, error)
        if error is not None:
            raise ToolError(error)
        return result

    # -- anything an agent yields ----------------------------------------------------------

    async def apply(self, item: object) -> None:
        """Show one item an agent yielded: text, a webchat event, or ``Usage``."""
        if isinstance(item, str):
            await self.text(item)
        elif isinstance(item, PartialEvent):
            await self.text(item.delta)
        elif isinstance(item, PartialThinkingEvent):
            await self.thinking(item.delta)
        elif isinstance(item, ToolCallEvent):
            await self.tool_call(item.tool_call, item)
        elif isinstance(item, (ToolCallExecutionResultEvent, ToolResultEvent)):
            error = (item.meta.extra or {}).get("error")
            await self.tool_result(
                item.tool_result.id,
                item.tool_result.result,
                None if error is None else str(error),
                item,
            )
        elif isinstance(item, Usage):
            self.add_usage(item)
        elif isinstance(item, _OWN_EVENTS):
            raise TypeError(
                f"an agent must not yield {type(item).__name__}: webchat publishes "
                "the start and end of messages and runs itself"
            )
        elif isinstance(item, Event):
            await self.ctx.publish(self._with_ids(item))
        else:
            raise TypeError(
                f"an agent yielded {type(item).__name__}; yield str chunks, webchat events "
                "(PartialThinkingEvent, ToolCallEvent, ToolResultEvent, LogEvent...) or Usage"
            )

    def _with_ids(self, event: Event) -> Event:
        """``event`` carrying this run's correlation ids where the agent left them unset."""
        meta = event.meta
        ids = {
            "session_id": meta.session_id or self.ctx.session_id,
            "inference_id": meta.inference_id or self.ctx.inference_id,
            "turn_id": meta.turn_id or self.ctx.turn_id,
        }
        return event.model_copy(update={"meta": meta.model_copy(update=ids)})

    # -- endings ---------------------------------------------------------------------------

    async def finish(self) -> Turn:
        """End the run's output: close cards left open, then the last message (with usage)."""
        for call_id in list(self._unanswered):
            await self.tool_result(call_id, None, NO_RESULT)
        stream = await self._open()
        self._stream = None
        stream.stop_reason = "stop"
        if self.usage is not None:
            stream.set_usage(self.usage)
        return await stream.finish(self.turn)

    async def fail(self, exc: Exception, what: str) -> EngineError:
        """Log ``exc`` with its traceback and return the error that ends the run.

        Clients get its message only: a traceback would show server internals to every
        browser watching, so it stays in the log.
        """
        if isinstance(exc, EngineError):
            error = exc
        else:
            detail = str(exc).strip()
            message = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
            error = EngineError(message, provider=PROVIDER)
        log.error("%s failed: %s", what, error, exc_info=exc)
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.fail(error)
        else:
            await self.ctx.publish(ErrorEvent(meta=self.ctx.meta(), error_string=str(error)))
        return error

    @contextlib.asynccontextmanager
    async def ending(self, what: str) -> AsyncIterator[None]:
        """Around an agent's own code: a cancel ends the streaming message as interrupted, a
        failure is logged and re-raised as the ``EngineError`` clients see (see ``fail``)."""
        try:
            yield
        except asyncio.CancelledError:
            await self.interrupt()
            raise
        except Exception as exc:
            error = await self.fail(exc, what)
            raise error from None

    async def interrupt(self) -> None:
        """Cancelled: end the streaming message as interrupted (``llm.final`` with the text so
        far), as provider engines do."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.interrupt()


def _as_text(value: Any) -> str:
    """Text for the wire: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)
