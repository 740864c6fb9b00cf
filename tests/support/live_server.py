"""Run the real app under uvicorn in a background thread, for tests that need a real socket
(browsers, WebSocket clients, the CLI)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from webchat.server import create_app
from webchat.server.ws import MAX_MESSAGE_BYTES
from webchat.settings import ServerSettings


class LiveServer:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", settings.port))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{settings.root}"
        self.ws_url = f"ws://127.0.0.1:{self.port}{settings.root}"
        config = uvicorn.Config(
            create_app(settings),
            log_level="warning",
            timeout_graceful_shutdown=5,
            ws_max_size=MAX_MESSAGE_BYTES,  # as `webchat serve` runs it
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the webchat server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


@contextlib.contextmanager
def live_server(**settings: Any) -> Iterator[LiveServer]:
    """``settings`` are ``ServerSettings`` fields; port 0 picks a free port."""
    settings.setdefault("port", 0)
    server = LiveServer(ServerSettings(**settings)).start()
    try:
        yield server
    finally:
        server.stop()
