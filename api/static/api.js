// Talking to the text2art service: JSON requests, readable errors, Retry-After.

/** An HTTP error with what the page needs to show it: field errors, retry delay. */
export class ApiError extends Error {
  constructor(status, message, { fields = {}, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.fields = fields; // {field name: message} for 422 answers
    this.retryAfter = retryAfter; // seconds, for 503 and 429 answers
  }
}

/** Seconds to wait from a Retry-After header (delta-seconds or an HTTP date). */
export function parseRetryAfter(value, now = Date.now()) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - now) / 1000));
}

/** {field: message} from FastAPI's 422 shape: {"detail": [{"loc": ["body", field], "msg"}]}. */
export function fieldErrors(body) {
  const fields = {};
  const detail = body && body.detail;
  if (Array.isArray(detail)) {
    for (const item of detail) {
      const loc = Array.isArray(item.loc) ? item.loc.filter((p) => typeof p === "string") : [];
      const name = loc.length ? loc[loc.length - 1] : "form";
      const msg = String(item.msg || "is not valid").replace(/^Value error, /, "");
      fields[name] = fields[name] ? `${fields[name]}; ${msg}` : msg;
    }
  } else if (body && body.field) {
    fields[body.field] = String(body.message || body.msg || body.detail || "is not valid");
  }
  return fields;
}

/** The message a person reads for an error answer. */
function errorMessage(status, body) {
  const detail = body && typeof body.detail === "string" ? body.detail : "";
  if (status === 503) return "The queue is full right now.";
  if (status === 429) return "You are sending requests too quickly.";
  if (status === 401) return "This service needs an API key.";
  if (status === 404) return detail || "Not found.";
  if (status === 413) return "The upload is too large.";
  if (detail) return detail;
  return `The server answered ${status}.`;
}

async function readBody(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json().catch(() => null);
  const text = await response.text().catch(() => "");
  return text ? { detail: text.slice(0, 300) } : null;
}

/** Send `Authorization: Bearer KEY` from now on (servers with T2A_API_KEYS); "" stops it. */
export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem("text2art:api-key", key);
    else sessionStorage.removeItem("text2art:api-key");
  } catch {
    // storage is off: the key is sent with this request only
  }
  currentKey = key;
}

let currentKey = null;

function apiKey() {
  if (currentKey === null) {
    try {
      currentKey = sessionStorage.getItem("text2art:api-key") || "";
    } catch {
      currentKey = "";
    }
  }
  return currentKey;
}

/** fetch() that resolves to the JSON body, or throws an ApiError. */
export async function request(url, options = {}) {
  const headers = { Accept: "application/json" };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  let response;
  try {
    response = await fetch(url, { ...options, headers: { ...headers, ...options.headers } });
  } catch {
    throw new ApiError(0, "Cannot reach the server. Check your connection and try again.");
  }
  const body = await readBody(response);
  if (response.ok) return body;
  const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
  throw new ApiError(response.status, errorMessage(response.status, body), {
    fields: response.status === 422 ? fieldErrors(body) : {},
    retryAfter,
  });
}

export const api = {
  info: () => request("/info"),
  submit: (formData) => request("/jobs", { method: "POST", body: formData }),
  estimate: (formData) => request("/estimate", { method: "POST", body: formData }),
  job: (id) => request(`/jobs/${encodeURIComponent(id)}`),
  cancel: (id, token) =>
    request(`/jobs/${encodeURIComponent(id)}/cancel`, {
      method: "POST",
      headers: { "X-Delete-Token": token || "" },
    }),
  gallery: (page, perPage) => request(`/gallery?page=${page}&per_page=${perPage}`),
  eventsUrl: (id) => `/jobs/${encodeURIComponent(id)}/events`,
  previewUrl: (id) => `/jobs/${encodeURIComponent(id)}/preview.png`,
};
