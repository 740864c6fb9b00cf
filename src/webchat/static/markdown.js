// Markdown for model output: markdown-it (GFM tables, strikethrough, task lists, linkify),
// KaTeX math, highlight.js code blocks, and DOMPurify on every HTML string before it reaches
// the DOM. The libraries are vendored, pinned files under ./vendor/ (see vendor/VENDORED.md);
// ./markdown.css styles the output (it imports KaTeX's CSS and a highlight.js theme).
//
// API
//   renderMarkdown(text) -> string   safe HTML for innerHTML; then call enhance() on the element
//   enhance(container)               on every `pre > code`: highlight.js, a head with the
//                                    language label and a Copy button (clipboard.writeText);
//                                    KaTeX's layout styles (see CSP below). Idempotent.
//   createStreamRenderer(container)  incremental rendering while an answer streams:
//                                    update(fullText) on each delta, finish(fullText?) at the
//                                    end, reset(); finished blocks are rendered once and kept,
//                                    only the unfinished last block is re-rendered
//   escapeHtml(text) -> string       escapes & < > " '
//
// Safety
//   - markdown-it runs with html:false: raw HTML in the source is text, never markup.
//   - Links (and linkified URLs) only for http:, https: and mailto:; every <a> gets
//     target="_blank" rel="noopener noreferrer". Images become plain links: nothing is fetched.
//   - KaTeX runs with trust:false (no \href, \url, \htmlClass, \htmlId, \htmlStyle,
//     \includegraphics), maxExpand and maxSize bounded, throwOnError:false.
//   - Every HTML string (markdown-it's, KaTeX's within it, highlight.js's) goes through
//     DOMPurify, a private instance with hooks: no id/name/style attributes (no DOM clobbering,
//     no CSS), inputs only as disabled checkboxes, href only http(s)/mailto.
//   - renderMarkdown() serializes DOMPurify's DOM itself, escaping & < > " ' in every text
//     node and attribute value, so the string cannot re-parse into anything else.
//
// CSP: the page allows no inline styles (style-src 'self'): a style attribute parsed from HTML
// is refused (and logged). KaTeX positions its boxes with style attributes, so they are moved
// to data-katex-style before sanitizing (kept only inside .katex, never with url(...)), and
// enhance() applies them through the CSSOM (el.style.cssText), which CSP permits. Table column
// alignment becomes a class (md-align-left|center|right).

import DOMPurify from "./vendor/dompurify/purify.es.js";
import hljs from "./vendor/highlight.js/highlight.min.js";
import katex from "./vendor/katex/katex.js";
import MarkdownIt from "./vendor/markdown-it/markdown-it.esm.min.js";
import { tasklist } from "./vendor/mdit-plugin-tasklist/index.js";
import { tex } from "./vendor/mdit-plugin-tex/index.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escape the five HTML-significant characters. */
export function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// -- markdown-it ---------------------------------------------------------------------------

const SAFE_URL = /^(?:https?:|mailto:)/i;
const LANGUAGE = /^[\w#+.-]{1,40}$/;

const KATEX_OPTIONS = {
  throwOnError: false,
  trust: false,
  strict: "ignore",
  maxSize: 50, // em: no giant boxes
  maxExpand: 500, // macro expansions: no exponential blow-up
  output: "htmlAndMathml",
};

// Streaming re-renders the unfinished last block on every delta, formulas included: keep the
// recent results (KaTeX is by far the most expensive part of a render).
const mathCache = new Map();
const MATH_CACHE_SIZE = 256;

/** KaTeX HTML of `source`: inline (wrap ""), or display math in a `div` (a block of its
 * own) or a `span` (display math written inside a paragraph, which a div would split). */
function renderMath(source, wrap) {
  const key = `${wrap || "inline"}:${source}`;
  let html = mathCache.get(key);
  if (html === undefined) {
    html = renderMathUncached(source, wrap);
    if (mathCache.size >= MATH_CACHE_SIZE) mathCache.delete(mathCache.keys().next().value);
    mathCache.set(key, html);
  }
  return html;
}

function renderMathUncached(source, wrap) {
  let html;
  try {
    html = katex.renderToString(source, { ...KATEX_OPTIONS, displayMode: wrap !== "" });
    // KaTeX writes its layout as style attributes, which the page's CSP (style-src 'self')
    // refuses when parsed from HTML, with one console error each. Move them aside; enhance()
    // applies them through the CSSOM. KaTeX escapes " in text, so ` style="` is an attribute.
    html = html.replaceAll(' style="', ' data-katex-style="');
  } catch {
    // throwOnError:false covers parse errors; anything else (e.g. maxExpand) shows the source.
    html = `<code class="math-error">${escapeHtml(source)}</code>`;
  }
  return wrap ? `<${wrap} class="math-display">${html}</${wrap}>` : html;
}

const DOLLAR = 0x24;
const BACKSLASH = 0x5c;

/**
 * `$$…$$` inside a paragraph (`the sum $$\sum_i x_i$$ is`): @mdit/plugin-tex takes `$$` only
 * at the start of a block and leaves it as text elsewhere. This rule, ahead of its inline
 * `$`, makes it display math in place. An unclosed `$$` (still streaming) stays text.
 */
function inlineDisplayMath(state, silent) {
  const { src, pos } = state;
  if (src.charCodeAt(pos) !== DOLLAR || src.charCodeAt(pos + 1) !== DOLLAR) return false;
  let end = pos + 2;
  for (; (end = src.indexOf("$$", end)) !== -1; end += 1) {
    let slashes = 0;
    while (src.charCodeAt(end - 1 - slashes) === BACKSLASH) slashes += 1;
    if (slashes % 2 === 0) break; // not \$$
  }
  if (end === -1 || src.slice(pos + 2, end).trim() === "") return false;
  if (!silent) {
    const token = state.push("math_inline_display", "math", 0);
    token.markup = "$$";
    token.content = src.slice(pos + 2, end);
  }
  state.pos = end + 2;
  return true;
}

function createMarkdownIt() {
  const md = new MarkdownIt({ html: false, linkify: true, breaks: true, typographer: false });
  md.validateLink = (url) => SAFE_URL.test(url.trim());
  md.use(tasklist, { label: false, disabled: true });
  const render = (source, display) => renderMath(source, display ? "div" : "");
  md.use(tex, { delimiters: "all", render });
  md.inline.ruler.before("math_inline_dollar", "math_inline_display", inlineDisplayMath);

  const rules = md.renderer.rules;
  rules.math_inline_display = (tokens, idx) => renderMath(tokens[idx].content, "span");
  rules.softbreak = (tokens, idx, options) => (options.breaks ? "<br>" : "\n");
  rules.hardbreak = () => "<br>";
  rules.fence = (tokens, idx) => {
    const token = tokens[idx];
    const info = token.info ? md.utils.unescapeAll(token.info).trim() : "";
    const lang = info.split(/\s+/)[0];
    const cls = lang && LANGUAGE.test(lang) ? ` class="language-${escapeHtml(lang)}"` : "";
    const code = token.content.endsWith("\n") ? token.content.slice(0, -1) : token.content;
    return `<pre><code${cls}>${escapeHtml(code)}</code></pre>`;
  };
  rules.code_block = (tokens, idx) => {
    const code = tokens[idx].content.replace(/\n$/, "");
    return `<pre><code>${escapeHtml(code)}</code></pre>`;
  };
  // Images are never fetched (no tracking pixels, no exfiltration by URL): a link instead.
  rules.image = (tokens, idx, options, env, self) => {
    const token = tokens[idx];
    const src = token.attrGet("src") ?? "";
    const alt = self.renderInlineAsText(token.children ?? [], options, env) || src;
    return `<a href="${escapeHtml(src)}">${escapeHtml(alt)}</a>`;
  };

  md.core.ruler.push("webchat_blocks", (state) => {
    for (const token of state.tokens) {
      // No "\n" between blocks: the HTML of consecutive blocks is then exactly the
      // concatenation of their own HTML, which the stream renderer relies on.
      token.block = false;
      if (token.type === "th_open" || token.type === "td_open") {
        const align = /^text-align:(left|center|right)$/.exec(token.attrGet("style") ?? "");
        if (token.attrs) token.attrs = token.attrs.filter(([name]) => name !== "style");
        if (align) token.attrJoin("class", `md-align-${align[1]}`);
      }
    }
  });
  return md;
}

const md = createMarkdownIt();

// -- DOMPurify -------------------------------------------------------------------------------

const purifier = DOMPurify(window); // a private instance: the hooks below stay ours
const KATEX_STYLE = "data-katex-style";
const UNSAFE_CSS = /url\s*\(|expression\s*\(|@import|\\|javascript:/i;

purifier.addHook("uponSanitizeAttribute", (node, data) => {
  if (data.attrName === KATEX_STYLE) {
    data.keepAttr = Boolean(node.closest?.(".katex")) && !UNSAFE_CSS.test(data.attrValue);
  }
});

purifier.addHook("afterSanitizeAttributes", (node) => {
  for (const name of ["href", "xlink:href"]) {
    const url = node.getAttribute?.(name);
    if (url != null && !SAFE_URL.test(url.trim())) node.removeAttribute(name);
  }
  if (node.localName === "a") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
  if (node.localName === "input") {
    for (const name of [...node.getAttributeNames()]) {
      if (!["type", "class", "checked", "disabled"].includes(name)) node.removeAttribute(name);
    }
    node.setAttribute("type", "checkbox"); // task lists are the only inputs markdown-it makes
    node.setAttribute("disabled", "");
  }
});

const PURIFY_MARKDOWN = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ["style", "img", "svg:image", "form", "button", "textarea", "select", "option"],
  FORBID_ATTR: ["style", "id", "name", "for", "form", "srcset", "action", "formaction", "autofocus"],
  ADD_ATTR: [KATEX_STYLE],
  ADD_URI_SAFE_ATTR: [KATEX_STYLE], // a CSS declaration list, checked in the hook below
  // KaTeX's MathML copy carries the TeX source in <annotation>, which DOMPurify does not allow
  // (nor <semantics>); drop the annotation with its text rather than leave bare TeX in <math>.
  ADD_FORBID_CONTENTS: ["annotation", "annotation-xml"],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: true,
};

const PURIFY_HIGHLIGHT = {
  RETURN_DOM_FRAGMENT: true,
  ALLOWED_TAGS: ["span"],
  ALLOWED_ATTR: ["class"],
};

/** Sanitized DOM of Markdown source (a DocumentFragment). */
function renderFragment(source) {
  return purifier.sanitize(md.render(String(source ?? "")), PURIFY_MARKDOWN);
}

// -- serialization -----------------------------------------------------------------------------

const HTML_NS = "http://www.w3.org/1999/xhtml";
const VOID = new Set([
  "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
  "wbr",
]);

function serialize(parent) {
  let out = "";
  for (const node of parent.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      out += escapeHtml(node.data);
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      const name = node.localName;
      out += `<${name}`;
      for (const attr of node.attributes) out += ` ${attr.name}="${escapeHtml(attr.value)}"`;
      out += ">";
      if (node.namespaceURI === HTML_NS && VOID.has(name)) continue;
      out += `${serialize(node)}</${name}>`;
    }
    // Comments and anything else: dropped.
  }
  return out;
}

/** Render Markdown source to safe HTML (a string for innerHTML; then call enhance()). */
export function renderMarkdown(source) {
  return serialize(renderFragment(source));
}

// -- enhance: highlight, label, copy, KaTeX styles ----------------------------------------------

const COPY_LABEL = "Copy";
const COPIED_LABEL = "Copied";

function languageOf(code) {
  for (const cls of code.classList) {
    if (cls.startsWith("language-")) return cls.slice("language-".length);
  }
  return "";
}

function copyButton(code) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "code-copy";
  button.textContent = COPY_LABEL;
  button.setAttribute("aria-label", "Copy code");
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      button.textContent = COPIED_LABEL;
      button.dataset.state = "copied";
    } catch {
      button.textContent = "Copy failed";
      button.dataset.state = "failed";
    }
    clearTimeout(button.resetTimer);
    button.resetTimer = setTimeout(() => {
      button.textContent = COPY_LABEL;
      delete button.dataset.state;
    }, 1500);
  });
  return button;
}

/** Replace code's children by the highlighted `text` (sanitized highlight.js HTML). */
function highlightInto(code, lang, text) {
  const { value } = hljs.highlight(text, { language: lang, ignoreIllegals: true });
  code.replaceChildren(purifier.sanitize(value, PURIFY_HIGHLIGHT));
}

function enhanceCode(code) {
  const pre = code.parentElement;
  const lang = languageOf(code);
  if (lang && hljs.getLanguage(lang)) {
    highlightInto(code, lang, code.textContent);
    code.classList.add("hljs");
  }
  const wrapper = document.createElement("div");
  wrapper.className = "code-block";
  const head = document.createElement("div");
  head.className = "code-head";
  const label = document.createElement("span");
  label.className = "code-lang";
  label.textContent = lang ? lang.toLowerCase() : "text";
  head.append(label, copyButton(code));
  pre.replaceWith(wrapper);
  wrapper.append(head, pre);
}

function applyKatexStyles(root) {
  for (const el of root.querySelectorAll(`[${KATEX_STYLE}]`)) {
    const css = el.getAttribute(KATEX_STYLE);
    el.removeAttribute(KATEX_STYLE);
    // Through the CSSOM, which CSP allows (a style attribute in HTML it does not).
    if (el.closest(".katex") && !UNSAFE_CSS.test(css)) el.style.cssText = css;
  }
}

/** Highlight + label + copy button on each `pre > code`, KaTeX layout styles. Idempotent. */
export function enhance(container) {
  for (const code of container.querySelectorAll("pre > code")) {
    if (code.parentElement.parentElement?.classList.contains("code-block")) continue;
    enhanceCode(code);
  }
  applyKatexStyles(container);
  return container;
}

// -- streaming ---------------------------------------------------------------------------------

const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})(.*)$/;
const LIST_ITEM = /^(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)/;
const REFERENCE = /^ {0,3}\[[^\]]+\]:/m;
const INDENTED = /^ {4}/;

/**
 * Scan text[from:] (`from` must be a block boundary) line by line. Returns `end`: the offset
 * up to which the blocks are finished, i.e. the end of the last run of blank lines, outside
 * any code fence or display math, followed by a complete line that cannot continue the block
 * before it (it starts in column 0 and is not a list item), so that rendering text[from:end]
 * and text[end:] separately gives exactly the HTML of rendering both together; and `fence`:
 * the code fence still open after the last complete line, if any.
 */
function scanBlocks(text, from) {
  let fence = null; // { char, length, indent, contentStart } inside a ``` / ~~~ fence
  let math = null; // "$$" or "\\]" inside display math
  let blank = false;
  let end = from;
  let pos = from;
  while (pos < text.length) {
    const nl = text.indexOf("\n", pos);
    if (nl === -1) break; // the last line is still being written
    const line = text.slice(pos, nl);
    if (fence) {
      const close = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(line);
      if (close && close[1][0] === fence.char && close[1].length >= fence.length) fence = null;
    } else if (math) {
      if (line.trimEnd().endsWith(math)) math = null;
    } else if (line.trim() === "") {
      blank = true;
    } else {
      if (blank && pos > from && !/^[ \t]/.test(line) && !LIST_ITEM.test(line)) end = pos;
      blank = false;
      const open = FENCE_OPEN.exec(line);
      const body = line.trim();
      if (open && !(open[1][0] === "`" && open[2].includes("`"))) {
        fence = {
          char: open[1][0],
          length: open[1].length,
          indent: line.length - line.trimStart().length,
          contentStart: nl + 1,
        };
      } else if (!INDENTED.test(line) && body.startsWith("$$")) {
        if (!(body.length >= 4 && body.endsWith("$$"))) math = "$$";
      } else if (!INDENTED.test(line) && body.startsWith("\\[")) {
        if (!(body.length >= 4 && body.endsWith("\\]"))) math = "\\]";
      }
    }
    pos = nl + 1;
  }
  return { end, fence };
}

/** How much of `text` (from the block boundary `from`) is finished blocks; see scanBlocks. */
export function finishedLength(text, from = 0) {
  return scanBlocks(text, from).end;
}

// An open code fence in the streaming tail longer than this is not re-rendered on each delta:
// new code is appended as text, and the block is re-highlighted from a timer, at most every
// HIGHLIGHT_MS and never more than ~1/HIGHLIGHT_SHARE of the time (the delay grows with what
// the last highlight cost, as the block grows).
const BIG_CODE = 2000;
const HIGHLIGHT_MS = 250;
const HIGHLIGHT_SHARE = 8;

/**
 * Incremental rendering into `container` (which it owns: it is cleared first). update(text)
 * takes the whole text so far: finished blocks are rendered once and kept, only the last,
 * unfinished part is re-rendered, except a long open code block, which grows in place (and
 * is re-highlighted at most every HIGHLIGHT_MS). After finish(), and after every update()
 * that does not end inside such a block, the container holds exactly what
 * `container.innerHTML = renderMarkdown(text); enhance(container)` gives.
 */
export function createStreamRenderer(container) {
  let text = "";
  let frozen = 0; // text[0:frozen] is rendered into frozenNodes and never touched again
  let frozenNodes = 0; // how many of container's children belong to the frozen part
  let wholeText = false; // reference definitions seen: render everything, every time
  let open = null; // the tail's last block, an open fence: { contentStart, code, lang, shown, tail }
  let timer = null;
  let highlightDelay = HIGHLIGHT_MS;

  function renderInto(source) {
    const fragment = renderFragment(source);
    enhance(fragment);
    const count = fragment.childNodes.length;
    container.append(fragment);
    return count;
  }

  function dropTail() {
    while (container.childNodes.length > frozenNodes) container.lastChild.remove();
  }

  function cancelHighlight() {
    clearTimeout(timer);
    timer = null;
  }

  function reset() {
    cancelHighlight();
    container.replaceChildren();
    text = "";
    frozen = 0;
    frozenNodes = 0;
    wholeText = false;
    open = null;
    highlightDelay = HIGHLIGHT_MS;
  }

  const codeOf = (contentStart) => text.slice(contentStart).replace(/\n$/, "");

  function renderTail(fence) {
    dropTail();
    renderInto(text.slice(frozen));
    open = null;
    const last = container.lastChild;
    if (fence && fence.indent === 0 && last?.classList?.contains("code-block")) {
      const code = last.querySelector("pre > code");
      open = { contentStart: fence.contentStart, code, lang: languageOf(code), tail: null };
      open.shown = codeOf(fence.contentStart);
    }
  }

  function highlightOpen() {
    timer = null;
    if (!open || !open.code.isConnected) return;
    const start = performance.now();
    if (open.lang && hljs.getLanguage(open.lang)) highlightInto(open.code, open.lang, open.shown);
    else open.code.textContent = open.shown;
    open.tail = document.createTextNode("");
    open.code.append(open.tail);
    highlightDelay = Math.max(HIGHLIGHT_MS, (performance.now() - start) * HIGHLIGHT_SHARE);
  }

  // The fast path: the text only grew inside the long open fence the tail ends with.
  function growOpenFence(fence) {
    if (!open || !fence || fence.contentStart !== open.contentStart) return false;
    const lastLine = text.slice(text.lastIndexOf("\n") + 1);
    if (/^ {0,3}(`+|~+)[ \t]*$/.test(lastLine)) return false; // may be becoming the closing fence
    const code = codeOf(fence.contentStart);
    if (code.length < BIG_CODE || !code.startsWith(open.shown)) return false;
    if (!open.tail) {
      open.tail = document.createTextNode("");
      open.code.append(open.tail);
    }
    open.tail.appendData(code.slice(open.shown.length));
    open.shown = code;
    timer ??= setTimeout(highlightOpen, highlightDelay);
    return true;
  }

  function update(fullText) {
    const next = String(fullText ?? "")
      .replace(/\r\n?/g, "\n")
      .replace(/\0/g, "\uFFFD");
    if (next === text) return;
    if (next.length < frozen || !next.startsWith(text.slice(0, frozen))) reset();
    text = next;
    if (!wholeText && REFERENCE.test(text.slice(frozen))) wholeText = true;
    if (wholeText) {
      cancelHighlight();
      open = null;
      container.replaceChildren();
      frozen = 0;
      frozenNodes = 0;
      renderInto(text);
      return;
    }
    const { end, fence } = scanBlocks(text, frozen);
    if (end === frozen && growOpenFence(fence)) return;
    cancelHighlight();
    if (end > frozen) {
      dropTail();
      frozenNodes += renderInto(text.slice(frozen, end));
      frozen = end;
    }
    renderTail(fence);
  }

  /** The answer is complete: render the last block in full (highlighting included). */
  function finish(fullText) {
    if (fullText !== undefined) update(fullText);
    cancelHighlight();
    if (open?.tail) renderTail(null); // it grew in place: render it properly, once
    open = null;
  }

  reset();
  return {
    update,
    finish,
    reset,
    get text() {
      return text;
    },
    get frozenLength() {
      return frozen;
    },
  };
}
