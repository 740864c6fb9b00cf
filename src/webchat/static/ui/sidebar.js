// The sidebar: the conversation list (newest first, in day groups), search, the menus that
// rename, export and delete a conversation (the open one's in the top bar, and each row's
// own "…"), and the account box.

import { api, conversationPath, readJson, request, sendJson, SignedOutError } from "./api.js";
import { appUrl, el, ui } from "./dom.js";
import { showNotice } from "./notice.js";
import { auth, state } from "./state.js";

const CONVERSATIONS_EVERY_MS = 20_000;
const DAY_MS = 86_400_000;

let hooks = { select() {}, deleted() {}, render() {}, signedOut() {}, disconnect() {} };
let conversationsTimer = null;
let searchTimer = null;
let lastList = [];

function timeAgo(seconds) {
  if (!seconds) return "";
  const diff = Date.now() / 1000 - seconds;
  if (diff < 45) return "just now";
  if (diff < 3600) return `${Math.round(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.round(diff / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

/** "Today", "Yesterday", "Previous 7 days" or "Older", by the reader's calendar. */
export function dayGroup(seconds, now = new Date()) {
  if (!seconds) return "Older";
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  const at = seconds * 1000;
  if (at >= midnight) return "Today";
  if (at >= midnight - DAY_MS) return "Yesterday";
  if (at >= midnight - 7 * DAY_MS) return "Previous 7 days";
  return "Older";
}

const GROUPS = ["Today", "Yesterday", "Previous 7 days", "Older"];

export function scheduleConversations(delay = 250) {
  clearTimeout(conversationsTimer);
  conversationsTimer = setTimeout(refreshConversations, delay);
}

function searching() {
  return ui.search.value.trim() !== "";
}

export async function refreshConversations() {
  clearTimeout(conversationsTimer);
  if (auth.leaving) return;
  conversationsTimer = setTimeout(refreshConversations, CONVERSATIONS_EVERY_MS);
  if (searching()) return; // the results stay until the search box is cleared
  let list;
  try {
    const response = await api("api/conversations");
    if (!response.ok) return;
    list = (await response.json()).conversations;
  } catch {
    return;
  }
  if (!Array.isArray(list) || searching() || rowBusy()) return;
  lastList = list;
  drawList(list, { grouped: true });
}

function conversationItem(c) {
  const title = c.title || state.titles.get(c.conv_id) || "Untitled";
  state.titles.set(c.conv_id, c.title || state.titles.get(c.conv_id) || "");
  const item = el("li", "conversation");
  item.dataset.convId = c.conv_id;
  item.dataset.running = String(Boolean(c.running));
  const button = el("button", "conversation-button");
  button.type = "button";
  button.title = title;
  const name = el("span", "conversation-title", title);
  const meta = el("span", "conversation-meta");
  if (c.running) meta.append(el("span", "running-dot", ""), " answering… ");
  meta.append(`${c.profile ?? ""} · ${timeAgo(c.updated_at)}`);
  button.append(name, meta);
  if (typeof c.snippet === "string" && c.snippet) {
    button.append(el("span", "conversation-snippet", c.snippet));
  }
  button.addEventListener("click", () => hooks.select(c.conv_id));
  item.append(button, rowMenu(item, c.conv_id, title));
  return item;
}

function drawList(list, { grouped }) {
  const sorted = [...list].sort((a, b) => (b.updated_at ?? 0) - (a.updated_at ?? 0));
  const sections = [];
  if (grouped) {
    const byGroup = new Map(GROUPS.map((g) => [g, []]));
    for (const c of sorted) byGroup.get(dayGroup(c.updated_at)).push(c);
    for (const [label, items] of byGroup) {
      if (items.length === 0) continue;
      sections.push(section(label, items));
    }
  } else if (sorted.length > 0) {
    sections.push(section(`Results for “${ui.search.value.trim()}”`, sorted));
  }
  ui.conversations.replaceChildren(...sections);
  ui.conversationsEmpty.textContent = grouped ? "No conversations yet." : "Nothing found.";
  ui.conversationsEmpty.hidden = sorted.length > 0;
  hooks.render();
}

function section(label, items) {
  const group = el("section", "conversation-group");
  group.dataset.group = label;
  const heading = el("h3", "day-label", label);
  const list = el("ul", "conversation-list");
  list.append(...items.map(conversationItem));
  group.append(heading, list);
  return group;
}

async function runSearch() {
  const q = ui.search.value.trim();
  if (!q) {
    drawList(lastList, { grouped: true });
    scheduleConversations(0);
    return;
  }
  try {
    const response = await api(`api/conversations/search?q=${encodeURIComponent(q)}`);
    if (ui.search.value.trim() !== q) return; // typed on meanwhile
    if (!response.ok) {
      const data = await readJson(response);
      showNotice(`Search failed: ${data?.error ?? `HTTP ${response.status}`}`);
      return;
    }
    const data = await readJson(response);
    const found = data?.conversations ?? data?.results ?? (Array.isArray(data) ? data : []);
    drawList(found, { grouped: false });
  } catch (err) {
    if (!(err instanceof SignedOutError)) showNotice(`Search failed: ${err?.message ?? err}`);
  }
}

/** Forget a conversation that is gone (deleted here or in another tab). */
export function dropConversation(convId) {
  lastList = lastList.filter((c) => c.conv_id !== convId);
  state.titles.delete(convId);
  for (const item of ui.conversations.querySelectorAll(".conversation")) {
    if (item.dataset.convId === convId) {
      const group = item.closest(".conversation-group");
      item.remove();
      if (group && !group.querySelector(".conversation")) group.remove();
    }
  }
  ui.conversationsEmpty.hidden = ui.conversations.querySelector(".conversation") !== null;
}

// -- conversation menus: the open conversation's (top bar) and each row's ("…") ---------------

const MENU_ITEMS = '[role="menuitem"]';

/** A menu (`toggle` opens `list`): aria-expanded, arrow keys between items, Esc closes. */
function wireMenu(toggle, list) {
  toggle.setAttribute("aria-haspopup", "menu");
  toggle.setAttribute("aria-expanded", "false");
  toggle.addEventListener("click", (event) => {
    event.stopPropagation();
    const open = list.hidden;
    closeMenus();
    if (!open) return;
    list.hidden = false;
    toggle.setAttribute("aria-expanded", "true");
    list.querySelector(MENU_ITEMS)?.focus();
  });
  list.addEventListener("keydown", (event) => {
    const items = [...list.querySelectorAll(MENU_ITEMS)];
    const at = items.indexOf(document.activeElement);
    const moves = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 };
    if (event.key in moves) {
      event.preventDefault();
      items[(moves[event.key] + items.length) % items.length]?.focus();
    } else if (event.key === "Escape") {
      event.stopPropagation();
      closeMenus();
      toggle.focus();
    } else if (event.key === "Tab") {
      closeMenus();
    }
  });
}

function closeMenus() {
  const lists = [ui.convMenuList, ...ui.conversations.querySelectorAll(".row-menu-list")];
  for (const list of lists) {
    list.hidden = true;
    list.parentElement?.querySelector("[aria-expanded]")?.setAttribute("aria-expanded", "false");
    for (const button of list.querySelectorAll('[data-confirm="true"]')) {
      button.dataset.confirm = "false";
      button.textContent = "Delete";
    }
  }
}

function exportHref(convId, format) {
  return appUrl(conversationPath(convId, `/export?format=${format}`)).href;
}

export function renderConversationMenu() {
  ui.convMenu.hidden = !state.convId;
  if (state.convId) {
    ui.exportJson.href = exportHref(state.convId, "json");
    ui.exportMarkdown.href = exportHref(state.convId, "markdown");
  }
}

async function saveTitle(convId, title) {
  state.titles.set(convId, title);
  hooks.render();
  try {
    const response = await sendJson("PATCH", conversationPath(convId), { title });
    if (!response.ok) {
      const data = await readJson(response);
      showNotice(`Could not rename: ${data?.error ?? `HTTP ${response.status}`}`);
    }
  } catch (err) {
    if (!(err instanceof SignedOutError)) showNotice(`Could not rename: ${err?.message ?? err}`);
  }
  scheduleConversations(0);
}

/**
 * Rename in place: a text field (Enter saves, Esc cancels, leaving it saves) that `place`
 * puts where the title is; `restore(title)` puts the title back (the new one, or the old).
 */
function editTitle(convId, current, { place, restore }) {
  closeMenus();
  const input = el("input", "title-input");
  input.type = "text";
  input.value = state.titles.get(convId) || current;
  input.maxLength = 200;
  input.setAttribute("aria-label", "Conversation title");
  place(input);
  input.focus();
  input.select();
  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    const changed = save && title && title !== current;
    restore(changed ? title : current);
    if (changed) saveTitle(convId, title);
    else hooks.render();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
}

/** The open conversation's title, in the top bar, becomes the field. */
function renameOpen() {
  const convId = state.convId;
  if (!convId || ui.title.querySelector("input")) return;
  editTitle(convId, ui.title.textContent, {
    place(input) {
      ui.title.replaceChildren(input);
      ui.title.dataset.editing = "true";
    },
    restore(title) {
      delete ui.title.dataset.editing;
      ui.title.textContent = title;
    },
  });
}

/** A row's title becomes the field (the row's button hides meanwhile). */
function renameRow(item, convId) {
  const button = item.querySelector(".conversation-button");
  const name = item.querySelector(".conversation-title");
  if (!button || item.querySelector(".title-input")) return;
  editTitle(convId, name.textContent, {
    place(input) {
      button.hidden = true;
      item.prepend(input);
    },
    restore(title) {
      item.querySelector(".title-input")?.remove();
      name.textContent = title;
      button.title = title;
      button.hidden = false;
      button.focus();
    },
  });
}

/** Delete `convId` on the second press of `button` (the first asks "Delete for good?"). */
async function deleteConversation(convId, button) {
  if (!convId) return;
  if (button.dataset.confirm !== "true") {
    button.dataset.confirm = "true";
    button.textContent = "Delete for good?";
    return;
  }
  closeMenus();
  state.deleting = convId; // its conversation.deleted frame may come before this answer
  try {
    const response = await api(conversationPath(convId), { method: "DELETE" });
    if (!response.ok && response.status !== 404) {
      const data = await readJson(response);
      showNotice(`Could not delete: ${data?.error ?? `HTTP ${response.status}`}`);
      return;
    }
  } catch (err) {
    if (!(err instanceof SignedOutError)) showNotice(`Could not delete: ${err?.message ?? err}`);
    return;
  } finally {
    state.deleting = null;
  }
  hooks.deleted(convId, { here: true });
}

function menuItem(tag, label, className = "") {
  const item = el(tag, className, label);
  item.setAttribute("role", "menuitem");
  if (tag === "button") item.type = "button";
  return item;
}

/** A row's own "…" menu: rename, export and delete that row's conversation. */
function rowMenu(item, convId, title) {
  const box = el("div", "row-menu");
  const toggle = el("button", "icon-button row-menu-button", "…");
  toggle.type = "button";
  toggle.setAttribute("aria-label", `Actions for ${title}`);
  toggle.title = "Rename, export or delete";
  const list = el("div", "conv-menu-list row-menu-list");
  list.setAttribute("role", "menu");
  list.setAttribute("aria-label", `Actions for ${title}`);
  list.hidden = true;
  const rename = menuItem("button", "Rename");
  rename.addEventListener("click", () => renameRow(item, convId));
  const exports = [
    ["markdown", "Export as Markdown"],
    ["json", "Export as JSON"],
  ].map(([format, label]) => {
    const link = menuItem("a", label);
    link.href = exportHref(convId, format);
    link.download = "";
    link.addEventListener("click", closeMenus);
    return link;
  });
  const remove = menuItem("button", "Delete", "danger");
  remove.addEventListener("click", (event) => {
    event.stopPropagation();
    deleteConversation(convId, remove).then(() => {
      if (!item.isConnected) ui.search.focus(); // its row is gone: keep focus in the list
    });
  });
  list.append(rename, ...exports, remove);
  box.append(toggle, list);
  wireMenu(toggle, list);
  return box;
}

/** A row being renamed, or a row menu open: the periodic refresh must not redraw it away. */
function rowBusy() {
  return ui.conversations.querySelector(".title-input, .row-menu-list:not([hidden])") !== null;
}

// -- the signed-in user ---------------------------------------------------------------------------

function hasLoginPage() {
  return auth.config.login === "password" || auth.config.login === "oidc";
}

/** The log-in page, coming back to where the reader is now. */
export function loginUrl(withNext = true) {
  const url = appUrl("login");
  if (withNext) url.searchParams.set("next", location.pathname + location.search);
  return url;
}

/**
 * The server no longer knows this reader (a 401, or a WebSocket closed with 4401): go and
 * sign in again, then come back here. Without a log-in page (a proxy signs users in) there is
 * nowhere to go: say so.
 */
export function signedOut() {
  if (auth.leaving || auth.loggingOut) return;
  if (hasLoginPage()) {
    auth.leaving = true;
    hooks.disconnect();
    location.assign(loginUrl());
    return;
  }
  showNotice("You are signed out. Reload the page to sign in again.");
}

/**
 * How the server signs users in, and who this reader is. False when not signed in (the page
 * is on its way to the log-in page, or says it cannot go on). A server that answers neither
 * (an error, or one without authentication) counts as --auth none: no account is shown.
 */
export async function loadAccount() {
  const [config, me] = await Promise.all([
    request("auth/config").catch(() => null),
    request("auth/me").catch(() => null),
  ]);
  const configData = config?.ok ? await readJson(config) : null;
  if (configData && typeof configData.mode === "string") {
    auth.config = { mode: configData.mode, login: configData.login ?? null };
  }
  if (me?.status === 401) {
    signedOut();
    return false;
  }
  const user = me?.ok ? await readJson(me) : null;
  auth.user = user && typeof user.name === "string" ? user : null;
  auth.known = config !== null && me !== null;
  renderAccount();
  return true;
}

function renderAccount() {
  const user = auth.user;
  ui.account.hidden = !user || auth.config.mode === "none";
  if (ui.account.hidden) return;
  ui.accountName.textContent = user.name;
  ui.accountAvatar.textContent = Array.from(user.name.trim())[0]?.toUpperCase() ?? "?";
  const detail = user.role === "admin" ? "Administrator" : (user.email ?? "");
  ui.accountDetail.textContent = detail;
  ui.accountDetail.hidden = !detail;
  ui.account.title = [user.name, user.email].filter(Boolean).join(" · ");
}

/** After a refused WebSocket handshake: a 401 here sends the reader to sign in again. */
export function checkSignedIn() {
  if (auth.checking || auth.leaving || auth.config.mode === "none") return;
  auth.checking = api("auth/me")
    .catch(() => null) // the server is down, or the session ended (signedOut() acted)
    .finally(() => {
      auth.checking = null;
    });
}

async function logOut() {
  if (auth.leaving || auth.loggingOut) return;
  auth.loggingOut = true;
  ui.logout.disabled = true;
  try {
    const response = await request("auth/logout", { method: "POST" });
    if (!response.ok) {
      const data = await readJson(response);
      throw new Error(data?.error ?? `HTTP ${response.status}`);
    }
  } catch (err) {
    auth.loggingOut = false;
    ui.logout.disabled = false;
    showNotice(`Could not log out: ${err?.message ?? err}`);
    return;
  }
  auth.leaving = true;
  hooks.disconnect();
  // Behind a proxy, the proxy signs users in: a reload asks it again.
  if (hasLoginPage()) location.assign(loginUrl(false));
  else location.reload();
}

// -- the drawer on small screens ----------------------------------------------------------------

export function openSidebar() {
  ui.app.classList.add("sidebar-open");
  ui.scrim.hidden = false;
}

export function closeSidebar() {
  ui.app.classList.remove("sidebar-open");
  ui.scrim.hidden = true;
}

/** hooks: select(convId), deleted(convId), render(), disconnect(). */
export function initSidebar(given) {
  hooks = { ...hooks, ...given };
  ui.menu.addEventListener("click", openSidebar);
  ui.sidebarClose.addEventListener("click", closeSidebar);
  ui.scrim.addEventListener("click", closeSidebar);
  ui.logout.addEventListener("click", logOut);
  ui.search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, 200);
  });
  ui.search.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && ui.search.value) {
      event.preventDefault();
      event.stopPropagation();
      ui.search.value = "";
      runSearch();
    }
  });
  wireMenu(ui.convMenuButton, ui.convMenuList);
  document.addEventListener("click", (event) => {
    if (!event.target.closest?.(".conv-menu, .row-menu")) closeMenus();
  });
  ui.rename.addEventListener("click", renameOpen);
  ui.title.addEventListener("dblclick", () => state.convId && renameOpen());
  ui.deleteConv.addEventListener("click", (event) => {
    event.stopPropagation();
    deleteConversation(state.convId, ui.deleteConv);
  });
  for (const link of [ui.exportJson, ui.exportMarkdown]) {
    link.addEventListener("click", closeMenus);
  }
}
