"""The baseline: a bare Starlette app that sends pre-rendered frames over WebSockets.

No bus, no translation, no persistence, no per-client queue: a frame is stamped with a fresh
seq (same layout as webchat's, so clients measure latency the same way), concatenated once,
and sent with ``send_text`` to each connected client in turn. It runs under uvicorn with the
same defaults as ``webchat serve`` (uvloop, httptools, websockets-sansio, permessage-deflate).

Routes:
- ``GET /healthz``
- ``WS /ws?conv=<id>``: join group ``conv``; greeted with a ``ws.hello`` frame.
- ``POST /frames``: ``{"frames": [frame JSON text, ...]}``: the frames to replay (captured from
  a webchat run, so sizes and count match).
- ``POST /broadcast?conv=<id>``: send every frame to every client of ``conv`` at full speed.
- ``POST /stream?conv=<id>&rate=<tokens/s>``: send the frames to ``conv`` on the offline
  engine's schedule (``llm.delta`` number i at start + i / rate).
- ``POST /first?conv=<id>``: send the first ``llm.delta`` frame only (first-token baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench._wire import FRAMES_PER_EVENT, clock_seq, frame_seq, frame_type

HELLO = '{"sem":true,"event":{"type":"ws.hello"}}'


@dataclass(frozen=True, slots=True)
class Template:
    """A captured frame split around its seq, so stamping a fresh seq is one concatenation."""

    head: str
    tail: str
    slot: int
    group: int  # frames of one webchat event share a group (and so a message seq)
    type: str


class Broadcaster:
    def __init__(self) -> None:
        self.groups: defaultdict[str, dict[WebSocket, None]] = defaultdict(dict)
        self.templates: list[Template] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self._message_seq = 0

    def load(self, frames: list[str]) -> int:
        templates: list[Template] = []
        group, last_message = -1, None
        for text in frames:
            seq = frame_seq(text)
            if seq is None:
                raise ValueError("every frame needs a seq")
            marker = f'"seq":{seq}'
            head, _, tail = text.partition(marker)
            message = seq // FRAMES_PER_EVENT
            if message != last_message:
                group, last_message = group + 1, message
            templates.append(Template(head + '"seq":', tail, seq % 4, group, frame_type(text)))
        self.templates = templates
        return len(templates)

    def _next_message_seq(self) -> int:
        self._message_seq = max(self._message_seq + 1, clock_seq())
        return self._message_seq

    async def _send_all(self, clients: list[WebSocket], text: str) -> None:
        for ws in clients:
            try:
                await ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.groups_discard(ws)

    def groups_discard(self, ws: WebSocket) -> None:
        for members in self.groups.values():
            members.pop(ws, None)

    async def broadcast(self, conv: str) -> None:
        clients = list(self.groups[conv])
        group, message_seq = -1, 0
        for template in self.templates:
            if template.group != group:
                group, message_seq = template.group, self._next_message_seq()
            seq = message_seq * FRAMES_PER_EVENT + template.slot
            await self._send_all(clients, f"{template.head}{seq}{template.tail}")
            await asyncio.sleep(0)  # as the offline engine does between tokens

    async def stream(self, conv: str, rate: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        clients = list(self.groups[conv])
        group, message_seq, delta_index = -1, 0, 0
        for template in self.templates:
            if template.type == "llm.delta":
                delay = start + delta_index / rate - loop.time()
                delta_index += 1
                await asyncio.sleep(max(delay, 0.0))
            if template.group != group:
                group, message_seq = template.group, self._next_message_seq()
            seq = message_seq * FRAMES_PER_EVENT + template.slot
            await self._send_all(clients, f"{template.head}{seq}{template.tail}")

    async def first(self, conv: str) -> None:
        template = next(t for t in self.templates if t.type == "llm.delta")
        seq = self._next_message_seq() * FRAMES_PER_EVENT + template.slot
        await self._send_all(list(self.groups[conv]), f"{template.head}{seq}{template.tail}")

    def spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


hub = Broadcaster()


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def load_frames(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    return JSONResponse({"frames": hub.load(body["frames"])})


async def broadcast(request: Request) -> JSONResponse:
    hub.spawn(hub.broadcast(request.query_params.get("conv", "")))
    return JSONResponse({"status": "running"})


async def stream(request: Request) -> JSONResponse:
    rate = float(request.query_params.get("rate", "20"))
    hub.spawn(hub.stream(request.query_params.get("conv", ""), rate))
    return JSONResponse({"status": "running"})


async def first(request: Request) -> JSONResponse:
    hub.spawn(hub.first(request.query_params.get("conv", "")))
    return JSONResponse({"status": "running"})


async def websocket(ws: WebSocket) -> None:
    await ws.accept()
    conv = ws.query_params.get("conv", "")
    await ws.send_text(HELLO)
    hub.groups[conv][ws] = None
    try:
        while True:
            await ws.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.groups[conv].pop(ws, None)
        if not hub.groups[conv]:
            del hub.groups[conv]


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/frames", load_frames, methods=["POST"]),
        Route("/broadcast", broadcast, methods=["POST"]),
        Route("/stream", stream, methods=["POST"]),
        Route("/first", first, methods=["POST"]),
        WebSocketRoute("/ws", websocket),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
