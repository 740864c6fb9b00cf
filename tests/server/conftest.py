"""An in-process app (lifespan run, ASGI transport) and helpers to follow its runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from webchat.chat.service import ChatService
from webchat.server import create_app
from webchat.settings import ServerSettings

PROFILES_YAML = """
profiles:
  - slug: default
    display_name: Default
    default_prompt: You are a helpful assistant.
    allow_overrides: true
    overridable_settings: [temperature]
    tools: [calculator]
    step_settings: {api_type: offline}
  - slug: slow
    allow_overrides: true
    step_settings: {api_type: offline, tokens_per_second: 200, answer_tokens: 5000}
  - slug: queue
    busy_policy: enqueue
    step_settings: {api_type: offline, tokens_per_second: 200, answer_tokens: 40}
  - slug: interrupting
    busy_policy: interrupt
    step_settings: {api_type: offline, tokens_per_second: 200, answer_tokens: 5000}
  - slug: locked
    default_prompt: Fixed.
  - slug: gpt
    step_settings: {api_type: openai, model: gpt-test, base_url: "http://127.0.0.1:9/v1",
                    timeout: 2, max_retries: 0}
"""


class AppClient(httpx.AsyncClient):
    app: FastAPI

    @property
    def service(self) -> ChatService:
        service: ChatService = self.app.state.service
        return service

    async def run_to_end(self, conv_id: str) -> None:
        """Wait until the conversation's current run is over and its last frame dispatched."""
        conversation = self.service.manager.get(conv_id)
        while (active := conversation.session.active) is not None:
            with contextlib.suppress(Exception):
                await active.wait()
            async with asyncio.timeout(10):
                await conversation.wait_for_end_frame(active.inference_id)

    async def timeline(self, conv_id: str, since: int = 0) -> list[dict[str, Any]]:
        response = await self.get(f"/api/conversations/{conv_id}/timeline", params={"since": since})
        assert response.status_code == 200, response.text
        frames: list[dict[str, Any]] = response.json()["frames"]
        return frames


ClientFactory = Callable[..., contextlib.AbstractAsyncContextManager[AppClient]]


@pytest.fixture
def profiles_file(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES_YAML)
    return path


@pytest.fixture
def make_client(profiles_file: Path) -> ClientFactory:
    @contextlib.asynccontextmanager
    async def factory(**settings: Any) -> AsyncIterator[AppClient]:
        settings.setdefault("db", ":memory:")
        settings.setdefault("profiles", profiles_file)
        app = create_app(ServerSettings(**settings))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with AppClient(transport=transport, base_url="http://127.0.0.1") as client:
                client.app = app
                yield client

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[AppClient]:
    async with make_client() as client:
        yield client
