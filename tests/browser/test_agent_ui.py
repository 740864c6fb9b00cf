"""A profile's ``agent: "module:attr"`` (an async generator written here) in the real UI:
its streamed text shows in two tabs of one conversation, and a tab reloaded mid-stream shows
the whole answer exactly once.

The agent streams half its answer, then waits on a gate the test opens, so "mid-stream" is a
fact, not a timing guess. Every wait is a Playwright expectation on the DOM; nothing sleeps.
"""

from __future__ import annotations

import re
import sys
import textwrap
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.helpers import serve_profiles
from tests.support.live_server import LiveServer

RUN_TIMEOUT = 15_000
PROMPT = "Stream me twenty words"
FIRST_HALF = " ".join(f"w{i:02d}" for i in range(10))
WHOLE = " ".join(f"w{i:02d}" for i in range(20))

AGENT = """
import asyncio
import threading

GATE = threading.Event()

async def agent(request):
    for i in range(20):
        if i == 10:
            await asyncio.to_thread(GATE.wait, 30)  # the test opens it
        yield ("" if i == 0 else " ") + f"w{i:02d}"
        await asyncio.sleep(0.01)
"""

PROFILES = """\
profiles:
  - slug: streamer
    display_name: Streamer
    agent: "{module}:agent"
"""


@pytest.fixture(scope="module")
def agent_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The agent as a fresh module on ``sys.path`` (the server runs in this process)."""
    folder = tmp_path_factory.mktemp("agent-ui")
    name = f"ui_agent_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(AGENT))
    sys.path.insert(0, str(folder))
    try:
        module = __import__(name)
        yield module
    finally:
        module.GATE.set()  # never leave a run (or its waiting thread) hanging
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, agent_module: ModuleType
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("agent-ui-server")
    with serve_profiles(root, PROFILES.format(module=agent_module.__name__)) as running:
        yield running


def open_tab(page: Any, url: str) -> Any:
    """A second tab in the same browser context; its page errors fail the test too."""
    tab = page.context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.errors = errors
    tab.goto(url)
    return tab


def expect_streaming(tab: Any, text: str) -> None:
    expect(tab.locator(".message.user")).to_have_text([PROMPT])
    expect(tab.locator('.assistant-text[data-final="false"]')).to_have_text([text])
    expect(tab.locator("body")).to_have_attribute("data-running", "true")


def expect_whole_answer_once(tab: Any) -> None:
    expect(tab.locator("body")).to_have_attribute("data-running", "false", timeout=RUN_TIMEOUT)
    expect(tab.locator(".message.user")).to_have_text([PROMPT])
    expect(tab.locator(".turn")).to_have_count(1)
    expect(tab.locator(".assistant-text")).to_have_text([WHOLE])
    expect(tab.locator('.assistant-text[data-final="true"]')).to_have_count(1)


def test_agent_stream_shows_in_two_tabs_and_survives_a_reload(
    server: LiveServer, agent_module: ModuleType, page: Any
) -> None:
    agent_module.GATE.clear()
    page.goto(server.url + "/")
    expect(page.locator("#profile")).to_have_value("streamer")
    page.locator("#prompt").fill(PROMPT)
    page.locator("#prompt").press("Enter")
    expect(page).to_have_url(re.compile(r"\?conv_id=[0-9a-f-]{36}$"))
    expect_streaming(page, FIRST_HALF)  # the agent is now held at its gate
    url = page.url
    conv_id = url.split("conv_id=", 1)[1].split("&", 1)[0]

    other = open_tab(page, url)  # a second tab joins the running conversation
    expect_streaming(other, FIRST_HALF)

    page.reload()  # mid-stream: the run is provably still waiting at the gate
    expect(page).to_have_url(url)
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect_streaming(page, FIRST_HALF)
    describe = httpx.get(f"{server.url}/api/conversations/{conv_id}", timeout=10).json()
    assert describe["running"] is True

    agent_module.GATE.set()  # the second half now streams live to both tabs
    expect_whole_answer_once(page)
    expect_whole_answer_once(other)

    frames = httpx.get(f"{server.url}/api/conversations/{conv_id}/timeline", timeout=10).json()
    finals = [f["text"] for f in frames["frames"] if f["type"] == "llm.final"]
    assert finals == [WHOLE]
    assert [f["type"] for f in frames["frames"]][-1] == "run.finished"
    other.close()
    assert not other.errors, f"JavaScript errors in the second tab: {other.errors}"
