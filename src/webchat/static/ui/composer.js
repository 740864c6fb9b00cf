// The composer: the message field, Send and Stop, the starters of an empty conversation, and
// the keyboard (Enter sends, Shift+Enter adds a line, Esc stops the answer, Ctrl/Cmd+Shift+O
// starts a new chat).

import { api, conversationPath, SignedOutError } from "./api.js";
import {
  clearAttachments,
  draftConvId,
  initAttachments,
  readyAttachments,
} from "./attachments.js";
import { el, ui } from "./dom.js";
import { showNotice } from "./notice.js";
import { currentProfile, state } from "./state.js";

let hooks = { submit() {}, newChat() {}, running: () => false, render() {} };

export function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 220)}px`;
}

/** Empties the field if it still holds `text` (a message the server accepted). */
export function clearPrompt(text) {
  if (ui.prompt.value === text) {
    ui.prompt.value = "";
    autosize();
  }
  clearAttachments();
}

let waiting = false;

/** Sends the field's text, once the uploads in progress are done (with their ids). */
async function send() {
  const text = ui.prompt.value;
  if (!text.trim() || waiting) return;
  waiting = true;
  ui.composer.dataset.waiting = "true";
  let attachments;
  try {
    attachments = await readyAttachments(state.convId ?? draftConvId());
  } finally {
    waiting = false;
    delete ui.composer.dataset.waiting;
  }
  hooks.submit(text, { fromComposer: true, attachments });
}

export async function stop() {
  if (!state.convId || state.stopping) return;
  state.stopping = true;
  hooks.render();
  try {
    const response = await api(conversationPath(state.convId, "/cancel"), { method: "POST" });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      showNotice(`Could not stop: ${data?.error ?? `HTTP ${response.status}`}`);
    }
  } catch (err) {
    if (!(err instanceof SignedOutError)) showNotice(`Could not stop: ${err?.message ?? err}`);
  } finally {
    state.stopping = false;
    hooks.render();
  }
}

/** The profile's starters on the empty page (none if the profile lists none). */
export function renderStarters(show) {
  const profile = currentProfile();
  const starters = show && Array.isArray(profile?.starters) ? profile.starters : [];
  const slug = `${profile?.slug ?? ""}\n${starters.join("\n")}`;
  if (ui.starters.dataset.for !== slug) {
    ui.starters.dataset.for = slug;
    ui.starters.replaceChildren(
      ...starters
        .filter((s) => typeof s === "string" && s.trim())
        .map((text) => {
          const button = el("button", "starter", text);
          button.type = "button";
          button.addEventListener("click", () => hooks.submit(text));
          return button;
        }),
    );
  }
  ui.starters.hidden = ui.starters.childElementCount === 0;
}

function isNewChatShortcut(event) {
  return (
    (event.ctrlKey || event.metaKey) && event.shiftKey && !event.altKey && event.code === "KeyO"
  );
}

/** hooks: submit(text, options), newChat(), running(), render(). */
export function initComposer(given) {
  hooks = { ...hooks, ...given };
  initAttachments();
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
  ui.stop.addEventListener("click", stop);
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing) return;
    if (isNewChatShortcut(event)) {
      event.preventDefault();
      hooks.newChat();
      return;
    }
    if (event.key === "Escape" && hooks.running()) {
      // Esc inside a menu, the search box or an edit closes that first (they stop it).
      event.preventDefault();
      stop();
    }
  });
}
