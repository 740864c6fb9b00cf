"""OpenAI Chat Completions, streamed through the official SDK.

The adapter only translates: blocks become chat messages, stream chunks become
``InferenceStream`` calls, and SDK exceptions become ``EngineError``s whose messages a person
can act on. ``base_url`` points it at any server that speaks the same wire format (vLLM,
llama.cpp, Ollama, LM Studio...), which is why a missing API key is not an error here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import omit
from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionChunk,
    ChatCompletionContentPartParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)

from webchat.engines.attachments import ImagePart, attachment_parts
from webchat.engines.base import EngineError, RunContext, ToolDefinition, scrub, short_detail
from webchat.engines.settings import StepSettings
from webchat.engines.streaming import InferenceStream, stream_inference
from webchat.events import Usage, new_id
from webchat.turns import Block, BlockKind, Turn

PROVIDER = "openai"

# Local OpenAI-compatible servers ignore the key, but the SDK refuses to start without one.
# A fixed placeholder (rather than OPENAI_API_KEY from the environment) keeps the key that is
# sent exactly the one the settings say.
NO_KEY_PLACEHOLDER = "sk-no-key-configured"


class OpenAIChatEngine:
    """An ``Engine`` backed by ``POST {base_url}/chat/completions`` with ``stream=true``."""

    def __init__(self, settings: StepSettings) -> None:
        self.settings = settings
        self._api_key = settings.api_key.get_secret_value() if settings.api_key else ""
        # One client per engine: it owns the HTTP connection pool that later calls reuse.
        self._client = openai.AsyncOpenAI(
            api_key=self._api_key or NO_KEY_PLACEHOLDER,
            base_url=settings.base_url,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        )

    async def aclose(self) -> None:
        """Release pooled connections; the engine must not be used afterwards."""
        await self._client.close()

    async def run_inference(self, turn: Turn, ctx: RunContext) -> Turn:
        progress = _Progress()

        async def produce(stream: InferenceStream) -> None:
            await self._produce(turn, ctx, stream, progress)

        def to_engine_error(exc: Exception) -> EngineError:
            return self._engine_error(exc, progress)

        return await stream_inference(turn, ctx, self.settings, produce, to_engine_error)

    async def _produce(
        self, turn: Turn, ctx: RunContext, stream: InferenceStream, progress: _Progress
    ) -> None:
        settings = self.settings
        tools = [_tool_param(tool) for tool in ctx.tools]
        response = await self._client.chat.completions.create(
            model=stream.model,
            messages=turn_to_messages(turn),
            stream=True,
            stream_options={"include_usage": True},
            tools=tools or omit,
            temperature=settings.temperature if settings.temperature is not None else omit,
            top_p=settings.top_p if settings.top_p is not None else omit,
            max_tokens=settings.max_tokens if settings.max_tokens is not None else omit,
            stop=settings.stop or omit,
        )
        progress.streaming = True
        calls: dict[int, _PendingCall] = {}
        async with response:
            async for chunk in response:
                await _apply_chunk(chunk, stream, calls)
        if stream.stop_reason is None:
            # The SDK ends iteration quietly on a clean EOF, with or without ``[DONE]``; only
            # the missing finish_reason tells a cut-short answer from a complete one.
            raise EngineError(
                "openai stream ended before the response was complete",
                provider=PROVIDER,
                retryable=True,
            )
        for index in sorted(calls):
            call = calls[index]
            stream.add_tool_call(call.id or f"call_{new_id()}", call.name, "".join(call.arguments))

    def _engine_error(self, exc: Exception, progress: _Progress) -> EngineError:
        def error(
            message: str, *, status_code: int | None = None, retryable: bool = False
        ) -> EngineError:
            return EngineError(
                scrub(message, self._api_key),
                provider=PROVIDER,
                status_code=status_code,
                retryable=retryable,
            )

        if isinstance(exc, openai.AuthenticationError):
            return error(
                f"openai: authentication failed ({exc.status_code}): check the API key",
                status_code=exc.status_code,
            )
        if isinstance(exc, openai.RateLimitError):
            return error(
                self._with_detail(f"openai: rate limited ({exc.status_code})", _status_detail(exc)),
                status_code=exc.status_code,
                retryable=True,
            )
        if isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            kind = "server error" if code >= 500 else "request rejected"
            return error(
                self._with_detail(f"openai: {kind} ({code})", _status_detail(exc)),
                status_code=code,
                retryable=code >= 500,
            )
        if isinstance(exc, openai.APITimeoutError):
            return error(
                f"openai: request timed out after {self.settings.timeout:g}s", retryable=True
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = _describe(exc.__cause__) if exc.__cause__ else ""
            if progress.streaming:
                what = "openai: connection lost mid-stream"
            else:
                what = f"openai: connection to {_origin(exc)} failed"
            return error(self._with_detail(what, cause), retryable=True)
        if isinstance(exc, openai.APIError):
            # An ``{"error": ...}`` object sent inside an otherwise healthy stream.
            return error(self._with_detail("openai: stream error", exc.message))
        if isinstance(exc, ValueError):  # json.JSONDecodeError and friends
            return error(self._with_detail("openai: malformed stream data", str(exc)))
        return error(
            self._with_detail(f"openai: unexpected failure ({type(exc).__name__})", str(exc))
        )

    def _with_detail(self, message: str, detail: str) -> str:
        detail = short_detail(detail, self._api_key)
        return f"{message}: {detail}" if detail else message


@dataclass
class _Progress:
    """Whether the response had started, so a dropped connection is reported as such."""

    streaming: bool = False


@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


async def _apply_chunk(
    chunk: ChatCompletionChunk, stream: InferenceStream, calls: dict[int, _PendingCall]
) -> None:
    if chunk.usage is not None:
        stream.set_usage(_usage(chunk.usage))
    for choice in chunk.choices:
        delta = choice.delta
        thinking = _reasoning_delta(delta)
        if thinking:
            await stream.add_thinking(thinking)
        if delta.content:
            await stream.add_text(delta.content)
        if delta.refusal:
            await stream.add_text(delta.refusal)
        for call_delta in delta.tool_calls or ():
            pending = calls.setdefault(call_delta.index, _PendingCall())
            # Some compatible servers repeat id and name on every chunk: keep the first.
            if call_delta.id and not pending.id:
                pending.id = call_delta.id
            function = call_delta.function
            if function is not None:
                if function.name and not pending.name:
                    pending.name = function.name
                if function.arguments:
                    pending.arguments.append(function.arguments)
        if choice.finish_reason:
            stream.stop_reason = choice.finish_reason


def _reasoning_delta(delta: Any) -> str:
    """Reasoning text that compatible servers (vLLM, DeepSeek, Ollama) add beside ``content``."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(delta, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


def _usage(usage: CompletionUsage) -> Usage:
    details = usage.prompt_tokens_details
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_tokens=details.cached_tokens if details is not None else None,
    )


def _tool_param(tool: ToolDefinition) -> ChatCompletionFunctionToolParam:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def turn_to_messages(turn: Turn) -> list[ChatCompletionMessageParam]:
    """The transcript as Chat Completions messages.

    The API wants the tool calls of one model step in a single assistant message (with that
    step's text as its content), answered by one ``tool`` message per call. Reasoning and
    ``other`` blocks are not part of the chat protocol and are left out. A user message
    with attachments has content parts: its text, then an ``image_url`` part (a data URL)
    per image and a text part (``"<name>:\n<content>"``) per text file, with the bytes
    from ``turn.attachment_data``.
    """
    messages: list[ChatCompletionMessageParam] = []
    text: list[str] = []
    calls: list[ChatCompletionMessageFunctionToolCallParam] = []

    def flush_assistant() -> None:
        if not text and not calls:
            return
        message: ChatCompletionAssistantMessageParam = {
            "role": "assistant",
            "content": "".join(text) if text else None,
        }
        if calls:
            message["tool_calls"] = list(calls)
        messages.append(message)
        text.clear()
        calls.clear()

    for block in turn.blocks:
        kind = block.kind
        if kind in (BlockKind.REASONING, BlockKind.OTHER):
            continue
        if kind == BlockKind.LLM_TEXT:
            if calls:  # text after tool calls starts a new assistant step
                flush_assistant()
            text.append(block.text)
            continue
        if kind == BlockKind.TOOL_CALL:
            calls.append(_tool_call_param(block))
            continue
        flush_assistant()
        if kind == BlockKind.SYSTEM:
            messages.append({"role": "system", "content": block.text})
        elif kind == BlockKind.USER:
            if block.attachments:
                parts = _user_parts(block, turn.attachment_data)
                messages.append({"role": "user", "content": parts})
            else:
                messages.append({"role": "user", "content": block.text})
        elif kind == BlockKind.TOOL_USE:
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(block.payload.get("id", "")),
                    "content": _tool_result_content(block),
                }
            )
    flush_assistant()
    return messages


def _user_parts(block: Block, data: dict[str, bytes]) -> list[ChatCompletionContentPartParam]:
    parts: list[ChatCompletionContentPartParam] = []
    if block.text:
        parts.append({"type": "text", "text": block.text})
    for part in attachment_parts(block, data):
        if isinstance(part, ImagePart):
            parts.append({"type": "image_url", "image_url": {"url": part.data_url}})
        else:
            parts.append({"type": "text", "text": part.text})
    return parts


def _tool_call_param(block: Block) -> ChatCompletionMessageFunctionToolCallParam:
    args = block.payload.get("args")
    arguments = args if isinstance(args, str) else json.dumps({} if args is None else args)
    return {
        "id": str(block.payload.get("id", "")),
        "type": "function",
        "function": {"name": str(block.payload.get("name", "")), "arguments": arguments},
    }


def _tool_result_content(block: Block) -> str:
    result = block.payload.get("result")
    error = block.payload.get("error")
    if error is not None:
        failure: dict[str, Any] = {"error": error}
        if result is not None:
            failure["result"] = result
        return json.dumps(failure, default=str)
    if isinstance(result, str):
        return result
    return json.dumps(result, default=str)


def _status_detail(exc: openai.APIStatusError) -> str:
    """The server's own explanation: OpenAI's ``error.message``, else the raw body text."""
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str):
            return message
        return ""
    if isinstance(body, str):
        return body
    return ""


def _describe(cause: BaseException) -> str:
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _origin(exc: openai.APIConnectionError) -> str:
    url = exc.request.url
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"
