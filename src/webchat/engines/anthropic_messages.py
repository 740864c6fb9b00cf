"""Anthropic Messages API engine, through the official ``anthropic`` SDK.

The SDK's raw stream events are translated into ``InferenceStream`` calls; ``stream_inference``
owns the event protocol. Every failure becomes an ``EngineError`` whose message a person can act
on and that never contains the API key, even when a provider or proxy echoes it back.

Notes on the installed SDK (2.x) that shaped this module:

* ``messages.create`` has no ``temperature`` / ``top_p`` parameters any more, so they travel in
  ``extra_body`` (the wire API still accepts them).
* Errors while reading the stream body are not wrapped by the SDK: they surface as ``httpx2``
  exceptions (``ReadTimeout``, ``RemoteProtocolError``) or as ``json.JSONDecodeError``.
* An ``event: error`` inside a 200 stream becomes an ``APIStatusError`` with ``status_code`` 200;
  the real cause is only in ``error.type``, so it is mapped back to the documented status.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar, cast

import anthropic
import httpx2
from anthropic import omit
from anthropic.types import (
    ContentBlockParam,
    ImageBlockParam,
    InputJSONDelta,
    MessageParam,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    TextBlock,
    TextBlockParam,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlock,
    ToolUseBlockParam,
)

from webchat.engines.attachments import ImagePart, attachment_parts
from webchat.engines.base import EngineError, RunContext, ToolDefinition, scrub, short_detail
from webchat.engines.settings import StepSettings
from webchat.engines.streaming import InferenceStream, stream_inference
from webchat.events import Usage
from webchat.turns import Block, BlockKind, Turn

PROVIDER = "anthropic"
DEFAULT_MAX_TOKENS = 4096

# Documented HTTP status of each error type, for errors that arrive inside a 200 stream.
_STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicMessagesEngine:
    """Streams one Messages API call per ``run_inference``; the client is shared across calls
    so connections are pooled."""

    def __init__(self, settings: StepSettings) -> None:
        self.settings = settings
        self._api_key = settings.api_key.get_secret_value() if settings.api_key else None
        self.client = anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=settings.base_url,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        )

    async def aclose(self) -> None:
        """Release pooled connections; the engine is unusable afterwards."""
        await self.client.close()

    async def run_inference(self, turn: Turn, ctx: RunContext) -> Turn:
        async def produce(stream: InferenceStream) -> None:
            await self._produce(turn, ctx, stream)

        return await stream_inference(turn, ctx, self.settings, produce, self.to_engine_error)

    async def _produce(self, turn: Turn, ctx: RunContext, stream: InferenceStream) -> None:
        settings = self.settings
        system, messages = build_messages(turn)
        tools = build_tools(ctx.tools)
        extra_body: dict[str, Any] = {}
        if settings.temperature is not None:
            extra_body["temperature"] = settings.temperature
        if settings.top_p is not None:
            extra_body["top_p"] = settings.top_p

        response = await self.client.messages.create(
            model=settings.resolved_model(),
            max_tokens=settings.max_tokens or DEFAULT_MAX_TOKENS,
            messages=messages,
            stream=True,
            system=system if system else omit,
            tools=tools if tools else omit,
            stop_sequences=settings.stop if settings.stop else omit,
            extra_body=extra_body or None,
        )
        reader = _StreamReader(stream)
        async with response:
            async for event in response:
                await reader.handle(event)
        reader.complete()

    def to_engine_error(self, exc: Exception) -> EngineError:
        """Map SDK and transport failures to a short, key-free ``EngineError``."""
        error = _classify(exc, self.settings.timeout, self._api_key)
        # Details are scrubbed before truncation; this pass catches anything else.
        message = scrub(str(error), self._api_key)
        return EngineError(
            message,
            provider=PROVIDER,
            status_code=error.status_code,
            retryable=error.retryable,
        )


class _StreamReader:
    """Folds raw stream events into an ``InferenceStream``.

    Tool calls are held back until the message is complete so they are reported in content
    block order, with their input JSON fully assembled.
    """

    def __init__(self, stream: InferenceStream) -> None:
        self.stream = stream
        self.tool_blocks: dict[int, tuple[str, str, list[str]]] = {}
        self.usage = Usage()
        self.stopped = False

    async def handle(self, event: object) -> None:
        # Folding is kept apart from publishing so an exception raised by a sink is never
        # mistaken for bad provider data.
        try:
            text, thinking = self._fold(event)
        except (AttributeError, TypeError, ValueError) as exc:
            raise EngineError("anthropic: malformed stream data", provider=PROVIDER) from exc
        if thinking:
            await self.stream.add_thinking(thinking)
        if text:
            await self.stream.add_text(text)

    def _fold(self, event: object) -> tuple[str, str]:
        """Record ``event``; return the (text, thinking) it adds.

        The SDK builds events without validation: a missing field reads as ``None`` and an
        unknown ``type`` is built as the first member of the union (``message_start``). Hence
        the check of ``type`` itself, and ``_required`` on the fields this reader depends on.
        """
        kind = getattr(event, "type", None)
        if kind == "content_block_delta" and isinstance(event, RawContentBlockDeltaEvent):
            delta = event.delta
            if isinstance(delta, TextDelta) and delta.type == "text_delta":
                return delta.text or "", ""
            if isinstance(delta, ThinkingDelta) and delta.type == "thinking_delta":
                return "", delta.thinking or ""
            if isinstance(delta, InputJSONDelta) and delta.type == "input_json_delta":
                tool = self.tool_blocks.get(_required(event.index))
                if tool is not None:
                    tool[2].append(delta.partial_json or "")
        elif kind == "content_block_start" and isinstance(event, RawContentBlockStartEvent):
            block = event.content_block
            if isinstance(block, ToolUseBlock) and block.type == "tool_use":
                index = _required(event.index)
                self.tool_blocks[index] = (_required(block.id), _required(block.name), [])
            elif isinstance(block, TextBlock) and block.type == "text":
                return block.text or "", ""
            elif isinstance(block, ThinkingBlock) and block.type == "thinking":
                return "", block.thinking or ""
        elif kind == "message_start" and isinstance(event, RawMessageStartEvent):
            start = _required(event.message).usage
            if start is not None:
                self.usage = Usage(
                    input_tokens=start.input_tokens or 0,
                    output_tokens=start.output_tokens or 0,
                    cache_creation_input_tokens=start.cache_creation_input_tokens,
                    cache_read_input_tokens=start.cache_read_input_tokens,
                )
                self.stream.set_usage(self.usage)
        elif kind == "message_delta" and isinstance(event, RawMessageDeltaEvent):
            if event.delta is not None and event.delta.stop_reason is not None:
                self.stream.stop_reason = event.delta.stop_reason
            usage = event.usage
            if usage is not None:
                # Counts in message_delta are cumulative, so they replace rather than add.
                self.usage = self.usage.model_copy(
                    update=_present(
                        output_tokens=usage.output_tokens,
                        input_tokens=usage.input_tokens or None,
                        cache_creation_input_tokens=usage.cache_creation_input_tokens,
                        cache_read_input_tokens=usage.cache_read_input_tokens,
                    )
                )
                self.stream.set_usage(self.usage)
        elif kind == "message_stop" and isinstance(event, RawMessageStopEvent):
            self.stopped = True
        return "", ""

    def complete(self) -> None:
        if not self.stopped:
            raise EngineError(
                "anthropic stream ended before the response was complete", provider=PROVIDER
            )
        for index in sorted(self.tool_blocks):
            call_id, name, parts = self.tool_blocks[index]
            arguments = "".join(parts)
            self.stream.add_tool_call(call_id, name, arguments if arguments.strip() else "{}")


def _present(**values: int | None) -> dict[str, int]:
    return {key: value for key, value in values.items() if value is not None}


_T = TypeVar("_T")


def _required(value: _T | None) -> _T:
    if value is None:
        raise ValueError("required field missing from stream event")
    return value


# --- request -----------------------------------------------------------------------------------


def build_messages(turn: Turn) -> tuple[str, list[MessageParam]]:
    """The ``system`` text and the alternating message list for ``turn``.

    The API rejects two consecutive messages of one role, so neighbours are merged; inside a
    user message tool results must come before any text, so they are moved to the front.
    A user block's attachments come before its text (images first is what Anthropic
    recommends): an ``image`` block (base64) per image, a text block per text file.
    """
    system_parts: list[str] = []
    messages: list[tuple[str, list[ContentBlockParam]]] = []

    def add(role: str, content: ContentBlockParam) -> None:
        if messages and messages[-1][0] == role:
            messages[-1][1].append(content)
        else:
            messages.append((role, [content]))

    for block in turn.blocks:
        kind = block.kind
        if kind == BlockKind.SYSTEM:
            if block.text:
                system_parts.append(block.text)
        elif kind == BlockKind.USER:
            for part in attachment_parts(block, turn.attachment_data):
                add("user", _image(part) if isinstance(part, ImagePart) else _text(part.text))
            if block.text:
                add("user", _text(block.text))
        elif kind == BlockKind.LLM_TEXT:
            if block.text:
                add("assistant", _text(block.text))
        elif kind == BlockKind.TOOL_CALL:
            add("assistant", _tool_use(block))
        elif kind == BlockKind.TOOL_USE:
            add("user", _tool_result(block))
        # Reasoning is not replayed (the API would need its signature); ``other`` has no role.

    result: list[MessageParam] = []
    for role, content in messages:
        if role == "user":
            content.sort(key=lambda c: c.get("type") != "tool_result")
            result.append({"role": "user", "content": content})
        else:
            result.append({"role": "assistant", "content": content})
    return "\n\n".join(system_parts), result


def build_tools(tools: tuple[ToolDefinition, ...]) -> list[ToolParam]:
    return [
        {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools
    ]


def _text(text: str) -> TextBlockParam:
    return {"type": "text", "text": text}


def _image(part: ImagePart) -> ImageBlockParam:
    # The media type was sniffed on upload, so it is one of the four the API accepts.
    media_type = cast(Any, part.media_type)
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": part.data},
    }


def _tool_use(block: Block) -> ToolUseBlockParam:
    return {
        "type": "tool_use",
        "id": str(block.payload.get("id", "")),
        "name": str(block.payload.get("name", "")),
        "input": _tool_input(block.payload.get("args")),
    }


def _tool_input(args: Any) -> dict[str, object]:
    """Tool input as the object the API insists on, whatever shape the transcript kept."""
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return {"arguments": args}
    if args is None:
        return {}
    if isinstance(args, dict):
        return cast(dict[str, object], args)
    return {"arguments": args}


def _tool_result(block: Block) -> ToolResultBlockParam:
    payload = block.payload
    param: ToolResultBlockParam = {
        "type": "tool_result",
        "tool_use_id": str(payload.get("id", "")),
    }
    if "error" in payload:
        # The model needs the reason a call failed, which lives in ``error``, not ``result``.
        result = payload.get("result")
        error = str(payload["error"])
        param["content"] = error if result in (None, "") else f"{error}\n{_as_text(result)}"
        param["is_error"] = True
    else:
        param["content"] = _as_text(payload.get("result"))
    return param


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


# --- errors ------------------------------------------------------------------------------------


def _classify(exc: Exception, timeout: float, secret: str | None) -> EngineError:
    if isinstance(exc, anthropic.APIResponseValidationError):
        return EngineError("anthropic: malformed stream data", status_code=exc.status_code)
    if isinstance(exc, anthropic.APIStatusError):
        return _status_error(exc, secret)
    if isinstance(exc, anthropic.APITimeoutError):
        return EngineError(f"anthropic: request timed out after {timeout:g}s", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError):
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "unknown cause"
        return EngineError(f"anthropic: connection failed ({cause})", retryable=True)
    if isinstance(exc, httpx2.TimeoutException):
        return EngineError(
            f"anthropic: stream timed out after {timeout:g}s without data", retryable=True
        )
    if isinstance(exc, httpx2.TransportError):
        return EngineError(
            f"anthropic: connection lost while streaming ({type(exc).__name__})", retryable=True
        )
    if isinstance(exc, ValueError):  # json.JSONDecodeError from the SDK's SSE decoding
        return EngineError("anthropic: malformed stream data")
    detail = short_detail(str(exc), secret)
    return EngineError(
        f"anthropic: request failed ({type(exc).__name__})" + (f": {detail}" if detail else "")
    )


def _status_error(exc: anthropic.APIStatusError, secret: str | None) -> EngineError:
    status = exc.status_code
    error_type = exc.type if isinstance(exc.type, str) else None
    if status < 400:
        # An ``event: error`` inside a successful response: the type carries the cause.
        status = _STATUS_OF_ERROR_TYPE.get(error_type or "", 500)
    detail = short_detail(exc.api_message or _body_text(exc.body) or error_type or "", secret)
    suffix = f": {detail}" if detail else ""
    if status == 401:
        return EngineError(
            "anthropic: authentication failed (401): check the API key", status_code=401
        )
    if status == 403:
        return EngineError(f"anthropic: permission denied (403){suffix}", status_code=403)
    if status == 429:
        return EngineError(
            f"anthropic: rate limited (429){suffix}", status_code=429, retryable=True
        )
    if status >= 500:
        return EngineError(
            f"anthropic: server error ({status}){suffix}", status_code=status, retryable=True
        )
    return EngineError(f"anthropic: request rejected ({status}){suffix}", status_code=status)


def _body_text(body: object) -> str:
    return body if isinstance(body, str) else ""
