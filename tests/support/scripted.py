"""A stand-in model for tests of the layers above engines (tool loop, sessions).

Each call to ``run_inference`` appends the blocks of the next script step, so a test states
exactly what "the model" answers at every iteration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from webchat.engines import RunContext, ToolDefinition
from webchat.turns import Block, Turn

Step = Callable[[Turn], list[Block]]


class ScriptedEngine:
    def __init__(self, *steps: Step, repeat_last: bool = False) -> None:
        self.steps = list(steps)
        self.repeat_last = repeat_last
        self.calls = 0
        self.offered: list[tuple[ToolDefinition, ...]] = []
        self.seen: list[Turn] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def run_inference(self, turn: Turn, ctx: RunContext) -> Turn:
        self.offered.append(ctx.tools)
        self.seen.append(turn.model_copy(deep=True))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        index = min(self.calls, len(self.steps) - 1) if self.repeat_last else self.calls
        self.calls += 1
        turn.append(*self.steps[index](turn))
        return turn


def say(text: str) -> Step:
    return lambda turn: [Block.llm_text(text)]


def call_tools(*calls: tuple[str, str, object]) -> Step:
    return lambda turn: [Block.tool_call(cid, name, args) for cid, name, args in calls]
