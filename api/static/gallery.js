// The public gallery: a grid of finished public jobs, paged with "Show more", each opening a dialog.

import { api } from "./api.js";
import { batchText, formatDate, formatSize, h, isPixelated, seedRange, variationCount } from "./format.js";

const $ = (selector) => document.querySelector(selector);
const SETTING_ROWS = [
  ["style", "Type"],
  ["quality", "Quality"],
  ["aspect", "Aspect"],
  ["size", "Size"],
  ["variations", "Variations"],
  ["iterations", "Iterations"],
  ["scale", "Scale"],
  ["seed", "Seed"],
  ["created_at", "Made"],
];

/** A gallery item's settings, whether the server nests them or lists them flat. */
export function itemSettings(item) {
  const settings = { ...item, ...(item.settings || {}) };
  settings.prompts = settings.prompts ?? settings.prompt ?? "";
  // An item lists its pictures (`variations`, empty for one); settings hold their count.
  settings.variations = variationCount(settings.variations);
  return settings;
}

function imageUrl(item) {
  const links = item.links || {};
  return links.image || links.png || item.image_url || item.image || "";
}

function pageItems(body) {
  if (Array.isArray(body)) return { items: body, more: false };
  const items = body?.items || body?.jobs || body?.results || [];
  const total = body?.total;
  const page = body?.page ?? 1;
  const perPage = body?.per_page ?? items.length;
  let more = Boolean(body?.next || body?.links?.next || body?.has_more);
  if (Number.isFinite(total)) more = page * perPage < total;
  else if (Number.isFinite(body?.pages)) more = page < body.pages;
  return { items, more };
}

export class Gallery {
  constructor({ onUse, perPage = 12 }) {
    this.onUse = onUse;
    this.perPage = perPage;
    this.page = 0;
    this.items = new Map();
    this.current = null;
    this.details = Promise.resolve(null); // the full settings of the open item
    this.grid = $("#gallery-grid");
    this.dialog = $("#gallery-dialog");
    $("#gallery-more").addEventListener("click", () => this.load(this.page + 1));
    $("#gallery-refresh").addEventListener("click", () => this.refresh());
    $("#use-settings").addEventListener("click", () => this.use());
    // A click on the backdrop (outside the dialog's box) closes it.
    this.dialog.addEventListener("click", (event) => {
      if (event.target === this.dialog) this.dialog.close();
    });
  }

  /** Reload from the first page (after a public job finished, or on demand). */
  refresh() {
    this.page = 0;
    this.items.clear();
    return this.load(1, true);
  }

  async load(page, replace = false) {
    const status = $("#gallery-status");
    const more = $("#gallery-more");
    more.disabled = true;
    try {
      const { items, more: hasMore } = pageItems(await api.gallery(page, this.perPage));
      const tiles = items.filter((item) => !this.items.has(item.id)).map((item) => this.tile(item));
      if (replace) this.grid.replaceChildren(...tiles);
      else this.grid.append(...tiles);
      this.page = page;
      more.hidden = !hasMore;
      status.textContent = this.items.size ? "" : "Nothing here yet. Publish your first picture!";
    } catch (err) {
      status.textContent = `The gallery could not be loaded: ${err.message}`;
    } finally {
      more.disabled = false;
    }
  }

  tile(item) {
    this.items.set(item.id, item);
    const s = itemSettings(item);
    const count = s.variations;
    // "×4" on a batch's contact sheet; the button's name says it in words.
    const badge =
      count > 1 ? h("span", { class: "tile-count", "aria-hidden": "true", text: `×${count}` }) : null;
    const button = h(
      "button",
      {
        type: "button",
        class: "tile",
        "aria-label": `Open “${s.prompts}”${count > 1 ? `, ${count} variations` : ""}`,
        onclick: () => this.open(item.id),
      },
      badge,
      h("img", {
        src: imageUrl(item),
        alt: s.prompts || "A picture from the gallery",
        loading: "lazy",
        class: isPixelated(s.style) ? "pixelated" : null,
      }),
      h(
        "span",
        { class: "tile-caption" },
        h("span", { class: "tile-prompt", text: s.prompts }),
        h("span", { class: "tile-meta", text: [s.style, s.quality].filter(Boolean).join(" · ") }),
      ),
    );
    return h("li", {}, button);
  }

  open(id) {
    const item = this.items.get(id);
    if (!item) return;
    this.current = item;
    const s = itemSettings(item);
    const image = $("#dialog-image");
    image.src = imageUrl(item);
    image.alt = `${s.prompts || "A picture from the gallery"}${batchText(s)}`;
    image.classList.toggle("pixelated", isPixelated(s.style));
    $("#dialog-title").textContent = s.prompts;
    this.showFacts(s);
    $("#dialog-links").replaceChildren(...this.links(item));
    this.dialog.showModal();
    // The job holds every resolved setting (iterations, scale...): enough to make it again.
    this.details = api
      .job(item.id)
      .then((job) => ({ ...s, ...job.settings, prompts: job.settings?.prompts ?? s.prompts }))
      .catch(() => s);
    this.details.then((full) => {
      if (this.current === item) this.showFacts(full);
    });
  }

  showFacts(settings) {
    // A batch shows its count and the seeds of its pictures ("42–45"); one picture neither.
    const count = variationCount(settings.variations);
    const s = { ...settings, variations: count > 1 ? count : null };
    if (count > 1 && s.seed !== undefined && s.seed !== null) s.seed = seedRange(s.seed, count);
    const rows = SETTING_ROWS.filter(([key]) => s[key] !== undefined && s[key] !== null).map(
      ([key, label]) => h("div", {}, h("dt", { text: label }), h("dd", { text: show(key, s[key]) })),
    );
    $("#dialog-facts").replaceChildren(...rows);
  }

  links(item) {
    const links = item.links || {};
    const pictures = item.variations || [];
    const out = [];
    const add = (url, label, download) =>
      url && out.push(h("a", { class: "button ghost small", href: url, download }, label));
    const sheet = pictures.length ? `↓ All ${pictures.length} (contact sheet)` : "↓ PNG";
    add(imageUrl(item), sheet, `text2art-${item.id}.png`);
    // Each picture of a batch on its own, named by its seed.
    for (const p of pictures) {
      add(p.image, `↓ PNG, seed ${p.seed}`, `text2art-${item.id}-${p.index}.png`);
      add(p.svg, `↓ SVG, seed ${p.seed}`, `text2art-${item.id}-${p.index}.svg`);
    }
    add(links.video || links.mp4, "↓ MP4 video", `text2art-${item.id}.mp4`);
    add(links.svg, "↓ SVG", `text2art-${item.id}.svg`);
    add(`?job=${encodeURIComponent(item.id)}`, "Open job");
    return out;
  }

  async use() {
    if (!this.current) return;
    const settings = await this.details;
    this.dialog.close();
    this.onUse(settings);
  }
}

function show(key, value) {
  if (key === "size") return formatSize(value);
  if (key === "created_at") return formatDate(value);
  return String(value);
}
