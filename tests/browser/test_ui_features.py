"""Layout features of the chat UI (issue 11), in a real headless Chromium against the real
server (offline engine): the theme toggle, jump to the bottom, the keyboard, day groups in the
conversation list, starters, and WCAG AA contrast in both themes.

Every wait is a Playwright expectation or a polled condition with a deadline: no fixed sleeps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser import helpers
from tests.browser.helpers import serve_profiles
from tests.support.live_server import LiveServer

RUN_TIMEOUT = 20_000
LONG_PROMPT = "Tell me a long story about a quick brown fox and a lazy dog in the park"

# "long" streams for about 5 s: long enough to scroll up, stop, or press Esc mid-answer.
PROFILES_YAML = """\
profiles:
  - slug: default
    display_name: Default
    tools: [calculator]
    step_settings: {api_type: offline, tokens_per_second: 200, answer_tokens: 12}
  - slug: long
    display_name: Long
    step_settings: {api_type: offline, tokens_per_second: 120, answer_tokens: 600}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve_profiles(tmp_path_factory.mktemp("ui-features"), PROFILES_YAML) as running:
        yield running


def send(page: Any, text: str) -> None:
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")


def expect_run_ended(page: Any) -> None:
    expect(page.locator("body")).to_have_attribute("data-running", "false", timeout=RUN_TIMEOUT)


def open_app(page: Any, server: LiveServer, profile: str = "default") -> None:
    helpers.open_app(page, server, profiles=2, profile=profile)


# -- theme -----------------------------------------------------------------------------------------


def test_theme_toggle_cycles_and_persists(server: LiveServer, page: Any) -> None:
    page.emulate_media(color_scheme="light")
    open_app(page, server)
    html = page.locator("html")
    toggle = page.locator("#theme")
    expect(html).to_have_attribute("data-theme-choice", "system")
    expect(html).to_have_attribute("data-theme", "light")
    expect(toggle).to_have_attribute("aria-label", re.compile("^System theme"))
    body_bg = "getComputedStyle(document.body).backgroundColor"
    light_bg = page.evaluate(body_bg)

    toggle.click()
    expect(html).to_have_attribute("data-theme-choice", "light")
    expect(html).to_have_attribute("data-theme", "light")
    toggle.click()
    expect(html).to_have_attribute("data-theme-choice", "dark")
    expect(html).to_have_attribute("data-theme", "dark")
    assert page.evaluate("localStorage.getItem('webchat.theme')") == "dark"
    assert page.evaluate(body_bg) != light_bg

    # Remembered: a reload (and the log-in page) comes back dark before any module runs.
    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")
    expect(html).to_have_attribute("data-theme-choice", "dark")
    page.goto(server.url + "/login")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")

    # System follows prefers-color-scheme, live.
    open_app(page, server)
    page.locator("#theme").click()
    expect(html).to_have_attribute("data-theme-choice", "system")
    assert page.evaluate("localStorage.getItem('webchat.theme')") is None
    expect(html).to_have_attribute("data-theme", "light")
    page.emulate_media(color_scheme="dark")
    expect(html).to_have_attribute("data-theme", "dark")


# -- jump to the bottom ---------------------------------------------------------------------------

AT_BOTTOM = """() => {
  const m = document.getElementById("messages");
  return m.scrollHeight - m.scrollTop - m.clientHeight < 4;
}"""


def test_jump_to_bottom_while_streaming(server: LiveServer, page: Any) -> None:
    page.set_viewport_size({"width": 1000, "height": 520})
    open_app(page, server, "long")
    jump = page.locator("#jump")
    expect(jump).to_be_hidden()
    send(page, LONG_PROMPT)
    streaming = page.locator('.assistant-text[data-final="false"]')
    # Wait until the answer overflows the pane, while it still streams.
    page.wait_for_function(
        """() => {
          const m = document.getElementById("messages");
          return m.scrollHeight > m.clientHeight + 300;
        }""",
        timeout=RUN_TIMEOUT,
    )
    expect(streaming).to_have_count(1)
    assert page.evaluate(AT_BOTTOM), "the transcript did not follow the stream"

    page.evaluate("document.getElementById('messages').scrollTop = 0")
    expect(jump).to_be_visible()
    height = page.evaluate("document.getElementById('messages').scrollHeight")
    # More text arrives; the reader's position is kept (not pulled down).
    page.wait_for_function(
        f"() => document.getElementById('messages').scrollHeight > {height}",
        timeout=RUN_TIMEOUT,
    )
    assert page.evaluate("document.getElementById('messages').scrollTop") < 50
    expect(jump).to_be_visible()

    jump.click()
    page.wait_for_function(AT_BOTTOM, timeout=5_000)
    expect(jump).to_be_hidden()
    expect_run_ended(page)
    assert page.evaluate(AT_BOTTOM), "after the jump the transcript follows the stream again"


# -- keyboard --------------------------------------------------------------------------------------


def test_keyboard_enter_shift_enter_escape_and_new_chat(server: LiveServer, page: Any) -> None:
    open_app(page, server, "long")
    prompt = page.locator("#prompt")
    prompt.press_sequentially("first line")
    prompt.press("Shift+Enter")
    prompt.press_sequentially("second line")
    expect(prompt).to_have_value("first line\nsecond line")
    expect(page.locator(".message.user")).to_have_count(0)

    prompt.press("Enter")
    expect(page.locator(".message.user .bubble")).to_have_text(["first line\nsecond line"])
    expect(prompt).to_have_value("")
    expect(page.locator('.assistant-text[data-final="false"]')).to_contain_text("Offline reply")
    expect(page.locator("#stop")).to_be_visible()

    # Esc stops the active run, wherever the focus is (here: the page body).
    page.locator("#title").click()
    page.keyboard.press("Escape")
    expect(page.locator(".run-marker.cancelled")).to_have_text("Cancelled")
    expect_run_ended(page)
    expect(page).to_have_url(re.compile(r"conv_id="))

    # Ctrl+Shift+O starts a new chat.
    page.keyboard.press("Control+Shift+O")
    expect(page).not_to_have_url(re.compile("conv_id"))
    expect(page.locator("#transcript > *")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#title")).to_have_text("New chat")
    expect(prompt).to_be_focused()


# -- conversation list ----------------------------------------------------------------------------

FAKE_LIST = """() => {
  const now = new Date();
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime() / 1000;
  const hour = 3600, day = 86400;
  const at = {
    today: Math.min(Date.now() / 1000 - 5, midnight + 1),
    todayLater: Date.now() / 1000 - 1,
    yesterday: midnight - 12 * hour,
    week: midnight - 3 * day,
    older: midnight - 30 * day,
    oldest: midnight - 400 * day,
  };
  const make = (id, when) => ({
    conv_id: id, profile: "default", title: `Conversation ${id}`, owner: null,
    updated_at: at[when], running: false,
  });
  // Deliberately out of order: the page sorts newest first.
  return { conversations: [
    make("c-older", "older"), make("c-today", "today"), make("c-week", "week"),
    make("c-oldest", "oldest"), make("c-yesterday", "yesterday"), make("c-now", "todayLater"),
  ] };
}"""


def test_conversation_list_newest_first_in_day_groups(server: LiveServer, page: Any) -> None:
    page.goto(server.url + "/")
    listing = page.evaluate(FAKE_LIST)
    page.route(
        re.compile(r"/api/conversations$"),
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(listing)
        ),
    )
    page.reload()
    groups = page.locator("#conversations .conversation-group")
    expect(groups.locator(".day-label")).to_have_text(
        ["Today", "Yesterday", "Previous 7 days", "Older"]
    )
    ids = page.locator("#conversations .conversation")
    expect(ids).to_have_count(6)
    order = [ids.nth(i).get_attribute("data-conv-id") for i in range(6)]
    assert order == ["c-now", "c-today", "c-yesterday", "c-week", "c-older", "c-oldest"]
    expect(groups.nth(0).locator(".conversation")).to_have_count(2)
    expect(groups.nth(3).locator(".conversation")).to_have_count(2)
    expect(page.locator("#conversations-empty")).to_be_hidden()


# -- starters -------------------------------------------------------------------------------------


def test_no_starters_when_the_profile_lists_none(server: LiveServer, page: Any) -> None:
    open_app(page, server)
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#starters")).to_be_hidden()
    expect(page.locator("#starters .starter")).to_have_count(0)


def test_starters_from_the_profiles_answer(server: LiveServer, page: Any) -> None:
    """The UI side alone: the profiles answer is given ``starters`` on its way to the page."""

    def with_starters(route: Any) -> None:
        response = route.fetch()
        profiles = response.json()
        for profile in profiles:
            profile["starters"] = (
                ["Say hello", "calc: 6*7", "<b>not bold</b>"]
                if profile["slug"] == "default"
                else []
            )
        route.fulfill(response=response, body=json.dumps(profiles))

    page.route(re.compile(r"/api/chat/profiles$"), with_starters)
    open_app(page, server)
    starters = page.locator("#starters .starter")
    expect(starters).to_have_text(["Say hello", "calc: 6*7", "<b>not bold</b>"])
    expect(page.locator("#starters b")).to_have_count(0)
    page.locator("#profile").select_option("long")
    expect(page.locator("#starters")).to_be_hidden()
    page.locator("#profile").select_option("default")
    starters.nth(1).click()
    expect(page.locator(".message.user .bubble")).to_have_text(["calc: 6*7"])
    expect(page.locator("#starters")).to_be_hidden()
    expect_run_ended(page)


# -- contrast -------------------------------------------------------------------------------------

# The contrast ratio (WCAG 2.x) of each matching element's text against what is behind it: the
# first opaque background up its ancestors, with translucent ones composited on top.
CONTRAST = """(selectors) => {
  const parse = (value) => {
    let m = /rgba?\\(([^)]+)\\)/.exec(value);
    if (m) {
      const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    }
    m = /color\\(srgb ([^)]+)\\)/.exec(value);
    if (m) {
      const p = m[1].split(/[ \\/]+/).filter(Boolean).map(Number);
      return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1];
    }
    throw new Error("unparsed colour " + value);
  };
  const over = (top, bottom) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  };
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let colour = [255, 255, 255, 1];
    if (layers.length && layers.at(-1)[3] >= 1) colour = layers.pop();
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const lum = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      const s = v / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const out = [];
  for (const selector of selectors) {
    const nodes = document.querySelectorAll(selector);
    if (nodes.length === 0) out.push({ selector, missing: true });
    for (const el of nodes) {
      const bg = background(el);
      const fg = over(parse(getComputedStyle(el).color), bg);
      const [a, b] = [lum(fg), lum(bg)];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      out.push({ selector, ratio: Math.round(ratio * 100) / 100 });
    }
  }
  return out;
}"""

TEXT_SELECTORS = [
    "body",
    ".brand",
    ".sidebar-title",
    ".day-label",
    ".conversation-title",
    ".conversation-meta",
    ".title",
    ".status-text",
    ".message.user .bubble",
    ".turn-name",
    ".turn-model",
    ".assistant-text p",
    ".turn-meta",
    ".tool-status",
    ".tool-label",
    ".offline-banner",
    ".override-panel summary",
    ".new-chat",
]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_text_contrast_is_wcag_aa_in_both_themes(server: LiveServer, page: Any, theme: str) -> None:
    page.add_init_script(f"localStorage.setItem('webchat.theme', '{theme}')")
    open_app(page, server)
    expect(page.locator("html")).to_have_attribute("data-theme", theme)
    send(page, "calc: 6*7")
    expect(page.locator('.tool-card[data-status="done"]')).to_have_count(1, timeout=RUN_TIMEOUT)
    expect_run_ended(page)
    expect(page.locator("#conversations .conversation")).not_to_have_count(0)
    # The selected conversation and a hovered one are the sidebar's hardest backgrounds.
    page.locator(".turn").last.hover()
    expect(page.locator(".turn-meta").last).to_contain_text("tokens")
    results = page.evaluate(CONTRAST, TEXT_SELECTORS)
    missing = [r["selector"] for r in results if r.get("missing")]
    assert not missing, f"nothing matched {missing}"
    low = [r for r in results if r["ratio"] < 4.5]
    assert not low, f"text under 4.5:1 in the {theme} theme: {low}"
    page.locator("#conversations .conversation-button").first.hover()
    hovered = page.evaluate(CONTRAST, [".conversation-meta", ".conversation-title"])
    assert all(r["ratio"] >= 4.5 for r in hovered), hovered
    sidebar = [r for r in results if r["selector"] == ".conversation-meta"]
    print(f"{theme}: sidebar meta {sidebar}, body {results[0]['ratio']}")


def test_modules_are_shipped_with_the_package() -> None:
    """The split app's modules sit under static/ui/, which the package data includes."""
    static = Path(__file__).resolve().parents[2] / "src" / "webchat" / "static"
    modules = {p.name for p in (static / "ui").glob("*.js")}
    assert {"api.js", "connection.js", "transcript.js", "composer.js", "sidebar.js"} <= modules
    assert {"theme.js", "theme-boot.js"} <= modules
    pyproject = (static.parents[2] / "pyproject.toml").read_text()
    assert '"static/**/*"' in pyproject
