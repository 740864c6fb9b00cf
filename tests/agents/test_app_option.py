"""Application code: ``webchat serve --app module:attr`` and ``create_app(settings, setup=...)``
register tools, middlewares and sink wrappers on the one EngineBuilder before profiles are
checked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.agents.conftest import ModuleWriter, of_type
from tests.server.conftest import AppClient
from tests.support.redis_server import free_port
from webchat.server import create_app
from webchat.settings import ServerSettings

SETUP = """
from webchat.tools import Tool

def shout(text: str) -> str:
    \"\"\"Upper-case the text.\"\"\"
    return text.upper() + "!"

SEEN = []

def setup(builder):
    builder.register_tool("shout", lambda: Tool(shout))
    builder.add_sink_wrapper(lambda conv_id, sink: sink)
    SEEN.append(builder)
"""

PROFILES = """
profiles:
  - slug: default
    tools: [shout]
    step_settings: {api_type: offline, tokens_per_second: 0}
"""


def write_profiles(tmp_path: Path) -> Path:
    path = tmp_path / f"profiles-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(textwrap.dedent(PROFILES))
    return path


async def shout_run(client: httpx.AsyncClient, conv_id: str) -> list[dict]:
    response = await client.post(
        "/chat/default", json={"prompt": 'use shout {"text": "hi"}', "conv_id": conv_id}
    )
    assert response.status_code == 200, response.text
    async with asyncio.timeout(15):
        while True:
            frames = (await client.get(f"/api/conversations/{conv_id}/timeline")).json()["frames"]
            if any(f["type"] == "run.finished" for f in frames):
                return frames
            await asyncio.sleep(0.02)


async def test_create_app_setup_registers_a_tool_a_profile_uses(
    write_module: ModuleWriter, tmp_path: Path
) -> None:
    module = write_module(SETUP)
    settings = ServerSettings(
        db=":memory:", profiles=write_profiles(tmp_path), app=f"{module}:setup"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AppClient(transport=transport, base_url="http://127.0.0.1") as client:
            frames = await shout_run(client, "app-1")
    results = of_type(frames, "tool.result")
    assert [r["result"] for r in results] == ["HI!"]
    assert sys.modules[module].SEEN  # the setup ran on the builder


async def test_create_app_takes_a_callable_and_mounts_inside_another_app(tmp_path: Path) -> None:
    from webchat.tools import Tool

    def whisper(text: str) -> str:
        """Lower-case the text."""
        return text.lower()

    def setup(builder) -> None:  # type: ignore[no-untyped-def]
        builder.register_tool("shout", lambda: Tool(whisper, name="shout"))

    inner = create_app(
        ServerSettings(db=":memory:", profiles=write_profiles(tmp_path)), setup=setup
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        async with inner.router.lifespan_context(inner):
            yield

    outer = FastAPI(lifespan=lifespan)

    @outer.get("/")
    async def home() -> dict[str, str]:
        return {"app": "outer"}

    outer.mount("/chat", inner)
    async with outer.router.lifespan_context(outer):
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1/chat"
        ) as client:
            frames = await shout_run(client, "app-2")
            assert (await client.get("/healthz")).status_code == 200
    assert [r["result"] for r in of_type(frames, "tool.result")] == ["hi"]


def test_a_setup_that_cannot_be_imported_or_called_fails_at_start(tmp_path: Path) -> None:
    profiles = write_profiles(tmp_path)
    with pytest.raises(ValueError, match="no_such_module_xyz:setup"):
        create_app(ServerSettings(db=":memory:", profiles=profiles, app="no_such_module_xyz:setup"))
    with pytest.raises(ValueError, match="os:sep"):
        create_app(ServerSettings(db=":memory:", profiles=profiles, app="os:sep"))


async def test_serve_with_app_flag(write_module: ModuleWriter, tmp_path: Path) -> None:
    module = write_module(SETUP)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBCHAT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "agent_modules"), *sys.path])
    args = [
        "-m", "webchat", "serve", "--port", str(port), "--db", ":memory:",
        "--profiles", str(write_profiles(tmp_path)), "--app", f"{module}:setup",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            async with asyncio.timeout(30):
                while process.returncode is None:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.05)
            assert process.returncode is None, "the server exited at start-up"
            frames = await shout_run(client, "app-3")
        assert [r["result"] for r in of_type(frames, "tool.result")] == ["HI!"]
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


def test_serve_refuses_an_app_it_cannot_import(tmp_path: Path) -> None:
    args = ["-m", "webchat", "serve", "--db", ":memory:", "--app", "no_such_module_xyz:setup"]
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "no_such_module_xyz:setup" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_profile_naming_a_tool_no_one_registered_fails_at_start(
    write_module: ModuleWriter, tmp_path: Path
) -> None:
    module = write_module("def setup(builder):\n    pass\n")
    settings = ServerSettings(
        db=":memory:", profiles=write_profiles(tmp_path), app=f"{module}:setup"
    )
    app = create_app(settings)

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(ValueError, match=r"profile 'default'.*shout"):
        asyncio.run(start())
