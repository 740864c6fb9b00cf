// Following the stream: the transcript stays at the bottom while the reader is there; scrolled
// up, it stays put and a "jump to the bottom" button appears.

import { ui } from "./dom.js";

const NEAR_PX = 120;
let pinned = true;

export function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < NEAR_PX;
}

export function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
  pinned = true;
  updateJump();
}

export function updateJump() {
  ui.jump.hidden = nearBottom();
}

export function initScroll() {
  ui.messages.addEventListener("scroll", () => {
    pinned = nearBottom();
    updateJump();
  });
  // Keep the newest message in view when the pane shrinks (composer grows, panel opens).
  new ResizeObserver(() => {
    if (pinned) scrollToBottom();
    else updateJump();
  }).observe(ui.messages);
  ui.jump.addEventListener("click", () => {
    ui.messages.scrollTo({ top: ui.messages.scrollHeight, behavior: "smooth" });
    pinned = true;
  });
}
