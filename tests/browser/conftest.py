"""Fixtures for the browser tests: a real headless Chromium driving the real server.

They need the ``playwright`` package (a dev dependency) and Debian's Chromium at
``/usr/bin/chromium`` (``CHROMIUM`` may point at another binary; ``playwright install`` is never
needed). Either missing is a failure, never a skip: CI installs both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.browser.helpers import serve_profiles
from tests.support.live_server import LiveServer

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Slow enough to reload or stop mid-answer: a plain answer is 60 words at 25 words/s.
PROFILES_YAML = """\
profiles:
  - slug: default
    display_name: Default
    default_prompt: You are a helpful assistant.
    allow_overrides: true
    tools: [calculator]
    step_settings: {api_type: offline, tokens_per_second: 25, answer_tokens: 60}
  - slug: plain
    display_name: Plain
    default_prompt: Be brief.
    step_settings: {api_type: offline, tokens_per_second: 200, answer_tokens: 12}
"""


@pytest.fixture(scope="session")
def profiles_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "profiles.yaml"
    path.write_text(PROFILES_YAML)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve_profiles(tmp_path_factory.mktemp("server"), PROFILES_YAML) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set CHROMIUM")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies, no storage) per test; page errors fail the test."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
