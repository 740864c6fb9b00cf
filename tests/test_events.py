import json

import pytest

from webchat.events import (
    EVENT_TYPES,
    AgentModeSwitchEvent,
    ErrorEvent,
    EventMeta,
    EventParseError,
    FinalEvent,
    GenericEvent,
    InfoEvent,
    InterruptEvent,
    LogEvent,
    PartialEvent,
    PartialThinkingEvent,
    StartEvent,
    ToolCall,
    ToolCallEvent,
    ToolCallExecuteEvent,
    ToolCallExecutionResultEvent,
    ToolResult,
    ToolResultEvent,
    Usage,
    parse_event,
)

META = EventMeta(
    session_id="s-1",
    inference_id="i-1",
    turn_id="t-1",
    model="gpt-x",
    usage=Usage(input_tokens=3, output_tokens=5, cached_tokens=1),
    stop_reason="stop",
    duration_ms=12,
    extra={"k": [1, 2]},
)

SAMPLES = [
    StartEvent(meta=META),
    PartialEvent(meta=META, delta="lo", completion="hello"),
    PartialThinkingEvent(meta=META, delta="hm", completion="hmm"),
    FinalEvent(meta=META, text="hello"),
    InterruptEvent(meta=META, text="hel"),
    ErrorEvent(meta=META, error_string="boom"),
    ToolCallEvent(meta=META, tool_call=ToolCall(id="c1", name="calc", input='{"a": 1}')),
    ToolCallExecuteEvent(meta=META, tool_call=ToolCall(id="c1", name="calc", input="{}")),
    ToolCallExecutionResultEvent(meta=META, tool_result=ToolResult(id="c1", result="42")),
    ToolResultEvent(meta=META, tool_result=ToolResult(id="c1", result="42")),
    LogEvent(meta=META, level="warn", message="careful", fields={"x": 1}),
    InfoEvent(meta=META, message="fyi", data={"y": "z"}),
    AgentModeSwitchEvent(meta=META, message="switch", data={"from": "a", "to": "b"}),
]


def test_every_required_type_is_known():
    required = {
        "start", "partial", "partial-thinking", "final", "interrupt", "error", "tool-call",
        "tool-call-execute", "tool-call-execution-result", "tool-result", "log", "info",
        "agent-mode-switch",
    }  # fmt: skip
    assert required <= set(EVENT_TYPES)
    assert {type(e).model_fields["type"].default for e in SAMPLES} == required


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_round_trip_keeps_type_and_fields(event):
    wire = event.to_json()
    parsed = parse_event(wire)
    assert type(parsed) is type(event)
    assert parsed == event
    assert parse_event(wire.encode()) == event
    assert parse_event(json.loads(wire)) == event


def test_wire_shape_matches_geppetto():
    wire = json.loads(PartialEvent(meta=META, delta="d", completion="cd").to_json())
    assert wire["type"] == "partial"
    assert wire["delta"] == "d" and wire["completion"] == "cd"
    assert set(wire["meta"]) >= {"message_id", "session_id", "inference_id", "turn_id", "model"}
    assert wire["meta"]["usage"] == {"input_tokens": 3, "output_tokens": 5, "cached_tokens": 1}
    assert wire["meta"]["stop_reason"] == "stop" and wire["meta"]["duration_ms"] == 12
    # Go omits empty optionals; so do we.
    bare = json.loads(StartEvent().to_json())
    assert set(bare["meta"]) == {"message_id"}


def test_error_event_uses_geppetto_field_name():
    wire = json.loads(ErrorEvent(error_string="bad").to_json())
    assert wire["error_string"] == "bad"


def test_legacy_run_id_is_read_as_session_id():
    event = parse_event({"type": "final", "meta": {"run_id": "old-session"}, "text": "x"})
    assert event.meta.session_id == "old-session"
    assert "run_id" not in event.to_json()
    both = parse_event({"type": "start", "meta": {"run_id": "old", "session_id": "new"}})
    assert both.meta.session_id == "new"


def test_unknown_type_becomes_generic_event_keeping_fields():
    raw = {"type": "web-search-started", "meta": {"session_id": "s"}, "query": "cats", "n": 2}
    event = parse_event(json.dumps(raw))
    assert isinstance(event, GenericEvent)
    assert event.type == "web-search-started"
    assert event.meta.session_id == "s"
    again = json.loads(event.to_json())
    assert again["query"] == "cats" and again["n"] == 2


def test_known_type_keeps_unknown_extra_fields():
    event = parse_event({"type": "final", "text": "t", "provider_extra": {"a": 1}})
    assert isinstance(event, FinalEvent)
    assert json.loads(event.to_json())["provider_extra"] == {"a": 1}


@pytest.mark.parametrize(
    "bad", ["{not json", "[1, 2]", '{"meta": {}}', '{"type": ""}', '{"type": "tool-call"}']
)
def test_malformed_events_raise_a_clear_error(bad):
    with pytest.raises(EventParseError):
        parse_event(bad)


def test_usage_adds_up():
    total = Usage(input_tokens=1, output_tokens=2) + Usage(
        input_tokens=10, output_tokens=20, cached_tokens=4
    )
    assert (total.input_tokens, total.output_tokens, total.cached_tokens) == (11, 22, 4)


def test_tool_call_arguments_decode():
    assert ToolCall(id="1", name="n", input='{"a": 2}').arguments() == {"a": 2}
    assert ToolCall(id="1", name="n", input="").arguments() == {}


def test_lifecycle_events_round_trip():
    from webchat.events import (
        RunCancelledEvent,
        RunFailedEvent,
        RunFinishedEvent,
        RunStartedEvent,
        UserMessageEvent,
    )

    for event in (
        UserMessageEvent(meta=META, text="hi"),
        RunStartedEvent(meta=META, profile="default"),
        RunFinishedEvent(meta=META),
        RunFailedEvent(meta=META, error="bad"),
        RunCancelledEvent(meta=META, reason="user"),
    ):
        parsed = parse_event(event.to_json())
        assert type(parsed) is type(event) and parsed == event


def test_tool_result_name_round_trips():
    # geppetto's ToolResult has `name` (omitempty) beside id and result.
    go = '{"type":"tool-result","meta":{"message_id":"m"},"tool_result":{"id":"c","name":"calc","result":"4"}}'  # noqa: E501
    event = parse_event(go)
    assert isinstance(event, ToolResultEvent)
    assert event.tool_result.name == "calc"
    assert json.loads(event.to_json()) == json.loads(go)
    made = ToolResultEvent(tool_result=ToolResult(id="c", result="4", name="calc"))
    assert json.loads(made.to_json())["tool_result"]["name"] == "calc"


def test_run_failed_travels_as_error_string():
    from webchat.events import RunFailedEvent

    # Go's common event part types `error` as a Go error: a string there fails its decoder.
    wire = json.loads(RunFailedEvent(meta=META, error="bad").to_json())
    assert "error" not in wire
    assert wire["error_string"] == "bad"
    # Entries written before the change still read.
    old = parse_event({"type": "run.failed", "meta": {"message_id": "m"}, "error": "old"})
    assert isinstance(old, RunFailedEvent)
    assert old.error == "old"
    assert "error" not in json.loads(old.to_json())
