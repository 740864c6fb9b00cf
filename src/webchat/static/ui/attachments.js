// Attachments (issue 11): files picked with the paperclip, dropped on the page or pasted are
// uploaded at once to the conversation (a new chat gets its id now) and shown as removable
// chips above the field; Send waits for them and names them by id. Sent messages show an
// image as a thumbnail and a text file as a chip linking to its download. What is offered
// follows the profile's policy (GET api/chat/profiles: attachments {enabled, kinds,
// max_bytes, max_files}): no paperclip when it takes none, `accept` from its kinds, and a
// dropped or pasted file it refuses is turned away here with a notice, never uploaded (the
// server would refuse it too: 403, 413).

import { api, conversationPath, readJson, SignedOutError } from "./api.js";
import { appUrl, el, ui, uuid } from "./dom.js";
import { hideNotice, showNotice } from "./notice.js";
import { currentProfile, state } from "./state.js";

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];
const IMAGE_EXTENSIONS = ["png", "jpg", "jpeg", "webp", "gif"];
const TEXT_EXTENSIONS = [
  "txt", "md", "csv", "tsv", "json", "log", "py", "js", "ts", "java", "c", "h", "cpp", "go",
  "rs", "rb", "php", "sh", "sql", "yaml", "yml", "toml", "ini", "xml", "css", "diff",
];
/** The file input's `accept` for each kind a profile may take. */
const ACCEPT = {
  image: IMAGE_TYPES.join(","),
  text: ["text/*", ...TEXT_EXTENSIONS.map((e) => `.${e}`)].join(","),
};
/** A profile that says nothing (an older server) takes what the server's defaults take. */
const OPEN_POLICY = { enabled: true, kinds: ["image", "text"], max_bytes: null, max_files: 10 };

let pending = []; // {name, convId, id, promise, chip}
let draftConv = null; // the id a new chat's uploads went to (submit adopts it)
let list = null;

/** The conversation uploads go to: the open one, or the id a new chat will get. */
function uploadConv() {
  if (state.convId) return state.convId;
  draftConv ??= uuid();
  return draftConv;
}

/** The id a new chat should take (the one its uploads went to), or null. */
export function draftConvId() {
  return pending.length ? draftConv : null;
}

function policy(profile = currentProfile()) {
  return { ...OPEN_POLICY, ...(profile?.attachments ?? {}) };
}

/** The paperclip and the file input as the profile allows (called when it changes). */
export function applyAttachmentPolicy(profile) {
  const allowed = policy(profile);
  const input = document.getElementById("attach-input");
  const button = document.getElementById("attach");
  const on = allowed.enabled && allowed.kinds.length > 0;
  button.hidden = !on;
  input.disabled = !on;
  input.accept = allowed.kinds.map((kind) => ACCEPT[kind] ?? "").join(",");
  button.title = on ? `Attach files (${allowed.kinds.join(" or ")})` : "";
}

/** "image", "text", or null when only the server can tell (it judges the bytes). */
function kindOf(file) {
  const extension = (file.name ?? "").toLowerCase().split(".").pop();
  if (IMAGE_TYPES.includes(file.type) || IMAGE_EXTENSIONS.includes(extension)) return "image";
  if (file.type.startsWith("text/") || TEXT_EXTENSIONS.includes(extension)) return "text";
  return null;
}

function formatBytes(size) {
  if (size < 1024) return `${size} bytes`;
  if (size < 1024 * 1024) return `${Math.round(size / 1024)} KB`;
  return `${(size / (1024 * 1024)).toFixed(1)} MB`;
}

/** Why the profile refuses `file`, or null when it may be uploaded. */
function refusal(file, allowed, name, profile) {
  const title = profile?.display_name || profile?.slug || "this profile";
  if (!allowed.enabled || allowed.kinds.length === 0) {
    return `${title} does not accept attachments.`;
  }
  const kind = kindOf(file);
  if (kind && !allowed.kinds.includes(kind)) {
    return `${name} was not attached: ${title} accepts ${allowed.kinds.join(" and ")} files only.`;
  }
  if (allowed.max_bytes && file.size > allowed.max_bytes) {
    const size = formatBytes(file.size);
    return `${name} was not attached: it is ${size}, the limit is ${formatBytes(allowed.max_bytes)}.`;
  }
  return null;
}

function renderPending() {
  list.replaceChildren(...pending.map((item) => item.chip));
  list.hidden = pending.length === 0;
}

function remove(item) {
  pending = pending.filter((p) => p !== item);
  renderPending();
  ui.prompt.focus();
}

function pendingChip(item) {
  const chip = el("li", "attachment-chip pending");
  chip.dataset.state = "uploading";
  const name = el("span", "attachment-name", item.name);
  const close = el("button", "attachment-remove", "×");
  close.type = "button";
  close.setAttribute("aria-label", `Remove ${item.name}`);
  close.title = `Remove ${item.name}`;
  close.addEventListener("click", () => remove(item));
  chip.append(name, close);
  return chip;
}

async function upload(item, file) {
  const profile = currentProfile();
  const form = new FormData();
  form.append("file", file, file.name || "pasted");
  let path = conversationPath(item.convId, "/attachments");
  if (profile?.slug) path += `?profile=${encodeURIComponent(profile.slug)}`;
  try {
    const response = await api(path, { method: "POST", body: form });
    const data = await readJson(response);
    if (!response.ok || !data?.id) {
      throw new Error(data?.error ?? `HTTP ${response.status}`);
    }
    item.id = data.id;
    item.chip.dataset.state = "done";
    item.chip.dataset.kind = data.kind ?? "";
    return data.id;
  } catch (err) {
    if (pending.includes(item)) {
      remove(item);
      if (!(err instanceof SignedOutError)) {
        showNotice(`Could not attach ${item.name}: ${err?.message ?? err}`);
      }
    }
    return null;
  }
}

/** Uploads `files` (a FileList or array) now, each shown as a chip. */
export function addFiles(files) {
  const given = [...(files ?? [])];
  if (given.length === 0) return;
  hideNotice();
  const profile = currentProfile();
  const allowed = policy(profile);
  const conv = uploadConv();
  if (pending.some((p) => p.convId !== conv)) pending = []; // another conversation's
  for (const file of given) {
    const name = file.name || "pasted image";
    const refused = refusal(file, allowed, name, profile);
    if (refused) {
      showNotice(refused);
      continue;
    }
    if (pending.length >= allowed.max_files) {
      showNotice(`A message may carry at most ${allowed.max_files} attachments.`);
      break;
    }
    const item = { name, convId: conv, id: null };
    item.chip = pendingChip(item);
    item.promise = upload(item, file);
    pending.push(item);
  }
  renderPending();
}

/** Waits for the uploads in progress; the ids of those that worked, for conversation `convId`. */
export async function readyAttachments(convId) {
  const items = pending.filter((p) => p.convId === convId);
  await Promise.all(items.map((p) => p.promise));
  return items.filter((p) => p.id && pending.includes(p)).map((p) => p.id);
}

export function uploading() {
  return pending.some((p) => !p.id);
}

/** Forgets the chips (their message was sent). */
export function clearAttachments() {
  pending = [];
  draftConv = null;
  if (list) renderPending();
}

function hasFiles(event) {
  return [...(event.dataTransfer?.types ?? [])].includes("Files");
}

/** The paperclip, the hidden file input, drop on the transcript/composer and paste. */
export function initAttachments() {
  list = document.getElementById("attachments");
  const input = document.getElementById("attach-input");
  const button = document.getElementById("attach");
  applyAttachmentPolicy(currentProfile());
  button.addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });
  for (const zone of [ui.transcript, ui.composer]) {
    zone.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      ui.composer.classList.add("drop-target");
    });
    zone.addEventListener("dragleave", () => ui.composer.classList.remove("drop-target"));
    zone.addEventListener("drop", (event) => {
      ui.composer.classList.remove("drop-target");
      if (!hasFiles(event)) return;
      event.preventDefault();
      addFiles(event.dataTransfer.files);
    });
  }
  ui.prompt.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (files.length === 0) return;
    event.preventDefault();
    addFiles(files);
  });
}

/** A sent message's attachments ([{id, name, media_type, size, kind}]) as thumbnails/chips. */
export function sentAttachments(refs, convId = state.convId) {
  const box = el("ul", "message-attachments");
  box.setAttribute("aria-label", "Attachments");
  for (const ref of refs) {
    if (!ref || typeof ref.id !== "string") continue;
    const rest = `/attachments/${encodeURIComponent(ref.id)}`;
    const url = String(appUrl(conversationPath(convId ?? "", rest)));
    const item = el("li", "message-attachment");
    const link = el("a", ref.kind === "image" ? "attachment-thumb" : "attachment-chip");
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener";
    const name = String(ref.name ?? "file");
    if (ref.kind === "image") {
      const img = el("img");
      img.src = url;
      img.alt = name;
      img.loading = "lazy";
      link.title = name;
      link.append(img);
    } else {
      link.download = name;
      link.append(el("span", "attachment-name", name));
    }
    item.append(link);
    box.append(item);
  }
  return box;
}
