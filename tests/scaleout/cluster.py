"""Two ``webchat serve --transport redis`` processes sharing one real ``redis-server``.

Everything here is a real process: the servers are started with ``python -m webchat serve``
exactly as an operator would start them behind a load balancer, and the Redis server is this
package's own (``start_redis_server``), so stopping it disturbs no other test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.redis_server import RedisServer, free_port, start_redis_server

START_DEADLINE = 30.0

PROFILES = """
profiles:
  - slug: default
    tools: [calculator]
    allow_overrides: true
    step_settings: {api_type: offline, tokens_per_second: 0, answer_tokens: 30}
  - slug: slow
    tools: [calculator]
    step_settings: {api_type: offline, tokens_per_second: 40, answer_tokens: 400}
  - slug: stress
    step_settings: {api_type: offline, tokens_per_second: 400, answer_tokens: 120}
  - slug: queue
    busy_policy: enqueue
    step_settings: {api_type: offline, tokens_per_second: 200, answer_tokens: 20}
"""


class ServerProcess:
    """One ``webchat serve`` child process; its output goes to ``log_path``."""

    def __init__(
        self,
        name: str,
        redis_url: str,
        profiles: Path,
        directory: Path,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.extra_args = extra_args
        self.redis_url = redis_url
        self.profiles = profiles
        self.directory = directory
        self.log_path = directory / f"server-{name}.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Start the process (on a fresh port); ``wait_healthy`` waits until it serves."""
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEBCHAT_")}
        args = [
            sys.executable, "-m", "webchat", "serve",
            "--transport", "redis",
            "--redis-url", self.redis_url,
            "--port", str(self.port),
            "--db", ":memory:",
            "--profiles", str(self.profiles),
            "--log-level", "info",
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {self.name} starting on port {self.port}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, env=env
            )

    def wait_healthy(self, deadline: float) -> None:
        with httpx.Client(base_url=self.url, timeout=2) as http:
            while True:
                if not self.running:
                    raise RuntimeError(
                        f"server {self.name} exited during start-up:\n{self.log_tail()}"
                    )
                try:
                    if http.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server {self.name} not healthy in {START_DEADLINE}s:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to release anything."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def new_output(self) -> str:
        """What the process wrote since the last call (for a failing test's report)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        new, self._log_offset = text[self._log_offset :], len(text)
        return new


class Cluster:
    """One Redis server and two webchat processes, ``a`` and ``b``, sharing it."""

    def __init__(self, directory: Path, extra_args: tuple[str, ...] = ()) -> None:
        """``extra_args``: more ``webchat serve`` options for both processes."""
        self.directory = directory
        self.profiles = directory / "profiles.yaml"
        self.profiles.write_text(PROFILES, encoding="utf-8")
        # A fixed port, so a restarted Redis comes back where the servers look for it.
        self.redis: RedisServer = start_redis_server(free_port())
        self.a = ServerProcess("a", self.redis.url, self.profiles, directory, extra_args)
        self.b = ServerProcess("b", self.redis.url, self.profiles, directory, extra_args)

    @property
    def servers(self) -> tuple[ServerProcess, ServerProcess]:
        return self.a, self.b

    def ensure_up(self) -> None:
        """Redis and both servers running (a previous test may have stopped one)."""
        if not self.redis.running:
            self.redis.start()
        down = [s for s in self.servers if not s.running]
        for server in down:
            server.spawn()
        deadline = time.monotonic() + START_DEADLINE
        for server in down:
            server.wait_healthy(deadline)

    def stop(self) -> None:
        for server in self.servers:
            server.terminate()
        self.redis.cleanup()
