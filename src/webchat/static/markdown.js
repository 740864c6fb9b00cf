// A small, safe Markdown renderer for model output.
//
// Safety rule: every piece of source text is HTML-escaped (& < > " ') before any markup is
// added, and the only markup added is a fixed set of tags built here. Links are produced only
// for http(s) URLs, open in a new tab, and carry rel="noopener noreferrer". The output is
// therefore safe to assign to innerHTML, whatever the model wrote.
//
// Supported: paragraphs (single newlines become <br>), # headings, **bold**, __bold__, *italic*,
// _italic_, ~~strike~~, `code`, fenced ``` / ~~~ code blocks (an unclosed fence, as while
// streaming, runs to the end), - * + and 1. lists (nested by indentation), > quotes, ---
// rules, [text](https://...) links and bare https:// URLs.
//
// Pure functions only: no DOM access, so it can be tested anywhere.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escape the five HTML-significant characters. */
export function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// Placeholders keep already-built HTML (code spans, links) away from later passes. NUL never
// survives in the source (it is stripped first), so a placeholder cannot be forged.
const SLOT = /\u0000(\d+)\u0000/g;

// After escaping, a URL can no longer contain < > " ' (they became entities); stop at those
// entities, whitespace and brackets, so an attribute can never be broken out of.
const URL_BODY = String.raw`https?:\/\/(?:(?!&quot;|&#39;|&lt;|&gt;)[^\s<>"'()\[\]\u0000])+`;
const LINK = new RegExp(String.raw`\[([^\]\n]+)\]\((${URL_BODY})\)`, "g");
const BARE_URL = new RegExp(String.raw`(^|[^\w])(${URL_BODY})`, "g");

function link(href, label) {
  return `<a href="${href}" target="_blank" rel="noopener noreferrer">${label}</a>`;
}

function emphasis(html) {
  return html
    .replace(/\*\*(?=\S)([^\n]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^\w])__(?=\S)([^\n]*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
    .replace(/(^|[^\w*])\*(?=[^\s*])([^*\n]*?[^\s*])\*(?![\w*])/g, "$1<em>$2</em>")
    .replace(/(^|[^\w*])\*([^\s*])\*(?![\w*])/g, "$1<em>$2</em>")
    .replace(/(^|[^\w])_(?=[^\s_])([^_\n]*?[^\s_])_(?!\w)/g, "$1<em>$2</em>")
    .replace(/(^|[^\w])_([^\s_])_(?!\w)/g, "$1<em>$2</em>")
    .replace(/~~(?=\S)([^\n]*?\S)~~/g, "<del>$1</del>");
}

/** Inline Markdown of one block of text (no block structure). Returns safe HTML. */
export function renderInline(source) {
  const slots = [];
  const keep = (html) => `\u0000${slots.push(html) - 1}\u0000`;
  let html = escapeHtml(String(source ?? "").replace(/\u0000/g, ""));
  html = html.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (_m, _ticks, code) =>
    keep(`<code>${code.replace(/^ (.*) $/s, "$1")}</code>`),
  );
  html = html.replace(LINK, (_m, label, href) => keep(link(href, emphasis(label))));
  html = html.replace(BARE_URL, (_m, before, url) => {
    const trail = url.match(/[.,;:!?]+$/)?.[0] ?? "";
    const href = trail ? url.slice(0, -trail.length) : url;
    return before + keep(link(href, href)) + trail;
  });
  html = emphasis(html);
  // Slots may nest (a link label never holds a slot, but be safe): restore until stable.
  let previous;
  do {
    previous = html;
    html = html.replace(SLOT, (_m, index) => slots[Number(index)] ?? "");
  } while (html !== previous);
  return html.replace(/\n/g, "<br>");
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const BLANK = /^\s*$/;

function indentOf(line) {
  return line.match(/^\s*/)[0].replace(/\t/g, "    ").length;
}

function dedent(line, width) {
  let removed = 0;
  let i = 0;
  while (i < line.length && removed < width && (line[i] === " " || line[i] === "\t")) {
    removed += line[i] === "\t" ? 4 : 1;
    i += 1;
  }
  return line.slice(i);
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function renderList(lines, start) {
  const first = lines[start].match(ITEM);
  const baseIndent = indentOf(first[1]);
  const ordered = /\d/.test(first[2]);
  const items = [];
  let i = start;
  while (i < lines.length) {
    const line = lines[i];
    const item = line.match(ITEM);
    if (item && indentOf(item[1]) <= baseIndent) {
      if (/\d/.test(item[2]) !== ordered) break;
      items.push({ text: [item[3]], children: [] });
      i += 1;
      continue;
    }
    if (BLANK.test(line)) {
      // A blank line ends the list unless the next line continues it.
      let next = i + 1;
      while (next < lines.length && BLANK.test(lines[next])) next += 1;
      if (next < lines.length && indentOf(lines[next]) > baseIndent) {
        items[items.length - 1].children.push("");
        i += 1;
        continue;
      }
      const again = next < lines.length ? lines[next].match(ITEM) : null;
      if (again && indentOf(again[1]) <= baseIndent && /\d/.test(again[2]) === ordered) {
        i = next;
        continue;
      }
      break;
    }
    if (indentOf(line) > baseIndent) {
      items[items.length - 1].children.push(dedent(line, baseIndent + 2));
      i += 1;
      continue;
    }
    if (!startsBlock(line) && !RULE.test(line)) {
      const current = items[items.length - 1];
      if (current.children.length === 0) current.text.push(line.trim());
      else current.children.push(line);
      i += 1;
      continue;
    }
    break;
  }
  const number = ordered ? Number.parseInt(first[2], 10) : 1;
  const open = ordered ? (number !== 1 ? `<ol start="${number}">` : "<ol>") : "<ul>";
  const body = items
    .map((item) => {
      const nested = item.children.some((l) => !BLANK.test(l))
        ? renderMarkdown(item.children.join("\n"))
        : "";
      return `<li>${renderInline(item.text.join("\n"))}${nested}</li>`;
    })
    .join("");
  return { html: `${open}${body}${ordered ? "</ol>" : "</ul>"}`, next: i };
}

/** Render Markdown source to safe HTML. */
export function renderMarkdown(source) {
  const text = String(source ?? "")
    .replace(/\u0000/g, "")
    .replace(/\r\n?/g, "\n");
  const lines = text.split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (BLANK.test(line)) {
      i += 1;
      continue;
    }
    const fence = line.match(FENCE);
    if (fence) {
      const marker = fence[1];
      const body = [];
      i += 1;
      while (i < lines.length) {
        const close = lines[i].match(/^ {0,3}(`{3,}|~{3,})\s*$/);
        if (close && close[1][0] === marker[0] && close[1].length >= marker.length) {
          i += 1;
          break;
        }
        body.push(lines[i]);
        i += 1;
      }
      const lang = fence[2] ? ` class="language-${escapeHtml(fence[2])}"` : "";
      out.push(`<pre><code${lang}>${escapeHtml(body.join("\n"))}</code></pre>`);
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      const level = heading[1].length;
      out.push(`<h${level}>${renderInline(heading[2] ?? "")}</h${level}>`);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      out.push("<hr>");
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        quoted.push(lines[i].replace(QUOTE, ""));
        i += 1;
      }
      out.push(`<blockquote>${renderMarkdown(quoted.join("\n"))}</blockquote>`);
      continue;
    }
    if (ITEM.test(line)) {
      const list = renderList(lines, i);
      out.push(list.html);
      i = list.next;
      continue;
    }
    const paragraph = [];
    while (i < lines.length && !BLANK.test(lines[i])) {
      if (paragraph.length > 0 && (startsBlock(lines[i]) || RULE.test(lines[i]))) break;
      paragraph.push(lines[i].trim());
      i += 1;
    }
    out.push(`<p>${renderInline(paragraph.join("\n"))}</p>`);
  }
  return out.join("");
}
