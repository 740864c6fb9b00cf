"""A server restart, seen from the browser: ``webchat serve`` is a real process, stopped with
SIGTERM (its WebSockets close with 1012, service restart) and started again on the same port
and database. The page says the server is restarting, keeps retrying with backoff, and
resumes with ``since`` once the server is back. Every wait is on the DOM or on a socket event.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.helpers import ServeProcess, running

RUN_TIMEOUT = 15_000
BACK_TIMEOUT = 20_000  # the server's start-up plus one backoff step (5 s at most, with jitter)
RESTARTING = "Server restarting, reconnecting…"

PROFILES = """\
profiles:
  - slug: instant
    display_name: Instant
    step_settings: {api_type: offline, tokens_per_second: 0, answer_tokens: 12}
  - slug: slow
    display_name: Slow
    step_settings: {api_type: offline, tokens_per_second: 25, answer_tokens: 400}
"""

# Records every WebSocket the page opens and the code each one closed with.
TRACK_SOCKETS = """
window.__sockets = [];
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    const entry = { url: this.url, close: null };
    window.__sockets.push(entry);
    this.addEventListener("close", (event) => { entry.close = event.code; });
  }
};
"""


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    with running(ServeProcess.in_directory(tmp_path, PROFILES)) as process:
        yield process


def conv_id_of(page: Any) -> str:
    ids = parse_qs(urlsplit(page.url).query).get("conv_id", [])
    assert len(ids) == 1, f"no conv_id in {page.url}"
    conv_id: str = ids[0]
    return conv_id


def last_seq(serve: ServeProcess, conv_id: str) -> int:
    response = httpx.get(f"{serve.url}/api/conversations/{conv_id}/timeline", timeout=10)
    response.raise_for_status()
    seq: int = response.json()["last_seq"]
    return seq


def send(page: Any, text: str) -> None:
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")


def expect_idle(page: Any) -> None:
    expect(page.locator("body")).to_have_attribute("data-running", "false", timeout=RUN_TIMEOUT)
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#send")).to_be_enabled()


def expect_restarting(page: Any) -> None:
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "restarting")
    expect(status).to_have_text(RESTARTING)
    expect(page.locator("#notice")).to_have_text(RESTARTING)


def wait_for_reconnect_attempts(page: Any, count: int) -> None:
    """Wait until the page tried to reconnect ``count`` more times (each try after the first
    means the one before failed: nothing listens while the server is down)."""
    for _ in range(count):
        with page.expect_websocket(timeout=BACK_TIMEOUT):
            pass
        expect(page.locator("#status")).to_have_attribute("data-state", "restarting")


def restart(page: Any, serve: ServeProcess) -> None:
    """SIGTERM the server, see the page notice it, let it retry while down, start it again."""
    assert serve.terminate() == 0, serve.output()
    expect_restarting(page)
    closes = page.evaluate("window.__sockets.map((s) => s.close)")
    assert closes[0] == 1012, closes  # the server said "service restart"
    wait_for_reconnect_attempts(page, 2)
    serve.start()
    expect(page.locator("#status")).to_have_attribute(
        "data-state", "connected", timeout=BACK_TIMEOUT
    )
    expect(page.locator("#status")).to_have_text("Live")
    expect(page.locator("#notice")).to_be_hidden()


def test_restart_between_runs_reconnects_with_since(serve: ServeProcess, page: Any) -> None:
    page.add_init_script(TRACK_SOCKETS)
    page.goto(serve.url + "/")
    page.locator("#profile").select_option("instant")
    send(page, "before the restart")
    expect(page.locator(".turn")).to_have_attribute("data-state", "finished", timeout=RUN_TIMEOUT)
    expect_idle(page)
    conv_id = conv_id_of(page)
    seen = last_seq(serve, conv_id)
    assert seen > 0

    restart(page, serve)

    sockets: list[dict[str, Any]] = page.evaluate("window.__sockets")
    assert len(sockets) >= 4, sockets  # the first, two failed attempts, the one that worked
    resumed = parse_qs(urlsplit(sockets[-1]["url"]).query)
    assert resumed["conv_id"] == [conv_id]
    assert resumed["since"] == [str(seen)], "did not resume after the last frame it had"
    for failed in sockets[1:-1]:
        assert parse_qs(urlsplit(failed["url"]).query)["since"] == [str(seen)]

    # Nothing was replayed twice, and the conversation goes on.
    send(page, "after the restart")
    expect(page.locator(".turn").nth(1)).to_have_attribute(
        "data-state", "finished", timeout=RUN_TIMEOUT
    )
    expect_idle(page)
    expect(page.locator(".message.user")).to_have_text(["before the restart", "after the restart"])
    expect(page.locator(".turn")).to_have_count(2)
    expect(page.locator(".assistant-text")).to_have_count(2)


def test_restart_mid_run_leaves_the_ui_idle(serve: ServeProcess, page: Any) -> None:
    """The run the restart cancelled ends in the UI: from the drained ``run.cancelled``, or
    from the replay after the reconnect. The page is never left "running"."""
    page.add_init_script(TRACK_SOCKETS)
    page.goto(serve.url + "/")
    page.locator("#profile").select_option("slow")
    send(page, "a long answer, please")
    expect(page.locator('.assistant-text[data-final="false"]')).to_contain_text("Offline reply")
    expect(page.locator("#stop")).to_be_visible()

    restart(page, serve)

    turn = page.locator(".turn")
    expect(turn).to_have_attribute("data-state", "cancelled")
    expect(turn.locator(".run-marker")).to_have_count(1)
    expect_idle(page)
    send(page, "and now?")
    expect(page.locator(".turn").nth(1)).to_contain_text("Offline reply to", timeout=RUN_TIMEOUT)
    expect(page.locator("#stop")).to_be_visible()  # a new run is tracked as usual


def test_shutdown_drains_the_cancel_before_closing(serve: ServeProcess, page: Any) -> None:
    """Needs the server's graceful shutdown: frames drained, then close with 1012. Before it,
    uvicorn closes the sockets (with 1012) before ``run.cancelled`` reaches them."""
    page.add_init_script(TRACK_SOCKETS)
    page.goto(serve.url + "/")
    page.locator("#profile").select_option("slow")
    send(page, "a long answer, please")
    expect(page.locator('.assistant-text[data-final="false"]')).to_contain_text("Offline reply")

    assert serve.terminate() == 0, serve.output()
    expect_restarting(page)
    # The server is gone: what the page shows now is all it got before the close.
    turn = page.locator(".turn")
    expect(turn).to_have_attribute("data-state", "cancelled")
    expect(turn.locator(".run-marker")).to_have_count(1)
    expect(page.locator("#stop")).to_be_hidden()
    closes = page.evaluate("window.__sockets.map((s) => s.close)")
    assert closes[0] == 1012, closes
