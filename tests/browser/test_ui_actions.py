"""Message and conversation actions in the chat UI (issue 11), against the real server:
regenerate and edit make branches that the page switches between ("< n / m >"), feedback
survives a reload, rename, search, delete (seen by a second open tab), and the profile's
starters.

Every wait is a Playwright expectation, a response or a polled condition with a deadline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser import helpers
from tests.browser.helpers import FakeOpenAI, scripted_profiles, serve_profiles
from tests.support.fake_openai import Scenario, text_events
from tests.support.live_server import LiveServer

RUN_TIMEOUT = 20_000

PROFILES_YAML = """\
profiles:
  - slug: default
    display_name: Default
    step_settings: {api_type: offline, tokens_per_second: 300, answer_tokens: 10}
    starters:
      - Plan a picnic for four
      - Explain recursion simply
  - slug: bare
    display_name: Bare
    step_settings: {api_type: offline, tokens_per_second: 300, answer_tokens: 10}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve_profiles(tmp_path_factory.mktemp("ui-actions"), PROFILES_YAML) as running:
        yield running


def conv_id_of(page: Any) -> str:
    ids = parse_qs(urlsplit(page.url).query).get("conv_id", [])
    assert len(ids) == 1, f"no conv_id in {page.url}"
    conv_id: str = ids[0]
    return conv_id


def chat(page: Any, text: str) -> None:
    """Send ``text`` and wait for the whole answer."""
    before = page.locator(".turn").count()
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")
    turn = page.locator(".turn").nth(before)
    expect(turn).to_have_attribute("data-state", "finished", timeout=RUN_TIMEOUT)
    expect(turn.locator(".assistant-text")).to_contain_text(f'Offline reply to "{text}"')
    expect(page.locator("body")).to_have_attribute("data-running", "false")


def describe(server: LiveServer, conv_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/conversations/{conv_id}", timeout=10)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def open_app(page: Any, server: LiveServer) -> None:
    helpers.open_app(page, server, profiles=2)


def turn_ids(page: Any) -> list[str]:
    ids: list[str] = page.locator(".turn").evaluate_all("(ts) => ts.map((t) => t.dataset.turnId)")
    return ids


# -- branches --------------------------------------------------------------------------------------


def test_regenerate_then_switch_back_to_the_first_answer(server: LiveServer, page: Any) -> None:
    open_app(page, server)
    chat(page, "first question")
    chat(page, "second question")
    conv_id = conv_id_of(page)
    first, second = turn_ids(page)
    assert first and second

    last = page.locator(".turn").last
    last.hover()
    regenerate = last.locator("button.regenerate")
    expect(regenerate).to_be_visible()
    expect(page.locator(".turn").first.locator("button.regenerate")).to_be_hidden()
    with page.expect_request(re.compile(r"/chat/default$")) as posted:
        regenerate.click()
    body = json.loads(posted.value.post_data or "{}")
    assert body["prompt"] == "second question"
    assert body["parent_turn_id"] == first
    assert body["conv_id"] == conv_id

    # The old answer leaves the screen; the new one streams in its place.
    expect(page.locator(".turn").last).not_to_have_attribute("data-turn-id", second)
    expect(page.locator(".turn")).to_have_count(2)
    expect(page.locator(".turn").last).to_have_attribute(
        "data-state", "finished", timeout=RUN_TIMEOUT
    )
    regenerated = turn_ids(page)[1]
    assert regenerated not in (first, second)
    expect(page.locator(".message.user .bubble")).to_have_text(
        ["first question", "second question"]
    )
    nav = page.locator(".turn").last.locator(".branch-nav")
    expect(nav.locator(".branch-label")).to_have_text("2 / 2")
    tree = describe(server, conv_id)
    assert tree["children"][first] == [second, regenerated]

    # Back to the first answer: the transcript is that branch's.
    nav.locator(".branch-prev").click()
    expect(page.locator(".turn").last).to_have_attribute("data-turn-id", second)
    expect(page.locator(".turn").last.locator(".branch-label")).to_have_text("1 / 2")
    expect(page.locator(".turn")).to_have_count(2)
    expect(page.locator(".message.user")).to_have_count(2)
    expect(page.locator(".turn").first).to_have_attribute("data-turn-id", first)
    # And forward again.
    page.locator(".turn").last.locator(".branch-next").click()
    expect(page.locator(".turn").last).to_have_attribute("data-turn-id", regenerated)

    # A reload shows the current branch (the newest) with its switch.
    page.reload()
    expect(page.locator(".turn")).to_have_count(2)
    expect(page.locator(".turn").last).to_have_attribute("data-turn-id", regenerated)
    expect(page.locator(".turn").last.locator(".branch-label")).to_have_text("2 / 2")


def test_edit_an_early_message_branches_from_its_parent(server: LiveServer, page: Any) -> None:
    open_app(page, server)
    chat(page, "alpha")
    chat(page, "beta")
    conv_id = conv_id_of(page)
    first, _second = turn_ids(page)

    message = page.locator(".message.user").first
    message.hover()
    message.locator("button.edit-message").click()
    editor = message.locator("textarea.edit-text")
    expect(editor).to_have_value("alpha")
    editor.fill("alpha, edited")
    with page.expect_request(re.compile(r"/chat/default$")) as posted:
        editor.press("Enter")
    body = json.loads(posted.value.post_data or "{}")
    assert body["prompt"] == "alpha, edited"
    assert body["parent_turn_id"] == ""  # the first message: a new root

    expect(page.locator(".message.user .bubble")).to_have_text(["alpha, edited"])
    expect(page.locator(".turn")).to_have_count(1)
    expect(page.locator(".turn")).to_have_attribute("data-state", "finished", timeout=RUN_TIMEOUT)
    expect(page.locator(".turn .assistant-text")).to_contain_text(
        'Offline reply to "alpha, edited"'
    )
    edited = turn_ids(page)[0]
    nav = page.locator(".message.user").first.locator(".branch-nav")
    expect(nav.locator(".branch-label")).to_have_text("2 / 2")
    tree = describe(server, conv_id)
    assert tree["children"][""] == [first, edited]
    # The edited branch's history is its own: one turn from the root.
    branch = httpx.get(
        f"{server.url}/api/conversations/{conv_id}", params={"branch": edited}, timeout=10
    ).json()
    assert [t["id"] for t in branch["turns"]] == [edited]

    # Back to the original: both of its messages return.
    nav.locator(".branch-prev").click()
    expect(page.locator(".message.user .bubble")).to_have_text(["alpha", "beta"])
    expect(page.locator(".turn")).to_have_count(2)

    # Cancel leaves the message as it was.
    second_message = page.locator(".message.user").nth(1)
    second_message.hover()
    second_message.locator("button.edit-message").click()
    second_message.locator("textarea.edit-text").fill("never sent")
    second_message.locator("button.edit-cancel").click()
    expect(page.locator(".message.user .bubble")).to_have_text(["alpha", "beta"])


def test_the_model_receives_the_edited_branch_history_only(
    tmp_path_factory: pytest.TempPathFactory, page: Any
) -> None:
    """A scripted OpenAI-compatible server records what the engine sends: after an edit of
    the second message, the history is the first exchange and the edited text, never the
    message it replaced."""
    with FakeOpenAI(Scenario(events=text_events(["Sure", ", noted."]))) as fake:
        directory = tmp_path_factory.mktemp("ui-actions-openai")
        profiles = scripted_profiles(fake)
        with serve_profiles(directory, profiles, openai_api_key="sk-test") as server:
            helpers.open_app(page, server, profiles=1)
            for index, text in enumerate(["my name is Ada", "what is my name?"]):
                page.locator("#prompt").fill(text)
                page.locator("#prompt").press("Enter")
                turn = page.locator(".turn").nth(index)
                expect(turn).to_have_attribute("data-state", "finished", timeout=RUN_TIMEOUT)
            expect(page.locator("body")).to_have_attribute("data-running", "false")
            assert len(fake.scenario.requests) == 2

            message = page.locator(".message.user").nth(1)
            message.hover()
            message.locator("button.edit-message").click()
            message.locator("textarea.edit-text").fill("what do you know about me?")
            message.locator("button.edit-save").click()
            expect(page.locator(".message.user .bubble")).to_have_text(
                ["my name is Ada", "what do you know about me?"]
            )
            expect(page.locator(".turn").last).to_have_attribute(
                "data-state", "finished", timeout=RUN_TIMEOUT
            )
            expect(page.locator(".message.user").nth(1).locator(".branch-label")).to_have_text(
                "2 / 2"
            )
            assert len(fake.scenario.requests) == 3
            sent = [
                (m["role"], m["content"])
                for m in fake.scenario.requests[-1]["messages"]
                if m["role"] in ("user", "assistant")
            ]
            assert sent == [
                ("user", "my name is Ada"),
                ("assistant", "Sure, noted."),
                ("user", "what do you know about me?"),
            ], sent


# -- feedback ------------------------------------------------------------------------------------


def test_feedback_survives_a_reload(server: LiveServer, page: Any) -> None:
    open_app(page, server)
    chat(page, "rate me")
    conv_id = conv_id_of(page)
    (turn_id,) = turn_ids(page)
    turn = page.locator(".turn")
    up = turn.locator("button.feedback-up")
    expect(up).to_have_attribute("aria-pressed", "false")
    with page.expect_response(re.compile(r"/feedback$")) as saved:
        up.click()
    assert saved.value.status == 200, saved.value.text()
    expect(up).to_have_attribute("aria-pressed", "true")
    comment = turn.locator("textarea.feedback-comment")
    comment.fill("Clear and short")
    with page.expect_response(re.compile(r"/feedback$")) as saved:
        turn.locator("button.feedback-save").click()
    assert saved.value.status == 200
    assert json.loads(saved.value.request.post_data or "{}") == {
        "rating": "up",
        "comment": "Clear and short",
    }

    page.reload()
    expect(page.locator(".turn")).to_have_count(1)
    expect(page.locator(".turn button.feedback-up")).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".turn button.feedback-down")).to_have_attribute("aria-pressed", "false")
    expect(page.locator(".turn button.feedback-up")).to_have_attribute(
        "title", re.compile("Clear and short")
    )
    stored = httpx.get(f"{server.url}/api/conversations/{conv_id}/feedback", timeout=10).json()
    assert stored[turn_id]["rating"] == "up"
    assert stored[turn_id]["comment"] == "Clear and short"

    # Thumbs down replaces it.
    with page.expect_response(re.compile(r"/feedback$")):
        page.locator(".turn button.feedback-down").click()
    expect(page.locator(".turn button.feedback-up")).to_have_attribute("aria-pressed", "false")
    stored = httpx.get(f"{server.url}/api/conversations/{conv_id}/feedback", timeout=10).json()
    assert stored[turn_id]["rating"] == "down"


# -- conversation management ----------------------------------------------------------------------


def open_menu(page: Any) -> None:
    page.locator("#conv-menu-button").click()
    expect(page.locator("#conv-menu-list")).to_be_visible()


def two_conversations(page: Any, server: LiveServer, first: str, second: str) -> tuple[str, str]:
    """A conversation that says ``first``, then a new chat that says ``second`` (left open);
    their ids."""
    open_app(page, server)
    chat(page, first)
    earlier = conv_id_of(page)
    page.locator("#new-chat").click()
    chat(page, second)
    return earlier, conv_id_of(page)


def type_title(page: Any, field: Any, conv_id: str, title: str) -> None:
    """Type ``title`` into the focused rename ``field``, Enter, and wait for its PATCH."""
    expect(field).to_be_focused()
    field.fill(title)
    with page.expect_response(
        lambda r: r.request.method == "PATCH" and r.url.endswith(f"/api/conversations/{conv_id}")
    ) as renamed:
        field.press("Enter")
    assert renamed.value.status == 200, renamed.value.text()


def test_rename_from_the_conversation_menu(server: LiveServer, page: Any) -> None:
    open_app(page, server)
    chat(page, "a conversation to rename")
    conv_id = conv_id_of(page)
    open_menu(page)
    page.locator("#conv-rename").click()
    type_title(page, page.locator("#title input"), conv_id, "Picnic plans")
    expect(page.locator("#title")).to_have_text("Picnic plans")
    listed = page.locator(f'#conversations .conversation[data-conv-id="{conv_id}"]')
    expect(listed.locator(".conversation-title")).to_have_text("Picnic plans")
    page.reload()
    expect(page.locator("#title")).to_have_text("Picnic plans")

    # Export links point at the conversation.
    open_menu(page)
    href = page.locator("#conv-export-markdown").get_attribute("href") or ""
    assert href.endswith(f"/api/conversations/{conv_id}/export?format=markdown")
    exported = httpx.get(href, timeout=10)
    assert exported.status_code == 200
    assert "a conversation to rename" in exported.text


def test_rename_and_delete_another_conversation_from_its_row(server: LiveServer, page: Any) -> None:
    """Each row has its own "…" menu, usable from the keyboard; it acts on that row's
    conversation while another one stays open."""
    other, current = two_conversations(page, server, "the row to act on", "the open conversation")
    title = page.locator("#title").inner_text()
    row = page.locator(f'#conversations .conversation[data-conv-id="{other}"]')
    toggle = row.get_by_role("button", name=re.compile("^Actions for "))
    expect(toggle).to_have_attribute("aria-haspopup", "menu")
    menu = row.get_by_role("menu")
    expect(menu).to_be_hidden()

    toggle.focus()
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(row.get_by_role("menuitem", name="Rename")).to_be_focused()
    page.keyboard.press("ArrowDown")
    markdown = row.get_by_role("menuitem", name="Export as Markdown")
    expect(markdown).to_be_focused()
    href = markdown.get_attribute("href") or ""
    assert href.endswith(f"/api/conversations/{other}/export?format=markdown")
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(toggle).to_be_focused()

    page.keyboard.press("Enter")
    page.keyboard.press("Enter")  # Rename, the first item
    field = row.get_by_role("textbox", name="Conversation title")
    type_title(page, field, other, "Renamed from its row")
    expect(row.locator(".conversation-title")).to_have_text("Renamed from its row")
    listing = httpx.get(f"{server.url}/api/conversations", timeout=10).json()["conversations"]
    assert {c["conv_id"]: c["title"] for c in listing}[other] == "Renamed from its row"
    expect(page.locator("#title")).to_have_text(title)  # the open one is untouched

    row.hover()
    toggle.click()
    delete = row.get_by_role("menuitem", name="Delete")
    delete.click()
    expect(delete).to_have_text("Delete for good?")
    with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        delete.click()
    assert deleted.value.status == 200, deleted.value.text()
    assert deleted.value.url.endswith(f"/api/conversations/{other}")
    expect(row).to_have_count(0)
    assert httpx.get(f"{server.url}/api/conversations/{other}", timeout=10).status_code == 404
    assert conv_id_of(page) == current
    expect(page.locator(".message.user .bubble")).to_have_text(["the open conversation"])
    listed = page.locator(f'#conversations .conversation[data-conv-id="{current}"]')
    expect(listed).to_have_count(1)


def test_search_finds_conversations_by_their_text(server: LiveServer, page: Any) -> None:
    zebra, giraffe = two_conversations(page, server, "zebra crossing rules", "giraffe neck length")

    search = page.locator("#search")
    search.fill("zebra")
    items = page.locator("#conversations .conversation")
    expect(items).to_have_count(1)
    expect(items).to_have_attribute("data-conv-id", zebra)
    expect(page.locator("#conversations .day-label")).to_contain_text(["zebra"])
    search.fill("neck")
    expect(items).to_have_attribute("data-conv-id", giraffe)
    search.fill("nothing-like-this-anywhere")
    expect(items).to_have_count(0)
    expect(page.locator("#conversations-empty")).to_have_text("Nothing found.")
    search.press("Escape")
    expect(search).to_have_value("")
    expect(page.locator(f'#conversations .conversation[data-conv-id="{zebra}"]')).to_have_count(1)
    expect(page.locator(f'#conversations .conversation[data-conv-id="{giraffe}"]')).to_have_count(1)
    # A result opens its conversation.
    search.fill("zebra")
    expect(items).to_have_count(1)
    expect(items).to_have_attribute("data-conv-id", zebra)
    items.first.locator(".conversation-button").click()
    expect(page).to_have_url(re.compile(f"conv_id={zebra}$"))
    expect(page.locator(".message.user .bubble")).to_have_text(["zebra crossing rules"])


def test_delete_removes_the_conversation_in_another_open_tab(server: LiveServer, page: Any) -> None:
    open_app(page, server)
    chat(page, "to be deleted")
    conv_id = conv_id_of(page)
    other = page.context.new_page()
    errors: list[str] = []
    other.on("pageerror", lambda exc: errors.append(str(exc)))
    other.goto(page.url)
    expect(other.locator(".message.user .bubble")).to_have_text(["to be deleted"])
    expect(other.locator("#status")).to_have_attribute("data-state", "connected")
    listed = f'#conversations .conversation[data-conv-id="{conv_id}"]'
    expect(other.locator(listed)).to_have_count(1)

    open_menu(page)
    delete = page.locator("#conv-delete")
    delete.click()
    expect(delete).to_have_text("Delete for good?")
    with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        delete.click()
    assert deleted.value.status == 200, deleted.value.text()
    for tab in (page, other):
        expect(tab).not_to_have_url(re.compile("conv_id"))
        expect(tab.locator(listed)).to_have_count(0)
        expect(tab.locator("#transcript > *")).to_have_count(0)
        expect(tab.locator("#title")).to_have_text("New chat")
    expect(other.locator("#notice")).to_have_text("This conversation was deleted.")
    assert httpx.get(f"{server.url}/api/conversations/{conv_id}", timeout=10).status_code == 404
    assert not errors, errors


# -- starters ------------------------------------------------------------------------------------


def test_starters_of_the_profile_on_the_empty_page(server: LiveServer, page: Any) -> None:
    open_app(page, server)
    starters = page.locator("#starters .starter")
    expect(starters).to_have_text(["Plan a picnic for four", "Explain recursion simply"])
    page.locator("#profile").select_option("bare")
    expect(page.locator("#starters")).to_be_hidden()
    page.locator("#profile").select_option("default")
    starters.nth(1).click()
    expect(page.locator(".message.user .bubble")).to_have_text(["Explain recursion simply"])
    expect(page.locator("#starters")).to_be_hidden()
    expect(page.locator(".turn")).to_have_attribute("data-state", "finished", timeout=RUN_TIMEOUT)
