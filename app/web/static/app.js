// The workspace pages as Alpine components (CSP build): the markup lives in the templates, this file
// holds state and calls to the JSON API. What a page offers comes from the permissions the API
// returns (Casbin's answers for this user), never from role names.
import { Alpine, api, clearMessages, confirmDialog, fmtTime, guarded, loading, plural, problemWords, say, sayAfterReload, setCsrf } from "./lib.js";

const body = document.body;
const slug = body.dataset.slug || "";
const myId = Number(body.dataset.userId || 0);
const wsApi = slug ? `/api/workspaces/${encodeURIComponent(slug)}` : "";
const enc = encodeURIComponent;

// The server already refuses unsafe ?next= values; this is the second lock on the same door.
function sameOrigin(next) {
  if (!next || /[\u0000-\u0020\u007f-\u009f\\]/.test(next) || !next.startsWith("/") || next.startsWith("//")) return "/";
  const url = new URL(next, location.origin);
  return url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
}

// Role ids → labels and ranks, from the workspace's own description.
async function workspaceRoles() {
  const ws = await api("GET", wsApi).catch(() => null);
  return {
    labels: ws ? Object.fromEntries(ws.roles.map((r) => [r.id, r.label || r.id])) : {},
    ranks: ws ? Object.fromEntries(ws.roles.map((r) => [r.id, r.rank])) : {},
  };
}

// Which of these people's pages the signed-in user may open (Casbin decides on the server): names
// become links only there. Unknown ids and refusals make plain names, never an error.
async function openPages(ids) {
  const unique = [...new Set(ids.filter(Boolean))].slice(0, 500);
  if (!slug || !unique.length) return {};
  const res = await api("GET", `${wsApi}/people?ids=${unique.join(",")}`).catch(() => ({ ids: [] }));
  return Object.fromEntries(res.ids.map((id) => [id, true]));
}
const personHref = (id) => `/w/${enc(slug)}/people/${id}`;

// -- /login, /signup, /verify-email -------------------------------------------------------------
Alpine.data("login", () => ({
  email: "",
  password: "",
  busy: false,
  submit() {
    clearMessages();
    this.busy = true;
    guarded(async () => {
      const me = await api("POST", "/api/auth/signin", { email: this.email.trim(), password: this.password });
      setCsrf(me.csrf_token); // rotated at sign-in
      location.assign(sameOrigin(this.$el.dataset.next));
    }).finally(() => (this.busy = false));
  },
}));

Alpine.data("signup", () => ({
  displayName: "",
  password: "",
  submit() {
    clearMessages();
    const data = { token: this.$el.dataset.token, password: this.password };
    if (this.displayName.trim()) data.display_name = this.displayName.trim();
    guarded(async () => {
      const res = await api("POST", "/api/auth/signup", data);
      location.assign(res.workspace ? `/w/${enc(res.workspace.slug)}` : "/");
    });
  },
}));

Alpine.data("verifyEmail", () => ({
  busy: false,
  done: false,
  submit() {
    clearMessages();
    this.busy = true;
    guarded(async () => {
      const res = await api("POST", "/api/auth/verify-email", { token: this.$el.dataset.token });
      say(`Your email address is now ${res.email}. Every other session was signed out.`);
      this.done = true;
    }).finally(() => (this.busy = false));
  },
}));

// -- / ------------------------------------------------------------------------------------------
Alpine.data("home", () => ({
  loaded: false,
  items: [],
  platform: [],
  init() {
    loading(
      guarded(async () => {
        const res = await api("GET", "/api/workspaces");
        this.items = res.items;
        this.platform = res.platform || [];
        this.loaded = true;
      }),
    );
  },
  emptyText() {
    if (!this.loaded) return "Loading…";
    return this.platform.length ? "You are a member of no workspace; your platform workspaces are below." : "No workspaces yet.";
  },
  href: (w) => `/w/${enc(w.slug)}`,
  platformHref: (p) => `/platform/${enc(p.pack)}`,
}));

// -- /me ----------------------------------------------------------------------------------------
Alpine.data("profile", () => ({
  current: null,
  form: { display_name: "", username: "", email: "", password: "", current_password: "" },
  sessions: [],
  busy: false,
  init() {
    loading(
      guarded(async () => {
        this.fill(await api("GET", "/api/auth/me"));
        await this.loadSessions();
      }),
    );
  },
  fill(p) {
    this.current = p;
    this.form = { display_name: p.display_name || "", username: p.username || "", email: p.email || "", password: "", current_password: "" };
  },
  pending() {
    return this.current && this.current.pending_email ? `Waiting for confirmation from ${this.current.pending_email}.` : "";
  },
  save() {
    clearMessages();
    const f = this.form;
    const cur = this.current || {};
    const data = {};
    if (f.display_name.trim() !== (cur.display_name || "")) data.display_name = f.display_name.trim();
    if (f.username.trim() !== (cur.username || "")) data.username = f.username.trim() || null;
    if (f.email.trim().toLowerCase() !== (cur.email || "").toLowerCase()) data.email = f.email.trim();
    if (f.password) data.password = f.password;
    if (data.email !== undefined || data.password !== undefined) data.current_password = f.current_password;
    if (!Object.keys(data).length) {
      say("Nothing to change.", "info");
      return;
    }
    this.busy = true;
    guarded(async () => {
      this.fill(await api("PATCH", "/api/auth/me", data));
      const link = document.getElementById("me-link");
      if (link) link.textContent = this.current.display_name || this.current.email;
      say(
        data.email !== undefined
          ? `Profile saved. To use ${data.email}, follow the link we sent there; until then your email stays ${this.current.email}.`
          : "Profile saved.",
      );
      if (data.password !== undefined) await this.loadSessions();
    }).finally(() => (this.busy = false));
  },
  async loadSessions() {
    const res = await api("GET", "/api/auth/sessions");
    this.sessions = res.items.map((s) => ({
      ...s,
      started: fmtTime(s.created_at) + (s.current ? " (this one)" : ""),
      lastSeen: fmtTime(s.last_seen_at),
      browser: s.browser || s.user_agent.slice(0, 80),
    }));
  },
  signoutOthers() {
    guarded(async () => {
      const res = await api("POST", "/api/auth/sessions/signout-others");
      say(`Signed out ${res.ended} other session(s).`);
      await this.loadSessions();
    });
  },
}));

// -- /w/<slug>/members ----------------------------------------------------------------------------
// Search, filters, sort and page live in the address (?q=&role=&status=&sort=&page=&per_page=), so a
// view can be bookmarked. The server filters and sorts; the page only shows what it answers.
const intParam = (v, d, lo, hi) => (/^\d+$/.test(v || "") && +v >= lo && +v <= hi ? +v : d);
const SORTS = ["name", "email", "role", "status", "joined"];
const MAX_LISTED = 8; // actions named in a role change's confirmation before "and N more"

const initials = (m) => {
  const words = (m.display_name || m.email.split("@")[0]).split(/[\s._-]+/).filter(Boolean);
  return (words.length > 1 ? words[0][0] + words[words.length - 1][0] : (words[0] || "?").slice(0, 2)).toUpperCase();
};
const day = (iso) => (iso ? iso.slice(0, 10) : "");
const listed = (items) =>
  items.length > MAX_LISTED ? `${items.slice(0, MAX_LISTED).join(", ")} and ${items.length - MAX_LISTED} more` : items.join(", ");

Alpine.data("members", () => ({
  q: "",
  role: "",
  status: "",
  sort: "name",
  page: 1,
  perPage: "20",
  total: 0,
  first: 0,
  last: 0,
  rows: [],
  loaded: false,
  failed: false,
  selected: {},
  assignable: [],
  labels: {},
  ranks: {},
  roleList: [],
  roleInfo: {},
  actionLabels: {},
  actionOrder: [],
  candidates: [],
  tab: "members",
  invitations: [],
  invite: { emails: "", role: "", busy: false, results: [], error: "" },
  transferTo: "",
  seq: 0,
  init() {
    const url = new URLSearchParams(location.search);
    this.q = (url.get("q") || "").slice(0, 100);
    this.role = (url.get("role") || "").slice(0, 80);
    this.status = ["accepted", "pending"].includes(url.get("status")) ? url.get("status") : "";
    const sort = url.get("sort") || "name";
    this.sort = SORTS.includes(sort.replace(/^-/, "")) ? sort : "name";
    this.page = intParam(url.get("page"), 1, 1, 1e6);
    this.perPage = String(intParam(url.get("per_page"), 20, 1, 200));
    loading(
      guarded(async () => {
        await Promise.all([this.loadRoles(), this.load()]);
        if (document.getElementById("transfer-card")) await this.loadCandidates();
      }),
    );
  },
  async loadRoles() {
    // Labels, descriptions and the matrix's actions per role: the role menu and what a change means.
    const res = await api("GET", `${wsApi}/roles`).catch(() => null);
    if (!res) return;
    this.roleList = res.roles;
    this.labels = Object.fromEntries(res.roles.map((r) => [r.id, r.label]));
    this.ranks = Object.fromEntries(res.roles.map((r) => [r.id, r.rank]));
    this.roleInfo = Object.fromEntries(res.roles.map((r) => [r.id, r]));
    this.actionOrder = res.actions.map((a) => a.id);
    this.actionLabels = Object.fromEntries(res.actions.map((a) => [a.id, a.label]));
  },
  async loadCandidates() {
    const res = await api("GET", `${wsApi}/ownership/candidates`).catch(() => ({ items: [] }));
    this.candidates = res.items;
    this.transferTo = this.candidates.length ? String(this.candidates[0].user_id) : "";
  },
  label(id) {
    return this.labels[id] || id;
  },
  topRank() {
    return Math.max(...Object.values(this.ranks), 0);
  },
  params() {
    const params = new URLSearchParams({ page: String(this.page), per_page: String(this.perPage), sort: this.sort });
    if (this.q) params.set("q", this.q);
    if (this.role) params.set("role", this.role);
    if (this.status) params.set("status", this.status);
    return params;
  },
  async load() {
    const params = this.params();
    history.replaceState(null, "", `${location.pathname}?${params}`);
    const seq = ++this.seq; // typing fires several searches: only the last answer is shown
    let res;
    try {
      res = await api("GET", `${wsApi}/members?${params}`);
    } catch (err) {
      if (seq !== this.seq) return false;
      this.failed = true;
      this.loaded = false;
      this.rows = [];
      throw err;
    }
    if (seq !== this.seq) return false;
    if (!res.items.length && this.page > 1 && res.total > 0) {
      this.page = Math.ceil(res.total / Number(this.perPage)); // the last page emptied (e.g. after a removal)
      return this.load();
    }
    this.failed = false;
    this.loaded = true;
    this.total = res.total;
    this.assignable = res.assignable_roles || [];
    this.selected = {};
    // Each row carries Casbin's answers for this actor and this member (permissions.*).
    this.rows = res.items.map((m) => ({ ...m, perms: m.permissions || {}, busy: false }));
    this.first = res.total ? (res.page - 1) * res.per_page + 1 : 0;
    this.last = Math.min(res.page * res.per_page, res.total);
    return true;
  },
  reload() {
    return guarded(() => this.load());
  },
  search() {
    clearMessages();
    this.q = this.$refs.search.value.trim(); // the field, not the model: clearing it fires no input event
    this.page = 1;
    this.reload();
  },
  refilter() {
    this.page = 1;
    this.reload();
  },
  filtered() {
    return Boolean(this.q || this.role || this.status);
  },
  clearFilters() {
    this.q = "";
    this.role = "";
    this.status = "";
    this.refilter();
  },
  sortBy(key) {
    this.sort = this.sort === key ? `-${key}` : key;
    this.refilter();
  },
  ariaSort(key) {
    if (this.sort === key) return "ascending";
    return this.sort === `-${key}` ? "descending" : "none";
  },
  arrow(key) {
    if (this.sort === key) return "▲";
    return this.sort === `-${key}` ? "▼" : "";
  },
  prev() {
    this.page = Math.max(1, this.page - 1);
    this.reload();
  },
  next() {
    this.page += 1;
    this.reload();
  },
  countText() {
    if (!this.loaded) return "";
    const n = plural(this.total, "member");
    return this.filtered() ? `${n} match` : n;
  },
  pageInfo() {
    return this.loaded && this.total > this.rows.length ? `${this.first}–${this.last} of ${this.total}` : "";
  },
  showEmpty() {
    return (this.loaded || this.failed) && !this.rows.length;
  },
  emptyText() {
    if (this.failed) return "Members are not available to you.";
    return this.filtered() ? "No member matches the search and filters." : "Nobody is a member of this workspace yet.";
  },
  topAssignable() {
    return [...this.assignable].sort((a, b) => (this.ranks[b] || 0) - (this.ranks[a] || 0))[0] || "";
  },
  inviteFirst() {
    this.openInvite();
    this.invite.role = this.topAssignable();
  },
  isMe: (m) => m.user_id === myId,
  initials,
  day,
  statusWord: (s) => (s === "accepted" ? "Active" : s === "pending" ? "Pending" : s),
  personHref: (m) => personHref(m.user_id),
  // -- selection and bulk removal (the bar shows only while something is selected)
  count() {
    return Object.keys(this.selected).length;
  },
  selectedText() {
    return `${plural(this.count(), "member")} selected`;
  },
  bulkText() {
    return `Remove ${plural(this.count(), "member")}`;
  },
  clearPicks() {
    this.selected = {};
  },
  anyRemovable() {
    return this.rows.some((m) => m.perms.remove);
  },
  allPicked() {
    const removable = this.rows.filter((m) => m.perms.remove);
    return removable.length > 0 && removable.every((m) => this.selected[m.user_id]);
  },
  isPicked(m) {
    return Boolean(this.selected[m.user_id]);
  },
  pick(m, on) {
    if (on) this.selected[m.user_id] = m.email;
    else delete this.selected[m.user_id];
  },
  pickAll(on) {
    for (const m of this.rows) if (m.perms.remove) this.pick(m, on);
  },
  async removeSelected() {
    const ids = Object.keys(this.selected).map(Number);
    if (!ids.length) return;
    const names = Object.values(this.selected);
    const yes = await confirmDialog({
      title: `Remove ${plural(ids.length, "member")}?`,
      text: `${names.join(", ")} lose access to this workspace and leave its groups or teams; they are told by email. All or nothing: if one of them may not be removed, nobody is.`,
      ok: `Remove ${plural(ids.length, "member")}`,
      danger: true,
    });
    if (!yes) return;
    clearMessages();
    guarded(async () => {
      const res = await api("POST", `${wsApi}/members/remove`, { user_ids: ids });
      await this.load();
      if (document.getElementById("transfer-card")) await this.loadCandidates();
      say(`Removed ${plural(res.removed.length, "member")}.`);
    });
  },
  async removeOne(m) {
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
      await this.load();
      say(`Removed ${m.email}.`);
    });
  },
  // -- role change in one gesture: the menu describes each role the row offers (permissions.roles);
  // choosing one opens the confirmation at once, which states what they gain and lose by the matrix.
  // Nothing is pending: cancelling (or leaving the page) leaves the role as it was.
  roleMenu(m) {
    const roles = m.perms.roles || [];
    const ids = roles.includes(m.role) ? roles : [m.role, ...roles];
    return ids.map((id) => ({ id, label: this.label(id), description: (this.roleInfo[id] || {}).description || "", current: id === m.role }));
  },
  effect(from, to) {
    const a = (this.roleInfo[from] || {}).actions;
    const b = (this.roleInfo[to] || {}).actions;
    if (!a || !b) return null;
    const words = (id) => this.actionLabels[id] || id;
    const ids = this.actionOrder;
    return {
      gained: ids.filter((id) => id in b && !(id in a)).map(words),
      lost: ids.filter((id) => id in a && !(id in b)).map(words),
    };
  },
  consequence(m, role) {
    const who = m.display_name ? `${m.display_name} (${m.email})` : m.email;
    const lines = [`${who} goes from ${this.label(m.role)} to ${this.label(role)}.`];
    const eff = this.effect(m.role, role);
    if (eff) {
      lines.push(eff.gained.length ? `They gain ${plural(eff.gained.length, "permission")}: ${listed(eff.gained)}.` : "They gain no permission.");
      lines.push(eff.lost.length ? `They lose ${plural(eff.lost.length, "permission")}: ${listed(eff.lost)}.` : "They lose no permission.");
    }
    if (this.ranks[role] !== undefined && this.ranks[role] >= this.topRank()) {
      lines.push(`${this.label(role)} is the top role: full control of this workspace, including other owners' roles and your own membership.`);
    }
    lines.push("They are notified by email.");
    return lines.join("\n");
  },
  closeMenu(el) {
    el.open = false; // a click elsewhere or Escape closes the role menu
  },
  async chooseRole(m, role, event) {
    const menu = event.target.closest("details");
    if (menu) menu.open = false;
    if (role === m.role) return;
    const top = this.ranks[role] !== undefined && this.ranks[role] >= this.topRank();
    const yes = await confirmDialog({
      title: `Make ${m.display_name || m.email} ${this.label(role)}?`,
      text: this.consequence(m, role),
      ok: `Make ${this.label(role)}`,
      danger: top,
    });
    if (!yes) return;
    clearMessages();
    m.busy = true;
    guarded(async () => {
      const updated = await api("PATCH", `${wsApi}/members/${m.user_id}`, { role });
      await this.load(); // the row's offers follow the new role (and the sort may move it)
      say(`${m.email} is now ${this.label(updated.role)}.`);
    }).finally(() => {
      m.busy = false;
    });
  },
  // -- tabs
  showTab(name) {
    this.tab = name;
    if (name === "invitations") guarded(() => this.loadInvitations());
  },
  otherTab() {
    const name = this.tab === "members" ? "invitations" : "members";
    this.showTab(name);
    document.getElementById(`tab-${name}`).focus();
  },
  // -- invitations
  openInvite() {
    this.invite.role = this.assignable[0] || "";
    this.invite.results = [];
    this.invite.error = "";
    this.$refs.inviteDialog.showModal();
    this.$nextTick(() => this.$refs.inviteEmails.focus());
  },
  closeInvite() {
    this.$refs.inviteDialog.close();
  },
  sendInvites() {
    const inv = this.invite;
    inv.busy = true;
    inv.results = [];
    inv.error = "";
    const words = { invited: "invited", member: "already a member", invited_before: "already invited", invalid: "not a valid address" };
    api("POST", `${wsApi}/invitations`, { emails: inv.emails, role: inv.role, partial: true })
      .then(async (out) => {
        const results = out.results || out.invited;
        inv.results = results.map((r) => ({ ...r, words: `: ${words[r.status] || r.status}${r.message ? ` (${r.message})` : ""}` }));
        const ok = results.filter((r) => r.status === "invited").map((r) => r.email);
        inv.emails = (out.results || []).filter((r) => r.status === "invalid").map((r) => r.email).join("\n");
        await this.load();
        await this.loadInvitations();
        say(ok.length ? `Invited: ${ok.join(", ")}.` : "Nobody was invited.", ok.length ? "ok" : "info");
      })
      .catch((err) => (inv.error = problemWords(err)))
      .finally(() => (inv.busy = false));
  },
  async loadInvitations() {
    if (!this.$refs.invitations) return;
    const res = await api("GET", `${wsApi}/invitations`);
    this.invitations = res.items.map((i) => ({ ...i, expires: i.expired ? `expired ${fmtTime(i.expires_at)}` : fmtTime(i.expires_at) }));
  },
  resend(i) {
    guarded(async () => {
      const out = await api("POST", `${wsApi}/invitations/${i.id}/resend`);
      await this.loadInvitations();
      say(`A new sign-up link was sent to ${i.email} (expires ${fmtTime(out.expires_at)}).`);
    });
  },
  async revoke(i) {
    const yes = await confirmDialog({
      title: `Revoke the invitation of ${i.email}?`,
      text: "The sign-up link stops working at once. You can invite the address again afterwards.",
      ok: "Revoke",
      danger: true,
    });
    if (!yes) return;
    guarded(async () => {
      await api("DELETE", `${wsApi}/invitations/${i.id}`);
      await this.loadInvitations();
      say(`Revoked the invitation of ${i.email}.`);
    });
  },
  // -- danger zone: transfer ownership and delete, each with a typed confirmation
  async transfer() {
    const uid = Number(this.transferTo);
    const m = this.candidates.find((r) => r.user_id === uid);
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
  },
  async deleteWorkspace() {
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
  },
}));

// -- /w/<slug>/people/<id> -----------------------------------------------------------------------
// A member's page: the server decided who may open it (403 page otherwise); this loads what it shows.
Alpine.data("person", () => ({
  p: null,
  init() {
    const id = Number(this.$el.dataset.personId);
    loading(guarded(async () => (this.p = await api("GET", `${wsApi}/people/${id}`))));
  },
  initials,
  when: (iso) => fmtTime(iso).replace(/:\d\d UTC$/, " UTC"),
  unitHref: (u) => `/w/${enc(slug)}/${u.kind}s#${enc(u.name)}`,
  mayDoText() {
    const d = this.p.may_do;
    const extra = d.in_units.length ? ", and more within their groups or teams (below)" : "";
    return `As the workspace's policy decides it for them now: ${d.actions.length} of ${d.total} permissions${extra}.`;
  },
  auditWords(e) {
    const label = (r) => this.p.role_labels[r] || r;
    const change = e.before && e.after && e.before.role && e.after.role && e.before.role !== e.after.role ? `: ${label(e.before.role)} → ${label(e.after.role)}` : "";
    return `${e.label}${change}`;
  },
}));

// -- /w/<slug>/groups | teams -----------------------------------------------------------------------
// The template names the two relations (teachers/learners or managers/members); each unit carries
// Casbin's answers for this user (permissions.*), and the people picker offers only whom the server
// lets this user add.
Alpine.data("units", () => ({
  kind: body.dataset.kind,
  items: [],
  loaded: false,
  failed: false,
  create: { name: "", description: "", capacity: "" },
  init() {
    loading(guarded(() => this.load()).then((ok) => (this.failed = !ok)));
  },
  kinds() {
    return `${this.kind}s`;
  },
  base(u) {
    return `${wsApi}/${this.kinds()}/${enc(u.name)}`;
  },
  async load() {
    const res = await api("GET", `${wsApi}/${this.kinds()}`);
    const open = Object.fromEntries(this.items.map((u) => [u.name, u.ui]));
    this.items = res.items.map((u) => {
      const perms = u.permissions || {};
      const ui = { editing: false, description: u.description || "", capacity: u.capacity ? String(u.capacity) : "", found: {}, query: {} };
      if (open[u.name]) ui.query = open[u.name].query;
      return { ...u, perms, ui };
    });
    const rels = [this.rel("manager"), this.rel("member")];
    this.pages = await openPages(this.items.flatMap((u) => rels.flatMap((r) => this.people(u, r).map((p) => p.user_id))));
    this.loaded = true;
    return true;
  },
  pages: {},
  opens(p) {
    return Boolean(this.pages[p.user_id]);
  },
  personHref: (p) => personHref(p.user_id),
  showEmpty() {
    return this.failed || (this.loaded && !this.items.length);
  },
  emptyText() {
    if (this.failed) return `No ${this.kinds()} to show.`;
    return this.kind === "group" ? "You are in no group yet." : "You manage or belong to no team here.";
  },
  people(u, r) {
    return u[r] || [];
  },
  meta(u) {
    const members = u[this.rel("member")] || [];
    return [u.description, u.capacity ? `${members.length} of ${u.capacity} places` : "", u.archived ? "archived" : ""].filter(Boolean).join(" · ");
  },
  // data-member / data-manager on the root say which relation is which
  rel(which) {
    return this.$root.dataset[which];
  },
  mayAdd(u, r) {
    return !u.archived && (r === this.rel("member") ? u.perms.add_member : u.perms.add_manager);
  },
  mayRemove(u, r, p) {
    const list = (r === this.rel("member") ? u.perms.remove_member : u.perms.remove_manager) || [];
    return list.includes(p.user_id);
  },
  inUse(u) {
    return (u[this.rel("member")] || []).length + (u[this.rel("manager")] || []).length;
  },
  deleteLabel(u) {
    return this.inUse(u) ? `Delete ${u.name} (only when nobody is in it)` : `Delete ${u.name}`;
  },
  deleteTitle(u) {
    return this.inUse(u) ? `Only an empty ${this.kind} can be deleted; archive it instead` : "";
  },
  moveTargets(u, r) {
    if (r !== this.rel("member") || !u.perms.move) return [];
    return this.items.filter((o) => o.name !== u.name && !o.archived && o.perms.move);
  },
  async move(u, r, p, select) {
    const to = select.value;
    if (!to) return;
    const yes = await confirmDialog({ title: `Move ${p.email} to ${to}?`, text: `${p.email} leaves ${u.name} and joins ${to}.`, ok: `Move to ${to}` });
    select.value = "";
    if (!yes) return;
    guarded(async () => {
      clearMessages();
      await api("POST", `${this.base(u)}/${r}/${p.user_id}/move`, { to });
      await this.load();
      say(`${p.email} moved from ${u.name} to ${to}.`);
    });
  },
  async removePerson(u, r, one, p) {
    const yes = await confirmDialog({
      title: `Remove ${p.email} from ${u.name}?`,
      text: `${p.email} stays a member of the workspace but is no longer a ${one} of ${u.name}.`,
      ok: "Remove",
      danger: true,
    });
    if (!yes) return;
    guarded(async () => {
      clearMessages();
      await api("DELETE", `${this.base(u)}/${r}/${p.user_id}`);
      await this.load();
      say(`${p.email} left ${u.name}.`);
    });
  },
  found(u, r) {
    return u.ui.found[r];
  },
  search(u, r) {
    guarded(async () => {
      const q = (u.ui.query[r] || "").trim();
      const res = await api("GET", `${this.base(u)}/${r}/candidates?q=${enc(q)}`);
      u.ui.found[r] = res.items.map((p) => ({ ...p, shown: p.display_name && p.display_name !== p.email ? `${p.display_name} · ${p.email}` : p.email }));
    });
  },
  add(u, r, one, p) {
    guarded(async () => {
      clearMessages();
      await api("POST", `${this.base(u)}/${r}`, { user_ids: [p.user_id] });
      await this.load();
      say(`${p.email} is now a ${one} of ${u.name}.`);
    });
  },
  save(u) {
    const data = {};
    if (u.ui.description !== (u.description || "")) data.description = u.ui.description;
    if (u.perms.capacity && String(u.ui.capacity || "") !== String(u.capacity || "")) data.capacity = u.ui.capacity ? Number(u.ui.capacity) : null;
    if (!Object.keys(data).length) {
      u.ui.editing = false;
      return;
    }
    guarded(async () => {
      clearMessages();
      await api("PATCH", this.base(u), data);
      await this.load();
      say(`Saved ${u.name}.`);
    });
  },
  async archive(u) {
    const yes = await confirmDialog({
      title: `${u.archived ? "Unarchive" : "Archive"} ${u.name}?`,
      text: u.archived ? `${u.name} accepts people again.` : `Nobody can be added to ${u.name} while it is archived; its people stay.`,
      ok: u.archived ? "Unarchive" : "Archive",
    });
    if (!yes) return;
    guarded(async () => {
      clearMessages();
      await api("PATCH", this.base(u), { archived: !u.archived });
      await this.load();
      say(`${u.name} is ${u.archived ? "active again" : "archived"}.`);
    });
  },
  async remove(u) {
    const yes = await confirmDialog({ title: `Delete ${u.name}?`, text: `The ${this.kind} disappears for good.`, ok: "Delete", danger: true, typed: u.name });
    if (!yes) return;
    guarded(async () => {
      clearMessages();
      await api("DELETE", this.base(u));
      await this.load();
      say(`Deleted ${u.name}.`);
    });
  },
  createUnit() {
    clearMessages();
    const c = this.create;
    const data = { name: c.name.trim() };
    if (c.description.trim()) data.description = c.description.trim();
    if (c.capacity) data.capacity = Number(c.capacity);
    guarded(async () => {
      await api("POST", `${wsApi}/${this.kinds()}`, data);
      this.create = { name: "", description: "", capacity: "" };
      await this.load();
      say(`Created ${data.name}.`);
    });
  },
}));

// -- /platform/<pack> -------------------------------------------------------------------------------
Alpine.data("platform", () => ({
  pack: "",
  holders: [],
  create: { name: "", slug: "" },
  grant: { email: "" },
  init() {
    this.pack = this.$el.dataset.pack;
    if (this.$refs.holders) loading(guarded(() => this.loadHolders()));
  },
  createWorkspace() {
    clearMessages();
    const data = { pack: this.pack, name: this.create.name.trim(), slug: this.create.slug.trim() };
    guarded(async () => {
      const ws = await api("POST", "/api/workspaces", data);
      sayAfterReload(`Created ${ws.name} (${ws.slug}).`);
    });
  },
  saveSettings(form) {
    clearMessages();
    const name = form.elements.name.value.trim();
    if (name === form.dataset.name) {
      say("Nothing to change.", "info");
      return;
    }
    guarded(async () => {
      const ws = await api("PATCH", `/api/workspaces/${enc(form.dataset.slug)}`, { name });
      sayAfterReload(`Saved: the workspace ${ws.slug} is now called ${ws.name}.`);
    });
  },
  async loadHolders() {
    const res = await api("GET", `/api/platform/${enc(this.pack)}/roles`);
    this.holders = res.items.map((h) => ({ ...h, who: h.email || `#${h.user_id}`, me: h.user_id === myId }));
  },
  async revoke(h) {
    const yes = await confirmDialog({ title: `Revoke ${h.role} from ${h.email}?`, text: `${h.email} loses the platform role in every workspace of this pack.`, ok: "Revoke", danger: true });
    if (!yes) return;
    guarded(async () => {
      await api("DELETE", `/api/platform/${enc(this.pack)}/roles/${enc(h.role)}/${h.user_id}`);
      await this.loadHolders();
      say(`Revoked ${h.role} from ${h.email}.`);
    });
  },
  async grantRole() {
    const email = this.grant.email.trim();
    const role = this.$refs.grantRole.value;
    const yes = await confirmDialog({ title: `Grant ${role} to ${email}?`, text: `${email} gets the platform role in every workspace of this pack, now and later.`, ok: "Grant", danger: true });
    if (!yes) return;
    clearMessages();
    guarded(async () => {
      await api("POST", `/api/platform/${enc(this.pack)}/roles`, { email, role });
      this.grant.email = "";
      this.$refs.grantRole.selectedIndex = 0;
      await this.loadHolders();
      say(`${email} now holds ${role}.`);
    });
  },
}));

// One workspace's feature switches: pick any number (grouped by the seed's areas, with a search),
// then one save sends them together (all or none).
Alpine.data("switches", () => ({
  q: "",
  pending: {},
  busy: false,
  count() {
    return Object.keys(this.pending).length;
  },
  pendingText() {
    const n = this.count();
    return n ? `${n} unsaved ${n === 1 ? "change" : "changes"}` : "No unsaved changes";
  },
  changed(box) {
    const was = box.dataset.enabled === "1";
    if (box.checked === was) delete this.pending[box.dataset.feature];
    else this.pending[box.dataset.feature] = box.checked;
  },
  reset() {
    for (const box of this.$root.querySelectorAll("input.feature")) box.checked = box.dataset.enabled === "1";
    this.pending = {};
  },
  shown(label) {
    const q = this.q.trim().toLowerCase();
    return !q || label.dataset.label.includes(q);
  },
  areaShown(fieldset) {
    const q = this.q.trim().toLowerCase();
    return !q || [...fieldset.querySelectorAll("label[data-label]")].some((l) => l.dataset.label.includes(q));
  },
  nothingFound() {
    const q = this.q.trim().toLowerCase();
    return Boolean(q) && ![...this.$root.querySelectorAll("label[data-label]")].some((l) => l.dataset.label.includes(q));
  },
  async save() {
    const where = this.$root.dataset.slug;
    const on = Object.values(this.pending).filter(Boolean).length;
    const off = this.count() - on;
    const parts = [off ? `switch off ${plural(off, "feature")}` : "", on ? `switch on ${plural(on, "feature")}` : ""].filter(Boolean);
    const yes = await confirmDialog({
      title: `Save ${plural(this.count(), "change")} in ${where}?`,
      text: `This will ${parts.join(" and ")}. A switched-off feature is denied to every role of the workspace until it is switched on again.`,
      ok: "Save changes",
      danger: off > 0,
    });
    if (!yes) return;
    clearMessages();
    this.busy = true;
    guarded(async () => {
      const res = await api("PATCH", `/api/workspaces/${enc(where)}/features`, { switches: this.pending });
      for (const box of this.$root.querySelectorAll("input.feature")) {
        if (box.dataset.feature in res.changed) box.dataset.enabled = res.changed[box.dataset.feature] ? "1" : "0";
      }
      this.pending = {};
      say(`Saved ${plural(Object.keys(res.changed).length, "feature switch", "feature switches")} in ${where}.`);
    }).finally(() => (this.busy = false));
  },
}));

// -- /w/<slug>/audit ----------------------------------------------------------------------------------
const who = (u) => (u ? u.email || `#${u.id}` : "");

Alpine.data("audit", () => ({
  filters: { actor: "", action: "", since: "", until: "" },
  entries: [],
  before: null,
  loaded: false,
  labels: {},
  init() {
    loading(
      workspaceRoles()
        .then((r) => (this.labels = r.labels))
        .then(() => this.restart()),
    );
  },
  params() {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(this.filters)) if (v) p.set(k, v);
    return p;
  },
  csvHref() {
    const p = this.params();
    return `${wsApi}/audit.csv${p.toString() ? `?${p}` : ""}`;
  },
  // Before → after in words: role labels, group names, plain key: value otherwise.
  words(v) {
    if (v === null || v === undefined) return "";
    if (typeof v !== "object") return String(v);
    return Object.entries(v)
      .filter(([, x]) => x !== null && x !== undefined && x !== "")
      .map(([k, x]) => {
        const val = /role$/.test(k) ? this.labels[String(x)] || String(x) : Array.isArray(x) ? x.join(", ") || "none" : typeof x === "object" ? JSON.stringify(x) : String(x);
        return `${k.replace(/_/g, " ")}: ${val}`;
      })
      .join("; ");
  },
  row(e) {
    const where = [];
    if (e.target && /^(group|team|email):/.test(e.target)) where.push(e.target.replace(/^email:/, "").replace(/^(group|team):/, "$1 "));
    return {
      action: e.action,
      at: e.at,
      when: fmtTime(e.at),
      who: e.actor ? who(e.actor) : "system",
      whoId: e.actor ? e.actor.id : 0,
      whom: e.target_user ? who(e.target_user) : "",
      whomId: e.target_user ? e.target_user.id : 0,
      what: e.label || e.action,
      where: (e.target_user && where.length ? " in " : "") + where.join(" in "),
      change: [this.words(e.before), this.words(e.after)].filter(Boolean).join(" → "),
    };
  },
  async load() {
    const p = this.params();
    p.set("limit", "50");
    if (this.before) p.set("before", String(this.before));
    const res = await api("GET", `${wsApi}/audit?${p}`);
    const rows = res.items.map((e) => this.row(e));
    Object.assign(this.pages, await openPages(rows.flatMap((r) => [r.whoId, r.whomId])));
    this.entries.push(...rows);
    this.before = res.next_before;
    this.loaded = true;
  },
  more() {
    guarded(() => this.load());
  },
  // People's names link to their pages where the signed-in user may open them.
  pages: {},
  opens(id) {
    return Boolean(this.pages[id]);
  },
  personHref: (id) => personHref(id),
  restart() {
    this.entries = [];
    this.before = null;
    this.loaded = false;
    return guarded(() => this.load());
  },
  filter() {
    clearMessages();
    this.restart();
  },
}));
