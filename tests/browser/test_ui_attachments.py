"""Attachments in the chat UI (issue 11), against the real server and a scripted OpenAI
endpoint: a PNG picked with the file input reaches the model as an ``image_url`` data URL and
shows as a thumbnail in the sent message (after a reload too); a text file shows as a chip;
a refused kind (SVG) shows the server's 415 message in the composer.

Every wait is a Playwright expectation with a deadline.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser import helpers
from tests.browser.helpers import FakeOpenAI, scripted_profiles, serve_profiles
from tests.support.fake_openai import Scenario, text_events
from tests.support.live_server import LiveServer

RUN_TIMEOUT = 20_000

# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, FakeOpenAI]]:
    with FakeOpenAI(Scenario(events=text_events(["Nice", " picture."]))) as fake:
        directory = tmp_path_factory.mktemp("ui-attachments")
        profiles = scripted_profiles(fake)
        with serve_profiles(directory, profiles, openai_api_key="sk-test") as server:
            yield server, fake


def open_app(page: Any, server: LiveServer) -> None:
    helpers.open_app(page, server, profiles=1)


def send(page: Any, text: str) -> Any:
    before = page.locator(".turn").count()
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")
    turn = page.locator(".turn").nth(before)
    expect(turn).to_have_attribute("data-state", "finished", timeout=RUN_TIMEOUT)
    expect(page.locator("body")).to_have_attribute("data-running", "false")
    return turn


def image_urls(request: dict[str, Any]) -> list[str]:
    urls = []
    for message in request["messages"]:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, list):
            urls += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    return urls


def test_png_reaches_the_model_and_shows_a_thumbnail(
    page: Any, scripted: tuple[LiveServer, FakeOpenAI], tmp_path: Path
) -> None:
    server, fake = scripted
    png = tmp_path / "dot.png"
    png.write_bytes(PNG)
    open_app(page, server)
    expect(page.locator("#attach")).to_have_accessible_name("Attach files")
    page.locator("#attach-input").set_input_files(str(png))
    chip = page.locator("#attachments .attachment-chip")
    expect(chip).to_have_count(1)
    expect(chip).to_contain_text("dot.png")
    expect(chip).to_have_attribute("data-state", "done")

    before = len(fake.scenario.requests)
    send(page, "what is in this picture?")
    assert len(fake.scenario.requests) == before + 1
    urls = image_urls(fake.scenario.requests[-1])
    assert urls == [f"data:image/png;base64,{base64.b64encode(PNG).decode()}"]

    thumb = page.locator(".message.user .message-attachments img")
    expect(thumb).to_have_count(1)
    expect(thumb).to_have_attribute("alt", "dot.png")
    expect(page.locator("#attachments")).to_be_hidden()  # the chips went with the message
    loaded = "el => el.complete && el.naturalWidth === 1"
    page.wait_for_function(loaded, arg=thumb.element_handle(), timeout=10_000)

    page.reload()  # from history: the same thumbnail
    thumb = page.locator(".message.user .message-attachments img")
    expect(thumb).to_have_count(1)
    expect(thumb).to_have_attribute("alt", "dot.png")


def test_text_file_shows_a_chip(
    page: Any, scripted: tuple[LiveServer, FakeOpenAI], tmp_path: Path
) -> None:
    server, fake = scripted
    notes = tmp_path / "notes.txt"
    notes.write_text("remember the milk\n")
    open_app(page, server)
    page.locator("#attach-input").set_input_files(str(notes))
    expect(page.locator("#attachments .attachment-chip")).to_have_attribute("data-state", "done")
    send(page, "summarise my notes")
    sent = fake.scenario.requests[-1]["messages"][-1]
    assert "remember the milk" in str(sent["content"])
    chip = page.locator(".message.user .message-attachments a.attachment-chip")
    expect(chip).to_have_text("notes.txt")
    expect(chip).to_have_attribute("href", re.compile(r"/attachments/[^/]+$"))
    expect(page.locator(".message.user .message-attachments img")).to_have_count(0)


def test_refused_kind_shows_the_error_and_can_be_removed(
    page: Any, scripted: tuple[LiveServer, FakeOpenAI], tmp_path: Path
) -> None:
    server, _ = scripted
    svg = tmp_path / "logo.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg"></svg>')
    open_app(page, server)
    with page.expect_response(lambda r: "/attachments" in r.url) as info:
        page.locator("#attach-input").set_input_files(str(svg))
    assert info.value.status == 415
    notice = page.locator("#notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("logo.svg")
    expect(notice).to_contain_text("is not an accepted file")  # the server's own message
    expect(page.locator("#attachments .attachment-chip")).to_have_count(0)

    png = tmp_path / "dot.png"
    png.write_bytes(PNG)
    page.locator("#attach-input").set_input_files(str(png))
    chip = page.locator("#attachments .attachment-chip")
    expect(chip).to_have_attribute("data-state", "done")
    chip.get_by_role("button", name="Remove dot.png").click()
    expect(chip).to_have_count(0)
    expect(page.locator("#attachments")).to_be_hidden()


def test_drop_and_paste_upload(page: Any, scripted: tuple[LiveServer, FakeOpenAI]) -> None:
    server, _ = scripted
    open_app(page, server)
    make = """name => {
        const dt = new DataTransfer();
        dt.items.add(new File(["some text\\n"], name, { type: "text/plain" }));
        return dt;
    }"""
    dropped = page.evaluate_handle(make, "dropped.txt")
    page.dispatch_event("#transcript", "drop", {"dataTransfer": dropped})
    page.locator("#prompt").evaluate(
        """(field, dt) => field.dispatchEvent(
            new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }))""",
        page.evaluate_handle(make, "pasted.txt"),
    )
    chips = page.locator("#attachments .attachment-chip")
    expect(chips).to_have_count(2)
    expect(chips.nth(0)).to_contain_text("dropped.txt")
    expect(chips.nth(1)).to_contain_text("pasted.txt")
    for index in range(2):
        expect(chips.nth(index)).to_have_attribute("data-state", "done")
    send(page, "two files")
    expect(page.locator(".message.user .message-attachments a.attachment-chip")).to_have_count(2)


POLICY_PROFILES = """\
profiles:
  - slug: open
    display_name: Open
    step_settings: {api_type: offline}
  - slug: closed
    display_name: Closed
    step_settings: {api_type: offline}
    attachments: {enabled: false}
  - slug: pictures
    display_name: Pictures
    step_settings: {api_type: offline}
    attachments: {kinds: [image]}
"""

DATA_TRANSFER = """([name, type]) => {
    const dt = new DataTransfer();
    dt.items.add(new File(["some text\\n"], name, { type }));
    return dt;
}"""


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("ui-attachment-policies")
    with serve_profiles(directory, POLICY_PROFILES, attachment_max_bytes=4096) as server:
        yield server


def test_the_profile_decides_what_may_be_attached(
    page: Any, policies: LiveServer, tmp_path: Path
) -> None:
    """The paperclip and ``accept`` follow the profile; a dropped or pasted file it refuses is
    turned away with a notice and never uploaded."""
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.url) if r.method == "POST" else None)
    helpers.open_app(page, policies, profiles=3, profile="open")
    attach, field = page.locator("#attach"), page.locator("#attach-input")
    notice = page.locator("#notice")
    expect(attach).to_be_visible()
    expect(field).to_have_attribute("accept", re.compile(r"^image/png,.*text/\*,.*\.md"))

    page.locator("#profile").select_option("closed")
    expect(attach).to_be_hidden()
    page.dispatch_event(
        "#transcript", "drop", {"dataTransfer": page.evaluate_handle(DATA_TRANSFER, ["a.txt", ""])}
    )
    expect(notice).to_have_text("Closed does not accept attachments.")

    page.locator("#profile").select_option("pictures")
    expect(attach).to_be_visible()
    expect(field).to_have_attribute("accept", "image/png,image/jpeg,image/webp,image/gif")
    page.locator("#prompt").evaluate(
        """(field, dt) => field.dispatchEvent(
            new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }))""",
        page.evaluate_handle(DATA_TRANSFER, ["notes.md", "text/markdown"]),
    )
    expect(notice).to_have_text("notes.md was not attached: Pictures accepts image files only.")
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\0" * 5000)
    field.set_input_files(str(big))
    expect(notice).to_have_text("big.png was not attached: it is 5 KB, the limit is 4 KB.")
    expect(page.locator("#attachments .attachment-chip")).to_have_count(0)
    assert uploads == []  # every refusal was the page's own

    png = tmp_path / "dot.png"
    png.write_bytes(PNG)
    field.set_input_files(str(png))
    expect(page.locator("#attachments .attachment-chip")).to_have_attribute("data-state", "done")
    assert len(uploads) == 1 and uploads[0].endswith("/attachments?profile=pictures")
