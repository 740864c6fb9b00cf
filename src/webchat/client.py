"""A terminal client of the public API: join over WebSocket, start a run, print its frames.

It uses exactly what a browser uses (``/ws`` then ``POST /chat``), so it doubles as a check
that the API is enough to build a client on.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from webchat.conversation.frames import StreamEnvelopes

EXIT_CODES = {"run.finished": 0, "run.failed": 1, "run.cancelled": 130}
NEEDS_AUTH = "the server requires authentication: pass --token or set WEBCHAT_TOKEN"
SIGNED_OUT_CODE = 4401
"""Close code of a WebSocket whose credentials are missing or no longer valid (4000 + 401)."""


class ChatClientError(RuntimeError):
    """The server could not be reached or refused the request; the message says why."""


def websocket_url(base_url: str, params: dict[str, str]) -> str:
    parts = urlsplit(base_url.rstrip("/"))
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + "/ws", urlencode(params), ""))


def _auth_error(token: str | None) -> ChatClientError:
    if token:
        return ChatClientError(f"{NEEDS_AUTH} (the token given was refused)")
    return ChatClientError(NEEDS_AUTH)


def _error_text(body: bytes | bytearray) -> str:
    """The ``error`` of a JSON error body, else the body itself."""
    text = bytes(body).decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return text.strip()


class FramePrinter:
    """Turns frames into terminal text: answer on ``out``, tools and status on ``err``."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.open_line = False

    def _status(self, text: str) -> None:
        if self.open_line:
            self.out.write("\n")
            self.out.flush()
            self.open_line = False
        self.err.write(text + "\n")
        self.err.flush()

    def show(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "llm.delta":
            self.out.write(str(event.get("delta", "")))
            self.out.flush()
            self.open_line = True
        elif kind == "llm.final" and self.open_line:
            self.out.write("\n")
            self.out.flush()
            self.open_line = False
        elif kind == "tool.start":
            self._status(f"[tool {event.get('name')} {json.dumps(event.get('input'))}]")
        elif kind == "tool.result":
            error = event.get("error")
            self._status(f"[tool result: {error if error else event.get('result')}]")
        elif kind == "error":
            self._status(f"[error: {event.get('error')}]")
        elif kind == "run.failed":
            self._status(f"[run failed: {event.get('error')}]")
        elif kind == "run.cancelled":
            self._status("[run cancelled]")


async def stream_chat(
    base_url: str,
    prompt: str,
    *,
    conv_id: str | None = None,
    profile: str | None = None,
    system_prompt: str | None = None,
    timeout: float = 300.0,
    token: str | None = None,
    out: TextIO,
    err: TextIO,
) -> int:
    """Run ``prompt`` in a conversation and print it; returns a process exit code.

    ``token`` (an API token of ``--auth users``) goes as ``Authorization: Bearer`` on both the
    WebSocket handshake and the POST."""
    conv_id = conv_id or str(uuid.uuid4())
    params = {"conv_id": conv_id}
    if profile:
        params["profile"] = profile
    body: dict[str, Any] = {"prompt": prompt, "conv_id": conv_id}
    if system_prompt is not None:
        body["overrides"] = {"system_prompt": system_prompt}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    printer = FramePrinter(out, err)
    try:
        async with connect(
            websocket_url(base_url, params), open_timeout=10, additional_headers=headers
        ) as ws:
            hello = json.loads(await ws.recv())["event"]
            if hello.get("type") != "ws.hello":
                if await _close_code(ws) == SIGNED_OUT_CODE:
                    raise _auth_error(token)
                raise ChatClientError(f"server refused the conversation: {hello.get('error')}")
            if hello.get("engine") == "offline":
                err.write("[offline engine: no model is connected]\n")
            inference_id = await _start_run(base_url, profile, body, headers, token)
            envelopes = StreamEnvelopes()  # deltas come short: their run is their stream's
            async with asyncio.timeout(timeout):
                async for message in ws:
                    event = envelopes.fill(json.loads(message).get("event", {}))
                    if event.get("inference_id") != inference_id:
                        continue
                    printer.show(event)
                    if event.get("type") in EXIT_CODES:
                        err.write(f"[conversation {conv_id}]\n")
                        return EXIT_CODES[str(event["type"])]
    except TimeoutError:
        raise ChatClientError(f"no end of run within {timeout:g}s") from None
    except InvalidStatus as exc:  # the handshake was answered with an HTTP error
        status = exc.response.status_code
        if status == 401:
            raise _auth_error(token) from None
        reason = _error_text(exc.response.body or b"")
        if not reason and status == 403:
            # A server that cannot answer a handshake with its real status refuses it so.
            reason = "not signed in? pass --token or set WEBCHAT_TOKEN"
        raise ChatClientError(f"server refused the WebSocket: {status}: {reason}") from None
    except ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd.code == SIGNED_OUT_CODE:
            raise _auth_error(token) from None
        raise ChatClientError(f"cannot talk to {base_url}: {exc}") from None
    except (OSError, WebSocketException) as exc:
        raise ChatClientError(f"cannot talk to {base_url}: {exc}") from None
    raise ChatClientError("the server closed the connection before the run ended")


async def _close_code(ws: ClientConnection) -> int | None:
    """The code the server closes with after a refusal frame (it closes right after)."""
    try:
        async with asyncio.timeout(2):
            await ws.wait_closed()
    except TimeoutError:
        return None
    return ws.close_code


async def _start_run(
    base_url: str,
    profile: str | None,
    body: dict[str, Any],
    headers: dict[str, str],
    token: str | None,
) -> str:
    path = f"/chat/{profile}" if profile else "/chat"
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=30) as http:
        try:
            response = await http.post(
                path, json=body, headers={**headers, "Idempotency-Key": str(uuid.uuid4())}
            )
        except httpx.HTTPError as exc:
            raise ChatClientError(f"cannot talk to {base_url}: {exc}") from None
    data = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if response.status_code == 401:
        raise _auth_error(token)
    if response.status_code >= 400:
        raise ChatClientError(f"{response.status_code}: {data.get('error', response.text)}")
    return str(data["inference_id"])
