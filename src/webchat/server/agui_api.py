"""AG-UI: ``POST /ag-ui/{profile}`` runs a webchat agent for AG-UI clients (CopilotKit…).

The body is AG-UI's ``RunAgentInput``; the answer an SSE stream of AG-UI events made with the
``ag-ui-protocol`` package's models and ``EventEncoder``. The thread is a webchat conversation
(``threadId`` = ``conv_id``, owned like any other): the run is a normal run in it
(``webchat.chat.external``), so it shows live in webchat's own UI and stays in its history.
The last message must be the user's; the earlier ones seed a thread webchat has not seen yet.
``state`` is echoed as a ``STATE_SNAPSHOT`` (webchat agents keep no AG-UI state of their own);
``context`` and ``forwardedProps`` are accepted and not used: the profile decides what the
agent is told. Errors before the run starts are HTTP errors in webchat's JSON shape; a run
that fails ends its stream with ``RUN_ERROR``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    DeveloperMessage,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunStartedEvent,
    StateSnapshotEvent,
    SystemMessage,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TextPart,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    ToolMessage,
    UserMessage,
)
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from webchat.chat.external import ExternalRun, check_client_tools, external_run
from webchat.chat.scheduler import CONV_ID_PATTERN
from webchat.chat.service import ChatService
from webchat.engines.streaming import decode_arguments
from webchat.errors import InvalidRequestError, WebchatError
from webchat.server.schemas import errors
from webchat.server.security import principal_of
from webchat.turns import Block

router = APIRouter(tags=["ag-ui"])


def _text(content: str | list[Any], index: int) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if not isinstance(part, TextPart):
            kind = getattr(part, "type", type(part).__name__)
            raise InvalidRequestError(
                f"messages[{index}]: only text parts are supported, got {kind!r}"
            )
        texts.append(part.text)
    return "\n".join(texts)


def transcript_of(body: RunAgentInput) -> list[Block]:
    """The input's messages as blocks; activity and reasoning messages are the client's
    display and are left out."""
    blocks: list[Block] = []
    for index, message in enumerate(body.messages):
        if isinstance(message, (SystemMessage, DeveloperMessage)):
            blocks.append(Block.system(message.content))
        elif isinstance(message, UserMessage):
            blocks.append(Block.user(_text(message.content, index)))
        elif isinstance(message, AssistantMessage):
            if message.content:
                blocks.append(Block.llm_text(message.content))
            for call in message.tool_calls or []:
                args = decode_arguments(call.function.arguments)
                blocks.append(Block.tool_call(call.id, call.function.name, args))
        elif isinstance(message, ToolMessage):
            blocks.append(Block.tool_use(message.tool_call_id, _text(message.content, index)))
    return blocks


class AguiTranslator:
    """Turns one run's frames into AG-UI events.

    A text message opens at its first delta (a model call that only calls a tool makes
    none) and closes at its ``llm.final``, or earlier when a tool call starts: AG-UI does not
    interleave a tool call into an open text message. Thinking becomes a reasoning message,
    closed before the answer's text starts. Only ``delta`` fields are read.
    """

    def __init__(self, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self._open: str | None = None  # the text message being streamed
        self._reasoning: str | None = None  # the reasoning message being streamed
        self._texts: set[str] = set()  # every text message started
        self._last_text: str | None = None
        self._calls: dict[str, bool] = {}  # tool call id -> ended
        self._streamed_args: set[str] = set()
        self._usage = TokenUsage(input_tokens=0, output_tokens=0, total_tokens=0)

    def feed(self, event: dict[str, Any]) -> list[BaseEvent]:
        kind = event.get("type")
        frame_id = str(event.get("id"))
        if kind == "llm.delta":
            return self._content(frame_id, str(event.get("delta") or ""))
        if kind in ("llm.thinking.start", "llm.thinking.delta"):
            return self._thinking(frame_id, str(event.get("delta") or ""))
        if kind == "llm.thinking.final":
            return self._close_reasoning()
        if kind == "llm.final":
            self._count(event.get("usage"))
            out = []
            if frame_id not in self._texts:  # a producer that streamed no deltas
                out += self._content(frame_id, str(event.get("text") or ""))
            return out + self._close_text()
        if kind == "tool.start":
            return self._tool_start(frame_id, event)
        if kind == "tool.delta" and isinstance(event.get("delta"), str):
            self._streamed_args.add(frame_id)
            return [
                *self._ensure_call(frame_id, "tool"),
                ToolCallArgsEvent(tool_call_id=frame_id, delta=event["delta"]),
            ]
        if kind == "tool.result":
            return self._tool_result(frame_id, event)
        if kind == "run.finished":
            usage = [self._usage] if self._usage.total_tokens else None
            return [
                *self._close_text(),
                RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, usage=usage),
            ]
        if kind == "run.cancelled":
            return [
                *self._close_text(),
                RunFinishedEvent(
                    thread_id=self.thread_id,
                    run_id=self.run_id,
                    outcome=RunFinishedCancelledOutcome(),
                ),
            ]
        if kind == "run.failed":
            return [*self._close_text(), self.error(str(event.get("error") or "run failed"))]
        return []

    def error(self, message: str) -> RunErrorEvent:
        return RunErrorEvent(message=message, code="run_failed")

    def _content(self, message_id: str, delta: str) -> list[BaseEvent]:
        if not delta:
            return []
        out = self._close_reasoning()
        if self._open != message_id:
            out += self._close_text()
            if message_id in self._texts:  # text after a tool call: a new AG-UI message
                message_id = f"{message_id}.{len(self._texts)}"
            out.append(TextMessageStartEvent(message_id=message_id, role="assistant"))
            self._texts.add(message_id)
            self._open = message_id
        out.append(TextMessageContentEvent(message_id=self._open, delta=delta))
        return out

    def _thinking(self, frame_id: str, delta: str) -> list[BaseEvent]:
        out: list[BaseEvent] = []
        if self._reasoning is None:
            out += self._close_text()
            self._reasoning = f"{frame_id}.reasoning.{len(self._texts)}"
            out += [
                ReasoningStartEvent(message_id=self._reasoning),
                ReasoningMessageStartEvent(message_id=self._reasoning, role="reasoning"),
            ]
        if delta:
            out.append(ReasoningMessageContentEvent(message_id=self._reasoning, delta=delta))
        return out

    def _close_reasoning(self) -> list[BaseEvent]:
        if self._reasoning is None:
            return []
        message_id, self._reasoning = self._reasoning, None
        return [
            ReasoningMessageEndEvent(message_id=message_id),
            ReasoningEndEvent(message_id=message_id),
        ]

    def _close_text(self) -> list[BaseEvent]:
        """End the open text (and reasoning) message, if any."""
        if self._open is None:
            return self._close_reasoning()
        message_id, self._open = self._open, None
        self._last_text = message_id
        return [TextMessageEndEvent(message_id=message_id)]

    def _ensure_call(self, call_id: str, name: str) -> list[BaseEvent]:
        if call_id in self._calls:
            return []
        self._calls[call_id] = False
        parent = self._open or self._last_text
        return [
            *self._close_text(),
            ToolCallStartEvent(tool_call_id=call_id, tool_call_name=name, parent_message_id=parent),
        ]

    def _end_call(self, call_id: str) -> list[BaseEvent]:
        if self._calls.get(call_id, True):
            return []
        self._calls[call_id] = True
        return [ToolCallEndEvent(tool_call_id=call_id)]

    def _tool_start(self, call_id: str, event: dict[str, Any]) -> list[BaseEvent]:
        out = self._ensure_call(call_id, str(event.get("name") or "tool"))
        arguments = event.get("input")
        if arguments is None:  # announced before its arguments stream (tool.delta)
            return out
        if call_id not in self._streamed_args:
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            out.append(ToolCallArgsEvent(tool_call_id=call_id, delta=text))
        return out + self._end_call(call_id)

    def _tool_result(self, call_id: str, event: dict[str, Any]) -> list[BaseEvent]:
        out = self._ensure_call(call_id, str(event.get("name") or "tool"))
        out += self._end_call(call_id)
        error, result = event.get("error"), event.get("result")
        content = f"error: {error}" if error else result
        if not isinstance(content, str):
            content = json.dumps(content, default=str)
        out.append(
            ToolCallResultEvent(
                message_id=f"{call_id}.result", tool_call_id=call_id, content=content, role="tool"
            )
        )
        return out

    def _count(self, usage: Any) -> None:
        if isinstance(usage, dict):
            took_in = int(usage.get("input_tokens") or 0)
            took_out = int(usage.get("output_tokens") or 0)
            self._usage.input_tokens = (self._usage.input_tokens or 0) + took_in
            self._usage.output_tokens = (self._usage.output_tokens or 0) + took_out
            self._usage.total_tokens = (self._usage.total_tokens or 0) + took_in + took_out


@router.post(
    "/ag-ui/{profile}",
    response_class=StreamingResponse,
    responses={
        200: {"description": "An SSE stream of AG-UI events", "content": {"text/event-stream": {}}},
        **errors(400, 401, 403, 404, 409, 413, 422, 429),
    },
)
async def agui_run(request: Request, profile: str, body: RunAgentInput) -> StreamingResponse:
    """Run ``profile`` on the thread ``threadId`` (a conversation id of yours)."""
    service: ChatService = request.app.state.service
    chosen = service.profile(profile)
    if not CONV_ID_PATTERN.match(body.thread_id):
        raise InvalidRequestError(
            "threadId must be 1-128 characters of letters, digits and _ . : -"
        )
    check_client_tools(chosen, body.tools, "tools")
    transcript = transcript_of(body)
    stack = contextlib.AsyncExitStack()
    try:
        run = await stack.enter_async_context(
            external_run(service, principal_of(request), chosen, transcript, body.thread_id)
        )
    except BaseException:
        await stack.aclose()
        raise
    encoder = EventEncoder(accept=request.headers.get("accept", ""))
    # Closed by the stream as it ends, or by the background task if it never started.
    return StreamingResponse(
        _events(run, stack, body, encoder),
        media_type=encoder.get_content_type(),
        background=BackgroundTask(stack.aclose),
    )


async def _events(
    run: ExternalRun, stack: contextlib.AsyncExitStack, body: RunAgentInput, encoder: EventEncoder
) -> AsyncIterator[str]:
    translator = AguiTranslator(body.thread_id, body.run_id)
    async with stack:
        yield encoder.encode(RunStartedEvent(thread_id=body.thread_id, run_id=body.run_id))
        if body.state is not None:
            yield encoder.encode(StateSnapshotEvent(snapshot=body.state))
        try:
            async for event in run.events():
                for out in translator.feed(event):
                    yield encoder.encode(out)
        except WebchatError as exc:
            yield encoder.encode(translator.error(exc.message))


__all__ = ["AguiTranslator", "router", "transcript_of"]
