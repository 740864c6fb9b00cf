"""The chat UI, driven in a real headless Chromium against the real server (offline engine).

Every wait is a Playwright expectation with a timeout: no fixed sleeps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from playwright.sync_api import expect

from tests.support.live_server import LiveServer, live_server

LONG_PROMPT = "Tell me a long story about a quick brown fox and a lazy dog in the park"
RUN_TIMEOUT = 15_000

# Records every text each assistant message showed, so a test can prove it streamed.
RECORD_ASSISTANT_TEXT = """() => {
  window.__seen = [];
  const root = document.getElementById("transcript");
  new MutationObserver(() => {
    for (const node of root.querySelectorAll(".assistant-text")) {
      window.__seen.push(node.textContent);
    }
  }).observe(root, { subtree: true, childList: true, characterData: true });
}"""


# Keeps every WebSocket the page opens, so a test can drop one and see the app reconnect.
TRACK_SOCKETS = """
window.__sockets = [];
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    window.__sockets.push(this);
  }
};
"""


def conv_id_of(page: Any) -> str:
    ids = parse_qs(urlsplit(page.url).query).get("conv_id", [])
    assert len(ids) == 1, f"no conv_id in {page.url}"
    return ids[0]


def send(page: Any, text: str) -> None:
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")


def timeline(server: LiveServer, conv_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/api/conversations/{conv_id}/timeline", timeout=10)
    response.raise_for_status()
    frames: list[dict[str, Any]] = response.json()["frames"]
    return frames


def expect_run_ended(page: Any) -> None:
    expect(page.locator("body")).to_have_attribute("data-running", "false", timeout=RUN_TIMEOUT)
    expect(page.locator("#stop")).to_be_hidden()


def test_offline_chat_streams_text_and_tool_card(server: LiveServer, page: Any) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#profile option")).to_have_text(["Default", "Plain"])
    expect(page.locator("#profile")).to_have_value("default")
    banner = page.locator("#offline-banner")
    expect(banner).to_be_visible()
    expect(banner).to_have_text("Offline engine: answers are canned, no model is connected")

    # Shift+Enter adds a line and sends nothing.
    page.locator("#prompt").press_sequentially("line one")
    page.locator("#prompt").press("Shift+Enter")
    page.locator("#prompt").press_sequentially("line two")
    expect(page.locator("#prompt")).to_have_value("line one\nline two")
    expect(page.locator(".message.user")).to_have_count(0)
    expect(page).not_to_have_url(re.compile("conv_id"))

    page.evaluate(RECORD_ASSISTANT_TEXT)
    with page.expect_request(re.compile(r"/chat/default$")) as posted:
        send(page, "calc: 6*7")
    key = posted.value.headers.get("idempotency-key", "")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", key)
    expect(page).to_have_url(re.compile(r"\?conv_id=[0-9a-f-]{36}$"))
    expect(page.locator(".message.user")).to_have_text(["calc: 6*7"])
    expect(page.locator("#prompt")).to_have_value("")

    card = page.locator('.tool-card[data-tool-name="calculator"]')
    expect(card).to_have_count(1)
    expect(card.locator(".tool-name")).to_have_text("calculator")
    expect(card.locator(".tool-input")).to_contain_text('"expression": "6*7"')
    expect(card).to_have_attribute("data-status", "done", timeout=RUN_TIMEOUT)
    expect(card.locator(".tool-status")).to_have_text("done")
    expect(card.locator(".tool-result")).to_have_text("42")

    answer = page.locator(".assistant-text").last
    expect(answer).to_have_text("The result of 6*7 is 42.", timeout=RUN_TIMEOUT)
    expect(answer).to_have_attribute("data-final", "true")
    expect_run_ended(page)
    expect(banner).to_be_visible()  # the connected conversation's engine is offline too

    seen: list[str] = page.evaluate("window.__seen")
    partial = [t for t in seen if "The result" in t and not t.endswith("42.")]
    assert partial, f"the answer never showed a partial state: {sorted(set(seen))}"
    # The tool card sits between the two assistant messages, in the order they happened.
    texts = page.locator(".turn-body > .assistant-text, .turn-body > .tool-card")
    expect(texts).to_have_count(3)
    expect(texts.nth(0)).to_have_text("Let me calculate that.")
    expect(texts.nth(1)).to_have_class(re.compile("tool-card"))


def test_reload_mid_run_shows_the_whole_transcript(server: LiveServer, page: Any) -> None:
    page.goto(server.url + "/")
    send(page, "calc: 2+3")
    expect(page.locator(".assistant-text").last).to_have_text("The result of 2+3 is 5.")
    expect_run_ended(page)
    send(page, LONG_PROMPT)
    streaming = page.locator('.assistant-text[data-final="false"]')
    expect(streaming).to_contain_text("Offline reply to")
    conv_id = conv_id_of(page)
    url = page.url
    describe = httpx.get(f"{server.url}/api/conversations/{conv_id}", timeout=10).json()
    assert describe["running"] is True, "the run ended before the reload"

    page.reload()
    expect(page).to_have_url(url)
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect_run_ended(page)

    finals = [f["text"] for f in timeline(server, conv_id) if f["type"] == "llm.final"]
    assert len(finals) == 3  # "Let me calculate that.", the result, the long answer
    assert finals[-1].startswith("Offline reply to")
    expect(page.locator(".message.user")).to_have_text(["calc: 2+3", LONG_PROMPT])
    expect(page.locator(".turn")).to_have_count(2)
    expect(page.locator(".tool-card")).to_have_count(1)
    expect(page.locator(".assistant-text")).to_have_text(finals)
    expect(page.locator('.assistant-text[data-final="true"]')).to_have_count(3)


def test_reconnects_with_since_after_the_socket_drops(server: LiveServer, page: Any) -> None:
    page.add_init_script(TRACK_SOCKETS)
    page.goto(server.url + "/")
    send(page, LONG_PROMPT)
    expect(page.locator('.assistant-text[data-final="false"]')).to_contain_text("Offline reply")
    page.evaluate("window.__sockets.at(-1).close()")
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "reconnecting")
    expect(status).to_have_attribute("data-state", "connected")
    expect_run_ended(page)

    urls: list[str] = page.evaluate("window.__sockets.map((s) => s.url)")
    assert len(urls) == 2, urls
    first, second = (parse_qs(urlsplit(url).query) for url in urls)
    assert first["since"] == ["0"]
    assert second["conv_id"] == first["conv_id"] == [conv_id_of(page)]
    assert int(second["since"][0]) > 0  # resumed after the last frame seen, not replayed
    finals = [f["text"] for f in timeline(server, conv_id_of(page)) if f["type"] == "llm.final"]
    expect(page.locator(".message.user")).to_have_text([LONG_PROMPT])
    expect(page.locator(".assistant-text")).to_have_text(finals)


def scripted_frames() -> list[dict[str, Any]]:
    """A run with thinking, a failing tool, a warning, a failure and a stray error."""
    run = {"conv_id": "scripted-1", "session_id": "s1", "inference_id": "i1"}
    frames: list[dict[str, Any]] = [
        {"type": "chat.user_message", "id": "u1", "text": "Why?"},
        {"type": "run.started", "id": "r1", "profile": "default"},
        {"type": "llm.start", "id": "m1", "model": "gpt-test"},
        {"type": "llm.thinking.start", "id": "m1"},
        {"type": "llm.thinking.delta", "id": "m1", "delta": "Let me", "cumulative": "Let me"},
        {"type": "llm.thinking.final", "id": "m1", "text": "Let me think hard."},
        {"type": "llm.delta", "id": "m1", "delta": "Because", "cumulative": "Because"},
        {"type": "llm.final", "id": "m1", "text": "Because **reasons**.", "stop_reason": "stop"},
        {"type": "tool.start", "id": "t1", "name": "search", "input": {"q": "<b>x</b>"}},
        {"type": "tool.delta", "id": "t1", "status": "running"},
        {"type": "tool.result", "id": "t1", "result": None, "error": "boom"},
        {"type": "tool.done", "id": "t1"},
        {"type": "log", "id": "l1", "level": "warning", "message": "slow tool"},
        {"type": "run.failed", "id": "r2", "error": "engine exploded"},
    ]
    events = [{**run, **frame, "seq": seq} for seq, frame in enumerate(frames, start=1)]
    events.append({"type": "error", "seq": len(events) + 1, "error": "stream hiccup"})
    return events


def test_renders_thinking_tool_errors_and_failures(server: LiveServer, page: Any) -> None:
    events = scripted_frames()
    hello = {"type": "ws.hello", "conv_id": "scripted-1", "session_id": "s1"}
    hello["last_seq"] = len(events)  # everything below is replayed history
    hello |= {"profile": "default", "running": True, "engine": "openai", "model": "gpt-test"}
    sentinel = {"type": "log", "seq": 99, "level": "error", "message": "sentinel"}

    def fake_server(ws: Any) -> None:
        stale = [events[4], events[6]]  # thinking and text deltas older than their finals
        for event in [hello, *events, *stale, sentinel]:
            ws.send(json.dumps({"sem": True, "event": event}))

    page.route_web_socket(re.compile(r"/ws\?"), fake_server)
    page.goto(server.url + "/?conv_id=scripted-1")
    expect(page.locator(".log-line.error")).to_have_text("sentinel")

    expect(page.locator("#offline-banner")).to_be_hidden()  # this conversation is not offline
    expect(page.locator(".message.user")).to_have_text(["Why?"])
    expect(page.locator(".turn")).to_have_count(1)
    expect(page.locator(".turn-model")).to_have_text("gpt-test")
    thinking = page.locator(".thinking")
    expect(thinking).to_have_count(1)
    expect(thinking.locator("summary")).to_have_text("Thoughts")
    expect(thinking.locator(".thinking-text")).to_be_hidden()  # collapsed until opened
    thinking.locator("summary").click()
    expect(thinking.locator(".thinking-text")).to_have_text("Let me think hard.")
    answer = page.locator(".assistant-text")
    expect(answer).to_have_text(["Because reasons."])  # the re-delivered delta changed nothing
    expect(answer.locator("strong")).to_have_text("reasons")
    card = page.locator(".tool-card")
    expect(card).to_have_attribute("data-status", "error")
    expect(card.locator(".tool-input")).to_contain_text('"q": "<b>x</b>"')
    expect(card.locator(".tool-label").nth(1)).to_have_text("Error")
    expect(card.locator(".tool-result")).to_have_text("boom")
    expect(page.locator(".log-line.warning")).to_have_text("slow tool")
    # The failure shows in plain words, its technical text behind a toggle; the stray error
    # (outside any run) gets its own card, without Retry.
    errors = page.locator(".run-error")
    expect(errors).to_have_count(2)
    failed = page.locator(".turn .run-error")
    expect(failed.locator(".run-error-text")).to_have_text("Something went wrong while answering.")
    expect(failed.locator(".run-error-detail")).to_have_text("engine exploded")
    expect(failed.locator(".run-error-detail")).to_be_hidden()
    expect(failed.locator("button.retry")).to_be_visible()  # "Why?" can be sent again
    stray = page.locator("#transcript > .run-error")
    expect(stray.locator(".run-error-text")).to_have_text("Something went wrong.")
    expect(stray.locator(".run-error-detail")).to_have_text("stream hiccup")
    expect(stray.locator("button.retry")).to_have_count(0)
    expect(page.locator(".run-marker")).to_have_count(0)
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#messages b")).to_have_count(0)


def test_model_output_cannot_inject_html(server: LiveServer, page: Any) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(server.url + "/")
    send(page, "<img src=x onerror=alert(1)> <script>alert(2)</script> **bold** `x<y`")
    answer = page.locator(".assistant-text")
    expect(answer).to_have_attribute("data-final", "true", timeout=RUN_TIMEOUT)
    # The offline engine quotes the prompt: the markup shows as text, Markdown still works.
    expect(answer).to_contain_text('"<img src=x onerror=alert(1)> <script>alert(2)</script> bold')
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("code")).to_have_text("x<y")
    expect(page.locator(".message.user")).to_have_text(
        ["<img src=x onerror=alert(1)> <script>alert(2)</script> **bold** `x<y`"]
    )
    expect(page.locator("#messages img")).to_have_count(0)
    expect(page.locator("#messages script")).to_have_count(0)
    assert dialogs == []


MARKDOWN_CASES = """async () => {
  const md = await import(new URL("static/markdown.js", document.baseURI));
  const inputs = {
    bold: "**bold** and *it* and __strong__",
    code: "use `a<b>` here",
    fence: "```py\\nx = '<b>' & 1\\n```",
    link: "[site](https://example.com/?a=1&b=2)",
    bare: "see https://example.org/x.",
    jslink: "[click](javascript:alert(1))",
    escape: "<script>alert(\\"x\\")</script> it's",
    breakout: "[a](https://e.com/\\"onmouseover=\\"alert(1)) <a href=x>y</a>",
    blocks: "# Title\\n\\n- one\\n- two\\n\\n1. first\\n\\nline a\\nline b",
  };
  const out = {};
  const tags = new Set();
  const attrs = new Set();
  for (const [name, source] of Object.entries(inputs)) {
    out[name] = md.renderMarkdown(source);
    const doc = new DOMParser().parseFromString(out[name], "text/html");
    for (const node of doc.body.querySelectorAll("*")) {
      tags.add(node.tagName.toLowerCase());
      for (const attr of node.attributes) attrs.add(attr.name);
    }
  }
  out.escapeHtml = md.escapeHtml(`<a href="x" title='y'>&</a>`);
  return { out, tags: [...tags].sort(), attrs: [...attrs].sort() };
}"""


def test_markdown_renderer(server: LiveServer, page: Any) -> None:
    page.goto(server.url + "/")
    result = page.evaluate(MARKDOWN_CASES)
    out = result["out"]
    link = '<a href="{0}" target="_blank" rel="noopener noreferrer">{1}</a>'
    assert out["bold"] == "<p><strong>bold</strong> and <em>it</em> and <strong>strong</strong></p>"
    assert out["code"] == "<p>use <code>a&lt;b&gt;</code> here</p>"
    fence = '<pre><code class="language-py">x = &#39;&lt;b&gt;&#39; &amp; 1</code></pre>'
    assert out["fence"] == fence
    assert out["link"] == "<p>" + link.format("https://example.com/?a=1&amp;b=2", "site") + "</p>"
    assert out["bare"] == "<p>see " + link.format(*["https://example.org/x"] * 2) + ".</p>"
    assert "<a" not in out["jslink"] and "javascript:alert(1)" in out["jslink"]
    assert out["escape"] == "<p>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; it&#39;s</p>"
    assert 'onmouseover="' not in out["breakout"] and "&lt;a href=x&gt;" in out["breakout"]
    assert out["blocks"] == (
        "<h1>Title</h1><ul><li>one</li><li>two</li></ul><ol><li>first</li></ol>"
        "<p>line a<br>line b</p>"
    )
    assert out["escapeHtml"] == "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
    allowed_tags = {"a", "br", "code", "em", "h1", "li", "ol", "p", "pre", "strong", "ul"}
    assert set(result["tags"]) <= allowed_tags, result["tags"]
    assert set(result["attrs"]) <= {"class", "href", "rel", "target"}, result["attrs"]


def test_stop_cancels_and_new_chat_starts_over(server: LiveServer, page: Any) -> None:
    page.goto(server.url + "/")
    send(page, LONG_PROMPT)
    stop = page.locator("#stop")
    expect(page.locator('.assistant-text[data-final="false"]')).to_contain_text("Offline reply")
    expect(stop).to_be_visible()
    stop.click()
    marker = page.locator(".run-marker.cancelled")
    expect(marker).to_have_text("Cancelled")
    expect_run_ended(page)
    conv_id = conv_id_of(page)
    assert [f["type"] for f in timeline(server, conv_id)][-1] == "run.cancelled"

    listed = page.locator(f'#conversations li[data-conv-id="{conv_id}"]')
    expect(listed).to_be_visible()
    expect(listed).to_contain_text(LONG_PROMPT[:20])
    expect(listed).to_have_attribute("aria-current", "page")

    page.locator("#new-chat").click()
    expect(page.locator("#transcript > *")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    expect(page).not_to_have_url(re.compile("conv_id"))
    expect(page.locator("#title")).to_have_text("New chat")
    expect(listed).not_to_have_attribute("aria-current", "page")

    # The list takes you back to the conversation, transcript and all.
    listed.locator(".conversation-button").click()
    expect(page).to_have_url(re.compile(f"conv_id={conv_id}$"))
    expect(page.locator(".message.user")).to_have_text([LONG_PROMPT])
    expect(page.locator(".run-marker.cancelled")).to_have_count(1)


def test_override_panel_follows_the_profile(server: LiveServer, page: Any) -> None:
    page.goto(server.url + "/")
    panel = page.locator("#override-panel")
    expect(panel).to_be_visible()
    page.locator("#profile").select_option("plain")
    expect(panel).to_be_hidden()
    page.locator("#profile").select_option("default")
    expect(panel).to_be_visible()
    panel.locator("summary").click()
    page.locator("#system-prompt").fill("You are a pirate.")
    send(page, "calc: 1+1")
    expect(page.locator(".assistant-text").last).to_have_text("The result of 1+1 is 2.")
    conv_id = conv_id_of(page)
    turns = httpx.get(f"{server.url}/api/conversations/{conv_id}", timeout=10).json()["turns"]
    systems = [b["payload"]["text"] for t in turns for b in t["blocks"] if b["kind"] == "system"]
    assert systems == ["You are a pirate."]


def test_ui_under_a_url_prefix(profiles_yaml: Path, tmp_path: Path, page: Any) -> None:
    db = str(tmp_path / "db.sqlite3")
    with live_server(db=db, profiles=str(profiles_yaml), root="/chat") as server:
        assert server.url.endswith("/chat")
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(server.url + "/")
        expect(page.locator("#profile option")).to_have_count(2)
        send(page, "calc: 6*7")
        expect(page.locator(".assistant-text").last).to_have_text(
            "The result of 6*7 is 42.", timeout=RUN_TIMEOUT
        )
        expect_run_ended(page)
        assert page.url.startswith(server.url + "/?conv_id=")
        assert sockets and all(s.startswith(server.ws_url + "/ws?") for s in sockets), sockets
        expect(page.locator("#conversations li")).to_have_count(1)
