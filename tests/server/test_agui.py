"""AG-UI: ``POST /ag-ui/{profile}`` against a real uvicorn; every event received is validated
with the ``ag-ui-protocol`` package's models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui.core import (
    BaseEvent,
    Event,
    EventType,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateSnapshotEvent,
    TextMessageContentEvent,
    ToolCallArgsEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    UserMessage,
)
from ag_ui.encoder import EventEncoder
from pydantic import TypeAdapter

from tests.server.auth_support import Team, make_team
from tests.server.conftest import PROFILES_YAML
from tests.support.live_server import LiveServer, live_server
from tests.support.ws_client import viewer
from webchat.server.agui_api import AguiTranslator

EVENTS: TypeAdapter[Event] = TypeAdapter(Event)


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES_YAML)
    return path


@pytest.fixture
def server(profiles: Path) -> Iterator[LiveServer]:
    with live_server(db=":memory:", profiles=profiles) as srv:
        yield srv


def run_input(thread_id: str, *messages: str | dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A RunAgentInput, built and dumped with the protocol's own model (camelCase)."""
    parsed = [
        UserMessage(id=f"m{i}", content=m) if isinstance(m, str) else m
        for i, m in enumerate(messages)
    ]
    model = RunAgentInput(thread_id=thread_id, run_id="run-1", messages=parsed, **extra)
    dumped: dict[str, Any] = json.loads(model.model_dump_json(by_alias=True))
    return dumped


async def post_run(
    server: LiveServer, profile: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[httpx.Response, list[BaseEvent]]:
    """The response and its events, each validated by the protocol's models."""
    events: list[BaseEvent] = []
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=15) as http,
        http.stream("POST", f"/ag-ui/{profile}", json=body, headers=headers) as r,
    ):
        if r.status_code != 200:
            await r.aread()
            return r, events
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(EVENTS.validate_json(line[len("data: ") :]))
            else:
                assert line == "", line
    return r, events


def assert_well_nested(events: list[BaseEvent]) -> None:
    """Text messages open, stream and close in order, and no tool call starts inside one."""
    open_message: str | None = None
    for event in events:
        if event.type == EventType.TEXT_MESSAGE_START:
            assert open_message is None
            open_message = event.message_id  # type: ignore[attr-defined]
        elif event.type == EventType.TEXT_MESSAGE_CONTENT:
            assert event.message_id == open_message  # type: ignore[attr-defined]
        elif event.type == EventType.TEXT_MESSAGE_END:
            assert event.message_id == open_message  # type: ignore[attr-defined]
            open_message = None
        elif event.type in (EventType.TOOL_CALL_START, EventType.RUN_FINISHED):
            assert open_message is None
    assert open_message is None


async def test_a_tool_run_streams_every_event_kind(server: LiveServer) -> None:
    async with viewer(server.ws_url, "thread-1") as watcher:
        response, events = await post_run(server, "default", run_input("thread-1", "calc: 6*7"))
        assert response.status_code == 200
        finished_frame = await watcher.read_until(lambda e: e["type"] == "run.finished")
    kinds = [e.type for e in events]
    assert kinds[0] == EventType.RUN_STARTED and kinds[-1] == EventType.RUN_FINISHED
    assert kinds.count(EventType.TEXT_MESSAGE_START) == 2
    assert kinds.count(EventType.TEXT_MESSAGE_END) == 2
    for kind in ("TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT"):
        assert kinds.count(EventType(kind)) == 1, kind
    assert_well_nested(events)
    started, finished = events[0], events[-1]
    assert isinstance(started, RunStartedEvent) and isinstance(finished, RunFinishedEvent)
    assert (started.thread_id, started.run_id) == ("thread-1", "run-1")
    assert (finished.thread_id, finished.run_id) == ("thread-1", "run-1")
    assert finished.usage and finished.usage[0].output_tokens == 10
    call = next(e for e in events if isinstance(e, ToolCallStartEvent))
    args = next(e for e in events if isinstance(e, ToolCallArgsEvent))
    result = next(e for e in events if isinstance(e, ToolCallResultEvent))
    assert call.tool_call_name == "calculator"
    assert json.loads(args.delta) == {"expression": "6*7"}
    assert (result.tool_call_id, result.content) == (call.tool_call_id, "42")
    text = "".join(e.delta for e in events if isinstance(e, TextMessageContentEvent))
    assert text == "Let me calculate that.The result of 6*7 is 42."
    # The same run, live in webchat's own UI: the thread is the conversation.
    run = finished_frame["inference_id"]
    assert [f["result"] for f in watcher.of(run, "tool.result")] == ["42"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        listed = (await http.get("/api/conversations")).json()["conversations"]
    assert [c["conv_id"] for c in listed] == ["thread-1"]


async def test_state_is_echoed_as_a_snapshot(server: LiveServer) -> None:
    body = run_input("thread-state", "hello", state={"step": 3, "items": ["a"]})
    _, events = await post_run(server, "default", body)
    assert isinstance(events[1], StateSnapshotEvent)
    assert events[1].snapshot == {"step": 3, "items": ["a"]}


async def test_a_new_thread_is_seeded_then_keeps_its_own_history(server: LiveServer) -> None:
    earlier: list[str | dict[str, Any]] = [
        "calc: 1+1",
        {"id": "a1", "role": "assistant", "content": "2"},
    ]
    _, events = await post_run(server, "default", run_input("thread-seed", *earlier, "next?"))
    assert events[-1].type == EventType.RUN_FINISHED
    async with httpx.AsyncClient(base_url=server.url) as http:
        turns = (await http.get("/api/conversations/thread-seed")).json()["turns"]
    assert len(turns) == 2  # the seeded transcript, then the run that continued it
    # A second run on the thread: only its last message is new; history is the thread's.
    _, again = await post_run(server, "default", run_input("thread-seed", "ignored", "more"))
    assert again[-1].type == EventType.RUN_FINISHED
    async with httpx.AsyncClient(base_url=server.url) as http:
        described = (await http.get("/api/conversations/thread-seed")).json()
    prompts = [
        b["payload"]["text"] for b in described["turns"][-1]["blocks"] if b["kind"] == "user"
    ]
    assert prompts == ["calc: 1+1", "next?", "more"]


async def test_a_failed_run_ends_with_run_error(server: LiveServer) -> None:
    response, events = await post_run(server, "gpt", run_input("thread-fail", "hi"))
    assert response.status_code == 200
    assert events[0].type == EventType.RUN_STARTED
    assert isinstance(events[-1], RunErrorEvent)
    assert events[-1].message
    assert EventType.RUN_FINISHED not in [e.type for e in events]


async def test_bad_inputs_are_http_errors(server: LiveServer) -> None:
    response, _ = await post_run(server, "nope", run_input("t", "hi"))
    assert response.status_code == 404
    response, _ = await post_run(server, "default", run_input("bad/thread", "hi"))
    assert response.status_code == 400 and "threadId" in response.json()["error"]
    ending_with_assistant = run_input("t2", {"id": "a", "role": "assistant", "content": "x"})
    response, _ = await post_run(server, "default", ending_with_assistant)
    assert response.status_code == 400 and "last message" in response.json()["error"]
    tools = [{"name": "confirm", "description": "ask the user", "parameters": {}}]
    response, _ = await post_run(server, "default", run_input("t3", "hi", tools=tools))
    assert response.status_code == 400 and "client-defined tools" in response.json()["error"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        malformed = await http.post("/ag-ui/default", json={"threadId": "t4"})
    assert malformed.status_code == 422


@pytest.fixture
def team(tmp_path: Path) -> Team:
    return make_team(tmp_path)


async def test_threads_belong_to_their_user(profiles: Path, team: Team) -> None:
    with live_server(db=":memory:", profiles=profiles, auth="users", users=team.path) as srv:
        body = run_input("alice-thread", "hi")
        response, events = await post_run(srv, "default", body, team.headers("alice"))
        assert response.status_code == 200 and events[-1].type == EventType.RUN_FINISHED
        response, _ = await post_run(srv, "default", body, team.headers("bob"))
        assert response.status_code == 404
        response, _ = await post_run(srv, "default", body)
        assert response.status_code == 401


def translate(frames: list[dict[str, Any]]) -> list[BaseEvent]:
    """Frames through the translator, each event encoded and validated back as a client
    would read it."""
    translator = AguiTranslator("t", "r")
    encoder = EventEncoder()
    events: list[BaseEvent] = []
    for frame in frames:
        for event in translator.feed(frame):
            wire = encoder.encode(event)
            assert wire.startswith("data: ") and wire.endswith("\n\n")
            events.append(EVENTS.validate_json(wire[len("data: ") : -2]))
    return events


def test_thinking_becomes_a_reasoning_message_before_the_text() -> None:
    events = translate(
        [
            {"type": "llm.start", "id": "m1"},
            {"type": "llm.thinking.start", "id": "m1"},
            {"type": "llm.thinking.delta", "id": "m1", "delta": "hmm"},
            {"type": "llm.delta", "id": "m1", "delta": "Hi", "cumulative": "ignored"},
            {"type": "llm.thinking.final", "id": "m1", "text": "hmm"},
            {"type": "llm.final", "id": "m1", "text": "Hi", "usage": None},
            {"type": "run.finished", "id": "x"},
        ]
    )
    assert [e.type.value for e in events] == [
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert_well_nested(events)


def test_streamed_tool_arguments_are_sent_once() -> None:
    # Canonical producers announce a call, stream its arguments, then request it whole.
    events = translate(
        [
            {"type": "tool.start", "id": "c1", "name": "search", "input": None},
            {"type": "tool.delta", "id": "c1", "status": "pending", "delta": '{"q":'},
            {"type": "tool.delta", "id": "c1", "status": "pending", "delta": '"x"}'},
            {"type": "tool.start", "id": "c1", "name": "search", "input": {"q": "x"}},
            {"type": "tool.delta", "id": "c1", "status": "running"},
            {"type": "tool.result", "id": "c1", "result": {"hits": 1}, "error": None},
            {"type": "tool.done", "id": "c1"},
            {"type": "run.failed", "id": "x", "error": "boom"},
        ]
    )
    assert [e.type.value for e in events] == [
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
        "RUN_ERROR",
    ]
    args = "".join(e.delta for e in events if isinstance(e, ToolCallArgsEvent))
    assert json.loads(args) == {"q": "x"}
    result = next(e for e in events if isinstance(e, ToolCallResultEvent))
    assert json.loads(str(result.content)) == {"hits": 1}
    assert isinstance(events[-1], RunErrorEvent) and events[-1].message == "boom"


def test_a_cancelled_run_finishes_with_the_cancelled_outcome() -> None:
    events = translate(
        [
            {"type": "llm.delta", "id": "m1", "delta": "partial"},
            {"type": "run.cancelled", "id": "x", "reason": "cancelled"},
        ]
    )
    assert [e.type.value for e in events][-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    finished = events[-1]
    assert isinstance(finished, RunFinishedEvent)
    assert finished.outcome is not None and finished.outcome.type == "cancelled"
