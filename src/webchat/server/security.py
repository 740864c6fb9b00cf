"""The security middleware: Host check, authentication, cross-site checks, for every route.

It runs before any route, so no route can forget it:

1. A ``Host`` the server does not answer to gets 400 (HTTP) or a refused handshake
   (WebSocket): the shape of DNS rebinding.
2. Behind a trusted proxy, ``X-Forwarded-Proto`` says whether the browser spoke https (so the
   session cookie is marked Secure).
3. The request is authenticated (``Gatekeeper.identify``) and the Principal put in
   ``scope["state"]["principal"]``; routes read it with ``principal_of``. Without one, a
   public path goes on, the UI page redirects to the log-in page, the API answers 401 JSON
   and a WebSocket handshake is refused.
4. A state-changing request that a browser could have been made to send (cookie or proxy
   credentials, or no credentials at all) must come from this server's own pages: a
   same-origin ``Origin`` (or ``Referer``), and a JSON body or an ``X-Requested-With``
   header, which a cross-site form or a CORS-less ``fetch`` cannot add.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from webchat.auth.authenticators import bearer_token
from webchat.auth.gate import Gatekeeper
from webchat.auth.network import request_origin, same_origin
from webchat.auth.principal import Principal
from webchat.server.openai_errors import OPENAI_PREFIX, error_body

__all__ = ["SecurityMiddleware", "principal_of"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/login",
        "/favicon.ico",
        "/docs",
        "/openapi.json",
        "/redoc",
    }
)
"""Served to anyone: liveness, readiness, counters, the log-in page and the API's own
description."""
PUBLIC_PREFIXES = ("/static/", "/auth/")
UI_PATHS = frozenset({"", "/"})


def principal_of(conn: HTTPConnection) -> Principal:
    """The authenticated user of a request (the middleware guarantees there is one on every
    non-public route)."""
    principal: Principal = conn.scope["state"]["principal"]
    return principal


def maybe_principal(conn: HTTPConnection) -> Principal | None:
    principal: Principal | None = conn.scope.get("state", {}).get("principal")
    return principal


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, root: str = "") -> None:
        self.app = app
        self.root = root

    def _openai(self, scope: Scope) -> bool:
        """Whether the request is to the OpenAI-compatible API (its errors have its shape)."""
        path: str = scope["path"]
        return path.startswith(self.root) and path[len(self.root) :].startswith(OPENAI_PREFIX)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        gate: Gatekeeper | None = getattr(scope["app"].state, "gate", None)
        if gate is None:  # the lifespan has not run (or failed): nothing can be served
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        websocket = scope["type"] == "websocket"
        openai = self._openai(scope)
        host = conn.headers.get("host")
        if not gate.hosts.allows(host):
            await _refuse(
                scope, send, 400, f"Host {host!r} is not served here", websocket, openai=openai
            )
            return
        if gate.from_proxy(scope):
            proto = conn.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
            if proto in ("http", "https"):
                secure = proto == "https"
                scope["scheme"] = ("wss" if secure else "ws") if websocket else proto
        if not scope["path"].startswith(self.root):
            await self.app(scope, receive, send)  # nothing is served outside --root: a 404
            return
        path = scope["path"][len(self.root) :]
        token_sent = bearer_token(conn) is not None
        if token_sent:
            wait = gate.failures.retry_after(gate.client_address(conn))
            if wait is not None:
                await _refuse(
                    scope, send, 429, "too many failed attempts", websocket, wait, openai=openai
                )
                return
        principal = await gate.identify(conn)
        scope.setdefault("state", {})["principal"] = principal
        if principal is None:
            if token_sent:
                gate.failures.failed(gate.client_address(conn))
            if not _public(path):
                await self._unauthenticated(scope, send, gate, path, websocket)
                return
        if not websocket and scope["method"] not in SAFE_METHODS:
            problem = self._cross_site_problem(conn, gate, principal, path)
            if problem is not None:
                await _refuse(scope, send, 403, problem, websocket, openai=openai)
                return
        await self.app(scope, receive, send)

    async def _unauthenticated(
        self, scope: Scope, send: Send, gate: Gatekeeper, path: str, websocket: bool
    ) -> None:
        if not websocket and path in UI_PATHS and gate.has_login_page:
            target = f"{self.root}/login?next={quote(self.root + path or '/')}"
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [(b"location", target.encode()), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await _refuse(
            scope, send, 401, "authentication required", websocket, openai=self._openai(scope)
        )

    @staticmethod
    def _cross_site_problem(
        conn: HTTPConnection, gate: Gatekeeper, principal: Principal | None, path: str
    ) -> str | None:
        if principal is not None and not principal.browser_borne:
            return None  # a bearer token: sent only by a program holding it
        origin = request_origin(conn.headers)
        host = conn.headers.get("host")
        if origin is not None and not same_origin(origin, host, gate.allowed_origins):
            return f"cross-site request refused (Origin {origin})"
        # Without an Origin or Referer no browser sent it (browsers always send Origin on a
        # cross-site POST); only a credential a browser adds by itself needs one.
        carries_cookie = principal is not None and principal.via in ("session", "proxy")
        if origin is None and not carries_cookie:
            return None
        if origin is None:
            return "state-changing requests from a browser need an Origin or Referer header"
        content_type = conn.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json" and "x-requested-with" not in conn.headers:
            return (
                "state-changing requests need a JSON body (content-type: application/json) "
                "or an X-Requested-With header"
            )
        return None


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


async def _refuse(
    scope: Scope,
    send: Send,
    status: int,
    message: str,
    websocket: bool,
    retry_after: float | None = None,
    *,
    openai: bool = False,
) -> None:
    """An HTTP error in the API's ``{"error": ...}`` shape. A WebSocket handshake is refused
    with the same response where the server supports denial responses (uvicorn does), else
    with a bare close before anything is accepted (the server answers 403). ``openai``: in
    OpenAI's error shape instead (``webchat.server.openai_errors``)."""
    shape = error_body(status, message) if openai else {"error": message}
    body = json.dumps(shape).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="webchat"'))
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    prefix = ""
    if websocket:
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        prefix = "websocket."
    await send({"type": prefix + "http.response.start", "status": status, "headers": headers})
    await send({"type": prefix + "http.response.body", "body": body})
