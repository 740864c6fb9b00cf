"""Async-generator agents named in a profile, run through the real app.

Each agent module is written by the test into a temporary folder on ``sys.path``, exactly as
an application's own module would be imported by ``agent: "module:attribute"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid

import httpx
import pytest

from tests.agents.conftest import AppFactory, ModuleWriter, final_texts, of_type, run_prompt
from tests.support.live_server import live_server
from tests.support.ws_client import start_run, viewer

CHUNKS = ["Hel", "lo, ", "wor", "ld", "!"]

STREAMING = f"""
import asyncio

async def agent(request):
    for chunk in {CHUNKS!r}:
        await asyncio.sleep(0.005)
        yield chunk
"""


def profile(module: str, attribute: str = "agent", extra: str = "") -> str:
    return f"""
    profiles:
      - slug: agent
        allow_overrides: true
        agent: "{module}:{attribute}"
        {extra}
    """


async def test_text_streams_as_deltas_to_two_websocket_clients(
    write_module: ModuleWriter, tmp_path
):
    module = write_module(STREAMING)
    profiles = tmp_path / "live-profiles.yaml"
    profiles.write_text(profile(module))
    conv_id = f"gen-{uuid.uuid4().hex[:8]}"
    with live_server(db=":memory:", profiles=profiles) as server:
        async with (
            viewer(server.ws_url, conv_id, profile="agent") as first,
            viewer(server.ws_url, conv_id, profile="agent") as second,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            # An agent answers, not the offline engine (the UI's offline banner keys on this).
            assert first.hello["engine"] == "agent"
            listed = (await http.get("/api/chat/profiles")).json()
            assert [p["api_type"] for p in listed if p["slug"] == "agent"] == ["agent"]
            run = await start_run(http, conv_id, "say hello", profile="agent")
            for client in (first, second):
                end = await client.read_run(run["inference_id"])
                assert end["type"] == "run.finished"
                frames = client.of(run["inference_id"])
                deltas = [f["delta"] for f in of_type(frames, "llm.delta")]
                assert deltas == CHUNKS
                assert final_texts(frames) == ["".join(CHUNKS)]
                assert [f["type"] for f in frames][:3] == [
                    "chat.user_message",
                    "run.started",
                    "llm.start",
                ]
            assert [f["seq"] for f in first.frames] == [f["seq"] for f in second.frames]


REQUEST_ECHO = """
import json

async def agent(request):
    yield json.dumps({
        "prompt": request.prompt,
        "messages": request.messages,
        "conv_id": request.conv_id,
        "session_id": request.session_id,
        "inference_id": request.inference_id,
        "profile": request.profile,
        "model": request.settings.model,
        "tools": [t.name for t in request.tools],
        "openai_tools": request.openai_tools(),
    })
"""


async def test_the_request_carries_the_conversation_ids_settings_and_tools(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(REQUEST_ECHO)
    extra = """default_prompt: Be kind.
        tools: [calculator]
        step_settings: {model: my-model}"""
    async with make_app(profile(module, extra=extra)) as client:
        response = await client.post("/chat/agent", json={"prompt": "first", "conv_id": "echo-1"})
        started = response.json()
        await client.run_to_end("echo-1")
        frames = [
            f
            for f in await client.timeline("echo-1")
            if f.get("inference_id") == started["inference_id"]
        ]
        seen = json.loads(final_texts(frames)[0])
        assert seen["prompt"] == "first"
        assert seen["messages"] == [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "first"},
        ]
        assert seen["conv_id"] == "echo-1"
        assert seen["session_id"] == started["session_id"]
        assert seen["inference_id"] == started["inference_id"]
        assert seen["profile"] == "agent"
        assert seen["model"] == "my-model"
        assert seen["tools"] == ["calculator"]
        assert seen["openai_tools"][0]["type"] == "function"
        assert seen["openai_tools"][0]["function"]["name"] == "calculator"
        assert "expression" in seen["openai_tools"][0]["function"]["parameters"]["properties"]

        _, frames = await run_prompt(client, "echo-1", "second")
        again = json.loads(final_texts(frames)[0])
        assert [m["role"] for m in again["messages"]] == ["system", "user", "assistant", "user"]
        assert again["messages"][2]["content"] == final_texts_of_first(seen)
        assert again["messages"][-1] == {"role": "user", "content": "second"}


def final_texts_of_first(seen: dict) -> str:
    """The first answer as the agent produced it (its own JSON text)."""
    return json.dumps(seen)


TOOLS = """
import json
from webchat.tools import ToolError

async def agent(request):
    if request.prompt == "history":
        yield json.dumps(request.messages)
        return
    yield "Let me compute. "
    result = await request.call_tool("calculator", {"expression": "6*7"})
    yield f"It is {result}."
    try:
        await request.call_tool("nope", {})
    except ToolError as exc:
        yield f" ({exc})"
"""


async def test_call_tool_shows_a_tool_card_and_enters_the_history(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(TOOLS)
    async with make_app(profile(module, extra="tools: [calculator]")) as client:
        _, frames = await run_prompt(client, "tools-1", "compute")
        assert frames[-1]["type"] == "run.finished"
        starts = of_type(frames, "tool.start")
        results = of_type(frames, "tool.result")
        assert [(s["name"], s["input"]) for s in starts] == [
            ("calculator", {"expression": "6*7"}),
            ("nope", {}),
        ]
        assert results[0]["result"] == "42" and results[0]["error"] is None
        assert results[0]["id"] == starts[0]["id"]
        assert "not available" in results[1]["error"]
        assert len(of_type(frames, "tool.done")) == 2
        # A tool call ends the message streaming before it; text after it is a new message.
        finals = final_texts(frames)
        assert finals[0] == "Let me compute. "
        assert finals[1] == "It is 42."
        assert "tool 'nope' is not available" in finals[2]
        order = [f["type"] for f in frames]
        assert order.index("llm.final") < order.index("tool.start") < order.index("tool.result")

        _, frames = await run_prompt(client, "tools-1", "history")
        messages = json.loads(final_texts(frames)[0])
        calls = [m for m in messages if m.get("tool_calls")]
        assert calls[0]["content"] == "Let me compute. "
        assert calls[0]["tool_calls"][0]["function"]["name"] == "calculator"
        tool_messages = [m for m in messages if m["role"] == "tool"]
        assert tool_messages[0]["content"] == "42"
        assert tool_messages[0]["tool_call_id"] == calls[0]["tool_calls"][0]["id"]


YIELDED_EVENTS = """
from webchat.events import (
    LogEvent, PartialThinkingEvent, ToolCall, ToolCallEvent, ToolResult, ToolResultEvent, Usage,
)

async def agent(request):
    yield PartialThinkingEvent(delta="Pondering. ")
    yield "Looked it up: "
    yield ToolCallEvent(tool_call=ToolCall(id="lookup-1", name="lookup", input='{"q": "x"}'))
    yield ToolResultEvent(tool_result=ToolResult(id="lookup-1", result="found x"))
    yield LogEvent(message="agent note")
    yield "found x."
    yield Usage(input_tokens=11, output_tokens=3)
"""


async def test_yielded_events_show_as_thinking_tool_cards_and_logs(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(YIELDED_EVENTS)
    async with make_app(profile(module)) as client:
        inference_id, frames = await run_prompt(client, "events-1", "go")
        assert frames[-1]["type"] == "run.finished"
        thinking = of_type(frames, "llm.thinking.delta", "llm.thinking.start")
        assert any(f.get("delta") == "Pondering. " for f in thinking)
        (start,) = of_type(frames, "tool.start")
        assert (start["id"], start["name"]) == ("lookup-1", "lookup")
        (result,) = of_type(frames, "tool.result")
        assert result["result"] == "found x"
        assert any(f.get("message") == "agent note" for f in of_type(frames, "log"))
        assert final_texts(frames) == ["Looked it up: ", "found x."]
        last_final = of_type(frames, "llm.final")[-1]
        assert last_final["usage"]["input_tokens"] == 11
        assert last_final["usage"]["output_tokens"] == 3
        # Every frame carries the run's ids, even those the agent built without them.
        assert {f.get("inference_id") for f in frames} == {inference_id}


FAILING = """
async def agent(request):
    yield "partial "
    raise ValueError("the agent broke: 17")
"""


async def test_an_exception_fails_the_run_with_its_message_and_no_traceback(
    write_module: ModuleWriter, make_app: AppFactory, caplog: pytest.LogCaptureFixture
):
    module = write_module(FAILING)
    caplog.set_level(logging.ERROR, logger="webchat.agents")
    async with make_app(profile(module)) as client:
        _, frames = await run_prompt(client, "fail-1", "go")
        (failed,) = of_type(frames, "run.failed")
        assert "the agent broke: 17" in failed["error"]
        assert frames[-1] is failed
        text = json.dumps(frames)
        assert "Traceback" not in text and 'File "' not in text
        info = (await client.get("/api/conversations/fail-1")).json()
        assert info["running"] is False
    logged = [r for r in caplog.records if r.name == "webchat.agents" and r.exc_info]
    assert logged, "the traceback must reach the log"
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is ValueError
    assert "the agent broke: 17" in caplog.text and "Traceback" in caplog.text


CANCELLABLE = """
import asyncio

STATE = {"closed": 0, "closed_in": None}

async def waits(request):
    try:
        yield "working "
        await asyncio.sleep(3600)
        yield "never"
    finally:
        STATE["closed"] += 1
        STATE["closed_in"] = asyncio.current_task()

async def spins(request):
    try:
        while True:
            yield "x"
    finally:
        STATE["closed"] += 1
        STATE["closed_in"] = asyncio.current_task()
"""


@pytest.mark.parametrize("attribute", ["waits", "spins"])
async def test_cancel_closes_the_generator_and_ends_with_run_cancelled(
    write_module: ModuleWriter, make_app: AppFactory, attribute: str
):
    module = write_module(CANCELLABLE)
    async with make_app(profile(module, attribute)) as client:
        response = await client.post("/chat/agent", json={"prompt": "go", "conv_id": "cancel-1"})
        inference_id = response.json()["inference_id"]
        state = sys.modules[module].STATE
        conversation = client.service.manager.get("cancel-1")
        async with asyncio.timeout(10):
            await conversation.wait_for_frame(lambda f: f.type == "llm.delta")
        assert state["closed"] == 0
        run_task = conversation.session.active._task
        cancelled = await client.post("/api/conversations/cancel-1/cancel")
        assert cancelled.json()["cancelled"] is True
        await client.run_to_end("cancel-1")
        frames = [
            f for f in await client.timeline("cancel-1") if f.get("inference_id") == inference_id
        ]
        assert frames[-1]["type"] == "run.cancelled"
        assert not of_type(frames, "run.finished", "run.failed")
        assert state["closed"] == 1, "the generator's finally must run"
        # In the run itself, before its end was announced: not later, by the garbage collector.
        assert state["closed_in"] is run_task
        (final,) = of_type(frames, "llm.final")
        assert final["interrupted"] is True and final["text"].startswith(("working", "x"))
