"""static/markdown.js in a real headless Chromium: markdown-it + DOMPurify + highlight.js + KaTeX.

Most tests load ``tests/browser/pages/markdown.html`` (the app's CSP, ``style.css`` and
``markdown.css``) from a small static server that serves webchat's real static directory at
``/static/``, and call the module from the page. The page fixture fails a test on any page
error, any console error (a CSP violation is one) and any dialog. One test loads the module
through the running app, as app.js does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.pages.static_server import STATIC, serve
from tests.support.live_server import LiveServer

VENDOR = STATIC / "vendor"


@pytest.fixture(scope="module")
def static_url() -> Iterator[str]:
    with serve() as base:
        yield base


@pytest.fixture
def md_page(browser: Any, static_url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(10_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=static_url)
    page = context.new_page()
    problems: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":  # a CSP violation is reported as one
            problems.append(f"console error: {message.text}")

    def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", on_console)
    page.on("dialog", on_dialog)
    page.goto(static_url + "/pages/markdown.html")
    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    try:
        yield page
    finally:
        csp = page.evaluate("window.__csp")
        context.close()
    assert not problems, problems
    assert not csp, f"CSP violations: {csp}"


# Renders into #out the way app.js does (innerHTML, then enhance) and returns the HTML.
RENDER = """(text) => {
  const out = document.getElementById("out");
  out.innerHTML = md.renderMarkdown(text);
  md.enhance(out);
  return out.innerHTML;
}"""


def render(page: Any, text: str) -> str:
    html: str = page.evaluate(RENDER, text)
    return html


# -- the vendored files --------------------------------------------------------------------


def test_every_vendored_file_is_recorded_with_its_hash() -> None:
    record = (VENDOR / "VENDORED.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| (\S+) \| `([^`]+)` \| `([0-9a-f]{64})` \|$", record, re.M)
    listed = {path: digest for path, _package, _source, digest in rows}
    present = {
        str(p.relative_to(VENDOR))
        for p in VENDOR.rglob("*")
        if p.is_file() and p.name != "VENDORED.md"
    }
    assert set(listed) == present
    for path, digest in listed.items():
        assert hashlib.sha256((VENDOR / path).read_bytes()).hexdigest() == digest, path
    for package_dir in {Path(path).parts[0] for path in listed}:
        assert (VENDOR / package_dir / "LICENSE").is_file(), package_dir
    for package, version in re.findall(r"^\| \[(\S+)\]\(\S+\) \| (\S+) \|", record, re.M):
        assert f"{package}@{version}" in {pkg for _p, pkg, _s, _d in rows}, package


def test_stylesheet_urls_resolve() -> None:
    css = STATIC / "markdown.css"
    imports = re.findall(r'@import url\("([^"]+)"\)', css.read_text())
    assert imports == [
        "vendor/katex/katex.min.css",
        "vendor/highlight.js/styles/github-dark.min.css",
    ]
    for target in imports:
        assert (STATIC / target).is_file(), target
    katex_css = VENDOR / "katex" / "katex.min.css"
    fonts = set(re.findall(r"url\(([^)]+)\)", katex_css.read_text()))
    assert len(fonts) == 60
    for font in fonts:
        assert (katex_css.parent / font).is_file(), font


# -- rendering -------------------------------------------------------------------------------


def test_gfm_tables_strikethrough_task_lists_links(md_page: Any) -> None:
    render(
        md_page,
        "| Name | Qty |\n|:--|--:|\n| apple | 3 |\n| ~~pear~~ | 0 |\n\n"
        "- [ ] todo\n- [x] done\n\n"
        'see https://example.org/x. and [docs](https://example.com/d "Docs") or mail@example.com',
    )
    out = md_page.locator("#out")
    table = out.locator("table")
    expect(table.locator("th")).to_have_text(["Name", "Qty"])
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table.locator("th").nth(1)).to_have_class("md-align-right")
    expect(table.locator("td").nth(1)).to_have_css("text-align", "right")  # a class, no style
    expect(table.locator("s")).to_have_text("pear")
    boxes = out.locator("li.task-list-item input[type=checkbox]")
    expect(boxes).to_have_count(2)
    expect(boxes.nth(0)).to_be_disabled()
    expect(boxes.nth(0)).not_to_be_checked()
    expect(boxes.nth(1)).to_be_checked()
    links = out.locator("a")
    expect(links).to_have_count(3)
    assert [links.nth(i).get_attribute("href") for i in range(3)] == [
        "https://example.org/x",
        "https://example.com/d",
        "mailto:mail@example.com",
    ]
    for i in range(3):
        expect(links.nth(i)).to_have_attribute("rel", "noopener noreferrer")
        expect(links.nth(i)).to_have_attribute("target", "_blank")
    expect(links.nth(1)).to_have_attribute("title", "Docs")


def test_images_become_links_and_nothing_is_fetched(md_page: Any) -> None:
    requests: list[str] = []
    md_page.on("request", lambda request: requests.append(request.url))
    render(md_page, "![a chart](https://example.com/chart.png) ![](/static/x.png)")
    out = md_page.locator("#out")
    expect(out.locator("img")).to_have_count(0)
    expect(out.locator("a")).to_have_text(["a chart"])
    expect(out.locator("a")).to_have_attribute("href", "https://example.com/chart.png")
    assert not [url for url in requests if "chart" in url or "x.png" in url]


CODE = 'def greet(name: str) -> str:\n    """Say hello."""\n    return f"hello {name}"  # <b>&'


def test_code_block_is_highlighted_with_a_label_and_a_copy_button(md_page: Any) -> None:
    render(md_page, f"Code:\n\n```python\n{CODE}\n```\n\n```\nplain <text>\n```")
    blocks = md_page.locator("#out .code-block")
    expect(blocks).to_have_count(2)
    python = blocks.nth(0)
    expect(python.locator(".code-lang")).to_have_text("python")
    code = python.locator("pre > code")
    expect(code).to_have_class(re.compile(r"\blanguage-python\b.*\bhljs\b"))
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    expect(code.locator(".hljs-string").first).to_be_visible()
    assert code.text_content() == CODE
    expect(blocks.nth(1).locator(".code-lang")).to_have_text("text")
    expect(blocks.nth(1).locator("code span")).to_have_count(0)

    copy = python.locator("button.code-copy")
    expect(copy).to_have_text("Copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert md_page.evaluate("navigator.clipboard.readText()") == CODE
    blocks.nth(1).locator("button.code-copy").click()
    expect(blocks.nth(1).locator("button.code-copy")).to_have_text("Copied")
    assert md_page.evaluate("navigator.clipboard.readText()") == "plain <text>"
    # enhance() is idempotent: a second call adds nothing.
    md_page.evaluate("md.enhance(document.getElementById('out'))")
    expect(md_page.locator("#out .code-head")).to_have_count(2)


def test_math_renders_with_katex_under_the_csp(md_page: Any) -> None:
    render(
        md_page,
        "Inline $x^2$ and \\(\\alpha\\), $5 and $10 stay text.\n\n"
        "$$\n\\frac{a}{b} = \\sqrt{c}\n$$\n\n\\[\n\\sum_{i=1}^n i\n\\]\n\nbad: $\\frac{1$",
    )
    out = md_page.locator("#out")
    expect(out.locator(".katex")).to_have_count(4)
    expect(out.locator(".math-display .katex-display")).to_have_count(2)
    expect(out.locator("p").first).to_contain_text("$5 and $10 stay text.")
    expect(out.locator(".katex-error")).to_have_count(1)  # throwOnError: false
    # KaTeX's layout styles took effect (through the CSSOM: no inline style is refused) ...
    strut = out.locator(".katex-html .strut, .katex-html .katex-strut").first
    assert strut.get_attribute("style"), "KaTeX's styles were not applied"
    height = md_page.evaluate(
        "(el) => parseFloat(getComputedStyle(el).height)", strut.element_handle()
    )
    assert height > 5
    expect(out.locator("[data-katex-style]")).to_have_count(0)
    # ... and its fonts load from vendor/katex/fonts/.
    md_page.evaluate("document.fonts.ready")
    assert md_page.evaluate("document.fonts.check('16px KaTeX_Main')")
    assert md_page.evaluate(
        "[...document.fonts].some((f) => f.family === 'KaTeX_Math' && f.status === 'loaded')"
    )


def test_display_math_inside_a_paragraph_renders(md_page: Any) -> None:
    render(md_page, "the sum $$\\sum_i x_i$$ is finite, and \\$$ stays text")
    paragraph = md_page.locator("#out > p")
    expect(paragraph).to_have_count(1)  # the formula did not split the paragraph
    expect(paragraph.locator("span.math-display .katex-display .katex")).to_have_count(1)
    expect(paragraph.locator(".katex-display .large-op")).to_have_text("∑")  # display size
    expect(paragraph).not_to_contain_text("$$\\sum")
    expect(paragraph).to_contain_text("the sum")
    expect(paragraph).to_contain_text("is finite, and $$ stays text")
    # Not closed yet (an answer still streaming): text, until the closing $$ arrives.
    render(md_page, "the sum $$\\sum_i")
    expect(md_page.locator("#out .katex")).to_have_count(0)
    expect(md_page.locator("#out")).to_have_text("the sum $$\\sum_i")


# -- injection -------------------------------------------------------------------------------

XSS = "window.__xss=1"
PAYLOADS = {
    "raw html": f"<img src=x onerror={XSS}> <script>{XSS}</script> <b onclick={XSS}>b</b>",
    "raw html block": f'<div>\n<iframe src="javascript:{XSS}"></iframe>\n</div>',
    "table cells": (
        f"| a | <img src=x onerror={XSS}> |\n|---|---|\n"
        f"| [x](javascript:{XSS}) | <svg onload={XSS}> |"
    ),
    "table alignment": f'| a |\n|:-:|\n| b" style="background:url(javascript:{XSS}) |',
    "fence info": f'```"><img src=x onerror={XSS}>\ncode\n```',
    "fence info attr": f'```python" onmouseover="{XSS}\ncode\n```',
    "fence info language-x": f'```x"><script>{XSS}</script>\ncode\n```',
    "link title": (
        f'[a](https://e.com "\\" onmouseover=\\"{XSS}") '
        f"[b](https://e.com '\"><img src=x onerror={XSS}>')"
    ),
    "javascript link": f"[a](javascript:{XSS}) [b](JaVaScRiPt:{XSS}) [c](&#106;avascript:{XSS})",
    "javascript autolink": (
        f"<javascript:{XSS}> <vbscript:msgbox(1)> <data:text/html,<script>{XSS}</script>>"
    ),
    "data link": "[a](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9MTwvc2NyaXB0Pg==)",
    "relative and file links": "[a](/api/conversations) [b](file:///etc/passwd) [c](#top)",
    "reference link": f"[a][1]\n\n[1]: javascript:{XSS}",
    "image": f'![x](javascript:{XSS}) ![y" onerror="{XSS}](https://e.com/a.png)',
    "autolink breakout": f'<https://e.com/"onmouseover="{XSS}> https://e.com/"onmouseover="{XSS}',
    "task list": f"- [ ] <img src=x onerror={XSS}>\n- [x] [a](javascript:{XSS})",
    "math href": f"$\\href{{javascript:{XSS}}}{{x}}$ $\\url{{javascript:{XSS}}}$",
    "math html extensions": (
        "$\\htmlClass{katex}{a} \\htmlId{x}{b} \\htmlData{foo=bar}{c} "
        f"\\htmlStyle{{background:url(javascript:{XSS})}}{{d}} \\includegraphics{{x.png}}$"
    ),
    "math text": (
        f"$$\n\\text{{<img src=x onerror={XSS}>}}\n$$\n\n$\\text{{</span><script>{XSS}</script>}}$"
    ),
    "math inside a paragraph": (
        f"a $$\\text{{<img src=x onerror={XSS}>}}$$ b $$\\href{{javascript:{XSS}}}{{x}}$$ "
        f"c $$\\text{{</span><script>{XSS}</script>}}$$ d"
    ),
    "math color": f"$\\color{{red;background:url(javascript:{XSS})}}{{x}}$",
    "math macro bomb": "$\\def\\a{\\a\\a}\\a$",
    "mxss": f"<svg><p><style><img src=x onerror={XSS}></style></p></svg>",
    "entities": f"&lt;img src=x onerror={XSS}&gt; &#60;script&#62;{XSS}&#60;/script&#62;",
    "nul": f"<scr\u0000ipt>{XSS}</script> [a](java\u0000script:{XSS})",
}

# Every way a rendering could run script or leak: returns the problems found in `root`.
AUDIT = """(root) => {
  const problems = [];
  const banned = new Set(["script", "iframe", "object", "embed", "img", "style", "link", "meta",
    "base", "form", "frame", "frameset", "image", "use", "foreignobject", "animate", "set"]);
  for (const el of root.querySelectorAll("*")) {
    const tag = el.localName.toLowerCase();
    if (banned.has(tag)) problems.push(`<${tag}>`);
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      const value = attr.value.replace(/[\\s\\u0000-\\u001f]/g, "").toLowerCase();
      if (name.startsWith("on")) problems.push(`${tag}[${name}]`);
      if (["id", "name", "srcset", "formaction", "action"].includes(name)) {
        problems.push(`${tag}[${name}]`);
      }
      const urlish = ["href", "src", "xlink:href", "action", "formaction", "data", "style"];
      if (urlish.includes(name) && /(javascript|vbscript|data):/.test(value)) {
        problems.push(`${tag}[${name}=${attr.value}]`);
      }
      if (name === "style" && !el.closest(".katex")) problems.push(`${tag}[style] outside KaTeX`);
      if (name === "style" && /url\\(/.test(value)) problems.push(`${tag}[style] with url()`);
    }
    if (tag === "a") {
      const href = el.getAttribute("href");
      if (href !== null && !/^(https?:|mailto:)/i.test(href)) problems.push(`a[href=${href}]`);
      if (el.getAttribute("rel") !== "noopener noreferrer") problems.push("a without rel");
      if (el.getAttribute("target") !== "_blank") problems.push("a without target");
    }
    if (tag === "input" && (el.type !== "checkbox" || !el.disabled)) problems.push("live input");
  }
  return problems;
}"""

INJECT = """async (payloads) => {
  const auditOf = AUDIT;
  const out = document.getElementById("out");
  const box = document.getElementById("stream");
  const found = {};
  for (const [name, source] of Object.entries(payloads)) {
    const html = md.renderMarkdown(source);
    out.innerHTML = html;
    md.enhance(out);
    const problems = auditOf(out);
    if (/<(script|img|iframe|style|object|embed)\\b/i.test(html)) problems.push("tag in string");
    // The same text streamed in small pieces.
    const stream = md.createStreamRenderer(box);
    for (let n = 3; n < source.length + 3; n += 3) stream.update(source.slice(0, n));
    stream.finish();
    problems.push(...auditOf(box).map((p) => `stream: ${p}`));
    if (box.innerHTML !== out.innerHTML) problems.push("stream differs from the full render");
    // Hover and click everything, in case a handler survived.
    for (const el of [...out.querySelectorAll("*"), ...box.querySelectorAll("*")]) {
      for (const type of ["mouseover", "focus"]) el.dispatchEvent(new Event(type));
    }
    if (problems.length) found[name] = problems;
  }
  await new Promise((resolve) => setTimeout(resolve, 300)); // onerror/onload would fire by now
  return { found, xss: window.__xss ?? null, text: out.textContent };
}"""


def test_injection_payloads_stay_inert(md_page: Any) -> None:
    result = md_page.evaluate(INJECT.replace("AUDIT", AUDIT, 1), PAYLOADS)
    assert result["found"] == {}
    assert result["xss"] is None


def test_injection_payloads_show_as_text(md_page: Any) -> None:
    html = render(md_page, PAYLOADS["raw html"])
    expect(md_page.locator("#out")).to_have_text(PAYLOADS["raw html"])
    assert "&lt;script&gt;" in html
    render(md_page, PAYLOADS["javascript link"])
    expect(md_page.locator("#out a")).to_have_count(0)
    render(md_page, PAYLOADS["math href"])
    expect(md_page.locator("#out a")).to_have_count(0)
    expect(md_page.locator("#out .katex")).to_have_count(2)  # the unsupported command in red
    render(md_page, PAYLOADS["fence info"])
    expect(md_page.locator("#out .code-lang")).to_have_text("text")
    expect(md_page.locator("#out pre code")).to_have_text("code")
    assert md_page.locator("#out pre code").get_attribute("class") is None


# -- streaming -------------------------------------------------------------------------------

STREAM_DOCS = [
    "# Title\n\nSome *text* with `code` and a [link](https://example.com).\n\n- one\n- two\n\n"
    "1. first\n2. second\n\nPara after list.\n\n```python\ndef f(x):\n\n    return x\n```\n\n"
    "| a | b |\n|---|--:|\n| 1 | 2 |\n\n$$\nx^2\n\ny\n$$\n\nEnd $a+b$ here.\n",
    "- loose\n\n- list\n\n  continued para\n\nafter\n\n    indented code\n\n    more code\n\n"
    "text\n\n~~~\nfence\n\n~~~\n\n> quote\n\n> another\n\n- [ ] task\n- [x] done\n\n***\n\n"
    "* * *\n\nfinal",
    "Unclosed fence:\n\n```js\nconst a = 1;\n\nconst b = 2;\n",
    "Ref [link][r] here.\n\nMore.\n\n[r]: https://example.org\n\nTail.",
    "Text\n$$5 and more\n\nstill math?\n\nno",
    "Inline display: the sum $$\\sum_i x_i$$ is\nfinite $$a\nb$$ too.\n\nNext $$x$$.\n",
    "\\[\nx\n\n\\]\n\nafter \\(y\\) and more\n\n1) a\n\n2) b\n\n   c\n\nd",
    "> quote with\n> ```\n> code\n\n> ```\n\nafter\r\n\r\nwindows\r\nlines\n\n"
    "````\n```\n\n````\n\nend",
    "Setext\n===\n\nPara\n---\n\n- a\n\n  ```\n  in item\n\n  ```\n\nb\n\n  indented para\n\nc",
]

STREAM_CHECK = """({ docs, sizes }) => {
  const out = document.getElementById("out");
  const box = document.getElementById("stream");
  const bad = [];
  let steps = 0;
  let frozeAny = false;
  let keptNodes = true;
  for (const [doc_index, doc] of docs.entries()) {
    for (const size of sizes) {
      const stream = md.createStreamRenderer(box);
      let first = null;
      for (let n = size; ; n += size) {
        const text = doc.slice(0, Math.min(n, doc.length));
        stream.update(text);
        out.innerHTML = md.renderMarkdown(text);
        md.enhance(out);
        steps += 1;
        if (out.innerHTML !== box.innerHTML) {
          bad.push({ doc_index, size, text, full: out.innerHTML, streamed: box.innerHTML });
          break;
        }
        if (stream.frozenLength > 0) {
          frozeAny = true;
          if (first === null) first = box.firstChild;
          else if (box.firstChild !== first) keptNodes = false;
        }
        if (n >= doc.length) break;
      }
      stream.finish();
      if (out.innerHTML !== box.innerHTML) bad.push({ doc_index, size, finish: true });
    }
  }
  return { bad: bad.slice(0, 3), steps, frozeAny, keptNodes };
}"""


def test_stream_renderer_matches_the_full_render_at_every_step(md_page: Any) -> None:
    result = md_page.evaluate(STREAM_CHECK, {"docs": STREAM_DOCS, "sizes": [1, 2, 5, 13, 200]})
    assert result["bad"] == []
    assert result["steps"] > 1000
    assert result["frozeAny"]
    assert result["keptNodes"], "a frozen block was re-rendered"


RANDOM_DOCS = """({ count, seed }) => {
  let state = seed;
  const random = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648);
  const pick = (items) => items[Math.floor(random() * items.length)];
  const pieces = ["para *em* **strong** `code`", "- item", "  - nested", "1. one", "2) two",
    "> quote", "```python", "```", "~~~", "    indented", "$$", "x^2", "$a$ and $b$", "\\\\[",
    "\\\\]", "| a | b |", "|---|---|", "| 1 | 2 |", "# head", "---", "- [ ] task", "",
    "", "", "text https://e.com", "<b>raw</b>", "  continued", "***"];
  const docs = [];
  for (let i = 0; i < count; i++) {
    const lines = [];
    const n = 5 + Math.floor(random() * 25);
    for (let j = 0; j < n; j++) lines.push(pick(pieces));
    docs.push(lines.join("\\n") + (random() < 0.5 ? "\\n" : ""));
  }
  return docs;
}"""


def test_stream_renderer_matches_on_random_documents(md_page: Any) -> None:
    docs = md_page.evaluate(RANDOM_DOCS, {"count": 60, "seed": 20240611})
    result = md_page.evaluate(STREAM_CHECK, {"docs": docs, "sizes": [1, 4, 9]})
    assert result["bad"] == []


def test_stream_renderer_starts_over_when_the_text_is_replaced(md_page: Any) -> None:
    html = md_page.evaluate(
        """() => {
          const box = document.getElementById("stream");
          const stream = md.createStreamRenderer(box);
          stream.update("first\\n\\nsecond\\n\\nthird");
          const frozen = stream.frozenLength;
          stream.update("other text\\n\\n- a");
          stream.finish();
          return { frozen, html: box.innerHTML, full: md.renderMarkdown("other text\\n\\n- a") };
        }"""
    )
    assert html["frozen"] > 0
    assert html["html"] == html["full"]


LONG_CODE = "".join(
    f"def handler_{i}(request):\n    return process(request, attempt={i})  # retry\n\n"
    for i in range(60)
)


def test_a_long_open_code_block_grows_in_place(md_page: Any) -> None:
    result = md_page.evaluate(
        """async (code) => {
          const box = document.getElementById("stream");
          const stream = md.createStreamRenderer(box);
          const head = "Here:\\n\\n```python\\n";
          let element = null;
          let same = true;
          let textOk = true;
          for (let n = 0; n <= code.length; n += 7) {
            stream.update(head + code.slice(0, n));
            const now = box.querySelector("pre > code");
            if (n > 2500) {
              if (element === null) element = now;
              else if (now !== element) same = false;
              if (now.textContent !== code.slice(0, n).replace(/\\n$/, "")) textOk = false;
            }
          }
          await new Promise((resolve) => setTimeout(resolve, 400));
          const keywords = element.querySelectorAll(".hljs-keyword").length;
          stream.finish(head + code + "```\\nDone.");
          const out = document.getElementById("out");
          out.innerHTML = md.renderMarkdown(head + code + "```\\nDone.");
          md.enhance(out);
          return { same, textOk, keywords, equal: out.innerHTML === box.innerHTML };
        }""",
        LONG_CODE,
    )
    assert result == {"same": True, "textOk": True, "keywords": 120, "equal": True}


# -- through the app ---------------------------------------------------------------------------


def test_the_app_serves_the_module_and_its_vendored_files(server: LiveServer, page: Any) -> None:
    page.goto(server.url + "/")
    result = page.evaluate(
        """async () => {
          const md = await import(new URL("static/markdown.js", document.baseURI));
          const div = document.createElement("div");
          const text = "| a |\\n|---|\\n| 1 |\\n\\n$x^2$\\n\\n```js\\nlet x;\\n```";
          div.innerHTML = md.renderMarkdown(text);
          md.enhance(div);
          return {
            table: div.querySelectorAll("table td").length,
            katex: div.querySelectorAll(".katex").length,
            hljs: div.querySelectorAll("code .hljs-keyword").length,
            label: div.querySelector(".code-lang").textContent,
            api: Object.keys(md).sort(),
          };
        }"""
    )
    assert result["table"] == 1
    assert result["katex"] == 1
    assert result["hljs"] == 1
    assert result["label"] == "js"
    assert {"createStreamRenderer", "enhance", "escapeHtml", "renderMarkdown"} <= set(result["api"])
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for path, kind in [
            ("/static/markdown.css", "text/css"),
            ("/static/vendor/katex/katex.js", "javascript"),
            ("/static/vendor/markdown-it/markdown-it.esm.min.js", "javascript"),
            ("/static/vendor/katex/katex.min.css", "text/css"),
            ("/static/vendor/katex/fonts/KaTeX_Main-Regular.woff2", ""),
        ]:
            response = http.get(path)
            assert response.status_code == 200, path
            assert kind in response.headers["content-type"], (path, response.headers)
