"""Agent modules written by the tests, and the real app serving profiles that name them."""

from __future__ import annotations

import contextlib
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import AppClient
from webchat.conversation.frames import StreamEnvelopes
from webchat.server import create_app
from webchat.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

ModuleWriter = Callable[[str], str]
AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[AppClient]]


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleWriter]:
    """Write Python source as a fresh, importable module; returns its (unique) name."""
    folder = tmp_path / "agent_modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"agent_mod_{uuid.uuid4().hex[:10]}"
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.fixture
def make_app(tmp_path: Path) -> AppFactory:
    """An in-process app (lifespan run) serving the given profiles YAML."""

    @contextlib.asynccontextmanager
    async def factory(profiles_yaml: str, **settings: Any) -> AsyncIterator[AppClient]:
        path = tmp_path / f"profiles-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(textwrap.dedent(profiles_yaml))
        app = create_app(ServerSettings(db=":memory:", profiles=path, **settings))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with AppClient(transport=transport, base_url="http://127.0.0.1") as client:
                client.app = app
                yield client

    return factory


async def run_prompt(
    client: AppClient, conv_id: str, prompt: str, profile: str = "agent", **body: Any
) -> tuple[str, list[dict[str, Any]]]:
    """Start a run, wait for its end; returns its inference id and its frames."""
    response = await client.post(
        f"/chat/{profile}", json={"prompt": prompt, "conv_id": conv_id, **body}
    )
    assert response.status_code == 200, response.text
    inference_id: str = response.json()["inference_id"]
    await client.run_to_end(conv_id)
    # Every frame as clients got it live (the timeline is compacted: no deltas of an ended
    # stream), short deltas with their stream's envelope.
    envelopes = StreamEnvelopes()
    buffered = [envelopes.fill(f.event()) for f in client.service.manager.get(conv_id).buffer]
    frames = [f for f in buffered if f.get("inference_id") == inference_id]
    return inference_id, frames


def of_type(frames: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] in types]


def final_texts(frames: list[dict[str, Any]]) -> list[str]:
    return [f["text"] for f in of_type(frames, "llm.final")]
