"""Agents written as an async generator function: ``async def agent(request): yield "text"``.

The smallest way to bring one's own agent: whatever the function does (call an SDK, a
service, other Python code), each ``str`` it yields streams as ``llm.delta`` and their
concatenation is the ``llm.final`` text. Events it yields (thinking, tool calls and results,
logs) are shown as such; ``Usage`` it yields is reported on ``llm.final``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable

from webchat.agents.binding import AgentBinding
from webchat.agents.request import AgentRequest
from webchat.engines.base import RunContext
from webchat.turns import Turn

AgentFunction = Callable[[AgentRequest], AsyncGenerator[object, None]]


class GeneratorAgentEngine:
    """An ``Engine`` running an async generator function once per run."""

    def __init__(self, function: AgentFunction, binding: AgentBinding) -> None:
        self.function = function
        self.binding = binding

    async def run_inference(self, turn: Turn, ctx: RunContext) -> Turn:
        binding = self.binding
        output = binding.output(turn, ctx, model=binding.model_label)
        request = binding.request(turn, ctx).bind_tools(output.call_tool)
        await output.begin()
        async with output.ending(binding.label):
            generator = self.function(request)
            # aclosing: a cancel (or failure) while the generator waits at a ``yield`` still
            # runs its ``finally``, so it can release what it holds (an SDK stream, a socket).
            async with contextlib.aclosing(generator):
                async for item in generator:
                    await output.apply(item)
                    # Stay cooperative (and cancellable) even if the generator never awaits.
                    await asyncio.sleep(0)
        return await output.finish()
