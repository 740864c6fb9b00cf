// webchat browser client: plain ES module, no build step.
//
// Every URL is computed relative to the page (document.baseURI), so the app works under any
// URL prefix. Model output only reaches innerHTML through renderMarkdown(), which escapes
// everything first; every other text is set with textContent.

import { renderMarkdown } from "./markdown.js";

const PING_EVERY_MS = 15_000;
const SILENCE_LIMIT_MS = 45_000; // pongs arrive every 15 s; this much silence means a dead socket
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 5_000;
const CONVERSATIONS_EVERY_MS = 20_000;
const SLOW_CONSUMER = 4008;
const POLICY_VIOLATION = 1008;
const SERVICE_RESTART = 1012; // the server is shutting down to restart: come back later
const SIGNED_OUT = 4401; // the user logged out (here or in another tab) or was removed

// -- small helpers ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** An absolute URL for a path relative to the app root (the page's directory). */
function appUrl(path) {
  return new URL(path, document.baseURI);
}

// -- talking to the server ------------------------------------------------------------------

/** Thrown by api() when the server says the user is not signed in (HTTP 401). */
class SignedOutError extends Error {
  constructor() {
    super("you are signed out");
    this.name = "SignedOutError";
  }
}

/**
 * fetch() for a path relative to the app root. Every request says it comes from this page's
 * script (X-Requested-With): the server refuses a state-changing request without it (or a
 * JSON body), which a cross-site form cannot send.
 */
function request(path, { headers = {}, ...init } = {}) {
  return fetch(appUrl(path), {
    credentials: "same-origin",
    ...init,
    headers: { "X-Requested-With": "webchat", ...headers },
  });
}

/** request(), where a 401 means the session ended: the page goes to the log-in page (see
 * signedOut), and the call throws SignedOutError. */
async function api(path, init) {
  const response = await request(path, init);
  if (response.status === 401) {
    signedOut();
    throw new SignedOutError();
  }
  return response;
}

/** A POST with a JSON body (the content type the server expects of a browser). */
function postJson(path, body, headers = {}) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

const auth = {
  config: { mode: "none", login: null }, // GET auth/config: how this server signs users in
  user: null, // GET auth/me
  leaving: false, // on the way to the log-in page (or reloading): say nothing more
  loggingOut: false, // Log out pressed: its own answer says where to go
  checking: null, // the auth/me probe in flight after a refused WebSocket handshake
  known: false, // the server answered auth/config and auth/me (it may be down at first)
};

function hasLoginPage() {
  return auth.config.login === "password" || auth.config.login === "oidc";
}

/** The log-in page, coming back to where the reader is now. */
function loginUrl(withNext = true) {
  const url = appUrl("login");
  if (withNext) url.searchParams.set("next", location.pathname + location.search);
  return url;
}

/**
 * The server no longer knows this reader (a 401, or a WebSocket closed with 4401): go and
 * sign in again, then come back here. Without a log-in page (a proxy signs users in) there is
 * nowhere to go: say so.
 */
function signedOut() {
  if (auth.leaving || auth.loggingOut) return;
  if (hasLoginPage()) {
    auth.leaving = true;
    disconnect();
    location.assign(loginUrl());
    return;
  }
  showNotice("You are signed out. Reload the page to sign in again.");
}

function uuid() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function formatValue(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

function timeAgo(seconds) {
  if (!seconds) return "";
  const diff = Date.now() / 1000 - seconds;
  if (diff < 45) return "just now";
  if (diff < 3600) return `${Math.round(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.round(diff / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// What an error means for the reader, from the technical text engines and the server write
// (e.g. "openai: connection to http://127.0.0.1:9 failed: ConnectError: ..."). First match wins.
const PLAIN_ERRORS = [
  [
    /authentication failed|api key|permission denied|\((401|403)\)/i,
    "The model provider refused the credentials: check the API key.",
  ],
  [
    /rate limited|\(429\)/i,
    "The model provider is rate limiting requests. Wait a moment, then retry.",
  ],
  [/timed out/i, "The model provider took too long to answer."],
  [
    /connection lost|lost while streaming/i,
    "The connection to the model provider was lost mid-answer.",
  ],
  [
    /connection (to .* )?failed|connecterror|connection refused/i,
    "Could not reach the model provider.",
  ],
  [/server error|\(5\d\d\)/i, "The model provider had a problem and could not answer."],
  [/request rejected|\(4\d\d\)/i, "The model provider rejected the request."],
  [/malformed stream|stream error/i, "The model provider sent an answer that could not be read."],
  [/server running this inference stopped/i, "The server stopped while answering."],
  [/queued run could not start/i, "Your queued message could not start."],
];

function plainError(messages, duringRun) {
  for (const [pattern, plain] of PLAIN_ERRORS) {
    if (messages.some((m) => pattern.test(m))) return plain;
  }
  return duringRun ? "Something went wrong while answering." : "Something went wrong.";
}

// -- transcript: frames in, DOM out ------------------------------------------------------------

/**
 * Renders one conversation's frames. Idempotent: frames at or below the last seen seq are
 * ignored, and every element is keyed by the id of what it shows (message, tool call, run),
 * so a replay after a reconnect never duplicates anything.
 */
class Transcript {
  constructor(root, hooks) {
    this.root = root;
    this.hooks = hooks;
    this.reset();
  }

  reset() {
    this.root.replaceChildren();
    this.lastSeq = 0;
    this.helloSeq = 0;
    this.nodes = new Map();
    // The running state comes from frames alone: a run is active from its run.started (or
    // from the POST reply that accepted it) until its terminal frame. The POST reply and the
    // frames travel separately, so a reply may come after the run already ended: `ended`
    // remembers terminal frames, and an ended run is never marked active again.
    this.active = new Set(); // inference ids started or accepted and not yet ended
    this.ended = new Map(); // inference id -> "finished" | "failed" | "cancelled"
    this.serverRunning = false; // ws.hello said a run is active; until its replay is read
    this.prompts = new Map(); // inference id -> the prompt it answers (for Retry)
    this.strays = 0; // error frames outside any run (they may have no seq)
    this.firstUserText = null;
  }

  get running() {
    return this.active.size > 0 || this.serverRunning;
  }

  get empty() {
    return this.root.childElementCount === 0;
  }

  /** A run the server accepted (its frames may have arrived already, or not yet). */
  expect(inferenceId) {
    if (inferenceId && !this.ended.has(inferenceId)) this.active.add(inferenceId);
  }

  /** The prompt a run answers, known from its POST (its chat.user_message may lag). */
  rememberPrompt(inferenceId, text) {
    if (!inferenceId || this.prompts.has(inferenceId)) return;
    this.prompts.set(inferenceId, text);
    const card = this.nodes.get(`error:${inferenceId}`);
    if (card) this.showRetry(card);
  }

  hello(event) {
    this.helloSeq = typeof event.last_seq === "number" ? event.last_seq : 0;
    if (!event.running) {
      // Nothing runs: a run still listed ended while we were away (its terminal frame is in
      // the replay or on its way), and what starts later will send its run.started.
      this.active.clear();
      this.serverRunning = false;
    } else {
      // Something runs. If frames up to last_seq are still to be replayed, its run.started is
      // among them: trust the greeting until the replay is read, then the frames alone.
      this.serverRunning = this.lastSeq < this.helloSeq;
    }
  }

  apply(event) {
    if (typeof event.seq === "number") {
      if (event.seq <= this.lastSeq) return false;
      this.lastSeq = event.seq;
    }
    const handler = HANDLERS[event.type];
    if (handler) handler.call(this, event);
    if (this.serverRunning && typeof event.seq === "number" && event.seq >= this.helloSeq) {
      this.serverRunning = false; // the replay is read: `active` knows what runs
    }
    return true;
  }

  // Turn containers group everything one run (inference) produced.
  turn(event) {
    const key = `turn:${event.inference_id ?? "-"}`;
    let turn = this.nodes.get(key);
    if (!turn) {
      turn = el("article", "turn");
      turn.dataset.inferenceId = event.inference_id ?? "";
      turn.dataset.state = "running";
      const avatar = el("div", "avatar", "◆");
      avatar.setAttribute("aria-hidden", "true");
      const body = el("div", "turn-body");
      const head = el("div", "turn-head");
      head.append(el("span", "turn-name", "Assistant"), el("span", "turn-model"));
      body.append(head);
      turn.append(avatar, body);
      turn.body = body;
      this.root.append(turn);
      this.nodes.set(key, turn);
    }
    return turn;
  }

  textBlock(event) {
    const key = `msg:${event.id}`;
    let block = this.nodes.get(key);
    if (!block) {
      block = el("div", "assistant-text streaming");
      block.dataset.messageId = event.id ?? "";
      block.dataset.final = "false";
      block.content = el("div", "markdown");
      block.append(block.content);
      this.turn(event).body.append(block);
      this.nodes.set(key, block);
    }
    return block;
  }

  setText(block, text) {
    if (block.source === text) return;
    block.source = text;
    block.content.innerHTML = renderMarkdown(text); // safe: renderMarkdown escapes first
    block.classList.toggle("is-empty", text.length === 0);
  }

  thinking(event) {
    const key = `think:${event.id}`;
    let node = this.nodes.get(key);
    if (!node) {
      node = el("details", "thinking streaming");
      const summary = el("summary", "thinking-summary", "Thinking…");
      node.text = el("div", "thinking-text");
      node.append(summary, node.text);
      node.summary = summary;
      const text = this.nodes.get(`msg:${event.id}`);
      const body = this.turn(event).body;
      if (text && text.parentNode === body) body.insertBefore(node, text);
      else body.append(node);
      this.nodes.set(key, node);
    }
    return node;
  }

  tool(event) {
    const key = `tool:${event.id}`;
    let card = this.nodes.get(key);
    if (!card) {
      card = el("details", "tool-card");
      card.open = true;
      card.dataset.toolId = event.id ?? "";
      card.dataset.status = "running";
      const summary = el("summary", "tool-head");
      card.nameEl = el("span", "tool-name", event.name ?? "tool");
      card.statusEl = el("span", "tool-status", "running");
      const icon = el("span", "tool-icon", "⚙");
      icon.setAttribute("aria-hidden", "true");
      summary.append(icon, card.nameEl, card.statusEl);
      card.inputEl = el("pre", "tool-input");
      card.resultEl = el("pre", "tool-result");
      card.resultLabel = el("div", "tool-label", "Result");
      const input = el("div", "tool-section");
      input.append(el("div", "tool-label", "Input"), card.inputEl);
      card.resultSection = el("div", "tool-section");
      card.resultSection.hidden = true;
      card.resultSection.append(card.resultLabel, card.resultEl);
      card.append(summary, input, card.resultSection);
      this.turn(event).body.append(card);
      this.nodes.set(key, card);
    }
    return card;
  }

  setToolStatus(card, status) {
    card.dataset.status = status;
    card.statusEl.textContent = status;
  }

  marker(event, kind, text) {
    const key = `marker:${kind}:${event.inference_id ?? event.seq}`;
    if (this.nodes.has(key)) return;
    const node = el("div", `run-marker ${kind}`, text);
    node.setAttribute("role", kind === "cancelled" ? "status" : "alert");
    if (event.inference_id) this.turn(event).body.append(node);
    else this.root.append(node);
    this.nodes.set(key, node);
  }

  /** The one card that explains why a run failed, however many frames report it. */
  errorCard(event) {
    const id = event.inference_id;
    const key = id ? `error:${id}` : `error:stray:${event.seq ?? `n${(this.strays += 1)}`}`;
    let card = this.nodes.get(key);
    if (!card) {
      card = el("div", "run-error");
      card.setAttribute("role", "alert");
      card.dataset.inferenceId = id ?? "";
      card.messages = [];
      card.textEl = el("p", "run-error-text");
      const details = el("details", "run-error-details");
      card.detailEl = el("pre", "run-error-detail");
      details.append(el("summary", "", "Details"), card.detailEl);
      card.append(card.textEl);
      if (id) {
        card.retry = el("button", "retry", "Retry");
        card.retry.type = "button";
        card.retry.hidden = true;
        card.retry.addEventListener("click", () => this.hooks.retry?.(id));
        card.append(card.retry);
      }
      card.append(details);
      (id ? this.turn(event).body : this.root).append(card);
      this.nodes.set(key, card);
    }
    return card;
  }

  addError(event, message) {
    const id = event.inference_id;
    if (id && this.ended.get(id) === "cancelled") return; // the cancel line says it all
    const card = this.errorCard(event);
    const text = String(message || "unknown error");
    // An `error` frame and `run.failed` usually carry the same text, or one contains the other.
    if (!card.messages.some((m) => m.includes(text))) {
      card.messages = [...card.messages.filter((m) => !text.includes(m)), text];
      card.detailEl.textContent = card.messages.join("\n");
      card.textEl.textContent = plainError(card.messages, Boolean(id));
    }
    this.showRetry(card);
  }

  showRetry(card) {
    if (!card.retry) return;
    card.retry.hidden = card.superseded || !this.prompts.has(card.dataset.inferenceId);
  }

  endRun(event, state) {
    if (event.inference_id) {
      this.active.delete(event.inference_id);
      this.ended.set(event.inference_id, state);
    }
    if (this.active.size === 0) this.serverRunning = false;
    this.hooks.runEnded?.(event);
    const turn = this.nodes.get(`turn:${event.inference_id ?? "-"}`);
    if (!turn) return;
    turn.dataset.state = state;
    for (const node of turn.querySelectorAll(".streaming")) {
      node.classList.remove("streaming");
      if (node.dataset.final === "false") node.dataset.final = "true";
    }
    if (state !== "finished") {
      for (const card of turn.querySelectorAll('.tool-card[data-status="running"]')) {
        this.setToolStatus(card, "stopped");
      }
    }
    // A message that never produced text (e.g. only a tool call) needs no empty bubble.
    for (const block of turn.querySelectorAll(".assistant-text.is-empty")) block.remove();
  }
}

const HANDLERS = {
  "chat.user_message"(event) {
    const key = `user:${event.id ?? event.seq}`;
    if (this.nodes.has(key)) return;
    const node = el("div", "message user");
    node.dataset.messageId = event.id ?? "";
    node.append(el("div", "bubble", event.text ?? ""));
    this.root.append(node);
    this.nodes.set(key, node);
    if (this.firstUserText === null) this.firstUserText = event.text ?? "";
    if (event.inference_id) this.prompts.set(event.inference_id, event.text ?? "");
    // The conversation moved on: an earlier failure is no longer the thing to retry.
    for (const card of this.root.querySelectorAll(".run-error")) {
      if (card.dataset.inferenceId !== (event.inference_id ?? "")) {
        card.superseded = true;
        this.showRetry(card);
      }
    }
  },
  "run.started"(event) {
    if (event.inference_id && !this.ended.has(event.inference_id)) {
      this.active.add(event.inference_id);
    }
    this.turn(event).dataset.state = "running";
    this.hooks.runStarted?.(event);
  },
  "llm.start"(event) {
    const block = this.textBlock(event);
    if (block.source === undefined) this.setText(block, "");
    if (event.model) this.turn(event).querySelector(".turn-model").textContent = event.model;
  },
  "llm.delta"(event) {
    const block = this.textBlock(event);
    const text = event.cumulative ?? (block.source ?? "") + (event.delta ?? "");
    this.setText(block, text);
  },
  "llm.final"(event) {
    const block = this.textBlock(event);
    this.setText(block, event.text ?? block.source ?? "");
    block.classList.remove("streaming");
    block.dataset.final = "true";
    // A cancel is said once, by the run.cancelled line; the text is only marked as cut short.
    if (event.interrupted) block.classList.add("interrupted");
    if (block.source === "") block.remove();
  },
  "llm.thinking.start"(event) {
    this.thinking(event);
  },
  "llm.thinking.delta"(event) {
    const node = this.thinking(event);
    node.text.textContent = event.cumulative ?? node.text.textContent + (event.delta ?? "");
  },
  "llm.thinking.final"(event) {
    const node = this.thinking(event);
    if (typeof event.text === "string") node.text.textContent = event.text;
    node.classList.remove("streaming");
    node.summary.textContent = "Thoughts";
  },
  "tool.start"(event) {
    const card = this.tool(event);
    card.nameEl.textContent = event.name ?? "tool";
    card.dataset.toolName = event.name ?? "";
    card.inputEl.textContent = formatValue(event.input);
  },
  "tool.delta"(event) {
    const card = this.tool(event);
    if (event.arguments !== undefined && event.arguments !== null) {
      card.inputEl.textContent = formatValue(event.arguments); // arguments still streaming
    }
    if (card.dataset.status === "running" || card.dataset.status === "pending") {
      this.setToolStatus(card, event.status ?? "running");
    }
  },
  "tool.result"(event) {
    const card = this.tool(event);
    if (event.name) card.nameEl.textContent = event.name;
    const failed = event.error !== undefined && event.error !== null && event.error !== "";
    card.resultSection.hidden = false;
    card.resultLabel.textContent = failed ? "Error" : "Result";
    card.resultEl.textContent = failed ? formatValue(event.error) : formatValue(event.result);
    card.classList.toggle("failed", failed);
  },
  "tool.done"(event) {
    const card = this.tool(event);
    this.setToolStatus(card, card.classList.contains("failed") ? "error" : "done");
  },
  log(event) {
    if (event.level !== "warning" && event.level !== "error") return;
    const key = `log:${event.seq}`;
    if (this.nodes.has(key)) return;
    const cancelNote = /cancel/i.test(event.message ?? "");
    if (cancelNote && this.ended.get(event.inference_id) === "cancelled") return;
    const node = el("div", `log-line ${event.level}`, event.message ?? "");
    if (cancelNote) node.dataset.cancelNote = "true";
    if (event.inference_id) this.turn(event).body.append(node);
    else this.root.append(node);
    this.nodes.set(key, node);
  },
  "agent.mode"(event) {
    const node = el("div", "log-line mode", event.message ?? "mode changed");
    if (event.inference_id) this.turn(event).body.append(node);
    else this.root.append(node);
  },
  "run.finished"(event) {
    this.endRun(event, "finished");
  },
  "run.failed"(event) {
    this.addError(event, event.error);
    this.endRun(event, "failed");
  },
  "run.cancelled"(event) {
    // One line per cancel: whatever else reported it (an error frame, a log line) goes.
    const id = event.inference_id;
    const turn = this.nodes.get(`turn:${id ?? "-"}`);
    if (id) {
      this.nodes.get(`error:${id}`)?.remove();
      this.nodes.delete(`error:${id}`);
    }
    for (const node of turn?.querySelectorAll('.log-line[data-cancel-note="true"]') ?? []) {
      node.remove();
    }
    const reason = event.reason && !/^cancel/i.test(event.reason) ? `: ${event.reason}` : "";
    this.marker(event, "cancelled", `Cancelled${reason}`);
    this.endRun(event, "cancelled");
  },
  error(event) {
    this.addError(event, event.error);
  },
};

// -- connection: one WebSocket per conversation, resumed with since ----------------------------

class Connection {
  constructor({ convId, profile, since, onEvent, onHello, onState, onSignedOut, onRefused }) {
    Object.assign(this, { convId, profile, since, onEvent, onHello, onState });
    this.onSignedOut = onSignedOut; // closed with 4401: the user's session ended
    this.onRefused = onRefused; // the handshake failed: the server down, or a session gone
    this.ws = null;
    this.closed = false;
    this.restarting = false; // closed with 1012: the server restarts, retry until it is back
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastMessageAt = 0;
    this.ready = new Promise((resolve) => {
      this.resolveReady = resolve;
    });
  }

  url() {
    const url = appUrl("ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    url.searchParams.set("conv_id", this.convId);
    if (this.profile) url.searchParams.set("profile", this.profile);
    url.searchParams.set("since", String(this.since()));
    return url;
  }

  open() {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.restarting) this.onState("restarting");
    else this.onState(this.attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    this.lastMessageAt = Date.now();
    let opened = false;
    ws.onopen = () => {
      opened = true;
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.ping(ws), PING_EVERY_MS);
    };
    ws.onmessage = (message) => {
      if (this.ws !== ws) return;
      this.lastMessageAt = Date.now();
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      const event = data && typeof data === "object" ? data.event : null;
      if (!event || typeof event.type !== "string") return;
      if (event.type === "ws.hello") {
        this.attempt = 0;
        this.restarting = false;
        this.onState("connected");
        this.onHello(event);
        this.resolveReady(true);
      } else if (event.type !== "ws.pong") {
        this.onEvent(event);
      }
    };
    ws.onclose = (close) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      if (this.closed) return;
      if (close.code === SIGNED_OUT) {
        this.closed = true;
        this.onState("failed", close.reason || "signed out");
        this.resolveReady(false);
        this.onSignedOut?.(close.reason);
        return;
      }
      // A refused handshake looks like any failed connection (1006); the page asks whether
      // it is still signed in, and keeps retrying meanwhile (the server may be restarting).
      if (!opened) this.onRefused?.();
      if (close.code === POLICY_VIOLATION) {
        this.onState("failed", close.reason);
        this.resolveReady(false);
        return;
      }
      if (close.code === SERVICE_RESTART) this.restarting = true;
      // A slow consumer resumes at once (with since); a second close in a row backs off.
      this.retry(close.code === SLOW_CONSUMER && this.attempt === 0 ? 0 : undefined);
    };
  }

  ping(ws) {
    if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastMessageAt > SILENCE_LIMIT_MS) {
      this.drop(); // half-open connection: no pong for too long
      return;
    }
    ws.send(JSON.stringify({ type: "ws.ping" }));
  }

  drop() {
    const ws = this.ws;
    this.ws = null;
    clearInterval(this.pingTimer);
    if (ws) {
      ws.onclose = null;
      ws.close();
    }
    this.retry(0);
  }

  retry(delay) {
    if (this.closed) return;
    // Jitter spreads the reconnects of many clients when a restarted server comes back.
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const wait = delay ?? backoff * (0.8 + 0.4 * Math.random());
    this.attempt += 1;
    this.onState(this.restarting ? "restarting" : "reconnecting");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), wait);
  }

  /** Reconnect now if waiting to (the network came back, the tab became visible). */
  nudge() {
    if (!this.closed && this.ws === null && this.retryTimer !== null) this.open();
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    this.resolveReady(false);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
  }
}

// -- the app ------------------------------------------------------------------------------------

const ui = {
  app: $("app"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  menu: $("menu"),
  sidebarClose: $("sidebar-close"),
  newChat: $("new-chat"),
  conversations: $("conversations"),
  conversationsEmpty: $("conversations-empty"),
  title: $("title"),
  profile: $("profile"),
  status: $("status"),
  statusText: $("status-text"),
  banner: $("offline-banner"),
  messages: $("messages"),
  empty: $("empty"),
  transcript: $("transcript"),
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

const state = {
  profiles: [],
  convId: null,
  engine: null, // api_type answering the connected conversation
  helloSeq: 0, // last_seq of the latest ws.hello: frames up to it are replayed history
  connection: null,
  sending: false,
  stopping: false,
  retryKey: null, // {text, key}: re-sending after a network failure reuses the key
  overrides: new Map(), // profile slug -> system prompt override text
  titles: new Map(), // conv_id -> title, from the conversation list
};

const transcript = new Transcript(ui.transcript, {
  runStarted(event) {
    // A live run may follow a profile switch; replayed ones predate what ws.hello reported.
    const profile = profileBySlug(event.profile);
    if (profile && event.seq > state.helloSeq) state.engine = profile.api_type;
    scheduleConversations();
  },
  runEnded() {
    scheduleConversations();
  },
  retry(inferenceId) {
    const text = transcript.prompts.get(inferenceId);
    if (text) submit(text);
  },
});

function profileBySlug(slug) {
  return state.profiles.find((p) => p.slug === slug) ?? null;
}

function currentProfile() {
  return profileBySlug(ui.profile.value);
}

// Scrolling follows the stream only while the reader is at the bottom.
function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 120;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function render() {
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
  ui.empty.hidden = !transcript.empty;
  const engine = state.convId && state.engine ? state.engine : profile?.api_type;
  ui.banner.hidden = engine !== "offline";
  const allow = Boolean(profile?.allow_overrides);
  ui.overridePanel.hidden = !allow;
  if (allow) {
    ui.overrideHint.textContent = ui.systemPrompt.value.trim()
      ? "This prompt replaces the profile's default for your messages."
      : "";
  }
  const title =
    (state.convId && (state.titles.get(state.convId) || transcript.firstUserText)) || "New chat";
  ui.title.textContent = title;
  document.title = title === "New chat" ? "webchat" : `${title} · webchat`;
  for (const item of ui.conversations.children) {
    if (item.dataset.convId === state.convId) item.setAttribute("aria-current", "page");
    else item.removeAttribute("aria-current");
  }
}

function setStatus(connection, status, detail) {
  if (connection !== state.connection) return;
  const labels = {
    idle: "Not connected",
    connecting: "Connecting…",
    connected: "Live",
    reconnecting: "Reconnecting…",
    restarting: "Server restarting, reconnecting…",
    failed: "Disconnected",
  };
  ui.status.dataset.state = status;
  ui.statusText.textContent = labels[status] ?? status;
  ui.status.title = detail ? `${labels[status]}: ${detail}` : labels[status] ?? status;
}

let noticeTimer = null;
/** kind: "error" and "restart" stay until replaced or dismissed, "info" fades after 4 s. */
function showNotice(text, kind = "error") {
  clearTimeout(noticeTimer);
  ui.notice.textContent = text;
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
  if (kind === "info") noticeTimer = setTimeout(hideNotice, 4000);
}

function hideNotice(kind) {
  if (kind && ui.notice.dataset.kind !== kind) return;
  clearTimeout(noticeTimer);
  ui.notice.hidden = true;
  ui.notice.textContent = "";
  delete ui.notice.dataset.kind;
}

// -- URL <-> conversation ----------------------------------------------------------------------

function convIdFromUrl() {
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

function disconnect() {
  state.connection?.close();
  state.connection = null;
  setStatus(null, "idle");
}

function openConversation(convId) {
  disconnect();
  transcript.reset();
  hideNotice();
  state.convId = convId;
  state.engine = null;
  state.helloSeq = 0;
  state.stopping = false;
  const connection = new Connection({
    convId,
    profile: ui.profile.value || null,
    since: () => transcript.lastSeq,
    onEvent(event) {
      if (connection !== state.connection) return;
      const follow = nearBottom();
      if (transcript.apply(event)) {
        render();
        if (follow) scrollToBottom();
      }
    },
    onHello(event) {
      if (connection !== state.connection) return;
      hideNotice("restart");
      transcript.hello(event);
      state.engine = event.engine ?? state.engine;
      state.helloSeq = typeof event.last_seq === "number" ? event.last_seq : 0;
      const profile = profileBySlug(event.profile);
      if (profile && transcript.empty && ui.profile.value !== profile.slug) {
        ui.profile.value = profile.slug; // joining a conversation picks up its profile
        loadOverride();
      }
      render();
    },
    onSignedOut() {
      if (connection === state.connection) signedOut();
    },
    onRefused() {
      if (connection === state.connection) checkSignedIn();
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

function newChat() {
  disconnect();
  transcript.reset();
  hideNotice();
  state.convId = null;
  state.engine = null;
  state.stopping = false;
  setUrl(null, "push");
  closeSidebar();
  render();
  ui.prompt.focus();
}

function selectConversation(convId) {
  closeSidebar();
  if (convId === state.convId) return;
  setUrl(convId, "push");
  openConversation(convId);
  scheduleConversations();
}

// -- sending and stopping ------------------------------------------------------------------------

function describeError(status, body) {
  const message = body && typeof body.error === "string" ? body.error : `HTTP ${status}`;
  if (status === 409) return `Busy: ${message}. Wait for the answer, or press Stop.`;
  if (status === 413) return `Too long: ${message}`;
  return `Could not send: ${message}`;
}

function send() {
  const text = ui.prompt.value;
  if (text.trim()) submit(text, { fromComposer: true });
}

/** POST `text` as a new message of the open conversation (from the composer, or Retry). */
async function submit(text, { fromComposer = false } = {}) {
  const profile = currentProfile();
  if (state.sending || !profile) return;
  if (transcript.running && profile.busy_policy === "reject") return;
  state.sending = true;
  hideNotice();
  render();
  try {
    let connection = state.connection;
    if (!state.convId || !connection) {
      const convId = state.convId ?? uuid();
      setUrl(convId, "replace");
      connection = openConversation(convId);
    }
    // Be subscribed before the run starts (the replay from since=0 would cover it anyway).
    await Promise.race([connection.ready, sleep(3000)]);
    const key = state.retryKey?.text === text ? state.retryKey.key : uuid();
    state.retryKey = { text, key };
    const body = { prompt: text, conv_id: state.convId };
    const override = ui.systemPrompt.value;
    if (profile.allow_overrides && override.trim()) body.overrides = { system_prompt: override };
    const response = await postJson(`chat/${encodeURIComponent(profile.slug)}`, body, {
      "Idempotency-Key": key,
    });
    state.retryKey = null; // the server answered: a new send is a new request
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.ok && data) {
      if (fromComposer && ui.prompt.value === text) {
        ui.prompt.value = "";
        autosize();
      }
      if (data.conv_id === state.convId) {
        transcript.rememberPrompt(data.inference_id, text);
        transcript.expect(data.inference_id); // unless its terminal frame came first
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

async function stop() {
  if (!state.convId || state.stopping) return;
  state.stopping = true;
  render();
  try {
    const path = `api/conversations/${encodeURIComponent(state.convId)}/cancel`;
    const response = await api(path, { method: "POST" });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      showNotice(`Could not stop: ${data?.error ?? `HTTP ${response.status}`}`);
    }
  } catch (err) {
    if (!(err instanceof SignedOutError)) showNotice(`Could not stop: ${err?.message ?? err}`);
  } finally {
    state.stopping = false;
    render();
  }
}

// -- profiles and overrides -----------------------------------------------------------------------

function saveOverride() {
  if (ui.profile.dataset.slug) state.overrides.set(ui.profile.dataset.slug, ui.systemPrompt.value);
}

function loadOverride() {
  const profile = currentProfile();
  ui.profile.dataset.slug = profile?.slug ?? "";
  ui.systemPrompt.value = profile ? (state.overrides.get(profile.slug) ?? "") : "";
  ui.systemPrompt.placeholder = profile?.default_prompt
    ? `Default: ${profile.default_prompt}`
    : "Leave empty to use the profile's default prompt";
}

/** The profiles, retried until the server answers; false when the reader is signed out. */
async function loadProfiles() {
  for (let attempt = 0; ; attempt += 1) {
    try {
      const response = await api("api/chat/profiles");
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const profiles = await response.json();
      if (!Array.isArray(profiles)) throw new Error("unexpected answer");
      state.profiles = profiles;
      break;
    } catch (err) {
      if (err instanceof SignedOutError) return false; // signedOut() said what to do
      showNotice(`Could not load profiles (${err?.message ?? err}); retrying…`);
      await sleep(Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt));
    }
  }
  hideNotice();
  ui.profile.replaceChildren(
    ...state.profiles.map((p) => {
      const option = el("option", "", p.display_name || p.slug);
      option.value = p.slug;
      option.title = `${p.api_type} · ${p.model}`;
      return option;
    }),
  );
  let chosen = null;
  try {
    chosen = profileBySlug(localStorage.getItem("webchat.profile"));
  } catch {
    chosen = null;
  }
  chosen = chosen ?? state.profiles.find((p) => p.default) ?? state.profiles[0] ?? null;
  if (chosen) ui.profile.value = chosen.slug;
  ui.profile.disabled = state.profiles.length === 0;
  loadOverride();
  render();
  return true;
}

// -- conversation list ----------------------------------------------------------------------------

let conversationsTimer = null;
function scheduleConversations(delay = 250) {
  clearTimeout(conversationsTimer);
  conversationsTimer = setTimeout(refreshConversations, delay);
}

async function refreshConversations() {
  clearTimeout(conversationsTimer);
  if (auth.leaving) return;
  conversationsTimer = setTimeout(refreshConversations, CONVERSATIONS_EVERY_MS);
  let list;
  try {
    const response = await api("api/conversations");
    if (!response.ok) return;
    list = (await response.json()).conversations;
  } catch {
    return;
  }
  if (!Array.isArray(list)) return;
  const items = list.map((c) => {
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
    button.addEventListener("click", () => selectConversation(c.conv_id));
    item.append(button);
    return item;
  });
  ui.conversations.replaceChildren(...items);
  ui.conversationsEmpty.hidden = items.length > 0;
  render();
}

// -- the signed-in user ---------------------------------------------------------------------------

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/**
 * How the server signs users in, and who this reader is. False when not signed in (the page
 * is on its way to the log-in page, or says it cannot go on). A server that answers neither
 * (an error, or one without authentication) counts as --auth none: no account is shown.
 */
async function loadAccount() {
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
function checkSignedIn() {
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
  disconnect();
  // Behind a proxy, the proxy signs users in: a reload asks it again.
  if (hasLoginPage()) location.assign(loginUrl(false));
  else location.reload();
}

// -- layout bits ----------------------------------------------------------------------------------

function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 220)}px`;
}

function openSidebar() {
  ui.app.classList.add("sidebar-open");
  ui.scrim.hidden = false;
}

function closeSidebar() {
  ui.app.classList.remove("sidebar-open");
  ui.scrim.hidden = true;
}

// -- wiring -----------------------------------------------------------------------------------------

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});

ui.prompt.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || event.shiftKey || event.altKey) return;
  if (event.isComposing || event.keyCode === 229) return; // IME composition in progress
  event.preventDefault();
  send();
});

ui.prompt.addEventListener("input", autosize);

// Keep the newest message in view when the pane shrinks (composer grows, panel opens).
let pinned = true;
ui.messages.addEventListener("scroll", () => {
  pinned = nearBottom();
});
new ResizeObserver(() => {
  if (pinned) scrollToBottom();
}).observe(ui.messages);
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", newChat);
ui.menu.addEventListener("click", openSidebar);
ui.sidebarClose.addEventListener("click", closeSidebar);
ui.scrim.addEventListener("click", closeSidebar);
ui.notice.addEventListener("click", () => hideNotice());
ui.logout.addEventListener("click", logOut);

ui.profile.addEventListener("change", () => {
  saveOverride();
  loadOverride();
  try {
    localStorage.setItem("webchat.profile", ui.profile.value);
  } catch {
    // storage may be unavailable (private mode); the choice just is not remembered
  }
  render();
});

ui.systemPrompt.addEventListener("input", () => {
  saveOverride();
  render();
});

ui.overrideDefault.addEventListener("click", () => {
  ui.systemPrompt.value = currentProfile()?.default_prompt ?? "";
  saveOverride();
  render();
  ui.systemPrompt.focus();
});

ui.overrideClear.addEventListener("click", () => {
  ui.systemPrompt.value = "";
  saveOverride();
  render();
});

window.addEventListener("popstate", () => {
  const convId = convIdFromUrl();
  if (convId === state.convId) return;
  if (convId) openConversation(convId);
  else newChat();
});

window.addEventListener("online", () => state.connection?.nudge());
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    state.connection?.nudge();
    scheduleConversations(0);
  }
});

async function boot() {
  render();
  if (!(await loadAccount())) return;
  if (!(await loadProfiles())) return;
  // The server was down at first: ask again now that it answers.
  if (!auth.known && !(await loadAccount())) return;
  const convId = convIdFromUrl();
  if (convId) openConversation(convId);
  refreshConversations();
  ui.prompt.focus();
}

boot();
