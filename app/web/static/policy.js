// The policy workbench as Alpine components: packs, the live matrix with a draft, the draft panel,
// change requests (submit, review, apply), history with rollback, and the playground. Everything goes
// through /v1/policy/...; the server (Casbin, with the service meta-pack) decides what this user may do
// (body[data-perms], from the decision core) and checks it again on every request. The draft is kept
// on the server for the signed-in user (PUT /v1/policy/draft): it follows them, never the browser tab,
// and is never the live policy until a change request made of it is approved and applied.
import { Alpine, api, clearMessages, confirmDialog, fmtTime, guarded, loading, plural, say } from "./lib.js";

const body = document.body;
const perms = body.dataset.perms ? JSON.parse(body.dataset.perms) : [];
const can = (p) => perms.includes(p);
const P = "/v1/policy";
const enc = encodeURIComponent;
try {
  sessionStorage.removeItem("learnauthz.policy-draft"); // where drafts lived before issue 26: leave nothing behind
} catch (_) {
  /* storage unavailable */
}

// -- the draft (a list of {op, rule: "p, ..."} changes), shared by every workbench page ---------------
const norm = (line) => String(line).split(",").map((x) => x.trim()).join(", ");

let saving = Promise.resolve();
Alpine.store("draft", {
  list: [],
  // Loaded once per page from the server (editors only); components await it before checking.
  loaded: can("propose_policy_change")
    ? api("GET", `${P}/draft`).then((d) => d.changes.filter((c) => typeof c.rule === "string")).catch(() => [])
    : Promise.resolve([]),
  init() {
    this.loaded.then((list) => {
      this.list = list;
      document.dispatchEvent(new CustomEvent("draft-changed"));
    });
  },
  save(list) {
    this.list = list;
    const changes = list.map((c) => ({ op: c.op, rule: c.rule }));
    saving = saving.then(() => guarded(() => api("PUT", `${P}/draft`, { changes })));
    document.dispatchEvent(new CustomEvent("draft-changed"));
    return saving;
  },
  find(op, rule) {
    return this.list.findIndex((c) => c.op === op && norm(c.rule) === norm(rule));
  },
  add(op, rule) {
    const list = [...this.list];
    const opposite = this.find(op === "add" ? "remove" : "add", rule);
    if (opposite >= 0) list.splice(opposite, 1); // undoing a pending change
    else if (this.find(op, rule) < 0) list.push({ op, rule: norm(rule) });
    this.save(list);
  },
  removeAt(i) {
    this.save(this.list.filter((_, j) => j !== i));
  },
  clear() {
    return this.save([]);
  },
  countText() {
    return `Draft: ${plural(this.list.length, "change")}`;
  },
});
const draft = () => Alpine.store("draft");

// The engine's symbols (as `flask policy matrix` prints them), shown with glyphs every font has
// and read out as words.
const glyph = (v) => String(v).replace(/✅/g, "✓");
const WORDS = { "✅": "allowed", "✅*": "allowed only in groups or teams they manage", "✅†": "allowed for lower ranks only", "✅ᶜ": "allowed when the rule's condition holds", "—": "not allowed" };
const words = (v) => String(v).split(" → ").map((x) => WORDS[x] || x).join(", would become ");

// Rows of a "decisions that change" table (draft preview and rollback preview).
const flipRows = (flips) =>
  flips.map((f) => ({
    ...f,
    shown: glyph(`${f.before} → ${f.after}`),
    spoken: words(`${f.before} → ${f.after}`),
    people: `${f.users} in ${plural(f.workspaces, "workspace")}`,
    names: (f.sample || []).length ? f.sample.join(", ") + (f.users > f.sample.length ? ", …" : "") : "—",
  }));

const ruleText = (c) => `${c.op === "add" ? "+" : "−"} ${Array.isArray(c.rule) ? c.rule.join(", ") : c.rule}`;

// -- /policy ---------------------------------------------------------------------------------------
Alpine.data("policyPacks", () => ({
  packs: [],
  init() {
    loading(
      guarded(async () => {
        const model = await api("GET", `${P}/model`);
        this.packs = Object.entries(model.packs).map(([id, p]) => ({
          id,
          href: `/policy/packs/${enc(id)}`,
          title: p.title,
          roles: p.roles.map((r) => r.id).join(", "),
          actions: p.actions.length,
          rules: p.rules,
        }));
      }),
    );
  },
}));

// -- /policy/packs/<pack> ----------------------------------------------------------------------------
// The inheritance graph is SVG, which Alpine's <template x-for> cannot fill: drawn here, layered by
// rank (highest on top), arrows child → parent (the inherited role).
function drawGraph(target, roles, edges) {
  const W = 420, rowH = 64, boxW = 120, boxH = 28;
  const NS = "http://www.w3.org/2000/svg";
  const node = (tag, attrs) => {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    return n;
  };
  const ranks = [...new Set(roles.map((r) => r.rank))].sort((a, b) => b - a);
  const pos = {};
  ranks.forEach((rank, i) => {
    const layer = roles.filter((r) => r.rank === rank);
    layer.forEach((r, j) => (pos[r.id] = { x: ((j + 1) * W) / (layer.length + 1), y: 24 + i * rowH }));
  });
  const label = edges.map(([c, p]) => `${c} inherits ${p}`).join("; ") || "no inheritance";
  const svg = node("svg", { viewBox: `0 0 ${W} ${ranks.length * rowH + 10}`, role: "img", "aria-label": label });
  const marker = node("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(node("path", { d: "M0,0 L10,5 L0,10 z", class: "edge-tip" }));
  const defs = node("defs", {});
  defs.append(marker);
  svg.append(defs);
  for (const [child, parent] of edges) {
    const a = pos[child], b = pos[parent];
    if (!a || !b) continue;
    const dy = b.y > a.y ? boxH / 2 : -boxH / 2;
    svg.append(node("line", { x1: a.x, y1: a.y + dy, x2: b.x, y2: b.y - dy, class: "edge", "marker-end": "url(#arrow)" }));
  }
  for (const r of roles) {
    const p = pos[r.id];
    const g = node("g", {});
    const text = node("text", { x: p.x, y: p.y + 4, "text-anchor": "middle" });
    text.textContent = `${r.id} (${r.rank})`;
    g.append(node("rect", { x: p.x - boxW / 2, y: p.y - boxH / 2, width: boxW, height: boxH, rx: 6, class: r.platform ? "node platform" : "node" }), text);
    svg.append(g);
  }
  target.replaceChildren(svg);
}

// The priority most of a role's rules use (a new rule of the role gets the same).
function rolePriority(rows, role) {
  const counts = {};
  for (const row of rows) {
    for (const line of row.rules[role] || []) {
      const prio = line.split(",")[1].trim();
      counts[prio] = (counts[prio] || 0) + 1;
    }
  }
  const best = Object.entries(counts).sort((a, b) => b[1] - a[1])[0];
  return best ? best[0] : "90";
}

Alpine.data("policyPack", () => ({
  packId: "",
  info: null,
  roles: [],
  reached: new Set(),
  matrix: null,
  flips: [],
  // the draft panel
  rule: { op: "add", line: "" },
  status: "",
  problems: [],
  impact: [],
  valid: false,
  message: "",
  crTitle: "",
  crWhy: "",
  seq: 0,
  canPropose: can("propose_policy_change"),
  init() {
    this.packId = this.$el.dataset.packId;
    loading(guarded(() => this.load()));
  },
  async load() {
    const id = enc(this.packId);
    const [model, gRules, g4Rules] = await Promise.all([
      api("GET", `${P}/model`),
      api("GET", `${P}/rules?pack=${id}&type=g`),
      api("GET", `${P}/rules?pack=${id}&type=g4`),
    ]);
    // Roles the pack reaches (g4, pack:<id>, <role>): a p rule of any other role needs that line too.
    this.reached = new Set(g4Rules.rules.map((r) => r[2]));
    const info = model.packs[this.packId];
    const edges = gRules.rules.map((r) => [r[1].split(":")[2], r[2].split(":")[2]]);
    this.roles = [...info.roles]
      .sort((a, b) => a.rank - b.rank)
      .map((r) => ({ ...r, inherits: edges.filter(([c]) => c === r.id).map(([, p]) => p).join(", ") || "—" }));
    this.info = {
      title: info.title,
      grants: info.grants.map((g) => ({ ...g, grants: ` may grant ${g.may_grant.join(", ") || "—"}, may manage ${g.may_manage.join(", ") || "—"}: ` })),
      features: info.features,
      decisions: info.decisions,
    };
    drawGraph(this.$refs.graph, info.roles, edges);
    await this.loadMatrix();
    if (this.canPropose) {
      document.addEventListener("draft-changed", () => guarded(() => this.check()));
      await draft().loaded;
      await guarded(() => this.check());
    }
  },
  async loadMatrix() {
    this.matrix = await api("GET", `${P}/matrix?pack=${enc(this.packId)}`);
  },
  revision() {
    return this.matrix ? String(this.matrix.revision) : "";
  },
  columns() {
    return this.matrix ? this.matrix.roles : [];
  },
  // Rows grouped by section, one <tbody> each.
  sections() {
    if (!this.matrix) return [];
    const out = [];
    for (const row of this.matrix.rows) {
      if (!out.length || (row.section && row.section !== out[out.length - 1].name)) out.push({ name: row.section || "", rows: [] });
      out[out.length - 1].rows.push(row);
    }
    return out;
  },
  cell(row, role) {
    const value = row.cells[role.id];
    const flip = this.flips.find((f) => f.pack === this.packId && f.role === role.id && f.action === row.action);
    const shown = flip ? `${flip.before} → ${flip.after}` : value;
    return {
      value,
      flipped: Boolean(flip),
      text: glyph(shown),
      spoken: words(shown),
      label: `${row.action} for ${role.id}: ${words(shown)}. Add the change to the draft`,
      rules: (row.rules[role.id] || []).join("\n") || "no rule of its own (inherited or none)",
    };
  },
  toggle(row, role) {
    const value = row.cells[role];
    const mine = row.rules[role] || [];
    const prio = rolePriority(this.matrix.rows, role);
    const base = `p, ${prio}, role:${this.packId}:${role}, ${row.action}, any, -`;
    const link = `g4, pack:${this.packId}, role:${this.packId}:${role}`;
    const d = draft();
    // Pending changes for this cell are undone first.
    const idx = d.list.findIndex((c) => c.rule.includes(`role:${this.packId}:${role},`) && c.rule.includes(`, ${row.action},`));
    if (idx >= 0) return d.removeAt(idx);
    const addRule = (line) => {
      if (!this.reached.has(`role:${this.packId}:${role}`) && !d.list.some((c) => c.rule === link)) d.add("add", link);
      d.add("add", line);
    };
    const allows = mine.filter((l) => l.endsWith("allow"));
    const denies = mine.filter((l) => l.endsWith("deny"));
    if (value === "—") {
      if (denies.length) denies.forEach((l) => d.add("remove", l));
      else addRule(`${base}, allow`);
    } else if (allows.length) {
      allows.forEach((l) => d.add("remove", l));
    } else {
      addRule(`${base}, deny`);
    }
    return undefined;
  },
  // -- the draft: validated, then previewed, on every change
  changes() {
    return draft().list.map((c, i) => ({ ...c, i, text: ruleText(c), drop: `Drop: ${c.op} ${c.rule}` }));
  },
  drop(c) {
    draft().removeAt(c.i);
  },
  addLine() {
    const line = this.rule.line.trim();
    if (!line) return;
    draft().add(this.rule.op, line);
    this.rule.line = "";
  },
  discard() {
    draft().clear();
  },
  async check() {
    const mine = ++this.seq;
    const list = draft().list;
    this.valid = false;
    this.flips = [];
    this.problems = [];
    this.impact = [];
    if (!list.length) {
      this.status = "";
      return;
    }
    this.status = "Checking the draft…";
    await saving; // "Valid" also means saved for this user
    if (mine !== this.seq) return;
    const proposal = { changes: list };
    const v = await api("POST", `${P}/validate`, proposal);
    if (mine !== this.seq) return;
    if (!v.valid) {
      this.problems = v.problems;
      this.status = `${plural(v.problems.length, "problem")}: this draft cannot be applied.`;
      return;
    }
    const p = await api("POST", `${P}/preview`, proposal);
    if (mine !== this.seq) return;
    this.flips = p.flips;
    this.impact = flipRows(p.flips);
    const people = p.flips.reduce((n, f) => n + f.users, 0);
    this.status = `Valid at revision ${p.revision}: ${plural(p.flips.length, "cell")} change, ${people} people affected.`;
    this.valid = true;
  },
  // The impact in one sentence, for the confirmation and the change request.
  impactText() {
    const people = this.flips.reduce((n, f) => n + f.users, 0);
    const cells = this.flips.map((f) => `${f.role} ${f.change === "gain" ? "gains" : f.change === "lose" ? "loses" : "changes"} ${f.action}`);
    return `${plural(this.flips.length, "cell")} change (${cells.slice(0, 4).join("; ")}${cells.length > 4 ? "; …" : ""}), ${people} people affected.`;
  },
  async apply() {
    if (!can("apply_policy_change")) return;
    const yes = await confirmDialog({
      title: "Apply this draft to the live policy?",
      text: `${this.impactText()} It becomes a new revision at once, without review; every decision after it uses it.`,
      ok: "Apply now",
      danger: true,
    });
    if (!yes) return;
    guarded(async () => {
      clearMessages();
      const res = await api("POST", `${P}/apply`, { changes: draft().list, message: this.message.trim(), expected_revision: this.matrix.revision });
      await draft().clear();
      this.message = "";
      await this.loadMatrix();
      say(`Applied as revision ${res.revision} (${plural(res.changes, "rule change")}).`);
    });
  },
  // Submit the draft for review: it becomes a change request (and the draft is empty again).
  submit() {
    guarded(async () => {
      clearMessages();
      await saving;
      const cr = await api("POST", `${P}/change-requests`, { title: this.crTitle.trim(), why: this.crWhy.trim() });
      location.assign(`/policy/changes/${cr.id}`);
    });
  },
}));

// -- /policy/changes --------------------------------------------------------------------------------------
const STATUS_WORDS = { open: "Open", applied: "Applied", rejected: "Rejected" };
const approvalText = (cr) => `${cr.approvals.length} of ${cr.approvals_required}`;

Alpine.data("changeRequests", () => ({
  items: [],
  status: "open",
  init() {
    const q = new URLSearchParams(location.search);
    if (q.has("status")) this.status = q.get("status");
    loading(guarded(() => this.load()));
  },
  async load() {
    const q = this.status ? `?status=${enc(this.status)}` : "";
    const res = await api("GET", `${P}/change-requests${q}`);
    this.items = res.items.map((cr) => ({
      ...cr,
      href: `/policy/changes/${cr.id}`,
      state: STATUS_WORDS[cr.status] || cr.status,
      when: fmtTime(cr.updated_at),
      approved: approvalText(cr),
      checks: cr.valid ? "Passed" : "Problems",
    }));
  },
  filter() {
    history.replaceState(null, "", `${location.pathname}${this.status ? `?status=${enc(this.status)}` : ""}`);
    guarded(() => this.load());
  },
}));

// -- /policy/changes/<id> ---------------------------------------------------------------------------------
Alpine.data("changeRequest", () => ({
  id: "",
  cr: null,
  comment: "",
  message: "",
  init() {
    this.id = this.$el.dataset.crId;
    loading(guarded(() => this.load()));
  },
  async load() {
    this.show(await api("GET", `${P}/change-requests/${enc(this.id)}`));
  },
  show(cr) {
    const c = cr.checks || {};
    const replay = c.replay;
    const people = (c.flips || []).reduce((n, f) => n + f.users, 0);
    this.cr = {
      ...cr,
      state: STATUS_WORDS[cr.status] || cr.status,
      approved: approvalText(cr),
      rules: [...(c.added || []).map((rule) => ({ op: "add", text: `+ ${rule}` })), ...(c.removed || []).map((rule) => ({ op: "remove", text: `− ${rule}` }))],
      problems: c.problems || [],
      tests: c.tests || [],
      allProblems: [...(c.problems || []), ...(c.tests || [])],
      verifier: (c.problems || []).length ? `${plural(c.problems.length, "problem")}` : "No escalation: the verifier found nothing",
      testsText: (c.tests || []).length ? `${plural(c.tests.length, "policy test")} would fail` : "Every policy test still passes",
      flips: flipRows((c.flips || []).map((f) => ({ ...f, sample: [] }))),
      impact: c.valid ? `${plural((c.flips || []).length, "cell")} change, ${people} people affected` : "Not previewed: the change is invalid",
      replayText: !replay
        ? "No replay (the change is invalid)."
        : !replay.logged
        ? "No recent decisions logged by this server process yet: nothing to replay."
        : `Of the last ${replay.replayed.toLocaleString("en")} decisions in the edited packs (${replay.logged.toLocaleString("en")} logged), ${replay.flipped.toLocaleString("en")} would flip.`,
      replaySample: replay ? replay.sample.map((s) => `${s.subject} · ${s.workspace} · ${s.action}: ${s.allowed_after ? "denied → allowed" : "allowed → denied"}`) : [],
      stale: cr.status === "open" && cr.base_revision !== cr.current_revision,
      events: cr.events.map((e) => ({ ...e, when: fmtTime(e.created_at), what: EVENT_WORDS[e.kind] || e.kind })),
      need: Math.max(0, cr.approvals_required - cr.approvals.length),
    };
  },
  post(path, payload) {
    return guarded(async () => {
      clearMessages();
      const cr = await api("POST", `${P}/change-requests/${enc(this.id)}/${path}`, payload);
      this.show(cr);
      return cr;
    });
  },
  async addComment() {
    const text = this.comment.trim();
    if (!text) return;
    if (await this.post("comments", { body: text })) this.comment = "";
  },
  async approve() {
    if (await this.post("approve", { comment: this.comment.trim() })) {
      this.comment = "";
      say("Approved.");
    }
  },
  async reject() {
    const yes = await confirmDialog({ title: "Reject this change request?", text: "It is closed without changing the policy.", ok: "Reject", danger: true });
    if (yes && (await this.post("reject", { comment: this.comment.trim() }))) {
      this.comment = "";
      say("Rejected.");
    }
  },
  async apply() {
    const cr = this.cr;
    const yes = await confirmDialog({
      title: `Apply change request #${cr.id}?`,
      text: `${cr.impact}. ${cr.replayText}${cr.stale ? ` The policy moved on since revision ${cr.base_revision}: it is checked again first.` : ""} It becomes a new revision at once.`,
      ok: "Apply",
      danger: true,
    });
    if (!yes) return;
    guarded(async () => {
      clearMessages();
      const res = await api("POST", `${P}/change-requests/${enc(this.id)}/apply`, { message: this.message.trim() });
      await this.load();
      say(`Applied as revision ${res.revision} (${plural(res.changes, "rule change")}).`);
    });
  },
}));
const EVENT_WORDS = { submitted: "submitted it", updated: "changed the rules", edited: "edited the text", comment: "commented", approved: "approved", rejected: "rejected it", applied: "applied it" };

// Revision kinds in words (the code stays in data-kind).
const KIND_WORDS = {
  "policy-edit": "Policy edit",
  "policy-rollback": "Rollback",
  import: "Import from files",
  member: "Membership",
  group: "Group",
  team: "Team",
  platform: "Platform role",
  "user-change": "Account",
  seed: "Demo data",
  workspace: "Workspace",
  feature: "Feature switch",
  "token-revoke": "Token revoked",
};

// -- /policy/history ----------------------------------------------------------------------------------
Alpine.data("policyHistory", () => ({
  revisions: [],
  more: false,
  detail: null,
  rollback: null,
  message: "",
  category: "policy",
  canPropose: can("propose_policy_change"),
  init() {
    const q = new URLSearchParams(location.search);
    if (["policy", "membership", "settings", "all"].includes(q.get("category"))) this.category = q.get("category");
    loading(guarded(() => this.load()));
  },
  filter() {
    history.replaceState(null, "", `${location.pathname}${this.category === "policy" ? "" : `?category=${this.category}`}`);
    this.revisions = [];
    this.detail = null;
    this.rollback = null;
    guarded(() => this.load());
  },
  async load() {
    const q = new URLSearchParams({ limit: "25", category: this.category });
    if (this.revisions.length) q.set("before", String(this.revisions[this.revisions.length - 1].id));
    const res = await api("GET", `${P}/revisions?${q}`);
    this.revisions.push(
      ...res.items.map((r) => ({
        ...r,
        when: fmtTime(r.created_at),
        kindText: KIND_WORDS[r.kind] || r.kind,
        by: r.actor || (r.actor_id ? `#${r.actor_id}` : "system"),
        rollbackTo: this.canPropose && r.rollback && r.id > 1 ? r.id - 1 : 0,
      })),
    );
    this.more = res.items.length === 25;
  },
  older() {
    guarded(() => this.load());
  },
  details(r) {
    guarded(async () => {
      const d = await api("GET", `${P}/revisions/${r.id}`);
      this.detail = { title: `Revision ${d.id}: ${d.kind}${d.message ? ` — ${d.message}` : ""}`, changes: d.changes.map((c) => ({ op: c.op, text: ruleText(c) })) };
    });
  },
  preview(r) {
    const n = r.rollbackTo;
    this.rollback = { to: n, status: "Checking…", valid: false, problems: [], changes: [], flips: [] };
    guarded(async () => {
      const p = await api("POST", `${P}/rollback/preview`, { to_revision: n });
      this.rollback = {
        to: n,
        valid: p.valid,
        problems: p.problems,
        changes: [...p.added.map((rule) => ({ op: "add", text: ruleText({ op: "add", rule }) })), ...p.removed.map((rule) => ({ op: "remove", text: ruleText({ op: "remove", rule }) }))],
        flips: flipRows(p.flips),
        status: p.valid ? `Verified: ${plural(p.flips.length, "cell")} would change.` : "This rollback would be refused: see the problems.",
      };
      await this.$nextTick();
      this.$refs.rollbackPanel.scrollIntoView();
    });
  },
  async confirmRollback() {
    const target = this.rollback.to;
    const yes = await confirmDialog({
      title: "Roll back?",
      text: `Every pack rule and document change after revision ${target} is undone, as a new revision. Memberships are kept.`,
      ok: "Roll back",
      danger: true,
    });
    if (!yes) return;
    guarded(async () => {
      const res = await api("POST", `${P}/rollback`, { to_revision: target, message: this.message.trim() });
      say(`Rolled back to revision ${target} as revision ${res.revision}.`);
      this.rollback = null;
      this.revisions = [];
      await this.load();
    });
  },
}));

// -- /policy/playground --------------------------------------------------------------------------------
const ATTRS = ["member", "new_role", "group", "team", "assignee", "owner"];
const FIELDS = ["subject", "workspace", "action", "type", "id", ...ATTRS];

Alpine.data("policyPlayground", () => ({
  f: Object.fromEntries([...FIELDS.map((k) => [k, ""]), ["draft", false]]),
  actions: [],
  result: null,
  init() {
    const q = new URLSearchParams(location.search);
    for (const k of FIELDS) if (q.has(k)) this.f[k] = q.get(k);
    this.f.draft = q.get("draft") === "1";
    loading(
      guarded(async () => {
        const model = await api("GET", `${P}/model`);
        const actions = new Set();
        for (const p of Object.values(model.packs)) for (const a of p.actions) actions.add(a.id);
        this.actions = [...actions].sort();
        await draft().loaded;
        if (q.get("subject") && q.get("workspace") && q.get("action")) await this.run();
      }),
    );
  },
  draftCount() {
    const n = draft().list.length;
    return n ? `(${plural(n, "change")})` : "(the draft is empty)";
  },
  async run() {
    const val = (k) => String(this.f[k] || "").trim();
    const query = new URLSearchParams();
    for (const k of FIELDS) if (val(k)) query.set(k, val(k));
    if (this.f.draft) query.set("draft", "1");
    history.replaceState(null, "", `${location.pathname}?${query}`);
    const check = { subject: /^\d+$/.test(val("subject")) ? Number(val("subject")) : val("subject"), workspace: val("workspace"), action: val("action") };
    const attributes = {};
    for (const k of ATTRS) if (val(k)) attributes[k] = /^\d+$/.test(val(k)) && ["member", "assignee", "owner"].includes(k) ? Number(val(k)) : val(k);
    if (val("type") || val("id") || Object.keys(attributes).length) check.resource = { type: val("type"), id: val("id"), attributes };
    if (this.f.draft) check.changes = draft().list;
    const d = await api("POST", `${P}/explain`, check);
    this.result = {
      verdict: `${d.allowed ? "Allowed" : "Denied"}${d.draft ? " on the draft" : ""}`,
      cls: d.allowed ? "allowed" : "denied",
      reason: d.reason,
      rule: d.rule ? d.rule.join(", ") : "no rule matched",
      // the path starts at the subject's key (user:<id>): show the person as they were asked for
      path: (d.role_path || []).map((k) => (/^user:\d+$/.test(k) ? (/^\d+$/.test(val("subject")) ? `user #${k.slice(5)}` : val("subject")) : k)).join(" → ") || "—",
      revision: String(d.revision),
      problems: d.problems || [],
    };
  },
  explain() {
    clearMessages();
    guarded(() => this.run());
  },
}));
