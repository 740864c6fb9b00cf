"""The log-in surface: the page, password log-in, log-out and "who am I".

OpenID Connect's redirect routes live with the rest of OIDC in ``webchat.auth.oidc``.
Everything here is public to the security middleware (one must reach it to log in), so each
route checks the principal it needs itself.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from webchat.auth.gate import Gatekeeper
from webchat.auth.principal import Principal
from webchat.server.schemas import errors
from webchat.server.security import maybe_principal

router = APIRouter()

__all__ = ["LoginRequest", "router"]


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserInfo(BaseModel):
    id: str
    name: str
    role: str
    email: str | None = None
    groups: list[str] = []
    mode: str


class AuthConfig(BaseModel):
    mode: str
    login: str | None = Field(description="'password', 'oidc', or null (no log-in page)")


def gate_of(request: Request) -> Gatekeeper:
    gate: Gatekeeper = request.app.state.gate
    return gate


def user_info(principal: Principal, gate: Gatekeeper) -> dict[str, Any]:
    return {
        "id": principal.id,
        "name": principal.name,
        "role": principal.role,
        "email": principal.email,
        "groups": list(principal.groups),
        "mode": gate.mode,
    }


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/login", include_in_schema=False)
async def login_page(request: Request) -> Response:
    from webchat.server.app import NO_STORE, STATIC

    if not gate_of(request).has_login_page:
        return RedirectResponse(request.app.state.settings.root + "/", status_code=303)
    return FileResponse(str(STATIC / "login.html"), media_type="text/html", headers=NO_STORE)


@router.get("/auth/config")
async def auth_config(request: Request) -> AuthConfig:
    gate = gate_of(request)
    login = {"users": "password", "oidc": "oidc"}.get(gate.mode)
    return AuthConfig(mode=gate.mode, login=login)


@router.get("/auth/me", response_model=UserInfo, responses=errors(401))
async def me(request: Request) -> Any:
    principal = maybe_principal(request)
    if principal is None:
        return JSONResponse({"error": "authentication required"}, status_code=401)
    return user_info(principal, gate_of(request))


@router.post(
    "/auth/login", response_model=UserInfo, responses=errors(400, 401, 403, 404, 413, 422, 429)
)
async def login(request: Request, body: Annotated[LoginRequest, Body()]) -> Any:
    gate = gate_of(request)
    if gate.mode != "users" or gate.users is None:
        return JSONResponse(
            {"error": f"password log-in is not used with --auth {gate.mode}"}, status_code=404
        )
    address = gate.client_address(request)
    wait = gate.failures.retry_after(address)
    if wait is not None:
        return JSONResponse(
            {"error": "too many failed log-ins; try again later"},
            status_code=429,
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    gate.users.refresh()
    record = await asyncio.to_thread(gate.users.verify_password, body.username, body.password)
    if record is None:
        gate.failures.failed(address)
        return JSONResponse({"error": "wrong user name or password"}, status_code=401)
    principal = Principal(id=record.name, name=record.name, role=record.role, via="session")
    response = JSONResponse(user_info(principal, gate))
    gate.sessions.issue(response, principal, secure=_secure(request), uid=record.uid)
    return response


@router.post("/auth/logout", responses=errors(403, 413))
async def logout(request: Request) -> JSONResponse:
    gate = gate_of(request)
    data = await gate.sessions.read(request)
    response = JSONResponse({"logged_out": data is not None})
    await gate.sessions.end(response, data, secure=_secure(request))
    if data is not None:
        gate.end_session_sockets(data.sid)
    return response
