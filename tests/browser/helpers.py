"""Servers the browser tests run beside the app: a fake OpenAI endpoint in a thread, and
``webchat serve`` as a real subprocess that can be stopped with SIGTERM and started again."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from tests.support.fake_openai import Scenario, make_app
from tests.support.redis_server import free_port

START_TIMEOUT_S = 30.0


class FakeOpenAI:
    """``tests.support.fake_openai`` on a real socket, served from a background thread (the
    Playwright sync API owns the test's own thread). Tests change ``scenario`` between runs."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            make_app(scenario), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class ServeProcess:
    """``python -m webchat serve`` on a fixed port, so a restart comes back at the same URL."""

    def __init__(self, *, db: Path, profiles: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            "webchat",
            "serve",
            "--port",
            str(self.port),
            "--db",
            str(db),
            "--profiles",
            str(profiles),
        ]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None, "already running"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=2) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"webchat serve exited during start-up:\n{self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/healthz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"webchat serve did not start:\n{self.output()}")
                time.sleep(0.05)

    def terminate(self) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        assert self.process is not None, "not running"
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
