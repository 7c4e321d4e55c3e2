// ITS operator console: one page, hash routes, live updates over server-sent events (/api/stream).
// Plain DOM code with no build step; every text from the server goes through textContent, never HTML.
"use strict";

const LOS_COLOURS = { A: "#2e7d32", B: "#7cb342", C: "#fdd835", D: "#fb8c00", E: "#e53935", F: "#8e24aa" };
const state = { cameras: [], alerts: new Map(), readOnly: true, view: "grid", cameraId: null, fresh: new Set() };

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}
const svg = (tag, attrs = {}) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
};
const enc = encodeURIComponent;
const fmtTime = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "");

function flash(text, ok = false) {
  const el = document.getElementById("flash");
  el.textContent = text;
  el.className = ok ? "ok" : "";
  el.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => (el.hidden = true), 6000);
}

async function getJSON(url) {
  const res = await fetch(url, { cache: "no-store" });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

// --- operator token: kept for the browser session so a reload keeps it ------------------------------
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("its-operator-token") || "";
tokenInput.addEventListener("input", () => sessionStorage.setItem("its-operator-token", tokenInput.value));

async function acknowledge(alertId) {
  const headers = { "Content-Type": "application/json" };
  if (tokenInput.value) headers.Authorization = `Bearer ${tokenInput.value}`;
  const res = await fetch(`/api/alerts/${enc(alertId)}/ack`, {
    method: "POST", headers, body: JSON.stringify({ by: "console operator" }),
  });
  const doc = await res.json().catch(() => ({}));
  if (!res.ok) {
    flash(`Acknowledgement refused (HTTP ${res.status}): ${doc.detail || ""}`);
    return;
  }
  upsertAlert(doc.alert);
  if (state.view === "incidents") placeAlert(doc.alert);
  else refresh();
  flash(`Acknowledged ${alertId}`, true);
}

// --- alerts -----------------------------------------------------------------------------------------
function upsertAlert(a) {
  state.alerts.set(a.incident_id, a);
  const open = [...state.alerts.values()].filter((x) => x.status !== "RESOLVED" && x.status !== "ACKNOWLEDGED");
  document.getElementById("open-count").textContent = open.length || "";
}

function alertItem(a) {
  const canAck = !state.readOnly && a.status !== "ACKNOWLEDGED" && a.status !== "RESOLVED";
  const li = h("li", {
    class: "alert" + (state.fresh.has(a.incident_id) ? " new" : ""),
    "data-alert-id": a.alert_id, "data-incident-id": a.incident_id, "data-severity": a.severity,
  },
    h("img", { src: `/api/alerts/${enc(a.alert_id)}/evidence.jpg?w=400&r=${a.revision}`, alt: "evidence", loading: "lazy" }),
    h("div", {},
      h("div", { class: "title", text: a.title }),
      h("div", {}, h("span", { class: `sev sev-${a.severity}`, text: a.severity }), " · ",
        h("span", { text: a.type }), " · ",
        h("a", { href: `#/camera/${enc(a.camera_id)}`, text: a.camera_id })),
      h("div", { class: "muted", text: `${fmtTime(a.first_ts_ms)} – ${fmtTime(a.last_ts_ms)} · ${a.count} event(s) · revision ${a.revision}` + (a.escalation_level ? ` · escalation ${a.escalation_level}` : "") }),
      a.description ? h("div", { text: a.description }) : null,
      a.suggested_action ? h("div", { class: "muted", text: `Suggested: ${a.suggested_action}` }) : null,
      h("div", {}, "Status: ", h("span", { class: `st ${a.status}`, text: a.status }),
        a.acknowledged_by ? h("span", { class: "muted", text: ` by ${a.acknowledged_by} at ${fmtTime(a.acknowledged_ts_ms)}` }) : null)),
    h("div", {}, h("button", {
      class: "ack", disabled: !canAck, title: state.readOnly ? "read-only console" : "acknowledge",
      onclick: (e) => { e.stopPropagation(); acknowledge(a.alert_id); },
    }, a.status === "ACKNOWLEDGED" ? "Acknowledged" : "Acknowledge")));
  return li;
}

function filtered() {
  const sevRank = ["INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"];
  const sev = document.getElementById("f-severity").value;
  const type = document.getElementById("f-type").value;
  const cam = document.getElementById("f-camera").value;
  return [...state.alerts.values()]
    .filter((a) => (!sev || sevRank.indexOf(a.severity) >= sevRank.indexOf(sev)) && (!type || a.type === type) && (!cam || a.camera_id === cam))
    .sort((x, y) => y.last_ts_ms - x.last_ts_ms);
}

function renderTimeline() {
  const list = document.getElementById("timeline");
  list.replaceChildren(...filtered().map(alertItem));
  if (!list.children.length) list.append(h("li", { class: "muted", text: "No incidents match." }));
}

// One incident changed: replace or insert just its row (a full re-render would reload every picture).
function placeAlert(a) {
  const list = document.getElementById("timeline");
  const old = list.querySelector(`li.alert[data-incident-id="${CSS.escape(a.incident_id)}"]`);
  const rows = filtered();
  const at = rows.findIndex((x) => x.incident_id === a.incident_id);
  if (at < 0) { if (old) old.remove(); return; }
  const item = alertItem(a);
  if (old) { old.replaceWith(item); return; }
  for (const el of list.querySelectorAll("li:not(.alert)")) el.remove();  // the "no incidents" line
  const next = rows[at + 1] && list.querySelector(`li.alert[data-incident-id="${CSS.escape(rows[at + 1].incident_id)}"]`);
  list.insertBefore(item, next || null);
}

// --- cameras ----------------------------------------------------------------------------------------
function tileCard(c) {
  return h("div", { class: "tile", "data-camera-id": c.camera_id, onclick: () => (location.hash = `#/camera/${enc(c.camera_id)}`) },
    h("img", { src: `/api/cameras/${enc(c.camera_id)}/tile.jpg?w=480&t=${Date.now()}`, alt: c.camera_id }),
    h("div", { class: "info" },
      h("span", { class: "name", text: c.name === c.camera_id ? c.camera_id : `${c.name} (${c.camera_id})` }),
      h("span", { class: `status ${c.status}`, text: c.status }),
      h("span", { class: "fps", text: c.fps ? `${c.fps} fps` : "– fps" }),
      h("span", { class: "model", text: c.model || "no model yet" }),
      h("span", { class: "muted", text: c.age_s === null ? "never seen" : `seen ${c.age_s}s ago` }),
      c.open_incidents ? h("span", { class: "pill", text: `${c.open_incidents} open` }) : null));
}

function renderGrid() {
  const grid = document.getElementById("grid");
  const existing = new Map([...grid.children].map((el) => [el.dataset.cameraId, el]));
  const cards = state.cameras.map((c) => {
    const card = tileCard(c);
    const old = existing.get(c.camera_id);
    // Keep the old picture until the new one has loaded: no flicker between refreshes.
    if (old) {
      const img = card.querySelector("img");
      const oldImg = old.querySelector("img");
      card.replaceChild(oldImg, img);
      const next = new Image();
      next.onload = () => (oldImg.src = next.src);
      next.src = img.src;
    }
    return card;
  });
  grid.replaceChildren(...cards);
  if (!cards.length) grid.append(h("p", { class: "muted", text: "No camera has registered yet." }));
}

// The timeline's camera filter lists every camera; rebuilt only when the set of cameras changes.
function updateCameraFilter() {
  const sel = document.getElementById("f-camera");
  const ids = state.cameras.map((c) => c.camera_id);
  if (sel.dataset.ids === ids.join("\n")) return;
  const chosen = sel.value;
  sel.replaceChildren(h("option", { value: "", text: "any" }), ...ids.map((id) => h("option", { value: id, text: id })));
  sel.value = chosen;
  sel.dataset.ids = ids.join("\n");
}

async function renderCamera() {
  const id = state.cameraId;
  let doc;
  try { doc = await getJSON(`/api/cameras/${enc(id)}`); } catch (e) { flash(String(e)); return; }
  document.getElementById("camera-title").textContent = `${doc.name} (${doc.camera_id})`;
  const img = document.getElementById("camera-tile");
  const next = new Image();
  next.onload = () => (img.src = next.src);
  next.src = `/api/cameras/${enc(id)}/tile.jpg?w=1280&t=${Date.now()}`;
  if (!img.src) img.src = next.src;
  document.getElementById("camera-meta").replaceChildren(
    h("span", { class: `status ${doc.status}`, text: doc.status }),
    h("span", { text: doc.fps ? `${doc.fps} fps` : "– fps" }),
    h("span", { text: doc.model || "no model yet" }),
    h("span", { class: "muted", text: doc.address || "" }));
  document.getElementById("counts-window").textContent = `(last ${Math.round(doc.counts_window_s / 60)} min)`;
  document.querySelector("#camera-lines tbody").replaceChildren(...doc.lines.map((l) =>
    h("tr", {}, h("td", { text: l.line_id }), h("td", { text: l.direction }), h("td", { class: "count", text: l.count }),
      h("td", { text: l.mean_speed_kmh === null ? "–" : `${l.mean_speed_kmh} km/h` }))));
  const inc = document.getElementById("camera-incidents");
  inc.replaceChildren(...doc.incidents.map(alertItem));
  if (!doc.incidents.length) inc.append(h("li", { class: "muted", text: "No open incident." }));
}

// --- traffic and map --------------------------------------------------------------------------------
function chart(title, t, values, colour, unit, kind) {
  const W = 460, H = 150, pad = 28;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H + 20}` });
  const nums = values.filter((v) => v !== null);
  const max = Math.max(1, ...nums);
  const t0 = Math.min(...t), t1 = Math.max(...t, t0 + 60);
  const x = (ts) => pad + ((ts - t0) / (t1 - t0)) * (W - pad - 8);
  const y = (v) => H - (v / max) * (H - 16);
  s.append(svg("line", { x1: pad, y1: H, x2: W - 8, y2: H, stroke: "#555" }));
  const label = svg("text", { x: 2, y: 12, fill: "#8b949e", "font-size": 11 });
  label.textContent = `${Math.round(max)} ${unit}`;
  s.append(label);
  if (kind === "bars") {
    const bw = Math.max(2, (W - pad) / Math.max(60, t.length) - 1);
    t.forEach((ts, i) => values[i] !== null && s.append(svg("rect", { x: x(ts) - bw / 2, y: y(values[i]), width: bw, height: H - y(values[i]), fill: colour })));
  } else {
    const pts = t.map((ts, i) => (values[i] === null ? null : `${x(ts)},${y(values[i])}`)).filter(Boolean);
    s.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: colour, "stroke-width": 2 }));
  }
  const axis = svg("text", { x: pad, y: H + 16, fill: "#8b949e", "font-size": 11 });
  axis.textContent = `${new Date(t0 * 1000).toISOString().slice(11, 16)} – ${new Date(t1 * 1000).toISOString().slice(11, 16)} UTC`;
  s.append(axis);
  return h("div", {}, h("div", { class: "muted", text: title }), s);
}

function losStrip(t, los) {
  const s = svg("svg", { viewBox: "0 0 460 24", class: "los" });
  const n = Math.max(1, t.length);
  los.forEach((l, i) => {
    const r = svg("rect", { x: 28 + (i * 424) / n, y: 2, width: Math.max(1, 424 / n - 1), height: 20, fill: LOS_COLOURS[l] || "#555" });
    const tip = svg("title"); tip.textContent = `LOS ${l}`; r.append(tip); s.append(r);
  });
  return h("div", {}, h("div", { class: "muted", text: "level of service (A best – F worst)" }), s);
}

async function renderTraffic() {
  let doc;
  try { doc = await getJSON("/api/traffic"); } catch (e) { flash(String(e)); return; }
  state.traffic = doc;
  const status = document.getElementById("traffic-status");
  const box = document.getElementById("traffic");
  if (!doc.available) {
    status.textContent = `Traffic history unavailable: ${doc.reason}`;
    box.replaceChildren();
    return;
  }
  const ids = Object.keys(doc.cameras).sort();
  status.textContent = `Last hour from ClickHouse, ${doc.window_s}s windows, ${ids.length} camera(s).`;
  box.replaceChildren(...ids.map((id) => {
    const c = doc.cameras[id];
    return h("div", { class: "chart", "data-camera-id": id },
      h("h3", {}, h("a", { href: `#/camera/${enc(id)}`, text: id })),
      chart("volume (vehicles per window)", c.t, c.volume, "#3b8eea", "veh", "bars"),
      chart("mean speed", c.t, c.speed, "#ffb74d", "km/h", "line"),
      losStrip(c.t, c.los));
  }));
}

async function renderMap() {
  let doc;
  try { doc = await getJSON("/api/traffic"); } catch (e) { flash(String(e)); return; }
  const map = document.getElementById("map");
  map.replaceChildren();
  const locs = Object.entries(doc.locations || {});
  if (!locs.length) {
    const t = svg("text", { x: 20, y: 40, fill: "#8b949e" }); t.textContent = "No camera has a location yet."; map.append(t); return;
  }
  // Equirectangular projection around the cameras' centre: x scaled by cos(latitude), so distances look right.
  const lats = locs.map(([, l]) => l[0]), lons = locs.map(([, l]) => l[1]);
  const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
  const k = Math.cos((midLat * Math.PI) / 180);
  const xs = lons.map((v) => v * k), ys = lats;
  const spanX = Math.max(1e-4, Math.max(...xs) - Math.min(...xs)), spanY = Math.max(1e-4, Math.max(...ys) - Math.min(...ys));
  const scale = Math.min(880 / spanX, 480 / spanY);
  const ox = 500 - ((Math.min(...xs) + Math.max(...xs)) / 2) * scale, oy = 300 + ((Math.min(...ys) + Math.max(...ys)) / 2) * scale;
  for (let g = -5; g <= 5; g++) {  // a faint grid: there is no tile server to draw streets from
    map.append(svg("line", { x1: 0, y1: 300 + g * 60, x2: 1000, y2: 300 + g * 60, stroke: "#1b2e42" }));
    map.append(svg("line", { x1: 500 + g * 100, y1: 0, x2: 500 + g * 100, y2: 600, stroke: "#1b2e42" }));
  }
  for (const [id, [lat, lon, name]] of locs) {
    const series = (doc.cameras || {})[id];
    const los = series && series.los.length ? series.los[series.los.length - 1] : null;
    const cx = ox + lon * k * scale, cy = oy - lat * scale;
    const g = svg("g", { class: "cam", "data-camera-id": id, "data-los": los || "", cursor: "pointer" });
    g.addEventListener("click", () => (location.hash = `#/camera/${enc(id)}`));
    g.append(svg("circle", { cx, cy, r: 12, fill: los ? LOS_COLOURS[los] : "#607d8b", stroke: "#fff", "stroke-width": 2 }));
    const t = svg("text", { x: cx + 16, y: cy + 4, fill: "#e6e9ec", "font-size": 13 });
    t.textContent = `${name} ${los ? "· LOS " + los : "· no stats"}`;
    g.append(t);
    map.append(g);
  }
  document.getElementById("legend").replaceChildren(...Object.entries(LOS_COLOURS).map(([l, c]) =>
    h("span", {}, h("i", { style: `background:${c}` }), `LOS ${l}`)), h("span", {}, h("i", { style: "background:#607d8b" }), "no statistics"));
}

// --- routing and live updates -----------------------------------------------------------------------
function route() {
  const [, view, arg] = (location.hash || "#/grid").split("/");
  state.view = ["grid", "camera", "incidents", "traffic", "map"].includes(view) ? view : "grid";
  state.cameraId = arg ? decodeURIComponent(arg) : null;
  for (const el of document.querySelectorAll(".view")) el.hidden = el.id !== `view-${state.view}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === state.view);
  refresh();
}

function refresh() {
  if (state.view === "grid") renderGrid();
  else if (state.view === "camera") renderCamera();
  else if (state.view === "incidents") renderTimeline();
  else if (state.view === "traffic") renderTraffic();
  else if (state.view === "map") renderMap();
}

function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/stream");
  es.onopen = () => live.classList.remove("off");
  es.onerror = () => live.classList.add("off");  // EventSource reconnects by itself
  es.addEventListener("alert", (e) => {
    const a = JSON.parse(e.data);
    state.fresh.add(a.incident_id);
    setTimeout(() => state.fresh.delete(a.incident_id), 2500);
    upsertAlert(a);
    if (state.view === "incidents") placeAlert(a);
    if (state.view === "camera" && a.camera_id === state.cameraId) renderCamera();
  });
  es.addEventListener("cameras", (e) => {
    state.cameras = JSON.parse(e.data);
    updateCameraFilter();
    if (state.view === "grid") renderGrid();
  });
}

async function start() {
  const cfg = await getJSON("/api/config");
  state.readOnly = cfg.read_only;
  document.getElementById("mode").textContent = cfg.read_only ? "read-only" : "";
  tokenInput.hidden = cfg.read_only;
  for (const id of ["f-severity", "f-type", "f-camera"]) document.getElementById(id).addEventListener("change", renderTimeline);
  const [cameras, alerts] = await Promise.all([getJSON("/api/cameras"), getJSON("/api/alerts")]);
  state.cameras = cameras;
  updateCameraFilter();
  for (const a of alerts) upsertAlert(a);
  window.addEventListener("hashchange", route);
  route();
  connect();
  // Slow views refresh on a timer; the grid and the timeline follow the event stream.
  setInterval(() => { if (["camera", "traffic", "map"].includes(state.view)) refresh(); }, 5000);
  document.body.dataset.ready = "1";
}

start().catch((e) => flash(String(e)));
