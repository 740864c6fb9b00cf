"""The OpenAI-compatible API: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Any OpenAI client (the official SDKs, LangChain, IDE plugins) can use a webchat profile as a
model: its id is the profile's slug. A completion is a normal webchat run
(``webchat.chat.external``): the profile's composed engine answers, server-side tool calls run
inside the run and only their outcome reaches the answer (never as ``tool_calls``), and
authentication, ownership and quotas are those of the rest of the API. Errors, including the
security middleware's 401, have OpenAI's shape ``{"error": {"message", "type", "param",
"code"}}``, so clients raise their usual exceptions.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)
from starlette.background import BackgroundTask

from webchat.chat.external import ExternalRun, check_client_tools, external_run
from webchat.chat.scheduler import CONV_ID_PATTERN
from webchat.chat.service import ChatService
from webchat.engines.streaming import decode_arguments
from webchat.errors import WebchatError
from webchat.profiles import Profile
from webchat.server.openai_errors import ERROR_TYPES, OpenAIErrorResponse, error_body
from webchat.server.security import principal_of
from webchat.turns import Block

router = APIRouter(prefix="/v1", tags=["openai"])

CONVERSATION_HEADER = "X-Webchat-Conversation"
STARTED = int(time.time())
"""The ``created`` of every model: profiles exist from the server's start."""

FINISH_REASONS = {"length": "length", "max_tokens": "length", "content_filter": "content_filter"}
"""Provider stop reasons that mean something else than ``stop`` to an OpenAI client."""


# -- the wire shapes ------------------------------------------------------------------------


class FunctionCall(BaseModel):
    name: str
    arguments: str = ""


class MessageToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """One message of ``messages``; fields this API does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The Chat Completions body. Sampling parameters (``temperature``…) are accepted and
    ignored: the profile decides the model and its settings."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="a profile slug (see GET /v1/models)")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    n: int | None = Field(default=None, ge=1, le=1)


class ModelInfo(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = STARTED
    owned_by: str = "webchat"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class CompletionUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: None = None


class ChoiceDelta(BaseModel):
    """What a chunk adds; fields it does not set are left out, as OpenAI sends them."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _set_fields_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChoiceDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: None = None


OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorResponse, "description": kind}
    for status, (kind, _) in ERROR_TYPES.items()
    if status != 422
}
OPENAI_ERRORS[422] = {
    "model": OpenAIErrorResponse,
    "description": "not sent by these routes (an invalid body is a 400, as OpenAI answers)",
}


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(status, message, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


def webchat_error_response(exc: WebchatError) -> JSONResponse:
    param = exc.details.get("param")
    return error_response(
        exc.status_code,
        exc.message,
        param=param if isinstance(param, str) else None,
        headers=exc.headers,
    )


# -- from messages to a transcript ----------------------------------------------------------


class BadMessageError(WebchatError):
    status_code = 400


def _text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise BadMessageError(
                f"messages[{index}]: only text content parts are supported, got "
                f"{str(part.get('type'))[:40]!r}",
                param=f"messages[{index}].content",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def transcript_of(messages: list[ChatMessage]) -> list[Block]:
    """The messages as blocks, the way an engine reads history."""
    blocks: list[Block] = []
    for index, message in enumerate(messages):
        text = _text(message, index)
        if message.role in ("system", "developer"):
            blocks.append(Block.system(text))
        elif message.role == "user":
            blocks.append(Block.user(text))
        elif message.role == "assistant":
            if text:
                blocks.append(Block.llm_text(text))
            for call in message.tool_calls or []:
                args = decode_arguments(call.function.arguments)
                blocks.append(Block.tool_call(call.id, call.function.name, args))
        else:
            if not message.tool_call_id:
                raise BadMessageError(
                    f"messages[{index}]: a tool message needs tool_call_id",
                    param=f"messages[{index}].tool_call_id",
                )
            blocks.append(Block.tool_use(message.tool_call_id, text))
    return blocks


# -- from a run's frames to an answer -------------------------------------------------------


class AnswerBuilder:
    """Follows a run's frames and says what text to append to the answer.

    The answer is every model call's text in order, separated by a blank line (a tool call
    between two calls is not returned: it ran on the server). Only ``delta`` fields are read;
    a message that streamed none contributes its final text.
    """

    def __init__(self) -> None:
        self.usage = CompletionUsage()
        self.finish_reason = "stop"
        self.error: str | None = None
        self.text = ""
        self._streamed: set[str] = set()
        self._last_writer: str | None = None

    def feed(self, event: dict[str, Any]) -> str:
        """The text ``event`` adds to the answer ('' if none)."""
        kind = event.get("type")
        message_id = str(event.get("id"))
        if kind == "llm.delta":
            self._streamed.add(message_id)
            return self._append(message_id, str(event.get("delta") or ""))
        if kind == "llm.final":
            self._count(event.get("usage"))
            stop = event.get("stop_reason")
            self.finish_reason = FINISH_REASONS.get(str(stop), "stop")
            if message_id not in self._streamed:
                return self._append(message_id, str(event.get("text") or ""))
        elif kind == "run.failed":
            self.error = str(event.get("error") or "the run failed")
        elif kind == "run.cancelled":
            self.error = "the run was cancelled"
        return ""

    def _append(self, message_id: str, text: str) -> str:
        if not text:
            return ""
        if self.text and self._last_writer != message_id:
            text = "\n\n" + text
        self._last_writer = message_id
        self.text += text
        return text

    def _count(self, usage: Any) -> None:
        if isinstance(usage, dict):
            prompt = int(usage.get("input_tokens") or 0)
            completion = int(usage.get("output_tokens") or 0)
            self.usage.prompt_tokens += prompt
            self.usage.completion_tokens += completion
            self.usage.total_tokens += prompt + completion


# -- routes ---------------------------------------------------------------------------------


def _service(request: Request) -> ChatService:
    service: ChatService = request.app.state.service
    return service


@router.get("/models", response_model=ModelList, responses=OPENAI_ERRORS)
async def list_models(request: Request) -> ModelList:
    """Every profile, as a model whose id is its slug."""
    return ModelList(data=[ModelInfo(id=p.slug) for p in _service(request).profiles.all()])


@router.get("/models/{model}", response_model=ModelInfo, responses=OPENAI_ERRORS)
async def get_model(request: Request, model: str) -> Response:
    if model not in _service(request).profiles:
        return error_response(
            404, f"unknown model {model!r}", param="model", code="model_not_found"
        )
    return JSONResponse(ModelInfo(id=model).model_dump())


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        **OPENAI_ERRORS,
        200: {
            "description": "A chat.completion, or with stream: true an SSE stream of "
            "chat.completion.chunk objects ending with data: [DONE]",
            "content": {"text/event-stream": {}},
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ChatCompletionRequest.model_json_schema()}},
        }
    },
)
async def chat_completions(
    request: Request,
    conversation: Annotated[
        str | None,
        Header(
            alias=CONVERSATION_HEADER,
            description="Run in this conversation of yours (it shows live in the web UI and "
            "stays in its history); absent: a stateless call",
        ),
    ] = None,
) -> Response:
    service = _service(request)
    try:
        body = ChatCompletionRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        return _validation_error(exc)
    if body.model not in service.profiles:
        return error_response(
            400, f"unknown model {body.model!r}", param="model", code="model_not_found"
        )
    if conversation is not None and not CONV_ID_PATTERN.match(conversation):
        return error_response(
            400,
            f"{CONVERSATION_HEADER} must be 1-128 characters of letters, digits and _ . : -",
            param=CONVERSATION_HEADER,
        )
    profile = service.profile(body.model)
    stack = contextlib.AsyncExitStack()
    try:
        check_client_tools(profile, body.tools, "tools")
        transcript = transcript_of(body.messages)
        run = await stack.enter_async_context(
            external_run(service, principal_of(request), profile, transcript, conversation)
        )
    except WebchatError as exc:
        await stack.aclose()
        return webchat_error_response(exc)
    except BaseException:
        await stack.aclose()
        raise
    headers = {CONVERSATION_HEADER: run.conv_id} if conversation else {}
    completion_id = f"chatcmpl-{run.inference_id}"
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _chunks(run, stack, profile, completion_id, include_usage)
        # The stack is closed by the stream when it ends; the background task closes it if
        # the stream never started (the client left first). Closing twice is a no-op.
        return StreamingResponse(
            chunks,
            media_type="text/event-stream",
            headers=headers,
            background=BackgroundTask(stack.aclose),
        )
    answer = AnswerBuilder()
    async with stack:
        try:
            async for event in run.events():
                answer.feed(event)
        except WebchatError as exc:
            return webchat_error_response(exc)
    if answer.error is not None:
        return error_response(500, answer.error, code="run_failed", headers=headers)
    completion = ChatCompletion(
        id=completion_id,
        created=int(time.time()),
        model=profile.slug,
        choices=[
            Choice(
                message=AssistantMessage(content=answer.text),
                finish_reason=answer.finish_reason,
            )
        ],
        usage=answer.usage,
    )
    return JSONResponse(completion.model_dump(), headers=headers)


def _validation_error(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return error_response(400, "request body is not valid JSON")
    loc = first.get("loc", ())
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return error_response(400, f"{param or 'body'}: {first['msg']}", param=param or None)


async def _chunks(
    run: ExternalRun,
    stack: contextlib.AsyncExitStack,
    profile: Profile,
    completion_id: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The SSE stream: a role chunk, content chunks as the run streams, a finish chunk, the
    usage chunk if asked, ``[DONE]``; a failed run ends with an error object instead."""
    created = int(time.time())

    def chunk(delta: ChoiceDelta, finish_reason: str | None = None) -> str:
        choice = ChunkChoice(delta=delta, finish_reason=finish_reason)
        payload = ChatCompletionChunk(
            id=completion_id, created=created, model=profile.slug, choices=[choice]
        )
        return _sse(payload.model_dump(exclude={"usage"} if not include_usage else set()))

    async with stack:
        yield chunk(ChoiceDelta(role="assistant", content=""))
        answer = AnswerBuilder()
        try:
            async for event in run.events():
                text = answer.feed(event)
                if text:
                    yield chunk(ChoiceDelta(content=text))
        except WebchatError as exc:
            answer.error = exc.message
        if answer.error is not None:
            yield _sse(error_body(500, answer.error, code="run_failed"))
            return
        yield chunk(ChoiceDelta(), answer.finish_reason)
        if include_usage:
            last = ChatCompletionChunk(
                id=completion_id,
                created=created,
                model=profile.slug,
                choices=[],
                usage=answer.usage,
            )
            yield _sse(last.model_dump())
        yield "data: [DONE]\n\n"


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
