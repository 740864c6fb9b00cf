"""Client-side helpers for tests that talk to a real server over WebSocket and HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect

from webchat.conversation.frames import StreamEnvelopes

TERMINAL = ("run.finished", "run.failed", "run.cancelled")
WAIT = 15.0

ENVELOPES = StreamEnvelopes()
"""Shared by every connection of a test run, as a browser tab keeps what it saw across its
reconnects: short deltas get the envelope of their stream's opening frame."""


async def recv_event(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(await ws.recv())
    assert message.get("sem") is True, message
    event: dict[str, Any] = message["event"]
    return ENVELOPES.fill(event)


class Viewer:
    """One WebSocket client: its ``ws.hello`` and every later frame it received, in order."""

    def __init__(self, ws: ClientConnection, hello: dict[str, Any], wait: float = WAIT) -> None:
        self.ws = ws
        self.hello = hello
        self.wait = wait
        self.frames: list[dict[str, Any]] = []

    async def recv(self) -> dict[str, Any]:
        event = await recv_event(self.ws)
        self.frames.append(event)
        return event

    async def read_until(
        self, stop: Callable[[dict[str, Any]], bool], timeout: float | None = None
    ) -> dict[str, Any]:
        async with asyncio.timeout(self.wait if timeout is None else timeout):
            while True:
                event = await self.recv()
                if stop(event):
                    return event

    async def read_run(self, inference_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Frames up to and including the run's terminal frame; returns that frame."""
        return await self.read_until(
            lambda e: e["type"] in TERMINAL and e.get("inference_id") == inference_id, timeout
        )

    async def read_deltas(self, count: int, inference_id: str | None = None) -> None:
        """Read until ``count`` deltas (of ``inference_id``, if given) have arrived."""
        await self.read_until(lambda _: len(self.of(inference_id, "llm.delta")) >= count)

    def of(self, inference_id: str | None, frame_type: str | None = None) -> list[dict[str, Any]]:
        """Frames of one run (every run if ``inference_id`` is None), of one type if given."""
        return [
            f
            for f in self.frames
            if inference_id in (None, f.get("inference_id")) and frame_type in (None, f["type"])
        ]

    def count(self, frame_type: str) -> int:
        return len(self.of(None, frame_type))

    def terminals(self, inference_id: str) -> list[str]:
        return terminal_frames(self.frames, inference_id)

    @property
    def last_seq(self) -> int:
        return int(self.frames[-1]["seq"]) if self.frames else int(self.hello["last_seq"])


def ws_url(ws_base: str, **params: str) -> str:
    return f"{ws_base}/ws?{urlencode(params)}"


@contextlib.asynccontextmanager
async def viewer(
    ws_base: str,
    conv_id: str,
    *,
    headers: dict[str, str] | None = None,
    wait: float = WAIT,
    **params: Any,
) -> AsyncIterator[Viewer]:
    """Join ``conv_id`` at ``ws_base`` (``ws://host:port[/root]``); yields after ``ws.hello``."""
    query = {"conv_id": conv_id, **{k: str(v) for k, v in params.items()}}
    async with connect(ws_url(ws_base, **query), additional_headers=headers) as ws:
        async with asyncio.timeout(wait):
            hello = await recv_event(ws)
        assert hello["type"] == "ws.hello", hello
        yield Viewer(ws, hello, wait)


async def start_run(
    http: httpx.AsyncClient, conv_id: str, prompt: str, profile: str | None = None
) -> dict[str, Any]:
    path = f"/chat/{profile}" if profile else "/chat"
    response = await http.post(path, json={"prompt": prompt, "conv_id": conv_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "running"
    return body


async def timeline(http: httpx.AsyncClient, conv_id: str, since: int = 0) -> list[dict[str, Any]]:
    response = await http.get(f"/api/conversations/{conv_id}/timeline", params={"since": since})
    assert response.status_code == 200, response.text
    frames: list[dict[str, Any]] = response.json()["frames"]
    return frames


async def wait_not_running(
    http: httpx.AsyncClient, conv_id: str, *, no_clients: bool = False, timeout: float = WAIT
) -> dict[str, Any]:
    """Poll the conversation until its run is over (and, if asked, every client has left)."""
    async with asyncio.timeout(timeout):
        while True:
            response = await http.get(f"/api/conversations/{conv_id}")
            assert response.status_code == 200, response.text
            info: dict[str, Any] = response.json()
            if not info["running"] and not (no_clients and info["clients"]):
                return info
            await asyncio.sleep(0.05)


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [int(f["seq"]) for f in frames]


def assert_strictly_increasing(frames: list[dict[str, Any]]) -> None:
    ordinals = seqs(frames)
    bad = [(a, b) for a, b in itertools.pairwise(ordinals) if a >= b]
    assert not bad, f"seq not strictly increasing: {bad[:5]}"


def terminal_frames(frames: list[dict[str, Any]], inference_id: str) -> list[str]:
    return [
        f["type"] for f in frames if f["type"] in TERMINAL and f.get("inference_id") == inference_id
    ]
