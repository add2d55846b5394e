// Hosts, Dead letters (grouped, bulk retry/cancel with a confirmation), Submit, Library.
"use strict";

function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function meter(used, total, label) {
  const bar = el("div", { class: "bar" });
  bar.style.width = (total ? Math.min(100, 100 * used / total) : 0) + "%";
  return el("span", { class: "meter" }, el("div", { class: "progress", role: "progressbar", "aria-label": label,
    "aria-valuenow": String(used), "aria-valuemin": "0", "aria-valuemax": String(total || 0) }, bar),
  el("span", { class: "pct" }, used + " / " + total));
}

// Open action breakers (their steps wait instead of failing) and workers that do not claim
// because of their storage; an operator closes a breaker from here.
async function renderBreakers() {
  const data = await api("/api/media/breakers");
  const rows = data.data.map((b) => el("tr", { dataset: { breaker: b.action } },
    el("td", {}, b.action), el("td", {}, b.host || "every host"),
    el("td", {}, el("span", { class: "badge" }, b.state)), el("td", {}, b.failures),
    el("td", {}, b.reopen_at ? new Date(b.reopen_at).toLocaleTimeString() : ""),
    el("td", {}, b.last_error || ""),
    el("td", {}, can("operator") ? el("button", { type: "button", onclick: async () => {
      await api("/api/media/breakers/" + encodeURIComponent(b.action) + "/close" +
        (b.host ? "?host=" + encodeURIComponent(b.host) : ""), { method: "POST" });
      renderBreakers();
    } }, "Close") : "")));
  const problems = data.claim_problems.map((p) => el("li", {}, p.worker_id + " on " + p.host + ": " + p.claim_problem));
  $("#breakers").replaceChildren(
    rows.length ? el("div", { class: "scroll", tabindex: "0" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["Action", "Host", "State", "Failures", "Probe at", "Last error", ""]
        .map((t) => el("th", { scope: "col" }, t)))), el("tbody", {}, ...rows)))
      : el("p", { class: "muted" }, "no open breakers"),
    problems.length ? el("ul", {}, ...problems) : el("p", { class: "muted" }, "every live worker claims"));
}

// Live GPU figures of the web server's own machine (NVML), or plainly why there are none.
function renderNvml(nvml) {
  const box = $("#nvml");
  if (!nvml) { box.replaceChildren(); return; }
  box.classList.toggle("muted", !nvml.available);
  box.dataset.available = nvml.available ? "1" : "0";
  box.replaceChildren(nvml.available
    ? "Live NVML on " + nvml.host + ": " + (nvml.gpus.length ? nvml.gpus.map((g) => g.text).join("; ") : "no GPU")
    : "No live GPU figures on " + nvml.host + " (" + nvml.reason + "); VRAM below is the budget and what jobs reserved.");
}

// A host's GPUs, live: read by this web server when it is that host, else as the host's
// newest worker last read them through NVML; or plainly why there are no figures.
function gpuFacts(h, nvml) {
  const reading = nvml && nvml.host === h.host ? nvml : h.gpus;
  if (!reading) return [];
  if (!reading.available) {
    return [el("span", { class: "gpu-live muted", dataset: { available: "0" } }, "No live GPU figures: " + reading.reason)];
  }
  if (!reading.gpus.length) return [el("span", { class: "gpu-live muted", dataset: { available: "1" } }, "NVML: no GPU")];
  return reading.gpus.map((g) =>
    el("span", { class: "gpu-live", dataset: { available: "1" } }, "GPU " + g.index + " live (MB) ",
      meter(g.used_mb, g.total_mb, "live memory of GPU " + g.index + " on " + h.host),
      g.utilisation_percent === null ? "" : " " + g.utilisation_percent + " % busy"));
}

VIEWS.hosts = async () => {
  renderBreakers();
  const data = await api("/api/media/hosts");
  $("#hosts-note").textContent = data.data.length + " hosts · a paused host's workers claim " +
    "nothing new (within 10 s); running jobs finish";
  renderNvml(data.nvml);
  if (!data.data.length) { $("#hosts").replaceChildren(el("p", { class: "muted" }, "no worker has started yet")); return; }
  $("#hosts").replaceChildren(...data.data.map((h) => el("article", { class: "host", dataset: { host: h.host } },
    el("h3", {}, h.host, " ", el("span", { class: "muted" }, h.live_workers + (h.live_workers === 1 ? " live worker" : " live workers") + " · heartbeat " + age(h.heartbeat_age_s) + " ago"),
      h.paused_by ? el("span", { class: "badge w-paused" }, "paused by " + h.paused_by) : "",
      can("operator") ? el("button", { type: "button", class: "host-switch", onclick: async () => {
        await api("/api/media/hosts/" + encodeURIComponent(h.host) + (h.paused_by ? "/resume" : "/pause"), { method: "POST" });
        VIEWS.hosts();
      } }, h.paused_by ? "Resume claims" : "Pause claims") : ""),
    el("div", { class: "host-facts" },
      el("span", {}, "VRAM (MB) ", meter(h.vram_reserved_mb, h.vram_budget_mb, "VRAM of " + h.host)),
      ...gpuFacts(h, data.nvml),
      ...Object.entries(h.slots).map(([cat, s]) => el("span", {}, cat + " slots ", meter(s.used, s.total, cat + " slots of " + h.host)))),
    h.workers.length ? el("div", { class: "scroll", tabindex: "0" }, el("table", { class: "workers" },
      el("thead", {}, el("tr", {}, ...["Worker", "Status", "PID", "Categories (limit)", "VRAM budget (MB)",
        "Heartbeat age", "Running now"].map((t) => el("th", { scope: "col" }, t)))),
      el("tbody", {}, ...h.workers.map((w) => el("tr", { dataset: { worker: w.worker_id } },
        el("td", {}, w.worker_id), el("td", {}, el("span", { class: "badge w-" + w.status }, w.status)),
        el("td", {}, w.pid ?? ""),
        el("td", {}, (w.categories || []).map((c) => c + (w.limits && w.limits[c] ? " (" + w.limits[c] + ")" : "")).join(", ")),
        el("td", {}, w.vram_budget_mb), el("td", {}, age(w.heartbeat_age_s)),
        el("td", {}, w.running.length ? w.running.map((r) => r.job + " " + r.step + " (" + r.category + ", " +
          Math.round(r.progress || 0) + "%)").join("; ") : el("span", { class: "muted" }, "idle")))))))
      : el("p", { class: "muted" }, "no workers"))));
};

// --- Dead letters ---------------------------------------------------------------------
const dl = { groups: [] };

function quoted(text) { return '"' + String(text).replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"'; }

function groupFilter(g) {
  return ["workflow=" + quoted(g.workflow), g.stepNumber !== null ? "step=" + g.stepNumber : null,
    g.errorClass ? "class=" + g.errorClass : null, g.reason ? "reason=" + quoted(g.reason) : null]
    .filter(Boolean).join(" ");
}

function renderDeadLetters() {
  const q = $("#dl-search").value.trim().toLowerCase();
  const shown = dl.groups.map((g, i) => [g, i]).filter(([g]) => !q || [g.workflow, g.stepName, g.errorClass,
    g.reason, g.exampleJob, g.exampleMessage].join(" ").toLowerCase().includes(q));
  $("#dl-total").textContent = dl.total + " failed jobs in " + dl.groups.length + " groups";
  if (!shown.length) { $("#dead-letters").replaceChildren(el("p", { class: "muted" }, "no dead letters")); return; }
  $("#dead-letters").replaceChildren(el("div", { class: "scroll", tabindex: "0" }, el("table", {},
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, el("span", { class: "sr-only" }, "Select")),
      ...["Jobs", "Workflow", "Step", "Error class", "Reason", "Newest failure", "Example job"].map((t) => el("th", { scope: "col" }, t)))),
    el("tbody", {}, ...shown.map(([g, i]) => el("tr", { dataset: { group: i } },
      el("td", {}, el("input", { type: "checkbox", class: "dl-pick", value: String(i), "aria-label": "select group " + (i + 1) })),
      el("td", {}, g.count), el("td", {}, g.workflow), el("td", {}, (g.stepNumber ?? "") + " " + (g.stepName || "")),
      el("td", {}, g.errorClass || ""), el("td", { class: "reason" }, g.reason || ""),
      el("td", {}, when(g.newestFailure)),
      el("td", {}, g.exampleJob ? el("a", { class: "job", href: "#/jobs/" + encodeURIComponent(g.exampleJob) }, g.exampleJob) : "")))))));
}

VIEWS["dead-letters"] = async () => {
  const data = await api("/api/media/dead-letters");
  const picked = new Set([...document.querySelectorAll(".dl-pick:checked")].map((c) => c.value));
  dl.groups = data.data; dl.total = data.total;
  for (const b of document.querySelectorAll("#dl-retry, #dl-cancel")) b.hidden = !can("operator");
  renderDeadLetters();
  for (const c of document.querySelectorAll(".dl-pick")) c.checked = picked.has(c.value);
};

function confirmDialog(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => { dialog.close(); resolve(answer); };
    $("#confirm-yes").onclick = () => done(true);
    $("#confirm-no").onclick = () => done(false);
    dialog.oncancel = () => resolve(false);
    dialog.showModal();
  });
}

// Dry run first (how many jobs each group's filter matches now), then the real run
// after the operator confirms that number.
async function bulk(verb) {
  const out = $("#dl-result");
  out.textContent = "";
  const groups = [...document.querySelectorAll(".dl-pick:checked")].map((c) => dl.groups[Number(c.value)]);
  if (!groups.length) { out.textContent = "select one or more groups first"; return; }
  try {
    let matched = 0;
    for (const g of groups) matched += (await api("/api/media/jobs/" + verb, { method: "POST",
      body: { where: groupFilter(g), dryRun: true } })).matched;
    const ok = await confirmDialog(`${verb === "retry" ? "Retry" : "Cancel"} ${matched} jobs in ${groups.length} groups?`);
    if (!ok) { out.textContent = "nothing changed"; return; }
    let changed = 0;
    for (const g of groups) changed += (await api("/api/media/jobs/" + verb, { method: "POST",
      body: { where: groupFilter(g), note: "from the dashboard" } })).changed;
    out.textContent = `${verb}: ${changed} jobs changed`;
  } catch (e) { out.textContent = e.message; }
  refresh();
}

// --- Submit ---------------------------------------------------------------------------
async function submitJob(event) {
  event.preventDefault();
  const out = $("#submit-result");
  out.className = ""; out.textContent = "";
  let params;
  try { params = JSON.parse($("#s-params").value || "{}"); } catch (e) {
    out.className = "error"; out.textContent = "parameters: not valid JSON (" + e.message + ")"; return;
  }
  const workflow = $("#s-workflow").value, priority = Number($("#s-priority").value) || undefined;
  const file = $("#s-file").files[0];
  try {
    let code;
    if (file) {  // multipart upload, streamed to disk by the server, then submitted
      const form = new FormData();
      form.append("workflow", workflow);
      if (priority) form.append("priority", String(priority));
      form.append("params", JSON.stringify(params));
      form.append("file", file);
      const r = await api("/api/media/uploads", { method: "POST", body: form, withHeaders: true });
      code = r.headers.get("Mediaq-Job") || (r.data && (r.data.job || r.data.jobCode));
    } else {
      const r = await api("/api/media/jobs", { method: "POST",
        body: { type: workflow, inputPath: $("#s-path").value.trim(), priority, params } });
      code = r.id;
    }
    out.replaceChildren("Submitted ", el("a", { class: "job", href: "#/jobs/" + encodeURIComponent(code), id: "submitted-job" }, code));
  } catch (e) { out.className = "error"; out.textContent = e.message; }
}

VIEWS.submit = async () => {
  const allowed = can("submitter");
  for (const node of document.querySelectorAll("#submit-form input, #submit-form select, #submit-form textarea, #submit-form button")) node.disabled = !allowed;
  if (!allowed) $("#submit-result").textContent = "This token's role (" + state.role + ") cannot submit jobs.";
};

// --- Library --------------------------------------------------------------------------
VIEWS.library = async () => {
  const q = new URLSearchParams({ limit: "200" });
  if ($("#lib-kind").value) q.set("kind", $("#lib-kind").value);
  if ($("#lib-tag").value.trim()) q.set("tag", $("#lib-tag").value.trim());
  const data = await api("/api/media/assets?" + q);
  $("#lib-total").textContent = data.data.length + " assets";
  const rows = data.data.map((a) => ({ id: a.id, kind: a.kind, path: a.path || a.uri || "",
    duration_s: a.duration_seconds ?? a.duration ?? null, size: a.width ? a.width + "×" + a.height : "",
    tags: (a.tags || []).slice(0, 5).map((t) => t.tag || t.name || t).join(", ") }));
  $("#library").replaceChildren(table(rows, ["id", "kind", "path", "duration_s", "size", "tags"]));
};
TITLES.duration_s = "Duration (s)"; TITLES.size = "Size (px)"; TITLES.kind = "Kind"; TITLES.path = "Path";
TITLES.id = "Asset"; TITLES.tags = "Tags";

document.addEventListener("DOMContentLoaded", () => {
  $("#dl-search").addEventListener("input", renderDeadLetters);
  $("#dl-retry").addEventListener("click", () => bulk("retry"));
  $("#dl-cancel").addEventListener("click", () => bulk("cancel"));
  $("#submit-form").addEventListener("submit", submitJob);
  $("#lib-kind").addEventListener("change", refresh);
  $("#lib-tag").addEventListener("change", refresh);
});
