"""What survives a restart: conversations, turns and the frame timeline in the SQLite file.

Servers here are real: uvicorn in a thread (``live_server``), or ``webchat serve`` in a child
process when the test is about how the process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed

from tests.support.client_view import assert_same_transcript
from tests.support.live_server import live_server
from tests.support.redis_server import free_port
from tests.support.ws_client import (
    WAIT,
    Viewer,
    start_run,
    terminal_frames,
    timeline,
    viewer,
)

PROFILES = """
profiles:
  - slug: default
    tools: [calculator]
    allow_overrides: true
    step_settings: {api_type: offline, tokens_per_second: 0, answer_tokens: 30}
  - slug: slow
    tools: [calculator]
    step_settings: {api_type: offline, tokens_per_second: 50, answer_tokens: 5000}
"""


# -- helpers -------------------------------------------------------------------------------


def write_profiles(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES, encoding="utf-8")
    return path


async def get_json(http: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def user_texts(turn: dict[str, Any]) -> list[str]:
    return [b["payload"]["text"] for b in turn["blocks"] if b["kind"] == "user"]


# -- 9. restart ----------------------------------------------------------------------------


async def test_conversation_survives_a_restart_and_continues(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.sqlite3")
    profiles = write_profiles(tmp_path)
    conv_id = f"persist-{uuid.uuid4().hex[:8]}"
    prompts = ["calc: 6*7", "what did I just ask?", "and one more thing"]

    with live_server(db=db, profiles=profiles) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
            viewer(server.ws_url, conv_id) as client,
        ):
            session_id = client.hello["session_id"]
            for prompt in prompts[:2]:
                run = await start_run(http, conv_id, prompt)
                assert (await client.read_run(run["inference_id"]))["type"] == "run.finished"
            before = await timeline(http, conv_id)
            before_info = await get_json(http, f"/api/conversations/{conv_id}")
        assert_same_transcript(before, client.frames)
        assert before[-1]["seq"] == client.last_seq
        assert len(before_info["turns"]) == 2

    with live_server(db=db, profiles=profiles) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
            listed = (await get_json(http, "/api/conversations"))["conversations"]
            (entry,) = [c for c in listed if c["conv_id"] == conv_id]
            assert entry["title"] == prompts[0]
            assert entry["running"] is False

            info = await get_json(http, f"/api/conversations/{conv_id}")
            assert info["session_id"] == session_id
            assert info["profile"] == "default"
            assert info["running"] is False
            assert info["last_seq"] == before[-1]["seq"]
            assert [t["id"] for t in info["turns"]] == [t["id"] for t in before_info["turns"]]
            assert [user_texts(t) for t in info["turns"]] == [prompts[:1], prompts[:2]]
            assert info["turns"][0]["blocks"][-1]["payload"]["text"] == "The result of 6*7 is 42."

            after = await timeline(http, conv_id)
            assert [(f["seq"], f["type"]) for f in after] == [(f["seq"], f["type"]) for f in before]
            assert after == before

            # A join with since=0 replays the stored frames, then continues live.
            async with viewer(server.ws_url, conv_id, since=0) as client:
                assert client.hello["session_id"] == session_id
                assert client.hello["last_seq"] == before[-1]["seq"]
                run = await start_run(http, conv_id, prompts[2])
                assert run["session_id"] == session_id
                end = await client.read_run(run["inference_id"])
            assert end["type"] == "run.finished"

            # The replay is the stored history, compacted the same way, then live frames.
            replayed, live = client.frames[: len(before)], client.frames[len(before) :]
            assert replayed == before
            assert live, "no live frames after the replay"
            assert all(f["inference_id"] == run["inference_id"] for f in live)
            assert live[0]["type"] == "chat.user_message"
            assert min(f["seq"] for f in live) > max(f["seq"] for f in before)
            ordinals = [f["seq"] for f in client.frames]
            assert all(a < b for a, b in itertools.pairwise(ordinals))

            info = await get_json(http, f"/api/conversations/{conv_id}")
            assert info["session_id"] == session_id
            assert len(info["turns"]) == 3
            assert user_texts(info["turns"][-1]) == prompts
            assert_same_transcript(await timeline(http, conv_id), client.frames)


# -- 10. shutdown mid-run ------------------------------------------------------------------


async def wait_healthy(url: str, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http, asyncio.timeout(30):
        while True:
            assert process.returncode is None, "webchat serve exited during start-up"
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)


async def drain(client: Viewer) -> int | None:
    """Keep reading until the server closes the connection; returns the close code."""
    try:
        while True:
            await client.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_sigterm_mid_run_exits_cleanly_and_records_the_cancel(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.sqlite3")
    profiles = write_profiles(tmp_path)
    port = free_port()
    conv_id = f"shutdown-{uuid.uuid4().hex[:8]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webchat",
        "serve",
        "--port",
        str(port),
        "--db",
        db,
        "--profiles",
        str(profiles),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, process)
        async with (
            httpx.AsyncClient(base_url=url, timeout=WAIT) as http,
            viewer(f"ws://127.0.0.1:{port}", conv_id, profile="slow") as client,
        ):
            run = await start_run(http, conv_id, "a very long answer please", profile="slow")
            await client.read_until(lambda _: client.count("llm.delta") >= 5)
            assert (await get_json(http, f"/api/conversations/{conv_id}"))["running"] is True

            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                # The client stays connected: the server must close it, not wait for it.
                close_code = await drain(client)
                stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = (stdout + stderr).decode(errors="replace")
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    # Every frame up to the run's terminal frame reached the client, then a restart close.
    assert terminal_frames(client.frames, run["inference_id"]) == ["run.cancelled"]
    assert close_code == 1012

    with live_server(db=db, profiles=profiles) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
            frames = await timeline(http, conv_id)
            assert terminal_frames(frames, run["inference_id"]) == ["run.cancelled"]
            assert frames[-1]["type"] == "run.cancelled"
            assert_same_transcript(client.frames, frames)

            info = await get_json(http, f"/api/conversations/{conv_id}")
            assert info["running"] is False
            (turn,) = info["turns"]
            assert user_texts(turn) == ["a very long answer please"]
            assert turn["metadata"].get("stop_reason") == "cancelled"
            listed = (await get_json(http, "/api/conversations"))["conversations"]
            assert [c["running"] for c in listed if c["conv_id"] == conv_id] == [False]
