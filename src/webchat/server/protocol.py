"""The WebSocket wire protocol: the frames the server writes and the close codes it uses.

Everything a client sees on ``/ws`` that is not a conversation frame is built here: the
``ws.hello`` greeting, the ``ws.pong`` answer to a ping, the ``error`` frame sent before a
close, and the close codes (the pool's own codes are re-exported from
``webchat.conversation.pool``, where the pool uses them).
"""

from __future__ import annotations

import json

from webchat.conversation import Conversation
from webchat.conversation.pool import GOING_AWAY_CODE, SERVICE_RESTART_CODE, SLOW_CONSUMER_CODE

__all__ = [
    "GOING_AWAY_CODE",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_TOO_BIG",
    "POLICY_VIOLATION",
    "PONG_TEXT",
    "SERVICE_RESTART_CODE",
    "SLOW_CONSUMER_CODE",
    "UNSUPPORTED_DATA",
    "close_reason",
    "error_frame",
    "hello_text",
    "is_ping",
]

POLICY_VIOLATION = 1008
UNSUPPORTED_DATA = 1003
MESSAGE_TOO_BIG = 1009
MAX_MESSAGE_BYTES = 64 * 1024
"""The largest client message read. Pass it to uvicorn as ``ws_max_size`` too, so a bigger
one is refused while it arrives rather than read whole (uvicorn's default is 16 MiB)."""


def hello_text(conversation: Conversation) -> str:
    """The ``ws.hello`` greeting: where the client joined, what runs, what engine answers."""
    active = conversation.session.active
    return json.dumps(
        {
            "sem": True,
            "event": {
                "type": "ws.hello",
                "conv_id": conversation.conv_id,
                "session_id": conversation.session.session_id,
                "profile": conversation.profile_slug,
                "last_seq": conversation.last_seq,
                "running": conversation.is_running,
                "inference_id": active.inference_id if active is not None else None,
                "engine": "agent"
                if conversation.config.agent
                else (conversation.config.step_settings.api_type),
                "model": conversation.config.step_settings.resolved_model(),
            },
        },
        separators=(",", ":"),
    )


PONG_TEXT = json.dumps({"sem": True, "event": {"type": "ws.pong"}}, separators=(",", ":"))


def error_frame(message: str) -> str:
    """The ``error`` frame sent to a client just before its connection is closed."""
    return json.dumps({"sem": True, "event": {"type": "error", "error": message}})


def close_reason(text: str) -> str:
    """``text`` cut to the 123 UTF-8 bytes a close frame's reason may hold."""
    return text.encode()[:123].decode(errors="ignore")


def is_ping(text: str) -> bool:
    """A client ping: the bare text ``ping`` or a ``{"type": "ws.ping"}`` message."""
    if text.strip() == "ping":
        return True
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return False
    return isinstance(data, dict) and data.get("type") == "ws.ping"
