"""Only a run makes a conversation history: joins of unknown ids store, list and keep nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import httpx

from tests.support.live_server import live_server
from tests.support.ws_client import start_run, viewer

WAIT = 15.0


async def in_memory(http: httpx.AsyncClient) -> int:
    response = await http.get("/metrics")
    for line in response.text.splitlines():
        if line.startswith("webchat_conversations "):
            return int(float(line.split()[1]))
    raise AssertionError("no webchat_conversations metric")


async def wait_in_memory(http: httpx.AsyncClient, count: int) -> None:
    async with asyncio.timeout(WAIT):
        while await in_memory(http) != count:  # noqa: ASYNC110 (another process: poll)
            await asyncio.sleep(0.02)


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as connection:
        return {row[0] for row in connection.execute("SELECT conv_id FROM conversations")}


async def test_joins_that_never_run_are_not_stored_listed_or_kept(tmp_path: Path) -> None:
    db = tmp_path / "chat.sqlite3"
    joined = [f"join-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    ran = f"ran-{uuid.uuid4().hex[:8]}"
    with live_server(db=str(db)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
            for conv_id in joined:
                async with viewer(server.ws_url, conv_id) as client:
                    assert client.hello["conv_id"] == conv_id
                    listed = (await http.get("/api/conversations")).json()["conversations"]
                    assert conv_id not in {c["conv_id"] for c in listed}
            await wait_in_memory(http, 0)  # each went away with its only client
            for conv_id in joined:
                assert (await http.get(f"/api/conversations/{conv_id}")).status_code == 404

            async with viewer(server.ws_url, ran) as client:
                run = await start_run(http, ran, "calc: 2+2")
                await client.read_run(run["inference_id"])
            listed = (await http.get("/api/conversations")).json()["conversations"]
            assert [c["conv_id"] for c in listed] == [ran]
            assert await in_memory(http) == 1  # history stays (until the idle sweep)
            assert (await http.get(f"/api/conversations/{joined[0]}/timeline")).status_code == 404
    assert stored_ids(db) == {ran}
