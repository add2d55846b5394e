// A job's page: its fields, its graph of steps (coloured by state, with worker and
// host), the steps table, the media it made (thumbnails, players for MP4 and HLS/DASH,
// audio with its waveform, scenes, transcript, quality scores), outputs and log.
"use strict";

const IMAGE = /\.(jpe?g|png|webp|gif|avif)$/i, VIDEO = /\.(mp4|webm|mov|m4v)$/i;
const AUDIO = /\.(mp3|m4a|aac|opus|ogg|oga|wav|flac)$/i;
const media = { key: "", players: [] };

function loadScript(src) {
  const have = document.querySelector(`script[src="${src}"]`);
  if (have) return have.loaded;
  const node = el("script", { src });
  node.loaded = new Promise((resolve, reject) => {
    node.addEventListener("load", resolve); node.addEventListener("error", reject);
  });
  document.head.append(node);
  return node.loaded;
}

function stepState(s) { return s.status || "waiting"; }

async function showDetail() {
  if (!state.selected) { $("#detail").hidden = true; return; }
  const job = await api("/api/media/jobs/" + encodeURIComponent(state.selected));
  $("#detail").hidden = false;
  $("#detail-title").textContent = job.id + " · " + job.type + " · " + job.status;
  const fields = [["status", "Status"], ["progress", "Progress (%)"], ["progressStage", "Stage"],
    ["priority", "Priority"], ["resourceCategory", "Resource"], ["vramRequired", "VRAM (MB)"],
    ["inputPath", "Input"], ["outputPath", "Output"], ["retryCount", "Retries"],
    ["maxRetries", "Retry limit"], ["waitingReason", "Waiting because"],
    ["submittedBy", "Submitted by"], ["createdAt", "Submitted"], ["startedAt", "Started"],
    ["estimatedStart", "Estimated start"], ["estimatedFinish", "Estimated finish"],
    ["etaBlockedReason", "Not starting because"], ["completedAt", "Finished"],
    ["errorMessage", "Error"]];
  $("#detail-fields").replaceChildren(...fields.filter(([f]) => job[f] !== null && job[f] !== "" && job[f] !== undefined)
    .flatMap(([f, label]) => [el("dt", {}, label), el("dd", {}, /At$|Start$|Finish$/.test(f) ? when(job[f]) : job[f])]));
  $("#detail-graph").replaceChildren(graph(job.steps));
  $("#detail-steps tbody").replaceChildren(...job.steps.map((s) => el("tr", {},
    el("td", {}, s.stepNumber), el("td", {}, s.stepName), el("td", {}, s.action),
    el("td", {}, s.status ? el("span", { class: "badge b-" + (s.status === "running" ? "processing" : s.status) }, s.status) : ""),
    el("td", {}, s.executions + (s.items ? " · items " + s.itemsCompleted + "/" + s.items : "")),
    el("td", {}, s.durationMs ?? ""),
    el("td", {}, [s.workerId, s.host].filter(Boolean).join(" · ")),
    el("td", {}, s.errorMessage ?? ""))));
  // Each output's signed download link (made for this token; it expires).
  const outputs = (job.outputs || []).filter((o) => o && o.path);
  $("#detail-outputs").replaceChildren(...outputs
    .map((o) => el("li", {}, /^https?:\/\//.test(o.url || "")
      ? el("a", { href: o.url, target: "_blank", rel: "noopener noreferrer" }, o.name)
      : o.name, " ", o.contentType || "", o.size_bytes ? " · " + o.size_bytes + " bytes" : "")));
  // The media panel is rebuilt only when the set of outputs changes, so a player keeps
  // playing while the page refreshes the job every second.
  const key = job.id + "|" + outputs.map((o) => o.path).join("|") + "|" +
    job.steps.map((s) => s.status).join(",");
  if (key !== media.key) {
    media.key = key;
    renderMedia(job, outputs).catch((e) => $("#detail-media").append(el("p", { class: "error" }, e.message)));
  }
  const log = $("#detail-log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = job.log || "";
  if (atEnd) log.scrollTop = log.scrollHeight;
}

// The graph as a layered SVG: each step's column is one more than the deepest step it
// needs (a step without needs follows the step before), steps stacked within a column.
// A job has a handful to a few dozen steps, so this longest-path layering draws it
// without an 800 kB layout library; edges only ever go to a later column.
function graph(steps) {
  if (!steps.length) return el("p", { class: "muted" }, "no steps");
  const byName = new Map(), byNumber = new Map(), depth = new Map();
  steps.forEach((s) => { byName.set(s.stepName, s); byNumber.set(s.stepNumber, s); });
  const parents = (s, i) => s.needs && s.needs.length
    ? s.needs.map((n) => byName.get(n) || byNumber.get(Number(n))).filter(Boolean)
    : i > 0 ? [steps[i - 1]] : [];
  const edges = [];
  steps.forEach((s, i) => {
    const ps = parents(s, i);
    depth.set(s, ps.length ? 1 + Math.max(...ps.map((p) => depth.get(p) ?? 0)) : 0);
    ps.forEach((p) => edges.push([p, s]));
  });
  const W = 170, H = 54, GX = 36, GY = 14, rows = new Map(), pos = new Map();
  for (const s of steps) {
    const d = depth.get(s), r = rows.get(d) || 0;
    rows.set(d, r + 1);
    pos.set(s, [8 + d * (W + GX), 8 + r * (H + GY)]);
  }
  const width = 16 + (Math.max(...depth.values()) + 1) * (W + GX) - GX;
  const height = 16 + Math.max(...rows.values()) * (H + GY) - GY;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, class: "dag", role: "img",
    "aria-label": "steps of this job as a graph: " + steps.map((s) => s.stepName + " " + stepState(s)).join(", ") },
  el("defs", {}, el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
    markerWidth: "7", markerHeight: "7", orient: "auto" }, el("path", { d: "M0,0 L10,5 L0,10 z", class: "edge-head" }))));
  for (const [a, b] of edges) {
    const [ax, ay] = pos.get(a), [bx, by] = pos.get(b);
    const x1 = ax + W, y1 = ay + H / 2, x2 = bx, y2 = by + H / 2, mx = (x1 + x2) / 2;
    svg.append(el("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`,
      class: "edge", "marker-end": "url(#arrow)" }));
  }
  for (const s of steps) {
    const [x, y] = pos.get(s), st = stepState(s);
    const where = [s.workerId, s.host].filter(Boolean).join(" @ ");
    const items = s.items ? ` ${s.itemsCompleted}/${s.items}` : "";
    svg.append(el("g", { class: "node n-" + st, transform: `translate(${x},${y})`, dataset: { step: s.stepName, state: st } },
      el("title", {}, `${s.stepName} (${s.action}): ${st}${where ? " on " + where : ""}`),
      el("rect", { width: W, height: H, rx: "6" }),
      el("text", { x: "8", y: "17", class: "n-name" }, (s.stepName || "").slice(0, 22)),
      el("text", { x: "8", y: "32" }, st + items),
      el("text", { x: "8", y: "46", class: "n-where" }, where.slice(0, 26)),
      ...itemDots(s, W)));
  }
  return svg;
}

// A fanned-out step's items, one dot each coloured by its task's state (items run side
// by side on several workers and hosts), named in their tooltips.
function itemDots(s, width) {
  const items = (s.tasks || []).filter((t) => t.item !== null && t.item !== undefined);
  const shown = items.slice(0, 6);  // right of the state line; the count says the rest
  return shown.map((t, i) => el("circle", { cx: String(width - 8 - (shown.length - 1 - i) * 10),
    cy: "28", r: "4", class: "t-" + t.state, dataset: { item: t.item, state: t.state } },
  el("title", {}, `item ${t.item + 1}: ${t.state}` + (t.worker ? ` on ${t.worker}` + (t.host ? " @ " + t.host : "") : ""))));
}

function section(label, ...children) {
  return el("section", { class: "media-part", "aria-label": label }, el("h3", {}, label), ...children);
}

async function renderMedia(job, outputs) {
  for (const p of media.players) { try { p.destroy ? p.destroy() : p.reset(); } catch (e) { /* gone */ } }
  media.players = [];
  const box = $("#detail-media");
  box.replaceChildren();
  // an HLS/DASH package's variant playlists, init and media segments are the players'
  // business: only its master playlist (format hls or dash) is shown
  const usable = outputs.filter((o) => o.url && !["init", "segment", "playlist"].includes(o.kind));
  const images = usable.filter((o) => IMAGE.test(o.name));
  const videos = usable.filter((o) => VIDEO.test(o.name));
  const packages = usable.filter((o) => /\.(m3u8|mpd)$/i.test(o.name) && (o.format === "hls" || o.format === "dash" || /\.mpd$/i.test(o.name)));
  const audios = usable.filter((o) => AUDIO.test(o.name));
  const peaks = usable.find((o) => /_waveform\.json$/i.test(o.name));
  const vtt = usable.find((o) => /\.vtt$/i.test(o.name));
  const parts = [];
  if (images.length) {
    parts.push(section("Thumbnails and pages", el("div", { class: "thumbs" }, ...images.map((o) =>
      el("figure", {}, el("a", { href: o.url, target: "_blank", rel: "noopener noreferrer", class: "thumb-link" },
        el("img", { src: o.url, alt: o.name, loading: "lazy", class: "thumb" })),
      el("figcaption", {}, o.name + (o.width ? ` · ${o.width}×${o.height}` : "")))))));
  }
  let firstVideo = null;
  for (const o of videos) {
    const video = el("video", { controls: true, preload: "metadata", src: o.url, class: "player",
      "aria-label": "rendition " + o.name, dataset: { kind: "mp4" } });
    if (vtt) video.append(el("track", { kind: "subtitles", src: vtt.url, srclang: "en", label: "Transcript" }));
    firstVideo = firstVideo || video;
    parts.push(section("Rendition " + o.name + (o.height ? ` (${o.width}×${o.height})` : ""), video));
  }
  let firstStream = null;
  for (const o of packages) {
    const video = el("video", { controls: true, preload: "metadata", class: "player",
      "aria-label": "stream " + o.name, dataset: { kind: /mpd$/i.test(o.name) ? "dash" : "hls" } });
    parts.push(section((/mpd$/i.test(o.name) ? "DASH" : "HLS") + " package " + o.name, video));
    firstStream = firstStream || video;
    attachStream(job, o, video).catch((e) => video.after(el("p", { class: "error" }, e.message)));
  }
  if (audios.length || peaks) {
    const audio = audios.length ? el("audio", { controls: true, preload: "metadata", src: audios[0].url,
      "aria-label": "audio " + audios[0].name }) : null;
    const wave = el("div", { class: "waveform", id: "waveform", role: "img",
      "aria-label": "waveform of the audio" });
    parts.push(section("Audio" + (audios.length ? " " + audios[0].name : "") + " and waveform", wave, audio));
    // no audio file of its own: the waveform follows (and seeks) the first rendition
    if (peaks) drawWaveform(wave, audio || firstVideo, peaks.url).catch((e) => wave.append(el("p", { class: "error" }, e.message)));
  }
  const scenes = job.steps.map((s) => s.outputData && s.outputData.scenes).find(Array.isArray);
  if (scenes) parts.push(section("Scenes", sceneList(scenes, firstVideo)));
  // the transcript's cue times seek the first rendition, else the first package's player
  if (vtt) parts.push(section("Transcript", await transcript(vtt.url, firstVideo || firstStream)));
  const quality = job.steps.filter((s) => s.outputData && s.outputData.quality);
  if (quality.length) {
    parts.push(section("Quality", table(quality.map((s) => ({ step: s.stepName,
      ...Object.fromEntries(Object.entries(s.outputData.quality).filter(([, v]) => typeof v !== "object")) })))));
  }
  box.replaceChildren(...parts);
}

// HLS/DASH: each playlist, init segment and media segment needs its own signed link;
// the players ask for the names the playlists hold, and we swap in the link the
// files listing made for that name.
async function attachStream(job, output, video) {
  const listing = await api("/api/media/jobs/" + encodeURIComponent(job.id) + "/files");
  const signed = new Map(listing.files.map((f) => [f.path, f.url]));
  const prefix = "/" + job.id + "/";
  const sign = (url) => {
    const u = new URL(url, location.href);
    if (u.searchParams.has("sig")) return url;
    const at = decodeURIComponent(u.pathname).indexOf(prefix);
    return at >= 0 ? signed.get(decodeURIComponent(u.pathname).slice(at + prefix.length)) || url : url;
  };
  if (/\.mpd$/i.test(output.name)) {
    await loadScript("/static/vendor/dash.all.min.js");
    const player = window.dashjs.MediaPlayer().create();
    player.extend("RequestModifier", () => ({ modifyRequestURL: sign, modifyRequestHeader: (x) => x }), true);
    player.initialize(video, output.url, false);
    media.players.push(player);
  } else {
    await loadScript("/static/vendor/hls.min.js");
    if (!window.Hls.isSupported()) { video.src = output.url; return; }
    const hls = new window.Hls({ xhrSetup: (xhr, url) => { xhr.open("GET", sign(url), true); } });
    hls.on(window.Hls.Events.ERROR, (event, data) => {
      if (data.fatal) video.dataset.error = data.details + " " + ((data.response && data.response.code) || "");
    });
    hls.loadSource(output.url);
    hls.attachMedia(video);
    media.players.push(hls);
  }
}

// The peaks file the waveform step writes (audiowaveform JSON: interleaved min/max of
// `bits`-bit samples) drawn by wavesurfer.js, which plays the audio when there is some.
async function drawWaveform(box, audio, url) {
  const doc = await (await fetch(url, { credentials: "omit" })).json();
  await loadScript("/static/vendor/wavesurfer.min.js");
  const scale = doc.bits === 16 ? 32767 : 127, channel = [];
  for (let i = 0; i < doc.length; i++) {
    const lo = doc.data[2 * i] / scale, hi = doc.data[2 * i + 1] / scale;
    channel.push(Math.abs(hi) > Math.abs(lo) ? hi : lo);
  }
  const duration = doc.length * doc.samples_per_pixel / doc.sample_rate;
  const ws = window.WaveSurfer.create({ container: box, height: 80, waveColor: "#2d6cdf",
    progressColor: "#173a78", cursorColor: "#1d232b", peaks: [channel], duration,
    ...(audio ? { media: audio } : {}) });
  box.dataset.ready = "1";
  media.players.push(ws);
}

function clockTime(seconds) {
  const s = Math.max(0, seconds), m = Math.floor(s / 60);
  return m + ":" + (s - 60 * m).toFixed(1).padStart(4, "0");
}

// A scene list with a still of each scene's first frame, taken from the rendition by a
// hidden video element of its own (same origin, so the canvas may be read).
function sceneList(scenes, video) {
  const list = el("ol", { class: "scenes" });
  for (const sc of scenes) {
    const canvas = el("canvas", { width: "96", height: "54", class: "scene-still", "aria-hidden": "true" });
    const seek = el("button", { type: "button", onclick: () => { if (video) { video.currentTime = sc.start; video.play().catch(() => {}); } } },
      `Scene ${sc.index + 1}: ${clockTime(sc.start)} – ${clockTime(sc.end)}`);
    list.append(el("li", { dataset: { start: sc.start } }, canvas, seek));
  }
  if (video) stills(video.src, scenes, list);
  return list;
}

async function stills(src, scenes, list) {
  const probe = el("video", { muted: true, preload: "auto", src, hidden: true });
  document.body.append(probe);
  try {
    await new Promise((ok, bad) => { probe.onloadeddata = ok; probe.onerror = bad; });
    for (const [i, sc] of scenes.entries()) {
      probe.currentTime = Math.min(sc.start + 0.05, Math.max(0, probe.duration - 0.05));
      await new Promise((ok) => { probe.onseeked = ok; });
      list.children[i].querySelector("canvas").getContext("2d").drawImage(probe, 0, 0, 96, 54);
    }
  } catch (e) { /* no stills: the list still works */ } finally { probe.remove(); }
}

async function transcript(url, video) {
  const text = await (await fetch(url, { credentials: "omit" })).text();
  const cues = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const m = block.match(/(\d+:)?(\d+):(\d+\.\d+) --> .*\n([\s\S]*)/);
    if (!m) continue;
    const start = (parseInt(m[1] || "0", 10) * 3600) + parseInt(m[2], 10) * 60 + parseFloat(m[3]);
    cues.push([start, m[4].trim()]);
  }
  if (!cues.length) return el("p", { class: "muted" }, "no speech found");
  return el("ol", { class: "transcript" }, ...cues.map(([start, words]) => el("li", {},
    el("button", { type: "button", class: "cue-time", "aria-label": "play from " + clockTime(start),
      onclick: () => { if (video) { video.currentTime = start; video.play().catch(() => {}); } } }, clockTime(start)),
    " ", words)));
}
