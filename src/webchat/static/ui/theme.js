// Light, dark or system (prefers-color-scheme) theme, remembered in localStorage.
//
// <html data-theme="light|dark"> is what the style sheet reads; data-theme-choice says what
// the reader picked. ui/theme-boot.js applies it before the first paint.

import { icon, ui } from "./dom.js";

const KEY = "webchat.theme";
const CHOICES = ["system", "light", "dark"];
const LABELS = { system: "System theme", light: "Light theme", dark: "Dark theme" };
const ICONS = { system: "system", light: "sun", dark: "moon" };
const media = window.matchMedia?.("(prefers-color-scheme: dark)");

export function themeChoice() {
  let choice = null;
  try {
    choice = localStorage.getItem(KEY);
  } catch {
    choice = null;
  }
  return CHOICES.includes(choice) ? choice : "system";
}

export function applyTheme(choice) {
  const dark = choice === "dark" || (choice === "system" && Boolean(media?.matches));
  const root = document.documentElement;
  root.dataset.themeChoice = choice;
  root.dataset.theme = dark ? "dark" : "light";
  if (ui.theme) {
    const next = CHOICES[(CHOICES.indexOf(choice) + 1) % CHOICES.length];
    ui.theme.replaceChildren(icon(ICONS[choice], 17));
    ui.theme.dataset.choice = choice;
    ui.theme.setAttribute("aria-label", `${LABELS[choice]} (switch to ${LABELS[next].toLowerCase()})`);
    ui.theme.title = `${LABELS[choice]}: click for ${LABELS[next].toLowerCase()}`;
  }
}

export function setTheme(choice) {
  try {
    if (choice === "system") localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, choice);
  } catch {
    // storage may be unavailable (private mode): the choice holds for this page only
  }
  applyTheme(choice);
}

export function initTheme() {
  applyTheme(themeChoice());
  ui.theme?.addEventListener("click", () => {
    const choice = document.documentElement.dataset.themeChoice ?? "system";
    setTheme(CHOICES[(CHOICES.indexOf(choice) + 1) % CHOICES.length]);
  });
  media?.addEventListener?.("change", () => applyTheme(themeChoice()));
  // Another tab changed it.
  window.addEventListener("storage", (event) => {
    if (event.key === KEY || event.key === null) applyTheme(themeChoice());
  });
}
