"""Run a real ``redis-server`` on a loopback port for tests.

Transport tests talk to the same server binary production uses, so blocking reads, trimming
and dropped connections behave exactly as they will in deployment. The binary is required:
a missing binary is an error, never a skip, so a green run always means Redis was exercised.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

START_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the server may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not binary:
        raise RuntimeError(
            "redis-server binary not found on PATH (set REDIS_SERVER_BIN or install it, "
            "e.g. `apt-get install -y redis-server`); the transport tests need a real Redis"
        )
    return binary


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server on ``port`` answers PING (raw RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process, by default without persistence; ``restart`` keeps the port.

    Without persistence a restarted server is empty: exactly what a client sees when a
    cache-only Redis is replaced. With ``persistent`` it comes back with every write.
    """

    def __init__(self, port: int | None = None, directory: Path | None = None) -> None:
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self._owned_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="webchat-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path = self.directory / "redis.log"
        self.persistent = False
        """Write an append-only file (fsync on every write) in ``directory``, so a restart
        keeps the data; takes effect at the next start."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until it answers PING; raises with its log otherwise."""
        if self.running:
            return
        binary = redis_server_binary()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()  # the random port was taken meanwhile
            if self._spawn(binary, timeout):
                return
        raise RuntimeError(
            f"redis-server did not answer PING on 127.0.0.1:{self.port} within {timeout}s; "
            f"log:\n{self._log_tail()}"
        )

    def _spawn(self, binary: str, timeout: float) -> bool:
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            if ping(self.port):
                return True
            time.sleep(0.01)
        self.stop()
        return False

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL to simulate a crash) and wait for it to exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._owned_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def start_redis_server(port: int | None = None) -> RedisServer:
    """Start a fresh server (random free port unless given); call ``cleanup()`` when done."""
    server = RedisServer(port)
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server
