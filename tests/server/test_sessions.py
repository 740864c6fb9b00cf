"""Browser sessions: signed cookies that expire, survive restarts (the secret persists), are
marked Secure behind an https proxy, and cannot be forged."""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.server.auth_support import PASSWORDS, Team, make_team
from webchat.auth.revocations import LocalRevocations
from webchat.auth.sessions import SESSION_COOKIE, SessionCookies, SessionData
from webchat.server import create_app
from webchat.settings import ServerSettings


@pytest.fixture
def team(tmp_path: Path) -> Team:
    return make_team(tmp_path)


@contextlib.asynccontextmanager
async def running(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


async def log_in(client: httpx.AsyncClient, who: str = "alice") -> httpx.Response:
    return await client.post(
        "/auth/login",
        json={"username": who, "password": PASSWORDS[who]},
        headers={"Origin": "http://127.0.0.1"},
    )


async def test_a_login_survives_a_restart_through_the_persisted_secret(
    team: Team, tmp_path: Path
) -> None:
    db = tmp_path / "chat.sqlite3"
    settings = ServerSettings(db=str(db), auth="users", users=team.path)
    async with running(settings) as client:
        assert (await log_in(client)).status_code == 200
        cookie = client.cookies[SESSION_COOKIE]
    secret_file = Path(str(db) + ".secret")
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    async with running(settings) as client:
        client.cookies.set(SESSION_COOKIE, cookie)
        me = await client.get("/auth/me")
        assert me.status_code == 200 and me.json()["name"] == "alice"
    # another deployment (another secret) does not accept it
    other = ServerSettings(db=str(tmp_path / "other.sqlite3"), auth="users", users=team.path)
    async with running(other) as client:
        client.cookies.set(SESSION_COOKIE, cookie)
        assert (await client.get("/auth/me")).status_code == 401


async def test_a_configured_secret_key_is_used_everywhere(team: Team) -> None:
    settings = ServerSettings(db=":memory:", auth="users", users=team.path, secret_key="k" * 40)
    async with running(settings) as client:
        assert (await log_in(client)).status_code == 200
        cookie = client.cookies[SESSION_COOKIE]
    async with running(settings) as client:  # a second process with the same key
        client.cookies.set(SESSION_COOKIE, cookie)
        assert (await client.get("/auth/me")).status_code == 200


async def test_the_cookie_is_secure_behind_an_https_proxy(team: Team) -> None:
    settings = ServerSettings(
        db=":memory:", auth="users", users=team.path, trusted_proxies=["127.0.0.1/32"]
    )
    async with running(settings) as client:
        response = await client.post(
            "/auth/login",
            json={"username": "alice", "password": PASSWORDS["alice"]},
            headers={"Origin": "https://127.0.0.1", "X-Forwarded-Proto": "https"},
        )
        assert response.status_code == 200, response.text
        assert "Secure" in response.headers["set-cookie"]
    untrusted = ServerSettings(
        db=":memory:", auth="users", users=team.path, trusted_proxies=["10.255.255.1/32"]
    )
    async with running(untrusted) as client:
        response = await client.post(
            "/auth/login",
            json={"username": "alice", "password": PASSWORDS["alice"]},
            headers={"Origin": "http://127.0.0.1", "X-Forwarded-Proto": "https"},
        )
        assert "Secure" not in response.headers["set-cookie"]  # nobody trusted said https


class _Conn:
    def __init__(self, cookie: str | None) -> None:
        self.cookies = {SESSION_COOKIE: cookie} if cookie else {}


async def test_expired_tampered_and_revoked_cookies_are_refused() -> None:
    cookies = SessionCookies(b"s" * 32, LocalRevocations(), max_age=3600)
    signer = cookies.signer("webchat.session")

    def signed(data: SessionData) -> str:
        return signer.dumps(data.model_dump(mode="json"))

    fresh = SessionData(sid="a", id="alice", name="alice", iat=time.time())
    old = SessionData(sid="b", id="alice", name="alice", iat=time.time() - 3601)
    assert await cookies.read(_Conn(signed(fresh))) == fresh  # type: ignore[arg-type]
    assert await cookies.read(_Conn(signed(old))) is None  # type: ignore[arg-type]
    payload, timestamp, signature = signed(fresh).rsplit(".", 2)
    admin = fresh.model_copy(update={"role": "admin"}).model_dump_json().encode()
    forged = ".".join([base64.urlsafe_b64encode(admin).decode().rstrip("="), timestamp, signature])
    assert forged.split(".")[0] != payload
    assert await cookies.read(_Conn(forged)) is None  # type: ignore[arg-type]
    other_key = SessionCookies(b"t" * 32, LocalRevocations(), max_age=3600)
    assert await other_key.read(_Conn(signed(fresh))) is None  # type: ignore[arg-type]
    await cookies.revocations.revoke_session("a", 60)
    assert await cookies.read(_Conn(signed(fresh))) is None  # type: ignore[arg-type]
