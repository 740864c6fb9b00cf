"""Every conversation belongs to someone: with ``--auth users``, alice and bob each chat, and
neither can see, post into, or cancel the other's conversation through any HTTP route."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.auth_support import PASSWORDS, Team
from tests.server.conftest import AppClient, ClientFactory
from webchat.server import create_app
from webchat.settings import ServerSettings, SettingsError

pytest_plugins = ["tests.server.auth_support"]  # the team and users_client fixtures


async def chat(
    client: AppClient, team: Team, who: str, conv_id: str, **extra: Any
) -> httpx.Response:
    return await client.post(
        "/chat", json={"prompt": "hello", "conv_id": conv_id, **extra}, headers=team.headers(who)
    )


async def test_anonymous_requests_get_401_and_the_ui_redirects_to_login(
    users_client: AppClient,
) -> None:
    for method, path in [
        ("GET", "/api/conversations"),
        ("GET", "/api/conversations/c1"),
        ("GET", "/api/conversations/c1/timeline"),
        ("POST", "/api/conversations/c1/cancel"),
        ("GET", "/api/chat/profiles"),
    ]:
        response = await users_client.request(method, path)
        assert response.status_code == 401, (path, response.text)
        assert response.json() == {"error": "authentication required"}
    response = await users_client.post("/chat", json={"prompt": "hi"})
    assert response.status_code == 401
    page = await users_client.get("/")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/"
    assert (await users_client.get("/healthz")).status_code == 200
    assert (await users_client.get("/login")).status_code == 200


async def test_a_bad_token_is_401(users_client: AppClient) -> None:
    response = await users_client.get(
        "/api/conversations", headers={"Authorization": "Bearer wct_nothing_here"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_nobody_reaches_another_users_conversation(
    users_client: AppClient, team: Team
) -> None:
    started = await chat(users_client, team, "alice", "alice-1")
    assert started.status_code == 200, started.text
    await users_client.run_to_end("alice-1")
    bob = team.headers("bob")
    unknown = {"error": "unknown conversation 'alice-1'"}
    for response in [
        await users_client.get("/api/conversations/alice-1", headers=bob),
        await users_client.get("/api/conversations/alice-1/timeline", headers=bob),
        await users_client.post("/api/conversations/alice-1/cancel", headers=bob),
        await chat(users_client, team, "bob", "alice-1"),
        await users_client.post(
            "/chat/default", json={"prompt": "x", "conv_id": "alice-1"}, headers=bob
        ),
    ]:
        assert response.status_code == 404, response.text
        assert response.json() == unknown  # the same answer as for an id nobody used
    missing = await users_client.get("/api/conversations/nobody-uses-this", headers=bob)
    assert missing.status_code == 404

    # alice still has it to herself, untouched by bob's attempts
    alice = team.headers("alice")
    described = await users_client.get("/api/conversations/alice-1", headers=alice)
    assert described.status_code == 200
    assert len(described.json()["turns"]) == 1
    timeline = await users_client.get("/api/conversations/alice-1/timeline", headers=alice)
    assert timeline.status_code == 200 and timeline.json()["frames"]


async def test_each_list_holds_only_its_owners_conversations_and_admins_see_all(
    users_client: AppClient, team: Team
) -> None:
    for who, conv_id in [("alice", "a-1"), ("bob", "b-1"), ("alice", "a-2")]:
        assert (await chat(users_client, team, who, conv_id)).status_code == 200
        await users_client.run_to_end(conv_id)

    async def listed(who: str) -> set[str]:
        response = await users_client.get("/api/conversations", headers=team.headers(who))
        assert response.status_code == 200
        return {c["conv_id"] for c in response.json()["conversations"]}

    assert await listed("alice") == {"a-1", "a-2"}
    assert await listed("bob") == {"b-1"}
    assert await listed("root") == {"a-1", "a-2", "b-1"}
    owners = {
        c["conv_id"]: c["owner"]
        for c in (
            await users_client.get("/api/conversations", headers=team.headers("root"))
        ).json()["conversations"]
    }
    assert owners == {"a-1": "alice", "a-2": "alice", "b-1": "bob"}


async def test_admins_read_every_conversation_but_do_not_post_or_cancel_in_others(
    users_client: AppClient, team: Team
) -> None:
    assert (await chat(users_client, team, "alice", "a-1")).status_code == 200
    await users_client.run_to_end("a-1")
    root = team.headers("root")
    assert (await users_client.get("/api/conversations/a-1", headers=root)).status_code == 200
    assert (
        await users_client.get("/api/conversations/a-1/timeline", headers=root)
    ).status_code == 200
    posted = await chat(users_client, team, "root", "a-1")
    assert posted.status_code == 403
    assert "admins may read" in posted.json()["error"]
    cancelled = await users_client.post("/api/conversations/a-1/cancel", headers=root)
    assert cancelled.status_code == 403
    turns = (await users_client.get("/api/conversations/a-1", headers=root)).json()["turns"]
    assert len(turns) == 1  # nothing was posted


async def test_a_new_conversation_id_belongs_to_whoever_uses_it_first(
    users_client: AppClient, team: Team
) -> None:
    first = await chat(users_client, team, "bob", "shared-name")
    assert first.status_code == 200
    await users_client.run_to_end("shared-name")
    assert (await chat(users_client, team, "alice", "shared-name")).status_code == 404
    # without a conv_id each run gets a fresh conversation of its own
    fresh = await users_client.post("/chat", json={"prompt": "hi"}, headers=team.headers("alice"))
    assert fresh.status_code == 200
    conv_id = fresh.json()["conv_id"]
    await users_client.run_to_end(conv_id)
    assert (
        await users_client.get(f"/api/conversations/{conv_id}", headers=team.headers("bob"))
    ).status_code == 404


async def test_idempotency_keys_are_per_user(users_client: AppClient, team: Team) -> None:
    body = {"prompt": "hello", "conv_id": "alice-idem"}
    key = {"Idempotency-Key": "same-key"}
    first = await users_client.post("/chat", json=body, headers=team.headers("alice") | key)
    assert first.status_code == 200
    await users_client.run_to_end("alice-idem")
    # bob's request with alice's key is bob's own request: refused as bob, never alice's answer
    replay = await users_client.post("/chat", json=body, headers=team.headers("bob") | key)
    assert replay.status_code == 404
    assert "inference_id" not in replay.json()


async def test_a_removed_users_token_stops_working_at_once(
    users_client: AppClient, team: Team
) -> None:
    assert (
        await users_client.get("/api/conversations", headers=team.headers("bob"))
    ).status_code == 200
    team.users().remove("bob")
    response = await users_client.get("/api/conversations", headers=team.headers("bob"))
    assert response.status_code == 401


async def test_password_login_sets_a_session_cookie_and_logout_ends_it(
    users_client: AppClient, team: Team
) -> None:
    origin = {"Origin": "http://127.0.0.1"}
    wrong = await users_client.post(
        "/auth/login", json={"username": "alice", "password": "nope"}, headers=origin
    )
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "wrong user name or password"}
    response = await users_client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORDS["alice"]}, headers=origin
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "alice"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # plain http
    value = users_client.cookies.get("webchat_session")
    assert value
    me = await users_client.get("/auth/me")
    assert me.status_code == 200 and me.json()["id"] == "alice"
    started = await users_client.post(
        "/chat", json={"prompt": "hi", "conv_id": "by-cookie"}, headers=origin
    )
    assert started.status_code == 200, started.text
    await users_client.run_to_end("by-cookie")

    out = await users_client.post("/auth/logout", headers=origin | {"X-Requested-With": "t"})
    assert out.status_code == 200 and out.json() == {"logged_out": True}
    assert users_client.cookies.get("webchat_session") is None
    # the same cookie, kept by someone, no longer works
    users_client.cookies.set("webchat_session", value)
    replayed = await users_client.get("/auth/me")
    assert replayed.status_code == 401


ORIGINS = [
    # (Origin, Host, allowed_origins, same origin or allowed?)
    ("http://127.0.0.1:8000", "127.0.0.1:8000", [], True),
    ("HTTP://127.0.0.1:8000/", "127.0.0.1:8000", [], True),  # scheme, host: any case
    ("http://LocalHost:8000", "localhost:8000", [], True),
    ("http://localhost:8000", "LOCALHOST:8000", [], True),
    ("http://127.0.0.1:8001", "127.0.0.1:8000", [], False),  # another port
    ("http://127.0.0.1.evil.example:8000", "127.0.0.1:8000", [], False),
    ("null", "127.0.0.1:8000", [], False),
    ("https://App.Example.com", "127.0.0.1:8000", ["https://app.example.com/"], True),
    ("https://evil.example", "127.0.0.1:8000", ["https://app.example.com"], False),
    ("https://evil.example", "127.0.0.1:8000", ["*"], True),
]


@pytest.mark.parametrize(("origin", "host", "allowed", "expected"), ORIGINS)
def test_http_requests_and_websocket_handshakes_judge_origins_alike(
    origin: str, host: str, allowed: list[str], expected: bool
) -> None:
    """One check serves both (RFC 3986: scheme and host are case-insensitive)."""
    from starlette.types import Message
    from starlette.websockets import WebSocket

    from webchat.auth.network import same_origin
    from webchat.server.ws import origin_allowed

    async def never(*_: object) -> Message:
        raise AssertionError("the origin check reads headers only")

    headers = [(b"host", host.encode()), (b"origin", origin.encode())]
    handshake = WebSocket({"type": "websocket", "path": "/ws", "headers": headers}, never, never)
    assert same_origin(origin, host, allowed) is expected
    assert origin_allowed(handshake, allowed) is expected


async def test_cookie_requests_need_same_origin_and_a_json_body_or_custom_header(
    users_client: AppClient, team: Team
) -> None:
    login = await users_client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORDS["alice"]},
        headers={"Origin": "http://127.0.0.1"},
    )
    assert login.status_code == 200
    assert (
        await users_client.post(
            "/chat", json={"prompt": "hi", "conv_id": "c-x"}, headers={"Origin": "http://127.0.0.1"}
        )
    ).status_code == 200
    await users_client.run_to_end("c-x")
    form = {"content-type": "application/x-www-form-urlencoded"}
    refused = [
        # a cross-site form
        await users_client.post(
            "/api/conversations/c-x/cancel",
            content=b"a=1",
            headers=form | {"Origin": "http://evil.example"},
        ),
        # a same-site form (or a CORS-less fetch): no JSON, no custom header
        await users_client.post(
            "/api/conversations/c-x/cancel",
            content=b"a=1",
            headers=form | {"Origin": "http://127.0.0.1"},
        ),
        # no Origin or Referer at all, with a cookie
        await users_client.post("/api/conversations/c-x/cancel", headers=form),
        # a Referer from elsewhere
        await users_client.post(
            "/api/conversations/c-x/cancel",
            headers={"Referer": "http://evil.example/page", "X-Requested-With": "x"},
        ),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403], [r.text for r in refused]
    allowed = await users_client.post(
        "/api/conversations/c-x/cancel",
        headers={"Origin": "http://127.0.0.1", "X-Requested-With": "webchat"},
    )
    assert allowed.status_code == 200
    # a Bearer token is not sent by browsers on their own: no Origin needed
    assert (
        await users_client.post("/api/conversations/c-x/cancel", headers=team.headers("alice"))
    ).status_code == 200


async def test_the_cross_site_form_cancel_is_refused_without_auth_too(
    client: AppClient,
) -> None:
    """``--auth none``: the issue's example, a form POST from a foreign page."""
    assert (await client.post("/chat", json={"prompt": "hi", "conv_id": "n1"})).status_code == 200
    await client.run_to_end("n1")
    response = await client.post(
        "/api/conversations/n1/cancel",
        content=b"x=1",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "Origin": "http://evil.example",
        },
    )
    assert response.status_code == 403
    assert "cross-site" in response.json()["error"]
    # scripts and the CLI (no Origin) keep working without auth
    assert (await client.post("/api/conversations/n1/cancel")).status_code == 200


async def test_a_foreign_host_header_gets_400(client: AppClient) -> None:
    response = await client.get("/api/conversations", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert response.json() == {"error": "Host 'evil.example' is not served here"}
    assert (await client.get("/healthz", headers={"Host": "localhost:8000"})).status_code == 200


async def test_allowed_hosts_replace_the_loopback_names(make_client: ClientFactory) -> None:
    async with make_client(allowed_hosts="chat.example.org") as client:
        ok = await client.get("/healthz", headers={"Host": "chat.example.org"})
        assert ok.status_code == 200
        assert (await client.get("/healthz")).status_code == 400  # 127.0.0.1 is not listed


async def test_run_quotas_answer_429_with_retry_after(
    make_client: ClientFactory, team: Team
) -> None:
    async with make_client(auth="users", users=team.path, runs_per_minute=2) as client:
        for n in range(2):
            assert (await chat(client, team, "alice", f"q-{n}")).status_code == 200
            await client.run_to_end(f"q-{n}")
        third = await chat(client, team, "alice", "q-3")
        assert third.status_code == 429
        assert int(third.headers["retry-after"]) >= 1
        assert "last minute" in third.json()["error"]
        # another user has a quota of their own
        assert (await chat(client, team, "bob", "q-bob")).status_code == 200


async def test_concurrent_runs_per_user_are_capped(make_client: ClientFactory, team: Team) -> None:
    async with make_client(auth="users", users=team.path, max_active_runs=1) as client:
        alice = team.headers("alice")
        long = await client.post(
            "/chat/slow", json={"prompt": "go", "conv_id": "l-1"}, headers=alice
        )
        assert long.status_code == 200  # 5,000 tokens at 200/s: running for the whole test
        busy = await client.post("/chat", json={"prompt": "x", "conv_id": "l-2"}, headers=alice)
        assert busy.status_code == 429
        assert busy.headers["retry-after"]
        assert "runs active" in busy.json()["error"]
        assert (await chat(client, team, "bob", "l-bob")).status_code == 200  # bob's own slot
        cancelled = await client.post("/api/conversations/l-1/cancel", headers=alice)
        assert cancelled.json()["cancelled"] is True
        await client.run_to_end("l-1")
        # the ended run gave its slot back
        assert (
            await client.post("/chat", json={"prompt": "x", "conv_id": "l-2"}, headers=alice)
        ).status_code == 200


async def test_stored_conversations_per_user_are_capped(
    make_client: ClientFactory, team: Team
) -> None:
    async with make_client(auth="users", users=team.path, max_conversations=1) as client:
        assert (await chat(client, team, "alice", "only")).status_code == 200
        await client.run_to_end("only")
        await client.service.store.flush()
        refused = await chat(client, team, "alice", "second")
        assert refused.status_code == 429
        assert "limit is 1" in refused.json()["error"]
        assert (await chat(client, team, "alice", "only")).status_code == 200  # still hers


async def test_failed_authentication_is_rate_limited_per_address(
    make_client: ClientFactory, team: Team
) -> None:
    async with make_client(auth="users", users=team.path, auth_failures_per_minute=3) as client:
        bad = {"Authorization": "Bearer wct_bad_token"}
        codes = [
            (await client.get("/api/conversations", headers=bad)).status_code for _ in range(4)
        ]
        assert codes == [401, 401, 401, 429]
        limited = await client.get("/api/conversations", headers=bad)
        assert limited.headers["retry-after"]
        login = await client.post(
            "/auth/login",
            json={"username": "alice", "password": PASSWORDS["alice"]},
            headers={"Origin": "http://127.0.0.1"},
        )
        assert login.status_code == 429  # even the right password waits


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"host": "0.0.0.0"}, "--auth users, --auth proxy or --auth oidc"),
        ({"host": "0.0.0.0", "auth": "users"}, "--allowed-hosts"),
        ({"auth": "proxy"}, "--trusted-proxies"),
        ({"auth": "oidc"}, "oidc_issuer"),
    ],
)
def test_unsafe_settings_refuse_to_start(
    settings: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=problem.replace("-", r"\-")):
        create_app(ServerSettings(db=":memory:", users=tmp_path / "u.yaml", **settings))


def test_explicit_auth_none_serves_every_interface() -> None:
    create_app(ServerSettings(db=":memory:", host="0.0.0.0", auth="none"))


async def test_ownership_survives_a_restart(
    profiles_file: Path, team: Team, tmp_path: Path
) -> None:
    settings = ServerSettings(
        db=str(tmp_path / "chat.sqlite3"), profiles=profiles_file, auth="users", users=team.path
    )

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                yield c

    async with running() as client:
        response = await client.post(
            "/chat", json={"prompt": "hi", "conv_id": "kept"}, headers=team.headers("alice")
        )
        assert response.status_code == 200
    async with running() as client:
        assert (
            await client.get("/api/conversations/kept", headers=team.headers("bob"))
        ).status_code == 404
        assert (
            await client.get("/api/conversations/kept", headers=team.headers("alice"))
        ).status_code == 200
        assert (await chat_raw(client, team, "bob", "kept")).status_code == 404


async def chat_raw(client: httpx.AsyncClient, team: Team, who: str, conv_id: str) -> httpx.Response:
    return await client.post(
        "/chat", json={"prompt": "again", "conv_id": conv_id}, headers=team.headers(who)
    )
