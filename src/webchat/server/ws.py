"""The WebSocket route: join a conversation, receive its frames, resume with ``since``.

Clients only ever send small text messages (pings). The frames and close codes themselves are
defined in ``webchat.server.protocol``. Anything else ends the connection with an
error frame and a close code, never a traceback: a binary message closes with 1003, one over
``MAX_MESSAGE_BYTES`` with 1009, and invalid UTF-8 (which the server rejects before the app
sees it) with 1007.
"""

from __future__ import annotations

import asyncio
import logging
import re

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message

from webchat.auth.network import same_origin
from webchat.chat.service import CONV_ID_PATTERN, ChatService
from webchat.conversation import Client, Conversation
from webchat.errors import WebchatError
from webchat.server.api import PROFILE_COOKIE
from webchat.server.protocol import (
    GOING_AWAY_CODE,
    MAX_MESSAGE_BYTES,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    PONG_TEXT,
    UNSUPPORTED_DATA,
    close_reason,
    error_frame,
    hello_text,
    is_ping,
)
from webchat.server.security import principal_of

router = APIRouter()
log = logging.getLogger("webchat.ws")

__all__ = ["MAX_MESSAGE_BYTES", "origin_allowed", "quiet_invalid_utf8_tracebacks", "router"]

SINCE_PATTERN = re.compile(r"[0-9]{1,18}")
"""ASCII digits only (``str.isdigit`` also accepts other scripts' digits), below 2**63."""


class _InvalidUtf8WithoutTraceback(logging.Filter):
    """uvicorn logs a text frame that is not UTF-8 with a traceback, then closes the socket
    with 1007: a client's mistake, worth one warning line, not an error with a stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Invalid UTF-8 sequence received from client"):
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "WebSocket text frame is not UTF-8; closed with 1007", ()
        return True


def quiet_invalid_utf8_tracebacks() -> None:
    """Install the filter on uvicorn's error logger (once, however many apps are created)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _InvalidUtf8WithoutTraceback) for f in logger.filters):
        logger.addFilter(_InvalidUtf8WithoutTraceback())


def origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    """Same host as the server, or listed. Clients that send no Origin are not browsers."""
    origin = websocket.headers.get("origin")
    return origin is None or same_origin(origin, websocket.headers.get("host"), allowed)


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
    elif since_text is not None and not SINCE_PATTERN.fullmatch(since_text):
        problem = "since must be a non-negative integer"
    if problem is not None:
        await websocket.send_text(error_frame(problem))
        await websocket.close(code=POLICY_VIOLATION, reason=close_reason(problem))
        return
    profile = (
        params.get("profile")
        or websocket.cookies.get(PROFILE_COOKIE)
        or service.profiles.default_slug
    )
    user = principal_of(websocket)
    try:
        conversation, client = await service.connect(
            websocket,
            conv_id,
            profile,
            int(since_text) if since_text is not None else None,
            hello=hello_text,
            user=user,
        )
    except WebchatError as exc:
        await websocket.send_text(error_frame(exc.message))
        await websocket.close(code=POLICY_VIOLATION, reason=close_reason(exc.message))
        return
    # Held for as long as it is open: a log-out or a removed user closes it (4401).
    with websocket.app.state.gate.sockets.holding(websocket, user):
        await _serve(websocket, service, conversation, client)


async def _serve(
    websocket: WebSocket, service: ChatService, conversation: Conversation, client: Client
) -> None:
    settings = service.settings
    try:
        while True:
            async with asyncio.timeout(settings.idle_timeout):
                message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            refusal = _refusal(message)
            if refusal is not None:
                code, problem = refusal
                await websocket.send_text(error_frame(problem))
                await websocket.close(code=code, reason=close_reason(problem))
                break
            if is_ping(message["text"]):
                conversation.pool.send_direct(client, PONG_TEXT)
    except TimeoutError:
        await websocket.close(code=GOING_AWAY_CODE, reason="idle timeout")
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left, or the pool already closed the socket
    finally:
        await service.disconnect(conversation, client)


def _refusal(message: Message) -> tuple[int, str] | None:
    """(close code, reason) for a client message the server does not accept."""
    text = message.get("text")
    if text is None:
        return UNSUPPORTED_DATA, "binary messages are not accepted; send text"
    if len(text) > MAX_MESSAGE_BYTES or len(text.encode()) > MAX_MESSAGE_BYTES:
        return MESSAGE_TOO_BIG, f"messages are limited to {MAX_MESSAGE_BYTES} bytes"
    return None
