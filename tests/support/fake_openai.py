"""A stand-in for the OpenAI Chat Completions endpoint, on the real wire format.

Tests drive the real ``openai`` SDK against it (through ``serve_app``), so what is exercised
is exactly what a real provider or an OpenAI-compatible server would put on the wire: the SSE
framing, status codes with OpenAI-shaped error bodies, connections cut mid-body, garbage
data lines, a server too slow to answer. Every request is recorded for assertions on what the
SDK actually sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CHUNK_ID = "chatcmpl-fake123"
CREATED = 1_700_000_000
MODEL = "gpt-fake"

# A gate that is never opened still has to let the server shut down: the tests own the gates
# and open them, this bound only stops a broken test from hanging.
GATE_LIMIT_S = 10.0


class StreamCut(RuntimeError):
    """Raised inside the body generator so uvicorn aborts the chunked response."""


@dataclass
class Scenario:
    """What the fake answers with, and what it received.

    ``events`` are SSE data payloads: dicts are sent as JSON, strings are sent verbatim (for
    malformed data). The stream ends with ``data: [DONE]`` when ``done`` is set.
    """

    events: list[dict[str, Any] | str] = field(default_factory=list)
    done: bool = True
    status: int = 200
    error: dict[str, Any] | None = None
    cut_after: int | None = None  # raise after sending this many events
    hold_after: int | None = None  # wait for ``release`` after sending this many events
    hold_before_response: bool = False  # wait for ``release`` before sending anything
    release: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)  # set when a hold begins
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def make_app(scenario: Scenario) -> Starlette:
    async def chat_completions(request: Request) -> Response:
        scenario.requests.append(await request.json())
        scenario.headers.append({k.lower(): v for k, v in request.headers.items()})
        if scenario.hold_before_response:
            await _hold(scenario)
        if scenario.error is not None:
            return JSONResponse({"error": scenario.error}, status_code=scenario.status)
        return StreamingResponse(_body(scenario), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])


async def _hold(scenario: Scenario) -> None:
    scenario.held.set()
    await asyncio.wait_for(scenario.release.wait(), GATE_LIMIT_S)


async def _body(scenario: Scenario) -> AsyncIterator[bytes]:
    for sent, event in enumerate(scenario.events):
        if sent == scenario.cut_after:
            raise StreamCut("fake server drops the connection")
        if sent == scenario.hold_after:
            await _hold(scenario)
        data = event if isinstance(event, str) else json.dumps(event)
        yield f"data: {data}\n\n".encode()
    if scenario.cut_after is not None and scenario.cut_after >= len(scenario.events):
        raise StreamCut("fake server drops the connection")
    if scenario.done:
        yield b"data: [DONE]\n\n"


# Chunk builders, shaped like OpenAI's own.


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "delta": delta if delta is not None else {},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": None,
    }


def usage_chunk(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
    return {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_fake",
        "choices": [],
        "usage": usage,
    }


def text_events(
    deltas: list[str], *, finish_reason: str | None = "stop", usage: tuple[int, int] | None = None
) -> list[dict[str, Any] | str]:
    """A role chunk, one chunk per delta, the finish chunk, and optionally the usage chunk."""
    events: list[dict[str, Any] | str] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": d}) for d in deltas]
    if finish_reason is not None:
        events.append(chunk({}, finish_reason))
    if usage is not None:
        events.append(usage_chunk(*usage))
    return events


def tool_call_delta(
    index: int, *, call_id: str | None = None, name: str | None = None, arguments: str = ""
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call["id"] = call_id
        call["type"] = "function"
        call["function"]["name"] = name
    return chunk({"tool_calls": [call]})


def openai_error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"message": message, "type": type_, "param": None, "code": code}
