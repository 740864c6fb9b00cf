"""Attachments over HTTP: upload, the safe download, ownership, limits, and a run that
carries them (the offline engine acknowledges what it received)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.auth_support import Team
from tests.server.conftest import PROFILES_YAML, AppClient, ClientFactory
from webchat.settings import ServerSettings

MAX_ATTACHMENT_BYTES = ServerSettings.model_fields["attachment_max_bytes"].default
MAX_ATTACHMENTS_PER_MESSAGE = ServerSettings.model_fields["attachment_max_files"].default

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * (12 * 1024 - 8)  # 12 KB: only the magic is judged
GIF = b"GIF89a" + b"\x01" * 100
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'

ATTACHMENT_PROFILES = (
    PROFILES_YAML
    + """
  - slug: noattach
    step_settings: {api_type: offline}
    attachments: {enabled: false}
  - slug: textonly
    step_settings: {api_type: offline}
    attachments: {kinds: [text]}
"""
)

pytest_plugins = ["tests.server.auth_support"]  # the team fixture


@pytest.fixture
def profiles_file(tmp_path: Path) -> Path:
    """What ``make_client`` serves here: the usual profiles and two that limit uploads."""
    path = tmp_path / "profiles.yaml"
    path.write_text(ATTACHMENT_PROFILES)
    return path


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[AppClient]:
    async with make_client(max_body_bytes=8 * 1024 * 1024) as client:
        yield client


async def upload(
    client: AppClient,
    conv_id: str,
    name: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    **kw: Any,
) -> httpx.Response:
    files = {"file": (name, data, content_type)}
    return await client.post(f"/api/conversations/{conv_id}/attachments", files=files, **kw)


async def final_text(client: AppClient, conv_id: str) -> str:
    await client.run_to_end(conv_id)
    finals = [f for f in await client.timeline(conv_id) if f["type"] == "llm.final"]
    text: str = finals[-1]["text"]
    return text


async def test_an_image_round_trips_with_safe_headers(client: AppClient) -> None:
    response = await upload(client, "c1", "../../etc/cat.png", PNG, "text/html")
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["name"] == "cat.png"  # the path is gone
    assert info["media_type"] == "image/png"  # sniffed, not the client's claim
    assert (info["size"], info["kind"]) == (len(PNG), "image")
    assert info["url"] == f"/api/conversations/c1/attachments/{info['id']}"
    served = await client.get(info["url"])
    assert served.status_code == 200
    assert served.content == PNG
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"] == "default-src 'none'"
    assert served.headers["content-disposition"].startswith('inline; filename="cat.png"')
    listed = await client.get("/api/conversations/c1/attachments")
    assert [a["id"] for a in listed.json()["attachments"]] == [info["id"]]


async def test_a_text_file_is_always_a_download(client: AppClient) -> None:
    response = await upload(client, "c1", 'notes "<b>".md', "# Héllo\n".encode())
    assert response.status_code == 201, response.text
    info = response.json()
    assert (info["media_type"], info["kind"]) == ("text/markdown", "text")
    served = await client.get(info["url"])
    assert served.headers["content-type"] == "text/markdown; charset=utf-8"
    disposition = served.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    assert '"<' not in disposition and "<b>" not in disposition
    # An HTML page named .txt is still text/plain and a download: never rendered.
    page = await upload(client, "c1", "page.txt", b"<script>alert(1)</script>")
    served = await client.get(page.json()["url"])
    assert served.headers["content-type"] == "text/plain; charset=utf-8"
    assert served.headers["content-disposition"].startswith("attachment;")


@pytest.mark.parametrize(
    ("name", "data", "claimed"),
    [
        ("logo.svg", SVG, "image/svg+xml"),
        ("logo.png", SVG, "image/png"),  # an SVG pretending to be a PNG
        ("page.html", b"<html></html>", "text/html"),
        ("binary.txt", b"\xff\xfe\x00\x01", "text/plain"),  # not UTF-8
        ("tool.exe", b"MZ\x90\x00", "application/octet-stream"),
        ("fake.png", b"hello", "image/png"),
    ],
)
async def test_refused_kinds_are_415(
    client: AppClient, name: str, data: bytes, claimed: str
) -> None:
    response = await upload(client, "c1", name, data, claimed)
    assert response.status_code == 415, response.text
    assert "error" in response.json()


async def test_limits_are_413(client: AppClient) -> None:
    too_big = b"a" * (MAX_ATTACHMENT_BYTES + 1)
    response = await upload(client, "c1", "big.txt", too_big)
    assert response.status_code == 413, response.text
    ids = [
        (await upload(client, "c1", f"f{i}.txt", b"x")).json()["id"]
        for i in range(MAX_ATTACHMENTS_PER_MESSAGE + 1)
    ]
    body = {"prompt": "read these", "conv_id": "c1", "attachments": ids}
    response = await client.post("/chat", json=body)
    assert response.status_code == 413, response.text
    body["attachments"] = ids[:MAX_ATTACHMENTS_PER_MESSAGE]
    assert (await client.post("/chat", json=body)).status_code == 200


async def test_configured_limits_are_413_with_a_clear_error(make_client: ClientFactory) -> None:
    async with make_client(attachment_max_bytes=1000, attachment_max_files=2) as client:
        response = await upload(client, "c1", "big.txt", b"a" * 1001)
        assert response.status_code == 413, response.text
        assert response.json() == {
            "error": "the file is larger than the limit of 1000 bytes (attachment_max_bytes)",
            "limit": 1000,
        }
        assert (await upload(client, "c1", "fits.txt", b"a" * 1000)).status_code == 201
        # A body too large for any accepted file is refused before it is read.
        response = await upload(client, "c1", "huge.txt", b"a" * (2 * 1024 * 1024))
        assert response.status_code == 413, response.text
        assert "attachment_max_bytes" in response.json()["error"]
        ids = [(await upload(client, "c1", f"f{i}.txt", b"x")).json()["id"] for i in range(3)]
        body = {"prompt": "read these", "conv_id": "c1", "attachments": ids}
        response = await client.post("/chat", json=body)
        assert response.status_code == 413, response.text
        assert response.json()["error"] == (
            "3 attachments; a message may carry at most 2 (attachment_max_files)"
        )
        # The UI learns the limits with the profiles.
        profiles = (await client.get("/api/chat/profiles")).json()
        policies = {p["slug"]: p["attachments"] for p in profiles}
        assert policies["noattach"]["enabled"] is False
        assert policies["textonly"] == {
            "enabled": True,
            "kinds": ["text"],
            "max_bytes": 1000,
            "max_files": 2,
        }


def test_the_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBCHAT_ATTACHMENT_MAX_BYTES", "2048")
    monkeypatch.setenv("WEBCHAT_ATTACHMENT_MAX_FILES", "3")
    settings = ServerSettings()
    assert (settings.attachment_max_bytes, settings.attachment_max_files) == (2048, 3)


async def test_an_unknown_attachment_is_400(client: AppClient) -> None:
    await upload(client, "other", "a.txt", b"x")
    theirs = (await client.get("/api/conversations/other/attachments")).json()["attachments"]
    for ids in (["nope"], [theirs[0]["id"]]):  # an id of another conversation is unknown here
        body = {"prompt": "hi", "conv_id": "c1", "attachments": ids}
        response = await client.post("/chat", json=body)
        assert response.status_code == 400, response.text


async def test_a_profile_can_refuse_attachments(client: AppClient) -> None:
    response = await upload(client, "c1", "a.png", PNG, params={"profile": "noattach"})
    assert response.status_code == 403
    assert "does not accept attachments" in response.json()["error"]
    response = await upload(client, "c2", "a.png", PNG, params={"profile": "textonly"})
    assert response.status_code == 403
    assert "image" in response.json()["error"]
    assert (
        await upload(client, "c2", "a.md", b"x", params={"profile": "textonly"})
    ).status_code == 201
    image = (await upload(client, "c3", "a.png", PNG)).json()["id"]
    body = {"prompt": "look", "conv_id": "c3", "attachments": [image]}
    assert (await client.post("/chat/textonly", json=body)).status_code == 403


async def test_the_offline_engine_acknowledges_and_history_keeps_them(
    client: AppClient,
) -> None:
    image = (await upload(client, "c1", "cat.png", PNG)).json()
    response = await client.post(
        "/chat", json={"prompt": "what is this?", "conv_id": "c1", "attachments": [image["id"]]}
    )
    assert response.status_code == 200, response.text
    text = await final_text(client, "c1")
    assert text.startswith("I received 1 image, png, 12 KB. Offline reply to"), text
    described = (await client.get("/api/conversations/c1")).json()
    user = next(b for b in described["turns"][-1]["blocks"] if b["kind"] == "user")
    assert user["payload"]["attachments"] == [
        {
            "id": image["id"],
            "name": "cat.png",
            "media_type": "image/png",
            "size": len(PNG),
            "kind": "image",
        }
    ]
    # every open tab sees them arrive with the prompt (the chat.user_message frame)
    frames = (await client.get("/api/conversations/c1/timeline")).json()["frames"]
    prompt = next(f for f in frames if f["type"] == "chat.user_message")
    assert prompt["text"] == "what is this?"
    assert prompt["attachments"] == user["payload"]["attachments"]
    gif = (await upload(client, "c1", "a.gif", GIF)).json()["id"]
    note = (await upload(client, "c1", "notes.md", b"n" * 300)).json()["id"]
    body = {"prompt": "and these?", "conv_id": "c1", "attachments": [gif, image["id"], note]}
    assert (await client.post("/chat", json=body)).status_code == 200
    text = await final_text(client, "c1")
    assert text.startswith(
        "I received 2 images (gif, 106 bytes; png, 12 KB) and 1 text file, notes.md, 300 bytes."
    ), text


async def test_deleting_the_conversation_deletes_its_attachments(client: AppClient) -> None:
    info = (await upload(client, "c1", "cat.png", PNG)).json()
    await client.post("/chat", json={"prompt": "hi", "conv_id": "c1", "attachments": [info["id"]]})
    await client.run_to_end("c1")
    assert (await client.delete("/api/conversations/c1")).status_code == 200
    assert (await client.get(info["url"])).status_code == 404
    assert await client.service.store.list_attachments("c1") == []
    assert await client.service.store.load_attachment("c1", info["id"]) is None


async def test_attachments_survive_a_restart(make_client: ClientFactory, tmp_path: Path) -> None:
    db = str(tmp_path / "webchat.db")
    async with make_client(db=db) as client:
        info = (await upload(client, "c1", "cat.png", PNG)).json()
    async with make_client(db=db) as client:
        served = await client.get(info["url"])
        assert served.content == PNG
        body = {"prompt": "again", "conv_id": "c1", "attachments": [info["id"]]}
        assert (await client.post("/chat", json=body)).status_code == 200
        assert (await final_text(client, "c1")).startswith("I received 1 image")


async def test_only_the_owner_or_an_admin_reads_them(
    make_client: ClientFactory, team: Team
) -> None:
    async with make_client(auth="users", users=team.path, max_body_bytes=8 * 1024 * 1024) as client:
        alice, bob, root = (team.headers(n) for n in ("alice", "bob", "root"))
        response = await upload(client, "alices", "cat.png", PNG, headers=alice)
        assert response.status_code == 201, response.text
        url = response.json()["url"]
        assert (await client.get(url, headers=alice)).status_code == 200
        assert (await client.get(url, headers=bob)).status_code == 404
        assert (await client.get(url, headers=root)).status_code == 200
        assert (await client.get(url)).status_code == 401
        listing = "/api/conversations/alices/attachments"
        assert (await client.get(listing, headers=bob)).status_code == 404
        # Bob can neither upload into alice's conversation, whatever the file, ...
        for data in (PNG, SVG, b"a" * (MAX_ATTACHMENT_BYTES + 1)):
            refused = await upload(client, "alices", "x.png", data, headers=bob)
            assert refused.status_code == 404, refused.text
        # ... nor an admin, who may only read it ...
        assert (await upload(client, "alices", "x.png", PNG, headers=root)).status_code == 403
        # ... nor use alice's file in a conversation of his.
        body = {"prompt": "hi", "conv_id": "bobs", "attachments": [url.rsplit("/", 1)[1]]}
        assert (await client.post("/chat", json=body, headers=bob)).status_code == 400
        # An unknown attachment of one's own conversation is a 404 too.
        missing = "/api/conversations/alices/attachments/nope"
        assert (await client.get(missing, headers=alice)).status_code == 404


async def test_an_uploaded_image_reaches_an_openai_server_as_an_image_part(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    """Through the whole server: upload, POST /chat, and the scripted OpenAI-compatible
    server records an ``image_url`` part with the uploaded bytes; the next run, on the same
    branch, sends it again (history keeps it)."""
    import base64

    from tests.support import fake_openai
    from tests.support.http_server import serve_app

    scenario = fake_openai.Scenario(events=fake_openai.text_events(["A cat."]))
    async with serve_app(fake_openai.make_app(scenario)) as url:
        profiles = tmp_path / "gpt.yaml"
        profiles.write_text(
            "profiles:\n  - slug: gpt\n    step_settings: {api_type: openai, model: gpt-test, "
            f'base_url: "{url}/v1", timeout: 5, max_retries: 0}}\n'
        )
        async with make_client(profiles=profiles) as client:
            image = (await upload(client, "c1", "cat.png", PNG)).json()["id"]
            body = {"prompt": "what is it?", "conv_id": "c1", "attachments": [image]}
            assert (await client.post("/chat", json=body)).status_code == 200
            assert await final_text(client, "c1") == "A cat."
            body = {"prompt": "sure?", "conv_id": "c1"}
            assert (await client.post("/chat", json=body)).status_code == 200
            await client.run_to_end("c1")
    expected = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
    }
    first, second = scenario.requests
    assert first["messages"][-1]["content"] == [
        {"type": "text", "text": "what is it?"},
        expected,
    ]
    assert expected in second["messages"][-3]["content"]  # user, assistant, then the new one
    assert second["messages"][-1] == {"role": "user", "content": "sure?"}
