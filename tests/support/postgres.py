"""Run a real PostgreSQL server (Debian's ``postgresql`` binaries) for tests.

The store contract and the scale-out tests talk to the same server production uses, so
transactions, ``ON CONFLICT``, full-text search and concurrent claims behave as deployed. The
binaries are required: a missing one is an error, never a skip.

PostgreSQL refuses to run as root, and CI runs as root: then ``initdb`` and ``postgres`` run
as ``nobody`` (through ``subprocess``'s ``user=``/``group=``), in a data directory that user
owns. The server listens on a free loopback port (and a unix socket in its own directory),
trusts local connections (a throw-away cluster: there is no password to leak), and trades
durability for speed (``fsync=off``): a test cluster never survives a crash anyway.

Each test gets its own database (``PostgresServer.create_database``), so tests never see each
other's rows and no cleanup is needed between them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import free_port

START_TIMEOUT = 30.0
SUPERUSER = "webchat"
UNPRIVILEGED_USER = "nobody"


def postgres_bin_dir() -> Path:
    """Where ``initdb``/``postgres`` live: ``POSTGRES_BIN_DIR``, the PATH, or Debian's
    ``/usr/lib/postgresql/<version>/bin`` (newest version first)."""
    if configured := os.environ.get("POSTGRES_BIN_DIR"):
        return Path(configured)
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
        reverse=True,
    )
    if not candidates:
        raise RuntimeError(
            "PostgreSQL binaries not found (initdb, postgres) on PATH or under "
            "/usr/lib/postgresql/*/bin (set POSTGRES_BIN_DIR or install Debian's `postgresql` "
            "package); the Postgres store tests need a real server"
        )
    return Path(candidates[0]).parent


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root (PostgreSQL refuses it); none otherwise."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(UNPRIVILEGED_USER)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


class PostgresServer:
    """One throw-away PostgreSQL cluster: ``initdb`` into a temporary directory, then the
    ``postgres`` server on a free loopback port until ``cleanup``."""

    def __init__(self) -> None:
        self.bin_dir = postgres_bin_dir()
        # Not under pytest's tmp_path: that is root's 0700 directory, which ``nobody`` could
        # not enter. mkdtemp makes it 0700 too, but it is then handed to the server's user.
        self.directory = Path(tempfile.mkdtemp(prefix="webchat-pg-"))
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.log_path = self.directory / "postgres.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._as = _run_as()
        if self._as:
            os.chown(self.directory, self._as["user"], self._as["group"])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _binary(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise RuntimeError(f"{path} not found (PostgreSQL binaries in {self.bin_dir})")
        return str(path)

    def _as_server_user(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(args, capture_output=True, check=False, **self._as, **kwargs)

    def init(self) -> None:
        args = [
            self._binary("initdb"),
            "--pgdata", str(self.data_dir),
            "--username", SUPERUSER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--no-locale",
            "--no-sync",
        ]  # fmt: skip
        done = self._as_server_user(args, cwd=self.directory)
        if done.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({done.returncode}):\n{done.stdout.decode(errors='replace')}"
                f"\n{done.stderr.decode(errors='replace')}"
            )
        self.socket_dir.mkdir()
        if self._as:
            os.chown(self.socket_dir, self._as["user"], self._as["group"])

    def start(self) -> None:
        """Start the server and wait until it accepts connections (``pg_isready``)."""
        if self.running:
            return
        if not self.data_dir.exists():
            self.init()
        for attempt in range(3):  # a free port may be taken before the server binds it
            if attempt or not self.port:  # a restart comes back on its port first
                self.port = free_port()
            if self._spawn():
                return
        raise RuntimeError(f"postgres did not start; log:\n{self.log_tail()}")

    def _spawn(self) -> bool:
        args = [
            self._binary("postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-h", "127.0.0.1",
            "-k", str(self.socket_dir),
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]  # fmt: skip
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, **self._as
            )
        finally:
            os.close(log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            ready = subprocess.run(
                [self._binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, then exit)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        args = [
            self._binary("createdb"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--username", SUPERUSER,
            "--template", "template0",
            name,
        ]  # fmt: skip
        done = subprocess.run(args, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"createdb failed: {done.stderr.decode(errors='replace')}")
        return self.url(name)


def start_postgres_server() -> PostgresServer:
    server = PostgresServer()
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres_server()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh database of the session's server, for this test alone."""
    if not postgres_server.running:  # a failed test may have stopped it
        postgres_server.start()
    return postgres_server.create_database()
