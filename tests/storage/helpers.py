"""Builders for the storage tests."""

from collections.abc import Awaitable, Callable
from typing import Any

from webchat.conversation.frames import Frame
from webchat.storage import ConversationRecord, Store
from webchat.turns.models import Block, Turn, TurnMetadata


def make_frames(conv_id: str, seqs: range | list[int]) -> list[Frame]:
    # Non-ASCII and nested data, so "identical json text" means more than ASCII digits.
    return [
        Frame(
            seq=seq,
            type="llm.delta",
            data={"delta": f"tök{seq} ✓", "cumulative": "x" * (seq % 7), "n": {"seq": seq}},
            conv_id=conv_id,
            id=f"msg-{seq // 10}",
            session_id="sess-1",
            inference_id="inf-1",
            turn_id="turn-1",
        )
        for seq in seqs
    ]


def make_turns() -> list[Turn]:
    first = Turn(blocks=[Block.system("be brief"), Block.user("what is 2+3?")])
    second = first.fork(
        Block.tool_call("call-1", "calculator", {"expression": "2+3"}),
        Block.tool_use("call-1", {"value": 5}),
        Block.tool_use("call-2", None, error="boom"),
    )
    second.metadata = TurnMetadata(session_id="sess-1", inference_id="inf-2", model="m")
    third = second.fork(Block.llm_text("5 — done"), Block.reasoning("easy"))
    third.data["note"] = {"nested": [1, 2.5, None]}
    return [first, second, third]


def make_record(
    conv_id: str = "conv-1", *, updated_at: float = 100.0, **kw: Any
) -> ConversationRecord:
    fields: dict[str, Any] = {
        "session_id": "sess-1",
        "profile_slug": "default",
        "overrides": {"system_prompt": "hi", "tools": ["calculator"]},
        "signature": "sig-abc",
        "title": "what is 2+3?",
        "created_at": 50.0,
        "updated_at": updated_at,
        "last_seq": 0,
    }
    fields.update(kw)
    return ConversationRecord(conv_id=conv_id, **fields)


OpenStore = Callable[[], Awaitable[Store]]
"""Opens another store on the same data (another process, or the same one restarted)."""
