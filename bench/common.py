"""What every benchmark shares: server processes, /proc readings, statistics, output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from bench import _wire

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MiB = 1024 * 1024


def check_wire_constants() -> None:
    """The bench decodes seqs with its own copy of webchat's constants; they must agree."""
    from webchat.conversation.frames import FRAMES_PER_EVENT
    from webchat.transport.base import SEQ_EPOCH_MS, SEQ_PER_MS

    assert (SEQ_EPOCH_MS, SEQ_PER_MS, FRAMES_PER_EVENT) == (
        _wire.SEQ_EPOCH_MS,
        _wire.SEQ_PER_MS,
        _wire.FRAMES_PER_EVENT,
    ), "bench/_wire.py is out of date with webchat's seq layout"


# -- machine --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    versions = {}
    for dist in ("uvicorn", "starlette", "fastapi", "websockets", "uvloop", "redis", "pydantic"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    redis_version = ""
    binary = shutil.which("redis-server")
    if binary:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=5)
            redis_version = out.stdout.split(" v=")[1].split()[0] if " v=" in out.stdout else ""
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_total / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "redis_server": redis_version,
        "webchat_src": os.environ.get("BENCH_WEBCHAT_SRC") or "installed",
        "loadavg": os.getloadavg(),
    }


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"machine: {info['cores']} cores ({info['cpu_model'] or 'unknown cpu'}), "
        f"{info['memory_gib']} GiB, Python {info['python']}"
    )


# -- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of ``pid`` (threads included), or of its thread ``tid``."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


class RssSampler:
    """Samples the RSS of some processes in a thread; keeps the peak of each."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                self.peak[name] = max(self.peak[name], rss_bytes(pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@dataclass
class CpuMeter:
    """CPU seconds used by some processes between ``start`` and ``stop``, as % of one core."""

    pids: dict[str, int]
    _cpu0: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def _read(self) -> dict[str, float]:
        values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        if "server" in self.pids:  # its event loop thread, apart from worker threads
            values["server_loop"] = cpu_seconds(self.pids["server"], self.pids["server"])
        return values

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._cpu0 = self._read()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._t0
        self.used = {name: value - self._cpu0[name] for name, value in self._read().items()}

    def percent(self, name: str) -> float:
        return 100.0 * self.used.get(name, 0.0) / self.wall if self.wall else 0.0


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A server in its own process on 127.0.0.1, ready once ``health_path`` answers 200."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        port: int,
        log_dir: Path,
        pythonpath: str | None = None,
    ) -> None:
        self.name = name
        self.pythonpath = pythonpath
        self.args = list(args)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, health_path: str = "/healthz", timeout: float = 30.0) -> ServerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([self.pythonpath, env.get("PYTHONPATH", "")])
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; log:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(self.url + health_path, timeout=1.0, trust_env=False).status_code
                    == 200
                ):
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout}s; log:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


PROFILES_YAML = """\
profiles:
  - slug: fast
    display_name: benchmark, full speed
    step_settings: {{api_type: offline, tokens_per_second: 0, answer_tokens: {fast_tokens}}}
  - slug: paced
    display_name: benchmark, paced
    step_settings:
      api_type: offline
      tokens_per_second: {paced_rate}
      answer_tokens: {paced_tokens}
  - slug: tiny
    display_name: benchmark, first token
    step_settings: {{api_type: offline, tokens_per_second: 0, answer_tokens: 5}}
"""


@dataclass
class Workspace:
    """A temporary directory for profiles, logs, databases and the Redis data dir."""

    path: Path

    @classmethod
    @contextlib.contextmanager
    def create(cls) -> Iterator[Workspace]:
        directory = Path(tempfile.mkdtemp(prefix="webchat-bench-"))
        try:
            yield cls(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def profiles(
        self, fast_tokens: int = 300, paced_rate: float = 20, paced_tokens: int = 40
    ) -> Path:
        path = self.path / "profiles.yaml"
        path.write_text(
            PROFILES_YAML.format(
                fast_tokens=fast_tokens, paced_rate=paced_rate, paced_tokens=paced_tokens
            )
        )
        return path


def webchat_server(
    ws: Workspace,
    profiles: Path,
    *,
    transport: str = "memory",
    redis_url: str | None = None,
    db: str = ":memory:",
    evict_after: float | None = None,
    cprofile_to: Path | None = None,
    name: str = "webchat",
    src: str | None = None,
    gc_log: bool = False,
) -> ServerProcess:
    """``python -m webchat serve`` in its own process (optionally under cProfile).

    ``src`` (else ``$BENCH_WEBCHAT_SRC``), the ``src`` directory of another checkout, runs
    that webchat instead of the installed one, for before/after comparisons.

    ``gc_log`` makes the server log every full (generation 2) garbage collection and its
    pause to its log (``bench/gclog/sitecustomize.py``); ``gc_pauses`` reads them back.
    """
    port = free_port()
    args = [sys.executable]
    if cprofile_to is not None:
        args += ["-m", "cProfile", "-o", str(cprofile_to)]
    args += [
        "-m", "webchat", "serve",
        "--port", str(port),
        "--db", db,
        "--profiles", str(profiles),
        "--transport", transport,
        "--idle-timeout", "3600",
        "--log-level", "warning",
    ]  # fmt: skip
    if redis_url:
        args += ["--redis-url", redis_url]
    if evict_after is not None:
        args += ["--evict-after", str(evict_after)]
    paths = [src or os.environ.get("BENCH_WEBCHAT_SRC") or ""]
    if gc_log:
        paths.append(str(GC_LOG_SITE))
    pythonpath = os.pathsep.join(p for p in paths if p) or None
    return ServerProcess(name, args, port, ws.path, pythonpath=pythonpath).start()


GC_LOG_SITE = Path(__file__).resolve().parent / "gclog"


def gc_pauses(server: ServerProcess) -> list[float]:
    """Full-collection pauses (ms) a server started with ``gc_log`` has logged so far."""
    pauses = []
    with contextlib.suppress(OSError):
        for line in server.log_path.read_text(errors="replace").splitlines():
            if line.startswith("BENCH-GC gen2 "):
                pauses.append(float(line.split()[2]))
    return pauses


def baseline_server(ws: Workspace, name: str = "baseline") -> ServerProcess:
    """The bare Starlette app of ``bench.baseline_server`` in its own process."""
    port = free_port()
    args = [sys.executable, "-m", "bench.baseline_server", "--port", str(port)]
    return ServerProcess(name, args, port, ws.path).start()


class RedisProcess:
    """A throwaway ``redis-server`` without persistence on a loopback port."""

    def __init__(self, ws: Workspace) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH; it is needed for --transport redis")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        directory = ws.path / "redis"
        directory.mkdir(exist_ok=True)
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--protected-mode", "no",
        ]  # fmt: skip
        with (ws.path / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING")

    @property
    def pid(self) -> int:
        return self.process.pid

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextlib.contextmanager
def maybe_redis(ws: Workspace, transport: str) -> Iterator[RedisProcess | None]:
    if transport != "redis":
        yield None
        return
    redis = RedisProcess(ws)
    try:
        yield redis
    finally:
        redis.stop()


# -- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` (0-100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def ratio(value: float, base: float) -> float:
    if not base or math.isnan(base) or math.isnan(value):
        return math.nan
    return value / base


# -- output ---------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")
    return path


def _clean(value: Any) -> Any:
    """JSON-ready: NaN becomes null, paths become strings."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def base_parser(description: str, *, transports: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    if transports:
        parser.add_argument(
            "--transport",
            choices=("memory", "redis", "both"),
            default="memory",
            help="webchat's transport (both: run memory, then redis)",
        )
    return parser


def transports_of(choice: str) -> list[str]:
    return ["memory", "redis"] if choice == "both" else [choice]


# -- webchat helpers ------------------------------------------------------------------------

PROMPT = "benchmark: stream an answer to every client"


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    """Loopback only: never route through an environment proxy."""
    return httpx.AsyncClient(trust_env=False, timeout=60.0, **kwargs)


async def start_run(
    http: httpx.AsyncClient, server: ServerProcess, profile: str, conv_id: str
) -> httpx.Response:
    """``POST /chat/<profile>``; waits out a 409 left by the previous run's last moments."""
    for _ in range(200):
        response = await http.post(
            f"{server.url}/chat/{profile}", json={"prompt": PROMPT, "conv_id": conv_id}
        )
        if response.status_code != 409:
            response.raise_for_status()
            return response
        await asyncio.sleep(0.01)
    raise RuntimeError(f"conversation {conv_id} stayed busy")


async def capture_run(server: ServerProcess, profile: str, conv_id: str) -> list[str]:
    """The frames of one webchat run, as its one client received them."""
    from websockets.asyncio.client import connect

    frames: list[str] = []
    url = f"{server.ws_url}/ws?conv_id={conv_id}&profile={profile}"
    async with connect(url, proxy=None, max_size=None) as ws, http_client() as http:
        await ws.recv()  # ws.hello
        await start_run(http, server, profile, conv_id)
        async with asyncio.timeout(120):
            while True:
                text = str(await ws.recv())
                frames.append(text)
                if _wire.frame_type(text) in ("run.finished", "run.failed", "run.cancelled"):
                    break
    if _wire.frame_type(frames[-1]) != "run.finished":
        raise RuntimeError(f"capture run did not finish: {frames[-1][:300]}")
    return frames


async def load_baseline(baseline: ServerProcess, frames: list[str]) -> None:
    async with http_client() as http:
        response = await http.post(f"{baseline.url}/frames", json={"frames": frames})
        response.raise_for_status()
