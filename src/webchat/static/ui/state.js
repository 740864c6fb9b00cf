// What the page knows, shared by the modules (each owns the fields it writes).

import { ui } from "./dom.js";

export const state = {
  profiles: [],
  convId: null,
  engine: null, // api_type answering the connected conversation
  helloSeq: 0, // last_seq of the latest ws.hello: frames up to it are replayed history
  seenSeq: 0, // the highest frame seq received (a reconnect resumes after it)
  connection: null,
  sending: false,
  stopping: false,
  retryKey: null, // {text, parent, key}: re-sending after a network failure reuses the key
  overrides: new Map(), // profile slug -> system prompt override text
  titles: new Map(), // conv_id -> title, from the conversation list
  tree: null, // the branch tree of the open conversation (see conversation.js)
  view: null, // Set of the turn ids on screen (null: everything the socket sends)
  switching: null, // frames buffered while a branch is read from the timeline
  resending: false, // a regenerate or an edit is on its way
  deleting: null, // the conversation this page is deleting (its DELETE not answered yet)
};

export const auth = {
  config: { mode: "none", login: null }, // GET auth/config: how this server signs users in
  user: null, // GET auth/me
  leaving: false, // on the way to the log-in page (or reloading): say nothing more
  loggingOut: false, // Log out pressed: its own answer says where to go
  checking: null, // the auth/me probe in flight after a refused WebSocket handshake
  known: false, // the server answered auth/config and auth/me (it may be down at first)
};

export function profileBySlug(slug) {
  return state.profiles.find((p) => p.slug === slug) ?? null;
}

export function currentProfile() {
  return profileBySlug(ui.profile.value);
}
