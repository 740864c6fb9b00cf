"""OpenAIChatEngine against a fake provider, through the real SDK and a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import SecretStr

from tests.support.fake_openai import (
    Scenario,
    chunk,
    make_app,
    openai_error,
    text_events,
    tool_call_delta,
    usage_chunk,
)
from tests.support.http_server import serve_app
from tests.support.tool_definitions import CALCULATOR, WEATHER
from webchat.engines import EngineError, RunContext, StepSettings, ToolDefinition, create_engine
from webchat.engines.openai_chat import NO_KEY_PLACEHOLDER, OpenAIChatEngine, turn_to_messages
from webchat.events import (
    CollectingSink,
    ErrorEvent,
    Event,
    FinalEvent,
    InterruptEvent,
    PartialEvent,
    ToolCallEvent,
    Usage,
)
from webchat.turns import Block, BlockKind, Turn

API_KEY = "sk-test-9f8e7d6c5b4a-SECRET"


Run = Callable[..., Awaitable[Turn]]


def make_ctx(sink: CollectingSink, *tools: ToolDefinition) -> RunContext:
    return RunContext(
        sinks=(sink,),
        session_id="session-1",
        inference_id="inference-1",
        turn_id="turn-1",
        tools=tools,
    )


@asynccontextmanager
async def openai_engine(scenario: Scenario, **overrides: Any) -> AsyncIterator[OpenAIChatEngine]:
    """The engine pointed at a fake serving ``scenario``; gates are opened on the way out."""
    async with serve_app(make_app(scenario)) as url:
        options: dict[str, Any] = {
            "api_type": "openai",
            "model": "gpt-test",
            "base_url": f"{url}/v1",
            "api_key": SecretStr(API_KEY),
            "max_retries": 0,
            "timeout": 5.0,
        }
        options.update(overrides)
        engine = OpenAIChatEngine(StepSettings(**options))
        try:
            yield engine
        finally:
            scenario.release.set()
            await engine.aclose()


def user_turn(text: str = "Hello there") -> Turn:
    return Turn(blocks=[Block.user(text)])


def assert_no_secret(events: list[Event], *texts: str) -> None:
    for text in texts:
        assert API_KEY not in text
    for event in events:
        assert API_KEY not in event.to_json()


# --- 1. text streaming -------------------------------------------------------------------


async def test_text_deltas_stream_as_partials_and_end_in_final() -> None:
    deltas = ["Hel", "lo", ", wor", "ld!"]
    scenario = Scenario(events=[*text_events(deltas), usage_chunk(12, 4, cached=8)])
    sink = CollectingSink()
    async with openai_engine(scenario) as engine:
        turn = await engine.run_inference(user_turn(), make_ctx(sink))

    assert sink.types() == ["start", "partial", "partial", "partial", "partial", "final"]
    partials = [e for e in sink.events if isinstance(e, PartialEvent)]
    assert [p.delta for p in partials] == deltas
    assert "".join(p.delta for p in partials) == "Hello, world!"
    assert all(p.completion == "" for p in partials), "only deltas cross the transport"
    final = sink.events[-1]
    assert isinstance(final, FinalEvent)
    assert final.text == "".join(deltas) == "Hello, world!"
    expected_usage = Usage(input_tokens=12, output_tokens=4, cached_tokens=8)
    assert final.meta.usage == expected_usage
    assert final.meta.stop_reason == "stop"
    assert final.meta.model == "gpt-test"
    for event in sink.events:
        assert event.meta.session_id == "session-1"
        assert event.meta.inference_id == "inference-1"
        assert event.meta.turn_id == "turn-1"

    assert [b.kind for b in turn.blocks] == [BlockKind.USER, BlockKind.LLM_TEXT]
    assert turn.blocks[-1].text == "Hello, world!"
    assert turn.metadata.usage == expected_usage
    assert turn.metadata.stop_reason == "stop"
    assert turn.metadata.model == "gpt-test"


async def test_reasoning_deltas_become_thinking() -> None:
    events: list[dict[str, Any] | str] = [
        chunk({"role": "assistant", "reasoning_content": "Two plus "}),
        chunk({"reasoning_content": "two is four."}),
        chunk({"content": "4"}),
        chunk({}, "stop"),
    ]
    sink = CollectingSink()
    async with openai_engine(Scenario(events=events)) as engine:
        turn = await engine.run_inference(user_turn("2+2?"), make_ctx(sink))

    assert sink.types() == ["start", "partial-thinking", "partial-thinking", "partial", "final"]
    assert [b.kind for b in turn.blocks[1:]] == [BlockKind.REASONING, BlockKind.LLM_TEXT]
    assert turn.blocks[1].text == "Two plus two is four."
    assert turn.blocks[2].text == "4"


# --- 2. tool calls ------------------------------------------------------------------------


async def test_parallel_tool_calls_are_assembled_by_index() -> None:
    events: list[dict[str, Any] | str] = [
        chunk({"role": "assistant", "content": None}),
        tool_call_delta(0, call_id="call_calc", name="calculator"),
        tool_call_delta(0, arguments='{"expr'),
        tool_call_delta(1, call_id="call_wx", name="weather", arguments='{"ci'),
        tool_call_delta(0, arguments='ession": "6*'),
        tool_call_delta(1, arguments='ty": "Par'),
        tool_call_delta(0, arguments='7"}'),
        tool_call_delta(1, arguments='is"}'),
        chunk({}, "tool_calls"),
        usage_chunk(40, 30),
    ]
    sink = CollectingSink()
    async with openai_engine(Scenario(events=events)) as engine:
        turn = await engine.run_inference(
            user_turn("6*7, and the weather in Paris?"), make_ctx(sink, CALCULATOR, WEATHER)
        )

    calls = turn.blocks_of(BlockKind.TOOL_CALL)
    assert [c.payload for c in calls] == [
        {"id": "call_calc", "name": "calculator", "args": {"expression": "6*7"}},
        {"id": "call_wx", "name": "weather", "args": {"city": "Paris"}},
    ]
    assert not turn.blocks_of(BlockKind.LLM_TEXT)
    assert sink.types() == ["start", "tool-call", "tool-call", "final"]
    call_events = [e for e in sink.events if isinstance(e, ToolCallEvent)]
    assert [(e.tool_call.id, e.tool_call.arguments()) for e in call_events] == [
        ("call_calc", {"expression": "6*7"}),
        ("call_wx", {"city": "Paris"}),
    ]
    assert turn.metadata.stop_reason == "tool_calls"
    assert sink.events[-1].meta.stop_reason == "tool_calls"


# --- 3. request shaping -------------------------------------------------------------------


async def test_request_carries_transcript_tools_settings_and_key() -> None:
    turn = Turn(
        blocks=[
            Block.system("You are terse."),
            Block.user("What is 6*7, and the weather in Paris?"),
            Block.reasoning("I should use both tools."),
            Block.llm_text("Let me check."),
            Block.tool_call("call_1", "calculator", {"expression": "6*7"}),
            Block.tool_call("call_2", "weather", '{"city": "Paris"}'),
            Block.tool_use("call_1", {"value": 42}),
            Block.tool_use("call_2", "sunny, 21C"),
        ]
    )
    scenario = Scenario(events=text_events(["42, and sunny."]))
    async with openai_engine(scenario, temperature=0.2, max_tokens=256) as engine:
        await engine.run_inference(turn, make_ctx(CollectingSink(), CALCULATOR, WEATHER))

    assert len(scenario.requests) == 1
    body = scenario.requests[0]
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 6*7, and the weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"value": 42}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "sunny, 21C"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
            },
        }
        for t in (CALCULATOR, WEATHER)
    ]
    assert body["model"] == "gpt-test"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 256
    for unset in ("top_p", "stop"):
        assert unset not in body
    assert scenario.headers[0]["authorization"] == f"Bearer {API_KEY}"


async def test_no_tools_and_no_key_for_a_local_server() -> None:
    scenario = Scenario(events=text_events(["ok"]))
    settings: dict[str, Any] = {"api_key": None, "model": None, "stop": ["\n\n"]}
    async with openai_engine(scenario, **settings) as engine:
        turn = await engine.run_inference(user_turn(), make_ctx(CollectingSink()))

    assert turn.blocks[-1].text == "ok"
    body = scenario.requests[0]
    assert "tools" not in body
    assert body["model"] == StepSettings(api_type="openai").resolved_model()
    assert body["stop"] == ["\n\n"]
    assert scenario.headers[0]["authorization"] == f"Bearer {NO_KEY_PLACEHOLDER}"


def test_transcript_mapping_of_steps_and_failed_tools() -> None:
    turn = Turn(
        blocks=[
            Block.user("go"),
            Block.tool_call("c1", "calculator", None),
            Block.tool_use("c1", None, error="division by zero"),
            Block.llm_text("It failed. "),
            Block(kind=BlockKind.OTHER, payload={"note": "ui only"}),
            Block.llm_text("Retrying."),
            Block.tool_call("c2", "calculator", {"expression": "1/1"}),
            Block.llm_text("Waiting."),
        ]
    )
    assert turn_to_messages(turn) == [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"error": "division by zero"}'},
        {
            "role": "assistant",
            "content": "It failed. Retrying.",
            "tool_calls": [
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "1/1"}'},
                }
            ],
        },
        {"role": "assistant", "content": "Waiting."},
    ]


async def test_factory_builds_the_openai_engine() -> None:
    settings = StepSettings(api_type="openai", base_url="http://127.0.0.1:9/v1")
    engine = create_engine(settings)
    assert isinstance(engine, OpenAIChatEngine)
    await engine.aclose()


# --- 4. failures --------------------------------------------------------------------------


async def run_failing(scenario: Scenario, **overrides: Any) -> tuple[EngineError, CollectingSink]:
    """Run to the expected failure; return the raised error and the published events."""
    sink = CollectingSink()
    async with asyncio.timeout(10), openai_engine(scenario, **overrides) as engine:
        with pytest.raises(EngineError) as raised:
            await engine.run_inference(user_turn(), make_ctx(sink))
    error = raised.value
    assert sink.types()[0] == "start"
    last = sink.events[-1]
    assert isinstance(last, ErrorEvent)
    assert last.error_string == str(error)
    assert error.provider == "openai"
    assert_no_secret(sink.events, str(error))
    return error, sink


async def test_bad_key_is_reported_as_authentication_failure() -> None:
    # Real OpenAI echoes (a masked form of) the key: the worst case is echoing all of it.
    scenario = Scenario(
        status=401,
        error=openai_error(
            f"Incorrect API key provided: {API_KEY}.", "invalid_request_error", "invalid_api_key"
        ),
    )
    error, sink = await run_failing(scenario)
    assert str(error) == "openai: authentication failed (401): check the API key"
    assert error.status_code == 401
    assert not error.retryable
    assert sink.types() == ["start", "error"]
    assert error.__cause__ is None and error.__suppress_context__  # no SDK text chained


async def test_rate_limit_is_retryable() -> None:
    scenario = Scenario(
        status=429,
        error=openai_error(
            f"Rate limit reached for gpt-test (key {API_KEY}): 3 RPM.",
            "requests",
            "rate_limit_exceeded",
        ),
    )
    error, _ = await run_failing(scenario)
    assert str(error).startswith("openai: rate limited (429): Rate limit reached for gpt-test")
    assert "[redacted]" in str(error)
    assert error.status_code == 429
    assert error.retryable


async def test_server_error_carries_a_short_message() -> None:
    scenario = Scenario(
        status=500,
        error=openai_error("The server had an error. " + "x" * 500, "server_error", None),
    )
    error, _ = await run_failing(scenario)
    assert str(error).startswith("openai: server error (500): The server had an error. xxx")
    assert len(str(error)) < 260
    assert error.status_code == 500


async def test_connection_cut_mid_stream() -> None:
    scenario = Scenario(events=text_events(["partial ", "answer ", "then"]), cut_after=3)
    error, sink = await run_failing(scenario)
    assert str(error).startswith("openai: connection lost mid-stream")
    # The SDK saw a broken connection, not a clean end of stream.
    assert error.__cause__ is None and error.__suppress_context__  # no SDK text chained
    assert error.retryable
    assert sink.types() == ["start", "partial", "partial", "error"]


async def test_stream_without_finish_reason_is_incomplete() -> None:
    scenario = Scenario(events=text_events(["cut ", "short"], finish_reason=None), done=False)
    error, sink = await run_failing(scenario)
    assert str(error) == "openai stream ended before the response was complete"
    assert sink.types() == ["start", "partial", "partial", "error"]


async def test_malformed_stream_data() -> None:
    scenario = Scenario(events=[*text_events(["fine"], finish_reason=None), "{not json"])
    error, sink = await run_failing(scenario)
    assert str(error).startswith("openai: malformed stream data")
    assert sink.types() == ["start", "partial", "error"]


async def test_server_slower_than_timeout() -> None:
    scenario = Scenario(events=text_events(["too late"]), hold_before_response=True)
    error, sink = await run_failing(scenario, timeout=0.5)
    assert str(error) == "openai: request timed out after 0.5s"
    assert error.__cause__ is None and error.__suppress_context__  # no SDK text chained
    assert scenario.held.is_set()
    assert sink.types() == ["start", "error"]


async def test_unreachable_server() -> None:
    sink = CollectingSink()
    async with openai_engine(Scenario()) as live:
        dead_url = str(live.settings.base_url)
    settings = StepSettings(api_type="openai", base_url=dead_url, max_retries=0, timeout=2)
    engine = OpenAIChatEngine(settings)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(EngineError) as raised:
                await engine.run_inference(user_turn(), make_ctx(sink))
    finally:
        await engine.aclose()
    assert str(raised.value).startswith("openai: connection to http://127.0.0.1:")
    assert sink.types() == ["start", "error"]


# --- 5. cancellation ----------------------------------------------------------------------


class WatchingSink(CollectingSink):
    """Collects events and signals when the streamed text reaches ``target``."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.reached = asyncio.Event()
        self.text = ""

    async def publish_event(self, event: Event) -> None:
        await super().publish_event(event)
        if isinstance(event, PartialEvent):
            self.text += event.delta
            if self.text == self.target:
                self.reached.set()


async def test_cancel_mid_stream_publishes_interrupt() -> None:
    scenario = Scenario(events=text_events(["Once ", "upon ", "a ", "time"]), hold_after=3)
    sink = WatchingSink(target="Once upon ")
    async with asyncio.timeout(10), openai_engine(scenario) as engine:
        task = asyncio.create_task(engine.run_inference(user_turn(), make_ctx(sink)))
        await sink.reached.wait()
        await scenario.held.wait()  # the server is mid-stream, holding the rest back
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert sink.types() == ["start", "partial", "partial", "interrupt"]
    last = sink.events[-1]
    assert isinstance(last, InterruptEvent)
    assert last.text == "Once upon "
    assert last.meta.stop_reason == "cancelled"
    assert json.loads(last.to_json())["meta"]["session_id"] == "session-1"
