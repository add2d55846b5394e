// mediaq dashboard: plain JS, no build step. The token lives in sessionStorage and goes
// out only as an Authorization header (never a cookie), so other sites cannot make this
// browser send authenticated requests (no CSRF); data is written with textContent only.
// app.js: the core (API calls, views, the live loop, the jobs list, workflows);
// job.js: a job's page (graph, media); charts.js: Analytics; ops.js: Hosts, Dead
// letters, Submit, Library.
"use strict";

const FAST_MS = 1000, SLOW_MS = 5000, ANALYTICS_MS = 30000;
// a view reloads when the live row changes, and at least this often (workers come and
// go, ETAs move, without a job changing)
const STALE_MS = 15000;
// streaming, every change arrives as an event: the stale reload only refreshes ages/ETAs
const STREAM_STALE_MS = 60000;
const TOKEN_KEY = "mediaq.token";
const ROLES = ["viewer", "submitter", "operator", "admin"];
const state = {
  selected: null, timer: null, analyticsAt: 0, workflowsLoaded: false, gen: 0,
  view: "jobs", lastLive: "", viewLoadedAt: 0, role: null, workflows: [], connected: true,
  stream: null, streaming: false, live: null, retryMs: 1000,
  // the jobs table as last loaded or patched: its total, or null while it shows nothing
  // that an event can patch (another filter is being loaded, an error)
  jobsTotal: null, jobsHeld: null,
};
const JOBS_LIMIT = 100;
const VIEWS = {};  // name -> async loader (set by each script)

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "rect", "circle", "line", "path", "text", "title", "polyline",
    "defs", "marker"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
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
  // how many calls this page made (tests read it: what an open page costs the server)
  document.body.dataset.apiCalls = String(Number(document.body.dataset.apiCalls || 0) + 1);
  const headers = { Authorization: "Bearer " + token() };
  let body = options.body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, {
      method: options.method || "GET", headers, credentials: "omit", cache: "no-store", body,
    });
  } catch (e) {
    connection(false);
    throw new ApiError(0, "the server cannot be reached");
  }
  connection(response.status < 500);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (response.status === 401) { logout("token refused: " + (data && (data.detail || data.title))); }
  if (!response.ok) throw new ApiError(response.status, (data && (data.detail || data.title)) || response.statusText);
  if (options.withHeaders) return { data, headers: response.headers };
  return data;
}

// A visible state when the server goes away: the badge turns red until a call succeeds.
function connection(up, text) {
  state.connected = up;
  const live = $("#live");
  live.classList.toggle("down", !up);
  if (!up) live.textContent = text || "disconnected · retrying";
}

function can(role) { return state.role !== null && ROLES.indexOf(state.role) >= ROLES.indexOf(role); }

function showLogin(message) {
  $("#login").hidden = false; $("#app").hidden = true; $("#logout").hidden = true;
  $("#nav").hidden = true;
  $("#login-error").textContent = message || "";
  $("#live").textContent = "signed out";
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(state.timer);
  hangUp();
  state.gen++; state.selected = null; state.workflowsLoaded = false; state.role = null;
  state.lastLive = ""; state.jobsTotal = null; state.live = null;
  $("#detail").hidden = true;
  $("#counters").replaceChildren();
  showLogin(message);
}

async function start() {
  $("#login").hidden = true; $("#app").hidden = false; $("#logout").hidden = false;
  $("#nav").hidden = false;
  state.analyticsAt = 0; state.lastLive = "";
  route();
  listen();
}

// Views: #/jobs (the landing page), #/jobs/JOB-CODE, #/analytics, #/hosts, ...
function route() {
  const [, name = "jobs", arg] = (location.hash || "#/jobs").split("/");
  state.view = VIEWS[name] ? name : "jobs";
  for (const view of document.querySelectorAll(".view")) view.hidden = view.dataset.view !== state.view;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === state.view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (state.view === "jobs" && arg) { state.selected = decodeURIComponent(arg); window.scrollTo(0, 0); }
  state.lastLive = "";  // load the new view now
  state.jobsTotal = null;  // the table missed the events of another view: reload it
  for (const fig of document.querySelectorAll(".chart[data-drawn]")) delete fig.dataset.drawn;
  tick();
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function clock(iso) { return new Date(iso).toLocaleTimeString(); }

function filters() {
  const q = new URLSearchParams({ limit: String(JOBS_LIMIT) });
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
  if (!REPRIORITISABLE.includes(job.status) || !can("operator")) return el("td", {}, job.priority);
  const step = (delta, label, title) => el("button", {
    type: "button", class: "prio", title, "aria-label": title + " (" + job.id + ")",
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
  const buttons = can("operator") ? (ACTIONS[job.status] || []).map((act) =>
    el("button", { type: "button", dataset: { act, job: job.id }, "aria-label": act + " " + job.id,
                   onclick: () => operate(job.id, act) }, act)) : [];
  const row = el("tr", { dataset: { job: job.id, status: job.status, nid: job.numericId } },
    el("td", {}, el("a", { class: "job", href: "#/jobs/" + encodeURIComponent(job.id) }, job.id)),
    el("td", {}, job.type),
    el("td", {}, el("span", { class: "badge b-" + job.status }, job.status)),
    el("td", {}, el("div", { class: "progress", role: "progressbar", "aria-label": "progress of " + job.id,
                             "aria-valuenow": String(Math.round(job.progress)),
                             "aria-valuemin": "0", "aria-valuemax": "100" }, bar),
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

// A job's new row; the old bar element's width first so the CSS transition animates the move.
function freshRow(job, before) {
  const row = jobRow(job);
  if (before && before.querySelector(".bar")) {
    const oldBar = before.querySelector(".bar"), newBar = row.querySelector(".bar");
    const target = newBar.style.width;
    newBar.style.width = oldBar.style.width;
    requestAnimationFrame(() => { newBar.style.width = target; });
  }
  return row;
}

function renderJobs(list) {
  const body = $("#jobs tbody");
  const old = new Map([...body.rows].map((r) => [r.dataset.job, r]));
  const rows = list.data.map((job) => freshRow(job, old.get(job.id)));
  body.replaceChildren(...rows);
  showTotal(list.pagination.total);
}

function showTotal(total) {
  const body = $("#jobs tbody");
  const empty = body.querySelector("tr:not([data-job])");
  if (body.querySelector("tr[data-job]")) { if (empty) empty.remove(); }
  else if (!empty) body.append(el("tr", {}, el("td", { colspan: "8", class: "muted" }, "no jobs")));
  state.jobsTotal = total;
  $("#jobs-total").textContent = total + " jobs";
}

// Does the job pass the list's filters (with status ``status`` instead of its own)?
function listed(job, status) {
  const s = $("#f-status").value, t = $("#f-workflow").value, c = $("#f-category").value;
  return (!s || (status === undefined ? job.status : status) === s) && (!t || job.type === t)
    && (!c || job.resourceCategory === c);
}

// Patch the jobs table with an event's changes (no API call): a changed row is replaced,
// one that leaves the filter removed, a new one inserted in place (newest first) and the
// total moved by those that enter or leave the filter. False: the event cannot be applied
// (a job this server had not seen change; rows missing past a removal): load the view.
function patchJobs(ev) {
  if (state.jobsTotal === null) return false;
  const body = $("#jobs tbody");
  const rows = new Map([...body.querySelectorAll("tr[data-job]")].map((r) => [r.dataset.job, r]));
  let total = state.jobsTotal;
  for (const job of ev.gone) {
    if (listed(job)) total -= 1;
    if (rows.has(job.id)) { rows.get(job.id).remove(); rows.delete(job.id); }
  }
  for (const { job, was } of ev.jobs) {
    if (was === "?") return false;
    const now = listed(job);
    total += (now ? 1 : 0) - (was !== null && listed(job, was) ? 1 : 0);
    const before = rows.get(job.id);
    if (before && now) before.replaceWith(freshRow(job, before));
    else if (before) { before.remove(); rows.delete(job.id); }
    else if (now) {
      const after = [...body.querySelectorAll("tr[data-job]")]
        .find((r) => Number(r.dataset.nid) < job.numericId);
      if (after) after.before(jobRow(job));
      else if (body.querySelectorAll("tr[data-job]").length < JOBS_LIMIT) body.append(jobRow(job));
    }
  }
  const shown = body.querySelectorAll("tr[data-job]");
  for (let i = JOBS_LIMIT; i < shown.length; i++) shown[i].remove();
  showTotal(total);
  return Math.min(shown.length, JOBS_LIMIT) >= Math.min(JOBS_LIMIT, total);
}

function renderCounters(live) {
  const parts = [["pending", live.pending], ["queued", live.queued], ["running", live.processing],
    ["paused", live.paused], ["completed", live.completed], ["failed", live.failed]];
  $("#counters").replaceChildren(...parts.map(([k, v]) => el("span", {}, k + " ", el("b", {}, v))));
}

// Human column titles, with units, for the SQL views' snake_case columns.
const TITLES = {
  workflow_stage: "Stage", n: "Runs", p50_hours: "p50 (h)", p90_hours: "p90 (h)",
  avg_seconds: "Mean (s)", p50_seconds: "p50 (s)", p90_seconds: "p90 (s)", max_seconds: "Max (s)",
  reworked: "Reworked", missed: "Missed", miss_rate: "Miss rate (%)",
  avg_sla_seconds: "Mean SLA (s)", avg_overrun_seconds: "Mean overrun (s)",
  max_overrun_seconds: "Max overrun (s)", workflow_id: "Job", started_at: "Started",
  last_started_at: "Last started", sla_due_timestamp: "SLA due", starts: "Starts",
  step_number: "Step", queue_name: "Queue", jobs_in_queue: "Jobs", waiting: "Waiting",
  processing: "Processing", avg_priority: "Mean priority", next_scheduled: "Next scheduled",
  paused: "Paused", stage_runs: "Stage runs", jobs_reworked: "Jobs reworked",
  extra_starts: "Extra starts", rework_rate: "Rework rate (%)", age_seconds: "Age (s)",
  overdue: "Overdue", workflow_code: "Workflow", workflow_name: "Name", version: "Version",
  steps: "Steps", jobs: "Jobs", is_current: "Current", created_at: "Created",
};
function title(key) {
  return TITLES[key] || key.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}
function cellText(key, v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number" && /rate/.test(key) && v <= 1) return (100 * v).toFixed(1);
  if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(2);
  if (typeof v === "string" && /^\d{4}-\d\d-\d\dT/.test(v)) return when(v);
  if (typeof v === "object") return JSON.stringify(v);
  return v;
}

function table(rows, columns) {
  if (!rows || !rows.length) return el("p", { class: "muted" }, "nothing yet");
  const cols = columns || Object.keys(rows[0]);
  return el("div", { class: "scroll", tabindex: "0" }, el("table", {},
    el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col" }, title(c))))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...cols.map((c) => el("td", {}, cellText(c, r[c]))))))));
}

async function loadWorkflows() {
  const data = await api("/api/media/workflows");
  state.workflows = data.data;
  for (const id of ["#f-workflow", "#wf-select", "#s-workflow"]) {
    const select = $(id), keep = select.value;
    const first = id === "#s-workflow" ? null : select.options[0];
    select.replaceChildren(...[first].filter(Boolean), ...data.data.map((w) => el("option", { value: w.workflow_code },
      w.workflow_code)));
    if (keep) select.value = keep;
  }
  state.workflowsLoaded = true;
}

function report(e) { $("#action-error").textContent = e.message; }

async function operate(code, act) {
  $("#action-error").textContent = "";
  try {
    await api("/api/media/jobs/" + encodeURIComponent(code) + "/" + act, { method: "POST" });
  } catch (e) { report(e); }
  state.lastLive = ""; tick();
}

async function reprioritise(code, priority) {
  $("#action-error").textContent = "";
  try {
    await api("/api/media/jobs/" + encodeURIComponent(code), { method: "PATCH", body: { priority } });
  } catch (e) { report(e); }
  state.lastLive = ""; tick();
}

VIEWS.jobs = async () => {
  // events that arrive while the list loads are applied after it (they may be newer)
  const held = state.jobsHeld = [];
  let list;
  try { list = await api("/api/media/jobs?" + filters()); }
  finally { if (state.jobsHeld === held) state.jobsHeld = null; }
  renderJobs(list);
  if (!held.every(patchJobs)) setTimeout(refresh, 0);
  await showDetail();
  return list.data.some((j) => j.status === "processing");
};

VIEWS.workflows = async () => {
  await loadWorkflows();
  $("#wf-list").replaceChildren(table(state.workflows));
};

// Live updates: the page holds one server-sent event stream (GET
// /api/media/dashboard/events, fed by the server's one LISTEN session). Each event
// carries the counters and the changed jobs: the Jobs view patches its table from it
// with no API call (a job's detail is reloaded when that job changed); other views, and
// the Jobs view when an event cannot be applied (the first of a stream, a skipped seq),
// reload through the API, at most once per event, and at least every STALE_MS (ETAs
// move, workers come and go). With ?poll in the address (a proxy that buffers streams) it
// polls one cheap row instead: every 1 s while work is under way, 5 s otherwise.
const POLLING = new URLSearchParams(location.search).has("poll");

async function tick(pushed) {
  clearTimeout(state.timer);
  if (!token()) return;
  const gen = ++state.gen;  // a newer tick (a filter change, an event) supersedes this one
  const streaming = !POLLING && state.streaming;
  let delay = streaming ? STREAM_STALE_MS : SLOW_MS;
  try {
    if (state.role === null) {
      const me = await api("/api/media/dashboard/me");
      state.role = me.role;
      $("#role").textContent = (me.name ? me.name + " · " : "") + me.role;
      document.body.dataset.role = me.role;
    }
    if (!state.workflowsLoaded) await loadWorkflows();
    const live = pushed || (streaming && state.live) || await api("/api/media/dashboard/live");
    if (gen !== state.gen) return;
    state.live = live;
    renderCounters(live);
    // fast only while something runs: a backlog nobody works on changes nothing
    const busy = live.processing > 0;
    const signature = JSON.stringify(live) + state.view;
    // streaming, the server refreshes the jobs' estimates itself (one read a minute for
    // all its pages): the Jobs view has no stale reload of its own
    const stale = !(streaming && state.view === "jobs")
      && Date.now() - state.viewLoadedAt > (state.view === "analytics" ? ANALYTICS_MS
        : streaming ? STREAM_STALE_MS : STALE_MS);
    if (signature !== state.lastLive || stale || (!streaming && state.view === "jobs" && state.selected && busy)) {
      state.lastLive = signature;
      state.viewLoadedAt = Date.now();
      const viewBusy = await VIEWS[state.view]();
      if (viewBusy && !streaming) delay = FAST_MS;
    }
    if (busy && !streaming) delay = FAST_MS;
    document.body.dataset.loaded = "1";
    if (gen !== state.gen) return;
    const badge = $("#live");
    badge.textContent = streaming ? "live · streaming" : delay === FAST_MS ? "live · 1 s" : "idle · 5 s";
    badge.classList.toggle("fast", streaming || delay === FAST_MS);
  } catch (e) {
    if (!token()) return;
    report(e);
    if (e.status === 0 || e.status >= 500) state.lastLive = "";
  }
  if (gen !== state.gen) return;
  state.timer = setTimeout(tick, delay);
}

// The event stream, read with fetch (EventSource cannot send the Authorization header,
// and the token never goes in a URL or a cookie). A dropped stream shows
// "disconnected · reconnecting" and is reopened after 1, 2, 4 ... 10 s; the page polls
// meanwhile so it stays as fresh as a polling page. A hidden tab closes its stream.
async function listen() {
  if (POLLING || state.stream || !token() || document.visibilityState === "hidden") return;
  const abort = new AbortController();
  state.stream = abort;
  let opened = false, clean = false, first = true;
  try {
    const response = await fetch("/api/media/dashboard/events", {
      headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
      credentials: "omit", cache: "no-store", signal: abort.signal,
    });
    if (response.status === 401) { logout("token refused"); return; }
    if (!response.ok || !response.body) throw new Error("events: " + response.status);
    opened = true;
    state.retryMs = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) { clean = true; break; }
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const kind = (block.match(/^event: (.*)$/m) || [])[1];
        const data = (block.match(/^data: (.*)$/m) || [])[1];
        if (kind === "live" && data) {
          onLive(JSON.parse(data), first);
          first = false;
        } else if (kind === "down") {
          connection(false, "database unavailable · waiting");
        }
      }
    }
  } catch (e) { /* dropped: reconnect below */ }
  if (state.stream !== abort) return;  // closed on purpose (hidden tab, sign-out)
  state.stream = null;
  state.streaming = false;
  if (!token()) return;
  if (opened && clean) { listen(); return; }  // the server ended it (STREAM_S): reopen now
  connection(false, "disconnected · reconnecting");
  state.retryMs = opened ? 1000 : Math.min(10000, state.retryMs * 2);
  tick();  // poll while the stream is down
  setTimeout(listen, state.retryMs);
}

// One event: patch the Jobs view from it, or reload the view (tick) when it cannot be.
function onLive(ev, first) {
  state.streaming = true; connection(true);
  document.body.dataset.seq = String(ev.seq);  // tests read it: events this page got
  const previous = state.live;
  const gap = first || !previous || ev.seq !== previous.seq + 1 || ev.jobs === null;
  if (gap || state.view !== "jobs" || !token()) { tick(ev); return; }
  state.live = ev;
  renderCounters(ev);
  if (state.jobsHeld) { state.jobsHeld.push(ev); return; }
  if (!patchJobs(ev)) { refresh(); return; }
  state.lastLive = JSON.stringify(ev) + state.view;  // shown: the timer's tick loads nothing
  const mine = (j) => j.id === state.selected;
  if (state.selected && (ev.jobs.some((c) => mine(c.job)) || ev.gone.some(mine))) {
    showDetail().catch(report);
  }
}

function hangUp() {
  const abort = state.stream;
  state.stream = null; state.streaming = false;
  if (abort) abort.abort();
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

function refresh() { state.lastLive = ""; tick(); }

// A filter changed: the table no longer shows what events would patch until reloaded.
function refilter() { state.jobsTotal = null; refresh(); }

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
    $("#token-input").value = "";
    state.role = null;
    start();
  });
  $("#logout").addEventListener("click", () => logout(""));
  for (const id of ["#f-status", "#f-workflow", "#f-category"]) $(id).addEventListener("change", refilter);
  $("#detail-close").addEventListener("click", () => {
    state.selected = null; $("#detail").hidden = true; location.hash = "#/jobs";
    $("#detail-graph").replaceChildren(); $("#detail-media").replaceChildren(); media.key = "";
  });
  $("#wf-select").addEventListener("change", loadSource);
  $("#wf-apply").addEventListener("click", applySource);
  window.addEventListener("hashchange", () => { if (token()) route(); });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") hangUp();
    else if (token()) { refresh(); listen(); }
  });
  if (token()) start(); else showLogin("");
});
