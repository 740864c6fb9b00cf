"""AnthropicMessagesEngine against a fake Messages API, through the real SDK and real HTTP.

The fake replays the provider's SSE wire format byte for byte, so these tests also catch SDK
upgrades that change how streams, errors or credentials are handled.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.fake_anthropic import (
    MODEL,
    Abort,
    FakeAnthropic,
    Pause,
    Scenario,
    block_delta,
    block_start,
    error_payload,
    message_delta,
    message_start,
    message_stop,
    ping,
    sse,
    text_block,
    text_stream,
    thinking_block,
    tool_use_block,
)
from tests.support.http_server import serve_app
from tests.support.tool_definitions import CALCULATOR, WEATHER
from webchat.engines import EngineError, RunContext, StepSettings, ToolDefinition
from webchat.engines.anthropic_messages import AnthropicMessagesEngine, build_messages
from webchat.events import (
    CollectingSink,
    Event,
    FinalEvent,
    InterruptEvent,
    PartialEvent,
    ToolCallEvent,
    Usage,
)
from webchat.turns import Block, BlockKind, Turn

API_KEY = "sk-ant-test-7f3a9c2e5b1d4f6a8e0c"


@dataclass
class Harness:
    fake: FakeAnthropic
    url: str
    engines: list[AnthropicMessagesEngine]

    def engine(self, **overrides: Any) -> AnthropicMessagesEngine:
        fields: dict[str, Any] = {
            "api_type": "anthropic",
            "model": MODEL,
            "base_url": self.url,
            "api_key": API_KEY,
            "max_retries": 0,
            "timeout": 5.0,
        }
        fields.update(overrides)
        engine = AnthropicMessagesEngine(StepSettings(**fields))
        self.engines.append(engine)
        return engine


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    fake = FakeAnthropic()
    async with serve_app(fake.app) as url:
        h = Harness(fake=fake, url=url, engines=[])
        try:
            yield h
        finally:
            fake.release()
            for engine in h.engines:
                await engine.aclose()


def make_ctx(sink: Any, tools: tuple[ToolDefinition, ...] = ()) -> RunContext:
    return RunContext(
        sinks=(sink,),
        session_id="sess-1",
        inference_id="inf-1",
        turn_id="turn-1",
        tools=tools,
    )


def sent_api_key(headers: dict[str, str]) -> str | None:
    """The credential as the SDK sent it: ``x-api-key`` in 0.x, ``Authorization: Bearer`` in
    2.x."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


def assert_ids(events: list[Event]) -> None:
    for event in events:
        assert (event.meta.session_id, event.meta.inference_id, event.meta.turn_id) == (
            "sess-1",
            "inf-1",
            "turn-1",
        ), event


async def test_text_stream_becomes_partials_final_and_llm_text(harness: Harness) -> None:
    deltas = ["Hello", ", wor", "ld", "! How can I help?"]
    steps = text_stream(deltas, output_tokens=9)
    # An event type this client does not know yet must be skipped, not misread.
    steps.insert(2, sse("future_event", {"type": "future_event", "detail": 1}))
    harness.fake.scenario = Scenario(steps=steps)
    sink = CollectingSink()
    turn = Turn(blocks=[Block.user("hi")])

    async with asyncio.timeout(10):
        result = await harness.engine().run_inference(turn, make_ctx(sink))

    types = sink.types()
    assert types == ["start"] + ["partial"] * len(deltas) + ["final"]
    partials = [e for e in sink.events if isinstance(e, PartialEvent)]
    assert [p.delta for p in partials] == deltas
    assert all(p.completion == "" for p in partials), "only deltas cross the transport"
    final = sink.events[-1]
    assert isinstance(final, FinalEvent)
    assert final.text == "Hello, world! How can I help?"
    assert final.meta.stop_reason == "end_turn"
    assert final.meta.usage == Usage(input_tokens=12, output_tokens=9)
    assert final.meta.model == MODEL
    assert_ids(sink.events)

    assert result is turn
    assert [b.kind for b in result.blocks] == [BlockKind.USER, BlockKind.LLM_TEXT]
    assert result.blocks[-1].text == final.text
    assert result.metadata.stop_reason == "end_turn"
    assert result.metadata.usage == Usage(input_tokens=12, output_tokens=9)
    assert result.metadata.model == MODEL

    # Settings left unset must not reach the wire.
    (request,) = harness.fake.requests
    for absent in ("system", "tools", "temperature", "top_p", "stop_sequences"):
        assert absent not in request.body
    assert request.body["max_tokens"] == 4096


async def test_thinking_and_split_tool_input_become_reasoning_and_ordered_tool_calls(
    harness: Harness,
) -> None:
    harness.fake.scenario = Scenario(
        steps=[
            message_start(input_tokens=40, cache_read_input_tokens=30),
            *thinking_block(0, ["The user wants ", "two things."]),
            *text_block(1, ["Checking both."]),
            ping(),
            *tool_use_block(2, "toolu_01", "calculator", ['{"expres', 'sion": "2', '+3"}']),
            *tool_use_block(3, "toolu_02", "weather", ["", '{"city"', ': "Par', 'is"}']),
            message_delta("tool_use", 55),
            message_stop(),
        ]
    )
    sink = CollectingSink()
    turn = Turn(blocks=[Block.user("2+3? and weather in Paris")])

    async with asyncio.timeout(10):
        await harness.engine().run_inference(turn, make_ctx(sink, (CALCULATOR, WEATHER)))

    assert sink.types() == [
        "start",
        "partial-thinking",
        "partial-thinking",
        "partial",
        "tool-call",
        "tool-call",
        "final",
    ]
    thinking = [e for e in sink.events if e.type == "partial-thinking"]
    assert "".join(e.delta for e in thinking) == "The user wants two things."  # type: ignore[attr-defined]
    calls = [e.tool_call for e in sink.events if isinstance(e, ToolCallEvent)]
    assert [(c.id, c.name, c.arguments()) for c in calls] == [
        ("toolu_01", "calculator", {"expression": "2+3"}),
        ("toolu_02", "weather", {"city": "Paris"}),
    ]
    final = sink.events[-1]
    assert isinstance(final, FinalEvent)
    assert final.text == "Checking both."
    assert final.meta.stop_reason == "tool_use"
    assert final.meta.usage == Usage(input_tokens=40, output_tokens=55, cache_read_input_tokens=30)

    assert [b.kind for b in turn.blocks] == [
        BlockKind.USER,
        BlockKind.REASONING,
        BlockKind.LLM_TEXT,
        BlockKind.TOOL_CALL,
        BlockKind.TOOL_CALL,
    ]
    assert turn.blocks[1].text == "The user wants two things."
    assert [b.payload for b in turn.pending_tool_calls()] == [
        {"id": "toolu_01", "name": "calculator", "args": {"expression": "2+3"}},
        {"id": "toolu_02", "name": "weather", "args": {"city": "Paris"}},
    ]
    assert turn.metadata.stop_reason == "tool_use"


async def test_tool_use_without_input_deltas_gets_empty_object(harness: Harness) -> None:
    harness.fake.scenario = Scenario(
        steps=[
            message_start(),
            *tool_use_block(0, "toolu_09", "now", []),
            message_delta("tool_use", 3),
            message_stop(),
        ]
    )
    sink = CollectingSink()
    turn = Turn(blocks=[Block.user("time?")])

    async with asyncio.timeout(10):
        await harness.engine().run_inference(turn, make_ctx(sink))

    (event,) = [e for e in sink.events if isinstance(e, ToolCallEvent)]
    assert event.tool_call.input == "{}"
    assert turn.blocks[-1].payload == {"id": "toolu_09", "name": "now", "args": {}}


async def test_request_carries_system_alternating_messages_tools_and_key(
    harness: Harness,
) -> None:
    harness.fake.scenario = Scenario(steps=text_stream(["Done."]))
    turn = Turn(
        blocks=[
            Block.system("You are terse."),
            Block.user("What is 2+3, and the weather in Paris?"),
            Block.reasoning("not replayed"),
            Block.llm_text("Let me check."),
            Block.tool_call("toolu_01", "calculator", {"expression": "2+3"}),
            Block.tool_call("toolu_02", "weather", {"city": "Paris"}),
            Block.tool_use("toolu_01", 5),
            Block.tool_use("toolu_02", None, error="weather service unavailable"),
            Block.system("Answer in one line."),
            Block.user("Thanks, go on."),
        ]
    )
    engine = harness.engine(temperature=0.3, max_tokens=256, stop=["END"])

    async with asyncio.timeout(10):
        await engine.run_inference(turn, make_ctx(CollectingSink(), (CALCULATOR, WEATHER)))

    (request,) = harness.fake.requests
    body = request.body
    assert body["model"] == MODEL
    assert body["max_tokens"] == 256
    assert body["stream"] is True
    assert body["temperature"] == 0.3
    assert "top_p" not in body
    assert body["stop_sequences"] == ["END"]
    assert body["system"] == "You are terse.\n\nAnswer in one line."
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is 2+3, and the weather in Paris?"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "calculator",
                    "input": {"expression": "2+3"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_02",
                    "name": "weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "5"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "content": "weather service unavailable",
                    "is_error": True,
                },
                {"type": "text", "text": "Thanks, go on."},
            ],
        },
    ]
    roles = [m["role"] for m in body["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))
    assert body["tools"] == [
        {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "input_schema": CALCULATOR.parameters,
        },
        {
            "name": "weather",
            "description": "Current weather for a city.",
            "input_schema": WEATHER.parameters,
        },
    ]
    assert sent_api_key(request.headers) == API_KEY
    assert request.headers.get("anthropic-version")


def test_tool_results_lead_their_user_message_and_same_roles_merge() -> None:
    # A user who writes while a tool runs puts text before the result in the transcript; the
    # API wants tool results first in a user message, and no two messages of one role in a row.
    turn = Turn(
        blocks=[
            Block.user("first"),
            Block.user("second"),
            Block.tool_call("toolu_1", "calculator", '{"expression": "1+1"}'),
            Block.user("still there?"),
            Block.tool_use("toolu_1", {"value": 2}),
            Block(kind=BlockKind.OTHER, payload={"text": "ignored"}),
        ]
    )

    system, messages = build_messages(turn)

    assert system == ""
    assert messages == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "calculator",
                    "input": {"expression": "1+1"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"value": 2}'},
                {"type": "text", "text": "still there?"},
            ],
        },
    ]


@dataclass
class Failure:
    scenario: Callable[[], Scenario]
    message: str  # the whole message, or its start when ``prefix``
    status_code: int | None
    retryable: bool
    prefix: bool = False
    settings: dict[str, Any] | None = None


def _partial_text() -> list[str]:
    return [
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Partial "}),
    ]


# Puts the key across the truncation limit, so truncating before scrubbing would leak a prefix.
_LONG_SERVER_MESSAGE = "Upstream failure " + "x" * 155 + f" key={API_KEY} " + "y" * 300

FAILURES = {
    "401": Failure(
        lambda: Scenario(
            status=401,
            error_body=error_payload("authentication_error", "invalid x-api-key"),
            echo_key_in_error=True,
        ),
        "anthropic: authentication failed (401): check the API key",
        401,
        False,
    ),
    "429": Failure(
        lambda: Scenario(
            status=429,
            error_body=error_payload("rate_limit_error", "Rate limit reached for requests"),
            headers={"retry-after": "30"},
        ),
        "anthropic: rate limited (429): Rate limit reached for requests",
        429,
        True,
    ),
    "500": Failure(
        lambda: Scenario(status=500, error_body=error_payload("api_error", _LONG_SERVER_MESSAGE)),
        "anthropic: server error (500): Upstream failure xxx",
        500,
        True,
        prefix=True,
    ),
    "in-stream-overloaded": Failure(
        lambda: Scenario(
            steps=[*_partial_text(), sse("error", error_payload("overloaded_error", "Overloaded"))]
        ),
        "anthropic: server error (529): Overloaded",
        529,
        True,
    ),
    "connection-cut": Failure(
        lambda: Scenario(steps=[*_partial_text(), Abort()]),
        "anthropic: connection lost while streaming",
        None,
        True,
        prefix=True,
    ),
    "no-message-stop": Failure(
        lambda: Scenario(steps=[*_partial_text(), block_stop_text(), message_delta("end_turn", 2)]),
        "anthropic stream ended before the response was complete",
        None,
        False,
    ),
    "malformed-data": Failure(
        lambda: Scenario(
            steps=[*_partial_text(), "event: content_block_delta\ndata: {not json\n\n"]
        ),
        "anthropic: malformed stream data",
        None,
        False,
    ),
    "event-missing-field": Failure(
        lambda: Scenario(
            steps=[
                message_start(),
                block_start(0, {"type": "tool_use", "name": "calculator", "input": {}}),
            ]
        ),
        "anthropic: malformed stream data",
        None,
        False,
    ),
    "timeout": Failure(
        lambda: Scenario(steps=text_stream(["late"]), stall=asyncio.Event()),
        "anthropic: request timed out after 0.5s",
        None,
        True,
        settings={"timeout": 0.5},
    ),
}


def block_stop_text() -> str:
    return sse("content_block_stop", {"type": "content_block_stop", "index": 0})


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
async def test_failure_ends_with_error_event_and_readable_engine_error(
    harness: Harness, case: Failure
) -> None:
    harness.fake.scenario = case.scenario()
    sink = CollectingSink()
    turn = Turn(blocks=[Block.user("hello")])
    engine = harness.engine(**(case.settings or {}))

    async with asyncio.timeout(10):
        with pytest.raises(EngineError) as caught:
            await engine.run_inference(turn, make_ctx(sink))

    error = caught.value
    message = str(error)
    if case.prefix:
        assert message.startswith(case.message), message
    else:
        assert message == case.message
    assert len(message) <= 260
    assert error.provider == "anthropic"
    assert error.status_code == case.status_code
    assert error.retryable is case.retryable

    types = sink.types()
    assert types[0] == "start"
    assert types[-1] == "error"
    assert "final" not in types
    assert sink.events[-1].error_string == message  # type: ignore[attr-defined]
    assert_ids(sink.events)
    assert [b.kind for b in turn.blocks] == [BlockKind.USER]

    for leak in (message, *(e.to_json() for e in sink.events)):
        assert API_KEY not in leak
        assert API_KEY[:12] not in leak
    assert len(harness.fake.requests) == 1  # max_retries=0: one attempt, no silent retry


class SignalingSink(CollectingSink):
    """Signals once ``count`` text deltas have arrived, so the test cancels at a known point."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.reached = asyncio.Event()

    async def publish_event(self, event: Event) -> None:
        await super().publish_event(event)
        if sum(isinstance(e, PartialEvent) for e in self.events) >= self.count:
            self.reached.set()


async def test_cancel_mid_stream_publishes_interrupt_and_propagates(harness: Harness) -> None:
    pause = Pause()
    harness.fake.scenario = Scenario(
        steps=[
            message_start(),
            *text_block(0, ["Once ", "upon "])[:-1],
            pause,
            block_delta(0, {"type": "text_delta", "text": "a time"}),
            block_stop_text(),
            message_delta("end_turn", 4),
            message_stop(),
        ]
    )
    sink = SignalingSink(count=2)
    turn = Turn(blocks=[Block.user("tell me a story")])

    async with asyncio.timeout(10):
        task = asyncio.create_task(harness.engine().run_inference(turn, make_ctx(sink)))
        await sink.reached.wait()
        assert pause.reached.is_set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert sink.types() == ["start", "partial", "partial", "interrupt"]
    last = sink.events[-1]
    assert isinstance(last, InterruptEvent)
    assert last.text == "Once upon "
    assert last.meta.stop_reason == "cancelled"
    assert_ids(sink.events)
    assert [b.kind for b in turn.blocks] == [BlockKind.USER]
