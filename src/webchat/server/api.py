"""HTTP routes: each one translates a request into one ``ChatService`` call and back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

import webchat
from webchat.chat.service import ChatService, RunRequest

router = APIRouter()

PROFILE_COOKIE = "chat_profile"


def service_of(request: Request) -> ChatService:
    service: ChatService = request.app.state.service
    return service


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": webchat.__version__}


@router.get("/api/chat/profiles")
async def list_profiles(request: Request) -> list[dict[str, Any]]:
    service = service_of(request)
    return [
        {
            "slug": p.slug,
            "display_name": p.title,
            "default_prompt": p.default_prompt,
            "allow_overrides": p.allow_overrides,
            "api_type": p.step_settings.api_type,
            "model": p.step_settings.resolved_model(),
            "tools": p.tools,
            "busy_policy": service.busy_policy(p),
            "default": p.slug == service.profiles.default_slug,
        }
        for p in service.profiles.all()
    ]


async def _start_run(
    request: Request, body: RunRequest, profile: str, idempotency_key: str | None
) -> JSONResponse:
    response = await service_of(request).submit_once(profile, body, idempotency_key)
    return JSONResponse(response.body, status_code=response.status_code)


@router.post("/chat")
async def chat(
    request: Request,
    body: RunRequest,
    chat_profile: Annotated[str | None, Cookie()] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    profile = chat_profile or service_of(request).profiles.default_slug
    return await _start_run(request, body, profile, idempotency_key)


@router.post("/chat/{profile}")
async def chat_with_profile(
    request: Request,
    profile: str,
    body: RunRequest,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    response = await _start_run(request, body, profile, idempotency_key)
    if response.status_code < 300:
        response.set_cookie(PROFILE_COOKIE, profile, samesite="lax", httponly=False)
    return response


@router.post("/api/conversations/{conv_id}/cancel")
async def cancel(request: Request, conv_id: str) -> dict[str, Any]:
    return await service_of(request).cancel(conv_id)


@router.get("/api/conversations")
async def conversations(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    return {"conversations": await service_of(request).list_conversations(limit)}


@router.get("/api/conversations/{conv_id}")
async def conversation(request: Request, conv_id: str) -> dict[str, Any]:
    return await service_of(request).describe(conv_id)


@router.get("/api/conversations/{conv_id}/timeline")
async def timeline(
    request: Request, conv_id: str, since: Annotated[int, Query(ge=0)] = 0
) -> dict[str, Any]:
    return await service_of(request).timeline(conv_id, since)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> str:
    lines = []
    for name, value in service_of(request).metrics().items():
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# TYPE webchat_{name} {kind}", f"webchat_{name} {value:g}"]
    return "\n".join(lines) + "\n"
