"""A stand-in for the Anthropic Messages API that speaks its streaming wire format.

A test picks a ``Scenario`` (the status, the body, and how the body is delivered), drives the
real SDK against this app through ``serve_app``, then inspects what the server received in
``FakeAnthropic.requests``. Scenarios can pause mid-stream on an event the test controls, stall
before the first byte, or break the connection, so failure paths are exercised over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "claude-test-1"


@dataclass
class Pause:
    """Stop sending until the test sets ``release``; ``reached`` tells it the server got here."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Abort:
    """Raise inside the body generator, so uvicorn drops the half-sent chunked response."""


Step = str | Pause | Abort


@dataclass
class Scenario:
    """What ``POST /v1/messages`` answers.

    With ``status`` 200 the ``steps`` are streamed as ``text/event-stream``; otherwise
    ``error_body`` is sent as JSON. ``stall`` (if set) is awaited before any byte is sent.
    """

    steps: Sequence[Step] = ()
    status: int = 200
    error_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: asyncio.Event | None = None
    echo_key_in_error: bool = False


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]


class FakeAnthropic:
    """The app plus what it recorded; ``scenario`` may be replaced between requests."""

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.scenario = scenario or Scenario()
        self.requests: list[RecordedRequest] = []
        self.app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    def release(self) -> None:
        """Let every stalled or paused response go on, so server shutdown never waits on one."""
        if self.scenario.stall is not None:
            self.scenario.stall.set()
        for step in self.scenario.steps:
            if isinstance(step, Pause):
                step.release.set()

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(RecordedRequest(body=body, headers=headers))
        scenario = self.scenario
        if scenario.stall is not None:
            await scenario.stall.wait()
        if scenario.status != 200:
            error_body = scenario.error_body or error_payload("api_error", "Internal error")
            if scenario.echo_key_in_error:
                # Some proxies echo the credential they rejected; the engine must not repeat it.
                key = headers.get("x-api-key") or headers.get("authorization", "")
                error_body = json.loads(json.dumps(error_body))
                error_body["error"]["message"] += f" (got {key})"
            return JSONResponse(
                error_body,
                status_code=scenario.status,
                headers={"request-id": "req_fake", **scenario.headers},
            )
        return StreamingResponse(
            _replay(scenario.steps),
            media_type="text/event-stream",
            headers={"request-id": "req_fake", "cache-control": "no-cache", **scenario.headers},
        )


async def _replay(steps: Sequence[Step]) -> AsyncIterator[str]:
    for step in steps:
        if isinstance(step, Pause):
            step.reached.set()
            await step.release.wait()
        elif isinstance(step, Abort):
            raise RuntimeError("fake anthropic: connection cut on purpose")
        else:
            yield step


# --- wire format builders ----------------------------------------------------------------------


def sse(event_type: str, data: dict[str, Any] | str) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"event: {event_type}\ndata: {payload}\n\n"


def error_payload(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def message_start(
    *,
    input_tokens: int = 12,
    output_tokens: int = 1,
    cache_creation_input_tokens: int | None = None,
    cache_read_input_tokens: int | None = None,
    message_id: str = "msg_fake01",
) -> str:
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cache_creation_input_tokens is not None:
        usage["cache_creation_input_tokens"] = cache_creation_input_tokens
    if cache_read_input_tokens is not None:
        usage["cache_read_input_tokens"] = cache_read_input_tokens
    return sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        },
    )


def ping() -> str:
    return sse("ping", {"type": "ping"})


def block_start(index: int, content_block: dict[str, Any]) -> str:
    return sse(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": content_block},
    )


def block_delta(index: int, delta: dict[str, Any]) -> str:
    return sse(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def block_stop(index: int) -> str:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


def text_block(index: int, deltas: Sequence[str]) -> list[str]:
    return [
        block_start(index, {"type": "text", "text": ""}),
        *(block_delta(index, {"type": "text_delta", "text": d}) for d in deltas),
        block_stop(index),
    ]


def thinking_block(index: int, deltas: Sequence[str], signature: str = "sig-fake") -> list[str]:
    return [
        block_start(index, {"type": "thinking", "thinking": "", "signature": ""}),
        *(block_delta(index, {"type": "thinking_delta", "thinking": d}) for d in deltas),
        block_delta(index, {"type": "signature_delta", "signature": signature}),
        block_stop(index),
    ]


def tool_use_block(index: int, call_id: str, name: str, json_chunks: Sequence[str]) -> list[str]:
    return [
        block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}}),
        *(
            block_delta(index, {"type": "input_json_delta", "partial_json": chunk})
            for chunk in json_chunks
        ),
        block_stop(index),
    ]


def message_delta(stop_reason: str, output_tokens: int) -> str:
    return sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )


def message_stop() -> str:
    return sse("message_stop", {"type": "message_stop"})


def text_stream(
    deltas: Sequence[str], *, stop_reason: str = "end_turn", output_tokens: int = 7
) -> list[Step]:
    """A complete, successful text-only response."""
    return [
        message_start(),
        ping(),
        *text_block(0, deltas),
        message_delta(stop_reason, output_tokens),
        message_stop(),
    ]
