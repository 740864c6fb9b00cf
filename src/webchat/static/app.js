// webchat browser client: plain ES modules, no build step. This file only starts the app;
// each module under ui/ has one job:
//
//   ui/api.js           the one fetch helper (X-Requested-With, 401 -> log-in page)
//   ui/connection.js    the WebSocket: join, resume with since, reconnect, ping, close codes
//   ui/transcript.js    frames -> messages, tool cards, thinking, message actions
//   ui/conversation.js  the open conversation: join, send, branches, feedback, delete
//   ui/composer.js      the message field, Send/Stop, starters, keyboard shortcuts
//   ui/sidebar.js       conversation list (day groups, search, rename, export, delete), account
//   ui/profiles.js      the profile picker and the system prompt override
//   ui/scroll.js        following the stream, jump to the bottom
//   ui/theme.js         light / dark / system
//   ui/notice.js        the notice line and the connection status
//
// Every URL is computed relative to the page (document.baseURI), so the app works under any
// URL prefix.

import { whenSignedOut } from "./ui/api.js";
import { initComposer } from "./ui/composer.js";
import {
  conversationDeleted,
  convIdFromUrl,
  disconnect,
  newChat,
  onPopState,
  openConversation,
  render,
  selectConversation,
  submit,
  transcript,
} from "./ui/conversation.js";
import { ui } from "./ui/dom.js";
import { initNotice } from "./ui/notice.js";
import { initProfiles, loadProfiles } from "./ui/profiles.js";
import { initScroll } from "./ui/scroll.js";
import {
  initSidebar,
  loadAccount,
  refreshConversations,
  scheduleConversations,
  signedOut,
} from "./ui/sidebar.js";
import { auth, state } from "./ui/state.js";
import { initTheme } from "./ui/theme.js";

whenSignedOut(signedOut);
initTheme();
initNotice();
initScroll();
initProfiles({ render });
initComposer({ submit, newChat, render, running: () => transcript.running });
initSidebar({
  select: selectConversation,
  deleted: conversationDeleted,
  render,
  disconnect,
});
ui.newChat.addEventListener("click", newChat);

window.addEventListener("popstate", onPopState);
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
