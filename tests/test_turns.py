import pytest

from webchat.events import Usage
from webchat.turns import Block, BlockKind, Turn, TurnMetadata, turn_from_yaml, turn_to_yaml


def sample_turn() -> Turn:
    return Turn(
        blocks=[
            Block.system("be brief"),
            Block.user("hi, ünïcode"),
            Block.reasoning("thinking"),
            Block.llm_text("hello"),
            Block.tool_call("c1", "calculator", {"expression": "1+1"}),
            Block.tool_use("c1", 2),
            Block(kind=BlockKind.OTHER, payload={"anything": [1, 2]}),
        ],
        metadata=TurnMetadata(
            session_id="s", inference_id="i", model="m", usage=Usage(input_tokens=1),
            stop_reason="stop",
        ),
        data={"note": "x"},
    )  # fmt: skip


def test_kinds_and_default_roles():
    turn = sample_turn()
    assert [b.kind.value for b in turn.blocks] == [
        "system", "user", "reasoning", "llm_text", "tool_call", "tool_use", "other",
    ]  # fmt: skip
    assert [b.role for b in turn.blocks[:6]] == [
        "system", "user", "assistant", "assistant", "assistant", "tool",
    ]  # fmt: skip
    assert turn.blocks[4].payload == {
        "id": "c1",
        "name": "calculator",
        "args": {"expression": "1+1"},
    }
    assert turn.blocks[5].payload == {"id": "c1", "result": 2}


def test_yaml_snapshot_round_trip():
    turn = sample_turn()
    text = turn_to_yaml(turn)
    assert "kind: tool_call" in text and "ünïcode" in text
    assert turn_from_yaml(text) == turn


def test_yaml_snapshot_rejects_non_mapping():
    with pytest.raises(ValueError):
        turn_from_yaml("- just\n- a list\n")


def test_pending_tool_calls_are_calls_without_results():
    turn = Turn(
        blocks=[
            Block.tool_call("a", "t", {}),
            Block.tool_call("b", "t", {}),
            Block.tool_use("a", "done"),
        ]
    )
    assert [b.payload["id"] for b in turn.pending_tool_calls()] == ["b"]


def test_fork_copies_blocks_and_gets_a_new_id():
    turn = sample_turn()
    child = turn.fork(Block.user("next"))
    assert child.id != turn.id
    assert child.blocks[:-1] == turn.blocks and child.blocks[-1].text == "next"
    child.blocks[0].payload["text"] = "changed"
    assert turn.blocks[0].text == "be brief"
    assert child.metadata == TurnMetadata()


def test_last_user_text():
    turn = Turn(blocks=[Block.user("one"), Block.llm_text("x"), Block.user("two")])
    assert turn.last_user_text() == "two"
    assert Turn().last_user_text() == ""
