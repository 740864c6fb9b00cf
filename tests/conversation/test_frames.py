import json

import pytest

from webchat.conversation.frames import (
    FRAMES_PER_EVENT,
    Frame,
    FrameTranslator,
    frame_seq,
    message_seq_of,
    transport_after_seq,
)
from webchat.events import (
    AgentModeSwitchEvent,
    ErrorEvent,
    Event,
    EventMeta,
    FinalEvent,
    InfoEvent,
    InterruptEvent,
    LogEvent,
    PartialEvent,
    PartialThinkingEvent,
    RunCancelledEvent,
    RunFailedEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StartEvent,
    ToolCall,
    ToolCallEvent,
    ToolCallExecuteEvent,
    ToolCallExecutionResultEvent,
    ToolResult,
    ToolResultEvent,
    Usage,
    UserMessageEvent,
    parse_event,
)


def meta(message_id: str = "m1", **fields) -> EventMeta:
    return EventMeta(
        message_id=message_id, session_id="s1", inference_id="i1", turn_id="t1", **fields
    )


def wire(frame: Frame) -> dict:
    decoded = json.loads(frame.json)
    assert decoded["sem"] is True
    assert set(decoded) == {"sem", "event"}
    return decoded["event"]


def one(translator: FrameTranslator, event: Event, message_seq: int = 1) -> Frame:
    frames = translator.to_frames(event, message_seq)
    assert len(frames) == 1, [f.type for f in frames]
    return frames[0]


@pytest.fixture
def tr() -> FrameTranslator:
    return FrameTranslator("conv-1")


def test_json_shape_has_envelope_ids_and_fields(tr):
    frame = one(tr, UserMessageEvent(meta=meta("u1"), text="hello"), message_seq=7)
    assert frame.seq == 7 * FRAMES_PER_EVENT
    assert wire(frame) == {
        "type": "chat.user_message",
        "id": "u1",
        "seq": 28,
        "conv_id": "conv-1",
        "session_id": "s1",
        "inference_id": "i1",
        "turn_id": "t1",
        "text": "hello",
    }
    assert list(wire(frame))[:3] == ["type", "id", "seq"]


def test_unknown_ids_are_left_out(tr):
    event = UserMessageEvent(meta=EventMeta(message_id="u1"), text="x")
    event_json = wire(one(tr, event))
    assert event_json["conv_id"] == "conv-1"
    assert not {"session_id", "inference_id", "turn_id"} & set(event_json)


def test_json_is_computed_once():
    frame = Frame(seq=1, type="log", data={"message": "x"}, conv_id="c")
    assert frame.json is frame.json
    data_before = frame.json
    frame.data["message"] = "changed"  # the wire text was fixed at construction
    assert frame.json is data_before
    with pytest.raises(AttributeError):
        frame.json = "other"  # type: ignore[misc]


def test_from_json_restores_a_persisted_frame(tr):
    usage = Usage(input_tokens=1, output_tokens=2)
    frame = one(tr, FinalEvent(meta=meta(usage=usage), text="héllo"), message_seq=3)
    restored = Frame.from_json(frame.seq, frame.json)
    assert restored == frame
    assert restored.json == frame.json
    bare = Frame(seq=2, type="run.finished", data={}, conv_id="c")
    assert Frame.from_json(2, bare.json) == bare
    with pytest.raises(ValueError):
        Frame.from_json(frame.seq + 1, frame.json)
    for bad in ("not json", "[]", '{"sem": true}', '{"event": {"seq": 1}}'):
        with pytest.raises(ValueError):
            Frame.from_json(1, bad)


def test_data_cannot_overwrite_the_envelope():
    frame = Frame(seq=5, type="log", data={"type": "evil", "seq": 0, "x": 1}, conv_id="c")
    assert wire(frame)["type"] == "log"
    assert wire(frame)["seq"] == 5
    assert wire(frame)["x"] == 1


@pytest.mark.parametrize(
    ("event", "frame_type", "data"),
    [
        (RunStartedEvent(meta=meta(), profile="default"), "run.started", {"profile": "default"}),
        (RunFinishedEvent(meta=meta()), "run.finished", {}),
        (RunFailedEvent(meta=meta(), error="boom"), "run.failed", {"error": "boom"}),
        (RunCancelledEvent(meta=meta(), reason="user"), "run.cancelled", {"reason": "user"}),
        (StartEvent(meta=meta(model="gpt-x")), "llm.start", {"model": "gpt-x"}),
        (
            PartialEvent(meta=meta(), delta="lo", completion="hello"),
            "llm.delta",
            {"delta": "lo", "cumulative": "hello"},
        ),
        (
            InterruptEvent(meta=meta(), text="partial"),
            "llm.final",
            {"text": "partial", "interrupted": True},
        ),
        (ErrorEvent(meta=meta(), error_string="rate limited"), "error", {"error": "rate limited"}),
        (
            LogEvent(meta=meta(), level="warn", message="careful", fields={"k": 1}),
            "log",
            {"level": "warn", "message": "careful", "fields": {"k": 1}},
        ),
        (
            InfoEvent(meta=meta(), message="fyi", data={"a": "b"}),
            "log",
            {"level": "info", "message": "fyi", "data": {"a": "b"}},
        ),
        (
            AgentModeSwitchEvent(meta=meta(), message="switch", data={"from": "a", "to": "b"}),
            "agent.mode",
            {"message": "switch", "data": {"from": "a", "to": "b"}},
        ),
    ],
)
def test_single_frame_mappings(tr, event, frame_type, data):
    frame = one(tr, event)
    assert frame.type == frame_type
    assert frame.data == data
    assert frame.id == "m1"
    assert (frame.session_id, frame.inference_id, frame.turn_id) == ("s1", "i1", "t1")
    event_json = wire(frame)
    assert event_json["type"] == frame_type
    assert event_json["id"] == "m1"
    for key, value in data.items():
        assert event_json[key] == value


def test_final_carries_text_usage_and_stop_reason(tr):
    usage = Usage(input_tokens=3, output_tokens=5)
    frame = one(tr, FinalEvent(meta=meta(usage=usage, stop_reason="stop"), text="done"))
    assert frame.type == "llm.final"
    assert frame.data == {
        "text": "done",
        "usage": {"input_tokens": 3, "output_tokens": 5},
        "stop_reason": "stop",
    }


def test_thinking_start_delta_final_sequence(tr):
    first = tr.to_frames(PartialThinkingEvent(meta=meta(), delta="Hm", completion="Hm"), 1)
    second = tr.to_frames(PartialThinkingEvent(meta=meta(), delta=", ok", completion="Hm, ok"), 2)
    text = tr.to_frames(PartialEvent(meta=meta(), delta="Yes", completion="Yes"), 3)
    final = tr.to_frames(FinalEvent(meta=meta(), text="Yes"), 4)
    frames = first + second + text + final
    assert [f.type for f in frames] == [
        "llm.thinking.start",
        "llm.thinking.delta",
        "llm.thinking.delta",
        "llm.delta",
        "llm.thinking.final",
        "llm.final",
    ]
    assert [f.seq for f in frames] == sorted({f.seq for f in frames})
    assert {f.id for f in frames} == {"m1"}
    assert second[0].data == {"delta": ", ok", "cumulative": "Hm, ok"}
    assert final[0].data == {"text": "Hm, ok"}
    assert final[1].data["text"] == "Yes"
    # Thinking is per message id, and closed by the final: the next message starts afresh.
    again = tr.to_frames(FinalEvent(meta=meta(), text="Yes"), 5)
    assert [f.type for f in again] == ["llm.final"]
    other = tr.to_frames(PartialThinkingEvent(meta=meta("m2"), delta="a", completion="a"), 6)
    assert [f.type for f in other] == ["llm.thinking.start", "llm.thinking.delta"]


def test_interrupt_closes_streamed_thinking(tr):
    tr.to_frames(PartialThinkingEvent(meta=meta(), delta="Hm", completion="Hm"), 1)
    frames = tr.to_frames(InterruptEvent(meta=meta(), text=""), 2)
    assert [f.type for f in frames] == ["llm.thinking.final", "llm.final"]
    assert frames[1].data == {"text": "", "interrupted": True}


def test_optional_frame_leaves_its_slot_empty(tr):
    # A process that never saw the thinking gives llm.final the same seq as one that did.
    seen = FrameTranslator("conv-1")
    seen.to_frames(PartialThinkingEvent(meta=meta(), delta="Hm", completion="Hm"), 1)
    with_thinking = seen.to_frames(FinalEvent(meta=meta(), text="x"), 9)
    without = tr.to_frames(FinalEvent(meta=meta(), text="x"), 9)
    assert with_thinking[-1].seq == without[-1].seq == frame_seq(9, 1)


def test_tool_start_delta_result_done(tr):
    call = ToolCall(id="call_1", name="calculator", input='{"expression": "6*7"}')
    start = tr.to_frames(ToolCallEvent(meta=meta(), tool_call=call), 1)
    running = tr.to_frames(ToolCallExecuteEvent(meta=meta("x"), tool_call=call), 2)
    result = tr.to_frames(
        ToolCallExecutionResultEvent(
            meta=meta("y"), tool_result=ToolResult(id="call_1", result="42")
        ),
        3,
    )
    frames = start + running + result
    assert [f.type for f in frames] == ["tool.start", "tool.delta", "tool.result", "tool.done"]
    assert {f.id for f in frames} == {"call_1"}
    assert start[0].data == {"name": "calculator", "input": {"expression": "6*7"}}
    assert running[0].data == {"status": "running"}
    assert result[0].data == {"result": "42", "error": None}
    assert result[1].data == {}
    assert result[0].seq < result[1].seq


def test_tool_input_that_is_not_json_stays_raw(tr):
    call = ToolCall(id="c", name="calculator", input="{not json")
    assert one(tr, ToolCallEvent(meta=meta(), tool_call=call)).data["input"] == "{not json"


def test_tool_errors_come_from_meta_extra(tr):
    for cls in (ToolCallExecutionResultEvent, ToolResultEvent):
        event = cls(
            meta=meta(extra={"error": "tool 'x' timed out"}),
            tool_result=ToolResult(id="c9", result="error: tool 'x' timed out"),
        )
        result, done = tr.to_frames(event, 1)
        assert (result.type, done.type) == ("tool.result", "tool.done")
        assert result.data == {
            "result": "error: tool 'x' timed out",
            "error": "tool 'x' timed out",
        }


def test_unknown_event_becomes_a_debug_log(tr):
    event = parse_event({"type": "custom-thing", "meta": {"message_id": "g1"}, "answer": 42})
    frame = one(tr, event)
    assert frame.type == "log"
    assert frame.data["level"] == "debug"
    assert frame.data["message"] == "event custom-thing"
    assert frame.data["event"]["answer"] == 42
    assert frame.data["event"]["type"] == "custom-thing"
    assert wire(frame)["event"]["answer"] == 42


def test_frames_survive_the_wire_form_roundtrip(tr):
    # What the coordinator decodes from the transport maps the same as the original event.
    event = ToolCallEvent(meta=meta(), tool_call=ToolCall(id="c", name="n", input="{}"))
    assert one(tr, parse_event(event.to_json().encode())).data == {"name": "n", "input": {}}


def test_frame_seq_and_message_seq_of_are_inverse():
    for message_seq in (0, 1, 2, 1_700_000_000_000_000 + 999):
        for slot in range(FRAMES_PER_EVENT):
            seq = frame_seq(message_seq, slot)
            assert message_seq_of(seq) == message_seq
    assert frame_seq(1, 0) > frame_seq(0, FRAMES_PER_EVENT - 1)
    with pytest.raises(ValueError):
        frame_seq(1, FRAMES_PER_EVENT)
    with pytest.raises(ValueError):
        frame_seq(-1, 0)


def test_transport_after_seq_replays_the_message_of_since():
    assert transport_after_seq(0) == 0
    # since = first frame of message 5: message 5 may have more frames, so replay it.
    assert transport_after_seq(frame_seq(5, 0)) == 4
    assert transport_after_seq(frame_seq(5, 3)) == 4
