"""``--log-format json``: one JSON object per line, with the run's ids, and no secrets."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.redis_server import free_port
from webchat.observability.logs import JsonFormatter, log_context
from webchat.observability.tracing import continue_trace

SECRET = "sk-test-JSONLOG-SECRET-42"
PROFILES = """
profiles:
  - slug: default
    tools: [calculator]
    middlewares: [{name: logging, config: {}}]
    step_settings: {api_type: openai, model: gpt-test, base_url: "http://127.0.0.1:9/v1",
                    timeout: 2, max_retries: 0}
"""


def record(message: str, *args: Any, name: str = "webchat.test", **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_a_record_is_one_json_line_with_the_ids_of_its_context():
    formatter = JsonFormatter()
    with log_context(conv_id="c-1", inference_id="i-1", user="alice"):
        line = formatter.format(record("run %s went %s", "i-1", "wrong"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "webchat.test"
    assert entry["message"] == "run i-1 went wrong"
    assert (entry["conv_id"], entry["inference_id"], entry["user"]) == ("c-1", "i-1", "alice")
    assert entry["time"].endswith("+00:00")
    # Outside the context the ids are gone, not stale.
    assert "conv_id" not in json.loads(formatter.format(record("later")))


def test_the_current_trace_is_named_in_each_record(tracer_provider: Any):
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with continue_trace({"traceparent": traceparent}):
        entry = json.loads(JsonFormatter().format(record("traced")))
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["span_id"] == "00f067aa0ba902b7"


def test_secrets_and_credentials_in_query_strings_never_reach_a_line():
    formatter = JsonFormatter(secrets=[SECRET])
    try:
        raise RuntimeError(f"provider said no to key {SECRET}")
    except RuntimeError:
        failed = record("call failed with %s", SECRET)
        failed.exc_info = sys.exc_info()
    line = formatter.format(failed)
    assert SECRET not in line and "[redacted]" in line
    assert "RuntimeError" in json.loads(line)["exception"]

    access = record(
        '%s - "%s %s HTTP/%s" %d',
        "10.0.0.1:5000",
        "GET",
        "/auth/oidc/callback?code=AUTHCODE123&state=STATE456&next=/",
        "1.1",
        303,
        name="uvicorn.access",
    )
    entry = json.loads(formatter.format(access))
    assert "AUTHCODE123" not in json.dumps(entry) and "STATE456" not in json.dumps(entry)
    assert entry["method"] == "GET" and entry["status"] == 303
    assert entry["path"] == "/auth/oidc/callback?code=[redacted]&state=[redacted]&next=/"


def test_serve_with_json_logs_writes_only_json_lines_with_the_run_ids_and_no_key(tmp_path: Path):
    """``webchat serve --log-format json`` as a user runs it, with a provider key set and a
    run that fails against an unreachable provider (what logs the most)."""
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBCHAT_")}
    env["OPENAI_API_KEY"] = SECRET
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webchat",
                "serve",
                "--port",
                str(port),
                "--db",
                ":memory:",
                "--profiles",
                str(profiles),
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd=tmp_path,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
            started = httpx.post(f"{base}/chat", json={"prompt": "hi", "conv_id": "logged"})
            assert started.status_code == 200, started.text
            inference_id = started.json()["inference_id"]
            while True:  # until the run has failed (the provider is unreachable)
                info = httpx.get(f"{base}/api/conversations/logged").json()
                if not info["running"]:
                    break
                assert time.monotonic() < deadline + 30, "the run did not end"
                time.sleep(0.05)
            assert httpx.get(f"{base}/metrics").status_code == 200
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    text = stderr_path.read_text()
    assert SECRET not in text
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert any(
        (e.get("method"), e.get("path"), e.get("status")) == ("POST", "/chat", 200) for e in access
    ), access
    run_lines = [e for e in entries if e.get("inference_id") == inference_id]
    assert run_lines, entries
    assert all(e["conv_id"] == "logged" and e["user"] == "local" for e in run_lines)
    assert any(e["logger"] == "webchat.turns" and e["level"] == "warning" for e in run_lines)


def test_an_unknown_log_format_stops_serve_with_the_setting_named(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBCHAT_")}
    done = subprocess.run(
        [sys.executable, "-m", "webchat", "serve", "--log-format", "xml"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "log_format" in done.stderr and "'text' or 'json'" in done.stderr
    assert "Traceback" not in done.stderr
