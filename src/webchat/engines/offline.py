"""An engine that needs no key and no network.

It is the embedded default, and the workhorse of tests and benchmarks: its answers are
deterministic (a function of the transcript), streamed word by word at ``tokens_per_second``.
It can also call tools, so every tool source (registered, imported by path, MCP) can be tried
without a key: ``calc: <expression>`` asks for the ``calculator`` tool, and
``use <tool_name> <json object>`` asks for that tool with those arguments, when it is offered;
once the result is in, it answers with a sentence containing it. A message with
attachments is acknowledged first ("I received 1 image, png, 12 KB."), from their references:
the offline engine never needs the bytes.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib

from webchat.engines.attachments import describe_attachments
from webchat.engines.base import EngineError, RunContext
from webchat.engines.settings import StepSettings
from webchat.engines.streaming import InferenceStream, stream_inference
from webchat.events import Usage
from webchat.turns import BlockKind, Turn

CALC_PATTERN = re.compile(r"calc:\s*([^\n]+)", re.IGNORECASE)
CALCULATOR = "calculator"
USE_PATTERN = re.compile(r"\buse\s+(\S+)\s+(?=\{)", re.IGNORECASE)
"""``use <tool_name> `` followed by a JSON object (decoded from the ``{`` on)."""

_FILLER = (
    "the quick brown fox jumps over a lazy dog while streams of tokens flow to every "
    "browser watching this conversation in order and without gaps"
).split(" ")


class OfflineEngine:
    """Deterministic local engine; see the module docstring."""

    def __init__(self, settings: StepSettings | None = None) -> None:
        self.settings = settings or StepSettings(api_type="offline")

    async def run_inference(self, turn: Turn, ctx: RunContext) -> Turn:
        async def produce(stream: InferenceStream) -> None:
            await self._produce(turn, ctx, stream)

        return await stream_inference(turn, ctx, self.settings, produce, _unexpected)

    async def _produce(self, turn: Turn, ctx: RunContext, stream: InferenceStream) -> None:
        prompt = turn.last_user_text()
        use = _use_request(prompt)
        if use is not None:
            await self._use_tool(turn, ctx, stream, *use)
        else:
            await self._calc_or_answer(turn, ctx, stream, prompt)
        input_tokens = sum(len(b.text.split()) for b in turn.blocks)
        stream.set_usage(Usage(input_tokens=input_tokens, output_tokens=len(stream.text.split())))

    async def _use_tool(
        self,
        turn: Turn,
        ctx: RunContext,
        stream: InferenceStream,
        name: str,
        arguments: dict[str, object] | None,
        problem: str | None,
    ) -> None:
        """``use <tool_name> <json object>``: call the tool, then say what it returned."""
        offered = [t.name for t in ctx.tools]
        answered = _tool_result(turn, name)
        if answered is not None:
            result, error = answered
            shown = result if isinstance(result, str) else json.dumps(result, default=str)
            text = f"{name} failed: {error}" if error else f"{name} returned {shown}"
        elif arguments is None:
            text = f"I could not read the arguments for {name}: {problem}"
        elif name not in offered:
            text = (
                f"The tool {name} is not offered in this conversation; "
                f"offered: {', '.join(offered) or 'none'}."
            )
        else:
            await self._stream_words(stream, ["Let", "me", "use", f"{name}."])
            stream.add_tool_call(_call_id(turn), name, json.dumps(arguments))
            stream.stop_reason = "tool_calls"
            return
        await self._stream_words(stream, text.split(" "))
        stream.stop_reason = "stop"

    async def _calc_or_answer(
        self, turn: Turn, ctx: RunContext, stream: InferenceStream, prompt: str
    ) -> None:
        match = CALC_PATTERN.search(prompt)
        expression = match.group(1).strip() if match else None
        answered = _tool_result(turn, CALCULATOR) if expression else None
        offers_calculator = any(t.name == CALCULATOR for t in ctx.tools)

        if expression and answered is not None:
            result, error = answered
            text = (
                f"I could not compute {expression}: {error}"
                if error
                else f"The result of {expression} is {result}."
            )
            await self._stream_words(stream, text.split(" "))
            stream.stop_reason = "stop"
        elif expression and offers_calculator:
            await self._stream_words(stream, ["Let", "me", "calculate", "that."])
            stream.add_tool_call(_call_id(turn), CALCULATOR, json.dumps({"expression": expression}))
            stream.stop_reason = "tool_calls"
        else:
            received = describe_attachments(_last_user_attachments(turn))
            lead = received.split(" ") if received else []
            await self._stream_words(stream, [*lead, *self._answer_words(prompt)])
            stream.stop_reason = "stop"

    def _answer_words(self, prompt: str) -> list[str]:
        lead = f'Offline reply to "{" ".join(prompt.split()[:12])}":'.split(" ")
        seed = zlib.crc32(prompt.encode())
        words = list(lead)
        while len(words) < self.settings.answer_tokens:
            words.append(_FILLER[(seed + len(words)) % len(_FILLER)])
        words = words[: self.settings.answer_tokens]
        words[-1] = words[-1].rstrip(":") + "."
        return words

    async def _stream_words(self, stream: InferenceStream, words: list[str]) -> None:
        rate = self.settings.tokens_per_second
        start = time.monotonic()
        for index, word in enumerate(words):
            if rate > 0:
                delay = start + index / rate - time.monotonic()
                await asyncio.sleep(max(delay, 0.0))
            else:
                await asyncio.sleep(0)  # stay cooperative at full speed
            await stream.add_text(word if index == 0 else " " + word)


def _use_request(prompt: str) -> tuple[str, dict[str, object] | None, str | None] | None:
    """``(tool name, arguments, None)`` for ``use <tool_name> {...}`` in ``prompt``, with
    ``None`` arguments and the reason when the object is not valid JSON; None if no request."""
    match = USE_PATTERN.search(prompt)
    if match is None:
        return None
    name = match.group(1)
    try:
        arguments, _ = json.JSONDecoder().raw_decode(prompt, match.end())
    except ValueError as exc:
        return name, None, f"not a JSON object ({exc})"
    if not isinstance(arguments, dict):
        return name, None, "not a JSON object"
    return name, arguments, None


def _last_user_attachments(turn: Turn) -> list[dict[str, object]]:
    for block in reversed(turn.blocks):
        if block.kind == BlockKind.USER:
            return block.attachments
    return []


def _call_id(turn: Turn) -> str:
    return f"call_{zlib.crc32(f'{turn.id}:{len(turn.blocks)}'.encode()):08x}"


def _tool_result(turn: Turn, name: str) -> tuple[object, str | None] | None:
    """The result (or error) of tool ``name`` answering the latest user message, if any."""
    last_user = max((i for i, b in enumerate(turn.blocks) if b.kind == BlockKind.USER), default=-1)
    calls = {
        b.payload.get("id")
        for b in turn.blocks[last_user + 1 :]
        if b.kind == BlockKind.TOOL_CALL and b.payload.get("name") == name
    }
    for block in reversed(turn.blocks[last_user + 1 :]):
        if block.kind == BlockKind.TOOL_USE and block.payload.get("id") in calls:
            return block.payload.get("result"), block.payload.get("error")
    return None


def _unexpected(exc: Exception) -> EngineError:
    return EngineError(f"offline engine failed: {exc}", provider="offline")
