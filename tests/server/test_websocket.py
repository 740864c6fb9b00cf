"""The WebSocket surface end to end: a real server (uvicorn in a thread) and real clients.

Every wait is for a specific frame under ``asyncio.timeout``; nothing sleeps hoping a race
went one way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.typing import Origin

from tests.support.client_view import ClientView, assert_same_transcript
from tests.support.live_server import LiveServer, live_server
from tests.support.ws_client import (
    WAIT,
    assert_strictly_increasing,
    recv_event,
    seqs,
    start_run,
    terminal_frames,
    timeline,
    viewer,
    wait_not_running,
    ws_url,
)
from webchat.server.ws import MAX_MESSAGE_BYTES

SLOW_ANSWER_WORDS = 150

PROFILES = f"""
profiles:
  - slug: default
    tools: [calculator]
    allow_overrides: true
    step_settings: {{api_type: offline, tokens_per_second: 0, answer_tokens: 40}}
  - slug: slow
    display_name: Slow
    tools: [calculator]
    allow_overrides: true
    step_settings:
      api_type: offline
      tokens_per_second: 100
      answer_tokens: {SLOW_ANSWER_WORDS}
  - slug: other
    step_settings: {{api_type: offline}}
"""

ALLOWED_ORIGIN = "http://app.example"


# -- helpers -------------------------------------------------------------------------------


def new_conv() -> str:
    return f"ws-{uuid.uuid4().hex[:12]}"


def assert_deltas_match_finals(frames: list[dict[str, Any]]) -> dict[str, str]:
    """For each message id: the deltas concatenate to its ``llm.final`` text.

    Also checks that each delta carries only its own text (no text so far: the wire format is
    linear in the answer's length) and that the message started before streaming.
    Returns the final text of each message id.
    """
    streamed: dict[str, str] = {}
    finals: dict[str, str] = {}
    started: set[str] = set()
    for frame in frames:
        message_id = frame.get("id")
        if frame["type"] == "llm.start":
            started.add(message_id)
        elif frame["type"] == "llm.delta":
            assert message_id in started, f"delta before llm.start: {frame}"
            assert message_id not in finals, f"delta after llm.final: {frame}"
            streamed[message_id] = streamed.get(message_id, "") + frame["delta"]
            assert "cumulative" not in frame, frame
        elif frame["type"] == "llm.final":
            assert message_id not in finals, f"two finals for {message_id}"
            finals[message_id] = frame["text"]
    assert finals, "no llm.final frame"
    for message_id, text in finals.items():
        assert streamed.get(message_id, "") == text, f"message {message_id}"
    return finals


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def assert_no_errors_logged(records: list[logging.LogRecord]) -> None:
    bad = [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [f"{r.name} {r.levelname}: {r.getMessage()}" for r in bad]


async def closing_frames(ws: ClientConnection) -> tuple[list[dict[str, Any]], Close]:
    """Every event until the server closes the connection, and the close frame it sent."""
    events = []
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(WAIT):
            while True:
                events.append(await recv_event(ws))
    assert closed.value.rcvd is not None, "the server did not send a close frame"
    return events, closed.value.rcvd


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("ws")
    profiles = root / "profiles.yaml"
    profiles.write_text(PROFILES, encoding="utf-8")
    with live_server(
        db=str(root / "chat.sqlite3"),
        profiles=Path(profiles),
        allowed_origins=[ALLOWED_ORIGIN],
    ) as running:
        yield running


@pytest.fixture
def server_log() -> Iterator[list[logging.LogRecord]]:
    """What the server logs during the test (uvicorn's loggers do not propagate to the root)."""
    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
        yield client


# -- 1. hello, then the live frames of a run -----------------------------------------------


async def test_hello_then_the_live_frames_of_a_tool_run(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    conv_id = new_conv()
    async with viewer(server.ws_url, conv_id) as client:
        hello = client.hello
        assert hello["conv_id"] == conv_id
        assert hello["profile"] == "default"
        assert hello["last_seq"] == 0
        assert hello["running"] is False
        assert hello["engine"] == "offline"
        assert hello["session_id"]

        run = await start_run(http, conv_id, "calc: 6*7")
        assert run["conv_id"] == conv_id
        assert run["session_id"] == hello["session_id"]
        await client.read_run(run["inference_id"])

    frames = client.frames
    types = [f["type"] for f in frames]
    assert types[:3] == ["chat.user_message", "run.started", "llm.start"], types
    assert frames[0]["text"] == "calc: 6*7"
    assert types[-1] == "run.finished", types
    assert terminal_frames(frames, run["inference_id"]) == ["run.finished"]
    assert not [t for t in types if t in ("error", "run.failed", "run.cancelled")]

    assert_strictly_increasing(frames)
    assert frames[0]["seq"] > hello["last_seq"]
    for frame in frames:
        assert frame["conv_id"] == conv_id
        assert frame["session_id"] == hello["session_id"]
        assert frame["inference_id"] == run["inference_id"]

    # Two model calls around one calculator call, in order.
    assert types.count("llm.start") == 2
    assert types.count("llm.final") == 2
    assert types.count("llm.delta") >= 2
    (tool_start,) = [f for f in frames if f["type"] == "tool.start"]
    (tool_result,) = [f for f in frames if f["type"] == "tool.result"]
    (tool_done,) = [f for f in frames if f["type"] == "tool.done"]
    assert tool_start["name"] == "calculator"
    assert tool_start["input"] == {"expression": "6*7"}
    assert str(tool_result["result"]) == "42"
    assert not tool_result.get("error")
    assert tool_start["id"] == tool_result["id"] == tool_done["id"]
    assert tool_start["seq"] < tool_result["seq"] < tool_done["seq"]
    second_start = [f for f in frames if f["type"] == "llm.start"][1]
    assert tool_done["seq"] < second_start["seq"]

    finals = assert_deltas_match_finals(frames)
    last_final = [f for f in frames if f["type"] == "llm.final"][-1]
    assert finals[last_final["id"]] == "The result of 6*7 is 42."


# -- 2. ping -------------------------------------------------------------------------------


async def test_ping_text_and_json_ping_both_get_pong(server: LiveServer) -> None:
    async with viewer(server.ws_url, new_conv()) as client:
        await client.ws.send("ping")
        async with asyncio.timeout(WAIT):
            assert (await client.recv())["type"] == "ws.pong"
        # Anything else is ignored, and does not end the connection.
        await client.ws.send("not a command")
        await client.ws.send(json.dumps({"type": "ws.ping"}))
        async with asyncio.timeout(WAIT):
            assert (await client.recv())["type"] == "ws.pong"
        assert [f["type"] for f in client.frames] == ["ws.pong", "ws.pong"]


# -- 3. bad join parameters ----------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"conv_id": ""},
        {"conv_id": "../x"},
        {"conv_id": "a" * 200},
        {"conv_id": "ok-conv", "since": "-1"},
        {"conv_id": "ok-conv", "since": "\u0663"},  # ARABIC-INDIC DIGIT THREE: not a seq
        {"conv_id": "ok-conv", "since": "9" * 5000},  # past int()'s 4300-digit limit
        {"conv_id": "ok-conv", "profile": "\u043f\u0440\u043e\u0444\u0438\u043b\u044c" * 30},
    ],
    ids=[
        "missing",
        "empty",
        "path",
        "too-long",
        "bad-since",
        "non-ascii-since",
        "huge-since",
        "long-non-ascii-profile",
    ],
)
async def test_bad_join_parameters_get_an_error_frame_then_close_1008(
    server: LiveServer, server_log: list[logging.LogRecord], query: dict[str, str]
) -> None:
    async with connect(ws_url(server.ws_url, **query)) as ws:
        async with asyncio.timeout(WAIT):
            event = await recv_event(ws)
            assert event["type"] == "error", event
            assert event["error"]
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert_no_errors_logged(server_log)


# -- 3b. what a client may send ------------------------------------------------------------


async def test_a_binary_message_gets_an_error_frame_then_close_1003(
    server: LiveServer, server_log: list[logging.LogRecord]
) -> None:
    async with viewer(server.ws_url, new_conv()) as client:
        await client.ws.send(b"\x00\x01 not text")
        events, close = await closing_frames(client.ws)
    assert [e["type"] for e in events] == ["error"]
    assert "binary" in events[0]["error"]
    assert close.code == 1003
    assert_no_errors_logged(server_log)


async def test_invalid_utf8_closes_1007_without_a_traceback(
    server: LiveServer, server_log: list[logging.LogRecord]
) -> None:
    async with viewer(server.ws_url, new_conv()) as client:
        async with client.ws.send_context():  # a text frame no conforming client would send
            client.ws.protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe not utf-8"))
        _, close = await closing_frames(client.ws)
    assert close.code == 1007
    assert_no_errors_logged(server_log)
    assert any("not UTF-8" in r.getMessage() for r in server_log)


async def test_a_message_over_64_kib_closes_1009(
    server: LiveServer, server_log: list[logging.LogRecord]
) -> None:
    async with viewer(server.ws_url, new_conv()) as client:
        # Up to the limit is read (and ignored: it is not a ping) ...
        await client.ws.send("x" * MAX_MESSAGE_BYTES)
        await client.ws.send("[" * MAX_MESSAGE_BYTES)  # deeper than the JSON parser goes
        await client.ws.send("ping")
        async with asyncio.timeout(WAIT):
            assert (await client.recv())["type"] == "ws.pong"
        # ... one byte more is not (counted in UTF-8 bytes, not characters).
        await client.ws.send("\u00e9" * (MAX_MESSAGE_BYTES // 2) + "x")
        events, close = await closing_frames(client.ws)
    # The server (like `webchat serve`) refuses it while reading: close 1009, nothing else.
    assert events == []
    assert close.code == 1009
    assert_no_errors_logged(server_log)


# -- 4. origin check -----------------------------------------------------------------------


async def test_handshake_origin_must_be_same_host_or_allowed(server: LiveServer) -> None:
    url = ws_url(server.ws_url, conv_id=new_conv())
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin=Origin("http://evil.example")):
            pass
    assert refused.value.response.status_code == 403

    # A host that merely starts like the server's is refused too.
    with pytest.raises(InvalidStatus):
        async with connect(url, origin=Origin(f"http://127.0.0.1.evil.example:{server.port}")):
            pass

    for origin in (f"http://127.0.0.1:{server.port}", ALLOWED_ORIGIN):
        async with connect(url, origin=Origin(origin)) as ws:
            async with asyncio.timeout(WAIT):
                assert (await recv_event(ws))["type"] == "ws.hello", origin


# -- 5. profile selection ------------------------------------------------------------------


async def test_profile_from_query_then_cookie_then_default(server: LiveServer) -> None:
    cookie = {"Cookie": "chat_profile=slow"}
    async with viewer(server.ws_url, new_conv(), profile="slow") as client:
        assert client.hello["profile"] == "slow"
    async with viewer(server.ws_url, new_conv(), headers=cookie) as client:
        assert client.hello["profile"] == "slow"
    async with viewer(server.ws_url, new_conv(), headers=cookie, profile="other") as client:
        assert client.hello["profile"] == "other"
    async with viewer(server.ws_url, new_conv()) as client:
        assert client.hello["profile"] == "default"


async def test_unknown_profile_gets_an_error_frame_then_close(server: LiveServer) -> None:
    async with connect(ws_url(server.ws_url, conv_id=new_conv(), profile="nope")) as ws:
        async with asyncio.timeout(WAIT):
            event = await recv_event(ws)
            assert event["type"] == "error", event
            assert "nope" in event["error"]
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


# -- 6. resume -----------------------------------------------------------------------------


async def test_reconnect_with_since_resumes_without_gap_or_duplicate(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    conv_id = new_conv()
    async with viewer(server.ws_url, conv_id, profile="slow") as first:
        run = await start_run(http, conv_id, "tell me a long story", profile="slow")
        await first.read_deltas(10)
    # The run was still streaming when the first connection went away.
    assert terminal_frames(first.frames, run["inference_id"]) == []
    seen = first.last_seq

    info = await wait_not_running(http, conv_id)
    assert info["last_seq"] > seen

    async with viewer(server.ws_url, conv_id, since=seen) as second:
        assert second.hello["running"] is False
        end = await second.read_run(run["inference_id"])
    assert end["type"] == "run.finished"
    assert all(f["seq"] > seen for f in second.frames)
    # The rest comes compacted: the answer ended, so its final stands for its deltas.
    assert second.count("llm.delta") == 0 and second.count("llm.final") == 1

    union = first.frames + second.frames
    stored = await timeline(http, conv_id)
    assert len(set(seqs(union))) == len(union)
    assert_strictly_increasing(union)
    assert terminal_frames(union, run["inference_id"]) == ["run.finished"]
    # The client shows exactly what a client that saw everything live shows.
    assert ClientView().apply_all(union).shows() == ClientView().apply_all(stored).shows()
    (final,) = [f for f in union if f["type"] == "llm.final"]
    assert len(final["text"].split()) == SLOW_ANSWER_WORDS
    streamed = "".join(f["delta"] for f in first.frames if f["type"] == "llm.delta")
    assert final["text"].startswith(streamed)


async def test_joining_mid_run_with_since_zero_gets_the_whole_transcript_once(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    conv_id = new_conv()
    async with viewer(server.ws_url, conv_id, profile="slow") as watcher:
        run = await start_run(http, conv_id, "another long story", profile="slow")
        await watcher.read_deltas(10)
        async with viewer(server.ws_url, conv_id, since=0) as late:
            assert late.hello["running"] is True
            assert late.hello["inference_id"] == run["inference_id"]
            assert late.hello["last_seq"] >= watcher.last_seq
            await late.read_run(run["inference_id"])
        await watcher.read_run(run["inference_id"])

    stored = await timeline(http, conv_id)
    assert len(set(seqs(late.frames))) == len(late.frames)
    assert_strictly_increasing(late.frames)
    # The late joiner got the message so far compacted, then the rest live: it shows what
    # the watcher (every frame live) and the stored history show.
    assert_same_transcript(late.frames, watcher.frames, stored)
    assert late.last_seq == watcher.last_seq == stored[-1]["seq"]
    assert [f["type"] for f in late.frames][:2] == ["chat.user_message", "run.started"]
    assert terminal_frames(late.frames, run["inference_id"]) == ["run.finished"]
    assert_deltas_match_finals(watcher.frames)


# -- 7. every client sees the same frames --------------------------------------------------


async def test_two_clients_of_one_conversation_receive_identical_frames(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    conv_id = new_conv()
    async with viewer(server.ws_url, conv_id) as one, viewer(server.ws_url, conv_id) as two:
        assert one.hello["session_id"] == two.hello["session_id"]
        run = await start_run(http, conv_id, "calc: 6*7")
        await asyncio.gather(one.read_run(run["inference_id"]), two.read_run(run["inference_id"]))
    assert len(one.frames) > 20
    assert_strictly_increasing(one.frames)
    assert_strictly_increasing(two.frames)
    # A client that falls behind gets deltas folded, so the frames may differ; what they
    # show, and where they resume, may not.
    assert_same_transcript(one.frames, two.frames, await timeline(http, conv_id))
    assert one.last_seq == two.last_seq


async def test_a_new_run_can_start_as_soon_as_run_finished_arrives(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    """What a browser does: the send button comes back with ``run.finished``."""
    conv_id = new_conv()
    async with viewer(server.ws_url, conv_id) as client:
        for prompt in ("first question", "second question", "calc: 1+1"):
            run = await start_run(http, conv_id, prompt)
            assert (await client.read_run(run["inference_id"]))["type"] == "run.finished"
    assert [f["text"] for f in client.frames if f["type"] == "chat.user_message"] == [
        "first question",
        "second question",
        "calc: 1+1",
    ]
    assert_strictly_increasing(client.frames)


# -- 8. leaving does not cancel ------------------------------------------------------------


async def test_disconnecting_every_client_does_not_cancel_the_run(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    conv_id = new_conv()
    async with (
        viewer(server.ws_url, conv_id, profile="slow") as one,
        viewer(server.ws_url, conv_id) as two,
    ):
        run = await start_run(http, conv_id, "keep going without me", profile="slow")
        await asyncio.gather(one.read_deltas(3), two.read_deltas(3))
    assert terminal_frames(one.frames + two.frames, run["inference_id"]) == []

    await wait_not_running(http, conv_id, no_clients=True)
    # The end is there for whoever comes back.
    async with viewer(server.ws_url, conv_id, since=one.last_seq) as back:
        end = await back.read_run(run["inference_id"])
    assert end["type"] == "run.finished"

    stored = await timeline(http, conv_id)
    assert terminal_frames(stored, run["inference_id"]) == ["run.finished"]
    (final,) = [f for f in stored if f["type"] == "llm.final"]
    assert len(final["text"].split()) == SLOW_ANSWER_WORDS
    assert_same_transcript(one.frames + back.frames, stored)
    (turn,) = (await http.get(f"/api/conversations/{conv_id}")).json()["turns"]
    assert turn["metadata"].get("stop_reason") == "stop"
    assert not turn["metadata"].get("error")


async def test_a_silent_socket_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    with live_server(db=":memory:", idle_timeout=0.3) as quiet:
        async with viewer(quiet.ws_url, new_conv()) as client:
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(WAIT):
                    await client.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "idle timeout")


async def test_publish_to_client_latency_and_queue_depth_are_measured_for_frames_sent(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    conv_id = new_conv()
    async with viewer(server.ws_url, conv_id) as client:
        run = await start_run(http, conv_id, "calc: 6*7")
        await client.read_run(run["inference_id"])
    assert len(client.frames) >= 16, "a sample is one frame in 16"
    text = (await http.get("/metrics")).text
    (family,) = [
        f
        for f in text_string_to_metric_families(text)
        if f.name == "webchat_delivery_latency_seconds"
    ]
    counts = [s.value for s in family.samples if s.name.endswith("_count")]
    assert counts and counts[0] >= 1
    # Frames are stamped with their publish millisecond: on loopback they arrive within 5 s.
    total = next(s.value for s in family.samples if s.name.endswith("_sum"))
    assert 0 <= total / counts[0] < 5
    (depth,) = [
        f for f in text_string_to_metric_families(text) if f.name == "webchat_ws_send_queue_depth"
    ]
    assert next(s.value for s in depth.samples if s.name.endswith("_count")) >= 1
