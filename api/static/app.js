// The text2art page: the form, the job being made (live over SSE) and the gallery.

import { api, setApiKey } from "./api.js";
import {
  batchText,
  clockIn,
  formatBytes,
  formatDuration,
  formatSize,
  h,
  isPixelated,
  seedRange,
  settingsSummary,
  variationCount,
} from "./format.js";
import { Gallery } from "./gallery.js";
import { watchEstimate } from "./estimate.js";

const $ = (selector) => document.querySelector(selector);
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
// Errors on fields the page has no control for are shown beside the closest one.
const FIELD_ALIASES = { size: "scale", prompt: "prompts" };
const DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024;
const EMPTY_TEXT = {
  idle: "Your picture appears here as it is made.",
  queued: "Waiting for its turn…",
  running: "The first preview is on its way…",
  failed: "No picture this time.",
  cancelled: "No picture: the job was cancelled.",
};

// While the server warms up, /info is asked again this often, at most this many times.
const READINESS_POLL_MS = 2000;
const READINESS_CHECKS = 60;

const page = {
  readinessChecks: 0,
  uploadLimit: DEFAULT_UPLOAD_LIMIT,
  info: null,
  retryTimer: null,
  maxVariations: null, // the most pictures per job this server makes (from /info)
};

// ---------------------------------------------------------------- the form

const form = $("#create-form");
const promptBox = $("#prompts");

function keywordPattern(word) {
  const escaped = word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[,|]\\s*|\\s)${escaped}(?=$|\\s*[,|])`, "i");
}

/** Append a style keyword to the prompt, or take it out again when it is already there. */
function toggleKeyword(word) {
  const text = promptBox.value.trim();
  if (keywordPattern(word).test(text)) {
    promptBox.value = text
      .replace(keywordPattern(word), "")
      .replace(/^[,\s]+|[,\s]+$/g, "")
      .replace(/,\s*,/g, ",");
  } else {
    promptBox.value = text ? `${text.replace(/[,\s]+$/, "")}, ${word}` : word;
  }
  syncChips(); // focus stays on the chip, so a keyboard user can go on to the next one
}

/** The example prompt and keyword chips of the models this server runs (from /info). */
function showPromptHints(hints) {
  if (!hints) return; // a server that predates them: the page's own
  if (hints.example) promptBox.placeholder = hints.example;
  if (!Array.isArray(hints.keywords)) return;
  const chips = hints.keywords.map((word) =>
    h("button", { type: "button", class: "chip", "data-keyword": word, text: word }),
  );
  $(".chips").replaceChildren(...chips);
  syncChips();
}

function syncChips() {
  for (const chip of document.querySelectorAll(".chip")) {
    chip.setAttribute("aria-pressed", String(keywordPattern(chip.dataset.keyword).test(promptBox.value)));
  }
}

const ANIMATION_FIELDS = ["frames", "frame_iterations", "fps", "zoom", "angle", "translate_x", "translate_y"];
// The creative controls of the Advanced section with the engine's defaults: a control left at
// its default (or empty) is not sent, so a server that predates them still takes the job.
const CONTROL_DEFAULTS = {
  symmetry: "none",
  symmetry_weight: "1",
  init_noise: "default",
  optimiser: "adam",
  learning_rate: "",
  augments: "affine,perspective,colour,noise",
  cut_power: "1",
  save_every: "0",
  stroke_width: "",
  pixel_shape: "square",
};

/** Put the creative controls of settings `s` into the form; whether one differs from today's. */
function fillControls(s) {
  let changed = Boolean(s.tile);
  for (const [name, unset] of Object.entries(CONTROL_DEFAULTS)) {
    const given = Array.isArray(s[name]) ? s[name].join(",") : String(s[name] ?? "");
    const input = $(`#${name}`);
    const blank = input.tagName === "SELECT" ? unset : "";
    input.value = given === "" || given === unset ? blank : given;
    // A job's learning rate is always resolved (the style's): it alone opens nothing.
    if (name !== "learning_rate" && given !== "" && given !== unset) changed = true;
  }
  $("#tile").checked = Boolean(s.tile);
  return changed;
}

/** The request body: empty optional fields are left out so the server's defaults apply. */
function formData() {
  const data = new FormData();
  const value = (id) => $(`#${id}`).value.trim();
  data.set("prompts", value("prompts"));
  data.set("style", form.elements.style.value);
  data.set("quality", value("quality"));
  data.set("aspect", form.elements.aspect.value);
  // Sent only for a batch, so a server that predates variations still takes the job.
  const variations = Number(form.elements.variations.value);
  if (variations > 1) data.set("variations", String(variations));
  for (const name of ["seed", "iterations", "scale"]) {
    if (value(name) !== "") data.set(name, value(name));
  }
  // An animation's fields only with frames, so a server that predates animation takes stills.
  if (Number(value("frames")) > 0) {
    for (const name of ANIMATION_FIELDS) if (value(name) !== "") data.set(name, value(name));
  }
  for (const [name, unset] of Object.entries(CONTROL_DEFAULTS)) {
    if (value(name) !== unset && value(name) !== "") data.set(name, value(name));
  }
  if ($("#tile").checked) data.set("tile", "true");
  data.set("make_video", String($("#make_video").checked));
  data.set("public", String($("#public").checked));
  if (value("email")) data.set("email", value("email"));
  const file = $("#init_image").files[0];
  if (file) data.set("init_image", file, file.name);
  return data;
}

function setRadio(name, value) {
  if (value === undefined || value === null) return;
  const wanted = String(value).toLowerCase();
  for (const input of form.elements[name]) input.checked = input.value === wanted;
}

/** Put a job's (or a gallery item's) settings into the form. */
function fillForm(s) {
  if (!s) return;
  if (s.prompts ?? s.prompt) promptBox.value = s.prompts ?? s.prompt;
  setRadio("style", s.style);
  setRadio("aspect", s.aspect);
  if (s.quality) $("#quality").value = s.quality;
  setVariations(s.variations);
  $("#seed").value = s.seed ?? "";
  $("#iterations").value = s.iterations ?? "";
  $("#scale").value = s.scale ?? "";
  if (s.make_video !== undefined) $("#make_video").checked = Boolean(s.make_video);
  const changed = fillControls(s);
  if (s.seed !== undefined || s.iterations || s.scale || changed) $("#advanced").open = true;
  const animated = Number(s.frames || 0) > 0;
  for (const name of ANIMATION_FIELDS) $(`#${name}`).value = animated ? s[name] ?? "" : "";
  $("#animation").open = animated;
  syncChips();
  updateHints();
}

/** Choose how many pictures to make: `count` (1 when absent), at most what the server allows. */
function setVariations(count) {
  const most = page.maxVariations ?? form.elements.variations.length;
  setRadio("variations", Math.min(variationCount(count), most));
}

/** Disable the counts above the server's limit and say why; a server allowing one hides them. */
function limitVariations(limits) {
  if (!limits) return;
  // Limits that do not name variations come from a server that predates them: one picture.
  const most = limits.max_variations ?? 1;
  page.maxVariations = most;
  const allowed = `This server allows at most ${most} ${most === 1 ? "variation" : "variations"}`;
  for (const input of form.elements.variations) {
    const over = Number(input.value) > most;
    input.disabled = over;
    input.closest(".seg").title = over ? `${allowed}.` : "";
  }
  const all = most >= form.elements.variations.length;
  $("#variations-limit").textContent = all ? "" : ` ${allowed} per job.`;
  $('[data-field="variations"]').hidden = most <= 1;
  if (Number(form.elements.variations.value) > most) setVariations(most);
}

function updateHints() {
  const info = page.info;
  // What this server runs when the field is empty (its models' world, or the quality's).
  const quality = info?.qualities?.[$("#quality").value];
  if (quality?.iterations) $("#iterations").placeholder = `${quality.iterations} (default)`;
  if (info?.default_scale) $("#scale").placeholder = `${info.default_scale} (default)`;
  const base = info?.aspects?.[form.elements.aspect.value]?.base_size;
  $("#size-hint").textContent = base ? ` (${formatSize(base)} at 1)` : "";
  // Before a job exists, the empty canvas takes the chosen aspect's shape.
  if (base && !view.job) $("#canvas").style.setProperty("--ar", String(base[0] / base[1]));
}

// ---------------------------------------------------------------- errors beside fields

function clearErrors() {
  for (const el of form.querySelectorAll(".field-error")) {
    el.hidden = true;
    el.textContent = "";
  }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  for (const el of form.querySelectorAll(".field.has-error")) el.classList.remove("has-error");
  hideAlert();
}

function fieldControl(name) {
  return form.querySelector(`[name="${name}"]`) || document.getElementById(name);
}

/** Show each message beside its field; focus the first one. Unknown fields go to the alert. */
function showFieldErrors(fields) {
  const unplaced = [];
  let first = null;
  for (const [raw, message] of Object.entries(fields)) {
    const name = FIELD_ALIASES[raw] || raw;
    const slot = document.getElementById(`${name}-error`);
    if (!slot) {
      unplaced.push(raw === "form" ? message : `${raw}: ${message}`);
      continue;
    }
    slot.textContent = raw === name ? message : `${raw}: ${message}`;
    slot.hidden = false;
    slot.closest(".field")?.classList.add("has-error");
    const control = fieldControl(name);
    control?.setAttribute("aria-invalid", "true");
    const fold = slot.closest("details");
    if (fold) fold.open = true;
    first ||= control;
  }
  if (unplaced.length) showAlert(unplaced.join(" "));
  first?.focus();
}

function showAlert(text, kind = "error") {
  const alert = $("#form-alert");
  alert.textContent = text;
  alert.dataset.kind = kind;
  alert.hidden = false;
}

function hideAlert() {
  clearInterval(page.retryTimer);
  $("#form-alert").hidden = true;
}

/** "The queue is full right now. Try again in 30 s (at 14:05)." with a live countdown. */
function showRetry(err) {
  const seconds = err.retryAfter;
  if (seconds === null || seconds === undefined) {
    showAlert(`${err.message} Please try again in a little while.`, "warning");
    return;
  }
  const until = Date.now() + seconds * 1000;
  const at = clockIn(seconds);
  const render = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left <= 0) {
      clearInterval(page.retryTimer);
      showAlert(`${err.message} You can try again now.`, "warning");
      return;
    }
    showAlert(`${err.message} Please try again in ${formatDuration(left)} (at ${at}).`, "warning");
  };
  render();
  clearInterval(page.retryTimer);
  page.retryTimer = setInterval(render, 1000);
}

function showSubmitError(err) {
  if (err.status === 422 && Object.keys(err.fields).length) {
    showFieldErrors(err.fields);
  } else if (err.status === 503 || err.status === 429) {
    showRetry(err);
  } else if (err.status === 401) {
    $("#api-key-field").hidden = false;
    showFieldErrors({ api_key: "Enter a valid API key for this server." });
  } else {
    showAlert(err.message);
  }
}

// ---------------------------------------------------------------- the start image

function checkUpload() {
  const file = $("#init_image").files[0];
  if (file && file.size > page.uploadLimit) {
    showFieldErrors({
      init_image: `This file is ${formatBytes(file.size)}; the limit is ${formatBytes(page.uploadLimit)}.`,
    });
    return false;
  }
  return true;
}

function showUpload() {
  const input = $("#init_image");
  const file = input.files[0];
  const preview = $("#init-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  $("#init_image-error").hidden = true;
  input.closest(".field").classList.remove("has-error");
  if (!file) {
    preview.hidden = true;
    preview.removeAttribute("src");
    $("#init-text").innerHTML = "<strong>Choose an image</strong> or drop it here";
    $("#init-clear").hidden = true;
    return;
  }
  preview.src = URL.createObjectURL(file);
  preview.alt = `Preview of the start image ${file.name}`;
  preview.hidden = false;
  $("#init-text").textContent = `${file.name} · ${formatBytes(file.size)}`;
  $("#init-clear").hidden = false;
  checkUpload();
}

function clearUpload() {
  $("#init_image").value = "";
  showUpload();
  $("#init_image").focus();
}

// ---------------------------------------------------------------- submitting

async function submit(event) {
  event?.preventDefault();
  clearErrors();
  if (!checkUpload()) return;
  const button = $("#submit");
  button.disabled = true;
  button.dataset.busy = "true";
  try {
    if (!$("#api-key-field").hidden) setApiKey($("#api_key").value.trim());
    const job = await api.submit(formData());
    rememberToken(job);
    setJobInUrl(job.id);
    view.start(job);
    $("#job").scrollIntoView({ behavior: "smooth", block: "nearest" });
  } catch (err) {
    showSubmitError(err);
  } finally {
    button.disabled = false;
    delete button.dataset.busy;
  }
}

// The delete token (needed to cancel) is kept in this browser only, per job.
const tokens = new Map();

function rememberToken(job) {
  if (!job.delete_token) return;
  tokens.set(job.id, job.delete_token);
  try {
    localStorage.setItem(`text2art:token:${job.id}`, job.delete_token);
  } catch {
    // storage is off: the token lives as long as the page
  }
}

function deleteToken(id) {
  if (tokens.has(id)) return tokens.get(id);
  try {
    return localStorage.getItem(`text2art:token:${id}`);
  } catch {
    return null;
  }
}

function parse(text) {
  try {
    const data = JSON.parse(text);
    return data && typeof data === "object" ? data : {};
  } catch {
    return {};
  }
}



function jobFromUrl() {
  const params = new URLSearchParams(location.search);
  return params.get("job") || new URLSearchParams(location.hash.slice(1)).get("job");
}

function setJobInUrl(id) {
  const url = new URL(location.href);
  url.hash = "";
  if (id) url.searchParams.set("job", id);
  else url.searchParams.delete("job");
  history.pushState({ job: id }, "", url);
}

// ---------------------------------------------------------------- the job being made

/** Follows one job: opens its event stream, merges what arrives and redraws. */
class JobView {
  constructor(root) {
    this.root = root;
    this.job = null;
    this.source = null;
    this.pollTimer = null;
    this.previewVersion = 0;
    this.rate = null; // {iteration, time} of the first progress seen, for an ETA estimate
    this.lastPolled = -1; // the iteration of the last poll, to refresh the preview when it moves
    this.finished = null; // the id of the job whose end was handled
    this.notice = null; // a message about this job that is not its error (a failed cancel)
    this.sheetRatio = null; // width / height of a batch's contact sheet, once one has loaded
    this.pictures = ""; // the job and pictures the grid of variations shows
  }

  /** Show a job the page just submitted. */
  start(job) {
    this.stop();
    this.job = { status: "queued", ...job };
    this.notice = null;
    this.sheetRatio = null;
    this.previewVersion = 0;
    this.rate = null;
    this.render();
    if (this.job.status === "running" && this.job.progress?.iteration) {
      this.newPreview({ iteration: this.job.progress.iteration }); // reopened mid-run
    }
    this.follow();
  }

  /** Show a job by id (reloading a job's URL). */
  async open(id) {
    this.stop();
    try {
      const job = await api.job(id);
      fillForm(job.settings);
      $("#public").checked = Boolean(job.public);
      this.start(job);
    } catch (err) {
      this.job = null;
      this.render();
      showAlert(err.status === 404 ? "That job no longer exists." : err.message);
    }
  }

  reset() {
    this.stop();
    this.job = null;
    this.sheetRatio = null;
    this.render();
  }

  stop() {
    this.source?.close();
    this.source = null;
    clearTimeout(this.pollTimer);
  }

  follow() {
    if (!this.job || FINAL.has(this.job.status)) return;
    if (!("EventSource" in window)) {
      this.poll();
      return;
    }
    // The browser reconnects by itself, sending Last-Event-ID so the server resumes.
    const source = new EventSource(this.job.links?.events || api.eventsUrl(this.job.id));
    this.source = source;
    for (const type of ["status", "position", "progress", "preview", "deleted"]) {
      source.addEventListener(type, (event) => this.onEvent(type, parse(event.data)));
    }
    source.onerror = () => {
      // Closed for good (e.g. 204 after the end): ask for the state instead.
      if (source.readyState === EventSource.CLOSED && this.source === source) this.poll();
    };
  }

  /** One server event: `status` (the whole job), `position`, `progress`, `preview`, `deleted`. */
  onEvent(type, data) {
    if (!this.job) return;
    if (type === "status") this.merge(data);
    else if (type === "position") this.merge({ status: "queued", ...data });
    else if (type === "progress") this.onProgress(data);
    else if (type === "preview") this.newPreview(data);
    else if (type === "deleted") this.merge({ status: "failed", error: "This job was deleted." });
    if (FINAL.has(this.job.status)) this.finish();
  }

  onProgress({ iteration, total, fraction, eta_seconds, resumed_from, frame, frames }) {
    const status = FINAL.has(this.job.status) ? this.job.status : "running";
    const progress = { iteration, total, fraction, frame, frames };
    const resumed = resumed_from ?? 0;
    this.merge({ status, position: null, gpu_position: null, progress, eta_seconds, resumed_from: resumed });
  }

  merge(data) {
    const { links, progress, ...rest } = data;
    this.job = {
      ...this.job,
      ...rest,
      links: { ...this.job.links, ...(links || {}) },
      progress: progress ? { ...this.job.progress, ...progress } : this.job.progress,
    };
    this.render();
  }

  /** Load the new preview off-screen, then swap it in (no flash of an empty frame). */
  newPreview(data) {
    this.previewVersion = data.iteration ?? this.previewVersion + 1;
    const base = data.url || this.job.links?.preview || api.previewUrl(this.job.id);
    const url = `${base}${base.includes("?") ? "&" : "?"}v=${this.previewVersion}`;
    const id = this.job.id;
    const loader = new Image();
    loader.onload = () => {
      // Late answers for another job, or after the result is shown, are dropped.
      if (this.job?.id !== id || this.job.status === "succeeded") return;
      const img = $("#preview-image");
      img.src = url;
      img.hidden = false;
      $("#empty-state").hidden = true;
      this.fitSheet(loader);
    };
    loader.src = url;
  }

  /** A batch's preview is its contact sheet: the canvas takes the sheet's shape. */
  fitSheet(img) {
    if (pictureCount(this.job) < 2 || !img.naturalHeight) return;
    this.sheetRatio = img.naturalWidth / img.naturalHeight;
    $("#canvas").style.setProperty("--ar", String(this.sheetRatio));
  }

  /** The job ended: close the stream and fetch the full record (links, settings). */
  async finish() {
    const id = this.job.id;
    if (this.finished === id) return;
    this.finished = id;
    this.stop();
    let full = null;
    try {
      full = await api.job(id);
    } catch {
      // keep what the stream said
    }
    if (this.job?.id !== id) return; // the page moved on to another job meanwhile
    if (full) this.merge(full);
    else this.render();
    if (this.job.status === "succeeded" && this.job.public) gallery.refresh();
  }

  async poll() {
    const id = this.job.id;
    try {
      const job = await api.job(id);
      if (this.job?.id !== id) return;
      const moved = job.status === "running" && job.progress?.iteration > this.lastPolled;
      this.lastPolled = job.progress?.iteration ?? -1;
      this.merge(job);
      if (moved) this.newPreview({ iteration: this.lastPolled });
      if (FINAL.has(job.status)) {
        this.finish();
        return;
      }
    } catch {
      // a blip: try again
    }
    this.pollTimer = setTimeout(() => this.poll(), 2000);
  }

  async cancel() {
    const button = $("#cancel");
    button.disabled = true;
    button.textContent = "Cancelling…";
    const id = this.job.id;
    try {
      const answer = await api.cancel(id, deleteToken(id));
      if (this.job?.id === id) this.merge(answer);
    } catch (err) {
      if (this.job?.id !== id) return;
      if (err.status === 409) {
        this.finish(); // it ended meanwhile: show how
        return;
      }
      this.notice = `Could not cancel: ${err.message}`;
      this.render();
    } finally {
      button.disabled = false;
      button.textContent = "Cancel";
    }
    if (this.job?.id === id && FINAL.has(this.job.status)) this.finish();
  }

  render() {
    const job = this.job;
    const state = job ? job.status : "idle";
    this.root.dataset.state = state;
    $("#empty-state").hidden = Boolean(job && (this.previewVersion || state === "succeeded"));
    $("#empty-text").textContent = EMPTY_TEXT[state] || EMPTY_TEXT.idle;
    $("#status-block").hidden = !job;
    // Only the submitter (who holds the job's delete token) may cancel it.
    $("#running-actions").hidden = !job || FINAL.has(state) || !deleteToken(job.id);
    $("#result").hidden = state !== "succeeded";
    this.renderBadge(waitsForGpu(job) ? "waiting" : state);
    this.renderCanvas(job);
    this.renderVariations(job);
    if (!job) {
      $("#job-link").hidden = true;
      return;
    }
    this.renderStatus(job);
    this.renderResult(job);
    const link = $("#job-link");
    link.replaceChildren("Job ", h("a", { href: `?job=${encodeURIComponent(job.id)}`, text: job.id }));
    link.hidden = false;
  }

  renderBadge(state) {
    const labels = {
      queued: "Queued",
      waiting: "Waiting",
      running: "Running",
      succeeded: "Done",
      failed: "Failed",
      cancelled: "Cancelled",
    };
    const badge = $("#job-badge");
    badge.hidden = !labels[state];
    badge.textContent = labels[state] || "";
    badge.dataset.state = state;
  }

  renderCanvas(job) {
    const size = job?.settings?.size;
    const canvas = $("#canvas");
    const ratio = this.sheetRatio || (Array.isArray(size) ? size[0] / size[1] : null);
    if (ratio) canvas.style.setProperty("--ar", String(ratio));
    else canvas.style.removeProperty("--ar");
    // The job's style decides (the form's choice until the job's settings arrive).
    const pixel = isPixelated(job?.settings?.style ?? form.elements.style.value);
    canvas.classList.toggle("pixelated", Boolean(job) && pixel);
    const prompt = job?.settings?.prompts || "your prompt";
    const count = pictureCount(job);
    const batch = count > 1 ? `, ${count} variations` : "";
    $("#preview-image").alt = `Work in progress: ${prompt}${batch}`;
    if (!job || job.status === "queued") {
      $("#preview-image").hidden = true;
      $("#preview-image").removeAttribute("src");
    }
    if (!job || job.status !== "succeeded") {
      $("#result-image").hidden = true;
      $("#result-image").removeAttribute("src");
      $("#result-video").hidden = true;
      $("#result-video").removeAttribute("src");
      $("#result-video").removeAttribute("poster");
    }
  }

  /** A finished batch: its pictures replace the contact sheet, each with its seed and files. */
  renderVariations(job) {
    const pictures = job?.status === "succeeded" ? job.links?.variations || [] : [];
    $("#variations").hidden = !pictures.length;
    $("#canvas").hidden = pictures.length > 0;
    const key = pictures.length ? `${job.id} ${pictures.map((p) => p.image).join(" ")}` : "";
    if (key === this.pictures) return; // unchanged: keep the loaded images
    this.pictures = key;
    const cards = pictures.map((picture) => pictureCard(job, picture, pictures.length));
    $("#variations-grid").replaceChildren(...cards);
  }

  renderStatus(job) {
    const text = $("#job-status");
    const bar = $("#progress");
    const detail = $("#progress-text");
    const error = $("#job-error");
    const fraction = progressFraction(job);
    const pct = Math.floor(fraction * 100);
    bar.hidden = FINAL.has(job.status);
    bar.classList.toggle("indeterminate", job.status === "queued" || waitsForGpu(job));
    bar.setAttribute("aria-valuenow", String(job.status === "succeeded" ? 100 : pct));
    $("#progress-bar").style.width = `${job.status === "succeeded" ? 100 : pct}%`;
    detail.hidden = job.status !== "running" || waitsForGpu(job);
    const message = job.status === "failed" ? job.error || "The generation failed." : this.notice;
    error.textContent = message || "";
    error.hidden = !message;
    text.textContent = statusText(job, pct);
    if (job.status === "running") detail.textContent = this.progressDetail(job);
    this.announce(job, pct);
  }

  /** Tell screen readers about a new state and every quarter of the way, not every tick. */
  announce(job, pct) {
    const making = job.status === "running" && !waitsForGpu(job);
    const step = making ? Math.floor(pct / 25) * 25 : null;
    const key = `${job.id}:${job.status}:${job.position}:${job.gpu_position}:${step}`;
    if (key === this.announced) return;
    this.announced = key;
    $("#job-announce").textContent = making ? `${step}% done` : statusText(job, pct);
  }

  progressDetail(job) {
    const p = job.progress || {};
    const parts = [];
    if (p.frames) parts.push(`frame ${Math.max(1, p.frame || 0)} of ${p.frames}`);
    if (p.total) parts.push(`iteration ${p.iteration ?? 0} of ${p.total}`);
    // A worker died or stopped and this attempt continued from the state the last one saved.
    if (job.resumed_from > 0) parts.push(`resumed at iteration ${job.resumed_from}`);
    const eta = job.eta_seconds ?? this.estimateEta(p);
    if (eta !== null && eta !== undefined) parts.push(`about ${formatDuration(eta)} left`);
    else parts.push("estimating time left…");
    return parts.join(" · ");
  }

  estimateEta(p) {
    if (!p.total || p.iteration === undefined) return null;
    const now = Date.now();
    if (!this.rate || p.iteration < this.rate.iteration) this.rate = { iteration: p.iteration, time: now };
    const done = p.iteration - this.rate.iteration;
    if (done < 2) return null;
    const perStep = (now - this.rate.time) / 1000 / done;
    return perStep * (p.total - p.iteration);
  }

  renderResult(job) {
    if (job.status !== "succeeded") return;
    const s = job.settings || {};
    const links = job.links || {};
    const image = $("#result-image");
    const imageUrl = links.image || links.png;
    if (imageUrl && image.getAttribute("src") !== imageUrl) {
      image.onload = () => {
        $("#preview-image").hidden = true;
      };
      image.src = imageUrl;
    }
    const count = pictureCount(job);
    image.alt = resultAlt(s);
    image.hidden = !imageUrl;
    const video = $("#result-video");
    const videoUrl = links.video || links.mp4;
    video.hidden = !videoUrl;
    // An animation is its video: shown first, in the picture's place (the last frame as poster).
    const animated = Number(s.frames || 0) > 0 && Boolean(videoUrl);
    if (animated) {
      $("#canvas").append(video);
      image.hidden = true;
      video.autoplay = true;
    } else if (video.parentElement.id === "canvas") {
      $("#result").prepend(video);
    }
    // The finished picture, not the first frame (noise), until the video is played.
    if (imageUrl) video.poster = imageUrl;
    if (videoUrl && video.getAttribute("src") !== videoUrl) video.src = videoUrl;
    video.setAttribute("aria-label", `Video of the making of ${s.prompts || "the picture"}`);
    $("#result-prompt").textContent = s.prompts || "";
    $("#result-seed-label").textContent = count > 1 ? "Seeds" : "Seed";
    $("#result-seed").textContent = seedRange(s.seed, count);
    $("#result-settings").textContent = settingsSummary(s);
    $("#downloads").replaceChildren(...downloadLinks(job.id, links, { count }));
    // With a batch, "again" makes the whole batch again; one picture's own button makes it alone.
    $("#again-seed").textContent = count > 1 ? "Again with these seeds" : "Again with this seed";
    $("#new-seed").textContent = count > 1 ? "New seeds" : "New seed";
  }
}

/** Pictures a job makes: its settings say, or its list of pictures once it is done. */
function pictureCount(job) {
  const planned = variationCount(job?.settings?.variations);
  return Math.max(planned, variationCount(job?.links?.variations));
}

/** "a fox, as pixel art (seed 3)"; a batch: "a fox, as pixel art, 4 variations (seeds 3 to 6)". */
function resultAlt(s) {
  const batch = batchText(s) || ` (seed ${s.seed ?? "unknown"})`;
  return `${s.prompts || "Generated art"}, as ${s.style || "art"}${batch}`;
}

/** One picture of a batch: the image, its seed, its files and "Again with this seed". */
function pictureCard(job, picture, count) {
  const s = job.settings || {};
  const size = Array.isArray(s.size) ? s.size : [];
  const caption = `picture-${picture.index}-seed`;
  const what = `picture ${picture.index} of ${count} (seed ${picture.seed})`;
  return h(
    "li",
    { class: "picture" },
    h(
      "figure",
      {},
      h("img", {
        src: picture.image,
        alt: `${s.prompts || "Generated art"}, ${what}`,
        width: size[0],
        height: size[1],
        class: isPixelated(s.style) ? "pixelated" : null,
      }),
      h("figcaption", { id: caption }, "Seed ", h("code", { text: String(picture.seed) })),
    ),
    h(
      "div",
      { class: "picture-actions" },
      ...downloadLinks(`${job.id}-${picture.index}`, picture, { what }),
      h("button", {
        type: "button",
        class: "button secondary small",
        "aria-describedby": caption,
        text: "Again with this seed",
        onclick: () => againWith(picture.seed, 1),
      }),
    ),
  );
}

/** Submit the form again with this first seed and count of pictures. */
function againWith(seed, variations) {
  $("#seed").value = seed ?? "";
  setVariations(variations);
  form.requestSubmit();
}

function progressFraction(job) {
  const p = job.progress;
  if (!p) return 0;
  if (typeof p.fraction === "number") return Math.min(1, Math.max(0, p.fraction));
  return p.total ? Math.min(1, (p.iteration || 0) / p.total) : 0;
}

function statusText(job, pct) {
  const texts = {
    queued: () => queueText(job.position),
    running: () => {
      if (job.cancel_requested) return "Stopping…";
      return waitsForGpu(job) ? gpuText(job.gpu_position) : `${makingText(job)}: ${pct}%`;
    },
    succeeded: () => doneText(job),
    failed: () => "This one did not work out.",
    cancelled: () => "Cancelled. Nothing more will be made for this job.",
  };
  return (texts[job.status] || (() => `Status: ${job.status}`))();
}

/** A job a worker took that waits for its GPU (behind a picture made at once, or another job). */
function waitsForGpu(job) {
  return job?.status === "running" && job.gpu_position !== null && job.gpu_position !== undefined;
}

function gpuText(ahead) {
  if (ahead <= 0) return "Waiting for the GPU: yours is next.";
  if (ahead === 1) return "Waiting for the GPU: 1 picture is being made before yours.";
  return `Waiting for the GPU: ${ahead} pictures are ahead of yours.`;
}

function queueText(position) {
  if (position === undefined || position === null) return "Waiting in the queue…";
  if (position <= 0) return "In the queue: you are next.";
  if (position === 1) return "In the queue: 1 job ahead of yours.";
  return `In the queue: ${position} jobs ahead of yours.`;
}

function makingText(job) {
  const count = pictureCount(job);
  return count > 1 ? `Making your ${count} pictures` : "Making your art";
}

/** Epoch seconds or an ISO string -> milliseconds (NaN when absent). */
function toMillis(value) {
  if (typeof value === "number") return value * 1000;
  return value ? Date.parse(value) : NaN;
}

function doneText(job) {
  const start = toMillis(job.started_at);
  const end = toMillis(job.finished_at);
  const count = pictureCount(job);
  const pictures = count > 1 ? `: ${count} pictures` : "";
  if (Number.isFinite(start) && Number.isFinite(end) && end >= start) {
    return `Done in ${formatDuration((end - start) / 1000)}${pictures}.`;
  }
  return `Done${pictures}.`;
}

const DOWNLOADS = [
  ["image", "png", "PNG"],
  ["video", "mp4", "MP4 video"],
  ["svg", "svg", "SVG"],
];

/** Download links for every file a job made (`count` pictures), or one picture (`what`) made. */
function downloadLinks(name, links, { count = 1, what = null } = {}) {
  const anchors = [];
  for (const [key, ext, label] of DOWNLOADS) {
    const url = links[key] || links[ext];
    if (!url) continue;
    const text = key === "image" && count > 1 ? `All ${count} (contact sheet)` : label;
    anchors.push(
      h(
        "a",
        {
          class: "button ghost small download",
          href: url,
          download: `text2art-${name}.${ext}`,
          "aria-label": what && `Download ${what} as ${label}`,
        },
        h("span", { "aria-hidden": "true", text: "↓" }),
        ` ${text}`,
      ),
    );
  }
  return anchors;
}

// ---------------------------------------------------------------- start-up

const view = new JobView($("#job"));
const gallery = new Gallery({
  onUse(settings) {
    fillForm(settings);
    form.scrollIntoView({ behavior: "smooth", block: "start" });
    promptBox.focus({ preventScroll: true });
    const note = $("#form-note");
    note.textContent = "Settings loaded. Change anything you like, then create.";
    note.hidden = false;
  },
});

/** A server that cannot make pictures says so before anyone waits for one (its warm-up
 * failed: missing weights, ...); while it warms up, ask again. */
function showReadiness(readiness) {
  if (readiness?.state === "failed") {
    showAlert(`This server cannot make pictures right now: ${readiness.error || "its start-up failed"}`);
  } else if (readiness?.state === "starting" && page.readinessChecks++ < READINESS_CHECKS) {
    setTimeout(async () => {
      try {
        showReadiness((await api.info()).readiness);
      } catch {
        // the page works without it
      }
    }, READINESS_POLL_MS);
  }
}

async function loadInfo() {
  try {
    const info = await api.info();
    page.info = info;
    const limit = info.limits?.max_upload_bytes ?? info.max_upload_bytes ?? info.upload?.max_bytes;
    if (Number.isFinite(limit)) page.uploadLimit = limit;
    for (const input of form.elements.style) {
      const available = !Array.isArray(info.styles) || info.styles.includes(input.value);
      input.disabled = !available;
      input.closest(".choice").title = available ? "" : "Not installed on this server";
    }
    const styles = [...form.elements.style];
    if (styles.find((input) => input.checked)?.disabled) {
      const first = styles.find((input) => !input.disabled);
      if (first) first.checked = true;
    }
    limitVariations(info.limits);
    showPromptHints(info.prompt_hints);
    showReadiness(info.readiness);
    if (info.api_key_required) $("#api-key-field").hidden = false;
    // A server without SMTP says so; then the page does not offer e-mail at all.
    if (info.email_enabled === false) $('[data-field="email"]').hidden = true;
  } catch {
    // the page works with its defaults
  }
  $("#upload-limit").textContent = formatBytes(page.uploadLimit);
  updateHints();
}

function wire() {
  form.addEventListener("submit", submit);
  $("#schedule-example").addEventListener("click", (event) => {
    $("#zoom").value = event.currentTarget.dataset.schedule; // the helper fills in the zoom
    if (!$("#frames").value) $("#frames").value = "60";
    $("#zoom").focus();
  });
  watchEstimate(form, formData, $("#estimate"));
  // One listener for the chips, which /info may replace.
  $(".chips").addEventListener("click", (event) => {
    const chip = event.target.closest(".chip");
    if (chip) toggleKeyword(chip.dataset.keyword);
  });
  promptBox.addEventListener("input", syncChips);
  promptBox.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  $("#quality").addEventListener("change", updateHints);
  for (const input of form.elements.aspect) input.addEventListener("change", updateHints);
  $("#init_image").addEventListener("change", showUpload);
  $("#init-clear").addEventListener("click", clearUpload);
  $("#cancel").addEventListener("click", () => view.cancel());
  $("#again-seed").addEventListener("click", () => {
    againWith(view.job?.settings?.seed, view.job?.settings?.variations);
  });
  $("#new-seed").addEventListener("click", () => {
    $("#seed").value = "";
    form.requestSubmit();
  });
  window.addEventListener("popstate", () => {
    const id = jobFromUrl();
    if (id) view.open(id);
    else view.reset();
  });
  wireDrop();
}

/** Dropping an image anywhere on the upload box chooses it. */
function wireDrop() {
  const drop = $(".upload-drop");
  const input = $("#init_image");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    if (event.dataTransfer?.files?.length) {
      input.files = event.dataTransfer.files;
      showUpload();
    }
  });
}

wire();
syncChips();
loadInfo();
gallery.refresh();
const initialJob = jobFromUrl();
if (initialJob) view.open(initialJob);
else view.render();
document.documentElement.dataset.ready = "true";
