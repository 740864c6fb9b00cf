"""``--auth oidc`` in a real headless Chromium: the UI sends an unknown reader to the log-in
page, the log-in page to the provider (``oidc-provider-mock``, a real OpenID Connect provider
on localhost), the provider back to webchat, and the signed-in reader chats.

Every wait is a Playwright expectation with a timeout: no fixed sleeps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.test_ui import RECORD_ASSISTANT_TEXT, RUN_TIMEOUT, expect_run_ended, send
from tests.support.live_server import LiveServer, live_server
from tests.support.oidc_provider import PROVIDER_WARNINGS, OidcProvider, oidc_provider
from webchat.auth.sessions import SESSION_COOKIE

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with oidc_provider() as running:
        running.set_user(
            "alice",
            {"preferred_username": "alice", "email": "alice@example.org", "groups": ["admins"]},
        )
        yield running


@pytest.fixture(scope="module")
def oidc_server(
    tmp_path_factory: pytest.TempPathFactory, profiles_yaml: Path, provider: OidcProvider
) -> Iterator[LiveServer]:
    db = tmp_path_factory.mktemp("oidc-db") / "db.sqlite3"
    with live_server(
        db=str(db),
        profiles=str(profiles_yaml),
        auth="oidc",
        oidc_issuer=provider.issuer,
        oidc_client_id="webchat",
        oidc_client_secret="s3cret",
        admin_groups=["admins"],
        allowed_hosts=["127.0.0.1", "localhost"],
    ) as running:
        yield running


def sign_in_at_the_provider(page: Any, provider: OidcProvider, sub: str) -> None:
    """The provider's authorize page: type a subject, press Authorize."""
    expect(page).to_have_url(re.compile("^" + re.escape(provider.issuer + "/oauth2/authorize?")))
    page.locator('input[name="sub"]').fill(sub)
    page.get_by_role("button", name="Authorize").click()


def test_log_in_with_the_provider_then_chat(
    oidc_server: LiveServer, provider: OidcProvider, page: Any
) -> None:
    page.goto(oidc_server.url + "/")
    # Not signed in: the log-in page, offering the provider.
    expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)$"))
    link = page.locator("#oidc-login")
    expect(link).to_be_visible()
    expect(page.locator("#login-form")).to_be_hidden()
    link.click()

    sign_in_at_the_provider(page, provider, "alice")

    # Back at webchat, signed in as the provider said.
    expect(page).to_have_url(oidc_server.url + "/")
    expect(page.locator("#account")).to_be_visible()
    expect(page.locator("#account-name")).to_have_text("alice")
    expect(page.locator("#account-detail")).to_have_text("Administrator")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies[SESSION_COOKIE]["httpOnly"] is True
    assert "webchat_oidc" not in cookies  # the log-in's own cookie is gone

    # And the chat works: the offline engine's answer streams in.
    expect(page.locator("#profile")).to_have_value("default")
    page.evaluate(RECORD_ASSISTANT_TEXT)
    send(page, "Hello there")
    expect(page.locator(".message.user")).to_have_text(["Hello there"])
    answer = page.locator(".assistant-text").last
    expect(answer).to_have_attribute("data-final", "true", timeout=RUN_TIMEOUT)
    expect_run_ended(page)
    final = answer.text_content() or ""
    assert final.strip()
    seen: list[str] = page.evaluate("window.__seen")
    assert any(t and t != final for t in seen), f"the answer never streamed: {set(seen)}"


def test_after_log_out_the_provider_is_asked_again(
    oidc_server: LiveServer, provider: OidcProvider, page: Any
) -> None:
    page.goto(oidc_server.url + "/")
    page.locator("#oidc-login").click()
    sign_in_at_the_provider(page, provider, "alice")
    expect(page.locator("#account-name")).to_have_text("alice")

    page.locator("#logout").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(oidc_server.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    # The next log-in goes through the provider again, as another subject this time.
    page.locator("#oidc-login").click()
    sign_in_at_the_provider(page, provider, "bob@example.org")
    expect(page.locator("#account-name")).to_have_text("bob@example.org")
    expect(page.locator("#account-detail")).to_have_text("bob@example.org")
