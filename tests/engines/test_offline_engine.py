import asyncio
import time

import pytest

from webchat.engines import OfflineEngine, RunContext, StepSettings, ToolDefinition
from webchat.events import CollectingSink, FinalEvent, InterruptEvent, PartialEvent
from webchat.turns import Block, BlockKind, Turn

CALC = ToolDefinition("calculator", "math", {"type": "object"})


async def run(prompt: str, *, tools=(), **settings) -> tuple[Turn, CollectingSink]:
    sink = CollectingSink()
    ctx = RunContext(sinks=(sink,), session_id="s", inference_id="i", turn_id="t", tools=tools)
    engine = OfflineEngine(StepSettings(api_type="offline", **settings))
    turn = await engine.run_inference(Turn(blocks=[Block.user(prompt)]), ctx)
    return turn, sink


async def test_streams_a_deterministic_answer_of_the_configured_length():
    turn, sink = await run("tell me a story", answer_tokens=30)
    again, _ = await run("tell me a story", answer_tokens=30)
    other, _ = await run("something else entirely", answer_tokens=30)
    text = turn.blocks[-1].text
    assert turn.blocks[-1].kind == BlockKind.LLM_TEXT
    assert text == again.blocks[-1].text != other.blocks[-1].text
    assert len(text.split(" ")) == 30
    partials = [e for e in sink.events if isinstance(e, PartialEvent)]
    assert len(partials) == 30
    assert "".join(p.delta for p in partials) == text
    final = sink.events[-1]
    assert isinstance(final, FinalEvent) and final.text == text
    assert sink.types()[0] == "start"
    assert final.meta.usage is not None and final.meta.usage.output_tokens == 30
    assert {(e.meta.session_id, e.meta.inference_id, e.meta.turn_id) for e in sink.events} == {
        ("s", "i", "t")
    }
    # One message id per model call, so a client can group the deltas of one answer.
    assert len({e.meta.message_id for e in sink.events}) == 1


async def test_rate_limit_spaces_tokens_out():
    started = time.monotonic()
    await run("slow please", answer_tokens=6, tokens_per_second=50)
    # 6 tokens at 50/s: the last one cannot leave before 5/50 s (only a lower bound is stable).
    assert time.monotonic() - started >= 5 / 50


async def test_calc_requests_the_calculator_when_offered():
    turn, sink = await run("what is calc: 6*7", tools=(CALC,))
    call = turn.blocks[-1]
    assert call.kind == BlockKind.TOOL_CALL
    assert call.payload["name"] == "calculator"
    assert call.payload["args"] == {"expression": "6*7"}
    assert "tool-call" in sink.types()
    assert turn.metadata.stop_reason == "tool_calls"


async def test_calc_without_the_tool_is_a_plain_answer():
    turn, sink = await run("what is calc: 6*7")
    assert turn.blocks[-1].kind == BlockKind.LLM_TEXT
    assert "tool-call" not in sink.types()


async def test_answers_with_the_tool_result():
    turn = Turn(
        blocks=[
            Block.user("calc: 6*7"),
            Block.tool_call("c1", "calculator", {"expression": "6*7"}),
            Block.tool_use("c1", 42),
        ]
    )
    out = await OfflineEngine().run_inference(turn, RunContext(tools=(CALC,)))
    assert out.blocks[-1].text == "The result of 6*7 is 42."


async def test_cancellation_publishes_interrupt_with_partial_text():
    sink = CollectingSink()
    engine = OfflineEngine(StepSettings(tokens_per_second=1000, answer_tokens=10_000))
    task = asyncio.create_task(
        engine.run_inference(Turn(blocks=[Block.user("long")]), RunContext(sinks=(sink,)))
    )
    async with asyncio.timeout(5):
        await sink.wait_for(lambda events: len(events) >= 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    last = sink.events[-1]
    assert isinstance(last, InterruptEvent)
    partials = [e for e in sink.events if isinstance(e, PartialEvent)]
    assert last.text == "".join(p.delta for p in partials)
