"""HTTP routes: each one translates a request into one ``ChatService`` call and back.

Every status a route can answer is declared with its JSON shape (``webchat.server.schemas``),
so the OpenAPI document describes the API as it behaves.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Header, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

import webchat
from webchat.chat.management import ConversationManagement
from webchat.chat.service import CONV_ID_PATTERN, ChatService, RunAccepted, RunRequest
from webchat.observability import Observability
from webchat.observability.metrics import CONTENT_TYPE
from webchat.observability.readiness import Readiness, check_readiness
from webchat.server.schemas import (
    AttachmentPolicy,
    CancelResult,
    ConversationDescription,
    ConversationList,
    ErrorBody,
    Health,
    ProfileInfo,
    Timeline,
    errors,
)
from webchat.server.security import principal_of

router = APIRouter()

PROFILE_COOKIE = "chat_profile"
MAX_SEQ = 2**63 - 1
"""The largest frame seq a store can hold (a signed 64-bit integer)."""

ConvId = Annotated[
    str,
    Path(
        pattern=CONV_ID_PATTERN.pattern,
        description="1-128 characters of letters, digits and _ . : - (a letter or digit first)",
    ),
]
Branch = Annotated[
    str | None,
    Query(
        max_length=256,
        description="A turn id: only the branch ending at that turn (its turns from the root "
        "down). Unknown: a 400.",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=256,
        description="Repeat a request safely: the same key with the same request gets the "
        "first response; with a different request, a 422.",
    ),
]

# Where a run's ids lead: its conversation, timeline and cancel (OpenAPI links).
RUN_LINKS = {
    name: {"operationId": operation, "parameters": {"conv_id": "$response.body#/conv_id"}}
    for name, operation in [
        ("conversation", "conversation"),
        ("timeline", "timeline"),
        ("cancel", "cancel"),
    ]
}
RUN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The run started", "links": RUN_LINKS},
    202: {
        "model": RunAccepted,
        "description": "The run is queued behind the active one",
        "links": RUN_LINKS,
    },
    **errors(400, 401, 403, 404, 409, 413, 422, 429),
}


def service_of(request: Request) -> ChatService:
    service: ChatService = request.app.state.service
    return service


@router.get("/healthz")
async def healthz() -> Health:
    return Health(status="ok", version=webchat.__version__)


@router.get("/api/chat/profiles")
async def list_profiles(request: Request) -> list[ProfileInfo]:
    service = service_of(request)
    limits = service.scheduler.attachments
    return [
        ProfileInfo(
            slug=p.slug,
            display_name=p.title,
            default_prompt=p.default_prompt,
            allow_overrides=p.allow_overrides,
            api_type="agent" if p.agent else p.step_settings.api_type,
            model=p.step_settings.resolved_model(),
            tools=p.tools,
            mcp_servers=[server.name for server in p.mcp_servers],  # never env, headers, url
            busy_policy=service.busy_policy(p),
            default=p.slug == service.profiles.default_slug,
            starters=p.starters,
            attachments=AttachmentPolicy(
                enabled=p.attachments.enabled,
                kinds=list(p.attachments.kinds),
                max_bytes=limits.max_bytes,
                max_files=limits.max_files,
            ),
        )
        for p in service.profiles.all()
    ]


async def _start_run(
    request: Request, body: RunRequest, profile: str, idempotency_key: str | None
) -> JSONResponse:
    response = await service_of(request).submit_once(
        profile,
        body,
        idempotency_key,
        request_line=f"{request.method} {request.url.path}",
        user=principal_of(request),
    )
    return JSONResponse(response.body, status_code=response.status_code, headers=response.headers)


@router.post("/chat", response_model=RunAccepted, responses=RUN_RESPONSES)
async def chat(
    request: Request,
    body: RunRequest,
    chat_profile: Annotated[str | None, Cookie()] = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Start a run with the profile of the ``chat_profile`` cookie (else the default)."""
    profile = chat_profile or service_of(request).profiles.default_slug
    return await _start_run(request, body, profile, idempotency_key)


@router.post("/chat/{profile}", response_model=RunAccepted, responses=RUN_RESPONSES)
async def chat_with_profile(
    request: Request,
    profile: str,
    body: RunRequest,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Start a run with ``profile``, and remember it in the ``chat_profile`` cookie."""
    response = await _start_run(request, body, profile, idempotency_key)
    # Only a profile that exists goes into the cookie: its slug is plain ASCII.
    if response.status_code < 300 and profile in service_of(request).profiles:
        response.set_cookie(PROFILE_COOKIE, profile, samesite="lax", httponly=False)
    return response


@router.post(
    "/api/conversations/{conv_id}/cancel",
    operation_id="cancel",
    response_model=CancelResult,
    responses=errors(401, 403, 404, 413, 422),
)
async def cancel(request: Request, conv_id: ConvId) -> dict[str, Any]:
    return await service_of(request).cancel(conv_id, principal_of(request))


@router.get("/api/conversations", response_model=ConversationList, responses=errors(401, 422))
async def conversations(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """The caller's conversations (an admin's: everyone's), newest first."""
    listed = await service_of(request).list_conversations(limit, principal_of(request))
    return {"conversations": listed}


@router.get(
    "/api/conversations/{conv_id}",
    operation_id="conversation",
    response_model=ConversationDescription,
    responses=errors(400, 401, 404, 422),
)
async def conversation(request: Request, conv_id: ConvId, branch: Branch = None) -> dict[str, Any]:
    """The conversation: its turns (every branch's, or ``branch``'s), tip and children."""
    return await service_of(request).describe(conv_id, principal_of(request), branch=branch)


@router.get(
    "/api/conversations/{conv_id}/timeline",
    operation_id="timeline",
    response_model=Timeline,
    responses=errors(400, 401, 404, 422),
)
async def timeline(
    request: Request,
    conv_id: ConvId,
    since: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    branch: Branch = None,
) -> dict[str, Any]:
    """Frames after ``since`` (with ``branch``: only that branch's, and frames of no turn)."""
    return await service_of(request).timeline(conv_id, since, principal_of(request), branch=branch)


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": ErrorBody,
            "description": "Not ready: the store or Redis is down (``error`` says which, "
            "``checks`` has each one's state)",
        }
    },
)
async def readyz(request: Request) -> JSONResponse:
    """Whether this process can serve now: its store answers, and Redis when it uses it
    (``/healthz`` only says it is alive)."""
    service = service_of(request)
    redis_url = service.settings.redis_url if service.shared_state else None
    readiness = await check_readiness(service.store, redis_url)
    status = 200 if readiness.status == "ready" else 503
    return JSONResponse(readiness.model_dump(exclude_none=True), status_code=status)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    """Prometheus text: the service's counters and gauges, histograms, process metrics."""
    service = service_of(request)
    values = {**service.metrics(), **await ConversationManagement(service).metrics()}
    observability: Observability = request.app.state.observability
    body = await asyncio.to_thread(observability.metrics.render, values)
    return Response(body, media_type=CONTENT_TYPE)
