"""The ``webchat`` command line, run as a user runs it: ``python -m webchat ...`` in a child
process, against a real server where one is needed. Also: settings layering, and that a
provider key never leaks through the API, the frames or the logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.support.live_server import live_server
from webchat.settings import SettingsError, load_settings

WAIT = 15.0
SECRET = "sk-test-SECRET123"

PROFILES = """
profiles:
  - slug: default
    display_name: Default
    tools: [calculator]
    allow_overrides: true
    step_settings: {api_type: offline, tokens_per_second: 0, answer_tokens: 20}
  - slug: writer
    display_name: Writer
    step_settings: {api_type: offline, model: offline-writer}
"""


def webchat(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m webchat`` with ``args``; never inherits ``WEBCHAT_*`` settings."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("WEBCHAT_")}
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "webchat", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env,
        check=False,
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- 11. webchat chat ----------------------------------------------------------------------


def test_chat_streams_a_tool_run_and_continues_the_conversation(tmp_path: Path) -> None:
    profiles = write(tmp_path, "profiles.yaml", PROFILES)
    with live_server(db=str(tmp_path / "chat.sqlite3"), profiles=profiles) as server:
        first = webchat("chat", "calc: 6*7", "--url", server.url, "--conv", "cli-conv")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "The result of 6*7 is 42." in first.stdout.splitlines()
        assert '[tool calculator {"expression": "6*7"}]' in first.stderr.splitlines()
        assert "[tool result: 42]" in first.stderr
        assert "[tool" not in first.stdout, "tool lines belong on stderr"
        assert "Traceback" not in first.stderr

        second = webchat("chat", "thanks, and now?", "--url", server.url, "--conv", "cli-conv")
        assert second.returncode == 0, second.stdout + second.stderr
        assert 'Offline reply to "thanks, and now?"' in second.stdout

        info = httpx.get(f"{server.url}/api/conversations/cli-conv", timeout=WAIT).json()
        assert len(info["turns"]) == 2
        users = [b["payload"]["text"] for b in info["turns"][-1]["blocks"] if b["kind"] == "user"]
        assert users == ["calc: 6*7", "thanks, and now?"]


def test_chat_against_no_server_fails_readably(tmp_path: Path) -> None:
    result = webchat("chat", "hello", "--url", "http://127.0.0.1:9", "--timeout", "5")
    assert result.returncode == 1
    assert "error:" in result.stderr and "127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


# -- 12. webchat profiles, and broken profile files ----------------------------------------


def test_profiles_lists_every_slug(tmp_path: Path) -> None:
    profiles = write(tmp_path, "profiles.yaml", PROFILES)
    result = webchat("profiles", "--profiles", str(profiles))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line[2:].split()[0] for line in lines if line.strip()] == ["default", "writer"]
    assert lines[0].startswith("*"), "the default profile is marked"
    assert "offline-writer" in result.stdout


BROKEN = [
    ("yaml", "profiles: [unclosed\n", "not valid YAML"),
    ("schema", "profiles:\n  - slug: x\n    step_settings: {api_type: telepathy}\n", "api_type"),
    ("unknown-key", "profiles:\n  - slug: x\n    colour: blue\n", "colour"),
    ("duplicate", "profiles:\n  - slug: x\n  - slug: x\n", "defined twice"),
    ("empty", "profiles: []\n", "at least one profile"),
]


@pytest.mark.parametrize(
    ("content", "fragment"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_profiles_with_a_broken_file_exits_2_with_a_readable_error(
    tmp_path: Path, content: str, fragment: str
) -> None:
    broken = write(tmp_path, "broken.yaml", content)
    result = webchat("profiles", "--profiles", str(broken))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error:"), result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_profiles_with_a_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = webchat("profiles", "--profiles", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_a_broken_profiles_file_exits_2_without_a_traceback(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.yaml", BROKEN[1][1])
    result = webchat(
        "serve", "--profiles", str(broken), "--port", "0", "--db", ":memory:", timeout=20
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error:" in result.stderr and "api_type" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_serve_on_every_interface_without_auth_refuses_to_start(tmp_path: Path) -> None:
    result = webchat("serve", "--host", "0.0.0.0", "--port", "0", "--db", ":memory:")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--auth users, --auth proxy or --auth oidc" in result.stderr
    assert "--auth none" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    from_env = webchat(
        "serve", "--host", "0.0.0.0", "--port", "0", "--db", ":memory:",
        env={"WEBCHAT_AUTH": "users", "WEBCHAT_USERS": str(tmp_path / "u.yaml")},
    )  # fmt: skip
    assert from_env.returncode == 2
    assert "--allowed-hosts" in from_env.stderr


# -- 13. settings layering -----------------------------------------------------------------


def test_settings_precedence_is_flag_then_env_then_file_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WEBCHAT_PORT", "WEBCHAT_HOST", "WEBCHAT_BUSY_POLICY"):
        monkeypatch.delenv(name, raising=False)
    config = write(tmp_path, "webchat.yaml", "port: 1111\nhost: 0.0.0.0\nbusy-policy: enqueue\n")

    assert load_settings().port == 8000
    assert load_settings(config).port == 1111
    assert load_settings(config).host == "0.0.0.0"
    assert load_settings(config).busy_policy == "enqueue"

    monkeypatch.setenv("WEBCHAT_PORT", "2222")
    assert load_settings().port == 2222
    assert load_settings(config).port == 2222
    assert load_settings(config, port=None).port == 2222, "an absent flag is no flag"
    assert load_settings(config).host == "0.0.0.0", "the file still fills what env leaves"

    assert load_settings(config, port=3333).port == 3333
    assert load_settings(port=3333).port == 3333
    assert load_settings(config, port=3333, busy_policy="interrupt").busy_policy == "interrupt"


def test_settings_errors_name_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBCHAT_PORT", raising=False)
    with pytest.raises(SettingsError, match="bogus_key"):
        load_settings(write(tmp_path, "a.yaml", "bogus_key: 1\n"))
    with pytest.raises(SettingsError, match="port"):
        load_settings(write(tmp_path, "b.yaml", "port: not-a-number\n"))
    monkeypatch.setenv("WEBCHAT_PORT", "99999")
    with pytest.raises(SettingsError, match="port"):
        load_settings()


def test_serve_with_an_unknown_config_key_exits_2_naming_it(tmp_path: Path) -> None:
    config = write(tmp_path, "webchat.yaml", "port: 0\nbogus_key: 1\n")
    result = webchat("serve", "--config", str(config), "--db", ":memory:", timeout=20)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bogus_key" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# -- 14. no secret leaks -------------------------------------------------------------------

DEAD_OPENAI = """
profiles:
  - slug: default
    tools: [calculator]
    step_settings:
      api_type: openai
      model: gpt-test
      base_url: "http://127.0.0.1:9/v1"
      timeout: 2
      max_retries: 0
"""


async def test_the_provider_key_never_leaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    profiles = write(tmp_path, "profiles.yaml", DEAD_OPENAI)
    conv_id = "secret-conv"
    seen: list[str] = []  # every response body and WebSocket message, as text

    with live_server(
        db=str(tmp_path / "chat.sqlite3"), profiles=profiles, openai_api_key=SECRET
    ) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:

            async def get(path: str) -> Any:
                response = await http.get(path)
                assert response.status_code == 200, response.text
                seen.append(response.text)
                return response.json() if "json" in response.headers["content-type"] else None

            (profile,) = await get("/api/chat/profiles")
            assert profile["api_type"] == "openai" and profile["model"] == "gpt-test"

            url = f"{server.ws_url}/ws?{urlencode({'conv_id': conv_id})}"
            async with connect(url) as ws, asyncio.timeout(WAIT):
                hello = json.loads(await ws.recv())["event"]
                assert hello["engine"] == "openai"
                response = await http.post("/chat", json={"prompt": "hello?", "conv_id": conv_id})
                assert response.status_code == 200, response.text
                seen.append(response.text)
                inference_id = response.json()["inference_id"]
                frames: list[dict[str, Any]] = []
                while not (frames and frames[-1]["type"].startswith(("run.f", "run.c"))):
                    message = await ws.recv()
                    assert isinstance(message, str)
                    seen.append(message)
                    event = json.loads(message)["event"]
                    if event.get("inference_id") == inference_id:
                        frames.append(event)

            end = frames[-1]
            assert end["type"] == "run.failed", frames
            error = end["error"]
            assert isinstance(error, str) and len(error) > 10, error
            assert "connect" in error.lower(), error
            assert [f["type"] for f in frames].count("run.failed") == 1

            info = await get(f"/api/conversations/{conv_id}")
            # The key is part of the configuration (rotating it must rebuild), as a fingerprint.
            fingerprint = info["signature"]["step_settings"]["api_key"]
            assert isinstance(fingerprint, str) and fingerprint.startswith("hmac-sha256:")
            assert info["running"] is False
            assert info["turns"][-1]["metadata"].get("error")
            await get(f"/api/conversations/{conv_id}/timeline?since=0")
            await get("/api/conversations")
            await get("/metrics")
            await get("/readyz")

    assert seen
    for text in seen:
        assert SECRET not in text and SECRET[3:] not in text, text
    server_records = [r for r in caplog.records if r.name.startswith("webchat")]
    assert server_records, "no server log captured: the log check would prove nothing"
    logged = caplog.text + "\n".join(
        repr(r.args) + str(r.exc_info) + str(r.__dict__) for r in caplog.records
    )
    assert SECRET not in logged
