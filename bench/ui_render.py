"""Markdown render time per streamed delta in the browser: full re-render vs incremental.

A 4,000-token Markdown answer (headings, paragraphs with inline markup and links, tight and
loose lists, task lists, tables, python/js/bash code blocks, inline and display math) is
streamed one token at a time (see ``TOKEN``) into headless Chromium
(Debian's ``/usr/bin/chromium`` through Playwright), on the Markdown test page
(``tests/browser/pages/markdown.html``: the app's CSP, ``style.css`` and ``markdown.css``),
with ``src/webchat/static/markdown.js`` from the real static directory. Shapes: ``mixed``
(the above) and ``code`` (one sentence, then a single python block for the rest of the
answer: the worst case for re-rendering the last block). Two strategies:

- ``full``: what app.js does today on each ``llm.delta``: ``innerHTML = renderMarkdown(text)``
  then ``enhance()`` (highlight, code head, KaTeX styles) on the whole text so far;
- ``incremental``: ``createStreamRenderer(container).update(text)``: finished blocks are frozen,
  only the unfinished last block is parsed, sanitized, highlighted and replaced (a long open
  code block grows in place and is re-highlighted from a timer: at most every 250 ms, and
  spending at most ~1/8 of the time on it).

Each delta's time covers the synchronous work of the update plus a forced style/layout (a
``getBoundingClientRect`` read), measured in the page with ``performance.now()``; the deltas
come at full speed, the event loop running between two of them (timers fire, as between
two WebSocket messages). Reported per shape and strategy: median, p90, p99 and max ms per
delta, the median of the last 500 deltas (the longest texts), the total, how many deltas
took longer than a 60 Hz frame (16.7 ms), long tasks (> 50 ms, timers included) and the
time of ``finish()``. The final HTML of both strategies must be identical.

    python -m bench.ui_render [--tokens 4000] [--rounds 1] [--shape mixed|code|both] [--quick]
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from bench import common

NAME = "ui_render"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FRAME_MS = 1000 / 60

SECTION = """\
## Step {n}: configure the {thing}

The **{thing}** reads its settings from `config/{thing}.toml` at start-up; see \
[the reference](https://example.com/docs/{thing}) for every key. In short, keep the defaults \
unless *you* measured a reason to change them, and prefer small, reversible changes.

- `timeout`: seconds before a request is abandoned
- `retries`: how many times to try again, with backoff
- `pool_size`: connections kept open per worker

```python
def load_{thing}(path: str) -> dict[str, object]:
    \"\"\"Read the {thing} settings, falling back to defaults.\"\"\"
    settings = dict(DEFAULTS)
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.partition("=")
            if key.strip():
                settings[key.strip()] = value.strip()
    return settings
```

| Setting | Default | Range |
|:--|--:|:-:|
| timeout | 30 | 1-300 |
| retries | 3 | 0-10 |
| pool_size | 8 | 1-64 |

The expected latency is $L = t_0 + n \\cdot \\frac{{s}}{{b}}$ for $n$ retries, and over a \
long run

$$
\\bar{{L}} = \\frac{{1}}{{N}} \\sum_{{i=1}}^{{N}} L_i \\le t_0 + \\sqrt{{\\operatorname{{Var}}(L)}}
$$

1. Stop the service.

2. Edit the file, then check it with `{thing} --check`.

3. Start it again and watch the logs:

   ```bash
   journalctl -fu {thing} | grep -i error
   ```

- [x] settings reviewed
- [ ] load test on staging

> Note: changes to `pool_size` need a restart; the others are read on `SIGHUP`.

```js
export async function reload{n}(client) {{
  const response = await client.post("/admin/reload", {{ target: "{thing}" }});
  if (!response.ok) throw new Error(`reload failed: ${{response.status}}`);
  return response.json();
}}
```

"""

THINGS = ["gateway", "scheduler", "indexer", "mailer", "cache", "worker", "ledger", "proxy"]


# Roughly how a BPE tokenizer pre-splits text (GPT-2's pattern, simplified): a word with its
# leading space, up to 3 digits, a run of punctuation, or a run of whitespace. Common words
# are one token each, so one piece per delta is a fair stand-in for one model token.
TOKEN = re.compile(r" ?[A-Za-z]+| ?\d{1,3}| ?[^\sA-Za-z\d]+|\s+")


def answer(tokens: int) -> list[str]:
    """The answer as a list of deltas, one token each."""
    text = "# Operating the platform\n\nThis guide walks through each component in turn.\n\n"
    n = 0
    while len(TOKEN.findall(text)) < tokens:
        text += SECTION.format(n=n + 1, thing=THINGS[n % len(THINGS)])
        n += 1
    pieces = TOKEN.findall(text)
    assert "".join(pieces) == text
    return pieces[:tokens]


CODE_UNIT = """\
def handler_{i}(request, *, retries: int = 3) -> dict[str, object]:
    \"\"\"Handle request {i}: validate, process, retry on transient errors.\"\"\"
    result = process(request, attempt={i}, limit=retries * 2)
    if not result.ok:
        raise RuntimeError(f"failed: {{result.status}}")  # a comment with 'quotes'
    return {{"id": {i}, "value": result.value}}

"""


def code_answer(tokens: int) -> list[str]:
    """One sentence, then a single python block that takes the rest of the answer."""
    text = "Here is the module:\n\n```python\n"
    i = 0
    while len(TOKEN.findall(text)) < tokens:
        text += CODE_UNIT.format(i=i)
        i += 1
    return TOKEN.findall(text)[:tokens]


SHAPES = {"mixed": answer, "code": code_answer}


# Runs in the page: streams the deltas with one strategy, returns ms per delta. Between two
# deltas the event loop runs (as it does between two WebSocket messages), so timers fire;
# tasks over 50 ms (long tasks: timers included) are counted separately.
STREAM = """async ({ deltas, mode }) => {
  const md = window.md;
  const box = document.getElementById(mode === "full" ? "out" : "stream");
  box.replaceChildren();
  const stream = mode === "incremental" ? md.createStreamRenderer(box) : null;
  const long = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) long.push(entry.duration);
  });
  observer.observe({ type: "longtask" });
  const times = [];
  let text = "";
  for (const delta of deltas) {
    text += delta;
    const start = performance.now();
    if (stream) {
      stream.update(text);
    } else {
      box.innerHTML = md.renderMarkdown(text);
      md.enhance(box);
    }
    box.getBoundingClientRect(); // style + layout, synchronously
    times.push(performance.now() - start);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  const start = performance.now();
  if (stream) stream.finish();
  box.getBoundingClientRect();
  const finish = performance.now() - start;
  await new Promise((resolve) => setTimeout(resolve, 100));
  observer.disconnect();
  const html = box.innerHTML;
  box.replaceChildren();
  return { times, finish, long, html, chars: text.length };
}"""


def summarize(shape: str, mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    times = [t for run in runs for t in run["times"]]
    long = [t for run in runs for t in run["long"]]
    return {
        "shape": shape,
        "mode": mode,
        "deltas": len(times),
        "median_ms": common.median(times),
        "p90_ms": common.percentile(times, 90),
        "p99_ms": common.percentile(times, 99),
        "max_ms": max(times),
        "last_500_median_ms": common.median(runs[-1]["times"][-500:]),
        "total_s": sum(times) / 1000,
        "over_frame": sum(1 for t in times if t > FRAME_MS),
        "long_tasks": len(long),
        "long_tasks_s": sum(long) / 1000,
        "finish_ms": common.median([run["finish"] for run in runs]),
        "chars": runs[-1]["chars"],
    }


def measure(shapes: list[str], tokens: int, rounds: int) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright
    from tests.browser.conftest import CHROMIUM_ARGS
    from tests.browser.pages.static_server import serve

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set CHROMIUM")
    rows = []
    with serve() as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(base + "/pages/markdown.html")
            page.wait_for_selector("html[data-ready=true]")
            for shape in shapes:
                deltas = SHAPES[shape](tokens)
                # Warm-up: JIT, fonts, highlight.js grammars.
                page.evaluate(STREAM, {"deltas": deltas[:300], "mode": "full"})
                page.evaluate(STREAM, {"deltas": deltas[:300], "mode": "incremental"})
                runs: dict[str, list[dict[str, Any]]] = {"full": [], "incremental": []}
                for _ in range(rounds):
                    for mode in ("incremental", "full"):
                        runs[mode].append(page.evaluate(STREAM, {"deltas": deltas, "mode": mode}))
                    if runs["full"][-1]["html"] != runs["incremental"][-1]["html"]:
                        raise SystemExit(f"{shape}: the incremental and full renders differ")
                for mode in ("full", "incremental"):
                    rows.append(summarize(shape, mode, runs[mode]))
                    print(f"  {shape} {mode}: median {rows[-1]['median_ms']:.2f} ms", flush=True)
        finally:
            browser.close()
    return rows


COLUMNS = [
    ("shape", "shape"),
    ("mode", "mode"),
    ("chars", "chars"),
    ("median ms", "median_ms"),
    ("p90 ms", "p90_ms"),
    ("p99 ms", "p99_ms"),
    ("max ms", "max_ms"),
    ("last 500 med", "last_500_median_ms"),
    ("total s", "total_s"),
    (">16.7ms", "over_frame"),
    ("long tasks", "long_tasks"),
    ("finish ms", "finish_ms"),
]


def render(rows: list[dict[str, Any]], machine: dict[str, Any], tokens: int) -> str:
    title = (
        f"ui_render: Markdown render time per streamed delta, {tokens}-token answers, Chromium\n"
        f"{common.machine_line(machine)}"
    )
    body = [[row[key] for _, key in COLUMNS] for row in rows]
    return common.table(title, [header for header, _ in COLUMNS], body)


def main() -> None:
    parser = common.base_parser(__doc__ or NAME, transports=False)
    parser.add_argument("--tokens", type=int, default=None, help="answer length (4000)")
    parser.add_argument("--rounds", type=int, default=None, help="streams per strategy (1)")
    parser.add_argument("--shape", choices=(*SHAPES, "both"), default="both")
    args = parser.parse_args()
    tokens = args.tokens or (800 if args.quick else 4000)
    rounds = args.rounds or 1
    shapes = list(SHAPES) if args.shape == "both" else [args.shape]
    machine = common.machine_info()
    print(common.machine_line(machine), flush=True)
    rows = measure(shapes, tokens, rounds)
    print()
    print(render(rows, machine, tokens))
    data = {
        "benchmark": NAME,
        "machine": machine,
        "args": {"tokens": tokens, "rounds": rounds, "shapes": shapes},
        "results": rows,
    }
    print(f"\nwrote {common.write_results(NAME, data, args.out)}")


if __name__ == "__main__":
    main()
