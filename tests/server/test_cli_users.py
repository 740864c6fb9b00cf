"""``webchat users ...`` run as an admin runs it (``python -m webchat`` in a child process),
checked against the file it writes; and ``webchat chat --token`` against a stand-in server
that records the credentials it is sent."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.server.auth_support import make_team
from tests.support.http_server import serve_app
from tests.support.live_server import live_server
from webchat.auth.users import UsersFile
from webchat.client import NEEDS_AUTH

PASSWORD = "s3cret pass"


def webchat(
    *args: str, stdin: str | None = "", env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m webchat`` with ``args`` and ``stdin`` piped in (so never a terminal);
    never inherits ``WEBCHAT_*`` settings."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("WEBCHAT_")}
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "webchat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env,
        check=False,
    )


def add(users: Path, name: str, *flags: str, password: str = PASSWORD) -> str:
    """``webchat users add``; returns the token it printed."""
    if "--no-password" not in flags:
        flags = ("--password-stdin", *flags)
    result = webchat("users", "add", name, "--users", str(users), *flags, stdin=password)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def seed(users: Path, name: str, *, admin: bool = False) -> str:
    """Add a user in-process with cheap argon2 parameters: set-up, not what is tested."""
    store = UsersFile(users, hasher=PasswordHasher(time_cost=1, memory_cost=8192))
    return store.add(name, PASSWORD, admin=admin)


def reread(users: Path) -> UsersFile:
    store = UsersFile(users)
    store.load()
    return store


# -- webchat users add / token / list / remove ---------------------------------------------


def test_add_prints_only_a_token_that_verifies_against_the_file(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    result = webchat(
        "users",
        "add",
        "alice",
        "--admin",
        "--users",
        str(users),
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == 1, "stdout is the token alone"
    token = result.stdout.strip()
    assert token.startswith("wct_")
    assert "alice" in result.stderr and token not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr

    store = reread(users)
    record = store.verify_token(token)
    assert record is not None and record.name == "alice" and record.role == "admin"
    assert store.verify_password("alice", PASSWORD) == record, "the newline is not the password"
    assert store.verify_password("alice", PASSWORD + "\n") is None


def test_token_prints_another_token_and_the_first_still_works(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    first = seed(users, "bob")
    result = webchat("users", "token", "bob", "--users", str(users))
    assert result.returncode == 0, result.stderr
    second = result.stdout.strip()
    assert second.startswith("wct_") and second != first
    store = reread(users)
    assert store.verify_token(first) == store.verify_token(second) == store.get("bob")
    assert store.get("bob").role == "user"  # type: ignore[union-attr]


def test_list_shows_names_and_roles_and_never_a_hash(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    alice = seed(users, "alice", admin=True)
    add(users, "robot", "--no-password")
    result = webchat("users", "list", "--users", str(users))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [row[:2] for row in rows] == [["alice", "admin"], ["robot", "user"]]
    assert "password=no" in result.stdout.splitlines()[1]
    records = reread(users).users()
    hashes = [r.password_hash for r in records if r.password_hash]
    hashes += [t.hash for r in records for t in r.tokens]
    assert len(hashes) == 3
    for secret in [*hashes, alice, "$argon2", PASSWORD]:
        assert secret not in result.stdout + result.stderr


def test_remove_ends_the_user_and_its_tokens(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    token = seed(users, "alice")
    seed(users, "bob")
    result = webchat("users", "remove", "alice", "--users", str(users))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    store = reread(users)
    assert store.get("alice") is None and store.verify_token(token) is None
    assert [u.name for u in store.users()] == ["bob"]


def test_the_users_file_comes_from_the_settings(tmp_path: Path) -> None:
    from_env = tmp_path / "env-users.yaml"
    result = webchat(
        "users",
        "add",
        "eve",
        "--password-stdin",
        stdin=PASSWORD,
        env={"WEBCHAT_USERS": str(from_env)},
    )
    assert result.returncode == 0, result.stderr
    assert reread(from_env).verify_token(result.stdout.strip()) is not None

    from_config = tmp_path / "config-users.yaml"
    config = tmp_path / "webchat.yaml"
    config.write_text(f"users: {from_config}\n", encoding="utf-8")
    result = webchat("users", "token", "eve", "--config", str(config))
    assert result.returncode == 2 and "no user 'eve'" in result.stderr, "another file"
    result = webchat("users", "add", "eve", "--config", str(config), "--no-password")
    assert result.returncode == 0, result.stderr
    assert reread(from_config).verify_token(result.stdout.strip()) is not None
    listing = webchat("users", "list", env={"WEBCHAT_USERS": str(from_config)})
    assert listing.stdout.split()[:2] == ["eve", "user"]


ERRORS = [
    ("existing", ["add", "alice", "--password-stdin"], PASSWORD, "already exists"),
    ("existing-case", ["add", "ALICE", "--password-stdin"], PASSWORD, "already exists"),
    ("bad-name", ["add", "no spaces", "--password-stdin"], PASSWORD, "invalid user name"),
    ("no-terminal", ["add", "bob"], "", "--password-stdin"),
    ("empty-stdin", ["add", "bob", "--password-stdin"], "", "no password"),
    ("both", ["add", "bob", "--password-stdin", "--no-password"], PASSWORD, "exclude"),
    ("remove-unknown", ["remove", "bob"], "", "no user 'bob'"),
    ("token-unknown", ["token", "bob"], "", "no user 'bob'"),
]


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_misuse_exits_2_with_a_message(
    tmp_path: Path, args: list[str], stdin: str, fragment: str
) -> None:
    users = tmp_path / "users.yaml"
    seed(users, "alice")
    before = users.read_bytes()
    result = webchat("users", *args, "--users", str(users), stdin=stdin)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error:"), result.stderr
    assert fragment in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert users.read_bytes() == before, "a refused command changes nothing"


def test_a_broken_users_file_exits_2_naming_it(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text("users: [unclosed\n", encoding="utf-8")
    for args in (["list"], ["add", "bob", "--no-password"], ["remove", "bob"]):
        result = webchat("users", *args, "--users", str(users))
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("error:") and str(users) in result.stderr
        assert "Traceback" not in result.stderr
    assert users.read_text(encoding="utf-8") == "users: [unclosed\n"


# -- webchat chat --token ------------------------------------------------------------------
# A stand-in for a server with --auth users (whose auth lives elsewhere): it records the
# Authorization header of the handshake and of the POST, and refuses as such a server does.

GOOD = "wct_goodgood_" + "s" * 43


@dataclass
class StandIn:
    url: str = ""
    handshakes: list[str | None] = field(default_factory=list)
    posts: list[str | None] = field(default_factory=list)
    sockets: list[WebSocket] = field(default_factory=list)


def stand_in_app(seen: StandIn) -> Starlette:
    async def ws(websocket: WebSocket) -> None:
        auth = websocket.headers.get("authorization")
        seen.handshakes.append(auth)
        if auth is None:  # no credentials at all: the handshake is refused
            await websocket.send_denial_response(
                JSONResponse({"error": "authentication required"}, status_code=401)
            )
            return
        await websocket.accept()
        if auth == "Bearer signed-out":  # a user removed while connected
            await websocket.send_text(json.dumps({"event": {"type": "error", "error": "bye"}}))
            await websocket.close(code=4401, reason="signed out")
            return
        await websocket.send_text(json.dumps({"event": {"type": "ws.hello", "engine": "x"}}))
        seen.sockets.append(websocket)
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    async def chat(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization")
        seen.posts.append(auth)
        if auth != f"Bearer {GOOD}":
            return JSONResponse({"error": "authentication required"}, status_code=401)
        body = await request.json()
        if body["conv_id"] == "theirs":
            return JSONResponse({"error": "no conversation theirs"}, status_code=404)
        for event in (
            {"type": "llm.delta", "delta": "hello there", "inference_id": "run-1"},
            {"type": "run.finished", "inference_id": "run-1"},
        ):
            await seen.sockets[-1].send_text(json.dumps({"event": event}))
        return JSONResponse({"inference_id": "run-1"})

    return Starlette(routes=[WebSocketRoute("/ws", ws), Route("/chat", chat, methods=["POST"])])


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    seen = StandIn()
    async with serve_app(stand_in_app(seen)) as url:
        seen.url = url
        yield seen


async def chat(stand_in: StandIn, *args: str, env: Mapping[str, str] | None = None) -> Any:
    return await asyncio.to_thread(
        webchat, "chat", "hi", "--url", stand_in.url, "--timeout", "10", *args, env=env
    )


async def test_chat_sends_the_token_on_the_handshake_and_the_post(stand_in: StandIn) -> None:
    result = await chat(stand_in, "--token", GOOD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello there" in result.stdout
    assert stand_in.handshakes == stand_in.posts == [f"Bearer {GOOD}"]


async def test_chat_takes_the_token_from_webchat_token(stand_in: StandIn) -> None:
    result = await chat(stand_in, env={"WEBCHAT_TOKEN": GOOD})
    assert result.returncode == 0, result.stdout + result.stderr
    assert stand_in.posts == [f"Bearer {GOOD}"]


async def test_chat_without_a_token_is_told_to_pass_one(stand_in: StandIn) -> None:
    result = await chat(stand_in)
    assert result.returncode == 1
    assert f"error: {NEEDS_AUTH}" in result.stderr
    assert stand_in.handshakes == [None] and stand_in.posts == []
    assert "Traceback" not in result.stderr


async def test_chat_with_a_refused_token_says_so(stand_in: StandIn) -> None:
    result = await chat(stand_in, "--token", "wct_stale")
    assert result.returncode == 1
    assert NEEDS_AUTH in result.stderr and "refused" in result.stderr
    assert stand_in.posts == ["Bearer wct_stale"]


async def test_chat_signed_out_on_the_socket_is_told_to_authenticate(stand_in: StandIn) -> None:
    result = await chat(stand_in, "--token", "signed-out")
    assert result.returncode == 1
    assert NEEDS_AUTH in result.stderr
    assert stand_in.posts == []


async def test_chat_on_someone_elses_conversation_keeps_the_servers_message(
    stand_in: StandIn,
) -> None:
    result = await chat(stand_in, "--token", GOOD, "--conv", "theirs")
    assert result.returncode == 1
    assert "404: no conversation theirs" in result.stderr


# -- end to end: webchat chat against a server run with --auth users -----------------------

OFFLINE = """
profiles:
  - slug: default
    step_settings: {api_type: offline, tokens_per_second: 0}
"""


def test_chat_against_auth_users_needs_the_users_own_token(tmp_path: Path) -> None:
    team = make_team(tmp_path)
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(OFFLINE, encoding="utf-8")
    with live_server(db=":memory:", profiles=profiles, auth="users", users=team.path) as server:
        args = ("chat", "hi", "--url", server.url, "--timeout", "10", "--conv", "alices")
        anonymous = webchat(*args)
        assert anonymous.returncode == 1
        assert "pass --token or set WEBCHAT_TOKEN" in anonymous.stderr
        assert "Traceback" not in anonymous.stderr

        alice = webchat(*args, "--token", team.tokens["alice"])
        assert alice.returncode == 0, alice.stdout + alice.stderr
        assert 'Offline reply to "hi"' in alice.stdout

        bob = webchat(*args, env={"WEBCHAT_TOKEN": team.tokens["bob"]})
        assert bob.returncode == 1
        assert "alices" in bob.stderr, "the server's own message: not bob's conversation"
        assert "Offline reply" not in bob.stdout
