// Analytics: charts drawn with uPlot (vendored) from GET /api/media/dashboard/series and
// the stage reports (GET /api/media/analytics/...), all SQL views/statements underneath.
"use strict";

const COLORS = ["#2d6cdf", "#c0392b", "#2a8a4a", "#c98a12", "#6d5bd0", "#1f8a99", "#8a4f7d"];
const CATEGORIES = ["cpu", "gpu_encode", "gpu_ai"];
const SINCE = { hour: "1h", day: "1d", week: "7d" };
const charts = { range: "hour", plots: new Map(), data: null, reports: {} };

function plotWidth(fig) { return Math.max(240, fig.querySelector(".plot").clientWidth || fig.clientWidth - 16); }

function draw(id, opts, data) {
  const fig = document.getElementById(id), box = fig.querySelector(".plot");
  const old = charts.plots.get(id);
  if (old) old.destroy();
  box.replaceChildren();
  if (!data[0].length) { box.append(el("p", { class: "muted" }, "no data in this range")); charts.plots.delete(id); return; }
  const plot = new window.uPlot({ width: plotWidth(fig), height: 200, legend: { live: false }, ...opts }, data, box);
  charts.plots.set(id, plot);
  fig.dataset.drawn = "1";
}

function timeSeries(names, unit) {
  return { scales: { x: { time: true } },
    axes: [{}, { label: unit, size: 56 }],
    series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 2,
      fill: COLORS[i % COLORS.length] + "22" }))] };
}

// Categories on the x axis (stages): bars at 0..n-1, labelled with the stage names. Two
// series (p90 behind, p50 in front, narrower) nest, since p50 <= p90.
function barChart(labels, names, unit) {
  const bars = window.uPlot.paths.bars;
  return { scales: { x: { time: false, range: [-0.5, labels.length - 0.5] } },
    axes: [{ splits: () => labels.map((_, i) => i), values: (u, splits) => splits.map((i) => (labels[i] || "").slice(0, 14)), size: 40 },
           { label: unit, size: 56 }],
    series: [{}, ...names.map((name, i) => ({ label: name, fill: COLORS[i % COLORS.length] + (i ? "" : "99"),
      stroke: COLORS[i % COLORS.length], paths: bars({ size: [i ? 0.35 : 0.7, 80] }), points: { show: false } }))] };
}

function pivot(rows, key, value, keys) {
  const times = [...new Set(rows.map((r) => r.t))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const series = keys.map(() => times.map(() => 0));
  for (const r of rows) series[keys.indexOf(r[key])][index.get(r.t)] = value(r);
  return [times, ...series];
}

async function loadCharts() {
  await loadScript("/static/vendor/uPlot.iife.min.js");
  const [data, cycle, sla] = await Promise.all([
    api("/api/media/dashboard/series?range=" + charts.range),
    api("/api/media/analytics/cycle-time?since=" + SINCE[charts.range]),
    api("/api/media/analytics/sla?since=" + SINCE[charts.range])]);
  charts.data = { data, cycle, sla };
  drawAll();
  $("#charts-note").textContent = "per " + data.unit + ", updated " + new Date().toLocaleTimeString();
}

function drawAll() {
  if (!charts.data) return;
  const { data, cycle, sla } = charts.data;
  const tp = data.throughput;
  draw("ch-throughput", timeSeries(["completed", "failed"], "jobs / " + data.unit),
    [tp.map((r) => r.t), tp.map((r) => r.completed), tp.map((r) => r.failed)]);
  draw("ch-queue", timeSeries(CATEGORIES, "jobs"), pivot(data.queue, "category", (r) => r.waiting, CATEGORIES));
  draw("ch-oldest", timeSeries(CATEGORIES, "minutes"),
    pivot(data.queue, "category", (r) => Math.round(r.oldest_waiting_s / 6) / 10, CATEGORIES));
  const hosts = [...new Set(data.vram.map((r) => r.host))];
  if (hosts.length) draw("ch-vram", timeSeries(hosts, "MB"), pivot(data.vram, "host", (r) => r.vram_mb, hosts));
  else draw("ch-vram", {}, [[]]);
  const stages = cycle.data.map((r) => r.workflow_stage);
  draw("ch-cycle", barChart(stages, ["p90", "p50"], "seconds"),
    [stages.map((_, i) => i), cycle.data.map((r) => r.p90_seconds), cycle.data.map((r) => r.p50_seconds)]);
  const slaStages = sla.data.map((r) => r.workflow_stage);
  draw("ch-sla", barChart(slaStages, ["missed"], "% of runs"),
    [slaStages.map((_, i) => i), sla.data.map((r) => Math.round(1000 * (r.miss_rate > 1 ? r.miss_rate / 100 : r.miss_rate)) / 10)]);
}

const REPORT_COLUMNS = {
  "cycle-time": ["workflow_stage", "n", "p50_seconds", "p90_seconds", "avg_seconds", "max_seconds", "reworked"],
  sla: ["workflow_stage", "n", "missed", "miss_rate", "avg_sla_seconds", "avg_overrun_seconds"],
};

async function loadReports() {
  for (const box of document.querySelectorAll("[data-report]")) {
    try {
      const data = await api("/api/media/analytics/" + box.dataset.report + "?since=" + SINCE[charts.range]);
      const rows = data.data.slice(0, 20);
      const cols = REPORT_COLUMNS[box.dataset.report];
      box.replaceChildren(table(rows, rows.length && cols ? cols.filter((c) => c in rows[0]) : undefined));
    } catch (e) {
      box.replaceChildren(el("p", { class: "muted" }, e.message));
    }
  }
  const queues = await api("/api/media/queues");
  $("#queues").replaceChildren(table(queues.queues));
}

VIEWS.analytics = async () => {
  await Promise.all([loadCharts(), loadReports()]);
};

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("[data-range]")) {
    b.addEventListener("click", () => {
      charts.range = b.dataset.range;
      for (const o of document.querySelectorAll("[data-range]")) o.setAttribute("aria-pressed", String(o === b));
      refresh();
    });
  }
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => { if (state.view === "analytics") drawAll(); }, 150);
  });
});
