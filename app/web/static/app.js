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
  function problemWords(err) {
    if (!(err instanceof ApiError)) return `Something went wrong: ${err.message || err}`;
    const p = err.problem;
    const code = p.reason || p.invariant;
    const words = (code && REASONS[code]) || (p.detail && p.detail !== p.title ? p.detail : "") || p.title || `HTTP ${err.status}`;
    return p.email ? `${p.email}: ${words}` : words;
  }
  function showError(err) {
    if (!(err instanceof ApiError)) {
      say(`Something went wrong: ${err.message || err}`, "error");
      return;
    }
    const p = err.problem;
    const code = p.reason || p.invariant || "";
    const msg = el(
      "div",
      { class: "msg error problem", "data-status": String(err.status), "data-reason": code },
      el("strong", { class: "problem-title", text: p.title || `HTTP ${err.status}` }),
      " ",
      el("span", { class: "problem-detail", text: code && REASONS[code] ? problemWords(err) : p.detail && p.detail !== p.title ? p.detail : "" }),
    );
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
        location.assign(res.workspace ? `/w/${encodeURIComponent(res.workspace.slug)}` : "/");
      });
    });
  }

  // -- / ------------------------------------------------------------------------------------------
  async function initHome() {
    const tbody = $("#workspaces tbody");
    const res = await guarded(() => api("GET", "/api/workspaces"));
    if (!res) return;
    tbody.replaceChildren();
    if (!res.items.length) tbody.append(el("tr", {}, el("td", { colspan: "4", class: "muted", text: res.platform && res.platform.length ? "You are a member of no workspace; your platform workspaces are below." : "No workspaces yet." })));
    for (const w of res.items) {
      tbody.append(
        el(
          "tr",
          { "data-slug": w.slug },
          el("td", { "data-label": "Workspace" }, el("a", { href: `/w/${encodeURIComponent(w.slug)}`, text: w.name }), " ", el("small", { class: "muted", text: w.slug })),
          el("td", { "data-label": "Role model", text: w.pack_title || w.pack }),
          el("td", { "data-label": "My role" }, el("span", { class: "badge", "data-role": w.role, text: w.role_label || w.role })),
          el("td", { class: `status ${w.status}`, "data-label": "Status", text: w.status }),
        ),
      );
    }
    const card = $("#platform-card");
    const list = $("#platform-packs");
    if (card && res.platform && res.platform.length) {
      card.hidden = false;
      list.replaceChildren(
        ...res.platform.map((p) =>
          el(
            "li",
            { "data-pack": p.pack },
            el("h3", {}, el("a", { href: `/platform/${encodeURIComponent(p.pack)}`, text: p.title })),
            el("p", {}, "Your platform role: ", ...p.roles.map((r) => el("span", { class: "badge", text: r.label })), ` · ${p.workspaces.length} workspace(s)`),
          ),
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
  let roleRanks = {};
  async function loadRoleLabels() {
    const ws = await api("GET", wsApi).catch(() => null);
    if (ws) {
      roleLabels = Object.fromEntries(ws.roles.map((r) => [r.id, r.label || r.id]));
      roleRanks = Object.fromEntries(ws.roles.map((r) => [r.id, r.rank]));
    }
  }
  const roleLabel = (id) => roleLabels[id] || id;
  const topRank = () => Math.max(...Object.values(roleRanks), 0);
  function roleOptions(select, roles, current) {
    select.replaceChildren();
    if (current && !roles.includes(current)) select.append(el("option", { value: current, text: roleLabel(current), disabled: true }));
    for (const r of roles) select.append(el("option", { value: r, text: roleLabel(r) }));
    if (current) select.value = current;
  }

  // -- confirmation dialog (never the browser's confirm()) ------------------------------------------
  // Resolves true only on the confirm button (and, if asked, after typing the given word).
  function confirmDialog({ title, text, ok, danger = false, typed = "" }) {
    const dlg = $("#confirm-dialog");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    const okBtn = $("#confirm-ok");
    okBtn.textContent = ok;
    okBtn.className = danger ? "primary danger" : "primary";
    const typedLabel = $("#confirm-typed-label");
    const typedInput = $("#confirm-typed");
    typedLabel.hidden = !typed;
    typedInput.value = "";
    $("#confirm-typed-word").textContent = typed;
    okBtn.disabled = Boolean(typed);
    const onInput = () => (okBtn.disabled = typedInput.value.trim() !== typed);
    typedInput.addEventListener("input", onInput);
    dlg.returnValue = "";
    dlg.showModal();
    (typed ? typedInput : $("#confirm-cancel")).focus(); // Enter on open cancels
    return new Promise((resolve) => {
      dlg.addEventListener(
        "close",
        () => {
          typedInput.removeEventListener("input", onInput);
          resolve(dlg.returnValue === "ok" && (!typed || typedInput.value.trim() === typed));
        },
        { once: true },
      );
    });
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
      assignable: [],
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

    function consequence(m, role) {
      const who = m.display_name ? `${m.display_name} (${m.email})` : m.email;
      const rank = roleRanks[role];
      let text = `${who} goes from ${roleLabel(m.role)} to ${roleLabel(role)}.`;
      if (rank !== undefined && rank >= topRank()) {
        text += ` ${roleLabel(role)} is the top role: full control of this workspace, including other owners' roles and your own membership.`;
      } else if (rank !== undefined && roleRanks[m.role] !== undefined) {
        text += rank > roleRanks[m.role] ? " They gain every permission of the new role." : " They lose the permissions of their current role.";
      }
      return `${text} They are notified by email.`;
    }

    // The roles offered come with the row (member.permissions.roles: Casbin's answer for this actor
    // and this member). Picking one only arms the Change button; the change happens after the dialog.
    function roleCell(m) {
      const cell = el("td", { class: "role", "data-label": "Role" });
      const roles = (m.permissions && m.permissions.roles) || [];
      if (!roles.length) {
        cell.append(el("span", { class: "badge", text: roleLabel(m.role) }));
        return cell;
      }
      const select = el("select", { class: "role-select", "aria-label": `Role of ${m.email}`, "data-user-id": String(m.user_id) });
      roleOptions(select, roles, m.role);
      const apply = el("button", { type: "button", class: "small change-role", text: "Change", disabled: true, "aria-label": `Change role of ${m.email}` });
      select.addEventListener("change", () => (apply.disabled = select.value === m.role));
      apply.addEventListener("click", async () => {
        const role = select.value;
        if (role === m.role) return;
        const top = roleRanks[role] !== undefined && roleRanks[role] >= topRank();
        const yes = await confirmDialog({
          title: top ? `Make ${m.email} ${roleLabel(role)}?` : `Change the role of ${m.email}?`,
          text: consequence(m, role),
          ok: `Make ${roleLabel(role)}`,
          danger: top,
        });
        if (!yes) {
          select.value = m.role;
          apply.disabled = true;
          return;
        }
        clearMessages();
        select.disabled = apply.disabled = true;
        guarded(async () => {
          const updated = await api("PATCH", `${wsApi}/members/${m.user_id}`, { role });
          m.role = updated.role;
          say(`${m.email} is now ${roleLabel(updated.role)}.`);
        }).finally(() => {
          select.value = m.role; // back to the stored role if the server refused
          select.disabled = false;
          apply.disabled = true;
        });
      });
      cell.append(el("span", { class: "role-cell" }, select, apply));
      return cell;
    }

    async function removeOne(m) {
      const yes = await confirmDialog({
        title: `Remove ${m.email}?`,
        text: `${m.email} loses access to this workspace and leaves every group or team here. They are notified by email.`,
        ok: "Remove",
        danger: true,
      });
      if (!yes) return;
      clearMessages();
      guarded(async () => {
        await api("DELETE", `${wsApi}/members/${m.user_id}`);
        await load();
        say(`Removed ${m.email}.`);
      });
    }

    let rowsById = new Map();
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
      state.assignable = res.assignable_roles || [];
      state.selected.clear();
      rowsById = new Map(res.items.map((m) => [m.user_id, m]));
      if (selectAll) selectAll.checked = false;
      const anyRemovable = res.items.some((m) => m.permissions && m.permissions.remove);
      if (selectAll) selectAll.disabled = !anyRemovable;
      const rows = res.items.map((m) => {
        const perms = m.permissions || {};
        const tr = el("tr", { "data-user-id": String(m.user_id), "data-email": m.email });
        if (caps.remove) {
          const cell = el("td", { class: "check" });
          if (perms.remove) {
            const box = el("input", { type: "checkbox", class: "pick", "aria-label": `Select ${m.email}` });
            box.addEventListener("change", () => {
              if (box.checked) state.selected.set(m.user_id, m.email);
              else state.selected.delete(m.user_id);
              updateBulk();
            });
            cell.append(box);
          }
          tr.append(cell);
        }
        tr.append(
          el("td", { class: "email", "data-label": "Email" }, m.email, m.user_id === myId ? el("small", { class: "muted", text: " (you)" }) : null),
          el("td", { "data-label": "Name", text: m.display_name || "" }),
          roleCell(m),
          el("td", { class: `status ${m.status}`, "data-label": "Status", text: m.status }),
        );
        const actions = el("td", { class: "actions" });
        if (perms.remove) actions.append(el("button", { type: "button", class: "remove danger small", text: "Remove", "aria-label": `Remove ${m.email}`, onclick: () => removeOne(m) }));
        tr.append(actions);
        return tr;
      });
      tbody.replaceChildren(...rows);
      if (!rows.length) tbody.append(el("tr", {}, el("td", { colspan: String(cols), class: "muted", text: "No members match." })));
      const first = res.total ? (res.page - 1) * res.per_page + 1 : 0;
      const last = Math.min(res.page * res.per_page, res.total);
      info.textContent = `${first}–${last} of ${res.total}`;
      prev.disabled = res.page <= 1;
      next.disabled = last >= res.total;
      updateBulk();
      const openInvite = $("#open-invite");
      if (openInvite) openInvite.hidden = !state.assignable.length;
      fillTransfer(res.items);
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
      bulk.addEventListener("click", async () => {
        const ids = [...state.selected.keys()];
        if (!ids.length) return;
        const names = [...state.selected.values()];
        const yes = await confirmDialog({
          title: `Remove ${ids.length} member(s)?`,
          text: `${names.join(", ")} lose access to this workspace. All or nothing: if one of them may not be removed, nobody is.`,
          ok: `Remove ${ids.length}`,
          danger: true,
        });
        if (!yes) return;
        clearMessages();
        guarded(async () => {
          const res = await api("POST", `${wsApi}/members/remove`, { user_ids: ids });
          await load();
          say(`Removed ${res.removed.length} member(s).`);
        });
      });
    }

    // -- invite dialog: per-address results; the valid addresses go through -------------------------
    const dialog = $("#invite-dialog");
    if (dialog) {
      const form = $("#invite-form");
      const results = $("#invite-results");
      $("#open-invite").addEventListener("click", () => {
        roleOptions(form.role, state.assignable, state.assignable[0]);
        results.replaceChildren();
        dialog.showModal();
        form.emails.focus();
      });
      $("#invite-close").addEventListener("click", () => dialog.close());
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        busy(form, true);
        results.replaceChildren();
        api("POST", `${wsApi}/invitations`, { emails: form.emails.value, role: form.role.value, partial: true })
          .then(async (out) => {
            const list = el("ul", { class: "invite-results" });
            const words = { invited: "invited", member: "already a member", invited_before: "already invited", invalid: "not a valid address" };
            for (const r of out.results || out.invited) {
              list.append(el("li", { class: r.status, "data-status": r.status }, el("strong", { text: r.email }), `: ${words[r.status] || r.status}${r.message ? ` (${r.message})` : ""}`));
            }
            results.replaceChildren(list);
            const ok = (out.results || out.invited).filter((r) => r.status === "invited").map((r) => r.email);
            form.emails.value = (out.results || []).filter((r) => r.status === "invalid").map((r) => r.email).join("\n");
            await load();
            await loadInvitations();
            say(ok.length ? `Invited: ${ok.join(", ")}.` : "Nobody was invited.", ok.length ? "ok" : "info");
          })
          .catch((err) => {
            results.replaceChildren(el("p", { class: "msg error", text: problemWords(err) }));
          })
          .finally(() => busy(form, false));
      });
    }

    // -- pending invitations tab ------------------------------------------------------------------
    const invBody = $("#invitations tbody");
    async function loadInvitations() {
      if (!invBody) return;
      const res = await api("GET", `${wsApi}/invitations`);
      invBody.replaceChildren(
        ...res.items.map((i) => {
          const tr = el("tr", { "data-email": i.email, "data-id": String(i.id) });
          const acts = el("td", { class: "actions" });
          acts.append(
            el("button", {
              type: "button",
              class: "small resend",
              text: "Resend",
              "aria-label": `Resend the invitation of ${i.email}`,
              onclick: () =>
                guarded(async () => {
                  const out = await api("POST", `${wsApi}/invitations/${i.id}/resend`);
                  await loadInvitations();
                  say(`A new sign-up link was sent to ${i.email} (expires ${fmtTime(out.expires_at)}).`);
                }),
            }),
            " ",
            el("button", {
              type: "button",
              class: "small danger revoke",
              text: "Revoke",
              "aria-label": `Revoke the invitation of ${i.email}`,
              onclick: async () => {
                const yes = await confirmDialog({ title: `Revoke the invitation of ${i.email}?`, text: "The sign-up link stops working at once. You can invite the address again afterwards.", ok: "Revoke", danger: true });
                if (!yes) return;
                guarded(async () => {
                  await api("DELETE", `${wsApi}/invitations/${i.id}`);
                  await loadInvitations();
                  say(`Revoked the invitation of ${i.email}.`);
                });
              },
            }),
          );
          tr.append(
            el("td", { "data-label": "Email", text: i.email }),
            el("td", { "data-label": "Role" }, el("span", { class: "badge", text: roleLabel(i.role) })),
            el("td", { "data-label": "Expires", class: i.expired ? "status pending" : "", text: i.expired ? `expired ${fmtTime(i.expires_at)}` : fmtTime(i.expires_at) }),
            acts,
          );
          return tr;
        }),
      );
      if (!res.items.length) invBody.append(el("tr", {}, el("td", { colspan: "4", class: "muted", text: "No pending invitations." })));
    }
    const tabs = [$("#tab-members"), $("#tab-invitations")].filter(Boolean);
    for (const tab of tabs) {
      tab.addEventListener("click", () => {
        for (const t of tabs) {
          const on = t === tab;
          t.setAttribute("aria-selected", on ? "true" : "false");
          t.tabIndex = on ? 0 : -1;
          $(`#${t.getAttribute("aria-controls")}`).hidden = !on;
        }
        if (tab.id === "tab-invitations") guarded(loadInvitations);
      });
      tab.addEventListener("keydown", (ev) => {
        if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
        const other = tabs[(tabs.indexOf(tab) + 1) % tabs.length];
        other.focus();
        other.click();
      });
    }

    // -- danger zone: transfer ownership with a typed confirmation ---------------------------------
    const transfer = $("#transfer-form");
    function fillTransfer(items) {
      if (!transfer) return;
      const eligible = items.filter((m) => m.permissions && m.permissions.transfer_ownership && m.status === "accepted");
      const select = $("#transfer-to");
      select.replaceChildren(...eligible.map((m) => el("option", { value: String(m.user_id), text: m.email })));
      $("#transfer-card").hidden = !eligible.length;
    }
    if (transfer) {
      transfer.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const uid = Number(transfer.user_id.value);
        const m = rowsById.get(uid);
        if (!m) return;
        const yes = await confirmDialog({
          title: `Transfer ownership to ${m.email}?`,
          text: `${m.email} becomes an owner of this workspace with full control. If you are an owner, you step down to the next role and cannot undo this yourself.`,
          ok: "Transfer ownership",
          danger: true,
          typed: slug,
        });
        if (!yes) return;
        clearMessages();
        guarded(async () => {
          await api("POST", `${wsApi}/ownership`, { user_id: uid });
          say(`${m.email} now owns this workspace.`);
          setTimeout(() => location.reload(), 600);
        });
      });
    }

    const del = $("#delete-ws");
    if (del) {
      del.addEventListener("click", async () => {
        const yes = await confirmDialog({
          title: `Delete ${slug}?`,
          text: "Every membership, group and invitation of this workspace ends now; members are told by email. This cannot be undone.",
          ok: "Delete workspace",
          danger: true,
          typed: slug,
        });
        if (!yes) return;
        clearMessages();
        guarded(async () => {
          await api("DELETE", wsApi, { confirm: slug });
          location.assign("/");
        });
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
    const one = { teachers: "teacher", learners: "learner", managers: "manager", members: "member" };
    const root = $("#units");
    let all = [];

    // People picker: search by name or email; the server offers only whom Casbin lets this actor add.
    function picker(u, r) {
      const base = `${wsApi}/${kinds}/${encodeURIComponent(u.name)}`;
      const id = `pick-${u.name}-${r}`;
      const input = el("input", { type: "search", id, class: "pick-search", maxlength: "100", placeholder: "Name or email", autocomplete: "off" });
      const results = el("ul", { class: "results", "aria-live": "polite", hidden: true });
      const form = el("form", { class: `picker add-${r}`, role: "search" }, el("label", { for: id, text: `Add a ${one[r]}` }), el("div", { class: "row" }, input, el("button", { type: "submit", text: "Find" })), results);
      async function search() {
        const res = await api("GET", `${base}/${r}/candidates?q=${encodeURIComponent(input.value.trim())}`);
        results.hidden = false;
        results.replaceChildren(
          ...res.items.map((p) =>
            el(
              "li",
              { "data-user-id": String(p.user_id), "data-email": p.email },
              el("span", { text: p.display_name && p.display_name !== p.email ? `${p.display_name} · ${p.email}` : p.email }),
              el("button", {
                type: "button",
                class: "small add",
                text: "Add",
                "aria-label": `Add ${p.email} as ${one[r]}`,
                onclick: () =>
                  guarded(async () => {
                    clearMessages();
                    await api("POST", `${base}/${r}`, { user_ids: [p.user_id] });
                    await load();
                    say(`${p.email} is now a ${one[r]} of ${u.name}.`);
                  }),
              }),
            ),
          ),
        );
        if (!res.items.length) results.append(el("li", { class: "muted", text: "Nobody you may add matches." }));
      }
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        guarded(search);
      });
      return form;
    }

    function personRow(u, r, p) {
      const base = `${wsApi}/${kinds}/${encodeURIComponent(u.name)}`;
      const perms = u.permissions || {};
      const removable = (r === rel.member ? perms.remove_member : perms.remove_manager) || [];
      const li = el("li", { "data-user-id": String(p.user_id), "data-email": p.email }, el("span", { class: "who-name", text: p.email }));
      if (r === rel.member && perms.move) {
        const targets = all.filter((o) => o.name !== u.name && !o.archived && o.permissions && o.permissions.move);
        if (targets.length) {
          const sel = el("select", { class: "move-to", "aria-label": `Move ${p.email} to` }, el("option", { value: "", text: "Move to…" }), ...targets.map((o) => el("option", { value: o.name, text: o.name })));
          sel.addEventListener("change", async () => {
            const to = sel.value;
            if (!to) return;
            const yes = await confirmDialog({ title: `Move ${p.email} to ${to}?`, text: `${p.email} leaves ${u.name} and joins ${to}.`, ok: `Move to ${to}` });
            sel.value = "";
            if (!yes) return;
            guarded(async () => {
              clearMessages();
              await api("POST", `${base}/${r}/${p.user_id}/move`, { to });
              await load();
              say(`${p.email} moved from ${u.name} to ${to}.`);
            });
          });
          li.append(sel);
        }
      }
      if (removable.includes(p.user_id)) {
        li.append(
          el("button", {
            type: "button",
            class: "link danger remove-person",
            text: "Remove",
            "aria-label": `Remove ${p.email} from ${u.name}`,
            onclick: async () => {
              const yes = await confirmDialog({ title: `Remove ${p.email} from ${u.name}?`, text: `${p.email} stays a member of the workspace but is no longer a ${one[r]} of ${u.name}.`, ok: "Remove", danger: true });
              if (!yes) return;
              guarded(async () => {
                clearMessages();
                await api("DELETE", `${base}/${r}/${p.user_id}`);
                await load();
                say(`${p.email} left ${u.name}.`);
              });
            },
          }),
        );
      }
      return li;
    }

    function editForm(u, card) {
      const base = `${wsApi}/${kinds}/${encodeURIComponent(u.name)}`;
      const perms = u.permissions || {};
      const form = el("form", { class: "row edit-unit", hidden: true });
      const desc = el("input", { type: "text", name: "description", maxlength: "500", value: u.description || "" });
      form.append(el("label", {}, "Description", desc));
      let cap = null;
      if (perms.capacity) {
        cap = el("input", { type: "number", name: "capacity", min: "1", max: "100000", value: u.capacity ? String(u.capacity) : "" });
        form.append(el("label", {}, "Capacity", cap));
      }
      form.append(el("button", { type: "submit", class: "primary", text: "Save" }), el("button", { type: "button", text: "Cancel", onclick: () => (form.hidden = true) }));
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const data = {};
        if (desc.value !== (u.description || "")) data.description = desc.value;
        if (cap && String(cap.value || "") !== String(u.capacity || "")) data.capacity = cap.value ? Number(cap.value) : null;
        if (!Object.keys(data).length) {
          form.hidden = true;
          return;
        }
        guarded(async () => {
          clearMessages();
          await api("PATCH", base, data);
          await load();
          say(`Saved ${u.name}.`);
        });
      });
      card.append(form);
      return form;
    }

    function unitCard(u) {
      const base = `${wsApi}/${kinds}/${encodeURIComponent(u.name)}`;
      const perms = u.permissions || {};
      const members = u[rel.member] || [];
      const meta = [u.description, u.capacity ? `${members.length} of ${u.capacity} places` : "", u.archived ? "archived" : ""].filter(Boolean).join(" · ");
      const card = el("article", { class: `unit${u.archived ? " archived" : ""}`, "data-name": u.name, "aria-labelledby": `unit-${u.name}` }, el("h2", { id: `unit-${u.name}`, text: u.name }), meta ? el("p", { class: "muted", text: meta }) : null);
      const bar = el("div", { class: "unit-actions" });
      let form = null;
      if (perms.edit || perms.capacity) bar.append(el("button", { type: "button", class: "small edit", text: "Edit", "aria-label": `Edit ${u.name}`, onclick: () => { form.hidden = !form.hidden; } }));
      if (perms.archive) {
        bar.append(
          el("button", {
            type: "button",
            class: "small archive",
            text: u.archived ? "Unarchive" : "Archive",
            onclick: async () => {
              const yes = await confirmDialog({ title: `${u.archived ? "Unarchive" : "Archive"} ${u.name}?`, text: u.archived ? `${u.name} accepts people again.` : `Nobody can be added to ${u.name} while it is archived; its people stay.`, ok: u.archived ? "Unarchive" : "Archive" });
              if (!yes) return;
              guarded(async () => {
                clearMessages();
                await api("PATCH", base, { archived: !u.archived });
                await load();
                say(`${u.name} is ${u.archived ? "active again" : "archived"}.`);
              });
            },
          }),
        );
      }
      if (perms.delete) {
        const used = members.length + (u[rel.manager] || []).length;
        bar.append(
          el("button", {
            type: "button",
            class: "small danger delete",
            text: "Delete",
            disabled: used > 0,
            title: used > 0 ? `Only an empty ${kind} can be deleted; archive it instead` : "",
            "aria-label": used > 0 ? `Delete ${u.name} (only when nobody is in it)` : `Delete ${u.name}`,
            onclick: async () => {
              const yes = await confirmDialog({ title: `Delete ${u.name}?`, text: `The ${kind} disappears for good.`, ok: "Delete", danger: true, typed: u.name });
              if (!yes) return;
              guarded(async () => {
                clearMessages();
                await api("DELETE", base);
                await load();
                say(`Deleted ${u.name}.`);
              });
            },
          }),
        );
      }
      if (bar.children.length) card.append(bar);
      const views = perms.scoped_actions || [];
      if (views.length) {
        const d = el("details", { class: "scoped" }, el("summary", { text: `What you may do in this ${kind} (${views.length})` }));
        d.append(el("ul", {}, ...views.map((a) => el("li", { "data-action": a.id, text: a.label }))));
        card.append(d);
      }
      if (perms.edit || perms.capacity) form = editForm(u, card);
      for (const r of [rel.manager, rel.member]) {
        const list = el("ul", { class: `people ${r}` });
        for (const p of u[r] || []) list.append(personRow(u, r, p));
        if (!list.children.length) list.append(el("li", { class: "muted", text: "nobody" }));
        card.append(el("h3", { text: label[r] }), list);
        const may = r === rel.member ? perms.add_member : perms.add_manager;
        if (may && !u.archived) card.append(picker(u, r));
      }
      return card;
    }

    async function load() {
      const res = await api("GET", `${wsApi}/${kinds}`);
      all = res.items;
      root.replaceChildren(...res.items.map(unitCard));
      if (!res.items.length) root.append(el("p", { class: "muted empty", text: kind === "group" ? "You are in no group yet." : "You manage or belong to no team here." }));
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

  // -- /platform/<pack> -------------------------------------------------------------------------------
  async function initPlatform() {
    const pack = $("#platform-console").dataset.pack;
    const create = $("#create-workspace");
    if (create) {
      create.addEventListener("submit", (ev) => {
        ev.preventDefault();
        clearMessages();
        const data = { pack, name: create.name.value.trim(), slug: create.slug.value.trim() };
        guarded(async () => {
          const ws = await api("POST", "/api/workspaces", data);
          say(`Created ${ws.name} (${ws.slug}).`);
          setTimeout(() => location.reload(), 600);
        });
      });
    }
    for (const box of document.querySelectorAll("input.feature")) {
      const slugOf = box.closest("fieldset").dataset.slug;
      box.addEventListener("change", async () => {
        const on = box.checked;
        const name = box.parentElement.textContent.trim();
        const yes = await confirmDialog({
          title: `${on ? "Switch on" : "Switch off"} "${name}" in ${slugOf}?`,
          text: on ? "Every role of the workspace that has this permission gets it back." : "The permission is denied to every role of the workspace until you switch it on again.",
          ok: on ? "Switch on" : "Switch off",
          danger: !on,
        });
        if (!yes) {
          box.checked = !on;
          return;
        }
        clearMessages();
        guarded(async () => {
          const res = await api("PUT", `/api/workspaces/${encodeURIComponent(slugOf)}/features/${encodeURIComponent(box.dataset.feature)}`, { enabled: on });
          say(`"${name}" is ${res.enabled ? "on" : "off"} in ${slugOf}.`);
          return true;
        }).then((ok) => {
          if (!ok) box.checked = !on; // refused: show the stored state
        });
      });
    }
    const holders = $("#platform-holders tbody");
    async function loadHolders() {
      const res = await api("GET", `/api/platform/${encodeURIComponent(pack)}/roles`);
      holders.replaceChildren(
        ...res.items.map((h) =>
          el(
            "tr",
            { "data-email": h.email || "", "data-role": h.role },
            el("td", { "data-label": "Person", text: h.email || `#${h.user_id}` }),
            el("td", { "data-label": "Role" }, el("span", { class: "badge", text: h.role })),
            el(
              "td",
              { class: "actions" },
              h.user_id === myId
                ? el("small", { class: "muted", text: "you" })
                : el("button", {
                    type: "button",
                    class: "small danger revoke",
                    text: "Revoke",
                    "aria-label": `Revoke ${h.role} from ${h.email}`,
                    onclick: async () => {
                      const yes = await confirmDialog({ title: `Revoke ${h.role} from ${h.email}?`, text: `${h.email} loses the platform role in every workspace of this pack.`, ok: "Revoke", danger: true });
                      if (!yes) return;
                      guarded(async () => {
                        await api("DELETE", `/api/platform/${encodeURIComponent(pack)}/roles/${encodeURIComponent(h.role)}/${h.user_id}`);
                        await loadHolders();
                        say(`Revoked ${h.role} from ${h.email}.`);
                      });
                    },
                  }),
            ),
          ),
        ),
      );
    }
    const grant = $("#grant-platform");
    if (grant) {
      grant.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const email = grant.email.value.trim();
        const role = grant.role.value;
        const yes = await confirmDialog({ title: `Grant ${role} to ${email}?`, text: `${email} gets the platform role in every workspace of this pack, now and later.`, ok: "Grant", danger: true });
        if (!yes) return;
        clearMessages();
        guarded(async () => {
          await api("POST", `/api/platform/${encodeURIComponent(pack)}/roles`, { email, role });
          grant.reset();
          await loadHolders();
          say(`${email} now holds ${role}.`);
        });
      });
      await guarded(loadHolders);
    }
  }

  // -- /w/<slug>/audit ----------------------------------------------------------------------------------
  async function initAudit() {
    const tbody = $("#audit tbody");
    const more = $("#audit-more");
    const filters = $("#audit-filters");
    const csv = $("#audit-csv");
    let before = null;
    await loadRoleLabels().catch(() => null);
    const who = (u) => (u ? u.email || `#${u.id}` : "");
    // Before → after in words: role labels, group names, plain key: value otherwise.
    function words(v) {
      if (v === null || v === undefined) return "";
      if (typeof v !== "object") return String(v);
      return Object.entries(v)
        .filter(([, x]) => x !== null && x !== undefined && x !== "")
        .map(([k, x]) => {
          const val = /role$/.test(k) ? roleLabel(String(x)) : Array.isArray(x) ? x.join(", ") || "none" : typeof x === "object" ? JSON.stringify(x) : String(x);
          return `${k.replace(/_/g, " ")}: ${val}`;
        })
        .join("; ");
    }
    function where(e) {
      const parts = [];
      if (e.target_user) parts.push(who(e.target_user));
      if (e.target && /^(group|team|email):/.test(e.target)) parts.push(e.target.replace(/^email:/, "").replace(/^(group|team):/, "$1 "));
      return parts.join(" in ");
    }
    function params() {
      const p = new URLSearchParams();
      for (const k of ["actor", "action", "since", "until"]) if (filters[k].value) p.set(k, filters[k].value);
      return p;
    }
    async function load() {
      const p = params();
      p.set("limit", "50");
      if (before) p.set("before", String(before));
      const res = await api("GET", `${wsApi}/audit?${p}`);
      for (const e of res.items) {
        const change = [words(e.before), words(e.after)].filter(Boolean).join(" → ");
        tbody.append(
          el(
            "tr",
            { "data-action": e.action },
            el("td", { class: "when", "data-label": "When", text: fmtTime(e.at) }),
            el("td", { "data-label": "Who", text: e.actor ? who(e.actor) : "system" }),
            el("td", { "data-label": "What", title: e.action, text: e.label || e.action }),
            el("td", { "data-label": "Whom / where", text: where(e) }),
            el("td", { class: "change", "data-label": "Change", text: change }),
            el("td", { "data-label": "Revision", text: e.revision === null || e.revision === undefined ? "" : String(e.revision) }),
          ),
        );
      }
      if (!tbody.children.length) tbody.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "Nothing recorded." })));
      before = res.next_before;
      more.hidden = !before;
    }
    function restart() {
      const p = params();
      csv.href = `${wsApi}/audit.csv${p.toString() ? `?${p}` : ""}`;
      tbody.replaceChildren();
      before = null;
      return guarded(load);
    }
    filters.addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearMessages();
      restart();
    });
    more.addEventListener("click", () => guarded(load));
    await restart();
  }

  // The workbench (static/policy.js) builds on the same helpers.
  window.learnauthz = Object.freeze({ api, el, $, say, showError, clearMessages, guarded, busy, fmtTime, ApiError, confirmDialog, problemWords });

  const inits = { login: initLogin, signup: initSignup, "verify-email": initVerifyEmail, home: initHome, me: initMe, members: initMembers, units: initUnits, audit: initAudit, overview: () => null, platform: initPlatform };
  if (inits[page]) {
    Promise.resolve(inits[page]()).finally(() => body.setAttribute("data-ready", "1"));
  }
})();
