// driftstream dashboard: draws the server's view (GET /api/view, then server-sent events
// from /events) with Plotly. No network beyond the page's own server.
"use strict";

const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const colour = (p) => COLOURS[Number(p) % COLOURS.length];
const CONFIG = { displaylogo: false, responsive: true };
const EPOCH_MS_FROM = 1e11; // event times above this are epoch-ms, else the stream's units

function layout(title, extra) {
  return Object.assign({
    title: { text: title, font: { size: 13 } },
    margin: { l: 55, r: 10, t: 36, b: 40 },
    legend: { font: { size: 10 }, orientation: "h", y: -0.2 },
    plot_bgcolor: "#f7f9fc",
    uirevision: "keep", // keep the user's zoom across updates
  }, extra || {});
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(digits || 4);
  return String(v);
}

function pval(v) {
  return typeof v === "number" ? v.toPrecision(2) : fmt(v);
}

function when(ts) {
  if (ts === null || ts === undefined) return "";
  return ts > EPOCH_MS_FROM ? new Date(ts).toISOString().replace("T", " ").slice(0, 23) + " UTC"
    : "t=" + ts;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;" }[c]));
}

function timeAxis(values) {
  const known = values.filter((v) => v !== null && v !== undefined);
  return known.length && Math.min(...known) > EPOCH_MS_FROM
    ? { type: "date", title: { text: "event time (UTC)", font: { size: 11 } } }
    : { title: { text: "event time", font: { size: 11 } } };
}

function sumDead(d) { return Object.values(d || {}).reduce((a, b) => a + b, 0); }

function drawSummary(v) {
  const metric = v.metric || "metric";
  const head = ["partition", "events", "labels", "pending", "predictions",
    "rolling " + metric, "baseline " + metric, "concept drifts acted", "reported",
    "data drifts", "generation", "events lag", "labels lag", "dead letters"];
  document.querySelector("#summary thead").innerHTML =
    "<tr>" + head.map((h) => "<th>" + esc(h) + "</th>").join("") + "</tr>";
  const row = (name, r, cls) => "<tr class='" + cls + "'>" + [name, r.events, r.labels,
    r.pending, r.predictions, fmt(r.rolling), fmt(r.baseline), r.drifts.concept_acted,
    r.drifts.concept_reported, r.drifts.data, r.generation, r.lag.events, r.lag.labels,
    sumDead(r.dead_letters)].map((x) => "<td>" + esc(fmt(x)) + "</td>").join("") + "</tr>";
  const body = v.partitions.map((r) => row(r.partition, r, "partition"));
  if (v.partitions.length) body.push(row("overall", v.overall, "overall"));
  document.querySelector("#summary tbody").innerHTML = body.join("");
}

function drawMetric(v) {
  const traces = [];
  const xs = [];
  for (const [p, points] of Object.entries(v.series)) {
    const pts = points.filter((q) => q.rolling !== null && q.clock !== null);
    xs.push(...pts.map((q) => q.clock));
    traces.push({ x: pts.map((q) => q.clock), y: pts.map((q) => q.rolling),
      name: "partition " + p, mode: "lines+markers", marker: { size: 4 },
      line: { color: colour(p), width: 1.6 } });
    traces.push({ x: pts.map((q) => q.clock), y: pts.map((q) => q.baseline),
      name: "baseline " + p, mode: "lines", line: { color: colour(p), width: 1, dash: "dash" } });
  }
  const shapes = [];
  const data = { x: [], y: [], text: [], name: "data drift", mode: "markers", yaxis: "y2",
    marker: { symbol: "triangle-up", size: 9, color: "#6a3d9a" }, hoverinfo: "text+x" };
  for (const d of v.drifts) {
    if (d.event_ts === null || d.event_ts === undefined) continue;
    if (d.kind === "data") {
      data.x.push(d.event_ts); data.y.push(0.04);
      data.text.push("p" + d.partition + " " + (d.test || "") + " " + (d.feature || ""));
    } else if (d.kind === "concept") {
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: d.event_ts, x1: d.event_ts,
        y0: 0, y1: 1, line: { color: colour(d.partition), width: 1.5,
          dash: d.acted ? "solid" : "dot" } });
    }
  }
  if (data.x.length) traces.push(data);
  Plotly.react("chart-metric", traces, layout(
    "rolling " + (v.metric || "metric") + " vs no-change baseline; concept drift: solid = acted on, dotted = reported",
    { xaxis: timeAxis(xs), shapes: shapes,
      yaxis2: { overlaying: "y", range: [0, 1], visible: false, fixedrange: true } }), CONFIG);
}

function drawGeneration(v) {
  const traces = [];
  const xs = [];
  for (const [p, points] of Object.entries(v.series)) {
    const pts = points.filter((q) => q.generation !== null && q.clock !== null)
      .map((q) => [q.clock, q.generation]);
    for (const d of v.drifts) {
      if (String(d.partition) === p && d.generation !== null && d.generation !== undefined
          && d.event_ts !== null) pts.push([d.event_ts, d.generation]);
    }
    pts.sort((a, b) => a[0] - b[0]);
    xs.push(...pts.map((q) => q[0]));
    traces.push({ x: pts.map((q) => q[0]), y: pts.map((q) => q[1]), name: "partition " + p,
      mode: "lines", line: { shape: "hv", color: colour(p), width: 1.8 } });
  }
  Plotly.react("chart-generation", traces, layout("model generation per partition",
    { xaxis: timeAxis(xs), yaxis: { dtick: 1, rangemode: "tozero" } }), CONFIG);
}

function drawLag(v) {
  const h = v.lag_history;
  const traces = ["events", "labels"].map((k, i) => ({
    x: h.map((q) => q.at), y: h.map((q) => q[k]), name: k + " lag", mode: "lines",
    line: { color: COLOURS[i], width: 1.6 } }));
  Plotly.react("chart-lag", traces, layout(
    "consumer lag of the inputs (end offset − worker group's committed offset)",
    { xaxis: { type: "date", title: { text: "wall clock", font: { size: 11 } } },
      yaxis: { rangemode: "tozero" } }), CONFIG);
}

function drawPending(v) {
  const traces = [];
  const xs = [];
  for (const [p, points] of Object.entries(v.series)) {
    const pts = points.filter((q) => q.pending !== null && q.clock !== null);
    xs.push(...pts.map((q) => q.clock));
    traces.push({ x: pts.map((q) => q.clock), y: pts.map((q) => q.pending),
      name: "partition " + p, mode: "lines", line: { color: colour(p), width: 1.4 } });
  }
  Plotly.react("chart-pending", traces, layout("events waiting for their label (pending joins)",
    { xaxis: timeAxis(xs), yaxis: { rangemode: "tozero" } }), CONFIG);
}

function drawDelays(v) {
  const traces = v.partitions.map((r) => {
    const bounds = Object.keys(r.label_delays).map(Number).sort((a, b) => a - b);
    return { x: bounds.map((b) => "≤" + b), y: bounds.map((b) => r.label_delays[String(b)]),
      type: "bar", name: "partition " + r.partition, marker: { color: colour(r.partition) } };
  });
  Plotly.react("chart-delays", traces, layout(
    "label delay (event time, event → label), joined labels",
    { barmode: "stack", xaxis: { type: "category" } }), CONFIG);
}

function drawDead(v) {
  const reasons = Object.keys(v.overall.dead_letters || {});
  const traces = v.partitions.map((r) => ({ x: reasons,
    y: reasons.map((k) => (r.dead_letters || {})[k] || 0), type: "bar",
    name: "partition " + r.partition, marker: { color: colour(r.partition) } }));
  const none = reasons.length ? [] : [{ text: "no dead letters: every record was decoded, "
    + "validated and joined", xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false }];
  Plotly.react("chart-dead", traces, layout("dead letters by reason",
    { barmode: "stack", xaxis: { type: "category", visible: reasons.length > 0 },
      yaxis: { visible: reasons.length > 0 }, annotations: none }), CONFIG);
}

function drawTables(v) {
  document.getElementById("alerts").innerHTML = v.alerts.map((a) =>
    "<li class='" + (a.kind === "data" ? "data" : (a.acted ? "acted" : "reported")) + "'>"
    + esc(a.text) + (a.event_ts !== null && a.event_ts !== undefined
      ? " <span class='note'>" + esc(when(a.event_ts)) + "</span>" : "") + "</li>"
  ).join("") || "<li class='note'>no drift reported yet</li>";
  document.querySelector("#features tbody").innerHTML = v.features.map((f) => "<tr>"
    + [f.test, f.feature, fmt(f.statistic), pval(f.p_value), fmt(f.effect),
       f.active ? "yes" : "", f.alarms, f.partitions.join(" "), f.action].map((x, i) =>
      "<td" + (i < 2 || i === 8 ? " class=l" : "") + ">" + esc(fmt(x)) + "</td>").join("")
    + "</tr>").join("")
    || "<tr><td colspan=9 class=l>no data-drift statistic or alarm yet</td></tr>";
  document.querySelector("#dead-recent tbody").innerHTML = v.dead_recent.map((d) => "<tr>"
    + "<td>" + esc(d.partition) + "</td><td class=l>" + esc(d.reason) + "</td><td class=l>"
    + esc((d.topic || "?") + "@" + fmt(d.offset)) + "</td><td class=l>" + esc(d.detail)
    + "</td></tr>").join("") || "<tr><td colspan=4 class=l>none</td></tr>";
}

function drawBanners(v) {
  const s = v.source || {};
  document.getElementById("source").textContent = s.bootstrap_servers
    ? "Kafka " + s.bootstrap_servers + ", topics " + (s.topic_prefix || "") + "{metrics,drift,"
      + "deadletter,predictions}, worker group " + s.group : "";
  const problem = document.getElementById("problem");
  problem.hidden = !v.problem;
  problem.textContent = v.problem || "";
  const diag = document.getElementById("diagnosis");
  diag.hidden = !v.diagnosis;
  diag.textContent = v.diagnosis ? "Likely cause of dead letters: " + v.diagnosis : "";
}

function draw(v) {
  drawBanners(v);
  drawSummary(v);
  drawMetric(v);
  drawGeneration(v);
  drawLag(v);
  drawPending(v);
  drawDelays(v);
  drawDead(v);
  drawTables(v);
  window.dashboardVersion = v.version; // for tests and scripts: which view is drawn
}

function setStatus(text, cls) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = "status " + cls;
}

fetch("/api/view").then((r) => r.json()).then(draw).catch(() => {});
const source = new EventSource("/events");
source.onopen = () => setStatus("live", "live");
source.onerror = () => setStatus("disconnected: retrying", "down");
source.onmessage = (e) => { setStatus("live", "live"); draw(JSON.parse(e.data)); };
