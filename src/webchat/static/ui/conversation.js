// The open conversation: joining it (socket + branch tree), sending into it, switching its
// branches (regenerate, edit, ‹ n / m ›), feedback, and leaving it (new chat, deleted).

import { api, conversationPath, postJson, readJson, sendJson, SignedOutError } from "./api.js";
import { draftConvId } from "./attachments.js";
import { clearPrompt, renderStarters } from "./composer.js";
import { Connection } from "./connection.js";
import { sleep, ui, uuid } from "./dom.js";
import { hideNotice, showNotice, showStatus } from "./notice.js";
import { adoptProfile, profilesReady, renderOverride } from "./profiles.js";
import { nearBottom, scrollToBottom, updateJump } from "./scroll.js";
import {
  checkSignedIn,
  closeSidebar,
  dropConversation,
  renderConversationMenu,
  scheduleConversations,
  signedOut,
} from "./sidebar.js";
import { currentProfile, profileBySlug, state } from "./state.js";
import { Transcript } from "./transcript.js";

const DELETED_FRAME = "conversation.deleted";

let decorateNeeded = true;
let decoratedRunning = null;
let treeTimer = null;

export const transcript = new Transcript(ui.transcript, {
  runStarted(event) {
    // A live run may follow a profile switch; replayed ones predate what ws.hello reported.
    const profile = profileBySlug(event.profile);
    if (profile && event.seq > state.helloSeq) state.engine = profile.api_type;
    decorateNeeded = true;
    scheduleConversations();
  },
  runEnded() {
    decorateNeeded = true;
    scheduleConversations();
    // A turn this page did not start (another tab's, or a queued one): read where it hangs.
    if (treeIncomplete()) scheduleTree();
  },
  turnsChanged() {
    decorateNeeded = true;
  },
  retry(inferenceId) {
    const text = transcript.prompts.get(inferenceId);
    if (text) submit(text);
  },
  regenerate: (turnId) => regenerate(turnId),
  edit: (turnId, text) => edit(turnId, text),
  switchBranch: (turnId) => switchBranch(turnId),
  feedback: (turnId, rating, comment) => saveFeedback(turnId, rating, comment),
});

// -- the page --------------------------------------------------------------------------------

export function render() {
  const running = transcript.running;
  const profile = currentProfile();
  document.body.dataset.running = String(running);
  ui.stop.hidden = !running;
  ui.stop.disabled = state.stopping;
  const blocked = running && profile?.busy_policy === "reject";
  ui.send.disabled = state.sending || blocked || !profile;
  for (const button of ui.transcript.querySelectorAll("button.retry")) {
    button.disabled = ui.send.disabled;
  }
  ui.prompt.placeholder = blocked ? "Wait for the answer, or press Stop…" : "Message webchat…";
  // A regenerate or an edit of the first message empties the screen for a moment: no welcome.
  const empty = transcript.empty && !state.resending;
  ui.empty.hidden = !empty;
  renderStarters(empty && !state.switching);
  const engine = state.convId && state.engine ? state.engine : profile?.api_type;
  ui.banner.hidden = engine !== "offline";
  renderOverride(profile);
  if (!ui.title.dataset.editing) {
    const title =
      (state.convId && (state.titles.get(state.convId) || transcript.firstUserText)) ||
      "New chat";
    ui.title.textContent = title;
    document.title = title === "New chat" ? "webchat" : `${title} · webchat`;
  }
  for (const item of ui.conversations.querySelectorAll(".conversation")) {
    if (item.dataset.convId === state.convId) item.setAttribute("aria-current", "page");
    else item.removeAttribute("aria-current");
  }
  renderConversationMenu();
  if (decorateNeeded || decoratedRunning !== running) {
    decorateNeeded = false;
    decoratedRunning = running;
    transcript.decorate();
  }
  updateJump();
}

function setStatus(connection, status, detail) {
  if (connection === state.connection) showStatus(status, detail);
}

// -- URL <-> conversation ----------------------------------------------------------------------

export function convIdFromUrl() {
  return new URL(location.href).searchParams.get("conv_id");
}

function setUrl(convId, mode) {
  const url = new URL(location.href);
  if (convId) url.searchParams.set("conv_id", convId);
  else url.searchParams.delete("conv_id");
  if (url.href === location.href) return;
  if (mode === "replace") history.replaceState({ convId }, "", url);
  else history.pushState({ convId }, "", url);
}

// -- the branch tree ---------------------------------------------------------------------------

/** {parent: Map(turn id -> parent id, "" for a root), children, tip} from GET describe. */
function treeFrom(data) {
  const parent = new Map();
  for (const turn of data.turns ?? []) {
    if (turn && typeof turn.id === "string") parent.set(turn.id, turn.metadata?.parent_turn_id ?? "");
  }
  const children = data.children && typeof data.children === "object" ? data.children : {};
  for (const [of, kids] of Object.entries(children)) {
    for (const kid of kids) parent.set(kid, of);
  }
  return { parent, children, tip: data.tip ?? null };
}

function pathTo(turnId) {
  const path = [];
  const seen = new Set();
  let at = turnId;
  while (at && !seen.has(at)) {
    seen.add(at);
    path.unshift(at);
    at = state.tree?.parent.get(at) ?? "";
  }
  return path;
}

/** The newest leaf under `turnId` (the branch a switch to it shows). */
function newestLeaf(turnId) {
  let at = turnId;
  const seen = new Set();
  while (state.tree && !seen.has(at)) {
    seen.add(at);
    const kids = state.tree.children[at];
    if (!kids || kids.length === 0) break;
    at = kids.at(-1);
  }
  return at;
}

async function readTree(convId) {
  try {
    const response = await api(conversationPath(convId));
    if (!response.ok) return null;
    const data = await readJson(response);
    return data && Array.isArray(data.turns) ? treeFrom(data) : null;
  } catch {
    return null;
  }
}

/** A turn on screen is not in the tree (another tab's, or its POST reply is still coming). */
function treeIncomplete() {
  return transcript.turnOrder.some((id) => !state.tree?.parent.has(id));
}

function scheduleTree(delay = 300) {
  clearTimeout(treeTimer);
  // Checked again when due: the POST reply may have told where the turn hangs meanwhile.
  treeTimer = setTimeout(() => treeIncomplete() && refreshTree(), delay);
}

/** Read the tree again (a run ended, a new turn appeared); redraw if the screen mixes branches. */
async function refreshTree() {
  clearTimeout(treeTimer);
  const convId = state.convId;
  if (!convId) return;
  const tree = await readTree(convId);
  if (!tree || convId !== state.convId || state.switching) return;
  // A POST reply may have added a turn after the server answered: keep what it said.
  for (const [turnId, parent] of state.tree?.parent ?? []) {
    if (tree.parent.has(turnId)) continue;
    tree.parent.set(turnId, parent);
    tree.children[parent] = [...(tree.children[parent] ?? []), turnId];
  }
  state.tree = tree;
  // What is on screen must be one branch: each turn continues the one before it.
  let expected = "";
  for (const turnId of transcript.turnOrder) {
    const parent = tree.parent.get(turnId);
    if (parent === undefined) break; // too new to be in the tree yet
    if (parent !== expected) {
      await showBranch(newestLeaf(expected) || null);
      return;
    }
    expected = turnId;
  }
  state.view = new Set(transcript.turnOrder);
  transcript.setTree(tree);
  render();
}

function inView(event) {
  const turnId = event.turn_id;
  if (!state.view || !turnId || state.view.has(turnId)) return true;
  if (state.tree?.parent.has(turnId)) return false; // a turn of another branch
  // A new turn: it continues what is on screen (refreshTree checks that once it is known).
  state.view.add(turnId);
  return true;
}

function handleFrame(event) {
  if (typeof event.seq === "number" && event.seq > state.seenSeq) state.seenSeq = event.seq;
  if (event.type === DELETED_FRAME) {
    conversationDeleted(state.convId, { here: state.deleting === state.convId });
    return;
  }
  if (state.switching) {
    state.switching.push(event);
    return;
  }
  if (!inView(event)) {
    transcript.track(event);
    render();
    return;
  }
  const follow = nearBottom();
  if (transcript.apply(event)) {
    render();
    if (follow) scrollToBottom();
  }
}

/** Draw the branch ending at `leaf` (null: nothing, a new root), read from the timeline. */
async function showBranch(leaf) {
  const convId = state.convId;
  if (!convId) return;
  state.switching = state.switching ?? [];
  let frames = [];
  try {
    if (leaf) {
      const path = `${conversationPath(convId, "/timeline")}?since=0&branch=${encodeURIComponent(leaf)}`;
      const response = await api(path);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      frames = (await readJson(response))?.frames ?? [];
    }
  } catch (err) {
    const buffered = state.switching ?? [];
    state.switching = null;
    for (const event of buffered) handleFrame(event);
    if (!(err instanceof SignedOutError)) showNotice(`Could not show that branch: ${err?.message ?? err}`);
    return;
  }
  if (convId !== state.convId) return;
  state.view = new Set(leaf ? pathTo(leaf) : []);
  transcript.clearView();
  for (const event of frames) {
    if (typeof event.seq === "number" && event.seq > state.seenSeq) state.seenSeq = event.seq;
    if (inView(event)) transcript.apply(event);
    else transcript.track(event);
  }
  const buffered = state.switching ?? [];
  state.switching = null;
  for (const event of buffered) handleFrame(event);
  if (state.tree) transcript.setTree(state.tree);
  decorateNeeded = true;
  render();
  scrollToBottom();
}

async function switchBranch(turnId) {
  if (!state.tree || transcript.running) return;
  await showBranch(newestLeaf(turnId));
}

async function ensureTree(turnId) {
  if (state.tree?.parent.has(turnId)) return true;
  const tree = await readTree(state.convId);
  if (tree) {
    state.tree = tree;
    transcript.setTree(tree);
  }
  return Boolean(tree?.parent.has(turnId));
}

/** Show the branch up to `parent` ("" a new root), then send `text` from there. */
async function resend(text, parent) {
  state.resending = true;
  try {
    await showBranch(parent || null);
    await submit(text, { parentTurnId: parent });
  } finally {
    state.resending = false;
    render();
  }
}

/** A new answer to the same prompt: a sibling of `turnId`, from the same parent. */
async function regenerate(turnId) {
  if (!turnId || transcript.running || state.sending) return;
  const node = ui.transcript.querySelector(`.message.user[data-turn-id="${CSS.escape(turnId)}"]`);
  const turn = ui.transcript.querySelector(`.turn[data-turn-id="${CSS.escape(turnId)}"]`);
  const text = node?.text ?? transcript.prompts.get(turn?.dataset.inferenceId ?? "");
  if (!text || !(await ensureTree(turnId))) return;
  await resend(text, state.tree.parent.get(turnId) ?? "");
}

/** An edited prompt: a sibling of the edited message's turn. */
async function edit(turnId, text) {
  if (!turnId || transcript.running || state.sending) return;
  if (!(await ensureTree(turnId))) return;
  await resend(text, state.tree.parent.get(turnId) ?? "");
}

// -- feedback -------------------------------------------------------------------------------------

async function loadFeedback(convId) {
  try {
    const response = await api(conversationPath(convId, "/feedback"));
    if (!response.ok || convId !== state.convId) return;
    const data = await readJson(response);
    if (data && typeof data === "object" && convId === state.convId) transcript.setFeedback(data);
  } catch {
    // no feedback to show
  }
}

async function saveFeedback(turnId, rating, comment) {
  const convId = state.convId;
  if (!convId) return;
  try {
    const path = conversationPath(convId, `/turns/${encodeURIComponent(turnId)}/feedback`);
    const response = await sendJson("PUT", path, { rating, comment });
    if (!response.ok) {
      const data = await readJson(response);
      showNotice(`Could not save the feedback: ${data?.error ?? `HTTP ${response.status}`}`);
    }
  } catch (err) {
    if (!(err instanceof SignedOutError)) showNotice(`Could not save the feedback: ${err?.message ?? err}`);
  }
}

// -- joining and leaving ------------------------------------------------------------------------

export function disconnect() {
  state.connection?.close();
  state.connection = null;
  showStatus("idle");
}

function resetView(convId) {
  disconnect();
  clearTimeout(treeTimer);
  transcript.reset();
  hideNotice();
  state.convId = convId;
  state.engine = null;
  state.helloSeq = 0;
  state.seenSeq = 0;
  state.stopping = false;
  state.tree = null;
  state.view = null;
  state.switching = null;
  decorateNeeded = true;
}

function connect(convId) {
  const connection = new Connection({
    convId,
    profile: ui.profile.value || null,
    since: () => state.seenSeq,
    onEvent(event) {
      if (connection === state.connection) handleFrame(event);
    },
    onHello(event) {
      if (connection !== state.connection) return;
      hideNotice("restart");
      transcript.hello(event);
      state.engine = event.engine ?? state.engine;
      state.helloSeq = typeof event.last_seq === "number" ? event.last_seq : 0;
      if (transcript.empty) adoptProfile(event.profile);
      render();
    },
    onSignedOut() {
      if (connection === state.connection) signedOut();
    },
    onRefused() {
      if (connection === state.connection) checkSignedIn();
    },
    onGone() {
      if (connection === state.connection) {
        conversationDeleted(convId, { here: state.deleting === convId });
      }
    },
    onState(status, detail) {
      const was = ui.status.dataset.state;
      setStatus(connection, status, detail);
      if (connection !== state.connection) return;
      // Said once when the server goes away, not again at every retry (it can be dismissed).
      if (status === "restarting" && was !== "restarting") {
        showNotice("Server restarting, reconnecting…", "restart");
      }
    },
  });
  state.connection = connection;
  connection.open();
  render();
  return connection;
}

/** A conversation that starts now (its first message is on its way): no tree to read. */
function startConversation(convId) {
  resetView(convId);
  state.tree = { parent: new Map(), children: {}, tip: null }; // grown by each POST's reply
  transcript.setTree(state.tree);
  return connect(convId);
}

/** An existing conversation: its tree first (to show one branch), then the socket. */
export async function openConversation(convId) {
  resetView(convId);
  render();
  const tree = await readTree(convId);
  if (state.convId !== convId || state.connection) return;
  if (tree) {
    state.tree = tree;
    state.view = new Set(tree.tip ? pathTo(tree.tip) : []);
    transcript.setTree(tree);
    loadFeedback(convId);
  }
  connect(convId);
}

export function newChat() {
  resetView(null);
  showStatus("idle");
  setUrl(null, "push");
  closeSidebar();
  render();
  ui.prompt.focus();
}

export function selectConversation(convId) {
  closeSidebar();
  if (convId === state.convId) return;
  setUrl(convId, "push");
  openConversation(convId);
  scheduleConversations();
}

/** Deleted here or in another tab: gone from the list, and the view leaves it. */
export function conversationDeleted(convId, { here = false } = {}) {
  if (!convId) return;
  dropConversation(convId);
  if (convId === state.convId) {
    newChat();
    showNotice(here ? "Conversation deleted." : "This conversation was deleted.", "info");
  }
  scheduleConversations();
}

export function onPopState() {
  const convId = convIdFromUrl();
  if (convId === state.convId) return;
  if (convId) openConversation(convId);
  else newChat();
}

// -- sending --------------------------------------------------------------------------------------

function describeError(status, body) {
  const message = body && typeof body.error === "string" ? body.error : `HTTP ${status}`;
  if (status === 409) return `Busy: ${message}. Wait for the answer, or press Stop.`;
  if (status === 413) return `Too long: ${message}`;
  return `Could not send: ${message}`;
}

/**
 * POST `text` as a new message of the open conversation (from the composer, a starter, Retry,
 * a regenerate or an edit). `parentTurnId`: the turn it continues ("" a new root); by
 * default the branch on screen, when that is not the newest one.
 */
export async function submit(text, { fromComposer = false, parentTurnId, attachments } = {}) {
  if (state.profiles.length === 0) await profilesReady; // sent while the page was starting
  const profile = currentProfile();
  if (state.sending || !profile) return;
  if (transcript.running && profile.busy_policy === "reject") return;
  state.sending = true;
  hideNotice();
  render();
  try {
    let connection = state.connection;
    if (!state.convId || !connection) {
      const convId = state.convId ?? draftConvId() ?? uuid(); // where its uploads went
      setUrl(convId, "replace");
      connection = startConversation(convId);
    }
    // Be subscribed before the run starts (the replay from since=0 would cover it anyway).
    await Promise.race([connection.ready, sleep(3000)]);
    let parent = parentTurnId;
    const leaf = transcript.leaf;
    if (parent === undefined && state.tree && leaf && leaf !== state.tree.tip && !transcript.running) {
      parent = leaf; // an older branch is on screen: continue it, not the newest
    }
    const same = state.retryKey?.text === text && state.retryKey?.parent === parent;
    const key = same ? state.retryKey.key : uuid();
    state.retryKey = { text, parent, key };
    const body = { prompt: text, conv_id: state.convId };
    if (parent !== undefined) body.parent_turn_id = parent;
    if (attachments?.length) body.attachments = attachments;
    const override = ui.systemPrompt.value;
    if (profile.allow_overrides && override.trim()) body.overrides = { system_prompt: override };
    const response = await postJson(`chat/${encodeURIComponent(profile.slug)}`, body, {
      "Idempotency-Key": key,
    });
    state.retryKey = null; // the server answered: a new send is a new request
    const data = await readJson(response);
    if (response.ok && data) {
      if (fromComposer) clearPrompt(text);
      if (data.conv_id === state.convId) {
        transcript.rememberPrompt(data.inference_id, text);
        transcript.expect(data.inference_id); // unless its terminal frame came first
        if (data.turn_id && state.tree && !state.tree.parent.has(data.turn_id)) {
          const from = data.parent_turn_id ?? "";
          state.tree.parent.set(data.turn_id, from);
          state.tree.children[from] = [...(state.tree.children[from] ?? []), data.turn_id];
          state.tree.tip = data.turn_id;
          state.view?.add(data.turn_id);
          decorateNeeded = true;
        }
      }
      if (data.status === "queued") {
        showNotice(`Queued: your message will run next (position ${data.queue_position}).`, "info");
      }
      scheduleConversations();
      scrollToBottom();
    } else {
      showNotice(describeError(response.status, data));
    }
  } catch (err) {
    if (err instanceof SignedOutError) return; // signedOut() said what to do
    const again = fromComposer ? "Press Enter to retry." : "Press Retry to try again.";
    showNotice(`Could not reach the server: ${err?.message ?? err}. ${again}`);
  } finally {
    state.sending = false;
    render();
  }
}
