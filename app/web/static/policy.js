// The policy workbench: packs, the live matrix with a draft, the draft panel, history with rollback,
// and the playground. Everything goes through /v1/policy/...; the server (Casbin, with the service
// meta-pack) decides what this user may do and checks it again on every request. The draft lives in
// sessionStorage and is never the live policy until an admin applies it.
"use strict";

(() => {
  const L = window.learnauthz;
  if (!L) return;
  const { api, el, $, say, showError, clearMessages, guarded, fmtTime } = L;
  const body = document.body;
  const page = body.dataset.page || "";
  const perms = body.dataset.perms ? JSON.parse(body.dataset.perms) : [];
  const can = (p) => perms.includes(p);
  const P = "/v1/policy";
  const KEY = "learnauthz.policy-draft";

  // -- the draft (a list of {op, rule: "p, ..."} changes) ------------------------------------------
  const draft = {
    list() {
      try {
        const v = JSON.parse(sessionStorage.getItem(KEY) || "[]");
        return Array.isArray(v) ? v : [];
      } catch (_) {
        return [];
      }
    },
    save(list) {
      sessionStorage.setItem(KEY, JSON.stringify(list));
      showCount();
      document.dispatchEvent(new CustomEvent("draft-changed"));
    },
    has(op, rule) {
      return this.list().findIndex((c) => c.op === op && norm(c.rule) === norm(rule));
    },
    add(op, rule) {
      const list = this.list();
      const opposite = this.has(op === "add" ? "remove" : "add", rule);
      if (opposite >= 0) list.splice(opposite, 1); // undoing a pending change
      else if (this.has(op, rule) < 0) list.push({ op, rule: norm(rule) });
      this.save(list);
    },
    removeAt(i) {
      const list = this.list();
      list.splice(i, 1);
      this.save(list);
    },
    clear() {
      this.save([]);
    },
  };
  const norm = (line) => String(line).split(",").map((x) => x.trim()).join(", ");

  function showCount() {
    const badge = $("#draft-count");
    if (!badge) return;
    const n = draft.list().length;
    badge.hidden = n === 0;
    badge.textContent = `Draft: ${n} change${n === 1 ? "" : "s"}`;
  }
  showCount();

  // The engine's symbols (as `flask policy matrix` prints them), shown with glyphs every font has
  // and read out as words.
  const glyph = (v) => String(v).replace(/✅/g, "✓");
  const WORDS = { "✅": "allowed", "✅*": "allowed only in groups or teams they manage", "✅†": "allowed for lower ranks only", "—": "not allowed" };
  const words = (v) => String(v).split(" → ").map((x) => WORDS[x] || x).join(", would become ");

  function ready() {
    body.setAttribute("data-ready", "1");
  }

  function flipRows(tbody, flips) {
    tbody.replaceChildren();
    for (const f of flips) {
      tbody.append(
        el(
          "tr",
          { "data-role": f.role, "data-action": f.action, "data-change": f.change },
          el("td", { text: f.pack }),
          el("td", { text: f.role }),
          el("td", {}, el("code", { text: f.action })),
          el("td", { class: `flip ${f.change}`, text: glyph(`${f.before} → ${f.after}`), title: words(`${f.before} → ${f.after}`) }),
          el("td", { text: `${f.users} in ${f.workspaces} workspace${f.workspaces === 1 ? "" : "s"}` }),
          el("td", { class: "people", text: (f.sample || []).join(", ") + (f.users > (f.sample || []).length ? ", …" : "") }),
        ),
      );
    }
    if (!flips.length) tbody.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "No role × action cell changes." })));
  }

  function problemList(box, problems) {
    const ul = box.querySelector("ul");
    ul.replaceChildren(...problems.map((p) => el("li", { text: p })));
    box.hidden = problems.length === 0;
  }

  // -- /policy ---------------------------------------------------------------------------------------
  async function initPacks() {
    const model = await api("GET", `${P}/model`);
    const tbody = $("#packs tbody");
    for (const [id, p] of Object.entries(model.packs)) {
      tbody.append(
        el(
          "tr",
          { "data-pack": id },
          el("td", {}, el("a", { href: `/policy/packs/${encodeURIComponent(id)}`, text: id })),
          el("td", { text: p.title }),
          el("td", { text: p.roles.map((r) => r.id).join(", ") }),
          el("td", { text: String(p.actions.length) }),
          el("td", { text: String(p.rules) }),
        ),
      );
    }
  }

  // -- /policy/packs/<pack> ----------------------------------------------------------------------------
  function drawGraph(roles, edges) {
    // Layers by rank (highest on top); arrows child → parent (the inherited role).
    const W = 420, rowH = 64, boxW = 120, boxH = 28;
    const ranks = [...new Set(roles.map((r) => r.rank))].sort((a, b) => b - a);
    const pos = {};
    ranks.forEach((rank, i) => {
      const layer = roles.filter((r) => r.rank === rank);
      layer.forEach((r, j) => {
        pos[r.id] = { x: ((j + 1) * W) / (layer.length + 1), y: 24 + i * rowH };
      });
    });
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${ranks.length * rowH + 10}`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", edges.map(([c, p]) => `${c} inherits ${p}`).join("; ") || "no inheritance");
    const defs = document.createElementNS(NS, "defs");
    const marker = document.createElementNS(NS, "marker");
    for (const [k, v] of Object.entries({ id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto" })) marker.setAttribute(k, v);
    const tip = document.createElementNS(NS, "path");
    tip.setAttribute("d", "M0,0 L10,5 L0,10 z");
    tip.setAttribute("class", "edge-tip");
    marker.append(tip);
    defs.append(marker);
    svg.append(defs);
    for (const [child, parent] of edges) {
      const a = pos[child], b = pos[parent];
      if (!a || !b) continue;
      const line = document.createElementNS(NS, "line");
      const dy = b.y > a.y ? boxH / 2 : -boxH / 2;
      for (const [k, v] of Object.entries({ x1: a.x, y1: a.y + dy, x2: b.x, y2: b.y - dy })) line.setAttribute(k, String(v));
      line.setAttribute("class", "edge");
      line.setAttribute("marker-end", "url(#arrow)");
      svg.append(line);
    }
    for (const r of roles) {
      const p = pos[r.id];
      const g = document.createElementNS(NS, "g");
      const rect = document.createElementNS(NS, "rect");
      for (const [k, v] of Object.entries({ x: p.x - boxW / 2, y: p.y - boxH / 2, width: boxW, height: boxH, rx: 6 })) rect.setAttribute(k, String(v));
      rect.setAttribute("class", r.platform ? "node platform" : "node");
      const text = document.createElementNS(NS, "text");
      text.setAttribute("x", String(p.x));
      text.setAttribute("y", String(p.y + 4));
      text.setAttribute("text-anchor", "middle");
      text.textContent = `${r.id} (${r.rank})`;
      g.append(rect, text);
      svg.append(g);
    }
    $("#role-graph").replaceChildren(svg);
  }

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

  async function initPack() {
    const packId = body.dataset.packId;
    const [model, gRules, g4Rules] = await Promise.all([
      api("GET", `${P}/model`),
      api("GET", `${P}/rules?pack=${encodeURIComponent(packId)}&type=g`),
      api("GET", `${P}/rules?pack=${encodeURIComponent(packId)}&type=g4`),
    ]);
    // Roles the pack reaches (g4, pack:<id>, <role>): a p rule of any other role needs that line too.
    const reached = new Set(g4Rules.rules.map((r) => r[2]));
    const info = model.packs[packId];
    $("#pack-title").textContent = info.title;
    const edges = gRules.rules.map((r) => [r[1].split(":")[2], r[2].split(":")[2]]);
    const rolesBody = $("#roles tbody");
    for (const r of [...info.roles].sort((a, b) => a.rank - b.rank)) {
      const inherits = edges.filter(([c]) => c === r.id).map(([, p]) => p);
      rolesBody.append(
        el("tr", { "data-role": r.id },
          el("td", {}, el("strong", { text: r.label }), " ", el("code", { text: r.id }), r.platform ? el("span", { class: "badge", text: "platform" }) : null),
          el("td", { text: String(r.rank) }),
          el("td", { text: inherits.join(", ") || "—" })),
      );
    }
    drawGraph(info.roles, edges);
    $("#grants").replaceChildren(...info.grants.map((g) => el("li", {},
      el("code", { text: g.role }), ` may grant ${g.may_grant.join(", ") || "—"}, may manage ${g.may_manage.join(", ") || "—"}: `,
      el("q", { text: g.why }))));
    $("#grants-box").hidden = !info.grants.length;
    $("#features").replaceChildren(...info.features.map((f) => el("li", {}, el("code", { text: f.id }), ` ${f.label}`)));
    $("#features-box").hidden = !info.features.length;
    $("#decisions").replaceChildren(...info.decisions.map((d) => el("li", { text: d })));

    let matrix = null;
    let flips = [];
    async function loadMatrix() {
      matrix = await api("GET", `${P}/matrix?pack=${encodeURIComponent(packId)}`);
      $("#matrix-revision").textContent = String(matrix.revision);
      renderMatrix();
    }
    function renderMatrix() {
      const head = el("tr", {}, el("th", { scope: "col", text: "Action" }));
      for (const r of matrix.roles) head.append(el("th", { scope: "col", text: r.label, title: `${r.id}, rank ${r.rank}` }));
      $("#matrix thead").replaceChildren(head);
      const tbody = $("#matrix tbody");
      tbody.replaceChildren();
      let section = null;
      const pending = new Map(flips.filter((f) => f.pack === packId).map((f) => [`${f.role}|${f.action}`, f]));
      for (const row of matrix.rows) {
        if (row.section && row.section !== section) {
          section = row.section;
          tbody.append(el("tr", { class: "section" }, el("th", { colspan: String(matrix.roles.length + 1), scope: "colgroup", text: section })));
        }
        const tr = el("tr", { "data-action": row.action },
          el("th", { scope: "row", title: row.source || "" }, el("span", { text: row.label }), " ", el("code", { class: "muted", text: row.action })));
        for (const r of matrix.roles) {
          const value = row.cells[r.id];
          const flip = pending.get(`${r.id}|${row.action}`);
          const shown = flip ? `${flip.before} → ${flip.after}` : value;
          const rules = (row.rules[r.id] || []).join("\n") || "no rule of its own (inherited or none)";
          const attrs = { class: `cell${flip ? " flipped" : ""}`, "data-role": r.id, "data-value": value, title: rules };
          if (can("propose_policy_change")) {
            tr.append(el("td", attrs, el("button", {
              type: "button", class: "cellbtn", text: glyph(shown),
              "aria-label": `${row.action} for ${r.id}: ${words(shown)}. Add the change to the draft`,
              onclick: () => toggle(row, r.id, value),
            })));
          } else {
            tr.append(el("td", attrs, el("span", { text: glyph(shown), "aria-label": words(shown) })));
          }
        }
        tbody.append(tr);
      }
    }
    function toggle(row, role, value) {
      const mine = row.rules[role] || [];
      const prio = rolePriority(matrix.rows, role);
      const base = `p, ${prio}, role:${packId}:${role}, ${row.action}, any, -`;
      const link = `g4, pack:${packId}, role:${packId}:${role}`;
      const allows = mine.filter((l) => l.endsWith("allow"));
      const denies = mine.filter((l) => l.endsWith("deny"));
      // Pending changes for this cell are undone first.
      const list = draft.list();
      const idx = list.findIndex((c) => c.rule.includes(`role:${packId}:${role},`) && c.rule.includes(`, ${row.action},`));
      if (idx >= 0) return draft.removeAt(idx);
      const addRule = (line) => {
        if (!reached.has(`role:${packId}:${role}`) && !draft.list().some((c) => c.rule === link)) draft.add("add", link);
        draft.add("add", line);
      };
      if (value === "—") {
        if (denies.length) denies.forEach((l) => draft.add("remove", l));
        else addRule(`${base}, allow`);
      } else if (allows.length) {
        allows.forEach((l) => draft.add("remove", l));
      } else {
        addRule(`${base}, deny`);
      }
    }
    await loadMatrix();
    if (!can("propose_policy_change")) return;

    const status = $("#draft-status");
    let seq = 0;
    async function check() {
      const mine = ++seq;
      const list = draft.list();
      const ul = $("#draft-changes");
      ul.replaceChildren(...list.map((c, i) => el("li", { "data-op": c.op },
        el("code", { class: c.op, text: `${c.op === "add" ? "+" : "−"} ${c.rule}` }), " ",
        el("button", { type: "button", class: "link danger", text: "drop", "aria-label": `Drop: ${c.op} ${c.rule}`, onclick: () => draft.removeAt(i) }))));
      if (!list.length) ul.append(el("li", { class: "muted", text: "No changes yet." }));
      const apply = $("#apply");
      if (apply) apply.disabled = true;
      flips = [];
      problemList($("#draft-problems"), []);
      $("#draft-impact").hidden = true;
      if (!list.length) {
        status.textContent = "";
        renderMatrix();
        return;
      }
      status.textContent = "Checking the draft…";
      const proposal = { changes: list };
      const v = await api("POST", `${P}/validate`, proposal);
      if (mine !== seq) return;
      if (!v.valid) {
        problemList($("#draft-problems"), v.problems);
        status.textContent = `${v.problems.length} problem${v.problems.length === 1 ? "" : "s"}: this draft cannot be applied.`;
        renderMatrix();
        return;
      }
      const p = await api("POST", `${P}/preview`, proposal);
      if (mine !== seq) return;
      flips = p.flips;
      flipRows($("#draft-flips tbody"), p.flips);
      $("#draft-impact").hidden = false;
      const people = p.flips.reduce((n, f) => n + f.users, 0);
      status.textContent = `Valid at revision ${p.revision}: ${p.flips.length} cell${p.flips.length === 1 ? "" : "s"} change, ${people} people affected.`;
      if (apply) apply.disabled = false;
      renderMatrix();
    }
    document.addEventListener("draft-changed", () => guarded(check));
    $("#rule-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const line = $("#rule-line").value.trim();
      if (!line) return;
      draft.add($("#rule-op").value, line);
      $("#rule-line").value = "";
    });
    $("#discard").addEventListener("click", () => draft.clear());
    const applyForm = $("#apply-form");
    applyForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (!can("apply_policy_change")) return;
      guarded(async () => {
        clearMessages();
        const res = await api("POST", `${P}/apply`, {
          changes: draft.list(),
          message: $("#apply-message").value.trim(),
          expected_revision: matrix.revision,
        });
        draft.clear();
        $("#apply-message").value = "";
        await loadMatrix();
        say(`Applied as revision ${res.revision} (${res.changes} rule change${res.changes === 1 ? "" : "s"}).`);
      });
    });
    await guarded(check);
  }

  // -- /policy/history ----------------------------------------------------------------------------------
  async function initHistory() {
    const tbody = $("#revisions tbody");
    let before = null;
    let target = null;
    async function load() {
      const q = new URLSearchParams({ limit: "25" });
      if (before) q.set("before", String(before));
      const res = await api("GET", `${P}/revisions?${q}`);
      for (const r of res.items) {
        const actions = el("td", { class: "actions" },
          el("button", { type: "button", class: "small", text: "Details", onclick: () => guarded(() => details(r.id)) }));
        if (can("propose_policy_change") && r.id > 1) {
          actions.append(" ", el("button", {
            type: "button", class: "small", text: `Preview rollback to #${r.id - 1}`,
            "aria-label": `Preview rolling back to revision ${r.id - 1}, before this one`,
            onclick: () => guarded(() => preview(r.id - 1)),
          }));
        }
        tbody.append(el("tr", { "data-revision": String(r.id), "data-kind": r.kind },
          el("td", { text: String(r.id) }),
          el("td", { class: "when", text: fmtTime(r.created_at) }),
          el("td", {}, el("code", { text: r.kind })),
          el("td", { text: r.message }),
          el("td", { text: r.actor || (r.actor_id ? `#${r.actor_id}` : "system") }),
          el("td", { text: String(r.changes) }),
          actions));
        before = r.id;
      }
      $("#more").hidden = res.items.length < 25;
    }
    async function details(n) {
      const r = await api("GET", `${P}/revisions/${n}`);
      $("#detail-title").textContent = `Revision ${r.id}: ${r.kind}${r.message ? ` — ${r.message}` : ""}`;
      $("#detail-changes").replaceChildren(...r.changes.map((c) =>
        el("li", {}, el("code", { class: c.op, text: `${c.op === "add" ? "+" : "−"} ${c.rule.join(", ")}` }))));
      if (!r.changes.length) $("#detail-changes").append(el("li", { class: "muted", text: "No rule changes (documents only)." }));
      $("#revision-detail").hidden = false;
    }
    async function preview(n) {
      target = n;
      const panel = $("#rollback-panel");
      panel.hidden = false;
      $("#rollback-title").textContent = `Roll back to revision ${n}`;
      $("#rollback-status").textContent = "Checking…";
      const btn = $("#rollback");
      if (btn) btn.disabled = true;
      const p = await api("POST", `${P}/rollback/preview`, { to_revision: n });
      problemList($("#rollback-problems"), p.problems);
      $("#rollback-changes").replaceChildren(
        ...p.added.map((r) => el("li", {}, el("code", { class: "add", text: `+ ${r.join(", ")}` }))),
        ...p.removed.map((r) => el("li", {}, el("code", { class: "remove", text: `− ${r.join(", ")}` }))),
      );
      flipRows($("#rollback-flips tbody"), p.flips);
      $("#rollback-status").textContent = p.valid
        ? `Verified: ${p.flips.length} cell${p.flips.length === 1 ? "" : "s"} would change.`
        : "This rollback would be refused: see the problems.";
      if (btn) btn.disabled = !p.valid;
      panel.scrollIntoView();
    }
    const form = $("#rollback-form");
    if (form) {
      const dialog = $("#rollback-confirm");
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        $("#confirm-text").textContent = `Every pack rule and document change after revision ${target} is undone, as a new revision. Memberships are kept.`;
        dialog.showModal();
      });
      dialog.addEventListener("close", () => {
        if (dialog.returnValue !== "ok") return;
        guarded(async () => {
          const res = await api("POST", `${P}/rollback`, { to_revision: target, message: $("#rollback-message").value.trim() });
          say(`Rolled back to revision ${target} as revision ${res.revision}.`);
          $("#rollback-panel").hidden = true;
          tbody.replaceChildren();
          before = null;
          await load();
        });
      });
    }
    $("#more").addEventListener("click", () => guarded(load));
    await load();
  }

  // -- /policy/playground --------------------------------------------------------------------------------
  const ATTRS = ["member", "new_role", "group", "team", "assignee", "owner"];
  async function initPlayground() {
    const form = $("#play-form");
    const model = await api("GET", `${P}/model`);
    const actions = new Set();
    for (const p of Object.values(model.packs)) for (const a of p.actions) actions.add(a.id);
    $("#actions").replaceChildren(...[...actions].sort().map((a) => el("option", { value: a })));
    const n = draft.list().length;
    $("#play-draft-count").textContent = n ? `(${n} change${n === 1 ? "" : "s"})` : "(the draft is empty)";
    const q = new URLSearchParams(location.search);
    for (const [k, v] of q) {
      const input = form.elements.namedItem(k);
      if (input && input.type === "checkbox") input.checked = v === "1";
      else if (input) input.value = v;
    }
    async function run() {
      const f = form.elements;
      const val = (k) => f.namedItem(k).value.trim();
      const query = new URLSearchParams();
      for (const k of ["subject", "workspace", "action", "type", "id", ...ATTRS]) if (val(k)) query.set(k, val(k));
      if (f.namedItem("draft").checked) query.set("draft", "1");
      history.replaceState(null, "", `${location.pathname}?${query}`);
      const check = { subject: /^\d+$/.test(val("subject")) ? Number(val("subject")) : val("subject"), workspace: val("workspace"), action: val("action") };
      const attributes = {};
      for (const k of ATTRS) if (val(k)) attributes[k] = /^\d+$/.test(val(k)) && ["member", "assignee", "owner"].includes(k) ? Number(val(k)) : val(k);
      if (val("type") || val("id") || Object.keys(attributes).length) check.resource = { type: val("type"), id: val("id"), attributes };
      if (f.namedItem("draft").checked) check.changes = draft.list();
      const d = await api("POST", `${P}/explain`, check);
      $("#play-verdict").textContent = `${d.allowed ? "Allowed" : "Denied"}${d.draft ? " on the draft" : ""}`;
      $("#play-verdict").className = d.allowed ? "allowed" : "denied";
      $("#play-reason").textContent = d.reason;
      $("#play-rule").textContent = d.rule ? d.rule.join(", ") : "no rule matched";
      $("#play-path").textContent = (d.role_path || []).join(" → ") || "—";
      $("#play-revision").textContent = String(d.revision);
      problemList($("#play-problems"), d.problems || []);
      $("#play-result").hidden = false;
    }
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearMessages();
      guarded(run);
    });
    if (q.get("subject") && q.get("workspace") && q.get("action")) await guarded(run);
  }

  const inits = { "policy-packs": initPacks, "policy-pack": initPack, "policy-history": initHistory, "policy-playground": initPlayground };
  if (inits[page]) Promise.resolve(guarded(inits[page])).finally(ready);
})();
