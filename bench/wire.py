"""Bytes on the wire and in storage per answer, and the cost of loading a long history.

- **wire bytes per token**: what one WebSocket client receives for an answer of N tokens,
  counted on the TCP connection (after permessage-deflate, which the client offers as a
  browser does) by a counting proxy between client and server. Baseline: the bare Starlette
  server of ``bench.baseline_server`` sending each delta of the same answer as a small JSON
  frame (``{"event":{"type":"llm.delta","seq":…,"delta":…}}``) over the same proxy.
- **stored bytes per answer**: the frames SQLite keeps for one answer once the server stopped
  (a stream's deltas are deleted some time after its end is stored; sum of their JSON),
  against the answer's own text.
- **hydration**: a 200-turn conversation, joined with ``since=0`` (what a reload does) until
  its last frame arrived, in ms; baseline: the bare server sending the frames the webchat
  client received (same count, same bytes) at full speed.

    python -m bench.wire [--quick]
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench import _wire, common

NAME = "wire"

PROFILES = """\
profiles:
  - slug: t500
    display_name: 500 tokens
    step_settings: {api_type: offline, tokens_per_second: 0, answer_tokens: 500}
  - slug: t2000
    display_name: 2000 tokens
    step_settings: {api_type: offline, tokens_per_second: 0, answer_tokens: 2000}
  - slug: turn
    display_name: one turn of a long history
    step_settings: {api_type: offline, tokens_per_second: 0, answer_tokens: 60}
"""


class CountingProxy:
    """A loopback TCP proxy counting the bytes the server sends to the client."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.downstream = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        up = asyncio.create_task(self._pipe(reader, upstream_writer, count=False))
        down = asyncio.create_task(self._pipe(upstream_reader, writer, count=True))
        self._tasks.update((up, down))
        await asyncio.gather(up, down, return_exceptions=True)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if count:
                    self.downstream += len(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


async def _read_until(ws: Any, done: Any, timeout: float = 120) -> list[str]:
    frames: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            text = str(await ws.recv())
            frames.append(text)
            if done(text):
                return frames


def _ends_run(text: str) -> bool:
    return _wire.frame_type(text) in ("run.finished", "run.failed", "run.cancelled")


async def webchat_answer_bytes(server: common.ServerProcess, profile: str, conv_id: str) -> int:
    """Bytes one client received for one run (from its POST to run.finished)."""
    from websockets.asyncio.client import connect

    async with CountingProxy(server.port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/ws?conv_id={conv_id}&profile={profile}"
        async with connect(url, proxy=None, max_size=None) as ws, common.http_client() as http:
            await ws.recv()  # ws.hello
            before = proxy.downstream
            await common.start_run(http, server, profile, conv_id)
            await _read_until(ws, _ends_run)
            return proxy.downstream - before


def minimal_deltas(frames: list[str]) -> list[str]:
    """Each delta of a captured run as the smallest useful JSON frame."""
    out = []
    for text in frames:
        event = json.loads(text)["event"]
        if event["type"] == "llm.delta":
            small = {"type": "llm.delta", "seq": 0, "delta": event["delta"]}
            out.append(json.dumps({"event": small}, separators=(",", ":")))
    return out


async def baseline_bytes(baseline: common.ServerProcess, frames: list[str], conv: str) -> int:
    from websockets.asyncio.client import connect

    await common.load_baseline(baseline, frames)
    async with CountingProxy(baseline.port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/ws?conv={conv}"
        async with connect(url, proxy=None, max_size=None) as ws, common.http_client() as http:
            await ws.recv()  # hello
            before = proxy.downstream
            response = await http.post(f"{baseline.url}/broadcast", params={"conv": conv})
            response.raise_for_status()
            for _ in frames:
                await ws.recv()
            return proxy.downstream - before


def stored_frame_bytes(db: Path, conv_id: str) -> tuple[int, int]:
    """(frames, bytes of their JSON) SQLite holds for ``conv_id``."""
    with sqlite3.connect(db) as connection:
        row = connection.execute(
            "SELECT count(*), coalesce(sum(length(json)), 0) FROM frames WHERE conv_id = ?",
            (conv_id,),
        ).fetchone()
    return int(row[0]), int(row[1])


async def hydrate(
    server: common.ServerProcess, conv_id: str, last_seq: int
) -> tuple[float, list[str]]:
    """ms from opening the socket with since=0 to the frame at ``last_seq``."""
    from websockets.asyncio.client import connect

    started = time.perf_counter()
    url = f"{server.ws_url}/ws?conv_id={conv_id}&profile=turn&since=0"
    async with connect(url, proxy=None, max_size=None) as ws:
        await ws.recv()  # ws.hello
        frames = await _read_until(ws, lambda text: json.loads(text)["event"]["seq"] >= last_seq)
    return (time.perf_counter() - started) * 1000, frames


async def baseline_hydrate(baseline: common.ServerProcess, frames: list[str]) -> float:
    from websockets.asyncio.client import connect

    await common.load_baseline(baseline, frames)
    started = time.perf_counter()
    async with connect(f"{baseline.ws_url}/ws?conv=h", proxy=None, max_size=None) as ws:
        await ws.recv()
        async with common.http_client() as http:
            response = await http.post(f"{baseline.url}/broadcast", params={"conv": "h"})
            response.raise_for_status()
        for _ in frames:
            await ws.recv()
    return (time.perf_counter() - started) * 1000


async def run(args: Any) -> dict[str, Any]:
    rounds = 1 if args.quick else 3
    turns = 20 if args.quick else 200
    results: dict[str, Any] = {"wire": [], "stored": [], "hydration": {}}
    with common.Workspace.create() as ws:
        profiles = ws.path / "wire.yaml"
        profiles.write_text(PROFILES)
        db = ws.path / "wire.sqlite3"
        server = common.webchat_server(ws, profiles, db=str(db))
        baseline = common.baseline_server(ws)
        try:
            for profile, tokens in (("t500", 500), ("t2000", 2000)):
                captured = await common.capture_run(server, profile, f"capture-{profile}")
                small = minimal_deltas(captured)
                ours, base = [], []
                for i in range(rounds):  # alternating, so both share the machine's load
                    ours.append(await webchat_answer_bytes(server, profile, f"w-{profile}-{i}"))
                    base.append(await baseline_bytes(baseline, small, f"b-{profile}-{i}"))
                row = {
                    "tokens": tokens,
                    "webchat_bytes_per_token": common.median(ours) / tokens,
                    "baseline_bytes_per_token": common.median(base) / tokens,
                }
                row["ratio"] = row["webchat_bytes_per_token"] / row["baseline_bytes_per_token"]
                results["wire"].append(row)
                text = sum(len(json.loads(t)["event"]["delta"].encode()) for t in small)
                results["stored"].append({"tokens": tokens, "text_bytes": text})
            conv_id = "history"
            for _ in range(turns):
                from websockets.asyncio.client import connect

                url = f"{server.ws_url}/ws?conv_id={conv_id}&profile=turn"
                async with connect(url, proxy=None, max_size=None) as socket:
                    await socket.recv()
                    async with common.http_client() as http:
                        await common.start_run(http, server, "turn", conv_id)
                    await _read_until(socket, _ends_run)
            async with common.http_client() as http:
                info = (await http.get(f"{server.url}/api/conversations/{conv_id}")).json()
            ours_ms, base_ms, received = [], [], []
            for _ in range(rounds):
                elapsed, received = await hydrate(server, conv_id, int(info["last_seq"]))
                ours_ms.append(elapsed)
                base_ms.append(await baseline_hydrate(baseline, received))
            results["hydration"] = {
                "turns": turns,
                "frames": len(received),
                "webchat_ms": common.median(ours_ms),
                "baseline_ms": common.median(base_ms),
                "ratio": common.median(ours_ms) / common.median(base_ms),
            }
        finally:
            server.stop()  # a clean stop deletes the stored deltas of finished streams
            baseline.stop()
        for row in results["stored"]:
            row["frames"], row["bytes"] = stored_frame_bytes(db, f"w-t{row['tokens']}-0")
    return results


def render(results: dict[str, Any]) -> str:
    lines = [
        common.table(
            "wire bytes per token, one client (after permessage-deflate)",
            ["tokens", "webchat B/token", "baseline B/token", "x base"],
            [
                [
                    r["tokens"],
                    common.fmt(r["webchat_bytes_per_token"], 1),
                    common.fmt(r["baseline_bytes_per_token"], 1),
                    common.fmt(r["ratio"]),
                ]
                for r in results["wire"]
            ],
        ),
        common.table(
            "stored per answer (SQLite frames)",
            ["tokens", "frames", "KiB", "text KiB", "x text"],
            [
                [
                    r["tokens"],
                    r["frames"],
                    common.fmt(r["bytes"] / 1024, 1),
                    common.fmt(r["text_bytes"] / 1024, 1),
                    common.fmt(r["bytes"] / r["text_bytes"]),
                ]
                for r in results["stored"]
            ],
        ),
    ]
    h = results["hydration"]
    lines.append(
        common.table(
            f"hydration of a {h['turns']}-turn conversation (join since=0)",
            ["frames", "webchat ms", "baseline ms", "x base"],
            [
                [
                    h["frames"],
                    common.fmt(h["webchat_ms"], 1),
                    common.fmt(h["baseline_ms"], 1),
                    common.fmt(h["ratio"]),
                ]
            ],
        )
    )
    return "\n\n".join(lines)


def main() -> None:
    parser = common.base_parser(__doc__ or NAME, transports=False)
    args = parser.parse_args()
    import uvloop

    results = uvloop.run(run(args))
    print(render(results), flush=True)
    common.write_results(NAME, {**results, "machine": common.machine_info()})


if __name__ == "__main__":
    main()
