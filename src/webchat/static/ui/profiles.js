// The profile picker and the system prompt override panel.

import { api, SignedOutError } from "./api.js";
import { applyAttachmentPolicy } from "./attachments.js";
import { BACKOFF_MAX_MS, BACKOFF_MIN_MS } from "./connection.js";
import { el, sleep, ui } from "./dom.js";
import { hideNotice, showNotice } from "./notice.js";
import { currentProfile, profileBySlug, state } from "./state.js";

let render = () => {};
let loaded = () => {};

/** Resolves once the profiles are known (a message typed before that waits for them). */
export const profilesReady = new Promise((resolve) => {
  loaded = resolve;
});

export function saveOverride() {
  if (ui.profile.dataset.slug) state.overrides.set(ui.profile.dataset.slug, ui.systemPrompt.value);
}

/** The chosen profile's override text and attachment policy, shown. */
export function loadOverride() {
  const profile = currentProfile();
  applyAttachmentPolicy(profile);
  ui.profile.dataset.slug = profile?.slug ?? "";
  ui.systemPrompt.value = profile ? (state.overrides.get(profile.slug) ?? "") : "";
  ui.systemPrompt.placeholder = profile?.default_prompt
    ? `Default: ${profile.default_prompt}`
    : "Leave empty to use the profile's default prompt";
}

/** Joining a conversation picks up its profile. */
export function adoptProfile(slug) {
  const profile = profileBySlug(slug);
  if (profile && ui.profile.value !== profile.slug) {
    ui.profile.value = profile.slug;
    loadOverride();
  }
}

/** The profiles, retried until the server answers; false when the reader is signed out. */
export async function loadProfiles() {
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
  loaded();
  return true;
}

export function renderOverride(profile) {
  const allow = Boolean(profile?.allow_overrides);
  ui.overridePanel.hidden = !allow;
  if (allow) {
    ui.overrideHint.textContent = ui.systemPrompt.value.trim()
      ? "This prompt replaces the profile's default for your messages."
      : "";
  }
}

export function initProfiles(given) {
  render = given.render;
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
}
