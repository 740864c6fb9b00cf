"""The tool-calling loop: call the model, run the tools it asked for, repeat.

Pending calls are ``tool_call`` blocks without a ``tool_use`` block of the same id. They run
through the registry with a per-tool timeout and bounded parallelism; results are appended in
the order the calls were made, whatever order they finish in. Tools outside ``allowed_tools``
are neither offered to the model nor executed. Every failure of a tool (unknown, forbidden,
bad arguments, timeout, crash) becomes an error result the model can read, not a crashed run.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from webchat.engines.base import Handler, RunContext, SnapshotPhase
from webchat.events import (
    ToolCall,
    ToolCallExecuteEvent,
    ToolCallExecutionResultEvent,
    ToolResult,
)
from webchat.observability.tools import observe_tool
from webchat.tools.registry import ToolError, ToolRegistry
from webchat.turns import Block, Turn


@dataclass(frozen=True, slots=True)
class ToolLoopSettings:
    max_iterations: int = 5
    """Model calls per run; a model still asking for tools after that fails the run."""
    tool_timeout: float = 30.0
    """Seconds one tool call may take."""
    max_parallel: int = 4
    """Tool calls of one model step that may run at once."""
    allowed_tools: frozenset[str] | None = None
    """Tool names the model may use; ``None`` allows every registered tool."""


class ToolLoopError(RuntimeError):
    """The loop gave up (the model kept asking for tools past ``max_iterations``)."""


class ToolLoop:
    """Runs ``handler`` (an engine or middleware chain) until no tool call is pending."""

    def __init__(
        self,
        handler: Handler,
        registry: ToolRegistry,
        settings: ToolLoopSettings | None = None,
    ) -> None:
        self.handler = handler
        self.registry = registry
        self.settings = settings or ToolLoopSettings()

    def _allowed(self, name: str) -> bool:
        allowed = self.settings.allowed_tools
        return name in self.registry and (allowed is None or name in allowed)

    async def run(self, turn: Turn, ctx: RunContext) -> Turn:
        ctx = ctx.with_tools(self.registry.definitions(self.settings.allowed_tools))
        for _ in range(self.settings.max_iterations):
            await _snapshot(ctx, turn, "pre_inference")
            turn = await self.handler(turn, ctx)
            await _snapshot(ctx, turn, "post_inference")
            pending = turn.pending_tool_calls()
            if not pending:
                return turn
            turn.append(*await self._execute_all(pending, ctx))
            await _snapshot(ctx, turn, "post_tools")
        raise ToolLoopError(
            f"stopped after {self.settings.max_iterations} model calls: "
            "the model kept requesting tools"
        )

    __call__ = run

    async def _execute_all(self, calls: list[Block], ctx: RunContext) -> list[Block]:
        limit = asyncio.Semaphore(max(1, self.settings.max_parallel))

        async def bounded(call: Block) -> Block:
            async with limit:
                return await self._execute(call, ctx)

        return list(await asyncio.gather(*(bounded(call) for call in calls)))

    async def _execute(self, call: Block, ctx: RunContext) -> Block:
        call_id = str(call.payload.get("id", ""))
        name = str(call.payload.get("name", ""))
        args = call.payload.get("args", {})
        await ctx.publish(
            ToolCallExecuteEvent(
                meta=ctx.meta(),
                tool_call=ToolCall(id=call_id, name=name, input=_as_text(args)),
            )
        )
        error: str | None = None
        result: Any = None
        with observe_tool(name, call_id, _as_text(args), registered=name in self.registry) as seen:
            try:
                result = await self._invoke(name, args)
            except ToolError as exc:
                error = str(exc)
            except TimeoutError:
                error = f"tool {name!r} timed out after {self.settings.tool_timeout:g}s"
            except Exception as exc:  # a crashing tool must not crash the run
                error = f"tool {name!r} failed: {type(exc).__name__}: {exc}"
            text = f"error: {error}" if error is not None else _as_text(result)
            seen.finish(text, error)
        await ctx.publish(
            ToolCallExecutionResultEvent(
                meta=ctx.meta(extra={"error": error} if error else None),
                tool_result=ToolResult(id=call_id, result=text, name=name),
            )
        )
        return Block.tool_use(call_id, text if error else result, error=error)

    async def _invoke(self, name: str, args: Any) -> Any:
        tool = self.registry.get(name)
        if tool is None or not self._allowed(name):
            raise ToolError(f"tool {name!r} is not available in this conversation")
        async with asyncio.timeout(self.settings.tool_timeout):
            return await tool.call(args)


async def _snapshot(ctx: RunContext, turn: Turn, phase: SnapshotPhase) -> None:
    if ctx.snapshot_hook is not None:
        await ctx.snapshot_hook(turn, phase)


def _as_text(value: Any) -> str:
    """Text for the wire: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)
