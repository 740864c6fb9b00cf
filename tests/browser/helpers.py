"""Servers the browser tests run beside the app: a fake OpenAI endpoint in a thread, the app
in a thread serving a profiles file (``serve_profiles``), and ``webchat serve`` as a real
subprocess that can be stopped with SIGTERM and started again (``ServeProcess``)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from playwright.sync_api import expect

from tests.support.fake_openai import Scenario, make_app
from tests.support.live_server import LiveServer, live_server
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


def scripted_profiles(fake: FakeOpenAI) -> str:
    """Profiles YAML with one profile, ``scripted``, that the fake OpenAI server answers."""
    return (
        "profiles:\n  - slug: scripted\n    display_name: Scripted\n"
        f'    step_settings: {{api_type: openai, model: gpt-fake, base_url: "{fake.url}/v1",'
        " timeout: 5, max_retries: 0}\n"
    )


@contextlib.contextmanager
def serve_profiles(directory: Path, profiles_yaml: str, **settings: Any) -> Iterator[LiveServer]:
    """The app on a real socket serving ``profiles_yaml``, its SQLite file in ``directory``;
    ``settings``: more ``ServerSettings`` fields."""
    profiles = directory / "profiles.yaml"
    profiles.write_text(profiles_yaml)
    db = str(directory / "db.sqlite3")
    with live_server(db=db, profiles=str(profiles), **settings) as running:
        yield running


def open_app(page: Any, server: LiveServer, *, profiles: int, profile: str | None = None) -> None:
    """The chat page, once its ``profiles`` profiles are listed (and ``profile`` chosen)."""
    page.goto(server.url + "/")
    expect(page.locator("#profile option")).to_have_count(profiles)
    if profile is not None:
        page.locator("#profile").select_option(profile)


class ServeProcess:
    """``python -m webchat serve`` on a fixed port, so a restart comes back at the same URL;
    ``options``: more of its command line (a ``--root`` moves ``url`` under the prefix)."""

    @classmethod
    def in_directory(cls, directory: Path, profiles_yaml: str, *options: str) -> ServeProcess:
        """One serving ``profiles_yaml``, with its database and log in ``directory``."""
        profiles = directory / "profiles.yaml"
        profiles.write_text(profiles_yaml)
        return cls(
            db=directory / "chat.sqlite3",
            profiles=profiles,
            log=directory / "serve.log",
            options=options,
        )

    def __init__(
        self, *, db: Path, profiles: Path, log: Path, options: tuple[str, ...] = ()
    ) -> None:
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
            *options,
        ]
        if "--root" in options:  # the server's own URL (and /healthz) is under the prefix
            self.url += options[options.index("--root") + 1]
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


@contextlib.contextmanager
def running(process: ServeProcess) -> Iterator[ServeProcess]:
    """``process`` started, and killed at the end whatever happened."""
    try:
        process.start()  # a failed start may leave the process running: kill it too
        yield process
    finally:
        process.kill()
