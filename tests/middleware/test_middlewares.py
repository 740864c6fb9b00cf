import logging

import pytest

from webchat.engines import RunContext
from webchat.middleware import (
    compose,
    reorder_tool_results,
    system_prompt_middleware,
    tool_result_reorder_middleware,
    turn_logging_middleware,
)
from webchat.turns import Block, BlockKind, Turn


def recording_handler(seen: list[list[str]]):
    async def handle(turn: Turn, ctx: RunContext) -> Turn:
        seen.append([f"{b.kind.value}:{b.text or b.payload.get('id', '')}" for b in turn.blocks])
        return turn

    return handle


async def test_first_listed_middleware_is_outermost():
    order: list[str] = []

    def tag(name: str):
        def wrap(inner):
            async def handle(turn, ctx):
                order.append(f"{name}>")
                result = await inner(turn, ctx)
                order.append(f"<{name}")
                return result

            return handle

        return wrap

    async def engine(turn, ctx):
        order.append("engine")
        return turn

    await compose(engine, [tag("a"), tag("b")])(Turn(), RunContext())
    assert order == ["a>", "b>", "engine", "<b", "<a"]


async def test_system_prompt_inserted_once_across_iterations():
    seen: list[list[str]] = []
    handler = compose(recording_handler(seen), [system_prompt_middleware("Be kind.")])
    turn = Turn(blocks=[Block.user("hi")])
    for _ in range(3):  # the tool loop calls the chain several times
        turn = await handler(turn, RunContext())
    assert seen[-1] == ["system:Be kind.", "user:hi"]
    assert len(turn.blocks_of(BlockKind.SYSTEM)) == 1


async def test_system_prompt_appends_to_existing_system_block_once():
    handler = compose(recording_handler([]), [system_prompt_middleware("Extra rule.")])
    turn = Turn(blocks=[Block.system("Base."), Block.user("hi")])
    for _ in range(2):
        turn = await handler(turn, RunContext())
    assert turn.blocks[0].text == "Base.\n\nExtra rule."


async def test_changed_system_prompt_replaces_only_what_it_added():
    turn = Turn(blocks=[Block.system("Base."), Block.user("hi")])
    await compose(recording_handler([]), [system_prompt_middleware("Old.")])(turn, RunContext())
    await compose(recording_handler([]), [system_prompt_middleware("New.")])(turn, RunContext())
    assert turn.blocks[0].text == "Base.\n\nNew."

    fresh = Turn(blocks=[Block.user("hi")])
    await compose(recording_handler([]), [system_prompt_middleware("Old.")])(fresh, RunContext())
    await compose(recording_handler([]), [system_prompt_middleware("New.")])(fresh, RunContext())
    assert [b.text for b in fresh.blocks_of(BlockKind.SYSTEM)] == ["New."]


def ids(blocks):
    return [f"{b.kind.value[5:] if b.kind.value.startswith('tool_') else b.kind.value}"
            f"{':' + b.payload['id'] if 'id' in b.payload else ''}" for b in blocks]  # fmt: skip


def test_reorder_puts_results_right_after_their_calls():
    blocks = [
        Block.user("q"),
        Block.tool_call("a", "t", {}),
        Block.tool_call("b", "t", {}),
        Block.llm_text("interleaved"),
        Block.tool_use("b", 2),
        Block.user("more"),
        Block.tool_use("a", 1),
        Block.tool_use("orphan", 0),
    ]
    assert ids(reorder_tool_results(blocks)) == [
        "user", "call:a", "call:b", "use:a", "use:b", "llm_text", "user", "use:orphan",
    ]  # fmt: skip


def test_reorder_keeps_a_correct_transcript_unchanged():
    blocks = [Block.tool_call("a", "t", {}), Block.tool_use("a", 1), Block.llm_text("x")]
    assert reorder_tool_results(blocks) == blocks


async def test_reorder_middleware_runs_before_the_model_call():
    seen: list[list[str]] = []
    handler = compose(recording_handler(seen), [tool_result_reorder_middleware])
    turn = Turn(blocks=[Block.tool_call("a", "t", {}), Block.user("x"), Block.tool_use("a", 1)])
    await handler(turn, RunContext())
    assert seen[0] == ["tool_call:a", "tool_use:a", "user:x"]


async def test_turn_logging_logs_ids_and_counts_not_text(caplog):
    handler = compose(recording_handler([]), [turn_logging_middleware()])
    with caplog.at_level(logging.INFO, logger="webchat.turns"):
        await handler(Turn(blocks=[Block.user("secret words")]), RunContext(inference_id="inf-1"))
    text = caplog.text
    assert "inf-1" in text and "user=1" in text
    assert "secret words" not in text


async def test_turn_logging_reports_failures(caplog):
    async def failing(turn, ctx):
        raise RuntimeError("provider down")

    handler = compose(failing, [turn_logging_middleware()])
    with caplog.at_level(logging.INFO, logger="webchat.turns"), pytest.raises(RuntimeError):
        await handler(Turn(), RunContext())
    assert "model call failed" in caplog.text
