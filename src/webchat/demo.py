"""A tool-calling run of the offline engine, printing every event as a JSON line.

    python -m webchat.demo "What is calc: 6*7"

No key, no network: the offline engine asks for the calculator, the tool loop runs it, and the
engine answers with the result. Useful to see the event stream a browser client receives.
"""

from __future__ import annotations

import asyncio
import sys

from webchat.engines import OfflineEngine, StepSettings
from webchat.events import JsonLinesSink
from webchat.middleware import compose, system_prompt_middleware, tool_result_reorder_middleware
from webchat.sessions import Session
from webchat.tools import ToolLoop, ToolRegistry, calculator_tool
from webchat.turns import turn_to_yaml

DEFAULT_PROMPT = "Please work this out, calc: (6*7) + 2**3"


async def run_demo(prompt: str = DEFAULT_PROMPT, *, show_turn: bool = False) -> None:
    engine = OfflineEngine(StepSettings(api_type="offline", tokens_per_second=0))
    handler = compose(
        engine.run_inference,
        [tool_result_reorder_middleware, system_prompt_middleware("You are a calculator.")],
    )
    runner = ToolLoop(handler, ToolRegistry([calculator_tool()]))
    session = Session(runner, sinks=[JsonLinesSink(sys.stdout)])
    turn = await session.start_inference(prompt).wait()
    if show_turn:
        sys.stderr.write(turn_to_yaml(turn))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    asyncio.run(run_demo(" ".join(args) if args else DEFAULT_PROMPT))


if __name__ == "__main__":
    main()
