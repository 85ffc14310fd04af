// gpuq's web page: the REST API, polled every 2 s. No framework, no build step, nothing
// fetched from outside this server. Text from jobs (run ids, users, output) is only ever
// set as textContent, never as HTML: a job's fields are user input.
"use strict";

const REFRESH_MS = 2000;
const HISTORY_MS = 10000;
const TOKEN_KEY = "gpuq-token"; // sessionStorage: gone when the browser tab closes

const $ = (sel, root = document) => root.querySelector(sel);
let me = null; // {user, role} once signed in
let timer = null;
let lastHistory = 0;
let log = { job: null, offset: 0 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class ApiError extends Error {
  constructor(status, detail) {
    const text = Array.isArray(detail) ? detail.map((d) => `${d.field}: ${d.message}`).join("; ") : String(detail);
    super(text);
    this.status = status;
  }
}

// Paths are relative to the page, so gpuq also works behind a proxy under a path prefix.
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new ApiError(res.status, (body && body.detail) || res.statusText);
  return body;
}

function banner(message) {
  const b = $("#banner");
  b.hidden = !message;
  b.textContent = message || "";
}

// --- formatting -----------------------------------------------------------------------

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  seconds = Math.max(0, Math.round(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function when(epoch) {
  if (!epoch) return "–";
  const now = Date.now() / 1000;
  return epoch <= now + 1 ? "now" : `in ${duration(epoch - now)}`;
}

function clock(epoch) { return new Date(epoch * 1000).toLocaleTimeString(); }

function percent(x) { return `${Math.round(x * 100)}%`; }

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
  if (!rows.length) {
    const cols = tbody.closest("table").querySelectorAll("thead th").length;
    tbody.append(el("tr", {}, el("td", { colspan: cols, class: "empty", text: "none" })));
  }
}

function jobLink(job) { return el("a", { href: `#/job/${job.id}`, text: job.run_id }); }

// --- the dashboard -------------------------------------------------------------------

function showStatus(s) {
  const r = s.resource_summary, q = s.queue_summary;
  const set = (key, value) => { $(`[data-stat="${key}"]`).textContent = value; };
  set("total_gpus", r.total_gpus);
  set("available_gpus", r.available_gpus);
  set("allocated_gpus", r.allocated_gpus);
  set("utilization", percent(r.total_gpus ? r.allocated_gpus / r.total_gpus : 0));
  for (const k of ["queued", "running", "completed", "failed"]) set(k, q[k]);
  const w = s.details.queue_wait;
  set("wait_avg", w.jobs ? duration(w.avg_s) : "–");
  set("wait_max", w.jobs ? duration(w.max_s) : "–");
  // Why GPUs are unavailable, with counts: down (node lost), unhealthy, drained.
  const why = [["down", s.details.down_gpus], ["unhealthy", s.details.unhealthy_gpus], ["drained", s.details.drained_gpus]]
    .filter(([, n]) => n).map(([w, n]) => `${n} ${w}`);
  const nodes = (s.details.down_nodes || []).length ? ` (down: ${s.details.down_nodes.join(", ")})` : "";
  // A fencing node's jobs may still run there; they are requeued when its fence ends.
  const fencing = Object.entries(s.details.fencing || {})
    .map(([n, at]) => `; ${n} fencing: its jobs are requeued at ${new Date(at * 1000).toLocaleTimeString()}`).join("");
  set("out_of_service", why.length ? why.join(", ") + nodes + fencing : "none");
  // GPUs busy while some job waited, the last 24 h, and where the idle time went.
  const busy = s.details.busy_while_waiting;
  const waited = busy && busy.utilization_while_waiting !== null;
  set("busy_while_waiting", waited ? percent(busy.utilization_while_waiting) : "–");
  set("idle_causes", waited
    ? (busy.text.split("; ")[1] || "no GPU idle") : "no job waited");
  const sources = s.details.telemetry || [];
  $("#telemetry-note").textContent = sources.includes("simulated")
    ? "Telemetry is simulated on nodes without NVML." : "";
}

function gpuClass(g) {
  if (g.state === "allocated") return g.idle ? "idle" : "allocated";
  if (g.state === "drained" || g.state === "draining") return "draining";
  return g.state; // free, unhealthy, down
}

function gpuText(g, node) {
  const parts = [`${g.name}: ${g.state}`];
  if (g.run_id) parts.push(`job ${g.run_id} of ${g.user}`);
  if (g.idle) parts.push("idle");
  if (g.telemetry) parts.push(`utilization ${percent(g.telemetry.utilization)} (${node.telemetry.source})`);
  if (g.out_of_service) parts.push(`${g.out_of_service.reason} (by ${g.out_of_service.by})`);
  return parts.join(" · ");
}

function showGpu(g, node) {
  const detail = $("#gpu-detail");
  detail.replaceChildren(gpuText(g, node));
  if (g.job_id) detail.append(" ", el("a", { href: `#/job/${g.job_id}`, text: "open job" }));
}

function showGrid(resources) {
  const rows = resources.nodes.map((node) => el("div", { class: "node" },
    el("div", { class: "node-name", text: node.state === "up" ? node.node : `${node.node} (${node.state})`,
      title: !node.down ? "" : node.state === "fencing"
        ? `fencing: ${node.down.reason}; its jobs are requeued at ${new Date(node.down.requeue_at * 1000).toLocaleTimeString()}`
        : `down: ${node.down.reason}` }),
    el("div", { class: "cells" }, ...node.gpus.map((g) => el("button", {
      type: "button", class: `gpu ${gpuClass(g)}`, "data-gpu": g.name, "data-run": g.run_id || "",
      title: gpuText(g, node), "aria-label": gpuText(g, node), text: String(g.index),
      onclick: () => showGpu(g, node), onfocus: () => showGpu(g, node),
    })))));
  // Keep keyboard focus on the same cell across refreshes.
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.gpu : null;
  $("#grid").replaceChildren(...rows);
  if (focused) { const again = $(`[data-gpu="${focused}"]`); if (again) again.focus(); }
}

function showActive(jobs) {
  const now = Date.now() / 1000;
  fill($("#active tbody"), jobs.map((j) => el("tr", { "data-job": j.id },
    el("td", {}, jobLink(j)), el("td", { text: j.user }), el("td", { text: j.gpu_count }),
    el("td", { text: j.placement }), el("td", { text: duration(now - j.started_at) }))));
}

function showLine(line) {
  // Say how many wait, and that only the first ones are listed when that is so.
  const listed = line.jobs.filter((j) => j.position !== null).length;
  const count = `${line.total.toLocaleString("en")} waiting` + (listed < line.total ? ` (first ${listed} shown)` : "")
    + (line.held ? `, ${line.held.toLocaleString("en")} held` : "");
  $("#h-line").textContent = `Job queue: ${count}`;
  fill($("#line tbody"), line.jobs.map((j) => el("tr", { "data-job": j.id },
    el("td", { text: j.position ?? "held" }), el("td", {}, jobLink(j)), el("td", { text: j.user }),
    el("td", { text: j.gpu_count }), el("td", { text: j.priority_name }),
    el("td", { text: j.message || j.reason, title: j.reason }), el("td", { text: when(j.estimated_start) }))));
}

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function showHistory(h) {
  // One user unit per pixel (the view box follows the element's width, so text and dots
  // keep their shape): x is the last hour with now at the right, y is 0-100 %.
  const svg = $("#util-chart");
  const width = Math.max(200, Math.round(svg.getBoundingClientRect().width) || 600);
  svg.setAttribute("viewBox", `0 0 ${width} 120`);
  const t1 = Date.now() / 1000, t0 = t1 - 3600;
  const x = (t) => 36 + ((t - t0) / 3600) * (width - 44);
  const y = (v) => 112 - v * 104;
  svg.replaceChildren();
  for (const v of [0, 0.5, 1]) {
    svg.append(svgEl("line", { x1: 36, x2: width - 8, y1: y(v), y2: y(v), class: "grid" }));
    const label = svgEl("text", { x: 2, y: y(v) + 4, class: "axis" });
    label.textContent = `${v * 100}%`;
    svg.append(label);
  }
  for (const [index, cls] of [[1, "line-alloc"], [2, "line-util"]]) {
    const pts = h.points.filter((p) => p[index] !== null && p[0] >= t0);
    if (!pts.length) continue;
    svg.append(svgEl("polyline", { points: pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[index]).toFixed(1)}`).join(" "), class: cls }));
    const last = pts[pts.length - 1];  // a dot for now, so a single point still shows
    svg.append(svgEl("circle", { cx: x(last[0]), cy: y(last[index]), r: 3, class: cls }));
  }
}

async function refreshDashboard() {
  const [status, resources, running, line] = await Promise.all([
    api("orchestrator/status"), api("resources"), api("jobs?state=running&limit=100"), api("queue?limit=100"),
  ]);
  showStatus(status);
  showGrid(resources);
  showActive(running.jobs);
  showLine(line);
  if (Date.now() - lastHistory > HISTORY_MS) {
    lastHistory = Date.now();
    showHistory(await api("history"));
  }
}

// --- one job -------------------------------------------------------------------------

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

async function refreshJob(id) {
  const j = await api(`jobs/${encodeURIComponent(id)}`);
  $("#h-job").textContent = `Job ${j.run_id}`;
  const fields = [["ID", j.id], ["State", j.state], ["User", j.user], ["GPUs", j.gpu_count],
    ["Priority", j.priority_name], ["Placement", j.placement || "–"], ["Attempts", j.attempts],
    ["Ray program", j.ray_cluster ? `its own Ray cluster, head ${j.ray_cluster.head || "(not started)"}, no dashboard`
      : "no"],
    ["Submitted", clock(j.submitted_at)], ["Started", j.started_at ? clock(j.started_at) : "–"],
    ["Exit code", j.exit_code ?? "–"], ["Why it ended", j.failure_reason || "–"],
    ["Idle GPUs", (j.idle_gpus || []).join(", ") || "–"],
    ["Command", j.private ? "(visible to its owner and admins)" : j.spec.command],
    ["Runtime env", j.private ? "(visible to its owner and admins)"
      : (j.spec.runtime_env ? JSON.stringify(j.spec.runtime_env) : "–")]];
  $("#job-fields").replaceChildren(...fields.map(([k, v]) => el("div", { "data-field": k },
    el("dt", { text: k }), el("dd", { text: String(v) }))));
  fill($("#job-events tbody"), j.events.slice().reverse().map((e) => el("tr", {},
    el("td", { text: clock(e.time) }), el("td", { text: e.from_state || "" }), el("td", { text: e.to_state }),
    el("td", { text: e.reason || e.trigger }))));
  const mine = me && (me.role === "admin" || me.user === j.user);
  const can = { cancel: !TERMINAL.has(j.state), hold: j.state === "queued", release: j.state === "held" };
  for (const b of document.querySelectorAll("#view-job [data-action]")) {
    b.hidden = !(mine && can[b.dataset.action]);
    b.dataset.job = j.id;
  }
  await tailLog(j);
}

async function tailLog(j) {
  // The job's whole output: every attempt's, in order, with gpuq's line between them.
  if (log.job !== j.id) {
    log = { job: j.id, offset: 0 };
    $("#log").textContent = "";
  }
  // A job that ended before its command ran (its runtime env failed) still has gpuq's words.
  if (!j.attempts && !TERMINAL.has(j.state)) { $("#log-state").textContent = "(not started)"; return; }
  // Another user's output is theirs (and the admins'): not asked for, so not refused.
  if (j.private) { $("#log-state").textContent = "(visible to its owner and admins)"; return; }
  const out = await api(`jobs/${encodeURIComponent(j.id)}/logs?offset=${log.offset}`);
  if (out.data) {
    const pre = $("#log");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(out.data);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
  log.offset = out.offset;
  $("#log-state").textContent = out.done ? "(finished)" : "(live)";
}

async function act(button) {
  try {
    await api(`jobs/${encodeURIComponent(button.dataset.job)}/${button.dataset.action}`, { method: "POST" });
    banner("");
    await tick();
  } catch (e) {
    banner(`${button.dataset.action} refused: ${e.message}`);
  }
}

// --- submitting ------------------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  const form = event.target;
  const data = Object.fromEntries(new FormData(form).entries());
  const body = { run_id: data.run_id, command: data.command, gpu_count: Number(data.gpu_count), priority: data.priority };
  if (data.time_limit.trim()) body.time_limit = data.time_limit.trim();
  const result = $("#submit-result");
  if (!token()) { result.textContent = "Sign in with your API token first."; return; }
  try {
    const out = await api("queue/submit", { method: "POST", body });
    result.replaceChildren(`Submitted ${out.job.run_id}: ${out.job.state}, queue position ${out.queue_position ?? "–"}. `,
      el("a", { href: `#/job/${out.job_id}`, id: "submitted-job", text: "Open the job" }));
    result.className = "ok";
  } catch (e) {
    result.textContent = `Refused: ${e.message}`;
    result.className = "error";
  }
}

// --- signing in --------------------------------------------------------------------------

async function signIn(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    me = await api("whoami");
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    banner(e.status === 401 ? "That token was not accepted." : `Could not sign in: ${e.message}`);
  }
  showWho();
}

function showWho() {
  $("#signin").hidden = !!me;
  $("#who").hidden = !me;
  if (me) {
    $("#who-name").textContent = me.user;
    $("#who-role").textContent = me.role;
  }
}

// --- routing and the refresh loop ----------------------------------------------------------

function route() {
  const hash = location.hash || "#/";
  const job = hash.match(/^#\/job\/(.+)$/);
  $("#view-dashboard").hidden = hash !== "#/";
  $("#view-submit").hidden = hash !== "#/submit";
  $("#view-job").hidden = !job;
  return job ? { view: "job", id: decodeURIComponent(job[1]) } : { view: hash === "#/submit" ? "submit" : "dashboard" };
}

async function tick() {
  const where = route();
  try {
    if (where.view === "dashboard") await refreshDashboard();
    else if (where.view === "job") await refreshJob(where.id);
    banner("");
  } catch (e) {
    if (e.status === 401) banner("Sign in with an API token to see the cluster.");
    else if (e.status === 404) banner("No such job.");
    else banner(`gpuq is unavailable (${e.message}); retrying.`);
  }
}

function loop() {
  clearTimeout(timer);
  tick().finally(() => { timer = setTimeout(loop, REFRESH_MS); });
}

$("#signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("#token");
  await signIn(input.value.trim());
  input.value = "";
  loop();
});
$("#signout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); me = null; showWho(); loop(); });
$("#submit-form").addEventListener("submit", submit);
for (const b of document.querySelectorAll("#view-job [data-action]")) b.addEventListener("click", () => act(b));
window.addEventListener("hashchange", () => { log = { job: null, offset: 0 }; loop(); });

(async () => {
  if (token()) await signIn(token());
  showWho();
  loop();
})();
