"""Authentication, seen from the browser: ``webchat serve --auth users|proxy`` as a real process.

- users: ``/`` sends a stranger to the log-in page; a wrong password is said on the page; a
  signed-in user chats and sees her name in the sidebar; Log out, a 401 or a WebSocket closed
  with 4401 send the page back to the log-in page (and back to where it was after signing in);
  ``next`` never leaves the server; another user does not see her conversations.
- proxy: a trusted proxy's ``X-Forwarded-User`` signs the browser in; from any other peer the
  header means nothing.
- cross-site: a page on another origin posting to the API with the user's cookie (a form, a
  no-cors fetch) is refused: the run it tried to cancel goes on and finishes.

Every wait is on the DOM, a response, a WebSocket frame or the server's answer, with deadlines.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.helpers import ServeProcess, running
from tests.support.redis_server import free_port

RUN_TIMEOUT = 15_000

PROFILES = """\
profiles:
  - slug: default
    display_name: Default
    step_settings: {api_type: offline}
  - slug: slow
    display_name: Slow
    step_settings: {api_type: offline, tokens_per_second: 40, answer_tokens: 240}
"""

PASSWORDS = {"alice": "alice-correct-horse", "bob": "bob-battery-staple"}
WRONG_PASSWORD = "Wrong user name or password."


# -- servers and browsers -------------------------------------------------------------------------


def add_user(users: Path, name: str, password: str) -> None:
    command = ["users", "add", name, "--password-stdin", "--users", str(users)]
    done = subprocess.run(
        [sys.executable, "-m", "webchat", *command],
        input=password.encode(),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def serving(directory: Path, *options: str) -> contextlib.AbstractContextManager[ServeProcess]:
    """``webchat serve`` with these options, in ``directory``, for one ``with`` block."""
    return running(ServeProcess.in_directory(directory, PROFILES, *options))


@pytest.fixture(scope="module")
def users_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    directory = tmp_path_factory.mktemp("auth-users")
    users = directory / "users.yaml"
    for name, password in PASSWORDS.items():
        add_user(users, name, password)
    with serving(directory, "--auth", "users", "--users", str(users)) as process:
        yield process


class Browsers:
    """Fresh browser contexts (each its own cookie jar) for one test; a JavaScript error in
    any of their pages fails the test."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def context(self, **options: Any) -> Any:
        context = self.browser.new_context(viewport={"width": 1200, "height": 800}, **options)
        context.set_default_timeout(10_000)
        context.on("page", self._watch)
        self.contexts.append(context)
        return context

    def page(self, **options: Any) -> Any:
        return self.context(**options).new_page()

    def _watch(self, page: Any) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsers(browser: Any) -> Iterator[Browsers]:
    opened = Browsers(browser)
    try:
        yield opened
    finally:
        opened.close()
    assert not opened.errors, f"JavaScript errors in the page: {opened.errors}"


# -- what the tests do in the page ----------------------------------------------------------------


class Frames:
    """Every event the page's WebSockets received, in order."""

    def __init__(self, page: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.closes: list[int | None] = []
        page.on("websocket", self._socket)

    def _socket(self, ws: Any) -> None:
        ws.on("framereceived", self._frame)

    def _frame(self, payload: str | bytes) -> None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            event = json.loads(payload)["event"]
            if isinstance(event, dict):
                self.events.append(event)

    def types(self, inference_id: str | None = None) -> list[str]:
        return [
            e["type"]
            for e in self.events
            if inference_id is None or e.get("inference_id") == inference_id
        ]


def login_url(server: ServeProcess, next_path: str | None = "/") -> str:
    """The log-in page as the server's redirect writes it."""
    if next_path is None:
        return f"{server.url}/login"
    return f"{server.url}/login?next={quote(next_path, safe='/')}"


def expect_login_page(page: Any, server: ServeProcess, next_path: str | None) -> None:
    """On the log-in page, with ``next_path`` (however the page encoded it) or none."""
    expect(page).to_have_url(re.compile("^" + re.escape(server.url + "/login") + r"(\?|$)"))
    query = parse_qs(urlsplit(page.url).query)
    assert query.get("next") == ([next_path] if next_path else None), page.url
    expect(page.locator("#login-form")).to_be_visible()


def sign_in(page: Any, name: str, password: str) -> None:
    """Fill the log-in form the way a keyboard user does: type, Tab, type, Enter."""
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#username")).to_be_focused()
    page.locator("#username").fill(name)
    page.keyboard.press("Tab")
    expect(page.locator("#password")).to_be_focused()
    page.keyboard.type(password)
    page.keyboard.press("Enter")


def log_in(page: Any, server: ServeProcess, name: str) -> None:
    page.goto(server.url + "/")
    expect(page).to_have_url(login_url(server))
    sign_in(page, name, PASSWORDS[name])
    expect(page).to_have_url(server.url + "/")
    expect(page.locator("#account-name")).to_have_text(name)


def conv_id_of(page: Any) -> str:
    ids = parse_qs(urlsplit(page.url).query).get("conv_id", [])
    assert len(ids) == 1, f"no conv_id in {page.url}"
    conv_id: str = ids[0]
    return conv_id


def chat(page: Any, text: str) -> str:
    """Send ``text`` and wait for the whole offline answer; returns the conversation id."""
    before = page.locator(".assistant-text").count()
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")
    expect(page).to_have_url(re.compile(r"\?conv_id=[0-9a-f-]{36}$"))
    answer = page.locator(".assistant-text").nth(before)
    expect(answer).to_have_attribute("data-final", "true", timeout=RUN_TIMEOUT)
    expect(answer).to_contain_text(f'Offline reply to "{text}"')
    expect(page.locator("body")).to_have_attribute("data-running", "false")
    return conv_id_of(page)


def expect_listed(page: Any, conv_ids: list[str]) -> None:
    expect(page.locator("#conversations .conversation")).to_have_count(len(conv_ids))
    for conv_id in conv_ids:
        expect(page.locator(f'#conversations [data-conv-id="{conv_id}"]')).to_have_count(1)


# -- --auth users ---------------------------------------------------------------------------------


def test_log_in_chat_log_out(users_server: ServeProcess, browsers: Browsers) -> None:
    page = browsers.page()
    frames = Frames(page)
    page.goto(users_server.url + "/")
    expect(page).to_have_url(login_url(users_server))
    expect(page).to_have_title("Sign in · webchat")
    expect(page.get_by_role("heading", name="webchat")).to_be_visible()
    expect(page.get_by_label("User name")).to_be_visible()
    expect(page.get_by_label("Password")).to_have_attribute("type", "password")

    sign_in(page, "alice", "not her password")
    error = page.get_by_role("alert")
    expect(error).to_have_text(WRONG_PASSWORD)
    expect(page).to_have_url(login_url(users_server))  # still here
    expect(page.locator("#password")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#password")).to_be_focused()  # to type it again at once

    page.locator("#password").fill(PASSWORDS["alice"])
    page.keyboard.press("Enter")
    expect(page).to_have_url(users_server.url + "/")
    account = page.get_by_role("region", name="Account")
    expect(account).to_be_visible()
    expect(page.locator("#account-name")).to_have_text("alice")
    expect(account).to_contain_text("Signed in as alice")

    conv_id = chat(page, "hello from alice")
    started = frames.types().index("run.started")
    streamed = frames.types()[started:]
    assert "llm.delta" in streamed, streamed  # the answer came live, over the WebSocket
    assert streamed.index("llm.delta") < streamed.index("run.finished"), streamed
    expect_listed(page, [conv_id])

    page.get_by_role("button", name="Log out").click()
    expect_login_page(page, users_server, None)
    assert page.context.request.get(users_server.url + "/api/conversations").status == 401
    page.goto(users_server.url + "/")  # the page may come from the cache: app.js redirects
    expect_login_page(page, users_server, "/")


def test_users_see_only_their_own_conversations(
    users_server: ServeProcess, browsers: Browsers
) -> None:
    alice = browsers.page()
    log_in(alice, users_server, "alice")
    alices = chat(alice, "a secret of alice")

    bob = browsers.page()
    log_in(bob, users_server, "bob")
    bobs = chat(bob, "a note of bob")
    expect_listed(bob, [bobs])  # his one conversation, never hers
    listed = bob.context.request.get(users_server.url + "/api/conversations").json()
    assert alices not in [c["conv_id"] for c in listed["conversations"]]
    described = bob.context.request.get(f"{users_server.url}/api/conversations/{alices}")
    assert described.status == 404

    alice.reload()
    expect(alice.locator("#account-name")).to_have_text("alice")
    expect(alice.locator(f'#conversations [data-conv-id="{alices}"]')).to_have_count(1)
    expect(alice.locator(f'#conversations [data-conv-id="{bobs}"]')).to_have_count(0)


# Keeps every WebSocket the page opens (to close one), and a log of their opening and closing
# codes in sessionStorage, which outlives the page's navigation to the log-in page.
TRACK_SOCKETS = """
window.__sockets = [];
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    window.__sockets.push(this);
    const log = (entry) => {
      const all = JSON.parse(sessionStorage.getItem("sockets") || "[]");
      sessionStorage.setItem("sockets", JSON.stringify([...all, entry]));
    };
    log("new");
    this.addEventListener("open", () => log("open"));
    this.addEventListener("close", (event) => log(event.code));
  }
};
"""


def socket_log(page: Any) -> list[str | int]:
    log: list[str | int] = page.evaluate("JSON.parse(sessionStorage.getItem('sockets') || '[]')")
    return log


def test_log_out_elsewhere_closes_the_socket_and_comes_back(
    users_server: ServeProcess, browsers: Browsers
) -> None:
    """Logging out in another tab ends the session: the server closes this tab's WebSocket
    with 4401, the tab goes to the log-in page with next = where it was (without trying to
    reconnect), and signing in again brings it back to the same conversation."""
    context = browsers.context()
    page = context.new_page()
    page.add_init_script(TRACK_SOCKETS)
    log_in(page, users_server, "alice")
    conv_id = chat(page, "before the log-out")
    here = f"/?conv_id={conv_id}"
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")

    other = context.new_page()
    other.goto(users_server.url + "/")
    expect(other.locator("#account-name")).to_have_text("alice")
    other.get_by_role("button", name="Log out").click()
    expect_login_page(other, users_server, None)

    expect_login_page(page, users_server, here)
    assert socket_log(page) == ["new", "open", 4401]
    sign_in(page, "alice", PASSWORDS["alice"])
    expect(page).to_have_url(users_server.url + here)
    expect(page.locator(".message.user")).to_have_text(["before the log-out"])
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")


@pytest.mark.parametrize("trigger", ["send", "list"])
def test_a_401_goes_to_the_log_in_page(
    users_server: ServeProcess, browsers: Browsers, trigger: str
) -> None:
    """The session cookie is gone (expired, cleared): the next API call answers 401 and the
    page goes to sign in, with next = where it was. The call is a message sent (POST), or the
    conversation list refreshed (GET) when the tab becomes visible again."""
    page = browsers.page()
    log_in(page, users_server, "alice")
    conv_id = chat(page, "still signed in")
    if trigger == "send":
        # Only the POST may meet the 401: the list's own refreshes (on timers) get nowhere.
        page.route("**/api/conversations", lambda route: route.abort())
    page.context.clear_cookies()
    if trigger == "send":
        with page.expect_response(lambda r: r.url.endswith("/chat/default")) as answered:
            page.locator("#prompt").fill("after the cookie is gone")
            page.locator("#prompt").press("Enter")
    else:
        with page.expect_response(lambda r: r.url.endswith("/api/conversations")) as answered:
            page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    assert answered.value.status == 401
    expect_login_page(page, users_server, f"/?conv_id={conv_id}")


def test_a_refused_reconnect_goes_to_the_log_in_page(
    users_server: ServeProcess, browsers: Browsers
) -> None:
    """The session is gone and the socket drops: the server refuses the new handshake (the
    browser only sees a failed connection), so the page asks auth/me, gets 401 and goes to
    sign in."""
    page = browsers.page()
    page.add_init_script(TRACK_SOCKETS)
    log_in(page, users_server, "alice")
    conv_id = chat(page, "then the socket drops")
    page.route("**/api/conversations", lambda route: route.abort())  # only auth/me may tell
    page.context.clear_cookies()
    with page.expect_response(lambda r: r.url.endswith("/auth/me")) as asked:
        page.evaluate("window.__sockets.at(-1).close()")
    assert asked.value.status == 401
    expect_login_page(page, users_server, f"/?conv_id={conv_id}")
    log = socket_log(page)
    assert log[:3] == ["new", "open", 1005], log  # the one the test closed
    assert log[3] == "new" and "open" not in log[3:], log  # a reconnect, refused


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/steal",
        "/\\evil.example/steal",
        "/\t/evil.example/steal",
        "https://evil.example/steal",
        "javascript:alert(1)",
        "evil",
    ],
)
def test_next_never_leaves_the_server(
    users_server: ServeProcess, browsers: Browsers, target: str
) -> None:
    page = browsers.page()
    strays: list[str] = []

    def refuse(route: Any) -> None:
        strays.append(route.request.url)
        route.abort()

    page.route(re.compile(r"^(?!http://127\.0\.0\.1:\d+/).*"), refuse)
    page.goto(f"{users_server.url}/login?next={quote(target, safe='')}")
    sign_in(page, "alice", PASSWORDS["alice"])
    expect(page).to_have_url(users_server.url + "/")
    expect(page.locator("#account-name")).to_have_text("alice")
    assert strays == []


def test_next_keeps_a_path_on_the_server(users_server: ServeProcess, browsers: Browsers) -> None:
    page = browsers.page()
    page.goto(login_url(users_server, "/?conv_id=00000000-0000-4000-8000-000000000000"))
    sign_in(page, "alice", PASSWORDS["alice"])
    expect(page).to_have_url(users_server.url + "/?conv_id=00000000-0000-4000-8000-000000000000")


def test_oidc_mode_offers_the_provider(users_server: ServeProcess, browsers: Browsers) -> None:
    """With ``login: oidc`` the page shows one Sign in link to the provider route, carrying
    next (auth/config is answered for the page here: no provider runs in these tests)."""
    page = browsers.page()
    page.route(
        "**/auth/config",
        lambda route: route.fulfill(json={"mode": "oidc", "login": "oidc"}),
    )
    page.goto(login_url(users_server, "/?conv_id=abc"))
    link = page.get_by_role("link", name="Sign in")
    expect(link).to_be_visible()
    expect(link).to_be_focused()
    expect(page.locator("#login-form")).to_be_hidden()
    href = link.get_attribute("href")
    assert href is not None
    parts = urlsplit(href)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == users_server.url + "/auth/oidc/login"
    assert parse_qs(parts.query) == {"next": ["/?conv_id=abc"]}


def test_too_many_failures_are_said(tmp_path: Path, browsers: Browsers) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, "alice", PASSWORDS["alice"])
    config = tmp_path / "settings.yaml"
    config.write_text("auth_failures_per_minute: 2\n")
    options = ("--auth", "users", "--users", str(users), "--config", str(config))
    with serving(tmp_path, *options) as server:
        page = browsers.page()
        page.goto(login_url(server, None))
        for _ in range(2):
            with page.expect_response("**/auth/login") as answered:
                sign_in(page, "alice", "guess")
            assert answered.value.status == 401
            expect(page.get_by_role("alert")).to_have_text(WRONG_PASSWORD)
            page.locator("#password").fill("")
            page.locator("#username").focus()
        with page.expect_response("**/auth/login") as answered:
            sign_in(page, "alice", PASSWORDS["alice"])  # right, but too late
        assert answered.value.status == 429
        expect(page.get_by_role("alert")).to_have_text(
            re.compile(r"^Too many failed log-ins; try again later\. You can try again in \d+ s\.$")
        )
        expect(page).to_have_url(login_url(server, None))


def test_under_a_root_prefix(tmp_path: Path, browsers: Browsers) -> None:
    """Every URL of the log-in page and the app is relative: both work under --root."""
    users = tmp_path / "users.yaml"
    add_user(users, "alice", PASSWORDS["alice"])
    options = ("--auth", "users", "--users", str(users), "--root", "/team/chat")
    with serving(tmp_path, *options) as server:
        app = f"{server.url}/"
        assert app.endswith("/team/chat/")
        page = browsers.page()
        page.goto(app)
        expect(page).to_have_url(f"{server.url}/login?next=/team/chat/")
        sign_in(page, "alice", PASSWORDS["alice"])
        expect(page).to_have_url(app)
        expect(page.locator("#account-name")).to_have_text("alice")
        chat(page, "under a prefix")
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(f"{server.url}/login")
        expect(page.locator("#login-form")).to_be_visible()


def test_no_account_without_authentication(tmp_path: Path, browsers: Browsers) -> None:
    with serving(tmp_path, "--auth", "none") as server:
        page = browsers.page()
        with page.expect_response("**/auth/me") as me:
            page.goto(server.url + "/")
        assert me.value.ok and me.value.json()["mode"] == "none", me.value.text()
        expect(page.locator("#profile")).to_be_enabled()  # booted past the account check
        expect(page.locator("#account")).to_be_hidden()
        chat(page, "nobody signed in")
        expect(page.locator("#account")).to_be_hidden()


# -- --auth proxy ---------------------------------------------------------------------------------


def test_a_trusted_proxy_signs_the_browser_in(tmp_path: Path, browsers: Browsers) -> None:
    options = ("--auth", "proxy", "--trusted-proxies", "127.0.0.1/32")
    with serving(tmp_path, *options) as server:
        # The browser context stands in for the proxy: it adds the header to every request.
        page = browsers.page(extra_http_headers={"X-Forwarded-User": "carol"})
        page.goto(server.url + "/")
        expect(page).to_have_url(server.url + "/")
        expect(page.locator("#account-name")).to_have_text("carol")
        conv_id = chat(page, "hello from carol")
        expect_listed(page, [conv_id])
        # No log-in page here: Log out reloads, and the proxy (still) says who it is.
        with page.expect_navigation(url=page.url):
            page.get_by_role("button", name="Log out").click()
        expect(page.locator("#account-name")).to_have_text("carol")

        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/auth/me").status_code == 401  # no header: nobody
            me = http.get("/auth/me", headers={"X-Forwarded-User": "carol"})
            assert me.status_code == 200
            assert me.json()["name"] == "carol"
            assert me.json()["mode"] == "proxy"


def test_the_user_header_of_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    # Only 10.255.255.1 is trusted, and nothing ever connects from (or to) it.
    options = ("--auth", "proxy", "--trusted-proxies", "10.255.255.1/32")
    with (
        serving(tmp_path, *options) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        forged = {"X-Forwarded-User": "carol"}
        me = http.get("/auth/me", headers=forged)
        assert me.status_code == 401, me.text
        assert http.get("/api/conversations", headers=forged).status_code == 401
        assert http.get("/", headers=forged).status_code == 401


def test_the_app_itself_may_stop_a_run(users_server: ServeProcess, browsers: Browsers) -> None:
    """The app's own POSTs pass the cross-site check (same origin, X-Requested-With): Stop,
    a POST without a body, cancels the run."""
    page = browsers.page()
    log_in(page, users_server, "alice")
    page.locator("#profile").select_option("slow")
    page.locator("#prompt").fill("stop me")
    page.locator("#prompt").press("Enter")
    expect(page.locator('.assistant-text[data-final="false"]')).to_contain_text("Offline reply")
    with page.expect_response(lambda r: r.url.endswith("/cancel")) as cancelled:
        page.locator("#stop").click()
    assert cancelled.value.status == 200, cancelled.value.text()
    assert cancelled.value.request.header_value("x-requested-with") == "webchat"
    expect(page.locator(".run-marker.cancelled")).to_have_count(1, timeout=RUN_TIMEOUT)
    expect(page.locator("body")).to_have_attribute("data-running", "false")


# -- cross-site requests --------------------------------------------------------------------------

# Two pages of another origin, each posting to the API by itself as soon as it loads.
ATTACK_FETCH = """\
<!doctype html>
<html>
  <head><meta charset="utf-8"><title>win a prize</title></head>
  <body>
    <script>
      fetch("{cancel}", {{ method: "POST", mode: "no-cors", credentials: "include" }})
        .then(() => {{ document.title = "sent"; }}, () => {{ document.title = "failed"; }});
    </script>
  </body>
</html>
"""
ATTACK_FORM = """\
<!doctype html>
<html>
  <head><meta charset="utf-8"><title>win a prize</title></head>
  <body onload="document.forms[0].submit()">
    <form method="post" action="{cancel}"><input name="claim" value="prize"></form>
  </body>
</html>
"""


@contextlib.contextmanager
def other_origin(directory: Path) -> Iterator[str]:
    """A plain static server on another port of 127.0.0.1: another origin, the same site (so
    the browser does send the SameSite=Lax session cookie to the app's port)."""
    handler = functools.partial(QuietHandler, directory=str(directory))  # serves only `directory`
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_cross_site_posts_are_refused(
    users_server: ServeProcess, browsers: Browsers, tmp_path: Path
) -> None:
    context = browsers.context()
    app = context.new_page()
    frames = Frames(app)
    log_in(app, users_server, "alice")
    app.locator("#profile").select_option("slow")
    app.locator("#prompt").fill("a long answer, please")
    with app.expect_response(lambda r: r.url.endswith("/chat/slow")) as accepted:
        app.locator("#prompt").press("Enter")
    assert accepted.value.status == 200, accepted.value.text()
    inference_id = accepted.value.json()["inference_id"]
    conv_id = conv_id_of(app)
    streaming = app.locator('.assistant-text[data-final="false"]')
    expect(streaming).to_contain_text("Offline reply to")

    cancel = f"{users_server.url}/api/conversations/{conv_id}/cancel"
    (tmp_path / "fetch.html").write_text(ATTACK_FETCH.format(cancel=cancel))
    (tmp_path / "form.html").write_text(ATTACK_FORM.format(cancel=cancel))

    def to_cancel(kind: str) -> Callable[[Any], bool]:
        return lambda r: r.url == cancel and r.request.resource_type == kind

    # A refusal for lack of credentials would be a 401: a 403 "cross-site request refused"
    # says the browser did send alice's cookie (127.0.0.1 on another port is the same site,
    # so SameSite=Lax lets it go) and only the cross-site check stopped the request.
    with other_origin(tmp_path) as origin:
        attacker = context.new_page()
        with attacker.expect_response(to_cancel("fetch")) as fetched:
            attacker.goto(f"{origin}/fetch.html")
        assert fetched.value.status == 403  # (the body of an opaque answer is not kept)
        expect(attacker).to_have_title("sent")  # the page saw only an opaque answer

        with attacker.expect_response(to_cancel("document")) as posted:
            attacker.goto(f"{origin}/form.html")
        assert posted.value.status == 403
        expect(attacker).to_have_url(cancel)
        expect(attacker.locator("body")).to_contain_text(
            f"cross-site request refused (Origin {origin})"
        )

    described = context.request.get(f"{users_server.url}/api/conversations/{conv_id}")
    assert described.ok, described.text()
    assert described.json()["running"] is True  # the attack came while the run was going
    growing = streaming.text_content()
    expect(streaming).not_to_have_text(growing or "")  # frames keep coming
    expect(app.locator(".assistant-text").last).to_have_attribute(
        "data-final", "true", timeout=RUN_TIMEOUT
    )
    ends = [t for t in frames.types(inference_id) if t.startswith("run.") and t != "run.started"]
    assert ends == ["run.finished"], ends
    expect(app.locator(".run-marker.cancelled")).to_have_count(0)
