"""Per request: the app's observability, the caller's trace and the log ids.

Runs inside the security middleware (it needs the principal) and around every route, so
whatever a request starts (a run's task, a WebSocket's writer) inherits the app it belongs
to, the trace the caller sent (``traceparent``), and ``user``/``conv_id`` for its logs.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from webchat.observability.logs import log_context
from webchat.observability.runtime import Observability, activate
from webchat.observability.tracing import continue_trace

__all__ = ["ObservabilityMiddleware"]

CONVERSATION_PATH = re.compile(r"/api/conversations/([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})(?:/|$)")


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, observability: Observability) -> None:
        self.app = app
        self.observability = observability

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        principal = scope.get("state", {}).get("principal")
        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in (b"traceparent", b"tracestate")
        }
        with (
            activate(self.observability),
            continue_trace(headers),
            log_context(
                user=principal.id if principal is not None else None,
                conv_id=_conv_id(scope),
            ),
        ):
            await self.app(scope, receive, send)


def _conv_id(scope: Scope) -> str | None:
    match = CONVERSATION_PATH.search(scope.get("path", ""))
    if match:
        return match.group(1)
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("conv_id")
    return values[0] if values and values[0] else None
