"""The UI's running state comes from frames, and a failure or a cancel shows once.

Runs here end at once (an offline engine with no delay, a provider on a closed port), so the
``run.finished``/``run.failed`` frame often arrives over the WebSocket before the reply of the
``POST /chat`` that started the run: the UI must not go back to "running" on that reply.
Every wait is a Playwright expectation on the DOM; nothing sleeps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import FakeOpenAI, free_port, serve_profiles
from tests.support.fake_openai import Scenario, openai_error, text_events
from tests.support.live_server import LiveServer

RUN_TIMEOUT = 15_000

PROFILES = """\
profiles:
  - slug: instant
    display_name: Instant
    step_settings: {{api_type: offline, tokens_per_second: 0, answer_tokens: 12}}
  - slug: broken
    display_name: Broken
    step_settings: {{api_type: openai, model: gpt-test, base_url: "http://127.0.0.1:{dead}/v1",
                    timeout: 2, max_retries: 0}}
  - slug: flaky
    display_name: Flaky
    step_settings: {{api_type: openai, model: gpt-fake, base_url: "{fake}/v1",
                    timeout: 5, max_retries: 0}}
  - slug: slow
    display_name: Slow
    step_settings: {{api_type: offline, tokens_per_second: 25, answer_tokens: 60}}
"""

# The UI's state in one read, taken once a DOM condition says everything settled.
UI_STATE = """() => ({
  running: document.body.dataset.running,
  stopHidden: document.getElementById("stop").hidden,
  sendDisabled: document.getElementById("send").disabled,
})"""
IDLE = {"running": "false", "stopHidden": True, "sendDisabled": False}


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(Scenario()) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, provider: FakeOpenAI) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("run-state")
    profiles = PROFILES.format(dead=free_port(), fake=provider.url)
    with serve_profiles(root, profiles, openai_api_key="sk-test") as running:
        yield running


def is_chat_post(slug: str) -> Any:
    """A predicate for ``expect_request`` on the ``POST /chat/{slug}`` of a message."""
    return lambda request: request.method == "POST" and request.url.endswith(f"/chat/{slug}")


def is_chat_reply(slug: str) -> Any:
    """A predicate for ``expect_response`` on the reply to that POST."""
    return lambda response: is_chat_post(slug)(response.request)


def send_and_settle(page: Any, slug: str, text: str, index: int, state: str) -> Any:
    """Send ``text``; wait for the POST reply, for turn ``index`` to reach ``state`` and for
    the composer to accept a new message; then the page must be idle. Returns the turn and
    the POST's response."""
    with page.expect_response(is_chat_reply(slug)) as posted:
        page.locator("#prompt").fill(text)
        page.locator("#prompt").press("Enter")
    assert posted.value.ok, posted.value.text()
    turn = page.locator(".turn").nth(index)
    expect(turn).to_have_attribute("data-state", state, timeout=RUN_TIMEOUT)
    expect(page.locator("#prompt")).to_have_value("")  # the POST reply was handled
    expect(page.locator("#send")).to_be_enabled()
    assert page.evaluate(UI_STATE) == IDLE, f"stuck after prompt {index + 1}: {text!r}"
    return turn, posted.value


def start_chat(page: Any, server: LiveServer, slug: str) -> None:
    page.goto(server.url + "/")
    page.locator("#profile").select_option(slug)
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")


def test_fifty_instant_runs_never_leave_the_ui_running(server: LiveServer, page: Any) -> None:
    start_chat(page, server, "instant")
    for index in range(50):
        text = f"quick question {index + 1}"
        turn, _ = send_and_settle(page, "instant", text, index, "finished")
        expect(turn.locator(".assistant-text")).to_contain_text(f'Offline reply to "{text}"')
    expect(page.locator(".message.user")).to_have_count(50)
    expect(page.locator(".turn")).to_have_count(50)
    expect(page.locator('.turn[data-state="finished"]')).to_have_count(50)


def test_ten_immediate_failures_never_leave_the_ui_running(server: LiveServer, page: Any) -> None:
    start_chat(page, server, "broken")
    for index in range(10):
        turn, _ = send_and_settle(page, "broken", f"fail {index + 1}", index, "failed")
        expect(turn.locator(".run-error")).to_have_count(1)
    expect(page.locator(".run-error")).to_have_count(10)


def test_a_failure_shows_once_in_plain_words_and_retry_resends(
    server: LiveServer, provider: FakeOpenAI, page: Any
) -> None:
    scenario = provider.scenario
    scenario.status, scenario.events = 500, []
    scenario.error = openai_error("The engine is overloaded", "server_error", None)
    start_chat(page, server, "flaky")
    prompt = "What is <b>the</b> answer?"
    turn, failed = send_and_settle(page, "flaky", prompt, 0, "failed")

    # One error, however many frames said so (an ``error`` frame and ``run.failed``).
    errors = page.locator(".run-error")
    expect(errors).to_have_count(1)
    expect(page.locator(".run-marker")).to_have_count(0)
    card = turn.locator(".run-error")
    expect(card.locator(".run-error-text")).to_have_text(
        "The model provider had a problem and could not answer."
    )
    detail = card.locator(".run-error-detail")
    expect(detail).to_be_hidden()  # behind the toggle
    card.locator("summary").click()
    expect(detail).to_be_visible()
    expect(detail).to_have_text(re.compile(r"^openai: server error \(500\).*overloaded"))
    assert "\n" not in detail.inner_text(), "the same error is listed twice"

    # Retry sends the failed run's prompt again (a new request, so a new idempotency key).
    scenario.status, scenario.error = 200, None
    scenario.events = text_events(["Forty", "-two."])
    first_key = failed.request.headers.get("idempotency-key")
    assert first_key
    retry = card.locator("button.retry")
    expect(retry).to_have_text("Retry")
    page.locator("#prompt").fill("a draft I am still typing")
    with page.expect_request(is_chat_post("flaky")) as posted:
        retry.click()
    assert json.loads(posted.value.post_data or "{}")["prompt"] == prompt
    assert posted.value.headers.get("idempotency-key") != first_key
    answer = page.locator(".turn").nth(1)
    expect(answer).to_have_attribute("data-state", "finished", timeout=RUN_TIMEOUT)
    expect(answer.locator(".assistant-text")).to_have_text("Forty-two.")
    expect(page.locator(".message.user")).to_have_text([prompt, prompt])
    expect(retry).to_be_hidden()  # the conversation moved on
    expect(page.locator("#prompt")).to_have_value("a draft I am still typing")
    expect(page.locator("#send")).to_be_enabled()
    assert page.evaluate(UI_STATE) == IDLE
    assert [r["messages"][-1]["content"] for r in scenario.requests[-2:]] == [prompt, prompt]


def test_a_provider_that_cannot_be_reached_is_explained(server: LiveServer, page: Any) -> None:
    start_chat(page, server, "broken")
    turn, _ = send_and_settle(page, "broken", "hello?", 0, "failed")
    card = turn.locator(".run-error")
    expect(card).to_have_count(1)
    expect(card.locator(".run-error-text")).to_have_text("Could not reach the model provider.")
    expect(card.locator(".run-error-detail")).to_have_text(
        re.compile(r"^openai: connection to http://127\.0\.0\.1:\d+ failed")
    )
    expect(card.locator("button.retry")).to_be_visible()


def test_a_cancel_shows_one_line(server: LiveServer, page: Any) -> None:
    start_chat(page, server, "slow")
    page.locator("#prompt").fill("Tell me a long story")
    page.locator("#prompt").press("Enter")
    expect(page.locator('.assistant-text[data-final="false"]')).to_contain_text("Offline reply")
    page.locator("#stop").click()
    turn = page.locator(".turn")
    expect(turn).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#stop")).to_be_hidden()
    # llm.final (interrupted) and run.cancelled both say so; the page says it once.
    expect(turn.locator(".run-marker")).to_have_text(["Cancelled"])
    expect(turn.locator(".badge, .run-error, .log-line")).to_have_count(0)
    expect(turn.locator(".assistant-text")).to_have_class(re.compile(r"\binterrupted\b"))
    expect(turn.locator(".assistant-text")).to_contain_text("Offline reply")
    assert page.evaluate(UI_STATE) == IDLE
