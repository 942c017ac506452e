// Small formatting helpers shared by the page's modules.

/** 10485760 -> "10 MB". */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "";
  const units = ["bytes", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = unit === 0 ? value : Math.round(value * 10) / 10;
  return `${shown} ${units[unit]}`;
}

/** 83 -> "1 min 23 s"; 7 -> "7 s". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const h = Math.floor(m / 60);
  return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
}

/** The wall-clock time `seconds` from now, e.g. "14:05". */
export function clockIn(seconds) {
  const when = new Date(Date.now() + seconds * 1000);
  return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** [640, 360] or "640x360" -> "640 × 360". */
export function formatSize(size) {
  if (Array.isArray(size) && size.length === 2) return `${size[0]} × ${size[1]}`;
  if (typeof size === "string" && size) return size.replace(/x/i, " × ");
  return "";
}

/** An ISO timestamp as a short local date and time. */
export function formatDate(value) {
  if (!value) return "";
  const date = new Date(typeof value === "number" ? value * 1000 : value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

/** Pictures in a job: `settings.variations` (a count) or a list of them; 1 when absent. */
export function variationCount(value) {
  if (Array.isArray(value)) return Math.max(1, value.length);
  const count = Number(value);
  return Number.isInteger(count) && count > 1 ? count : 1;
}

/** The seeds of `count` pictures from `seed`: "42", or "42–45" (`joiner` " to " for alt text). */
export function seedRange(seed, count, joiner = "–") {
  if (seed === undefined || seed === null) return "unknown";
  return count > 1 ? `${seed}${joiner}${Number(seed) + count - 1}` : String(seed);
}

/** ", 4 variations (seeds 42 to 45)" for a batch, "" for one picture: the end of an alt text. */
export function batchText(s) {
  const count = variationCount(s?.variations);
  return count > 1 ? `, ${count} variations (seeds ${seedRange(s.seed, count, " to ")})` : "";
}

/** "pixel art · draft · square · 120 × 120 · 2 variations · 20 iterations" from settings. */
export function settingsSummary(s) {
  if (!s) return "";
  const parts = [s.style, s.quality, s.aspect, formatSize(s.size)];
  if (variationCount(s.variations) > 1) parts.push(`${variationCount(s.variations)} variations`);
  if (s.iterations) parts.push(`${s.iterations} iterations`);
  if (s.scale) parts.push(`scale ${s.scale}`);
  return parts.filter(Boolean).join(" · ");
}

/**
 * Whether pictures of `style` are blocky, to be scaled up without smoothing. The server renders
 * one style card per registered drawer, each input with its `data-pixelated`; a style the page
 * does not offer is smooth.
 */
export function isPixelated(style) {
  const cards = document.querySelectorAll('input[name="style"]');
  return [...cards].some((input) => input.value === style && input.dataset.pixelated === "true");
}

/** Create an element with attributes and children in one call. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child);
  }
  return el;
}
