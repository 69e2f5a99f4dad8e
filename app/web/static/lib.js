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
// Refusals in words, one message per reason code (the code stays in data-reason for tools).
const REASONS = {
  rank_limit: "Your role does not rank above theirs, or the role is above what you may grant.",
  self_change: "Nobody changes their own role or removes themselves this way.",
  unknown_member: "This person is not a member of the workspace.",
  not_permitted: "Your role does not include this.",
  no_role: "You have no role in this workspace.",
  denied_by_policy: "The workspace's policy forbids this.",
  outside_group: "This person is not in a group you teach.",
  outside_team: "This person is not in a team you manage.",
  not_assignee: "This is assigned to someone else.",
  not_owner: "This belongs to someone else.",
  feature_off: "This feature is switched off for the workspace.",
  unknown_workspace: "There is no such workspace.",
  last_owner: "A workspace keeps at least one owner: make someone else owner first.",
  self_owner: "You cannot remove yourself as owner: transfer ownership first.",
};

export function problemWords(err) {
  if (!(err instanceof ApiError)) return `Something went wrong: ${err.message || err}`;
  const p = err.problem;
  const code = p.reason || p.invariant;
  const words = (code && REASONS[code]) || (p.detail && p.detail !== p.title ? p.detail : "") || p.title || `HTTP ${err.status}`;
  return p.email ? `${p.email}: ${words}` : words;
}

Alpine.store("msg", { shown: false, kind: "ok", text: "", problem: null });
const msg = () => Alpine.store("msg");

export function clearMessages() {
  Object.assign(msg(), { shown: false, text: "", problem: null });
}

export function say(text, kind = "ok") {
  Object.assign(msg(), { shown: true, kind, text, problem: null });
}

export function showError(err) {
  if (!(err instanceof ApiError)) {
    say(`Something went wrong: ${err.message || err}`, "error");
    return;
  }
  const p = err.problem;
  const code = p.reason || p.invariant || "";
  const errors = (Array.isArray(p.errors) ? p.errors : []).slice(0, 20).map((e) => {
    const where = e.field || e.email || (Array.isArray(e.loc) ? e.loc.join(".") : "");
    return [where, e.message || e.value || ""].filter(Boolean).join(": ");
  });
  const detail = code && REASONS[code] ? problemWords(err) : p.detail && p.detail !== p.title ? p.detail : "";
  Object.assign(msg(), { shown: true, kind: "error", text: "", problem: { status: String(err.status), reason: code, title: p.title || `HTTP ${err.status}`, detail, errors } });
}

export async function guarded(fn) {
  try {
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

export const fmtTime = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$/, " UTC") : "");
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
  setTimeout(() => Promise.allSettled(loads).then(() => document.body.setAttribute("data-ready", "1")), 0);
});
