"""The WebSocket route: join a conversation, receive its frames, resume with ``since``."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from webchat.chat.service import CONV_ID_PATTERN, PONG_TEXT
from webchat.errors import WebchatError
from webchat.server.api import PROFILE_COOKIE

router = APIRouter()
log = logging.getLogger("webchat.ws")

POLICY_VIOLATION = 1008


def origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    """Same host as the server, or listed. Clients that send no Origin are not browsers."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if origin in allowed or "*" in allowed:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host", "")


def _error_frame(message: str) -> str:
    return json.dumps({"sem": True, "event": {"type": "error", "error": message}})


def _is_ping(text: str) -> bool:
    if text.strip() == "ping":
        return True
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("type") == "ws.ping"


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    service = websocket.app.state.service
    settings = service.settings
    if not origin_allowed(websocket, settings.allowed_origins):
        log.warning("refused WebSocket from origin %s", websocket.headers.get("origin"))
        await websocket.close(code=POLICY_VIOLATION)
        return
    await websocket.accept()
    params = websocket.query_params
    conv_id = params.get("conv_id", "")
    since_text = params.get("since")
    problem = None
    if not conv_id:
        problem = "conv_id is required"
    elif not CONV_ID_PATTERN.match(conv_id):
        problem = "conv_id must be 1-128 characters of letters, digits and _ . : -"
    elif since_text is not None and not (since_text.isdigit()):
        problem = "since must be a non-negative integer"
    if problem is not None:
        await websocket.send_text(_error_frame(problem))
        await websocket.close(code=POLICY_VIOLATION, reason=problem)
        return
    profile = (
        params.get("profile")
        or websocket.cookies.get(PROFILE_COOKIE)
        or service.profiles.default_slug
    )
    try:
        conversation, client = await service.connect(
            websocket, conv_id, profile, int(since_text) if since_text is not None else None
        )
    except WebchatError as exc:
        await websocket.send_text(_error_frame(exc.message))
        await websocket.close(code=POLICY_VIOLATION, reason=exc.message[:120])
        return
    try:
        while True:
            async with asyncio.timeout(settings.idle_timeout):
                text = await websocket.receive_text()
            if _is_ping(text):
                conversation.pool.send_direct(client, PONG_TEXT)
    except TimeoutError:
        await websocket.close(code=1001, reason="idle timeout")
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left, or the pool already closed the socket
    finally:
        conversation.detach(client)
