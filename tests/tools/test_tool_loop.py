import asyncio

import pytest

from tests.support.scripted import ScriptedEngine, call_tools, say
from webchat.engines import OfflineEngine, RunContext
from webchat.events import CollectingSink, ToolCallExecuteEvent, ToolCallExecutionResultEvent
from webchat.tools import (
    Tool,
    ToolLoop,
    ToolLoopError,
    ToolLoopSettings,
    ToolRegistry,
    calculator_tool,
)
from webchat.turns import Block, BlockKind, Turn

CTX_IDS = {"session_id": "s1", "inference_id": "i1", "turn_id": "t1"}


def ctx_with(sink: CollectingSink, **kw) -> RunContext:
    return RunContext(sinks=(sink,), **CTX_IDS, **kw)


async def test_offline_calculator_round_trip():
    sink = CollectingSink()
    loop = ToolLoop(OfflineEngine().run_inference, ToolRegistry([calculator_tool()]))
    turn = await loop.run(Turn(blocks=[Block.user("calc: 6*7")]), ctx_with(sink))
    kinds = [b.kind for b in turn.blocks]
    assert kinds == [
        BlockKind.USER, BlockKind.LLM_TEXT, BlockKind.TOOL_CALL, BlockKind.TOOL_USE,
        BlockKind.LLM_TEXT,
    ]  # fmt: skip
    assert turn.blocks[3].payload["result"] == 42
    assert "42" in turn.blocks[-1].text
    execute = [e for e in sink.events if isinstance(e, ToolCallExecuteEvent)]
    result = [e for e in sink.events if isinstance(e, ToolCallExecutionResultEvent)]
    assert len(execute) == len(result) == 1
    assert execute[0].tool_call.name == "calculator"
    assert result[0].tool_result.result == "42"
    assert result[0].tool_result.name == "calculator"  # Go consumers read it (omitempty)
    for event in (*execute, *result):
        assert (event.meta.session_id, event.meta.inference_id, event.meta.turn_id) == (
            "s1", "i1", "t1",
        )  # fmt: skip


async def test_only_allowed_tools_are_offered_and_executed():
    ran: list[str] = []

    def secret() -> str:
        ran.append("secret")
        return "leaked"

    registry = ToolRegistry([calculator_tool(), Tool(secret)])
    engine = ScriptedEngine(call_tools(("c1", "secret", {}), ("c2", "nosuch", {})), say("ok"))
    loop = ToolLoop(
        engine.run_inference,
        registry,
        ToolLoopSettings(allowed_tools=frozenset({"calculator"})),
    )
    turn = await loop.run(Turn(blocks=[Block.user("x")]), ctx_with(CollectingSink()))
    assert [t.name for t in engine.offered[0]] == ["calculator"]
    assert ran == []
    results = turn.blocks_of(BlockKind.TOOL_USE)
    assert [r.payload["id"] for r in results] == ["c1", "c2"]
    assert all("not available" in r.payload["error"] for r in results)


async def test_results_keep_call_order_with_bounded_parallelism():
    active = 0
    peak = 0

    async def work(n: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01 * (5 - n))  # later calls finish first
        active -= 1
        return n

    calls = [(f"c{n}", "work", {"n": n}) for n in range(5)]
    engine = ScriptedEngine(call_tools(*calls), say("done"))
    loop = ToolLoop(
        engine.run_inference, ToolRegistry([Tool(work)]), ToolLoopSettings(max_parallel=2)
    )
    sink = CollectingSink()
    turn = await loop.run(Turn(), ctx_with(sink))
    assert [b.payload["result"] for b in turn.blocks_of(BlockKind.TOOL_USE)] == [0, 1, 2, 3, 4]
    assert peak == 2
    finished = [
        e.tool_result.id for e in sink.events if isinstance(e, ToolCallExecutionResultEvent)
    ]
    assert sorted(finished) == [c[0] for c in calls]


async def test_per_tool_timeout_becomes_an_error_result():
    never = asyncio.Event()

    async def hang() -> str:
        await never.wait()
        return "unreachable"

    engine = ScriptedEngine(call_tools(("c1", "hang", {})), say("gave up"))
    loop = ToolLoop(
        engine.run_inference, ToolRegistry([Tool(hang)]), ToolLoopSettings(tool_timeout=0.05)
    )
    turn = await loop.run(Turn(), ctx_with(CollectingSink()))
    (result,) = turn.blocks_of(BlockKind.TOOL_USE)
    assert "timed out after 0.05s" in result.payload["error"]
    assert turn.blocks[-1].text == "gave up"


async def test_bad_arguments_and_crashes_are_reported_to_the_model():
    def boom(x: int) -> int:
        raise ValueError("kaput")

    engine = ScriptedEngine(
        call_tools(("c1", "boom", {"x": "NaN"}), ("c2", "boom", {"x": 1}), ("c3", "boom", "{bad")),
        say("sorry"),
    )
    loop = ToolLoop(engine.run_inference, ToolRegistry([Tool(boom)]))
    turn = await loop.run(Turn(), ctx_with(CollectingSink()))
    errors = [b.payload["error"] for b in turn.blocks_of(BlockKind.TOOL_USE)]
    assert "x: Input should be a valid integer" in errors[0]
    assert "ValueError: kaput" in errors[1]
    assert "not valid JSON" in errors[2]
    # The model saw the errors on its second call.
    assert len(engine.seen[1].blocks_of(BlockKind.TOOL_USE)) == 3


async def test_max_iterations_stops_a_model_that_never_stops_calling_tools():
    engine = ScriptedEngine(
        lambda turn: [Block.tool_call(f"c{len(turn.blocks)}", "calculator", {"expression": "1"})],
        repeat_last=True,
    )
    loop = ToolLoop(
        engine.run_inference, ToolRegistry([calculator_tool()]), ToolLoopSettings(max_iterations=3)
    )
    with pytest.raises(ToolLoopError, match="after 3 model calls"):
        await loop.run(Turn(), ctx_with(CollectingSink()))
    assert engine.calls == 3


async def test_snapshot_hook_sees_every_phase_in_order():
    phases: list[tuple[str, int]] = []

    async def hook(turn: Turn, phase: str) -> None:
        phases.append((phase, len(turn.blocks)))

    loop = ToolLoop(OfflineEngine().run_inference, ToolRegistry([calculator_tool()]))
    await loop.run(Turn(blocks=[Block.user("calc: 1+1")]), RunContext(snapshot_hook=hook))
    assert phases == [
        ("pre_inference", 1), ("post_inference", 3), ("post_tools", 4),
        ("pre_inference", 4), ("post_inference", 5),
    ]  # fmt: skip
