import asyncio

import pytest

from tests.support.scripted import ScriptedEngine, say
from webchat.engines import EngineError, OfflineEngine, StepSettings
from webchat.events import CollectingSink, InterruptEvent
from webchat.sessions import (
    DirectorySnapshotHook,
    InferenceCancelledError,
    Session,
    SessionBusyError,
)
from webchat.tools import ToolLoop, ToolRegistry, calculator_tool
from webchat.turns import BlockKind, turn_from_yaml


async def test_inference_ids_history_and_events():
    sink = CollectingSink()
    session = Session(OfflineEngine().run_inference, sinks=[sink])
    handle = session.start_inference("hello")
    assert handle.session_id == session.session_id
    assert handle.inference_id and handle.turn_id
    turn = await handle.wait()
    assert turn.id == handle.turn_id
    assert session.turns == [turn]
    assert turn.metadata.session_id == session.session_id
    assert turn.metadata.inference_id == handle.inference_id
    assert {(e.meta.session_id, e.meta.inference_id, e.meta.turn_id) for e in sink.events} == {
        (session.session_id, handle.inference_id, handle.turn_id)
    }


async def test_next_inference_continues_the_transcript():
    engine = ScriptedEngine(say("first answer"), say("second answer"))
    session = Session(engine.run_inference)
    await session.start_inference("one").wait()
    second = await session.start_inference("two").wait()
    assert [b.text for b in second.blocks] == ["one", "first answer", "two", "second answer"]
    assert [b.text for b in engine.seen[1].blocks] == ["one", "first answer", "two"]
    assert len(session.turns) == 2


async def test_at_most_one_active_inference():
    engine = ScriptedEngine(say("a"), say("b"))
    engine.gate = asyncio.Event()
    session = Session(engine.run_inference)
    first = session.start_inference("one")
    with pytest.raises(SessionBusyError) as info:
        session.start_inference("two")
    assert info.value.inference_id == first.inference_id
    assert session.is_running and session.active is first
    engine.gate.set()
    await first.wait()
    assert not session.is_running
    await session.start_inference("two").wait()


async def test_concurrent_starts_admit_exactly_one():
    engine = ScriptedEngine(say("x"), repeat_last=True)
    engine.gate = asyncio.Event()
    session = Session(engine.run_inference)

    async def attempt(n: int):
        await asyncio.sleep(0)
        try:
            return session.start_inference(f"p{n}")
        except SessionBusyError:
            return None

    handles = [h for h in await asyncio.gather(*(attempt(n) for n in range(50))) if h]
    assert len(handles) == 1
    engine.gate.set()
    await handles[0].wait()
    assert len(session.turns) == 1


async def test_failure_is_recorded_with_the_prompt_and_raised():
    async def broken(turn, ctx):
        turn.blocks.append(turn.blocks[-1].model_copy())  # partial output must not be kept
        raise EngineError("provider exploded", provider="test")

    session = Session(broken)
    handle = session.start_inference("please")
    with pytest.raises(EngineError, match="provider exploded"):
        await handle.wait()
    (failed,) = session.turns
    assert failed.id == handle.turn_id
    assert [b.text for b in failed.blocks] == ["please"]
    assert failed.metadata.error == "provider exploded"
    assert failed.metadata.stop_reason == "error"
    # The conversation stays usable and remembers the failed prompt.
    session.runner = ScriptedEngine(say("recovered")).run_inference
    nxt = await session.start_inference("again").wait()
    assert [b.text for b in nxt.blocks] == ["please", "again", "recovered"]


async def test_cancel_interrupts_and_records():
    sink = CollectingSink()
    engine = OfflineEngine(StepSettings(tokens_per_second=500, answer_tokens=5000))
    session = Session(engine.run_inference, sinks=[sink])
    handle = session.start_inference("long answer please")
    async with asyncio.timeout(5):
        await sink.wait_for(lambda events: any(e.type == "partial" for e in events))
    assert handle.cancel()
    with pytest.raises(InferenceCancelledError):
        await handle.wait()
    assert isinstance(sink.events[-1], InterruptEvent)
    assert session.turns[-1].metadata.error == "cancelled"
    assert not session.is_running
    assert not handle.cancel()  # already finished


async def test_snapshot_hook_writes_yaml_per_phase(tmp_path):
    runner = ToolLoop(OfflineEngine().run_inference, ToolRegistry([calculator_tool()]))
    session = Session(runner, snapshot_hook=DirectorySnapshotHook(tmp_path))
    handle = session.start_inference("calc: 2*21")
    final = await handle.wait()
    folder = tmp_path / session.session_id / handle.inference_id
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "01-pre_inference.yaml", "02-post_inference.yaml", "03-post_tools.yaml",
        "04-pre_inference.yaml", "05-post_inference.yaml",
    ]  # fmt: skip
    last = turn_from_yaml((folder / names[-1]).read_text())
    assert last.blocks == final.blocks
    assert last.blocks[-1].kind == BlockKind.LLM_TEXT and "42" in last.blocks[-1].text


async def test_cancel_before_the_run_starts_still_runs_its_ending():
    seen: list[str] = []

    async def runner(turn, ctx):
        seen.append("started")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled inside the run")
            raise
        return turn

    session = Session(runner)
    handle = session.start_inference("immediately cancelled")
    assert handle.cancel()  # before the task had a chance to run at all
    with pytest.raises(InferenceCancelledError):
        await handle.wait()
    assert seen == ["started", "cancelled inside the run"]
    assert session.turns[-1].metadata.error == "cancelled"
    assert [b.text for b in session.turns[-1].blocks] == ["immediately cancelled"]
