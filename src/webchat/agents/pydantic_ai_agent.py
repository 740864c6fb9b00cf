"""A pydantic-ai ``Agent`` as a conversation's engine (``pip install 'webchat[pydantic-ai]'``).

The agent runs its own loop (model calls, its tools, retries); webchat shows what happens on
the way: text deltas as ``llm.delta``, thinking as thinking frames, each tool call and its
return as a tool card, and the run's usage on the last ``llm.final``.

History: every run gets the conversation so far as pydantic-ai ``message_history``, rebuilt
from the conversation's blocks, so it also covers turns another engine answered before the
profile changed. The profile's system prompt goes in as the run's ``instructions`` (sent on
every request). pydantic-ai sends an agent's own ``system_prompt`` only when the history is
empty, and rebuilt history would lose it after the first run, so what the first run sent is
kept in the turn's data and put back at the head of every later history.

Attachments: a user message's images go in as ``BinaryContent`` and its text files as
``TextContent`` starting with the file's name (the name also in its ``metadata``), next to
the message's text, in the prompt and in the history alike, so the model can see them on
every later run of the branch.

The profile's tools (``tools: [...]``) are offered to the agent next to its own, executed by
webchat's registry with the profile's timeout; they show as cards like the agent's own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any

from pydantic_ai.agent import AbstractAgent
from pydantic_ai.messages import (
    BinaryContent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelRequest,
    ModelRequestPart,
    ModelResponse,
    ModelResponsePart,
    PartDeltaEvent,
    PartStartEvent,
    RetryPromptPart,
    SystemPromptPart,
    TextContent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolReturnPart,
    UserContent,
    UserPromptPart,
)
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import Tool as PydanticAITool
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset
from pydantic_core import to_jsonable_python

from webchat.agents.binding import AgentBinding
from webchat.agents.output import AgentOutput
from webchat.engines.attachments import ImagePart, attachment_parts
from webchat.engines.base import RunContext
from webchat.events import ToolCall, Usage
from webchat.tools.registry import Tool, ToolError
from webchat.turns import Block, BlockKind, Turn

SYSTEM_PROMPTS_KEY = "webchat.pydantic_ai.system_prompts"
"""Turn data: the agent's own system prompts, as its first run sent them."""

AGENT_TYPES: tuple[type, ...] = (AbstractAgent,)


class PydanticAIAgentEngine:
    """An ``Engine`` running a pydantic-ai agent once per run. See the module docstring."""

    def __init__(self, agent: AbstractAgent[Any, Any], binding: AgentBinding) -> None:
        self.agent = agent
        self.binding = binding

    def _model_label(self) -> str:
        model: Any = getattr(self.agent, "model", None)
        name = getattr(model, "model_name", None)
        if self.binding.settings.model:
            return self.binding.settings.model
        if isinstance(name, str):
            return name
        return model if isinstance(model, str) else self.binding.path

    async def run_inference(self, turn: Turn, ctx: RunContext) -> Turn:
        binding = self.binding
        output = binding.output(turn, ctx, model=self._model_label())
        history = to_message_history(turn, turn.data.get(SYSTEM_PROMPTS_KEY) or [])
        instructions = "\n\n".join(b.text for b in turn.blocks_of(BlockKind.SYSTEM) if b.text)
        toolsets = _profile_toolsets(binding, ctx)

        async def on_events(_: Any, events: AsyncIterable[Any]) -> None:
            async for event in events:
                await _show(output, event)

        await output.begin()
        async with output.ending(binding.label):
            result = await self.agent.run(
                _last_prompt(turn),
                message_history=history or None,
                model=binding.settings.model or None,
                instructions=instructions or None,
                model_settings=_model_settings(binding),
                toolsets=toolsets or None,
                event_stream_handler=on_events,
            )
        turn.data[SYSTEM_PROMPTS_KEY] = _system_prompts(result.all_messages())
        usage: Any = result.usage
        if callable(usage) and not hasattr(usage, "input_tokens"):  # pydantic-ai 1.x: a method
            usage = usage()
        output.add_usage(_usage(usage))
        if not output.open_text and result.output is not None:
            # Structured output arrives through an output tool, not as text: show it.
            text = result.output if isinstance(result.output, str) else _json(result.output)
            await output.text(text)
        return await output.finish()


async def _show(output: AgentOutput, event: Any) -> None:
    """One pydantic-ai stream event, shown as webchat shows a model's."""
    if isinstance(event, PartStartEvent):
        if isinstance(event.part, TextPart):
            await output.text(event.part.content)
        elif isinstance(event.part, ThinkingPart):
            await output.thinking(event.part.content)
    elif isinstance(event, PartDeltaEvent):
        if isinstance(event.delta, TextPartDelta):
            await output.text(event.delta.content_delta)
        elif isinstance(event.delta, ThinkingPartDelta):
            await output.thinking(event.delta.content_delta or "")
    elif isinstance(event, FunctionToolCallEvent):
        called = event.part
        call = ToolCall(
            id=called.tool_call_id, name=called.tool_name, input=called.args_as_json_str()
        )
        await output.tool_call(call)
        await output.tool_running(call)
    elif isinstance(event, FunctionToolResultEvent):
        # pydantic-ai 2 names the returned part ``part``; 1.x named it ``result``.
        returned = getattr(event, "part", None) or getattr(event, "result", None)
        if isinstance(returned, RetryPromptPart):
            await output.tool_result(returned.tool_call_id, None, returned.model_response())
        elif isinstance(returned, ToolReturnPart):
            content = to_jsonable_python(returned.content, fallback=str)
            failed = getattr(returned, "outcome", "success") not in ("success", None)
            error = (content if isinstance(content, str) else _json(content)) if failed else None
            await output.tool_result(returned.tool_call_id, content, error)


def to_message_history(turn: Turn, system_prompts: list[str]) -> list[ModelMessage]:
    """The blocks before the latest user message as pydantic-ai messages.

    System blocks are left out (they travel as ``instructions``), and so is reasoning: a
    provider's thinking cannot be replayed without its signatures.
    """
    users = [i for i, b in enumerate(turn.blocks) if b.kind == BlockKind.USER]
    blocks = turn.blocks[: users[-1]] if users else turn.blocks
    messages: list[ModelMessage] = []
    request: list[ModelRequestPart] = [SystemPromptPart(content=p) for p in system_prompts]
    response: list[ModelResponsePart] = []
    names: dict[str, str] = {}

    def flush_request() -> None:
        if request:
            messages.append(ModelRequest(parts=list(request)))
            request.clear()

    def flush_response() -> None:
        if response:
            messages.append(ModelResponse(parts=list(response)))
            response.clear()

    for block in blocks:
        payload = block.payload
        if block.kind == BlockKind.USER:
            flush_response()
            request.append(UserPromptPart(content=user_content(block, turn.attachment_data)))
        elif block.kind == BlockKind.LLM_TEXT:
            flush_request()
            response.append(TextPart(content=block.text))
        elif block.kind == BlockKind.TOOL_CALL:
            flush_request()
            call_id, name = str(payload.get("id", "")), str(payload.get("name", ""))
            names[call_id] = name
            args = payload.get("args")
            response.append(
                ToolCallPart(
                    tool_name=name,
                    args=args if isinstance(args, (str, dict)) else _json(args),
                    tool_call_id=call_id,
                )
            )
        elif block.kind == BlockKind.TOOL_USE:
            flush_response()
            call_id = str(payload.get("id", ""))
            error = payload.get("error")
            content = payload.get("result") if error is None else {"error": error}
            request.append(
                ToolReturnPart(
                    tool_name=names.get(call_id, ""), content=content, tool_call_id=call_id
                )
            )
    flush_request()
    flush_response()
    if not any(isinstance(m, ModelResponse) for m in messages) and not any(
        isinstance(p, UserPromptPart) for m in messages for p in m.parts
    ):
        return []  # nothing said yet: let the agent's first run add its own system prompt
    return messages


def user_content(block: Block, data: Mapping[str, bytes]) -> str | list[UserContent]:
    """A user block as pydantic-ai user content: its text alone, or with its attachments
    after it (the order OpenAI-format ``messages`` use too)."""
    if not block.attachments:
        return block.text
    content: list[UserContent] = [block.text] if block.text else []
    for ref, part in zip(block.attachments, attachment_parts(block, data), strict=True):
        if isinstance(part, ImagePart):
            content.append(BinaryContent.from_data_uri(part.data_url))
        else:
            name = str(ref.get("name", "file"))
            content.append(TextContent(part.text, metadata={"attachment": name}))
    return content


def _last_prompt(turn: Turn) -> str | list[UserContent]:
    users = turn.blocks_of(BlockKind.USER)
    return user_content(users[-1], turn.attachment_data) if users else ""


def _system_prompts(messages: list[ModelMessage]) -> list[str]:
    return [
        part.content
        for message in messages[:1]
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, SystemPromptPart)
    ]


def _profile_toolsets(binding: AgentBinding, ctx: RunContext) -> list[AbstractToolset[Any]]:
    """The profile's tools offered in this run, as one pydantic-ai toolset."""
    tools: list[PydanticAITool[Any]] = []
    for definition in ctx.tools:
        tool = binding.tools.get(definition.name)
        if tool is None:
            continue
        tools.append(
            PydanticAITool.from_schema(
                _runner(tool, binding.tool_timeout),
                name=definition.name,
                description=definition.description,
                json_schema=definition.parameters,
            )
        )
    return [FunctionToolset(tools)] if tools else []


def _runner(tool: Tool, timeout: float) -> Callable[..., Awaitable[Any]]:
    """A profile tool as pydantic-ai calls it; failures become results the model reads, as
    in webchat's own tool loop."""

    async def run(**arguments: Any) -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await tool.call(arguments)
        except ToolError as exc:
            return f"error: {exc}"
        except TimeoutError:
            return f"error: tool {tool.name!r} timed out after {timeout:g}s"
        except Exception as exc:
            return f"error: tool {tool.name!r} failed: {type(exc).__name__}: {exc}"

    return run


def _model_settings(binding: AgentBinding) -> ModelSettings | None:
    settings = binding.settings
    chosen = ModelSettings()
    if settings.temperature is not None:
        chosen["temperature"] = settings.temperature
    if settings.top_p is not None:
        chosen["top_p"] = settings.top_p
    if settings.max_tokens is not None:
        chosen["max_tokens"] = settings.max_tokens
    if settings.stop:
        chosen["stop_sequences"] = list(settings.stop)
    return chosen or None


def _usage(usage: Any) -> Usage:
    def count(name: str) -> int:
        value = getattr(usage, name, 0)
        return value if isinstance(value, int) else 0

    return Usage(
        input_tokens=count("input_tokens"),
        output_tokens=count("output_tokens"),
        cache_read_input_tokens=count("cache_read_tokens") or None,
        cache_creation_input_tokens=count("cache_write_tokens") or None,
    )


def _json(value: Any) -> str:
    return json.dumps(to_jsonable_python(value, fallback=str))


def is_pydantic_ai_agent(value: object) -> bool:
    return isinstance(value, AGENT_TYPES)
