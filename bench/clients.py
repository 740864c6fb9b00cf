"""WebSocket clients for the benchmarks, in worker processes apart from the servers.

A ``ClientPool`` starts ``procs`` worker processes and spreads its connections over them, so
client CPU is measured apart from server CPU (and can be spread if one process saturates).
Each worker runs asyncio ``websockets`` clients that, for every frame, note the arrival time
(``time.time_ns()``) and the frame's seq, from which the publish time follows (see
``bench._wire``). Commands go over a pipe: ``connect``, ``arm`` (start recording a round),
``collect`` (wait until every client saw its end frame, return what was recorded), ``close``.

Clients behave like browsers: they offer permessage-deflate (pass ``compression=None`` to
turn it off) and never send anything after the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench._wire import frame_seq, frame_type, publish_ns

END_OF_RUN = ("run.finished", "run.failed", "run.cancelled")


class _Client:
    __slots__ = (
        "close_code",
        "done",
        "end_ns",
        "end_type",
        "first_delta_ns",
        "frames",
        "latencies",
        "published",
        "ws",
    )

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.close_code: int | None = None
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.latencies = array("q")
        self.published = array("q")
        self.first_delta_ns = 0
        self.end_ns = 0
        self.end_type = ""
        self.done = False


class _Worker:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.clients: list[_Client] = []
        self.readers: list[asyncio.Task[None]] = []
        self.armed = False
        self.end_types: tuple[str, ...] = END_OF_RUN
        self.pending = 0
        self.all_done = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command, arg = await loop.run_in_executor(None, self.conn.recv)
            if command == "connect":
                reply: Any = await self.connect(**arg)
            elif command == "arm":
                reply = self.arm(tuple(arg))
            elif command == "collect":
                reply = await self.collect(float(arg))
            elif command == "close":
                await self.close()
                self.conn.send(("ok", None))
                return
            else:
                reply = {"error": f"unknown command {command!r}"}
            self.conn.send(("ok", reply))

    async def connect(
        self, urls: list[str], concurrency: int, compression: str | None
    ) -> dict[str, Any]:
        from websockets.asyncio.client import connect

        limit = asyncio.Semaphore(concurrency)
        errors: list[str] = []

        async def one(url: str) -> None:
            async with limit:
                try:
                    ws = await connect(
                        url,
                        compression=compression,
                        max_size=None,
                        open_timeout=60,
                        ping_interval=None,
                        proxy=None,
                    )
                    hello = await asyncio.wait_for(ws.recv(), 30)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                if frame_type(str(hello)) != "ws.hello":
                    errors.append(f"first message was not ws.hello: {str(hello)[:200]}")
                client = _Client(ws)
                self.clients.append(client)
                self.readers.append(asyncio.create_task(self.read(client)))

        started = time.perf_counter()
        await asyncio.gather(*(one(url) for url in urls))
        return {
            "connected": len(self.clients),
            "errors": errors[:5],
            "seconds": time.perf_counter() - started,
        }

    def arm(self, end_types: tuple[str, ...]) -> dict[str, Any]:
        self.end_types = end_types
        for client in self.clients:
            client.reset()
        self.pending = sum(1 for c in self.clients if c.close_code is None)
        self.all_done = asyncio.Event()
        if not self.pending:
            self.all_done.set()
        self.armed = True
        self.cpu0 = time.process_time()
        return {"armed": self.pending}

    async def read(self, client: _Client) -> None:
        ws = client.ws
        try:
            async for message in ws:
                now = time.time_ns()
                if not self.armed or client.done:
                    continue
                text = message if isinstance(message, str) else message.decode()
                seq = frame_seq(text)
                if seq is None:
                    continue
                client.frames += 1
                published = publish_ns(seq)
                client.published.append(published)
                client.latencies.append(now - published)
                kind = frame_type(text)
                if kind == "llm.delta" and not client.first_delta_ns:
                    client.first_delta_ns = now
                if kind in self.end_types:
                    client.end_ns = now
                    client.end_type = kind
                    self._finished(client)
        except Exception:
            pass
        client.close_code = ws.close_code if ws.close_code is not None else -1
        self._finished(client)

    def _finished(self, client: _Client) -> None:
        if client.done or not self.armed:
            return
        client.done = True
        self.pending -= 1
        if self.pending <= 0:
            self.all_done.set()

    async def collect(self, timeout: float) -> dict[str, Any]:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.all_done.wait()
        self.armed = False
        latencies, published = array("q"), array("q")
        for client in self.clients:
            latencies.extend(client.latencies)
            published.extend(client.published)
        return {
            "cpu_seconds": time.process_time() - self.cpu0,
            "frames": sum(c.frames for c in self.clients),
            "latencies_ns": latencies.tobytes(),
            "published_ns": published.tobytes(),
            "first_delta_ns": [c.first_delta_ns for c in self.clients],
            "end_ns": [c.end_ns for c in self.clients],
            "unfinished": sum(1 for c in self.clients if not c.end_ns),
            "failed_runs": sum(1 for c in self.clients if c.end_type in ("run.failed", "error")),
            "close_codes": [c.close_code for c in self.clients if c.close_code is not None],
        }

    async def close(self) -> None:
        await asyncio.gather(*(c.ws.close() for c in self.clients), return_exceptions=True)
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


def _worker_main(conn: Connection) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_Worker(conn).run())


@dataclass
class RoundResult:
    """One round, merged over every worker."""

    frames: int
    latencies_ms: list[float]
    published_ns: list[int]  # publish time (ms midpoint) of each frame, same order
    first_delta_ns: list[int]
    end_ns: list[int]
    unfinished: int
    failed_runs: int
    close_codes: list[int]
    cpu_seconds: float

    @property
    def ok(self) -> bool:
        """Every client saw its run end, and no run failed."""
        return not self.unfinished and not self.failed_runs

    @property
    def last_end_ns(self) -> int:
        return max(self.end_ns, default=0)


@dataclass
class ClientPool:
    """``procs`` worker processes holding WebSocket clients; see the module docstring."""

    procs: int = 1
    compression: str | None = "deflate"
    _conns: list[Connection] = field(default_factory=list)
    _processes: list[Any] = field(default_factory=list)

    def start(self) -> ClientPool:
        context = multiprocessing.get_context("spawn")
        for _ in range(self.procs):
            parent, child = context.Pipe()
            process = context.Process(target=_worker_main, args=(child,), daemon=True)
            process.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(process)
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    async def _call_all(self, commands: Sequence[tuple[str, Any]]) -> list[Any]:
        for conn, command in zip(self._conns, commands, strict=True):
            conn.send(command)
        replies = []
        for conn in self._conns:
            status, reply = await asyncio.to_thread(conn.recv)
            assert status == "ok", reply
            replies.append(reply)
        return replies

    async def connect(self, urls: Sequence[str], concurrency: int = 50) -> dict[str, Any]:
        shares: list[list[str]] = [[] for _ in self._conns]
        for index, url in enumerate(urls):
            shares[index % len(shares)].append(url)
        per = max(1, concurrency // len(shares))
        replies = await self._call_all(
            [
                ("connect", {"urls": s, "concurrency": per, "compression": self.compression})
                for s in shares
            ]
        )
        connected = sum(r["connected"] for r in replies)
        errors = [e for r in replies for e in r["errors"]]
        if connected != len(urls):
            raise RuntimeError(f"only {connected}/{len(urls)} clients connected: {errors[:3]}")
        return {"connected": connected, "seconds": max(r["seconds"] for r in replies)}

    async def arm(self, end_types: Sequence[str] = END_OF_RUN) -> None:
        await self._call_all([("arm", list(end_types))] * len(self._conns))

    async def collect(self, timeout: float) -> RoundResult:
        replies = await self._call_all([("collect", timeout)] * len(self._conns))
        latencies: list[float] = []
        published: list[int] = []
        for reply in replies:
            values = array("q")
            values.frombytes(reply["latencies_ns"])
            latencies.extend(v / 1e6 for v in values)
            values = array("q")
            values.frombytes(reply["published_ns"])
            published.extend(values)
        return RoundResult(
            frames=sum(r["frames"] for r in replies),
            latencies_ms=latencies,
            published_ns=published,
            first_delta_ns=[t for r in replies for t in r["first_delta_ns"]],
            end_ns=[t for r in replies for t in r["end_ns"]],
            unfinished=sum(r["unfinished"] for r in replies),
            failed_runs=sum(r["failed_runs"] for r in replies),
            close_codes=[c for r in replies for c in r["close_codes"]],
            cpu_seconds=sum(r["cpu_seconds"] for r in replies),
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._call_all([("close", None)] * len(self._conns)), 60)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        self._processes.clear()

    async def __aenter__(self) -> ClientPool:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def worker_count(clients: int, requested: int | None) -> int:
    """Client processes: as requested, else one (the machine may have only two cores)."""
    if requested:
        return max(1, min(requested, clients))
    return 1 if clients < 200 or (os.cpu_count() or 1) <= 2 else 2
