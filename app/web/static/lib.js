// Shared by every page (an ES module: app.js and policy.js import it, nothing goes through window).
// The JSON API with the session cookie and the X-CSRFToken header, the message area, the confirm
// dialog, and Alpine started once every page module has registered its components. The server
// (Casbin) decides every permission: the pages only show what the API says is offered.
import Alpine from "./vendor/alpine-csp-3.17.4.esm.min.js";

export { Alpine };

let csrfToken = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
export const setCsrf = (token) => (csrfToken = token);

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function refreshCsrf() {
  const resp = await fetch("/api/auth/csrf", { credentials: "same-origin" });
  csrfToken = (await resp.json()).csrf_token;
}

export async function api(method, url, payload, retried = false) {
  const opts = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") opts.headers["X-CSRFToken"] = csrfToken;
  if (payload !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(payload);
  }
  const resp = await fetch(url, opts);
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (resp.ok) return data;
  const problem =
    data && typeof data === "object" ? data : { title: resp.statusText || "Error", status: resp.status, detail: text.slice(0, 200) };
  if (resp.status === 400 && !retried && String(problem.type || "").endsWith("/csrf-failed")) {
    await refreshCsrf(); // e.g. the session changed in another tab
    return api(method, url, payload, true);
  }
  if (resp.status === 401 && method === "GET") {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  throw new ApiError(resp.status, problem);
}

// -- messages (rendered by base.html from the "msg" store) --------------------------------------
// Refusals in words: one sentence per reason or invariant code, from app/web/words.py (base.html
// puts them in #reason-words); the code stays in data-reason for tools. No HTTP titles in the UI.
const REASONS = JSON.parse((document.getElementById("reason-words") || {}).textContent || "{}");

// A service's lowercase detail as a sentence: capital first letter, a full stop, "(capacity N)"
// as places.
export function asSentence(text) {
  let t = String(text || "").trim();
  if (!t) return "";
  t = t.replace(/\(capacity (\d+)\)/, (_, n) => `(${n} ${n === "1" ? "place" : "places"})`);
  t = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(t) ? t : `${t}.`;
}

// What a status means when the problem carries nothing better.
const STATUS_WORDS = {
  400: "The request could not be read. Reload the page and try again.",
  401: "Sign in again to continue.",
  403: REASONS.not_permitted || "You may not do this.",
  404: "This no longer exists, or you may not see it.",
  409: "This clashes with the current state. Reload the page and try again.",
  410: "This link is no longer valid.",
  413: "Too many at once: send fewer.",
  422: "Some of what you entered needs fixing.",
  429: "Too many attempts. Wait a moment and try again.",
  503: "The service is busy just now. Try again in a moment.",
};

export function problemWords(err) {
  if (!(err instanceof ApiError)) return `Something went wrong: ${err.message || err}`;
  const p = err.problem;
  const code = p.reason || p.invariant;
  const generic = p.detail === p.title || /^the request does not match its schema$/.test(p.detail || "");
  const words = (code && REASONS[code]) || (!generic && p.detail ? asSentence(p.detail) : STATUS_WORDS[err.status] || "Something went wrong.");
  return p.email ? `${p.email}: ${words}` : words;
}

// One problem entry (errors[]) in words: which field, and what is wrong with it.
function fieldOf(e) {
  if (e.field) return String(e.field);
  if (Array.isArray(e.loc) && e.loc.length) return String(e.loc[e.loc.length - 1]);
  return "";
}

// msgspec's schema messages, said plainly.
const SCHEMA_WORDS = [
  [/length >= 1\b/, () => "Fill this in."],
  [/length <= (\d+)/, (m) => `Use at most ${m[1]} characters.`],
  [/length >= (\d+)/, (m) => `Use at least ${m[1]} characters.`],
  [/match pattern/, () => "This is not in the expected form."],
  [/Expected `int`/, () => "Enter a whole number."],
  [/Expected `bool`/, () => "Choose yes or no."],
  [/Expected `str`/, () => "Enter text here."],
];

export function fieldWords(e) {
  if (e.type === "missing" || e.message === "required") return "Fill this in.";
  for (const [re, say] of SCHEMA_WORDS) {
    const m = re.exec(e.message || "");
    if (m) return say(m);
  }
  if (e.email && e.message) return `${e.email}: ${asSentence(e.message)}`;
  if (e.message && !/^(Object|Expected) /.test(e.message)) {
    // "one of [...]" → "Choose one of [...]", "1-64 letters, ..." → "Use 1-64 letters, ..."
    const m = /^one of /.test(e.message) ? `choose ${e.message}` : /^\d+-\d+ /.test(e.message) ? `use ${e.message}` : e.message;
    return asSentence(m);
  }
  if (e.value !== undefined) return `“${String(e.value).slice(0, 60)}” is not valid here.`;
  return "Check this value.";
}

// The form the person last submitted: field errors go next to its controls.
let lastForm = null;
document.addEventListener("submit", (ev) => (lastForm = ev.target), true);
document.addEventListener("click", (ev) => ev.target.closest && !ev.target.closest("form, dialog") && (lastForm = null), true);

function clearFieldErrors() {
  for (const el of document.querySelectorAll(".field-error")) el.remove();
  for (const el of document.querySelectorAll("[aria-invalid='true']")) {
    el.removeAttribute("aria-invalid");
    const ids = (el.getAttribute("aria-describedby") || "").split(" ").filter((id) => id && !id.startsWith("err-"));
    if (ids.length) el.setAttribute("aria-describedby", ids.join(" "));
    else el.removeAttribute("aria-describedby");
  }
}

// Puts each error beside its control (aria-invalid, aria-describedby); returns the ones it could not place.
export function showFieldErrors(errors, form = lastForm) {
  const left = [];
  for (const e of errors) {
    const name = fieldOf(e);
    const control = form && name ? form.querySelector(`[name="${CSS.escape(name)}"]`) : null;
    if (!control) {
      left.push(fieldWords(e));
      continue;
    }
    const id = `err-${name}-${Math.random().toString(36).slice(2, 8)}`;
    const note = document.createElement("span");
    note.className = "field-error";
    note.id = id;
    note.textContent = fieldWords(e);
    (control.closest("label") || control).after(note);
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-describedby", [control.getAttribute("aria-describedby"), id].filter(Boolean).join(" "));
  }
  if (left.length < errors.length) {
    const first = form.querySelector("[aria-invalid='true']");
    if (first) first.focus();
  }
  return left;
}

Alpine.store("msg", {
  shown: false,
  kind: "ok",
  text: "",
  problem: null,
  dismiss() {
    Object.assign(this, { shown: false, text: "", problem: null });
  },
});
const msg = () => Alpine.store("msg");

export function clearMessages() {
  Object.assign(msg(), { shown: false, text: "", problem: null });
  clearFieldErrors();
}

// Messages stay until dismissed or until the next action replaces them.
export function say(text, kind = "ok") {
  Object.assign(msg(), { shown: true, kind, text, problem: null });
}

// A message that survives the reload that follows it (shown once on the next page).
export function sayAfterReload(text, kind = "ok") {
  sessionStorage.setItem("learnauthz.msg", JSON.stringify({ text, kind }));
  location.reload();
}

export function showError(err, form = lastForm) {
  clearFieldErrors();
  if (!(err instanceof ApiError)) {
    say(`Something went wrong: ${err.message || err}`, "error");
    return;
  }
  const p = err.problem;
  const code = p.reason || p.invariant || "";
  const entries = (Array.isArray(p.errors) ? p.errors : []).slice(0, 20);
  const errors = showFieldErrors(entries, form);
  const placed = entries.length - errors.length;
  const detail = placed && !code ? (placed === 1 ? "Check the field marked below." : `Check the ${placed} fields marked below.`) : problemWords(err);
  Object.assign(msg(), { shown: true, kind: "error", text: "", problem: { status: String(err.status), reason: code, detail, errors } });
}

export async function guarded(fn) {
  try {
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

// A timestamp in the reader's own time zone and words, to the minute ("6 Dec 2026, 17:42").
const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export const fmtTime = (iso) => {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : timeFormat.format(d);
};
export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// -- the confirmation dialog of base.html (never the browser's confirm()) -------------------------
// Resolves true only on the confirm button (and, if asked, after typing the given word).
Alpine.store("confirm", {
  title: "",
  text: "",
  ok: "",
  danger: false,
  typed: "",
  input: "",
  blocked() {
    return Boolean(this.typed) && this.input.trim() !== this.typed;
  },
});

export async function confirmDialog({ title, text, ok, danger = false, typed = "" }) {
  Object.assign(Alpine.store("confirm"), { title, text, ok, danger, typed, input: "" });
  await Alpine.nextTick();
  const dlg = document.getElementById("confirm-dialog");
  dlg.returnValue = "";
  dlg.showModal();
  document.getElementById(typed ? "confirm-typed" : "confirm-cancel").focus(); // Enter on open cancels
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok" && !Alpine.store("confirm").blocked()), { once: true });
  });
}

// -- start ------------------------------------------------------------------------------------------
// A page component passes its first load to loading(); body[data-ready] is set once all have settled
// (the browser tests wait for it).
const loads = [];
export function loading(promise) {
  loads.push(promise);
  return promise;
}

// Header: sign out.
Alpine.data("signout", () => ({
  run() {
    guarded(async () => {
      await api("POST", "/api/auth/signout");
      location.assign("/login");
    });
  },
}));

// Module scripts run before DOMContentLoaded: every page module has registered its components by then.
document.addEventListener("DOMContentLoaded", () => {
  Alpine.start();
  const kept = sessionStorage.getItem("learnauthz.msg");
  if (kept) {
    sessionStorage.removeItem("learnauthz.msg");
    const { text, kind } = JSON.parse(kept);
    say(text, kind);
  }
  setTimeout(() => Promise.allSettled(loads).then(() => document.body.setAttribute("data-ready", "1")), 0);
});
