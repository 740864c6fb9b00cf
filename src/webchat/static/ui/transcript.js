// The transcript: frames in, DOM out. Messages, tool cards, thinking, errors, and the actions
// on each message (copy, edit, regenerate, feedback, branch switching, usage on hover).
//
// Idempotent: frames at or below the last seen seq are ignored, and every element is keyed by
// the id of what it shows (message, tool call, run), so a replay after a reconnect never
// duplicates anything.

import * as markdown from "../markdown.js";
import { sentAttachments } from "./attachments.js";
import { copyText, el, flashCopied, formatValue, icon, iconButton } from "./dom.js";

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

export function plainError(messages, duringRun) {
  for (const [pattern, plain] of PLAIN_ERRORS) {
    if (messages.some((m) => pattern.test(m))) return plain;
  }
  return duringRun ? "Something went wrong while answering." : "Something went wrong.";
}

const TERMINAL = new Set(["run.finished", "run.failed", "run.cancelled"]);

function formatDuration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/**
 * Renders one conversation's frames. `hooks`: runStarted(event), runEnded(event),
 * retry(inferenceId), regenerate(turnId), edit(turnId, text), switchBranch(turnId),
 * feedback(turnId, rating, comment), turnsChanged().
 */
export class Transcript {
  constructor(root, hooks) {
    this.root = root;
    this.hooks = hooks;
    this.feedback = new Map(); // turn id -> {rating, comment}
    this.tree = null; // {parent: Map(turn id -> parent id or ""), children: {parent: [ids]}}
    this.reset();
  }

  reset() {
    this.clearView();
    // The running state comes from frames alone: a run is active from its run.started (or
    // from the POST reply that accepted it) until its terminal frame. The POST reply and the
    // frames travel separately, so a reply may come after the run already ended: `ended`
    // remembers terminal frames, and an ended run is never marked active again.
    this.helloSeq = 0;
    this.active = new Set(); // inference ids started or accepted and not yet ended
    this.ended = new Map(); // inference id -> "finished" | "failed" | "cancelled"
    this.serverRunning = false; // ws.hello said a run is active; until its replay is read
    this.prompts = new Map(); // inference id -> the prompt it answers (for Retry)
    this.started = new Map(); // inference id -> performance.now() of its live run.started
    this.feedback = new Map();
    this.tree = null;
  }

  /** Empties what is shown (to draw another branch), keeping what is known of runs. */
  clearView() {
    this.root.replaceChildren();
    this.lastSeq = 0;
    this.nodes = new Map();
    this.turnOrder = []; // turn ids shown, in order (the branch on screen, root first)
    this.strays = 0; // error frames outside any run (they may have no seq)
    this.firstUserText = null;
  }

  get running() {
    return this.active.size > 0 || this.serverRunning;
  }

  get empty() {
    return this.root.childElementCount === 0;
  }

  /** The last turn on screen (the leaf of the branch shown), or null. */
  get leaf() {
    return this.turnOrder.at(-1) ?? null;
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

  /** A frame of a branch not on screen: it only tells whether a run is active. */
  track(event) {
    const id = event.inference_id;
    if (!id) return;
    if (event.type === "run.started" && !this.ended.has(id)) this.active.add(id);
    if (TERMINAL.has(event.type)) {
      this.active.delete(id);
      this.ended.set(id, event.type.slice(4));
      if (this.active.size === 0) this.serverRunning = false;
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

  noteTurn(turnId) {
    if (!turnId || this.turnOrder.includes(turnId)) return;
    this.turnOrder.push(turnId);
    this.hooks.turnsChanged?.(turnId);
  }

  // Turn containers group everything one run (inference) produced.
  turn(event) {
    const key = `turn:${event.inference_id ?? "-"}`;
    let turn = this.nodes.get(key);
    if (!turn) {
      turn = el("article", "turn");
      turn.dataset.inferenceId = event.inference_id ?? "";
      turn.dataset.turnId = event.turn_id ?? "";
      turn.dataset.state = "running";
      const avatar = el("div", "avatar", "◆");
      avatar.setAttribute("aria-hidden", "true");
      const main = el("div", "turn-main");
      const body = el("div", "turn-body");
      const head = el("div", "turn-head");
      head.append(el("span", "turn-name", "Assistant"), el("span", "turn-model"));
      body.append(head);
      turn.actions = this.turnActions(turn);
      main.append(body, turn.actions);
      turn.append(avatar, main);
      turn.body = body;
      turn.usage = { input: 0, output: 0, seen: false };
      this.root.append(turn);
      this.nodes.set(key, turn);
      this.noteTurn(event.turn_id);
    } else if (!turn.dataset.turnId && event.turn_id) {
      turn.dataset.turnId = event.turn_id;
      this.noteTurn(event.turn_id);
    }
    return turn;
  }

  /** The row under an answer: branch switch, copy, regenerate, feedback, usage. */
  turnActions(turn) {
    const row = el("div", "message-actions turn-actions");
    row.branch = el("span", "branch-slot");
    const copy = iconButton("copy", "Copy the answer", "copy-message");
    copy.addEventListener("click", async () => flashCopied(copy, await copyText(this.textOf(turn))));
    const regenerate = iconButton("regenerate", "Regenerate the answer", "regenerate");
    regenerate.addEventListener("click", () => this.hooks.regenerate?.(turn.dataset.turnId));
    const up = iconButton("up", "Good answer", "feedback-up");
    const down = iconButton("down", "Bad answer", "feedback-down");
    up.setAttribute("aria-pressed", "false");
    down.setAttribute("aria-pressed", "false");
    up.addEventListener("click", () => this.rate(turn, "up"));
    down.addEventListener("click", () => this.rate(turn, "down"));
    const meta = el("span", "turn-meta");
    row.append(row.branch, copy, regenerate, up, down, meta);
    Object.assign(row, { copy, regenerate, up, down, meta });
    return row;
  }

  textOf(turn) {
    return Array.from(turn.body.querySelectorAll(".assistant-text"), (b) => b.source ?? "")
      .filter(Boolean)
      .join("\n\n");
  }

  rate(turn, rating) {
    const turnId = turn.dataset.turnId;
    if (!turnId) return;
    const current = this.feedback.get(turnId) ?? { rating: null, comment: null };
    const next = current.rating === rating ? null : rating;
    this.feedback.set(turnId, { rating: next, comment: current.comment });
    this.showFeedback(turn);
    this.hooks.feedback?.(turnId, next, current.comment ?? null);
    if (next) this.openComment(turn);
    else turn.querySelector(".feedback-form")?.remove();
  }

  /** An optional comment after a thumbs up or down. */
  openComment(turn) {
    if (turn.querySelector(".feedback-form")) return;
    const turnId = turn.dataset.turnId;
    const form = el("form", "feedback-form");
    const area = el("textarea", "feedback-comment");
    area.rows = 2;
    area.placeholder = "Add a comment (optional)";
    area.setAttribute("aria-label", "Feedback comment");
    area.value = this.feedback.get(turnId)?.comment ?? "";
    const save = el("button", "feedback-save", "Save");
    save.type = "submit";
    const cancel = el("button", "link-button feedback-cancel", "Close");
    cancel.type = "button";
    const row = el("div", "feedback-buttons");
    row.append(cancel, save);
    form.append(area, row);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const current = this.feedback.get(turnId) ?? { rating: null };
      const comment = area.value.trim() || null;
      this.feedback.set(turnId, { rating: current.rating, comment });
      this.hooks.feedback?.(turnId, current.rating ?? null, comment);
      form.remove();
      this.showFeedback(turn);
    });
    cancel.addEventListener("click", () => form.remove());
    turn.actions.after(form);
    area.focus();
  }

  showFeedback(turn) {
    const given = this.feedback.get(turn.dataset.turnId);
    const rating = given?.rating ?? null;
    turn.actions.up.setAttribute("aria-pressed", String(rating === "up"));
    turn.actions.down.setAttribute("aria-pressed", String(rating === "down"));
    turn.dataset.feedback = rating ?? "";
    turn.actions.down.title = turn.actions.down.getAttribute("aria-label");
    turn.actions.up.title = turn.actions.up.getAttribute("aria-label");
    if (given?.comment) {
      const which = rating === "down" ? turn.actions.down : turn.actions.up;
      which.title = `${which.getAttribute("aria-label")}: ${given.comment}`;
    }
  }

  /** Feedback read from the server ({turn id: {rating, comment}}). */
  setFeedback(map) {
    this.feedback = new Map(Object.entries(map ?? {}));
    for (const turn of this.root.querySelectorAll(".turn")) this.showFeedback(turn);
  }

  userMessage(event) {
    const node = el("div", "message user");
    node.dataset.messageId = event.id ?? "";
    node.dataset.turnId = event.turn_id ?? "";
    node.text = event.text ?? "";
    node.bubble = el("div", "bubble", node.text);
    const row = el("div", "message-actions user-actions");
    row.branch = el("span", "branch-slot");
    const copy = iconButton("copy", "Copy the message", "copy-message");
    copy.addEventListener("click", async () => flashCopied(copy, await copyText(node.text)));
    const edit = iconButton("edit", "Edit the message", "edit-message");
    edit.addEventListener("click", () => this.startEdit(node));
    row.append(row.branch, copy, edit);
    node.actions = row;
    if (Array.isArray(event.attachments) && event.attachments.length) {
      node.append(sentAttachments(event.attachments));
    }
    node.append(node.bubble, row);
    return node;
  }

  startEdit(node) {
    if (node.querySelector(".edit-form") || !node.dataset.turnId) return;
    const form = el("form", "edit-form");
    const area = el("textarea", "edit-text");
    area.value = node.text;
    area.rows = Math.min(8, Math.max(2, node.text.split("\n").length));
    area.setAttribute("aria-label", "Edit the message");
    const cancel = el("button", "edit-cancel", "Cancel");
    cancel.type = "button";
    const save = el("button", "edit-save", "Send");
    save.type = "submit";
    const buttons = el("div", "edit-buttons");
    buttons.append(cancel, save);
    form.append(area, buttons);
    node.bubble.hidden = true;
    node.actions.hidden = true;
    node.append(form);
    const close = () => {
      form.remove();
      node.bubble.hidden = false;
      node.actions.hidden = false;
    };
    cancel.addEventListener("click", close);
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        close();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = area.value;
      if (!text.trim()) return;
      close();
      this.hooks.edit?.(node.dataset.turnId, text);
    });
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  /** The branch tree, read from the server; decorate() shows it. */
  setTree(tree) {
    this.tree = tree;
    this.decorate();
  }

  siblingsOf(turnId) {
    if (!this.tree || !turnId || !this.tree.parent.has(turnId)) return [turnId];
    const parent = this.tree.parent.get(turnId) ?? "";
    return this.tree.children[parent] ?? [turnId];
  }

  branchNav(turnId) {
    const siblings = this.siblingsOf(turnId);
    if (siblings.length < 2) return null;
    const index = siblings.indexOf(turnId);
    const nav = el("span", "branch-nav");
    nav.dataset.index = String(index + 1);
    nav.dataset.count = String(siblings.length);
    const prev = el("button", "branch-prev", "‹");
    prev.type = "button";
    prev.setAttribute("aria-label", "Previous version");
    prev.disabled = index <= 0 || this.running;
    prev.addEventListener("click", () => this.hooks.switchBranch?.(siblings[index - 1]));
    const next = el("button", "branch-next", "›");
    next.type = "button";
    next.setAttribute("aria-label", "Next version");
    next.disabled = index >= siblings.length - 1 || this.running;
    next.addEventListener("click", () => this.hooks.switchBranch?.(siblings[index + 1]));
    const label = el("span", "branch-label", `${index + 1} / ${siblings.length}`);
    nav.append(prev, label, next);
    return nav;
  }

  /** Branch switches, which answer can be regenerated, what may be edited. */
  decorate() {
    const running = this.running;
    const turns = this.root.querySelectorAll(".turn");
    turns.forEach((turn, i) => {
      const last = i === turns.length - 1;
      const turnId = turn.dataset.turnId;
      const state = turn.dataset.state;
      turn.actions.regenerate.hidden = !last || !turnId || running;
      turn.actions.hidden = state === "running";
      for (const button of [turn.actions.up, turn.actions.down]) button.hidden = !turnId;
      turn.actions.branch.replaceChildren(...[this.branchNav(turnId)].filter(Boolean));
    });
    for (const node of this.root.querySelectorAll(".message.user")) {
      const turnId = node.dataset.turnId;
      node.actions.querySelector(".edit-message").hidden = !turnId || running;
      node.actions.branch.replaceChildren(...[this.branchNav(turnId)].filter(Boolean));
    }
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
      if (typeof markdown.createStreamRenderer === "function") {
        block.renderer = markdown.createStreamRenderer(block.content);
      }
      this.turn(event).body.append(block);
      this.nodes.set(key, block);
    }
    return block;
  }

  setText(block, text, final = false) {
    if (block.source === text && !final) return;
    const changed = block.source !== text;
    block.source = text;
    if (block.renderer) {
      if (changed) block.renderer.update(text);
      if (final) block.renderer.finish?.(text);
    } else if (changed) {
      block.content.innerHTML = markdown.renderMarkdown(text); // safe: the renderer sanitizes
      if (final && typeof markdown.enhance === "function") markdown.enhance(block.content);
    }
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
      const gear = el("span", "tool-icon", "⚙");
      gear.setAttribute("aria-hidden", "true");
      summary.append(gear, card.nameEl, card.statusEl);
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

  /** Token usage (from llm.final) and the run's duration (from run.finished), on hover. */
  showMeta(turn) {
    const parts = [];
    const { usage } = turn;
    if (usage.seen) {
      parts.push(`${usage.input.toLocaleString()} in · ${usage.output.toLocaleString()} out tokens`);
    }
    if (typeof turn.durationMs === "number") parts.push(formatDuration(turn.durationMs));
    turn.actions.meta.textContent = parts.join(" · ");
    turn.actions.meta.hidden = parts.length === 0;
    if (usage.seen) turn.dataset.outputTokens = String(usage.output);
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
    const began = this.started.get(event.inference_id);
    if (typeof event.duration_ms === "number") {
      turn.durationMs = event.duration_ms; // measured by the server: history has it too
    } else if (began !== undefined) {
      turn.durationMs = performance.now() - began;
    }
    this.started.delete(event.inference_id);
    this.showMeta(turn);
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
    this.showFeedback(turn);
  }
}

const HANDLERS = {
  "chat.user_message"(event) {
    const key = `user:${event.id ?? event.seq}`;
    if (this.nodes.has(key)) return;
    const node = this.userMessage(event);
    this.root.append(node);
    this.nodes.set(key, node);
    this.noteTurn(event.turn_id);
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
      // Only a run seen starting live has a duration worth showing.
      if (event.seq > this.helloSeq) this.started.set(event.inference_id, performance.now());
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
    // Frames carry only the new text; the text so far is what this block holds.
    this.setText(block, (block.source ?? "") + (event.delta ?? ""));
  },
  "llm.final"(event) {
    const block = this.textBlock(event);
    this.setText(block, event.text ?? block.source ?? "", true);
    block.classList.remove("streaming");
    block.dataset.final = "true";
    // A cancel is said once, by the run.cancelled line; the text is only marked as cut short.
    if (event.interrupted) block.classList.add("interrupted");
    const turn = this.turn(event);
    if (event.usage && typeof event.usage === "object") {
      turn.usage.input += Number(event.usage.input_tokens) || 0;
      turn.usage.output += Number(event.usage.output_tokens) || 0;
      turn.usage.seen = true;
      this.showMeta(turn);
    }
    if (block.source === "") block.remove();
  },
  "llm.thinking.start"(event) {
    this.thinking(event);
  },
  "llm.thinking.delta"(event) {
    const node = this.thinking(event);
    node.text.textContent += event.delta ?? "";
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
    card.arguments = undefined; // the whole input replaces what streamed before it
  },
  "tool.delta"(event) {
    const card = this.tool(event);
    if (typeof event.delta === "string") {
      card.arguments = (card.arguments ?? "") + event.delta; // arguments still streaming
      card.inputEl.textContent = card.arguments;
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
