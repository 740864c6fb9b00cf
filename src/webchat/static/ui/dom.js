// The page's elements and small DOM helpers shared by every module.
//
// Model output only reaches innerHTML through markdown.js (which sanitizes); every other text
// is set with textContent.

export const $ = (id) => document.getElementById(id);

/** An absolute URL for a path relative to the app root (the page's directory). */
export function appUrl(path) {
  return new URL(path, document.baseURI);
}

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
const ICONS = {
  copy: "M9 9h10v10H9zM5 15V5h10",
  check: "M5 12.5 10 17l9-10",
  edit: "M4 20h4L19 9l-4-4L4 16zM14 6l4 4",
  regenerate: "M4 12a8 8 0 0 1 14-5.3M20 5v4h-4M20 12a8 8 0 0 1-14 5.3M4 19v-4h4",
  up: "M7 11v9H4v-9zM7 11l4-8c1.5 0 2.5 1 2.5 2.5V9H19a1.5 1.5 0 0 1 1.5 1.8l-1.6 7.7A2 2 0 0 1 17 20H7",
  down: "M7 13V4H4v9zM7 13l4 8c1.5 0 2.5-1 2.5-2.5V15H19a1.5 1.5 0 0 0 1.5-1.8l-1.6-7.7A2 2 0 0 0 17 4H7",
  comment: "M4 5h16v11H9l-5 4z",
  sun: "M12 8a4 4 0 1 0 0 8 4 4 0 0 0 0-8zM12 2v2M12 20v2M4.9 4.9l1.4 1.4M17.7 17.7l1.4 1.4M2 12h2M20 12h2M4.9 19.1l1.4-1.4M17.7 6.3l1.4-1.4",
  moon: "M20 14.5A8 8 0 0 1 9.5 4 8 8 0 1 0 20 14.5z",
  system: "M3 5h18v11H3zM8 20h8M12 16v4",
  down_arrow: "M12 5v14M6 13l6 6 6-6",
  more: "M5 12h.01M12 12h.01M19 12h.01",
};

/** An inline SVG icon (no text content, so it never changes an element's text). */
export function icon(name, size = 16) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", String(size));
  svg.setAttribute("height", String(size));
  svg.setAttribute("aria-hidden", "true");
  svg.classList.add("icon");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", ICONS[name] ?? "");
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", name === "more" ? "3" : "1.8");
  path.setAttribute("stroke-linecap", "round");
  path.setAttribute("stroke-linejoin", "round");
  svg.append(path);
  return svg;
}

/** A button showing only an icon, named for assistive technology and in its tooltip. */
export function iconButton(name, label, className = "") {
  const button = el("button", `action ${className}`.trim());
  button.type = "button";
  button.setAttribute("aria-label", label);
  button.title = label;
  button.append(icon(name));
  return button;
}

export function uuid() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function formatValue(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Put `text` on the clipboard (the async API where allowed, else a hidden textarea). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = el("textarea", "visually-hidden");
    area.value = text;
    document.body.append(area);
    area.select();
    let done = false;
    try {
      done = document.execCommand("copy");
    } catch {
      done = false;
    }
    area.remove();
    return done;
  }
}

/** Show a check mark on `button` for a moment after a copy. */
export function flashCopied(button, ok = true) {
  button.dataset.copied = ok ? "true" : "failed";
  button.replaceChildren(icon(ok ? "check" : "copy"));
  clearTimeout(button.copiedTimer);
  button.copiedTimer = setTimeout(() => {
    delete button.dataset.copied;
    button.replaceChildren(icon("copy"));
  }, 1500);
}

export const ui = {
  app: $("app"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  menu: $("menu"),
  sidebarClose: $("sidebar-close"),
  newChat: $("new-chat"),
  search: $("search"),
  conversations: $("conversations"),
  conversationsEmpty: $("conversations-empty"),
  title: $("title"),
  convMenu: $("conv-menu"),
  convMenuButton: $("conv-menu-button"),
  convMenuList: $("conv-menu-list"),
  rename: $("conv-rename"),
  exportJson: $("conv-export-json"),
  exportMarkdown: $("conv-export-markdown"),
  deleteConv: $("conv-delete"),
  theme: $("theme"),
  profile: $("profile"),
  status: $("status"),
  statusText: $("status-text"),
  banner: $("offline-banner"),
  messages: $("messages"),
  empty: $("empty"),
  starters: $("starters"),
  transcript: $("transcript"),
  jump: $("jump"),
  composer: $("composer"),
  overridePanel: $("override-panel"),
  systemPrompt: $("system-prompt"),
  overrideHint: $("override-hint"),
  overrideDefault: $("override-default"),
  overrideClear: $("override-clear"),
  notice: $("notice"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  account: $("account"),
  accountAvatar: $("account-avatar"),
  accountName: $("account-name"),
  accountDetail: $("account-detail"),
  logout: $("logout"),
};
