"""MCP servers as tool sources, against a real MCP server written with the same SDK.

``tests.support.mcp_math_server`` runs as a subprocess over stdio (started by the client, as a
profile would) and over streamable HTTP (started by the test on a free loopback port). Runs go
through the real app, with the offline engine's ``use <tool> <json>`` or a scripted
OpenAI-compatible server that asks for the tool the user names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.server.conftest import AppClient
from tests.support.fake_openai import chunk, text_events, tool_call_delta
from tests.support.http_server import serve_app
from tests.support.scripted import ScriptedEngine, call_tools, say
from webchat.conversation import EngineBuilder, fingerprint
from webchat.engines import RunContext
from webchat.events import CollectingSink
from webchat.profiles import Profile, ProfileRegistry
from webchat.server import create_app
from webchat.settings import ServerSettings
from webchat.tools import ToolError, ToolLoop, ToolLoopSettings, calculator_tool
from webchat.tools.mcp import (
    McpHttpServer,
    McpPool,
    McpPoolSettings,
    McpServers,
    McpStdioServer,
    McpToolRegistry,
    mcp_tool_name,
)
from webchat.transport import create_transport
from webchat.turns import Block, BlockKind, Turn

ROOT = Path(__file__).resolve().parents[2]
ENV_SECRET = "env-secret-7d41c9e0aa"
HEADER_SECRET = "Bearer header-secret-52be08f1"
FAST = McpPoolSettings(first_use_wait=30, backoff_initial=0.05, backoff_max=0.5)

SERVERS: TypeAdapter[list[McpStdioServer | McpHttpServer]] = TypeAdapter(McpServers)


def stdio_server(**extra: Any) -> dict[str, Any]:
    return {
        "name": "math",
        "command": sys.executable,
        "args": ["-m", "tests.support.mcp_math_server"],
        "cwd": str(ROOT),
        "env": {"MATH_SECRET": ENV_SECRET},
        **extra,
    }


def servers(*entries: dict[str, Any]) -> list[McpStdioServer | McpHttpServer]:
    return SERVERS.validate_python(list(entries))


async def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def mcp_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("mcp:")]


@contextlib.asynccontextmanager
async def open_pool(settings: McpPoolSettings = FAST) -> AsyncIterator[McpPool]:
    pool = McpPool(settings)
    try:
        yield pool
    finally:
        await pool.aclose()
    assert not mcp_tasks()


# -- a streamable HTTP server in a subprocess ------------------------------------------------


class HttpMathServer:
    """``mcp_math_server --http PORT``; killed and restarted on the same port by tests."""

    def __init__(self, required_auth: str | None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.required_auth = required_auth
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ}
        if self.required_auth:
            env["MATH_REQUIRED_AUTH"] = self.required_auth
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.mcp_math_server", "--http", str(self.port)],
            cwd=ROOT,
            env=env,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert self.process.poll() is None, "the MCP HTTP server exited"
                assert time.monotonic() < deadline, "the MCP HTTP server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def http_server() -> Iterator[HttpMathServer]:
    server = HttpMathServer(required_auth=HEADER_SECRET)
    server.start()
    try:
        yield server
    finally:
        server.kill()


# -- a scripted OpenAI-compatible provider -----------------------------------------------

USE = re.compile(r"use\s+(\S+)\s+(\{.*\})", re.DOTALL)


class ScriptedOpenAI:
    """Asks for the tool the user names (``use <tool> <json>``), then reports its result."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def completions(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            last = body["messages"][-1]
            if last["role"] == "tool":
                events = text_events([f"Tool said: {last['content']}"])
            elif match := USE.search(str(last.get("content", ""))):
                call_id = f"call_{len(self.requests)}"
                events = [
                    chunk({"role": "assistant", "content": None}),
                    tool_call_delta(0, call_id=call_id, name=match[1], arguments=match[2]),
                    chunk({}, "tool_calls"),
                ]
            else:
                events = text_events(["No tool needed."])

            async def stream() -> AsyncIterator[bytes]:
                for event in events:
                    yield f"data: {json.dumps(event)}\n\n".encode()
                yield b"data: [DONE]\n\n"

            return StreamingResponse(stream(), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@contextlib.asynccontextmanager
async def app_client(profiles: list[dict[str, Any]], tmp_path: Path) -> AsyncIterator[AppClient]:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump({"profiles": profiles}))
    app = create_app(ServerSettings(db=":memory:", profiles=path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AppClient(transport=transport, base_url="http://127.0.0.1") as client:
            client.app = app
            yield client


def mcp_pool_of(client: AppClient) -> McpPool:
    pool: McpPool = client.app.state.mcp
    return pool


async def run(client: AppClient, conv_id: str, prompt: str, profile: str) -> list[dict[str, Any]]:
    """One run to its end; the frames it added to the timeline."""
    before = await client.timeline(conv_id) if client.service.manager.find(conv_id) else []
    since = before[-1]["seq"] if before else 0
    response = await client.post(f"/chat/{profile}", json={"prompt": prompt, "conv_id": conv_id})
    assert response.status_code == 200, response.text
    async with asyncio.timeout(30):
        await client.run_to_end(conv_id)
    return await client.timeline(conv_id, since=since)


def openai_profile(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "slug": "mcp",
        "step_settings": {
            "api_type": "openai",
            "model": "gpt-fake",
            "base_url": f"{url}/v1",
            "api_key": "sk-test",
            "timeout": 20,
            "max_retries": 0,
        },
        **extra,
    }


# -- configuration ------------------------------------------------------------------------


def test_server_configs_are_stdio_or_http_and_validated() -> None:
    parsed = servers(
        {"name": "math", "command": "python3", "args": ["-m", "x"], "env": {"PORT": 8080}},
        {"name": "web", "url": "https://mcp.example.com/mcp", "headers": {"X-Key": "k"}},
    )
    assert isinstance(parsed[0], McpStdioServer) and isinstance(parsed[1], McpHttpServer)
    assert parsed[0].env["PORT"].get_secret_value() == "8080"  # YAML numbers become text
    assert "k" not in repr(parsed[1]) and "8080" not in repr(parsed[0])
    for bad in (
        {"name": "a__b", "command": "x"},  # the separator is reserved
        {"name": "has space", "command": "x"},
        {"name": "x" * 33, "command": "x"},
        {"name": "ok", "command": "x", "url": "http://h/mcp"},  # one transport only
        {"name": "ok", "url": "ftp://h/mcp"},
        {"name": "ok"},
    ):
        with pytest.raises(ValidationError):
            servers(bad)
    with pytest.raises(ValidationError, match="unique"):
        servers({"name": "m", "command": "a"}, {"name": "m", "command": "b"})
    with pytest.raises(ValidationError):
        Profile.model_validate({"slug": "p", "mcp_servers": [{"name": "m"}]})


def test_tool_names_are_valid_for_every_provider() -> None:
    assert mcp_tool_name("math", "add") == "math__add"
    assert mcp_tool_name("fs", "read.file/v2") == "fs__read_file_v2"
    long_a, long_b = mcp_tool_name("srv", "t" * 80 + "a"), mcp_tool_name("srv", "t" * 80 + "b")
    valid = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
    assert valid.match(long_a) and valid.match(long_b) and long_a != long_b


# -- listing and calls through the registry -----------------------------------------------


async def test_stdio_server_tools_are_listed_with_prefixes_and_the_allow_list() -> None:
    async with open_pool() as pool:
        everything = pool.registry([calculator_tool()], servers(stdio_server()))
        allowed = pool.registry([], servers(stdio_server(tools=["add", "echo"])))
        assert everything.names() == ["calculator"]  # nothing opened before first use
        await asyncio.gather(everything.prepare(), allowed.prepare())

        assert everything.names() == [
            "calculator", "math__add", "math__echo", "math__env_has", "math__grow",
            "math__pid", "math__sleep",
        ]  # fmt: skip
        assert allowed.names() == ["math__add", "math__echo"]
        assert len(pool.connections()) == 1  # one connection, shared, whatever the allow-list
        (add,) = [d for d in allowed.definitions() if d.name == "math__add"]
        assert add.description == "Add two integers."
        assert add.parameters["required"] == ["a", "b"]
        assert add.parameters["properties"]["a"]["type"] == "integer"
        assert "math__pid" not in allowed and allowed.get("math__pid") is None
        assert [d.name for d in everything.definitions(["calculator", "math__add"])] == [
            "calculator",
            "math__add",
        ]


async def test_calls_through_the_registry_reach_the_server() -> None:
    async with open_pool() as pool:
        registry = pool.registry([], servers(stdio_server()))
        await registry.prepare()
        add = registry.get("math__add")
        assert add is not None
        assert await add.call({"a": 2, "b": 3}) == "5"
        assert await add.call('{"a": 40, "b": 2}') == "42"  # arguments as the model sends them
        echo = registry.get("math__echo")
        assert echo is not None and await echo.call({"text": "héllo"}) == "héllo"
        env_has = registry.get("math__env_has")
        assert env_has is not None
        assert await env_has.call({"name": "MATH_SECRET"}) == "true"  # env reached the process
        assert await env_has.call({"name": "OPENAI_API_KEY"}) == "false"  # not inherited
        with pytest.raises(ToolError, match="validation error"):
            await add.call({"a": "two", "b": 3})  # the server validates, the model reads why
        with pytest.raises(ToolError, match="JSON object"):
            await add.call("[1, 2]")


async def test_http_server_with_headers(http_server: HttpMathServer) -> None:
    good = {"name": "web", "url": http_server.url, "headers": {"Authorization": HEADER_SECRET}}
    bad = {"name": "web", "url": http_server.url, "headers": {"Authorization": "Bearer nope"}}
    async with open_pool() as pool:
        registry = pool.registry([], servers(good))
        refused = pool.registry([], servers(bad))
        await asyncio.gather(registry.prepare(), refused.prepare())
        add, grow = registry.get("web__add"), registry.get("web__grow")
        assert add is not None and await add.call({"a": 20, "b": 22}) == "42"
        assert grow is not None and await grow.call({}) == "grown"
        await eventually(lambda: "web__multiply" in registry)  # list_changed over HTTP too
        assert len(pool.connections()) == 2  # another secret is another connection
        assert refused.names() == []  # 401: never connected, nothing offered
        (failing,) = [c for c in pool.connections() if not c.connected]
        assert failing.state in ("down", "connecting") and failing.generation == 0
        with pytest.raises(ToolError, match="unavailable"):
            await failing.call("add", {"a": 1, "b": 1})


async def test_the_tool_loop_timeout_applies_and_the_connection_survives_it() -> None:
    async with open_pool() as pool:
        registry = pool.registry([], servers(stdio_server()))
        await registry.prepare()
        engine = ScriptedEngine(
            call_tools(
                ("c1", "math__sleep", {"seconds": 30}), ("c2", "math__add", {"a": 1, "b": 1})
            ),
            say("done"),
        )
        loop = ToolLoop(engine.run_inference, registry, ToolLoopSettings(tool_timeout=0.5))
        ctx = RunContext(sinks=(CollectingSink(),), session_id="s", inference_id="i", turn_id="t")
        started = time.monotonic()
        turn = await loop.run(Turn(blocks=[Block.user("go")]), ctx)
        assert time.monotonic() - started < 10
        uses = [b.payload for b in turn.blocks if b.kind == BlockKind.TOOL_USE]
        assert "timed out after 0.5s" in uses[0]["error"]
        assert uses[1]["result"] == "2" and not uses[1].get("error")
        assert {d.name for d in engine.offered[0]} >= {"math__add", "math__sleep"}
        add = registry.get("math__add")
        assert add is not None and await add.call({"a": 2, "b": 2}) == "4"


# -- outages, reconnects, list_changed -----------------------------------------------------


async def test_a_killed_stdio_server_gives_tool_errors_then_comes_back() -> None:
    async with open_pool() as pool:
        registry = pool.registry([], servers(stdio_server()))
        await registry.prepare()
        (connection,) = pool.connections()
        pid_tool, add = registry.get("math__pid"), registry.get("math__add")
        assert pid_tool is not None and add is not None
        first_pid = int(await pid_tool.call({}))
        os.kill(first_pid, signal.SIGKILL)
        await eventually(lambda: not alive(first_pid))

        with pytest.raises(ToolError, match="MCP server 'math' is unavailable"):
            await add.call({"a": 1, "b": 2})
        assert "math__add" in registry.names()  # still offered during the outage

        await eventually(lambda: connection.generation == 2 and connection.connected)
        assert await add.call({"a": 1, "b": 2}) == "3"
        second_pid = int(await pid_tool.call({}))
        assert second_pid != first_pid and alive(second_pid)
    assert not alive(second_pid)


async def test_an_idle_server_that_died_is_noticed_by_the_heartbeat() -> None:
    async with open_pool(McpPoolSettings(heartbeat=0.2, backoff_initial=0.05)) as pool:
        registry = pool.registry([], servers(stdio_server()))
        await registry.prepare()
        (connection,) = pool.connections()
        pid_tool = registry.get("math__pid")
        assert pid_tool is not None
        os.kill(int(await pid_tool.call({})), signal.SIGKILL)
        await eventually(lambda: connection.generation == 2 and connection.connected)


async def test_a_killed_http_server_gives_tool_errors_then_comes_back(
    http_server: HttpMathServer,
) -> None:
    config = {"name": "web", "url": http_server.url, "headers": {"Authorization": HEADER_SECRET}}
    async with open_pool() as pool:
        registry = pool.registry([], servers(config))
        await registry.prepare()
        (connection,) = pool.connections()
        add = registry.get("web__add")
        assert add is not None and await add.call({"a": 1, "b": 1}) == "2"

        http_server.kill()
        with pytest.raises(ToolError, match="MCP server 'web' is unavailable"):
            await add.call({"a": 1, "b": 2})
        await eventually(lambda: not connection.connected)
        with pytest.raises(ToolError, match="unavailable"):
            await add.call({"a": 1, "b": 2})  # during the outage: at once, not after a wait

        http_server.start()
        await eventually(lambda: connection.generation == 2 and connection.connected)
        assert await add.call({"a": 1, "b": 2}) == "3"


async def test_list_changed_relists_the_tools() -> None:
    async with open_pool() as pool:
        registry = pool.registry([], servers(stdio_server()))
        await registry.prepare()
        (connection,) = pool.connections()
        listings = connection.listings
        assert "math__multiply" not in registry
        grow = registry.get("math__grow")
        assert grow is not None and await grow.call({}) == "grown"

        await eventually(lambda: "math__multiply" in registry)
        assert connection.listings == listings + 1 and connection.generation == 1
        multiply = registry.get("math__multiply")
        assert multiply is not None and await multiply.call({"a": 6, "b": 7}) == "42"
        # The next run offers it; a profile's allow-list still filters it.
        assert "math__multiply" in {d.name for d in registry.definitions()}
        limited = pool.registry([], servers(stdio_server(tools=["add"])))
        assert limited.names() == ["math__add"]


# -- whole runs through the app ------------------------------------------------------------


async def test_a_run_calls_an_mcp_tool_through_an_openai_compatible_provider(
    tmp_path: Path,
) -> None:
    provider = ScriptedOpenAI()
    async with serve_app(provider.app()) as url:
        profile = openai_profile(url, mcp_servers=[stdio_server(tools=["add", "echo"])])
        async with app_client([profile], tmp_path) as client:
            frames = await run(client, "c-mcp", 'use math__add {"a": 2, "b": 3}', "mcp")

    types = [f["type"] for f in frames]
    assert types[-1] == "run.finished", types
    (start,) = [f for f in frames if f["type"] == "tool.start"]
    (result,) = [f for f in frames if f["type"] == "tool.result"]
    assert start["name"] == "math__add" and start["input"] == {"a": 2, "b": 3}
    assert str(result["result"]) == "5" and not result.get("error")
    assert [f["text"] for f in frames if f["type"] == "llm.final"][-1] == "Tool said: 5"

    offered = {t["function"]["name"]: t["function"] for t in provider.requests[0]["tools"]}
    assert set(offered) == {"math__add", "math__echo"}
    assert offered["math__add"]["parameters"]["properties"]["b"]["type"] == "integer"
    assert provider.requests[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "5",
    }


async def test_killing_the_server_mid_conversation_errors_then_recovers(tmp_path: Path) -> None:
    profile = {"slug": "mcp", "mcp_servers": [stdio_server()]}
    async with app_client([profile], tmp_path) as client:
        frames = await run(client, "c-kill", "use math__pid {}", "mcp")
        (result,) = [f for f in frames if f["type"] == "tool.result"]
        pid = int(result["result"])
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: not alive(pid))

        frames = await run(client, "c-kill", 'use math__add {"a": 1, "b": 2}', "mcp")
        types = [f["type"] for f in frames]
        assert types[-1] == "run.finished", types  # a tool error, not a stuck or failed run
        (failed,) = [f for f in frames if f["type"] == "tool.result"]
        assert "MCP server 'math' is unavailable" in str(failed.get("error"))
        final = [f["text"] for f in frames if f["type"] == "llm.final"][-1]
        assert final.startswith("math__add failed:")

        (connection,) = mcp_pool_of(client).connections()
        await eventually(lambda: connection.connected)
        frames = await run(client, "c-kill", 'use math__add {"a": 1, "b": 2}', "mcp")
        (recovered,) = [f for f in frames if f["type"] == "tool.result"]
        assert str(recovered["result"]) == "3" and not recovered.get("error")
        assert [f["type"] for f in frames][-1] == "run.finished"


async def test_conversations_of_a_profile_share_one_connection(tmp_path: Path) -> None:
    profile = {"slug": "mcp", "mcp_servers": [stdio_server()]}
    async with app_client([profile], tmp_path) as client:
        pids = set()
        for conv_id in ("c-a", "c-b", "c-c"):
            frames = await run(client, conv_id, "use math__pid {}", "mcp")
            (result,) = [f for f in frames if f["type"] == "tool.result"]
            pids.add(result["result"])
        assert len(pids) == 1 and len(mcp_pool_of(client).connections()) == 1


async def test_secrets_never_reach_the_api_the_signature_or_the_logs(
    tmp_path: Path, http_server: HttpMathServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    web = {"name": "web", "url": http_server.url, "headers": {"Authorization": HEADER_SECRET}}
    profile = {"slug": "mcp", "mcp_servers": [stdio_server(), web]}
    async with app_client([profile], tmp_path) as client:
        listed = await client.get("/api/chat/profiles")
        frames = await run(client, "c-sec", 'use web__add {"a": 1, "b": 1}', "mcp")
        (result,) = [f for f in frames if f["type"] == "tool.result"]
        assert str(result["result"]) == "2"  # the header reached the server (else 401)
        frames = await run(client, "c-sec", 'use math__env_has {"name": "MATH_SECRET"}', "mcp")
        (result,) = [f for f in frames if f["type"] == "tool.result"]
        assert str(result["result"]) == "true"  # and the env reached the process
        described = await client.get("/api/conversations/c-sec")
        builder: EngineBuilder = client.service.builder
        signature = builder.signature(builder.build_config("mcp"))

    assert listed.status_code == 200
    assert listed.json()[0]["mcp_servers"] == ["math", "web"]
    secrets = (ENV_SECRET, HEADER_SECRET, HEADER_SECRET.split()[1])
    for text in (listed.text, described.text, signature, caplog.text):
        for secret in secrets:
            assert secret not in text
    signed = json.loads(signature)["mcp_servers"]
    assert signed[0]["env"] == {"MATH_SECRET": builder.fingerprint(ENV_SECRET)}
    assert signed[1]["headers"] == {"Authorization": builder.fingerprint(HEADER_SECRET)}
    assert described.json()["signature"]["mcp_servers"] == signed
    assert "MCP server 'web' connected" in caplog.text  # the logs did see the connections


def test_rotating_a_secret_changes_the_signature() -> None:
    key = b"k" * 32

    def signature(secret: str) -> str:
        profile = {"slug": "p", "mcp_servers": [stdio_server(env={"TOKEN": secret})]}
        profiles = ProfileRegistry([Profile.model_validate(profile)])
        builder = EngineBuilder(profiles, create_transport("memory"), fingerprint_key=key)
        return builder.signature(builder.build_config("p"))

    assert signature("one") == signature("one") != signature("two")
    assert json.loads(signature("one"))["mcp_servers"][0]["env"] == {
        "TOKEN": fingerprint("one", key)
    }
    assert "one" not in signature("one").replace("hmac-sha256:", "")


def test_requests_cannot_override_mcp_servers() -> None:
    profiles = ProfileRegistry([Profile(slug="p", allow_overrides=True)])
    builder = EngineBuilder(profiles, create_transport("memory"))
    with pytest.raises(Exception, match="mcp_servers"):
        builder.build_config("p", {"mcp_servers": [stdio_server()]})


# -- shutdown -------------------------------------------------------------------------------


async def test_shutdown_closes_every_connection_process_and_task(
    tmp_path: Path, http_server: HttpMathServer
) -> None:
    tasks_before = set(asyncio.all_tasks())
    web = {"name": "web", "url": http_server.url, "headers": {"Authorization": HEADER_SECRET}}
    profile = {"slug": "mcp", "mcp_servers": [stdio_server(), web]}
    async with app_client([profile], tmp_path) as client:
        frames = await run(client, "c-end", "use math__pid {}", "mcp")
        (result,) = [f for f in frames if f["type"] == "tool.result"]
        pid = int(result["result"])
        pool = mcp_pool_of(client)
        connections = pool.connections()
        assert [c.state for c in connections] == ["connected", "connected"]
        assert alive(pid) and len(mcp_tasks()) == 2

    assert [c.state for c in connections] == ["closed", "closed"]
    assert not alive(pid)
    assert not mcp_tasks()
    leftover = {t for t in asyncio.all_tasks() - tasks_before if t is not asyncio.current_task()}
    assert not leftover, leftover
    with pytest.raises(RuntimeError, match="closed"):
        pool.connection(servers(stdio_server())[0])


async def test_closing_a_pool_while_a_server_is_unreachable_is_prompt() -> None:
    unreachable = {"name": "gone", "url": "http://127.0.0.1:9/mcp"}
    pool = McpPool(McpPoolSettings(first_use_wait=5, backoff_initial=0.05))
    registry = pool.registry([], servers(unreachable))
    await registry.prepare()
    (connection,) = pool.connections()
    assert not connection.connected and connection.last_error
    started = time.monotonic()
    await pool.aclose()
    assert time.monotonic() - started < 2 and connection.state == "closed"
    assert not mcp_tasks()


# -- the example profile, through the offline engine ---------------------------------------


async def test_the_example_profile_runs_its_stdio_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The example says ``python3``; make that the interpreter running this suite.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(ROOT)

    example = ROOT / "examples" / "mcp_profile.yaml"
    profiles = yaml.safe_load(example.read_text())["profiles"]
    (profile,) = ProfileRegistry.from_file(example).all()
    assert [s.name for s in profile.mcp_servers] == ["math"]
    async with app_client(profiles, tmp_path) as client:
        frames = await run(client, "c-ex", 'use math__add {"a": 2, "b": 3}', profile.slug)
        offered = await _offered(client, "c-ex")
    (result,) = [f for f in frames if f["type"] == "tool.result"]
    assert str(result["result"]) == "5"
    assert [f["text"] for f in frames if f["type"] == "llm.final"][-1] == "math__add returned 5"
    assert [f["type"] for f in frames][-1] == "run.finished"
    assert offered == ["math__add", "math__echo"]  # the example's allow-list


async def _offered(client: AppClient, conv_id: str) -> list[str]:
    engine = client.service.manager.get(conv_id).engine
    registry = engine.loop.registry
    assert isinstance(registry, McpToolRegistry)
    return registry.names()
