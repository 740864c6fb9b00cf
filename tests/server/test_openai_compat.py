"""The OpenAI-compatible API, driven by the official ``openai`` SDK against a real uvicorn.

The offline engine answers ``calc: 6*7`` by calling the calculator tool and then saying
"The result of 6*7 is 42."; only a tool that really ran inside the run can put 42 in the
answer, and the answer must carry no ``tool_calls``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.scaleout.cluster import Cluster
from tests.server.auth_support import Team, make_team
from tests.server.conftest import PROFILES_YAML
from tests.support.live_server import LiveServer, live_server
from tests.support.ws_client import viewer

ANSWER = "Let me calculate that.\n\nThe result of 6*7 is 42."
PROFILES = (
    PROFILES_YAML
    + """
  - slug: tolerant
    tools: [calculator]
    openai_api: {client_tools: true}
    step_settings: {api_type: offline}
"""
)
CLIENT_TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES)
    return path


@pytest.fixture
def server(profiles: Path) -> Iterator[LiveServer]:
    with live_server(db=":memory:", profiles=profiles) as srv:
        yield srv


@pytest.fixture
def team(tmp_path: Path) -> Team:
    return make_team(tmp_path)


@pytest.fixture
def auth_server(profiles: Path, team: Team) -> Iterator[LiveServer]:
    with live_server(
        db=":memory:", profiles=profiles, auth="users", users=team.path, runs_per_minute=2
    ) as srv:
        yield srv


def sync_client(server: LiveServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def async_client(server: LiveServer, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_models_lists_every_profile_by_slug(server: LiveServer) -> None:
    with sync_client(server) as client:
        models = client.models.list()
        assert [m.id for m in models.data] == [
            "default",
            "slow",
            "queue",
            "interrupting",
            "locked",
            "gpt",
            "tolerant",
        ]
        assert {m.object for m in models.data} == {"model"}
        assert client.models.retrieve("gpt").id == "gpt"


def test_sync_completion_runs_the_server_side_tool(server: LiveServer) -> None:
    with sync_client(server) as client:
        completion = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "calc: 6*7"}]
        )
    assert completion.object == "chat.completion"
    assert completion.model == "default"
    choice = completion.choices[0]
    assert choice.message.content == ANSWER
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 10  # 4 words before the tool, 6 after
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_sync_stream_with_usage(server: LiveServer) -> None:
    with sync_client(server) as client:
        stream = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "calc: 6*7"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert all(not c.choices or c.choices[0].delta.tool_calls is None for c in chunks)
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishing[-1] == "stop" and set(finishing[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 10
    assert all(c.usage is None for c in chunks[:-1])


async def test_async_completion_uses_the_whole_transcript(server: LiveServer) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "calc: 6*7"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": [{"type": "text", "text": "what was my first question?"}]},
    ]
    async with async_client(server) as client:
        completion = await client.chat.completions.create(model="default", messages=messages)
        longer = await client.chat.completions.create(model="default", messages=[messages[-1]])
    content = completion.choices[0].message.content
    assert content is not None and content.startswith('Offline reply to "what was my first')
    assert completion.usage is not None and longer.usage is not None
    # The earlier messages reached the engine: its prompt counts their words too.
    assert completion.usage.prompt_tokens > longer.usage.prompt_tokens


async def test_async_stream_without_usage_and_nothing_is_kept(server: LiveServer) -> None:
    async with async_client(server) as client:
        stream = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "calc: 6*7"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER
    assert all(c.usage is None for c in chunks)
    async with httpx.AsyncClient(base_url=server.url) as http:
        listed = (await http.get("/api/conversations")).json()["conversations"]
    assert listed == []  # a call without X-Webchat-Conversation leaves no conversation


async def test_bound_call_shows_live_and_stays_in_history(server: LiveServer) -> None:
    async with viewer(server.ws_url, "api-bound") as watcher:
        async with async_client(server) as client:
            stream = await client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "calc: 6*7"}],
                stream=True,
                extra_headers={"X-Webchat-Conversation": "api-bound"},
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
        assert text == ANSWER
        finished = await watcher.read_until(lambda e: e["type"] == "run.finished")
        run = finished["inference_id"]
        assert [f["text"] for f in watcher.of(run, "chat.user_message")] == ["calc: 6*7"]
        assert [f["result"] for f in watcher.of(run, "tool.result")] == ["42"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        described = (await http.get("/api/conversations/api-bound")).json()
    assert len(described["turns"]) == 1


async def test_a_stateless_stream_left_early_is_cancelled_and_deleted(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        async with async_client(server) as client:
            stream = await client.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": "write a lot"}], stream=True
            )
            received = 0
            async for chunk in stream:
                received += bool(chunk.choices and chunk.choices[0].delta.content)
                if received == 3:
                    break
            running = (await http.get("/api/conversations")).json()["conversations"]
            assert [c["running"] for c in running] == [True]  # the 5000-word answer goes on
            await stream.close()
        # The server notices the closed connection, cancels the run and deletes it; only its
        # HTTP answers tell when (it runs in another thread), so ask until it is gone.
        async with asyncio.timeout(10):
            while (await http.get("/api/conversations")).json()["conversations"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


def test_client_tools_are_refused_unless_the_profile_accepts_them(server: LiveServer) -> None:
    with sync_client(server) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "calc: 6*7"}],
                tools=[CLIENT_TOOL],  # type: ignore[list-item]
            )
        body = refused.value.body
        assert isinstance(body, dict)
        assert body["type"] == "invalid_request_error" and body["param"] == "tools"
        accepted = client.chat.completions.create(
            model="tolerant",
            messages=[{"role": "user", "content": "calc: 6*7"}],
            tools=[CLIENT_TOOL],  # type: ignore[list-item]
        )
    assert accepted.choices[0].message.content == ANSWER
    assert accepted.choices[0].message.tool_calls is None


def test_bad_requests_are_400_in_openai_shape(server: LiveServer) -> None:
    with sync_client(server) as client:
        with pytest.raises(openai.BadRequestError) as unknown:
            client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "hi"}]
            )
        assert unknown.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as last_not_user:
            client.chat.completions.create(
                model="default", messages=[{"role": "assistant", "content": "hi"}]
            )
        assert "last message" in str(last_not_user.value.message)
        with pytest.raises(openai.BadRequestError) as image:
            client.chat.completions.create(
                model="default",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}
                        ],
                    }
                ],
            )
        assert image.value.param == "messages[0].content"
        with pytest.raises(openai.BadRequestError) as bad_header:
            client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"X-Webchat-Conversation": "no spaces allowed"},
            )
        assert bad_header.value.param == "X-Webchat-Conversation"
    raw = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 400
    assert raw.json() == {
        "error": {
            "message": "request body is not valid JSON",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    missing = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "default"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"


def test_a_failed_run_is_an_error(server: LiveServer) -> None:
    # The "gpt" profile's provider is unreachable: the run fails after it started.
    with sync_client(server) as client:
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(
                model="gpt", messages=[{"role": "user", "content": "hi"}]
            )
        assert failed.value.code == "run_failed"
        stream = client.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError) as mid_stream:
            list(stream)
        assert mid_stream.value.code == "run_failed"


def test_401_without_a_token_in_openai_shape(auth_server: LiveServer) -> None:
    with (
        sync_client(auth_server, key="wct_wrong") as client,
        pytest.raises(openai.AuthenticationError) as refused,
    ):
        client.models.list()
    body = refused.value.body
    assert isinstance(body, dict)
    assert body == {
        "message": "authentication required",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }
    bare = httpx.get(f"{auth_server.url}/v1/models")
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"


def test_404_for_another_users_conversation(auth_server: LiveServer, team: Team) -> None:
    headers = {"X-Webchat-Conversation": "alice-only"}
    with sync_client(auth_server, key=team.tokens["alice"]) as alice:
        mine = alice.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "calc: 6*7"}],
            extra_headers=headers,
        )
        assert mine.choices[0].message.content == ANSWER
    with sync_client(auth_server, key=team.tokens["bob"]) as bob:
        with pytest.raises(openai.NotFoundError) as hidden:
            bob.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers=headers,
            )
        assert hidden.value.code == "conversation_not_found"
        models = bob.models.list()  # a valid token is enough to list the models
        assert "default" in [m.id for m in models.data]


def test_429_when_the_quota_is_spent(auth_server: LiveServer, team: Team) -> None:
    with sync_client(auth_server, key=team.tokens["bob"]) as bob:
        for _ in range(2):  # runs_per_minute=2
            bob.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.RateLimitError) as limited:
            bob.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}]
            )
    error = limited.value
    assert error.code == "rate_limit_exceeded"
    assert int(error.response.headers["retry-after"]) >= 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("openai-cluster"))
    try:
        cluster.ensure_up()
        yield cluster
    finally:
        cluster.stop()


async def test_two_processes_on_redis(cluster: Cluster) -> None:
    """A call to one process shows live on the other; a stateless call leaves nothing in the
    shared store."""
    a, b = cluster.servers
    async with viewer(b.ws_url, "scaled") as watcher:
        client = openai.AsyncOpenAI(base_url=f"{a.url}/v1", api_key="unused", max_retries=0)
        async with client:
            completion = await client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "calc: 6*7"}],
                extra_headers={"X-Webchat-Conversation": "scaled"},
            )
            stateless = await client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "calc: 6*7"}]
            )
        assert completion.choices[0].message.content == ANSWER
        assert stateless.choices[0].message.content == ANSWER
        finished = await watcher.read_until(lambda e: e["type"] == "run.finished")
        assert [f["result"] for f in watcher.of(finished["inference_id"], "tool.result")] == ["42"]
    async with httpx.AsyncClient(base_url=b.url) as http:
        listed = (await http.get("/api/conversations")).json()["conversations"]
    assert [c["conv_id"] for c in listed] == ["scaled"]
