// learnauthz web UI: the pages are shells; everything here goes through the JSON API with the
// session cookie and the X-CSRFToken header. The server (Casbin) decides every permission: this
// file only hides controls the server says are not offered and shows the problem the API returns.
"use strict";

(() => {
  const body = document.body;
  const page = body.dataset.page || "";
  const slug = body.dataset.slug || "";
  const caps = body.dataset.caps ? JSON.parse(body.dataset.caps) : {};
  const myId = Number(body.dataset.userId || 0);
  const wsApi = slug ? `/api/workspaces/${encodeURIComponent(slug)}` : "";
  let csrfToken = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // -- DOM helpers (textContent only: names and emails are user input) -------------------------
  const $ = (sel, root = document) => root.querySelector(sel);
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k in node && typeof v !== "string") node[k] = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) {
      if (c !== null && c !== undefined) node.append(c);
    }
    return node;
  }

  // -- API ----------------------------------------------------------------------------------------
  class ApiError extends Error {
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

  async function api(method, url, payload, retried = false) {
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
      data && typeof data === "object"
        ? data
        : { title: resp.statusText || "Error", status: resp.status, detail: text.slice(0, 200) };
    if (resp.status === 400 && !retried && String(problem.type || "").endsWith("/csrf-failed")) {
      await refreshCsrf(); // e.g. the session changed in another tab
      return api(method, url, payload, true);
    }
    if (resp.status === 401 && method === "GET") {
      location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    }
    throw new ApiError(resp.status, problem);
  }

  // -- messages -----------------------------------------------------------------------------------
  const box = $("#messages");
  function clearMessages() {
    box.replaceChildren();
    box.hidden = true;
  }
  function say(text, kind = "ok") {
    box.replaceChildren(el("div", { class: `msg ${kind}`, text }));
    box.hidden = false;
  }
  function showError(err) {
    if (!(err instanceof ApiError)) {
      say(`Something went wrong: ${err.message || err}`, "error");
      return;
    }
    const p = err.problem;
    const msg = el(
      "div",
      { class: "msg error problem", "data-status": String(err.status) },
      el("strong", { class: "problem-title", text: p.title || `HTTP ${err.status}` }),
      " ",
      el("span", { class: "problem-detail", text: p.detail && p.detail !== p.title ? p.detail : "" }),
    );
    if (p.reason) msg.append(" ", el("code", { class: "reason", text: p.reason }));
    if (Array.isArray(p.errors) && p.errors.length) {
      const list = el("ul");
      for (const e of p.errors.slice(0, 20)) {
        const where = e.field || e.email || (Array.isArray(e.loc) ? e.loc.join(".") : "");
        const what = e.message || e.value || "";
        list.append(el("li", { text: [where, what].filter(Boolean).join(": ") }));
      }
      msg.append(list);
    }
    box.replaceChildren(msg);
    box.hidden = false;
  }
  async function guarded(fn) {
    try {
      return await fn();
    } catch (err) {
      showError(err);
      return undefined;
    }
  }
  function busy(form, on) {
    for (const b of form.querySelectorAll("button, input, select, textarea")) b.disabled = on;
  }
  const fmtTime = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$/, " UTC") : "");

  // -- header -------------------------------------------------------------------------------------
  const signout = $("#signout");
  if (signout) {
    signout.addEventListener("click", () =>
      guarded(async () => {
        await api("POST", "/api/auth/signout");
        location.assign("/login");
      }),
    );
  }

  // -- /login ---------------------------------------------------------------------------------------
  // The server already refuses unsafe ?next= values; this is the second lock on the same door.
  function sameOrigin(next) {
    if (!next || /[\u0000-\u0020\u007f-\u009f\\]/.test(next) || !next.startsWith("/") || next.startsWith("//")) return "/";
    const url = new URL(next, location.origin);
    return url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
  }

  function initLogin() {
    const form = $("#login-form");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearMessages();
      busy(form, true);
      guarded(async () => {
        const me = await api("POST", "/api/auth/signin", { email: form.email.value.trim(), password: form.password.value });
        csrfToken = me.csrf_token; // rotated at sign-in
        location.assign(sameOrigin(form.dataset.next));
      }).finally(() => busy(form, false));
    });
  }

  function initSignup() {
    const form = $("#signup-form");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearMessages();
      const data = { token: form.token.value, password: form.password.value };
      if (form.display_name.value.trim()) data.display_name = form.display_name.value.trim();
      guarded(async () => {
        const res = await api("POST", "/api/auth/signup", data);
        location.assign(res.workspace ? `/w/${encodeURIComponent(res.workspace.slug)}/members` : "/");
      });
    });
  }

  // -- / ------------------------------------------------------------------------------------------
  async function initHome() {
    const tbody = $("#workspaces tbody");
    const res = await guarded(() => api("GET", "/api/workspaces"));
    if (!res) return;
    tbody.replaceChildren();
    if (!res.items.length) tbody.append(el("tr", {}, el("td", { colspan: "4", class: "muted", text: "No workspaces yet." })));
    for (const w of res.items) {
      tbody.append(
        el(
          "tr",
          { "data-slug": w.slug },
          el("td", {}, el("a", { href: `/w/${encodeURIComponent(w.slug)}/members`, text: w.name }), " ", el("small", { class: "muted", text: w.slug })),
          el("td", { text: w.pack }),
          el("td", {}, el("span", { class: "badge", text: w.role })),
          el("td", { class: `status ${w.status}`, text: w.status }),
        ),
      );
    }
  }

  // -- /me ----------------------------------------------------------------------------------------
  async function initMe() {
    const form = $("#profile-form");
    let current = await guarded(() => api("GET", "/api/auth/me"));
    if (!current) return;
    const fill = (p) => {
      form.display_name.value = p.display_name || "";
      form.username.value = p.username || "";
      form.email.value = p.email || "";
      form.password.value = "";
      form.current_password.value = "";
    };
    fill(current);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearMessages();
      const data = {};
      const name = form.display_name.value.trim();
      const uname = form.username.value.trim();
      const email = form.email.value.trim();
      if (name !== (current.display_name || "")) data.display_name = name;
      if (uname !== (current.username || "")) data.username = uname || null;
      if (email.toLowerCase() !== (current.email || "").toLowerCase()) data.email = email;
      if (form.password.value) data.password = form.password.value;
      if (data.email !== undefined || data.password !== undefined) data.current_password = form.current_password.value;
      if (!Object.keys(data).length) {
        say("Nothing to change.", "info");
        return;
      }
      busy(form, true);
      guarded(async () => {
        current = await api("PATCH", "/api/auth/me", data);
        fill(current);
        showPending(current);
        const link = $("#me-link");
        if (link) link.textContent = current.display_name || current.email;
        say(
          data.email !== undefined
            ? `Profile saved. To use ${data.email}, follow the link we sent there; until then your email stays ${current.email}.`
            : "Profile saved.",
        );
        if (data.password !== undefined) loadSessions();
      }).finally(() => busy(form, false));
    });

    function showPending(p) {
      const note = $("#pending-email");
      note.textContent = p.pending_email ? `Waiting for confirmation from ${p.pending_email}.` : "";
      note.hidden = !p.pending_email;
    }
    showPending(current);

    const tbody = $("#sessions tbody");
    async function loadSessions() {
      const res = await guarded(() => api("GET", "/api/auth/sessions"));
      if (!res) return;
      tbody.replaceChildren(
        ...res.items.map((s) =>
          el(
            "tr",
            { "data-current": s.current ? "1" : "0" },
            el("td", { text: fmtTime(s.created_at) + (s.current ? " (this one)" : "") }),
            el("td", { text: fmtTime(s.last_seen_at) }),
            el("td", { text: s.ip }),
            el("td", { text: s.user_agent.slice(0, 80) }),
          ),
        ),
      );
    }
    await loadSessions();
    $("#signout-others").addEventListener("click", () =>
      guarded(async () => {
        const res = await api("POST", "/api/auth/sessions/signout-others");
        say(`Signed out ${res.ended} other session(s).`);
        await loadSessions();
      }),
    );
  }

  function initVerifyEmail() {
    const form = $("#verify-email-form");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearMessages();
      busy(form, true);
      guarded(async () => {
        const res = await api("POST", "/api/auth/verify-email", { token: form.token.value });
        say(`Your email address is now ${res.email}. Every other session was signed out.`);
        form.hidden = true;
      }).finally(() => busy(form, false));
    });
  }

  // -- workspace roles (labels) ---------------------------------------------------------------------
  let roleLabels = {};
  async function loadRoleLabels() {
    const ws = await api("GET", wsApi).catch(() => null);
    if (ws) roleLabels = Object.fromEntries(ws.roles.map((r) => [r.id, r.label || r.id]));
  }
  const roleLabel = (id) => roleLabels[id] || id;
  function roleOptions(select, roles, current) {
    select.replaceChildren();
    if (current && !roles.includes(current)) select.append(el("option", { value: current, text: roleLabel(current), disabled: true }));
    for (const r of roles) select.append(el("option", { value: r, text: roleLabel(r) }));
    if (current) select.value = current;
  }

  // -- /w/<slug>/members ----------------------------------------------------------------------------
  async function initMembers() {
    const tbody = $("#members tbody");
    // Search and page live in the address (?q=&page=&per_page=), so a view can be bookmarked.
    const url = new URLSearchParams(location.search);
    const int = (v, d, lo, hi) => (/^\d+$/.test(v || "") && +v >= lo && +v <= hi ? +v : d);
    const state = {
      q: (url.get("q") || "").slice(0, 100),
      page: int(url.get("page"), 1, 1, 1e6),
      perPage: int(url.get("per_page"), 20, 1, 200),
      total: 0,
      selected: new Map(),
    };
    $("#search").value = state.q;
    const bulk = $("#bulk-remove");
    const selectAll = $("#select-all");
    const info = $("#page-info");
    const prev = $("#prev-page");
    const next = $("#next-page");
    const cols = caps.remove ? 6 : 5;

    function updateBulk() {
      if (!bulk) return;
      bulk.textContent = `Remove (${state.selected.size})`;
      bulk.disabled = state.selected.size === 0;
    }

    async function roleCell(m) {
      const cell = el("td", { class: "role" }, el("span", { class: "badge", text: roleLabel(m.role) }));
      if (!caps.change_role) return cell;
      // The roles this actor may grant to this member, as Casbin computes them.
      const res = await api("GET", `${wsApi}/assignable-roles?member=${m.user_id}`).catch(() => null);
      if (!res || !res.roles.length) return cell;
      const select = el("select", { class: "role-select", "aria-label": `Role of ${m.email}`, "data-user-id": String(m.user_id) });
      roleOptions(select, res.roles, m.role);
      select.addEventListener("change", () => {
        const role = select.value;
        clearMessages();
        select.disabled = true;
        guarded(async () => {
          const updated = await api("PATCH", `${wsApi}/members/${m.user_id}`, { role });
          m.role = updated.role;
          say(`${m.email} is now ${roleLabel(updated.role)}.`);
        }).finally(() => {
          select.value = m.role; // back to the stored role if the server refused
          select.disabled = false;
        });
      });
      cell.replaceChildren(select);
      return cell;
    }

    function removeOne(m) {
      if (!confirm(`Remove ${m.email} from this workspace?`)) return;
      clearMessages();
      guarded(async () => {
        await api("DELETE", `${wsApi}/members/${m.user_id}`);
        await load();
        say(`Removed ${m.email}.`);
      });
    }

    async function load() {
      const params = new URLSearchParams({ page: String(state.page), per_page: String(state.perPage) });
      if (state.q) params.set("q", state.q);
      history.replaceState(null, "", `${location.pathname}?${params}`);
      let res;
      try {
        res = await api("GET", `${wsApi}/members?${params}`);
      } catch (err) {
        tbody.replaceChildren(el("tr", {}, el("td", { colspan: String(cols), class: "muted", text: "Members are not available to you." })));
        for (const b of [prev, next, bulk, selectAll]) if (b) b.disabled = true;
        throw err;
      }
      if (!res.items.length && state.page > 1 && res.total > 0) {
        state.page = Math.ceil(res.total / state.perPage); // the last page emptied (e.g. after a removal)
        return load();
      }
      state.total = res.total;
      state.selected.clear();
      if (selectAll) selectAll.checked = false;
      const rows = await Promise.all(
        res.items.map(async (m) => {
          const tr = el("tr", { "data-user-id": String(m.user_id), "data-email": m.email });
          if (caps.remove) {
            const box = el("input", { type: "checkbox", class: "pick", "aria-label": `Select ${m.email}` });
            box.addEventListener("change", () => {
              if (box.checked) state.selected.set(m.user_id, m.email);
              else state.selected.delete(m.user_id);
              updateBulk();
            });
            tr.append(el("td", { class: "check" }, box));
          }
          tr.append(
            el("td", { class: "email" }, m.email, m.user_id === myId ? el("small", { class: "muted", text: " (you)" }) : null),
            el("td", { text: m.display_name || "" }),
            await roleCell(m),
            el("td", { class: `status ${m.status}`, text: m.status }),
          );
          const actions = el("td", { class: "actions" });
          if (caps.remove) actions.append(el("button", { type: "button", class: "remove danger small", text: "Remove", onclick: () => removeOne(m) }));
          tr.append(actions);
          return tr;
        }),
      );
      tbody.replaceChildren(...rows);
      if (!rows.length) tbody.append(el("tr", {}, el("td", { colspan: String(cols), class: "muted", text: "No members match." })));
      const first = res.total ? (res.page - 1) * res.per_page + 1 : 0;
      const last = Math.min(res.page * res.per_page, res.total);
      info.textContent = `${first}–${last} of ${res.total}`;
      prev.disabled = res.page <= 1;
      next.disabled = last >= res.total;
      updateBulk();
    }

    $("#search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearMessages();
      state.q = $("#search").value.trim();
      state.page = 1;
      guarded(load);
    });
    prev.addEventListener("click", () => {
      state.page = Math.max(1, state.page - 1);
      guarded(load);
    });
    next.addEventListener("click", () => {
      state.page += 1;
      guarded(load);
    });
    if (selectAll) {
      selectAll.addEventListener("change", () => {
        for (const box of tbody.querySelectorAll("input.pick")) {
          if (box.checked !== selectAll.checked) {
            box.checked = selectAll.checked;
            box.dispatchEvent(new Event("change"));
          }
        }
      });
    }
    if (bulk) {
      bulk.addEventListener("click", () => {
        const ids = [...state.selected.keys()];
        if (!ids.length || !confirm(`Remove ${ids.length} member(s) from this workspace?`)) return;
        clearMessages();
        guarded(async () => {
          const res = await api("POST", `${wsApi}/members/remove`, { user_ids: ids });
          await load();
          say(`Removed ${res.removed.length} member(s).`);
        });
      });
    }

    // Invitations: offered only when Casbin lets this actor grant at least one role.
    const inviteCard = $("#invite-card");
    if (inviteCard) {
      const form = $("#invite-form");
      const res = await api("GET", `${wsApi}/assignable-roles`).catch(() => null);
      if (res && res.roles.length) {
        roleOptions(form.role, res.roles, res.roles[0]);
        inviteCard.hidden = false;
      }
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        clearMessages();
        busy(form, true);
        guarded(async () => {
          const out = await api("POST", `${wsApi}/invitations`, { emails: form.emails.value, role: form.role.value });
          form.emails.value = "";
          await load();
          const parts = [];
          // The same answer for every address (whether it has an account is not the inviter's to know).
          if (out.invited.length) parts.push(`Invited: ${out.invited.map((a) => a.email).join(", ")}.`);
          say(parts.join(" ") || "Nobody to invite.");
        }).finally(() => busy(form, false));
      });
    }

    await guarded(async () => {
      await loadRoleLabels();
      await load();
    });
  }

  // -- /w/<slug>/groups | teams -----------------------------------------------------------------------
  async function initUnits() {
    const kind = body.dataset.kind; // "group" | "team"
    const kinds = `${kind}s`;
    const rel = kind === "group" ? { manager: "teachers", member: "learners" } : { manager: "managers", member: "members" };
    const label = kind === "group" ? { teachers: "Teachers", learners: "Learners" } : { managers: "Managers", members: "Members" };
    const root = $("#units");
    // People to pick from: the member list if this actor may see it, else a user id field.
    let people = null;
    if (caps.view_members) {
      const res = await api("GET", `${wsApi}/members?per_page=200`).catch(() => null);
      if (res) people = res.items;
    }

    function personPicker() {
      if (!people) return el("input", { type: "number", name: "user_id", min: "1", placeholder: "user id", required: true, "aria-label": "User id" });
      const select = el("select", { name: "user_id", "aria-label": "Person" });
      for (const p of people) select.append(el("option", { value: String(p.user_id), text: p.email }));
      return select;
    }

    function unitCard(u) {
      const base = `${wsApi}/${kinds}/${encodeURIComponent(u.name)}`;
      const meta = [u.description, u.capacity ? `capacity ${u.capacity}` : "", u.archived ? "archived" : ""].filter(Boolean).join(" · ");
      const card = el("article", { class: "unit", "data-name": u.name }, el("h2", { text: u.name }), meta ? el("p", { class: "muted", text: meta }) : null);
      for (const r of [rel.manager, rel.member]) {
        const list = el("ul", { class: `people ${r}` });
        for (const p of u[r] || []) {
          const drop = el("button", {
            type: "button",
            class: "link danger",
            text: "remove",
            "aria-label": `Remove ${p.email} from ${u.name}`,
            onclick: () =>
              guarded(async () => {
                clearMessages();
                await api("DELETE", `${base}/${r}/${p.user_id}`);
                await load();
                say(`${p.email} left ${u.name}.`);
              }),
          });
          list.append(el("li", { "data-user-id": String(p.user_id) }, p.email, " ", drop));
        }
        if (!list.children.length) list.append(el("li", { class: "muted", text: "nobody" }));
        card.append(el("h3", { text: label[r] }), list);
      }
      const which = el("select", { name: "relation", "aria-label": "As" });
      which.append(el("option", { value: rel.member, text: `as ${label[rel.member].toLowerCase().replace(/s$/, "")}` }));
      which.append(el("option", { value: rel.manager, text: `as ${label[rel.manager].toLowerCase().replace(/s$/, "")}` }));
      const form = el("form", { class: "row add-person" }, personPicker(), which, el("button", { type: "submit", text: "Add" }));
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        clearMessages();
        const uid = Number(form.user_id.value);
        guarded(async () => {
          await api("POST", `${base}/${which.value}`, { user_ids: [uid] });
          await load();
          say(`Added to ${u.name}.`);
        });
      });
      card.append(form);
      return card;
    }

    async function load() {
      const res = await api("GET", `${wsApi}/${kinds}`);
      root.replaceChildren(...res.items.map(unitCard));
      if (!res.items.length) root.append(el("p", { class: "muted", text: `No ${kinds} yet.` }));
      return true;
    }

    const form = $("#unit-form");
    if (form) {
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        clearMessages();
        const data = { name: form.name.value.trim() };
        if (form.description.value.trim()) data.description = form.description.value.trim();
        if (form.capacity.value) data.capacity = Number(form.capacity.value);
        guarded(async () => {
          await api("POST", `${wsApi}/${kinds}`, data);
          form.reset();
          await load();
          say(`Created ${data.name}.`);
        });
      });
    }
    if (!(await guarded(load))) root.replaceChildren(el("p", { class: "muted", text: `No ${kinds} to show.` }));
  }

  // -- /w/<slug>/audit ----------------------------------------------------------------------------------
  async function initAudit() {
    const tbody = $("#audit tbody");
    const more = $("#audit-more");
    let before = null;
    const show = (v) => (v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
    async function load() {
      const params = new URLSearchParams({ limit: "50" });
      if (before) params.set("before", String(before));
      const res = await api("GET", `${wsApi}/audit?${params}`);
      for (const e of res.items) {
        const change = [show(e.before), show(e.after)].filter(Boolean).join(" → ");
        tbody.append(
          el(
            "tr",
            { "data-action": e.action },
            el("td", { class: "when", text: fmtTime(e.at) }),
            el("td", {}, el("code", { text: e.action })),
            el("td", { text: e.actor ? e.actor.email || `#${e.actor.id}` : "system" }),
            el("td", { text: e.target_user ? e.target_user.email || `#${e.target_user.id}` : e.target || "" }),
            el("td", { class: "change", text: change }),
            el("td", { text: e.revision === null || e.revision === undefined ? "" : String(e.revision) }),
          ),
        );
      }
      if (!tbody.children.length) tbody.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "Nothing recorded yet." })));
      before = res.next_before;
      more.hidden = !before;
    }
    more.addEventListener("click", () => guarded(load));
    await guarded(load);
  }

  // The workbench (static/policy.js) builds on the same helpers.
  window.learnauthz = Object.freeze({ api, el, $, say, showError, clearMessages, guarded, busy, fmtTime, ApiError });

  const inits = { login: initLogin, signup: initSignup, "verify-email": initVerifyEmail, home: initHome, me: initMe, members: initMembers, units: initUnits, audit: initAudit };
  if (inits[page]) {
    Promise.resolve(inits[page]()).finally(() => body.setAttribute("data-ready", "1"));
  }
})();
