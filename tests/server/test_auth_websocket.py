"""The WebSocket under ``--auth users``: refused without credentials or on a forged Host,
another user's conversation is unknown, and a socket ends the moment its user is removed or
its session logs out. A real server (uvicorn in a thread) and real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.server.auth_support import PASSWORDS, Team, make_team
from tests.support.live_server import LiveServer, live_server
from tests.support.ws_client import WAIT, viewer, ws_url
from webchat.auth.sockets import SIGNED_OUT

PROFILES = """
profiles:
  - slug: default
    step_settings: {api_type: offline, tokens_per_second: 0, answer_tokens: 20}
"""


@pytest.fixture
def team(tmp_path: Path) -> Team:
    return make_team(tmp_path)


@pytest.fixture
def server(tmp_path: Path, team: Team) -> Iterator[LiveServer]:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES)
    with live_server(db=":memory:", profiles=profiles, auth="users", users=team.path) as srv:
        yield srv


async def http_status(server: LiveServer, raw_request: bytes) -> bytes:
    """The status line the server answers a hand-written request with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(raw_request)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            return await reader.readline()
    finally:
        writer.close()


def handshake(host: str, origin: str, extra: str = "") -> bytes:
    return (
        "GET /ws?conv_id=c1 HTTP/1.1\r\n"
        f"Host: {host}\r\nOrigin: {origin}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


async def test_a_handshake_without_credentials_is_refused(server: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server.ws_url, conv_id="c1")):
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body) == {"error": "authentication required"}


async def test_a_forged_host_handshake_is_refused(server: LiveServer, team: Team) -> None:
    """DNS rebinding: the page's origin and the Host are both the attacker's name."""
    token = f"Authorization: Bearer {team.tokens['alice']}\r\n"
    forged = await http_status(server, handshake("evil.example", "http://evil.example", token))
    assert forged.startswith(b"HTTP/1.1 400"), forged
    genuine = await http_status(
        server, handshake(f"127.0.0.1:{server.port}", f"http://127.0.0.1:{server.port}", token)
    )
    assert genuine.startswith(b"HTTP/1.1 101"), genuine


async def test_another_users_conversation_cannot_be_joined_or_resumed(
    server: LiveServer, team: Team
) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=team.headers("alice")) as alice:
        started = await alice.post("/chat", json={"prompt": "hi", "conv_id": "alices"})
        assert started.status_code == 200
    for params in ({}, {"since": "0"}, {"since": "3"}):
        async with connect(
            ws_url(server.ws_url, conv_id="alices", **params),
            additional_headers=team.headers("bob"),
        ) as ws:
            message = json.loads(await ws.recv())
            assert message["event"] == {"type": "error", "error": "unknown conversation 'alices'"}
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    # her own socket resumes from the start; an admin may watch
    for who in ("alice", "root"):
        async with viewer(server.ws_url, "alices", headers=team.headers(who), since=0) as seen:
            event = await seen.read_until(lambda e: e["type"] == "run.finished")
            assert event["type"] == "run.finished"


async def test_a_new_id_joined_first_belongs_to_the_joiner(server: LiveServer, team: Team) -> None:
    async with viewer(server.ws_url, "bobs-new", headers=team.headers("bob")) as bob_view:
        async with httpx.AsyncClient(base_url=server.url, headers=team.headers("alice")) as alice:
            taken = await alice.post("/chat", json={"prompt": "mine?", "conv_id": "bobs-new"})
            assert taken.status_code == 404
        async with httpx.AsyncClient(base_url=server.url, headers=team.headers("bob")) as bob:
            run = await bob.post("/chat", json={"prompt": "mine", "conv_id": "bobs-new"})
            assert run.status_code == 200
        finished = await bob_view.read_until(lambda e: e["type"] == "run.finished")
        assert finished["inference_id"] == run.json()["inference_id"]
        assert not [f for f in bob_view.frames if "mine?" in json.dumps(f)]


async def test_removing_a_user_closes_their_sockets_at_once(server: LiveServer, team: Team) -> None:
    async with (
        viewer(server.ws_url, "bob-1", headers=team.headers("bob")) as bob_view,
        viewer(server.ws_url, "alice-1", headers=team.headers("alice")) as alice_view,
    ):
        team.users().remove("bob")
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(WAIT):
                await bob_view.ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == SIGNED_OUT
        # alice's socket stays open and answers a ping
        await alice_view.ws.send("ping")
        async with asyncio.timeout(WAIT):
            assert json.loads(await alice_view.ws.recv())["event"]["type"] == "ws.pong"
    with pytest.raises(InvalidStatus):
        async with connect(
            ws_url(server.ws_url, conv_id="bob-1"), additional_headers=team.headers("bob")
        ):
            pass


async def test_logging_out_closes_that_sessions_sockets(server: LiveServer) -> None:
    origin = {"Origin": server.url}
    async with httpx.AsyncClient(base_url=server.url) as browser:
        login = await browser.post(
            "/auth/login",
            json={"username": "alice", "password": PASSWORDS["alice"]},
            headers=origin,
        )
        assert login.status_code == 200
        cookie = {"Cookie": f"webchat_session={browser.cookies['webchat_session']}"}
        async with viewer(server.ws_url, "a-cookie", headers=cookie | origin) as seen:
            out = await browser.post("/auth/logout", headers=origin | {"X-Requested-With": "t"})
            assert out.json() == {"logged_out": True}
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(WAIT):
                    await seen.ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == SIGNED_OUT
        with pytest.raises(InvalidStatus):
            async with connect(
                ws_url(server.ws_url, conv_id="a-cookie"), additional_headers=cookie | origin
            ):
                pass
