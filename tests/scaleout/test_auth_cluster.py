"""Two processes on one Redis enforce one ownership: a conversation alice made on ``a`` is
unknown to bob on ``b``, through every route and the WebSocket; a log-out on one process
holds on the other; the per-user run quota is counted across both."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.scaleout.cluster import Cluster
from tests.server.auth_support import PASSWORDS, Team, make_team
from tests.support.ws_client import WAIT, viewer, ws_url


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Team:
    return make_team(tmp_path_factory.mktemp("team"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, team: Team) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("auth-cluster")
    config = directory / "webchat.yaml"
    config.write_text("runs_per_minute: 3\n")
    options = ("--auth", "users", "--users", str(team.path), "--config", str(config))
    cluster = Cluster(directory, extra_args=options)
    try:
        cluster.ensure_up()
        yield cluster
    finally:
        cluster.stop()


def client(url: str, team: Team, who: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers=team.headers(who), timeout=WAIT)


async def test_ownership_holds_across_processes(cluster: Cluster, team: Team) -> None:
    a, b = cluster.a, cluster.b
    async with client(a.url, team, "alice") as alice_a, client(b.url, team, "bob") as bob_b:
        started = await alice_a.post("/chat", json={"prompt": "hi", "conv_id": "x-alice"})
        assert started.status_code == 200, started.text
        for response in [
            await bob_b.get("/api/conversations/x-alice"),
            await bob_b.get("/api/conversations/x-alice/timeline"),
            await bob_b.post("/api/conversations/x-alice/cancel"),
            await bob_b.post("/chat", json={"prompt": "in", "conv_id": "x-alice"}),
        ]:
            assert response.status_code == 404, response.text
        listed = (await bob_b.get("/api/conversations")).json()["conversations"]
        assert "x-alice" not in {c["conv_id"] for c in listed}
        async with connect(
            ws_url(b.ws_url, conv_id="x-alice", since="0"), additional_headers=team.headers("bob")
        ) as ws:
            assert json.loads(await ws.recv())["event"]["type"] == "error"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
    # alice reads her conversation on b; the admin lists it there too
    async with viewer(b.ws_url, "x-alice", headers=team.headers("alice"), since=0) as seen:
        await seen.read_until(lambda e: e["type"] == "run.finished")
    async with client(b.url, team, "root") as root_b:
        async with asyncio.timeout(WAIT):
            while True:  # a's record reaches the shared store when the run has ended
                listed = (await root_b.get("/api/conversations")).json()["conversations"]
                if "x-alice" in {c["conv_id"] for c in listed}:
                    break
                await asyncio.sleep(0.05)


async def test_a_logout_on_one_process_holds_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    async with httpx.AsyncClient(base_url=a.url) as browser:
        login = await browser.post(
            "/auth/login",
            json={"username": "bob", "password": PASSWORDS["bob"]},
            headers={"Origin": a.url},
        )
        assert login.status_code == 200, login.text
        cookie = {"Cookie": f"webchat_session={browser.cookies['webchat_session']}"}
        async with httpx.AsyncClient(base_url=b.url, headers=cookie) as on_b:
            assert (await on_b.get("/auth/me")).json()["name"] == "bob"  # one secret for both
            out = await browser.post(
                "/auth/logout", headers={"Origin": a.url, "X-Requested-With": "t"}
            )
            assert out.json() == {"logged_out": True}
            assert (await on_b.get("/auth/me")).status_code == 401


async def test_the_run_quota_is_counted_across_processes(cluster: Cluster, team: Team) -> None:
    a, b = cluster.a, cluster.b
    codes = []
    async with client(a.url, team, "root") as on_a, client(b.url, team, "root") as on_b:
        for n, http in enumerate([on_a, on_b, on_a, on_b]):
            response = await http.post("/chat", json={"prompt": "q", "conv_id": f"quota-{n}"})
            codes.append(response.status_code)
    assert codes == [200, 200, 200, 429]
