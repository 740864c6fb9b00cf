// The notice above the composer and the connection status in the top bar.

import { ui } from "./dom.js";

let noticeTimer = null;

/** kind: "error" and "restart" stay until replaced or dismissed, "info" fades after 4 s. */
export function showNotice(text, kind = "error") {
  clearTimeout(noticeTimer);
  ui.notice.textContent = text;
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
  if (kind === "info") noticeTimer = setTimeout(hideNotice, 4000);
}

export function hideNotice(kind) {
  if (kind && ui.notice.dataset.kind !== kind) return;
  clearTimeout(noticeTimer);
  ui.notice.hidden = true;
  ui.notice.textContent = "";
  delete ui.notice.dataset.kind;
}

const STATUS_LABELS = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Live",
  reconnecting: "Reconnecting…",
  restarting: "Server restarting, reconnecting…",
  failed: "Disconnected",
};

export function showStatus(status, detail) {
  const label = STATUS_LABELS[status] ?? status;
  ui.status.dataset.state = status;
  ui.statusText.textContent = label;
  ui.status.title = detail ? `${label}: ${detail}` : label;
}

export function initNotice() {
  ui.notice.addEventListener("click", () => hideNotice());
}
