// webchat log-in page: plain ES module, no build step.
//
// The page is served at {root}/login, so every URL is computed relative to it (the app root
// is its directory) and the page works under any --root prefix. GET auth/config says how this
// server signs users in: a password form (--auth users) or a link to the OpenID Connect
// provider (--auth oidc). Afterwards the reader goes back to `next`, only if it is a path on
// this server (never an open redirect).

const $ = (id) => document.getElementById(id);

const ui = {
  lead: $("login-lead"),
  error: $("login-error"),
  form: $("login-form"),
  username: $("username"),
  password: $("password"),
  submit: $("login-submit"),
  oidc: $("oidc-login"),
  status: $("login-status"),
};

function appUrl(path) {
  return new URL(path, document.baseURI);
}

/**
 * Where to go once signed in: the `next` query parameter when it is a path on this server
 * ("/..." but not "//host" or "/\host", which browsers read as another host, even hidden
 * behind tabs or newlines that URL parsing drops), else the app root.
 */
function nextTarget() {
  const root = appUrl(".");
  const raw = new URLSearchParams(location.search).get("next");
  if (!raw || !raw.startsWith("/") || raw[1] === "/" || raw[1] === "\\") return root;
  let target;
  try {
    target = new URL(raw, location.origin);
  } catch {
    return root;
  }
  if (target.origin !== location.origin) return root;
  if (target.pathname === location.pathname) return root; // never back to this page
  return target;
}

/** The path (and query) of `nextTarget()`, as the server's OIDC route takes it. */
function nextPath() {
  const target = nextTarget();
  return target.pathname + target.search + target.hash;
}

function go(target) {
  location.replace(target);
}

/** Says what went wrong (the alert region reads it out) and marks the `fields` it is about. */
function showError(text, fields = []) {
  ui.error.textContent = text;
  for (const input of fields) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", "login-error");
  }
}

function clearError() {
  ui.error.textContent = "";
  for (const input of [ui.username, ui.password]) {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
  }
}

function setStatus(text) {
  ui.status.textContent = text;
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

function retryHint(response) {
  const seconds = Number.parseInt(response.headers.get("retry-after") ?? "", 10);
  if (!Number.isFinite(seconds) || seconds <= 0) return "";
  const wait = seconds < 90 ? `${seconds} s` : `${Math.ceil(seconds / 60)} min`;
  return ` You can try again in ${wait}.`;
}

let busy = false;

async function logIn(event) {
  event.preventDefault();
  if (busy) return;
  clearError();
  const username = ui.username.value.trim();
  const password = ui.password.value;
  if (!username || !password) {
    const missing = username ? ui.password : ui.username;
    showError(username ? "Enter your password." : "Enter your user name.", [missing]);
    missing.focus();
    return;
  }
  busy = true;
  ui.submit.disabled = true;
  setStatus("Signing in…");
  let response;
  try {
    response = await fetch(appUrl("auth/login"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Requested-With": "webchat" },
      body: JSON.stringify({ username, password }),
    });
  } catch (err) {
    busy = false;
    ui.submit.disabled = false;
    setStatus("");
    showError(`Could not reach the server (${err?.message ?? err}). Try again.`);
    return;
  }
  if (response.ok) {
    setStatus("Signed in. Opening webchat…");
    go(nextTarget());
    return;
  }
  busy = false;
  ui.submit.disabled = false;
  setStatus("");
  const data = await readJson(response);
  const message = typeof data?.error === "string" ? data.error : `HTTP ${response.status}`;
  if (response.status === 401) {
    showError(`${capitalize(message)}.`, [ui.username, ui.password]);
    ui.password.select();
    ui.password.focus();
  } else if (response.status === 429) {
    showError(`${capitalize(message)}.${retryHint(response)}`);
  } else {
    showError(`Could not sign in: ${message}.`);
  }
}

function capitalize(text) {
  const trimmed = text.trim().replace(/[.!]+$/, "");
  return trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
}

async function boot() {
  let config = null;
  try {
    const response = await fetch(appUrl("auth/config"), { credentials: "same-origin" });
    config = response.ok ? await readJson(response) : null;
  } catch {
    config = null;
  }
  if (!config || typeof config.mode !== "string") {
    setStatus("");
    showError("Could not reach the server. Reload the page to try again.");
    return;
  }
  if (!config.login) {
    // Nothing to sign in with here (--auth none, or a proxy signs users in): the app.
    go(nextTarget());
    return;
  }
  setStatus("");
  if (config.login === "oidc") {
    ui.lead.textContent = "Sign in with your organization's account to continue.";
    const link = appUrl("auth/oidc/login");
    link.searchParams.set("next", nextPath());
    ui.oidc.href = link.href;
    ui.oidc.hidden = false;
    ui.oidc.focus();
    return;
  }
  ui.form.hidden = false;
  ui.form.addEventListener("submit", logIn);
  ui.username.focus();
}

boot();
