import json

import pytest

import webchat.conversation.frames as frames_module
from tests.test_go_interop import (
    GO_LEGACY_TOOL_RESULTS,
    GO_RUN,
    GO_RUN_FAILED,
    GO_RUN_STOPPED,
    MSG,
    TOOL,
)
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
            {"delta": "lo"},
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
    assert second[0].data == {"delta": ", ok"}
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


# --- geppetto interop: named tool results, and the canonical vocabulary ---------------------


def test_tool_result_carries_the_tool_name_when_known(tr):
    named = ToolResultEvent(meta=meta(), tool_result=ToolResult(id="c1", name="calc", result="4"))
    result, done = tr.to_frames(named, 1)
    assert result.data == {"result": "4", "error": None, "name": "calc"}
    assert wire(result)["name"] == "calc"
    assert done.type == "tool.done"
    legacy_go = parse_event(GO_LEGACY_TOOL_RESULTS[1])
    assert tr.to_frames(legacy_go, 2)[0].data["name"] == "calculator"


def go_frames(translator: FrameTranslator, literals: list[str], first_seq: int = 1) -> list[Frame]:
    frames: list[Frame] = []
    for offset, literal in enumerate(literals):
        frames += translator.to_frames(parse_event(literal), first_seq + offset)
    return frames


def test_a_go_agent_run_shows_as_text_thinking_and_a_tool_card(tr):
    frames = go_frames(tr, GO_RUN)
    assert [f.type for f in frames] == [
        "run.started",
        "log",  # provider-call-started: no UI meaning, kept as a debug line
        "llm.thinking.start",
        "llm.thinking.delta",
        "llm.thinking.delta",
        "llm.thinking.final",
        "llm.start",
        "llm.delta",
        "llm.delta",
        "llm.final",
        "tool.start",
        "tool.delta",
        "tool.delta",
        "tool.start",
        "log",
        "log",
        "tool.delta",
        "tool.result",
        "tool.done",
        "run.finished",
    ]
    assert [f.seq for f in frames] == sorted({f.seq for f in frames})
    by_type: dict[str, list[Frame]] = {}
    for frame in frames:
        by_type.setdefault(frame.type, []).append(frame)
    # Every frame is in the run's turn, the tool executor's too (its ids are in correlation).
    assert {(f.session_id, f.inference_id, f.turn_id) for f in frames} == {
        ("sess-1", "inf-7", "turn-3")
    }
    assert by_type["run.started"][0].data == {"profile": None, "prompt": "What is 6*7?"}
    assert by_type["run.finished"][0].data == {"status": "completed"}
    text_ids = {f.id for f in frames if f.type.startswith("llm.")}
    assert text_ids == {MSG}
    assert [f.data for f in by_type["llm.thinking.delta"]] == [
        {"delta": "The user"},
        {"delta": " wants math."},
    ]
    assert by_type["llm.thinking.final"][0].data == {"text": "The user wants math."}
    assert by_type["llm.start"][0].data == {"model": "claude-sonnet-4-5"}
    assert [f.data for f in by_type["llm.delta"]] == [
        {"delta": "Let me"},
        {"delta": " compute."},
    ]
    assert by_type["llm.final"][0].data == {
        "text": "Let me compute.",
        "usage": None,
        "stop_reason": "content_block_stop",
    }
    tool_frames = [f for f in frames if f.type.startswith("tool.")]
    assert {f.id for f in tool_frames} == {TOOL}
    started, requested = by_type["tool.start"]
    assert started.data == {"name": "calculator", "input": None}
    assert requested.data == {"name": "calculator", "input": {"expression": "6*7"}}
    args_1, args_2, running = by_type["tool.delta"]
    assert args_1.data == {"status": "pending", "delta": '{"expression":'}
    assert args_1.data["delta"] + args_2.data["delta"] == '{"expression": "6*7"}'
    assert running.data == {"status": "running"}
    assert by_type["tool.result"][0].data == {"result": "42", "error": None, "name": "calculator"}
    assert by_type["tool.done"][0].data == {"status": "success"}


@pytest.mark.parametrize(
    ("literal", "frame_type", "data"),
    [
        (GO_RUN_FAILED, "run.failed", {"error": "claude: 529 overloaded_error"}),
        (GO_RUN_STOPPED, "run.cancelled", {"reason": "context canceled"}),
    ],
    ids=["run-failed", "run-stopped"],
)
def test_go_run_ends_map_to_our_run_frames(tr, literal, frame_type, data):
    frame = one(tr, parse_event(literal))
    assert (frame.type, frame.data) == (frame_type, data)
    assert (frame.session_id, frame.inference_id, frame.turn_id) == ("sess-1", "inf-7", "turn-3")


def test_legacy_and_canonical_streams_give_the_same_frames():
    legacy = [
        StartEvent(meta=meta(model="m")),
        PartialThinkingEvent(meta=meta(model="m"), delta="Hm", completion="Hm"),
        PartialEvent(meta=meta(model="m"), delta="He", completion="He"),
        PartialEvent(meta=meta(model="m"), delta="y", completion="Hey"),
        FinalEvent(meta=meta(model="m", stop_reason="stop"), text="Hey"),
    ]
    go_meta = {
        "model": "m",
        "message_id": "m1",
        "session_id": "s1",
        "inference_id": "i1",
        "turn_id": "t1",
    }
    canonical = [
        {"type": "text-segment-started", "role": "assistant"},
        {"type": "reasoning-delta", "delta": "Hm", "text": "Hm"},
        {"type": "text-delta", "delta": "He", "text": "He"},
        {"type": "text-delta", "delta": "y", "text": "Hey"},
        {"type": "text-segment-finished", "text": "Hey", "finish_reason": "stop"},
    ]
    old, new = FrameTranslator("conv-1"), FrameTranslator("conv-1")
    legacy_frames = [f for i, e in enumerate(legacy) for f in old.to_frames(e, i + 1)]
    canonical_frames = [
        f
        for i, e in enumerate(canonical)
        for f in new.to_frames(parse_event({**e, "meta": go_meta, "correlation": {}}), i + 1)
    ]
    assert canonical_frames == legacy_frames


def text_event(kind: str, message_id: str = "m1", **fields) -> Event:
    return parse_event({"type": kind, "meta": {"message_id": message_id}, **fields})


def test_text_deltas_without_accumulated_text_are_accumulated(tr):
    tr.to_frames(text_event("text-segment-started"), 1)
    first = one(tr, text_event("text-delta", delta="Hel"), 2)
    second = one(tr, text_event("text-delta", delta="lo"), 3)
    # Frames carry only the delta; the text so far is the translator's, for the end.
    assert first.data == {"delta": "Hel"}
    assert second.data == {"delta": "lo"}
    # An empty `text` beside a delta is a producer that does not fill it, not a reset.
    third = one(tr, text_event("text-delta", delta="!", text=""), 4)
    assert third.data == {"delta": "!"}
    final = one(tr, text_event("text-segment-finished", text=""), 5)
    assert final.type == "llm.final" and final.data["text"] == "Hello!"


def test_a_translator_that_joined_mid_message_degrades_gracefully(tr):
    # It never saw the segment start: a producer's `text` still tells the whole text ...
    carried = one(tr, text_event("text-delta", "a", delta="lo", text="Hello"), 1)
    assert carried.data == {"delta": "lo"}
    assert one(tr, text_event("text-segment-finished", "a", text=""), 2).data["text"] == "Hello"
    # ... without it, the text is unknown (the UI appends each delta to its own).
    blind = one(tr, text_event("text-delta", "b", delta="lo"), 2)
    assert blind.data == {"delta": "lo"}
    assert one(tr, text_event("text-delta", "b", delta="!"), 3).data == {"delta": "!"}
    # A final without text says nothing rather than blanking what the UI has.
    assert one(tr, text_event("text-segment-finished", "b", text=""), 4).data["text"] is None
    # Mid-thinking: the missing start comes with the delta, in its own fixed slot.
    joined = tr.to_frames(text_event("reasoning-delta", "c", delta="m", text="hm"), 5)
    assert [(f.type, f.seq) for f in joined] == [
        ("llm.thinking.start", frame_seq(5, 0)),
        ("llm.thinking.delta", frame_seq(5, 1)),
    ]
    seen = FrameTranslator("conv-1")
    seen.to_frames(text_event("reasoning-segment-started", "c"), 4)
    delta_only = seen.to_frames(text_event("reasoning-delta", "c", delta="m", text="hm"), 5)
    assert [(f.type, f.seq) for f in delta_only] == [("llm.thinking.delta", frame_seq(5, 1))]
    assert delta_only[0].data == joined[1].data


def test_a_message_of_several_text_segments_accumulates_across_them(tr):
    # Claude: the text of each content block; e.g. text, a web search, more text.
    tr.to_frames(text_event("text-segment-started"), 1)
    tr.to_frames(text_event("text-delta", delta="Searching.", text="Searching."), 2)
    assert one(tr, text_event("text-segment-finished", text="Searching."), 3).data["text"] == (
        "Searching."
    )
    tr.to_frames(text_event("text-segment-started"), 4)
    second = one(tr, text_event("text-delta", delta=" Found", text=" Found"), 5)
    assert second.data == {"delta": " Found"}
    end = one(tr, text_event("text-segment-finished", text=" Found it."), 6)
    assert end.data["text"] == "Searching. Found it."
    # A producer whose `text` is already the message's is not doubled.
    other = FrameTranslator("conv-1")
    other.to_frames(text_event("text-segment-finished", text="A."), 1)
    other.to_frames(text_event("text-delta", delta=" B", text="A. B"), 2)
    assert one(other, text_event("text-segment-finished", text=""), 3).data["text"] == "A. B"
    # The provider call's end forgets the message.
    tr.to_frames(text_event("provider-call-finished"), 7)
    tr.to_frames(text_event("text-delta", delta="x"), 8)
    assert one(tr, text_event("text-segment-finished", text=""), 9).data["text"] is None


def test_reasoning_without_its_own_end_is_closed_by_the_text_end(tr):
    tr.to_frames(text_event("reasoning-segment-started"), 1)
    tr.to_frames(text_event("reasoning-delta", delta="hm"), 2)
    frames = tr.to_frames(text_event("text-segment-finished", text="ok"), 3)
    assert [(f.type, f.data) for f in frames] == [
        ("llm.thinking.final", {"text": "hm"}),
        ("llm.final", {"text": "ok", "usage": None, "stop_reason": None}),
    ]
    assert [f.seq for f in frames] == [frame_seq(3, 0), frame_seq(3, 1)]


def test_open_streams_are_bounded(tr, monkeypatch, caplog):
    monkeypatch.setattr(frames_module, "MAX_OPEN_STREAMS", 3)
    for i in range(4):
        tr.to_frames(text_event("text-segment-started", f"m{i}"), i + 1)
    assert "forgetting text of m0" in caplog.text
    for i, forgotten in enumerate(("m0", "m3")):
        tr.to_frames(text_event("text-delta", forgotten, delta="x"), 9 + 2 * i)
    assert one(tr, text_event("text-segment-finished", "m0", text=""), 13).data["text"] is None
    assert one(tr, text_event("text-segment-finished", "m3", text=""), 14).data["text"] == "x"


def tool_event(kind: str, **fields) -> Event:
    meta = {"message_id": "00000000-0000-0000-0000-000000000000"}
    return parse_event({"type": kind, "meta": meta, "tool_call_id": "t1", **fields})


def test_canonical_tool_arguments_and_failures(tr):
    tr.to_frames(tool_event("tool-call-started", tool_name="calc"), 1)
    first = one(tr, tool_event("tool-call-arguments-delta", delta='{"a"'), 2)
    second = one(tr, tool_event("tool-call-arguments-delta", delta=": 1}"), 3)
    assert first.data == {"status": "pending", "delta": '{"a"'}
    assert second.data == {"status": "pending", "delta": ": 1}"}
    failed = one(
        tr,
        tool_event(
            "tool-result-ready", tool_name="calc", result="Error: division by zero", status="error"
        ),
        4,
    )
    assert failed.data == {
        "result": "Error: division by zero",
        "error": "Error: division by zero",
        "name": "calc",
    }
    done = one(tr, tool_event("tool-call-finished", status="error"), 5)
    assert (done.type, done.id, done.data) == ("tool.done", "t1", {"status": "error"})
    # The id may be only in the correlation; input that is not JSON stays raw.
    requested = parse_event(
        {
            "type": "tool-call-requested",
            "correlation": {"tool_call_id": "t2"},
            "tool_call_id": "",
            "tool_name": "shell",
            "input": "ls -l",
        }
    )
    frame = one(tr, requested, 6)
    assert (frame.id, frame.data) == ("t2", {"name": "shell", "input": "ls -l"})


def test_provider_call_events_stay_debug_logs(tr):
    for i, literal in enumerate(e for e in GO_RUN if json.loads(e)["type"].startswith("provider")):
        frame = one(tr, parse_event(literal), i + 1)
        assert frame.type == "log" and frame.data["level"] == "debug"
        assert frame.data["event"]["correlation"]["provider_call_id"]


def test_deltas_of_an_announced_stream_go_out_short_and_get_their_envelope_back():
    from webchat.conversation.frames import StreamEnvelopes

    tr = FrameTranslator("conv-1")
    (start,) = tr.to_frames(StartEvent(meta=meta()), 1)
    (delta,) = tr.to_frames(PartialEvent(meta=meta(), delta="Hi"), 2)
    wire = json.loads(delta.json)["event"]
    # A token is its type, stream id, seq and text: the envelope came with llm.start.
    assert wire == {"type": "llm.delta", "id": delta.id, "seq": delta.seq, "delta": "Hi"}
    assert "conv_id" in json.loads(start.json)["event"]
    envelopes = StreamEnvelopes()
    envelopes.fill(json.loads(start.json)["event"])
    assert envelopes.fill(wire) == {
        k: v for k, v in json.loads(start.json)["event"].items() if k not in ("type", "model")
    } | {"type": "llm.delta", "seq": delta.seq, "delta": "Hi"}
    assert Frame.from_json(delta.seq, delta.json, "conv-1").json == delta.json
    # A translator that never announced the stream (it joined mid-message) sends it whole.
    (joined,) = FrameTranslator("conv-1").to_frames(PartialEvent(meta=meta(), delta="Hi"), 2)
    assert json.loads(joined.json)["event"]["conv_id"] == "conv-1"


def test_a_frame_read_back_is_resent_with_its_stored_text_not_encoded_again():
    # Written by an older server with other separators: resent byte for byte.
    stored = '{"sem": true, "event": {"type": "log", "seq": 7, "conv_id": "c", "message": "é"}}'
    frame = Frame.from_json(7, stored)
    assert frame.json == stored
    assert frame.data == {"message": "é"}
    assert Frame(seq=7, type="log", data={"message": "é"}, conv_id="c").json != stored
