// The one way this page talks HTTP to the server.

import { appUrl } from "./dom.js";

/** Thrown by api() when the server says the user is not signed in (HTTP 401). */
export class SignedOutError extends Error {
  constructor() {
    super("you are signed out");
    this.name = "SignedOutError";
  }
}

let onSignedOut = () => {};

/** What to do when a request finds the session ended (set once, by the app). */
export function whenSignedOut(handler) {
  onSignedOut = handler;
}

/**
 * fetch() for a path relative to the app root. Every request says it comes from this page's
 * script (X-Requested-With): the server refuses a state-changing request without it (or a
 * JSON body), which a cross-site form cannot send.
 */
export function request(path, { headers = {}, ...init } = {}) {
  return fetch(appUrl(path), {
    credentials: "same-origin",
    ...init,
    headers: { "X-Requested-With": "webchat", ...headers },
  });
}

/** request(), where a 401 means the session ended: the handler set with whenSignedOut()
 * acts (the log-in page), and the call throws SignedOutError. */
export async function api(path, init) {
  const response = await request(path, init);
  if (response.status === 401) {
    onSignedOut();
    throw new SignedOutError();
  }
  return response;
}

/** A request with a JSON body (the content type the server expects of a browser). */
export function sendJson(method, path, body, headers = {}) {
  return api(path, {
    method,
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

export function postJson(path, body, headers = {}) {
  return sendJson("POST", path, body, headers);
}

export async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** The `api/conversations/{id}` path (plus `rest`), with the id escaped. */
export function conversationPath(convId, rest = "") {
  return `api/conversations/${encodeURIComponent(convId)}${rest}`;
}
