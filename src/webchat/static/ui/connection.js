// The WebSocket transport: one socket per conversation, joined with `since` (the last frame
// seq seen) so a reconnect resumes exactly where it stopped; pings to notice a dead socket;
// backoff with jitter; close codes decide what happens next.

import { appUrl } from "./dom.js";

const PING_EVERY_MS = 15_000;
const SILENCE_LIMIT_MS = 45_000; // pongs arrive every 15 s; this much silence means a dead socket
export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 5_000;
const SLOW_CONSUMER = 4008;
const POLICY_VIOLATION = 1008;
const SERVICE_RESTART = 1012; // the server is shutting down to restart: come back later
const SIGNED_OUT = 4401; // the user logged out (here or in another tab) or was removed
const GONE = 4404; // the conversation was deleted

// Deltas come short (type, id, seq, delta): they have the envelope (conv_id and the session,
// inference and turn ids) of their stream's opening frame, which always came first. Kept
// across reconnects, as the opening frame may have come on an earlier socket.
const ENVELOPE_KEYS = ["conv_id", "session_id", "inference_id", "turn_id"];
const MAX_STREAMS = 4096;
const envelopes = new Map();

/** `event` with its stream's envelope if it came without one; remembers those that have one. */
export function withEnvelope(event) {
  if (typeof event.id !== "string") return event;
  if ("conv_id" in event) {
    if (!envelopes.has(event.id)) {
      if (envelopes.size >= MAX_STREAMS) envelopes.delete(envelopes.keys().next().value);
      const envelope = {};
      for (const key of ENVELOPE_KEYS) if (key in event) envelope[key] = event[key];
      envelopes.set(event.id, envelope);
    }
    return event;
  }
  return Object.assign(event, envelopes.get(event.id));
}

export class Connection {
  /**
   * Hooks: onEvent(frame), onHello(hello), onState(status, detail), onSignedOut(reason)
   * (closed with 4401), onRefused() (a handshake failed: the server down, or a session gone),
   * onGone() (closed with 4404: the conversation was deleted).
   */
  constructor({ convId, profile, since, onEvent, onHello, onState, onSignedOut, onRefused, onGone }) {
    Object.assign(this, { convId, profile, since, onEvent, onHello, onState });
    this.onSignedOut = onSignedOut;
    this.onRefused = onRefused;
    this.onGone = onGone;
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
        this.onEvent(withEnvelope(event));
      }
    };
    ws.onclose = (close) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      if (this.closed) return;
      if (close.code === SIGNED_OUT || close.code === GONE) {
        this.closed = true;
        this.onState("failed", close.reason || (close.code === GONE ? "deleted" : "signed out"));
        this.resolveReady(false);
        if (close.code === GONE) this.onGone?.();
        else this.onSignedOut?.(close.reason);
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
