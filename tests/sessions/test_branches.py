"""Branches in a session: a run forks the turn it continues, and sees that branch only."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.scripted import ScriptedEngine, say
from webchat.engines import EngineError
from webchat.sessions import ROOT, Session, UnknownTurnError, branches
from webchat.turns import Block, Turn


def texts(turn: Turn) -> list[str]:
    return [b.text for b in turn.blocks]


async def chat(session: Session, prompt: str, parent: str | None = None) -> Turn:
    return await session.start_inference(prompt, parent_turn_id=parent).wait()


async def test_runs_continue_the_tip_by_default() -> None:
    session = Session(ScriptedEngine(say("A1"), say("A2")).run_inference)
    first = await chat(session, "one")
    second = await chat(session, "two")
    assert first.metadata.parent_turn_id is None
    assert second.metadata.parent_turn_id == first.id
    tree = branches.children(session.turns)
    assert tree == {ROOT: [first.id], first.id: [second.id], second.id: []}


async def test_a_fork_from_an_older_turn_sees_only_that_branch() -> None:
    engine = ScriptedEngine(say("A1"), say("A2"), say("A2 again"), say("A3"))
    session = Session(engine.run_inference)
    first = await chat(session, "one")
    second = await chat(session, "two")

    # Regenerate the second answer: fork from its parent.
    handle = session.start_inference("two", parent_turn_id=second.metadata.parent_turn_id)
    assert handle.parent_turn_id == first.id
    sibling = await handle.wait()
    assert texts(engine.seen[2]) == ["one", "A1", "two"]
    assert sibling.metadata.parent_turn_id == first.id
    assert branches.children(session.turns)[first.id] == [second.id, sibling.id]

    # Continuing now follows the newest branch, never the abandoned one.
    third = await chat(session, "three")
    assert third.metadata.parent_turn_id == sibling.id
    assert texts(engine.seen[3]) == ["one", "A1", "two", "A2 again", "three"]
    assert "A2" not in texts(third)
    assert [t.id for t in branches.path_to(session.turns, third.id)] == [
        first.id,
        sibling.id,
        third.id,
    ]
    # The other branch is still there, whole, and can be continued explicitly.
    assert [t.id for t in branches.path_to(session.turns, second.id)] == [first.id, second.id]
    assert session.turns == [first, second, sibling, third]  # append-only, creation order


async def test_an_empty_parent_starts_a_root_with_no_history() -> None:
    engine = ScriptedEngine(say("A1"), say("B1"))
    session = Session(engine.run_inference)
    first = await chat(session, "one")
    edited = await chat(session, "one, edited", ROOT)
    assert texts(engine.seen[1]) == ["one, edited"]
    assert edited.metadata.parent_turn_id is None
    assert branches.children(session.turns)[ROOT] == [first.id, edited.id]
    assert branches.tip(session.turns) is edited


async def test_an_unknown_parent_is_refused_before_anything_starts() -> None:
    engine = ScriptedEngine(say("A1"))
    session = Session(engine.run_inference)
    with pytest.raises(UnknownTurnError) as info:
        session.start_inference("hello", parent_turn_id="no-such-turn")
    assert info.value.turn_id == "no-such-turn"
    assert not session.is_running and session.turns == [] and engine.calls == 0


@pytest.mark.parametrize("outcome", ["error", "cancelled"])
async def test_a_failed_or_cancelled_run_keeps_its_branch(outcome: str) -> None:
    class Failing(ScriptedEngine):
        async def run_inference(self, turn: Turn, ctx: object) -> Turn:
            if self.calls >= 2:
                if outcome == "cancelled":
                    await asyncio.Event().wait()  # until cancelled
                raise EngineError("boom")
            return await super().run_inference(turn, ctx)  # type: ignore[arg-type]

    session = Session(Failing(say("A1"), say("A2")).run_inference)
    first = await chat(session, "one")
    await chat(session, "two")
    handle = session.start_inference("two again", parent_turn_id=first.id)
    if outcome == "cancelled":
        await asyncio.sleep(0.01)
        handle.cancel()
    with pytest.raises(Exception):  # noqa: B017 - EngineError or InferenceCancelledError
        await handle.wait()
    failed = session.turns[-1]
    assert failed.id == handle.turn_id
    assert failed.metadata.stop_reason == outcome
    assert failed.metadata.parent_turn_id == first.id
    assert texts(failed) == ["one", "A1", "two again"]


def test_turns_stored_before_branches_are_linked_as_a_line() -> None:
    # The JSON of an older version has no parent_turn_id key at all.
    old = [Turn(blocks=[Block.user(str(i))]).model_dump(mode="json") for i in range(3)]
    for body in old:
        del body["metadata"]["parent_turn_id"]
    turns = [Turn.model_validate(body) for body in old]
    session = Session(ScriptedEngine(say("x")).run_inference, turns=turns)
    assert [t.metadata.parent_turn_id for t in session.turns] == [None, turns[0].id, turns[1].id]


def test_a_stored_root_stays_a_root() -> None:
    # A second root (an edited first message) is written with an explicit null parent.
    first, second = Turn(), Turn()
    first.metadata.parent_turn_id = second.metadata.parent_turn_id = None
    loaded = [Turn.model_validate_json(t.model_dump_json()) for t in (first, second)]
    branches.link_legacy(loaded)
    assert branches.children(loaded)[ROOT] == [first.id, second.id]


def test_damaged_links_still_give_a_forest() -> None:
    a, b, c = Turn(), Turn(), Turn()
    a.metadata.parent_turn_id = c.id  # points forward: impossible in a sound history
    b.metadata.parent_turn_id = "elsewhere"
    c.metadata.parent_turn_id = a.id
    tree = branches.children([a, b, c])
    assert tree == {ROOT: [a.id, b.id], a.id: [c.id], b.id: [], c.id: []}
    assert branches.path_to([a, b, c], c.id) == [a, c]
    with pytest.raises(UnknownTurnError):
        branches.path_to([a, b, c], "nope")
