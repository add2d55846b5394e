// mediaq dashboard: plain JS, no build step. The token lives in sessionStorage and goes
// out only as an Authorization header (never a cookie), so other sites cannot make this
// browser send authenticated requests (no CSRF); data is written with textContent only.
"use strict";

const ACTIVE = ["pending", "queued", "processing"];
const FAST_MS = 1000, SLOW_MS = 5000, ANALYTICS_MS = 15000;
const TOKEN_KEY = "mediaq.token";
const state = { selected: null, timer: null, analyticsAt: 0, workflowsLoaded: false, gen: 0 };

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token() };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET", headers, credentials: "omit", cache: "no-store",
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (response.status === 401) { logout("token refused: " + (data && (data.detail || data.title))); }
  if (!response.ok) throw new ApiError(response.status, (data && (data.detail || data.title)) || response.statusText);
  return data;
}

function showLogin(message) {
  $("#login").hidden = false; $("#app").hidden = true; $("#logout").hidden = true;
  $("#login-error").textContent = message || "";
  $("#live").textContent = "signed out";
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(state.timer);
  state.gen++; state.selected = null; state.workflowsLoaded = false;
  $("#detail").hidden = true;
  showLogin(message);
}

function start() {
  $("#login").hidden = true; $("#app").hidden = false; $("#logout").hidden = false;
  state.analyticsAt = 0;
  tick();
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function clock(iso) { return new Date(iso).toLocaleTimeString(); }

function filters() {
  const q = new URLSearchParams({ limit: "100" });
  for (const [id, name] of [["#f-status", "status"], ["#f-workflow", "type"],
                            ["#f-category", "resourceCategory"]]) {
    const value = $(id).value;
    if (value) q.set(name, value);
  }
  return q.toString();
}

const ACTIONS = {
  pending: ["pause", "cancel"], queued: ["pause", "cancel"], processing: ["pause", "cancel"],
  paused: ["resume", "cancel"], failed: ["retry"], cancelled: ["retry"], completed: [],
};

// A waiting job's priority can still change (PATCH /api/media/jobs/{id}; 10 is the most urgent).
const REPRIORITISABLE = ["pending", "queued", "paused"];

function priorityCell(job) {
  if (!REPRIORITISABLE.includes(job.status)) return el("td", {}, job.priority);
  const step = (delta, label, title) => el("button", {
    type: "button", class: "prio", title, "aria-label": title,
    dataset: { priority: delta > 0 ? "up" : "down", job: job.id },
    onclick: () => reprioritise(job.id, job.priority + delta),
  }, label);
  const down = step(-1, "−", "less urgent"), up = step(+1, "+", "more urgent");
  down.disabled = job.priority <= 1; up.disabled = job.priority >= 10;
  return el("td", { class: "priority" }, down, el("span", { class: "prio-value" }, job.priority), up);
}

function jobRow(job) {
  const bar = el("div", { class: "bar" });
  bar.style.width = Math.max(0, Math.min(100, job.progress)) + "%";
  const buttons = (ACTIONS[job.status] || []).map((act) =>
    el("button", { type: "button", dataset: { act, job: job.id }, onclick: () => operate(job.id, act) }, act));
  const row = el("tr", { dataset: { job: job.id, status: job.status } },
    el("td", {}, el("a", { class: "job", onclick: () => select(job.id) }, job.id)),
    el("td", {}, job.type),
    el("td", {}, el("span", { class: "badge b-" + job.status }, job.status)),
    el("td", {}, el("div", { class: "progress", role: "progressbar",
                             "aria-valuenow": String(job.progress) }, bar),
       el("span", { class: "pct" }, Math.round(job.progress) + "%" +
          (job.waitingReason ? " · " + job.waitingReason : "") +
          (job.estimatedFinish ? " · ETA " + clock(job.estimatedFinish) : "") +
          (job.etaBlockedReason ? " · not starting: " + job.etaBlockedReason : ""))),
    priorityCell(job),
    el("td", {}, job.resourceCategory),
    el("td", {}, when(job.createdAt)),
    el("td", { class: "actions" }, ...buttons));
  if (job.id === state.selected) row.classList.add("selected");
  return row;
}

function renderJobs(list) {
  const body = $("#jobs tbody");
  const old = new Map([...body.rows].map((r) => [r.dataset.job, r]));
  const rows = list.data.map((job) => {
    const row = jobRow(job);
    const before = old.get(job.id);
    // keep the old bar element's width first so the CSS transition animates the move
    if (before) {
      const oldBar = before.querySelector(".bar"), newBar = row.querySelector(".bar");
      const target = newBar.style.width;
      newBar.style.width = oldBar.style.width;
      requestAnimationFrame(() => { newBar.style.width = target; });
    }
    return row;
  });
  body.replaceChildren(...rows);
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "muted" }, "no jobs")));
  $("#jobs-total").textContent = list.pagination.total + " jobs";
}

function renderCounters(stats) {
  const parts = [["pending", stats.pending], ["queued", stats.queued], ["running", stats.running],
    ["paused", stats.paused], ["completed", stats.completed], ["failed", stats.failed],
    ["workers", stats.workers], ["VRAM", stats.totalVramUsed + "/" + stats.totalVramAvailable + " MB"]];
  $("#counters").replaceChildren(...parts.map(([k, v]) => el("span", {}, k + " ", el("b", {}, v))));
}

function table(rows) {
  if (!rows || !rows.length) return el("p", { class: "muted" }, "nothing yet");
  const cols = Object.keys(rows[0]);
  return el("table", {},
    el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", {}, c)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...cols.map((c) => {
      const v = r[c];
      return el("td", {}, v === null ? "" : typeof v === "object" ? JSON.stringify(v) : v);
    })))));
}

function renderQueues(data) {
  $("#queues").replaceChildren(table(data.queues));
  const hosts = data.hosts.map((h) => {
    const bar = el("div", { class: "bar" });
    bar.style.width = (h.vram_budget_mb ? 100 * h.vram_reserved_mb / h.vram_budget_mb : 0) + "%";
    return el("div", { class: "vram-row" }, h.host + " ",
      el("div", { class: "progress" }, bar),
      el("span", { class: "pct" }, h.vram_reserved_mb + " / " + h.vram_budget_mb + " MB"));
  });
  $("#vram").replaceChildren(...(hosts.length ? hosts : [el("p", { class: "muted" }, "no GPU hosts")]));
}

async function loadAnalytics() {
  for (const box of document.querySelectorAll("[data-report]")) {
    try {
      const data = await api("/api/media/analytics/" + box.dataset.report);
      box.replaceChildren(table(data.data.slice(0, 20)));
    } catch (e) {
      box.replaceChildren(el("p", { class: "muted" }, e.message));
    }
  }
}

async function loadWorkflows() {
  const data = await api("/api/media/workflows");
  for (const id of ["#f-workflow", "#wf-select"]) {
    const select = $(id), keep = select.value;
    const first = select.options[0];
    select.replaceChildren(first, ...data.data.map((w) => el("option", { value: w.workflow_code },
      w.workflow_code)));
    select.value = keep;
  }
  state.workflowsLoaded = true;
}

async function showDetail() {
  if (!state.selected) { $("#detail").hidden = true; return; }
  const job = await api("/api/media/jobs/" + encodeURIComponent(state.selected));
  $("#detail").hidden = false;
  $("#detail-title").textContent = job.id + " · " + job.type + " · " + job.status;
  const fields = ["status", "progress", "progressStage", "priority", "resourceCategory",
    "vramRequired", "inputPath", "outputPath", "retryCount", "maxRetries", "waitingReason",
    "submittedBy", "createdAt", "startedAt", "estimatedStart", "estimatedFinish", "etaBlockedReason",
    "completedAt", "errorMessage"];
  $("#detail-fields").replaceChildren(...fields.filter((f) => job[f] !== null && job[f] !== "")
    .flatMap((f) => [el("dt", {}, f), el("dd", {}, job[f])]));
  $("#detail-steps tbody").replaceChildren(...job.steps.map((s) => el("tr", {},
    el("td", {}, s.stepNumber), el("td", {}, s.stepName), el("td", {}, s.action),
    el("td", {}, s.status ? el("span", { class: "badge b-" + (s.status === "running" ? "processing" : s.status) }, s.status) : ""),
    el("td", {}, s.executions), el("td", {}, s.durationMs ?? ""), el("td", {}, s.errorMessage ?? ""))));
  // Each output's signed download link (made for this token; it expires).
  $("#detail-outputs").replaceChildren(...(job.outputs || []).filter((o) => o && o.path)
    .map((o) => el("li", {}, /^https?:\/\//.test(o.url || "")
      ? el("a", { href: o.url, target: "_blank", rel: "noopener noreferrer" }, o.name)
      : o.name, " ", o.contentType || "", o.size_bytes ? " · " + o.size_bytes + " bytes" : "")));
  const log = $("#detail-log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = job.log || "";
  if (atEnd) log.scrollTop = log.scrollHeight;
}

function select(code) { state.selected = code; showDetail().catch(report); }

function report(e) { $("#action-error").textContent = e.message; }

async function operate(code, act) {
  $("#action-error").textContent = "";
  try {
    await api("/api/media/jobs/" + encodeURIComponent(code) + "/" + act, { method: "POST" });
  } catch (e) { report(e); }
  tick();
}

async function reprioritise(code, priority) {
  $("#action-error").textContent = "";
  try {
    await api("/api/media/jobs/" + encodeURIComponent(code), { method: "PATCH", body: { priority } });
  } catch (e) { report(e); }
  tick();
}

async function tick() {
  clearTimeout(state.timer);
  if (!token()) return;
  const gen = ++state.gen;  // a newer tick (a filter change) supersedes this one
  let delay = SLOW_MS;
  try {
    if (!state.workflowsLoaded) await loadWorkflows();
    const [list, stats, queues] = await Promise.all([api("/api/media/jobs?" + filters()),
      api("/api/media/jobs/stats"), api("/api/media/queues")]);
    if (gen !== state.gen) return;
    renderJobs(list); renderCounters(stats); renderQueues(queues);
    const busy = stats.pending + stats.queued + stats.running > 0 ||
      list.data.some((j) => ACTIVE.includes(j.status));
    delay = busy ? FAST_MS : SLOW_MS;
    await showDetail();
    if (Date.now() - state.analyticsAt > ANALYTICS_MS) {
      state.analyticsAt = Date.now();
      loadAnalytics();
    }
    document.body.dataset.loaded = "1";
  } catch (e) {
    if (!token()) return;
    report(e);
  }
  if (gen !== state.gen) return;
  const live = $("#live");
  live.textContent = delay === FAST_MS ? "live · 1 s" : "idle · 5 s";
  live.classList.toggle("fast", delay === FAST_MS);
  state.timer = setTimeout(tick, delay);
}

async function loadSource() {
  const code = $("#wf-select").value;
  $("#wf-result").textContent = "";
  if (!code) { $("#wf-source").value = ""; return; }
  try { $("#wf-source").value = (await api("/api/media/workflows/" + encodeURIComponent(code))).source; }
  catch (e) { $("#wf-result").textContent = e.message; }
}

async function applySource() {
  try {
    const r = await api("/api/media/workflows", { method: "POST", body: { source: $("#wf-source").value } });
    $("#wf-result").textContent = r.changed ? r.workflowCode + ": version " + r.version + " applied"
      : r.workflowCode + ": unchanged (version " + r.version + ")";
    state.workflowsLoaded = false;
  } catch (e) { $("#wf-result").textContent = e.message; }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
    $("#token-input").value = "";
    start();
  });
  $("#logout").addEventListener("click", () => logout(""));
  for (const id of ["#f-status", "#f-workflow", "#f-category"]) $(id).addEventListener("change", tick);
  $("#detail-close").addEventListener("click", () => { state.selected = null; $("#detail").hidden = true; });
  $("#wf-select").addEventListener("change", loadSource);
  $("#wf-apply").addEventListener("click", applySource);
  if (token()) start(); else showLogin("");
});
