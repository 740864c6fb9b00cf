"""Interop with Go programs built on geppetto, which share our Redis streams.

The JSON literals below are what geppetto's Go structs marshal to (field order and
``omitempty`` as their struct tags say): the common part is ``type``, ``error`` (a Go
``error``, written as ``{}`` when set), ``meta`` (inference data first, then ``message_id``
and the ids); canonical events add ``correlation``. Go decodes a top-level ``error`` only when
it is absent or ``null``, and ``meta.message_id`` only when it is a UUID.
"""

import inspect
import json
import uuid
from typing import Any

import pytest

import webchat.events.canonical as canonical_module
import webchat.events.lifecycle as lifecycle_module
import webchat.events.models as models_module
from webchat.events import (
    AgentModeSwitchEvent,
    CanonicalRunFailedEvent,
    CanonicalRunFinishedEvent,
    CanonicalRunStartedEvent,
    CanonicalRunStoppedEvent,
    CorrelatedEvent,
    Correlation,
    ErrorEvent,
    Event,
    EventMeta,
    FinalEvent,
    GenericEvent,
    InfoEvent,
    InterruptEvent,
    LogEvent,
    PartialEvent,
    PartialThinkingEvent,
    ProviderCallFinishedEvent,
    ProviderCallMetadataUpdatedEvent,
    ProviderCallStartedEvent,
    ReasoningDeltaEvent,
    ReasoningSegmentFinishedEvent,
    ReasoningSegmentStartedEvent,
    RunCancelledEvent,
    RunFailedEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StartEvent,
    TextDeltaEvent,
    TextSegmentFinishedEvent,
    TextSegmentStartedEvent,
    ToolCall,
    ToolCallArgumentsDeltaEvent,
    ToolCallEvent,
    ToolCallExecuteEvent,
    ToolCallExecutionResultEvent,
    ToolCallFinishedEvent,
    ToolCallRequestedEvent,
    ToolCallStartedEvent,
    ToolExecutionStartedEvent,
    ToolResult,
    ToolResultEvent,
    ToolResultReadyEvent,
    Usage,
    UserMessageEvent,
    parse_event,
)

# One Claude run of a Go agent: session sess-1, inference (geppetto: run) inf-7, turn turn-3.
MSG = "3f2b8c1e-9d4a-4c6b-8e21-5a7d9c0b1e42"
ZERO = "00000000-0000-0000-0000-000000000000"  # Go's tool executor publishes an empty meta
CALL = "claude:msg_01XFDUDYJgAACzvnptvVoYEL"
THINK = f"claude:{CALL}:block:0:reasoning"
TEXT = f"claude:{CALL}:block:1:text"
TOOL = "toolu_01A09q90qw90lq917835lq9"

_META = (
    '{"model":"claude-sonnet-4-5","max_tokens":4096,'
    f'"message_id":"{MSG}","session_id":"sess-1","inference_id":"inf-7","turn_id":"turn-3"}}'
)
_RUN_CORR = '{"session_id":"sess-1","run_id":"inf-7","turn_id":"turn-3"}'
_CALL_CORR = f'{{"run_id":"inf-7","provider_call_id":"{CALL}"}}'
_THINK_CORR = f'{{"run_id":"inf-7","provider_call_id":"{CALL}","segment_id":"{THINK}"}}'
_TEXT_CORR = f'{{"run_id":"inf-7","provider_call_id":"{CALL}","segment_id":"{TEXT}"}}'
_TOOL_CORR = f'{{"run_id":"inf-7","provider_call_id":"{CALL}","tool_call_id":"{TOOL}"}}'
_EXEC_META = f'{{"message_id":"{ZERO}"}}'
_EXEC_CORR = (
    '{"session_id":"sess-1","run_id":"inf-7","turn_id":"turn-3",'
    f'"provider_call_id":"{CALL}","tool_call_id":"{TOOL}"}}'
)
_USAGE = '{"input_tokens":412,"output_tokens":96,"cache_read_input_tokens":128}'

# The canonical events of that run, in the order Go publishes them.
GO_RUN: list[str] = [
    f'{{"type":"run-started","meta":{_META},"correlation":{_RUN_CORR},"prompt":"What is 6*7?"}}',
    f'{{"type":"provider-call-started","meta":{_META},"correlation":{_CALL_CORR}}}',
    f'{{"type":"reasoning-segment-started","meta":{_META},"correlation":{_THINK_CORR},'
    '"source":"thinking"}',
    f'{{"type":"reasoning-delta","meta":{_META},"correlation":{_THINK_CORR},'
    '"delta":"The user","text":"The user","source":"thinking"}',
    f'{{"type":"reasoning-delta","meta":{_META},"correlation":{_THINK_CORR},'
    '"delta":" wants math.","text":"The user wants math.","source":"thinking"}',
    f'{{"type":"reasoning-segment-finished","meta":{_META},"correlation":{_THINK_CORR},'
    '"text":"The user wants math.","finish_reason":"content_block_stop","source":"thinking"}',
    f'{{"type":"text-segment-started","meta":{_META},"correlation":{_TEXT_CORR},'
    '"role":"assistant"}',
    f'{{"type":"text-delta","meta":{_META},"correlation":{_TEXT_CORR},'
    '"delta":"Let me","text":"Let me"}',
    f'{{"type":"text-delta","meta":{_META},"correlation":{_TEXT_CORR},'
    '"delta":" compute.","text":"Let me compute."}',
    f'{{"type":"text-segment-finished","meta":{_META},"correlation":{_TEXT_CORR},'
    '"text":"Let me compute.","finish_reason":"content_block_stop"}',
    f'{{"type":"tool-call-started","meta":{_META},"correlation":{_TOOL_CORR},'
    f'"tool_call_id":"{TOOL}","tool_name":"calculator"}}',
    f'{{"type":"tool-call-arguments-delta","meta":{_META},"correlation":{_TOOL_CORR},'
    f'"tool_call_id":"{TOOL}","delta":"{{\\"expression\\":","arguments":"{{\\"expression\\":"}}',
    f'{{"type":"tool-call-arguments-delta","meta":{_META},"correlation":{_TOOL_CORR},'
    f'"tool_call_id":"{TOOL}","delta":" \\"6*7\\"}}",'
    '"arguments":"{\\"expression\\": \\"6*7\\"}"}',
    f'{{"type":"tool-call-requested","meta":{_META},"correlation":{_TOOL_CORR},'
    f'"tool_call_id":"{TOOL}","tool_name":"calculator","input":"{{\\"expression\\":\\"6*7\\"}}"}}',
    f'{{"type":"provider-call-metadata-updated","meta":{_META},"correlation":{_CALL_CORR},'
    f'"stop_reason":"tool_use","usage":{_USAGE}}}',
    f'{{"type":"provider-call-finished","meta":{_META},"correlation":{_CALL_CORR},'
    f'"stop_reason":"tool_use","usage":{_USAGE},"duration_ms":1834,"has_tool_calls":true}}',
    f'{{"type":"tool-execution-started","meta":{_EXEC_META},"correlation":{_EXEC_CORR},'
    f'"tool_call_id":"{TOOL}","tool_name":"calculator","input":"{{\\"expression\\":\\"6*7\\"}}"}}',
    f'{{"type":"tool-result-ready","meta":{_EXEC_META},"correlation":{_EXEC_CORR},'
    f'"tool_call_id":"{TOOL}","tool_name":"calculator","result":"42","status":"success"}}',
    f'{{"type":"tool-call-finished","meta":{_EXEC_META},"correlation":{_EXEC_CORR},'
    f'"tool_call_id":"{TOOL}","tool_name":"calculator","status":"success"}}',
    f'{{"type":"run-finished","meta":{_META},"correlation":{_RUN_CORR},"status":"completed"}}',
]

# Ends of a run other than finishing. Go writes a set ``error`` as ``{}`` (an error value's
# exported fields: usually none).
GO_RUN_FAILED = (
    f'{{"type":"run-failed","error":{{}},"meta":{_META},"correlation":{_RUN_CORR},'
    '"error_string":"claude: 529 overloaded_error"}'
)
GO_RUN_STOPPED = (
    f'{{"type":"run-stopped","meta":{_META},"correlation":{_RUN_CORR},"reason":"context canceled"}}'
)
# An OpenAI chat stream numbers its argument deltas (``sequence``, omitted when 0).
GO_ARGS_DELTA_WITH_SEQUENCE = (
    '{"type":"tool-call-arguments-delta","meta":{"model":"gpt-4.1",'
    f'"message_id":"{MSG}","inference_id":"inf-8"}},'
    '"correlation":{"segment_id":"openai-chat:chatcmpl-9x:choice:0:tool:call_abc",'
    '"tool_call_id":"call_abc"},"tool_call_id":"call_abc","delta":"{\\"a\\"",'
    '"arguments":"{\\"a\\"","sequence":3}'
)
# Legacy (v0.11) tool results, which name their tool.
GO_LEGACY_TOOL_RESULTS = [
    f'{{"type":"tool-result","meta":{{"message_id":"{MSG}","session_id":"sess-1"}},'
    '"tool_result":{"id":"call_1","name":"calculator","result":"42"}}',
    f'{{"type":"tool-call-execution-result","meta":{{"message_id":"{MSG}"}},'
    '"tool_result":{"id":"call_1","name":"calculator","result":"42"}}',
]

GO_CLASSES: dict[str, type[Event]] = {
    "run-started": CanonicalRunStartedEvent,
    "run-finished": CanonicalRunFinishedEvent,
    "run-stopped": CanonicalRunStoppedEvent,
    "run-failed": CanonicalRunFailedEvent,
    "provider-call-started": ProviderCallStartedEvent,
    "provider-call-metadata-updated": ProviderCallMetadataUpdatedEvent,
    "provider-call-finished": ProviderCallFinishedEvent,
    "text-segment-started": TextSegmentStartedEvent,
    "text-delta": TextDeltaEvent,
    "text-segment-finished": TextSegmentFinishedEvent,
    "reasoning-segment-started": ReasoningSegmentStartedEvent,
    "reasoning-delta": ReasoningDeltaEvent,
    "reasoning-segment-finished": ReasoningSegmentFinishedEvent,
    "tool-call-started": ToolCallStartedEvent,
    "tool-call-arguments-delta": ToolCallArgumentsDeltaEvent,
    "tool-call-requested": ToolCallRequestedEvent,
    "tool-execution-started": ToolExecutionStartedEvent,
    "tool-result-ready": ToolResultReadyEvent,
    "tool-call-finished": ToolCallFinishedEvent,
}

ALL_GO_CANONICAL = [*GO_RUN, GO_RUN_FAILED, GO_RUN_STOPPED, GO_ARGS_DELTA_WITH_SEQUENCE]


def go_type(literal: str) -> str:
    return json.loads(literal)["type"]


# --- Go's JSON kinds -------------------------------------------------------------------------
# What each field must be for geppetto's structs to decode it: "str", "int", "num", "bool",
# "obj" (a map), "null-only" (a Go ``error``), or a nested dict of fields. Absent is always
# fine (Go leaves the zero value).

_KIND_OF = {"str": str, "int": int, "num": (int, float), "bool": bool, "obj": dict}
_USAGE_KINDS = {
    "input_tokens": "int",
    "output_tokens": "int",
    "cached_tokens": "int",
    "cache_creation_input_tokens": "int",
    "cache_read_input_tokens": "int",
}
_META_KINDS: dict[str, Any] = {
    "message_id": "uuid",
    "session_id": "str",
    "inference_id": "str",
    "turn_id": "str",
    "model": "str",
    "temperature": "num",
    "top_p": "num",
    "max_tokens": "int",
    "stop_reason": "str",
    "usage": _USAGE_KINDS,
    "duration_ms": "int",
    "extra": "obj",
}
_CORRELATION_KINDS = dict.fromkeys(
    ("session_id", "run_id", "turn_id", "provider_call_id", "segment_id", "tool_call_id"), "str"
)
_TOOL_CALL_KINDS = {"id": "str", "name": "str", "input": "str"}
_TOOL_RESULT_KINDS = {"id": "str", "name": "str", "result": "str"}
_COMMON_KINDS: dict[str, Any] = {"type": "str", "error": "null-only", "meta": _META_KINDS}


def _c(**fields: Any) -> dict[str, Any]:
    return {"correlation": _CORRELATION_KINDS, **fields}


GO_KINDS: dict[str, dict[str, Any]] = {
    "start": {},
    "partial": {"delta": "str", "completion": "str"},
    "partial-thinking": {"delta": "str", "completion": "str"},
    "final": {"text": "str"},
    "interrupt": {"text": "str"},
    "error": {"error_string": "str"},
    "tool-call": {"tool_call": _TOOL_CALL_KINDS},
    "tool-call-execute": {"tool_call": _TOOL_CALL_KINDS},
    "tool-result": {"tool_result": _TOOL_RESULT_KINDS},
    "tool-call-execution-result": {"tool_result": _TOOL_RESULT_KINDS},
    "log": {"level": "str", "message": "str", "fields": "obj"},
    "info": {"message": "str", "data": "obj"},
    "agent-mode-switch": {"message": "str", "data": "obj"},
    "run-started": _c(prompt="str"),
    "run-finished": _c(status="str"),
    "run-stopped": _c(reason="str"),
    "run-failed": _c(error_string="str"),
    "provider-call-started": _c(),
    "provider-call-metadata-updated": _c(
        stop_reason="str", stop_sequence="str", usage=_USAGE_KINDS
    ),
    "provider-call-finished": _c(
        stop_reason="str",
        finish_class="str",
        usage=_USAGE_KINDS,
        duration_ms="int",
        has_tool_calls="bool",
    ),
    "text-segment-started": _c(role="str"),
    "text-delta": _c(delta="str", text="str", sequence="int"),
    "text-segment-finished": _c(text="str", finish_reason="str"),
    "reasoning-segment-started": _c(source="str"),
    "reasoning-delta": _c(delta="str", text="str", sequence="int", source="str"),
    "reasoning-segment-finished": _c(text="str", finish_reason="str", source="str"),
    "tool-call-started": _c(tool_call_id="str", tool_name="str"),
    "tool-call-arguments-delta": _c(
        tool_call_id="str", delta="str", arguments="str", sequence="int"
    ),
    "tool-call-requested": _c(tool_call_id="str", tool_name="str", input="str"),
    "tool-execution-started": _c(tool_call_id="str", tool_name="str", input="str"),
    "tool-result-ready": _c(tool_call_id="str", tool_name="str", result="str", status="str"),
    "tool-call-finished": _c(tool_call_id="str", tool_name="str", status="str"),
}


def go_kind_errors(value: Any, kinds: dict[str, Any], path: str = "") -> list[str]:
    """Where ``value`` (a decoded JSON object) would not decode into a Go struct of ``kinds``."""
    if not isinstance(value, dict):
        return [f"{path or '<top>'}: not an object"]
    errors: list[str] = []
    for key, kind in kinds.items():
        if key not in value:
            continue
        where, item = f"{path}{key}", value[key]
        if isinstance(kind, dict):
            errors += go_kind_errors(item, kind, f"{where}.")
        elif kind == "null-only":
            if item is not None:
                errors.append(f"{where}: Go decodes only null here, got {item!r}")
        elif kind == "uuid":
            try:
                uuid.UUID(item)
            except (TypeError, ValueError, AttributeError):
                errors.append(f"{where}: not a UUID: {item!r}")
        elif isinstance(item, bool) and kind != "bool":
            errors.append(f"{where}: expected {kind}, got a bool")
        elif not isinstance(item, _KIND_OF[kind]):
            errors.append(f"{where}: expected {kind}, got {type(item).__name__}")
    return errors


def go_decodable(wire: dict[str, Any]) -> list[str]:
    errors = go_kind_errors(wire, _COMMON_KINDS)
    if not isinstance(wire.get("meta"), dict):
        errors.append("meta: Go writes and expects an object")
    return errors + go_kind_errors(wire, GO_KINDS.get(wire.get("type", ""), {}))


# --- every event class of ours, populated ----------------------------------------------------

META = EventMeta(
    session_id="s-1",
    inference_id="i-1",
    turn_id="t-1",
    model="gpt-x",
    temperature=0.2,
    top_p=0.9,
    max_tokens=256,
    stop_reason="stop",
    usage=Usage(input_tokens=3, output_tokens=5, cached_tokens=1),
    duration_ms=12,
    extra={"error": "in extra it is only a map value", "k": [1, 2]},
)
CORR = Correlation(session_id="s-1", run_id="i-1", tool_call_id="c1")
CALC = ToolCall(id="c1", name="calc", input='{"a": 1}')
RESULT = ToolResult(id="c1", result="42", name="calc")

OUR_EVENTS: list[Event] = [
    Event(type="custom", meta=META),
    GenericEvent(type="web-search-started", meta=META, query="cats", error="legacy text"),
    StartEvent(meta=META),
    PartialEvent(meta=META, delta="lo", completion="hello"),
    PartialThinkingEvent(meta=META, delta="hm", completion="hmm"),
    FinalEvent(meta=META, text="hello"),
    InterruptEvent(meta=META, text="hel"),
    ErrorEvent(meta=META, error_string="boom"),
    ToolCallEvent(meta=META, tool_call=CALC),
    ToolCallExecuteEvent(meta=META, tool_call=CALC),
    ToolCallExecutionResultEvent(meta=META, tool_result=RESULT),
    ToolResultEvent(meta=META, tool_result=RESULT),
    LogEvent(meta=META, level="warn", message="careful", fields={"x": 1}),
    InfoEvent(meta=META, message="fyi", data={"y": "z"}),
    AgentModeSwitchEvent(meta=META, message="switch", data={"from": "a", "to": "b"}),
    UserMessageEvent(meta=META, text="hi"),
    RunStartedEvent(meta=META, profile="default"),
    RunFinishedEvent(meta=META),
    RunFailedEvent(meta=META, error="provider said no"),
    RunCancelledEvent(meta=META, reason="user"),
    CorrelatedEvent(type="custom-correlated", meta=META, correlation=CORR),
    CanonicalRunStartedEvent(meta=META, correlation=CORR, prompt="hi"),
    CanonicalRunFinishedEvent(meta=META, correlation=CORR, status="completed"),
    CanonicalRunStoppedEvent(meta=META, correlation=CORR, reason="user"),
    CanonicalRunFailedEvent(meta=META, correlation=CORR, error_string="bad"),
    ProviderCallStartedEvent(meta=META, correlation=CORR),
    ProviderCallMetadataUpdatedEvent(
        meta=META, correlation=CORR, stop_reason="stop", stop_sequence="\n", usage=Usage()
    ),
    ProviderCallFinishedEvent(
        meta=META,
        correlation=CORR,
        stop_reason="stop",
        finish_class="completed",
        usage=Usage(input_tokens=1),
        duration_ms=7,
        has_tool_calls=False,
    ),
    TextSegmentStartedEvent(meta=META, correlation=CORR, role="assistant"),
    TextDeltaEvent(meta=META, correlation=CORR, delta="lo", text="hello", sequence=2),
    TextSegmentFinishedEvent(meta=META, correlation=CORR, text="hello", finish_reason="stop"),
    ReasoningSegmentStartedEvent(meta=META, correlation=CORR, source="thinking"),
    ReasoningDeltaEvent(meta=META, correlation=CORR, delta="m", text="hm", source="thinking"),
    ReasoningSegmentFinishedEvent(meta=META, correlation=CORR, text="hm", source="thinking"),
    ToolCallStartedEvent(meta=META, correlation=CORR, tool_call_id="c1", tool_name="calc"),
    ToolCallArgumentsDeltaEvent(
        meta=META, correlation=CORR, tool_call_id="c1", delta="{", arguments="{", sequence=1
    ),
    ToolCallRequestedEvent(
        meta=META, correlation=CORR, tool_call_id="c1", tool_name="calc", input="{}"
    ),
    ToolExecutionStartedEvent(
        meta=META, correlation=CORR, tool_call_id="c1", tool_name="calc", input="{}"
    ),
    ToolResultReadyEvent(
        meta=META,
        correlation=CORR,
        tool_call_id="c1",
        tool_name="calc",
        result="42",
        status="success",
    ),
    ToolCallFinishedEvent(
        meta=META, correlation=CORR, tool_call_id="c1", tool_name="calc", status="success"
    ),
]


def _event_classes() -> set[type[Event]]:
    found: set[type[Event]] = set()
    for module in (models_module, lifecycle_module, canonical_module):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Event) and obj.__module__ == module.__name__:
                found.add(obj)
    return found


def test_every_event_class_of_ours_is_sampled():
    assert {type(e) for e in OUR_EVENTS} == _event_classes()


@pytest.mark.parametrize("event", OUR_EVENTS, ids=lambda e: e.type)
def test_what_we_emit_decodes_into_geppetto_structs(event):
    wire = json.loads(event.to_json())
    assert wire.get("error") is None  # never a string (nor anything else) under Go's `error`
    assert isinstance(wire["meta"], dict)
    assert go_decodable(wire) == []
    if "tool_result" in wire:
        assert wire["tool_result"]["name"] == "calc"
    if isinstance(event, CorrelatedEvent):
        assert isinstance(wire["correlation"], dict)  # Go always writes one, even empty
    # Base classes (no registered type) come back as GenericEvent, with the same wire form.
    assert parse_event(event.to_json()).to_dict() == event.to_dict()


@pytest.mark.parametrize("literal", ALL_GO_CANONICAL, ids=go_type)
def test_canonical_go_events_parse_typed_and_round_trip(literal):
    original = json.loads(literal)
    event = parse_event(literal)
    assert type(event) is GO_CLASSES[original["type"]]
    again = json.loads(event.to_json())
    # Everything Go wrote is kept, except a Go `error` object, which Go itself cannot decode.
    assert {k: v for k, v in again.items() if k != "meta"} == {
        k: v for k, v in original.items() if k not in ("meta", "error")
    }
    assert again["meta"].items() >= original["meta"].items()
    assert go_decodable(again) == []
    assert parse_event(event.to_json()) == event


def test_every_canonical_type_has_a_go_literal():
    assert {go_type(literal) for literal in ALL_GO_CANONICAL} == set(GO_CLASSES)


def test_canonical_fields_are_read():
    events = {e.type: e for e in map(parse_event, GO_RUN)}
    delta = events["text-delta"]
    assert isinstance(delta, TextDeltaEvent)
    assert (delta.delta, delta.text) == (" compute.", "Let me compute.")
    assert delta.correlation.segment_id == TEXT
    assert delta.meta.model == "claude-sonnet-4-5" and delta.meta.max_tokens == 4096
    finished = events["provider-call-finished"]
    assert isinstance(finished, ProviderCallFinishedEvent)
    assert finished.usage == Usage(input_tokens=412, output_tokens=96, cache_read_input_tokens=128)
    assert (finished.duration_ms, finished.has_tool_calls) == (1834, True)
    requested = events["tool-call-requested"]
    assert isinstance(requested, ToolCallRequestedEvent)
    assert (requested.tool_call_id, requested.tool_name) == (TOOL, "calculator")
    assert json.loads(requested.input) == {"expression": "6*7"}
    sequenced = parse_event(GO_ARGS_DELTA_WITH_SEQUENCE)
    assert isinstance(sequenced, ToolCallArgumentsDeltaEvent)
    assert (sequenced.sequence, sequenced.arguments) == (3, '{"a"')


def test_correlation_ids_fill_an_empty_meta():
    # Go's tool executor publishes with an empty meta: the ids are only in `correlation`.
    event = parse_event(next(e for e in GO_RUN if go_type(e) == "tool-result-ready"))
    assert event.meta.message_id == ZERO
    assert (event.meta.session_id, event.meta.inference_id, event.meta.turn_id) == (
        "sess-1",
        "inf-7",
        "turn-3",
    )
    # Ids already in meta win; the caller's meta object is not changed.
    meta = EventMeta(session_id="mine")
    made = CanonicalRunStartedEvent(meta=meta, correlation=Correlation(session_id="theirs"))
    assert made.meta.session_id == "mine"
    filled = CanonicalRunStartedEvent(meta=EventMeta(), correlation=Correlation(run_id="r1"))
    assert filled.meta.inference_id == "r1"
    shared = EventMeta()
    CanonicalRunStartedEvent(meta=shared, correlation=Correlation(run_id="r2"))
    assert shared.inference_id is None


@pytest.mark.parametrize("literal", GO_LEGACY_TOOL_RESULTS, ids=go_type)
def test_legacy_tool_result_keeps_its_name(literal):
    event = parse_event(literal)
    assert isinstance(event, (ToolResultEvent, ToolCallExecutionResultEvent))
    assert event.tool_result.name == "calculator"
    again = json.loads(event.to_json())
    assert again["tool_result"] == {"id": "call_1", "name": "calculator", "result": "42"}
    assert again == json.loads(literal)


def test_tool_result_without_name_omits_it():
    wire = json.loads(ToolResultEvent(tool_result=ToolResult(id="c", result="r")).to_json())
    assert wire["tool_result"] == {"id": "c", "result": "r"}


def test_run_failed_writes_error_string_not_error():
    event = RunFailedEvent(meta=META, error="provider said no")
    wire = json.loads(event.to_json())
    assert "error" not in wire
    assert wire["error_string"] == "provider said no"
    assert event.error == event.error_string == "provider said no"
    assert RunFailedEvent(error_string="x").error == "x"


def test_run_failed_reads_old_entries_with_an_error_string():
    old = {"type": "run.failed", "meta": {"message_id": MSG, "session_id": "s"}, "error": "boom"}
    event = parse_event(json.dumps(old))
    assert isinstance(event, RunFailedEvent)
    assert event.error == "boom"
    assert json.loads(event.to_json()) == {
        "type": "run.failed",
        "meta": {"message_id": MSG, "session_id": "s"},
        "error_string": "boom",
    }


def test_go_error_objects_are_not_written_back():
    failed = parse_event(GO_RUN_FAILED)
    assert isinstance(failed, CanonicalRunFailedEvent)
    assert failed.error_string == "claude: 529 overloaded_error"
    assert "error" not in json.loads(failed.to_json())
    # An error with exported fields is kept, out of Go's way.
    detailed = parse_event({"type": "mcp-failed", "error": {"Code": 7}, "item_id": "i"})
    assert "error" not in json.loads(detailed.to_json())
    assert json.loads(detailed.to_json())["error_detail"] == {"Code": 7}
    legacy = parse_event({"type": "error", "error": "old", "error_string": "new"})
    assert isinstance(legacy, ErrorEvent) and legacy.error_string == "new"
    assert json.loads(legacy.to_json())["error_detail"] == "old"
