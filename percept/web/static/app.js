"use strict";

const state = { config: null, map: null, layer: null, marker: null, markers: [], legend: null };
const SCALE = [1, 2, 3, 4, 5];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function fmt(value) { return value === null || value === undefined ? "–" : value.toFixed(2); }

function colour(value) {
  if (value === null || value === undefined) return "#888";
  const t = Math.max(0, Math.min(1, (value - 1) / 4));
  return `hsl(${Math.round(t * 120)}, 70%, 42%)`;
}

/* Scores on the survey's 1–5 scale: one bar per category and an axis underneath. */

function scaleAxis() {
  const ticks = el("div", { class: "ticks" }, ...SCALE.map((n) => el("span", {}, String(n))));
  return el("div", { class: "bar-row axis" }, el("span", {}, ""), ticks, el("span", {}, ""));
}

function bars(scores, sd) {
  const box = el("div", { class: "bars" });
  for (const [category, value] of Object.entries(scores)) {
    const spread = sd && sd[category] !== null && sd[category] !== undefined ? ` ± ${fmt(sd[category])}` : "";
    const width = value === null ? 0 : Math.max(0, Math.min(100, ((value - 1) / 4) * 100));
    const fill = el("div");
    fill.style.width = `${width}%`;
    fill.style.background = colour(value);
    box.append(el("div", { class: "bar-row", "data-category": category },
      el("span", {}, category), el("div", { class: "bar" }, fill), el("strong", {}, fmt(value) + spread)));
  }
  box.append(scaleAxis());
  box.append(el("p", { class: "muted small scale-note" },
    "Scores use the survey's scale from 1 (low) to 5 (high): 5 walkability means very walkable."));
  return box;
}

/* Requests: answers as JSON, failures as one readable sentence. */

function fieldName(loc) {
  const parts = (loc || []).filter((part) => !["query", "body", "path"].includes(part));
  return parts.length ? parts.join(".") : "request";
}

function readableError(response, body) {
  const detail = body && body.detail;
  if (typeof detail === "string" && detail) return detail.charAt(0).toUpperCase() + detail.slice(1) + ".";
  if (Array.isArray(detail) && detail.length) {
    return detail.map((item) => `${fieldName(item.loc)}: ${item.msg}`).join("; ") + ".";
  }
  return `The server answered ${response.status}${response.statusText ? " " + response.statusText : ""}.`;
}

async function getJSON(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    throw new Error("The server did not answer: is percept serve still running?");
  }
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) throw new Error(readableError(response, body));
  if (body === null) throw new Error("The server's answer could not be read.");
  return body;
}

function showView(view) {
  for (const name of ["map", "demo"]) {
    document.getElementById(`view-${name}`).hidden = name !== view;
    document.getElementById(`tab-${name}`).classList.toggle("active", name === view);
  }
  if (view === "map" && state.map) state.map.invalidateSize();
}

function showModelNote(config) {
  const note = document.getElementById("model-note");
  if (!config.model || !config.model.startsWith("percept:")) return;
  note.textContent = `This server scores with ${config.model}, a built-in offline model for trying the tool: `
    + "its vectors carry no learned meaning, so its scores and similar images show how Percept works, not how "
    + "people perceive a street. Serve a model built with pretrained CLIP weights for real predictions.";
  note.hidden = false;
}

/* Map Explorer */

function legendContent(category) {
  const box = el("div", { class: "legend", id: "legend" });
  box.append(el("strong", {}, `${category} score`));
  const ramp = el("div", { class: "ramp" });
  ramp.style.background = `linear-gradient(to right, ${SCALE.map((n) => colour(n)).join(", ")})`;
  box.append(ramp, el("div", { class: "ticks" }, ...SCALE.map((n) => el("span", {}, String(n)))));
  box.append(el("div", { class: "ends" }, el("span", {}, "1 low"), el("span", {}, "5 high")));
  const none = el("i", { class: "swatch" });
  none.style.background = colour(null);
  const pano = el("i", { class: "swatch ring" });
  box.append(el("div", {}, none, " no score"), el("div", {}, pano, " several crops of one panorama"));
  return box;
}

function updateLegend() {
  const category = document.getElementById("category").value;
  state.legend.getContainer().replaceChildren(legendContent(category));
}

function setupMap(config) {
  const select = document.getElementById("category");
  for (const category of config.categories) select.append(el("option", { value: category }, category));
  document.getElementById("radius").value = config.default_radius;
  const map = L.map("map", { preferCanvas: true });
  if (config.tile_url) {
    L.tileLayer(config.tile_url, { attribution: config.tile_attribution || "" }).addTo(map);
  } else {
    document.getElementById("basemap-note").hidden = false;
  }
  if (config.bounds) {
    const [w, s, e, n] = config.bounds;
    map.fitBounds([[s, w], [n, e]], { padding: [20, 20] });
  } else {
    map.setView([52.3676, 4.9041], 13);
  }
  state.map = map;
  state.layer = L.layerGroup().addTo(map);
  state.legend = L.control({ position: "bottomright" });
  state.legend.onAdd = () => L.DomUtil.create("div", "legend-control");
  state.legend.addTo(map);
  updateLegend();
  map.on("moveend", loadPoints);
  select.addEventListener("change", () => { updateLegend(); loadPoints(); });
  map.on("click", (event) => clickPoint(event.latlng));
  loadPoints();
}

function markerTooltip(properties) {
  const crops = properties.crops || [];
  if (crops.length <= 1) return el("span", {}, `${properties.image}: ${fmt(properties.value)}`);
  return el("div", { class: "crops" },
    el("strong", {}, properties.image),
    `: ${crops.length} crops of one panorama, mean ${fmt(properties.value)}`,
    el("ul", {}, ...crops.map((crop) => el("li", {}, `${crop.image}: ${fmt(crop.value)}`))));
}

async function loadPoints() {
  const b = state.map.getBounds();
  const clamp = (v, lim) => Math.max(-lim, Math.min(lim, v));
  const params = new URLSearchParams({
    west: clamp(b.getWest(), 180), south: clamp(b.getSouth(), 90), east: clamp(b.getEast(), 180),
    north: clamp(b.getNorth(), 90), category: document.getElementById("category").value,
  });
  const status = document.getElementById("map-status");
  try {
    const data = await getJSON(`/api/rated?${params}`);
    state.layer.clearLayers();
    state.markers = [];
    for (const feature of data.features) {
      const [lon, lat] = feature.geometry.coordinates;
      const several = (feature.properties.crops || []).length > 1;
      const marker = L.circleMarker([lat, lon], {
        radius: several ? 7 : 5, weight: several ? 2 : 0, color: "#1d2433", fillOpacity: 0.85,
        fillColor: colour(feature.properties.value),
      }).bindTooltip(markerTooltip(feature.properties)).addTo(state.layer);
      state.markers.push({ marker, feature });
    }
    status.textContent = data.shown < data.total
      ? `${data.shown} of ${data.total} rated locations shown (thinned evenly: zoom in to see all)`
      : `${data.shown} rated locations shown`;
    status.classList.remove("error");
  } catch (error) {
    state.layer.clearLayers();
    state.markers = [];
    status.textContent = `Could not load the rated locations. ${error.message}`;
    status.classList.add("error");
  }
}

async function clickPoint(latlng) {
  const panel = document.getElementById("point-panel");
  const radius = document.getElementById("radius").value || state.config.default_radius;
  if (state.marker) state.marker.remove();
  state.marker = L.circle(latlng, { radius: Number(radius), color: "#1d2433", weight: 1, fillOpacity: 0.05 })
    .addTo(state.map);
  panel.replaceChildren(el("p", { class: "muted" }, "Scoring…"));
  const params = new URLSearchParams({ lat: latlng.lat.toFixed(6), lon: latlng.lng.toFixed(6), radius });
  try {
    const data = await getJSON(`/api/point?${params}`);
    const parts = [el("h3", {}, `${latlng.lat.toFixed(5)}, ${latlng.lng.toFixed(5)}`)];
    if (data.scores) {
      parts.push(el("p", { class: "muted" }, `${data.count} rated images within ${data.radius} m (inverse-distance weighted)`));
      parts.push(bars(data.scores));
      parts.push(el("p", { class: "muted small truncated" }, data.shown < data.count
        ? `Nearest images: ${data.shown} of ${data.count} shown` : "Nearest images"));
      const table = el("table", { class: "scores-table small" });
      for (const point of data.points) {
        table.append(el("tr", {}, el("td", {}, point.image), el("td", {}, `${point.distance_m} m`)));
      }
      parts.push(table);
    } else {
      parts.push(el("p", { class: "no-imagery" }, data.message));
    }
    if (data.mapillary) {
      const m = data.mapillary;
      if (m.found) {
        parts.push(el("h4", {}, `Mapillary image ${m.id} (${m.distance_m} m away)`));
        parts.push(el("img", { src: m.thumb_url, alt: "Mapillary image", class: "mapillary" }));
        parts.push(bars(m.scores, m.sd), domainNote(m));
      } else {
        parts.push(el("p", { class: "muted" }, m.message));
      }
    }
    panel.replaceChildren(...parts);
  } catch (error) {
    panel.replaceChildren(el("p", { class: "error" }, `Could not score this point. ${error.message}`));
  }
}

/* Image Demo */

function domainNote(data) {
  const text = `± weighted sd of the ${data.k || "K"} neighbours' scores; ` +
    `best similarity to the survey ${data.best_similarity === null ? "–" : data.best_similarity.toFixed(3)}`;
  if (!data.out_of_domain) return el("p", { class: "muted small domain" }, text);
  return el("p", { class: "error small domain" },
    `${text}: less like the survey than 95 % of survey images are like each other (out of domain)`);
}

function clearDemoResults() {
  document.getElementById("demo-scores").replaceChildren();
  document.getElementById("similar").replaceChildren();
}

function showDemoError(message) {
  const error = document.getElementById("demo-error");
  clearDemoResults();
  error.textContent = message;
  error.hidden = false;
}

async function scoreFile(file) {
  const preview = document.getElementById("preview");
  document.getElementById("demo-error").hidden = true;
  clearDemoResults();
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  const limit = state.config.max_upload_bytes;
  if (file.size > limit) {
    const mb = (n) => (n / 1048576).toFixed(1);
    showDemoError(`Could not score ${file.name}. It is ${mb(file.size)} MB and this server accepts at most `
      + `${mb(limit)} MB: choose a smaller image.`);
    return;
  }
  document.getElementById("demo-scores").append(el("p", { class: "muted" }, "Scoring…"));
  const form = new FormData();
  form.append("image", file);
  try {
    const data = await getJSON("/api/score", { method: "POST", body: form });
    document.getElementById("demo-scores").replaceChildren(bars(data.scores, data.sd), domainNote(data));
    const list = [el("h3", {}, `${data.similar.length} most similar survey images`)];
    for (const item of data.similar) {
      const ratings = Object.entries(item.ratings).map(([c, v]) => `${c} ${fmt(v)}`).join(" · ");
      const text = el("div", { class: "small" }, el("strong", {}, item.image || `sample ${item.vector}`),
        el("div", {}, `similarity ${item.similarity.toFixed(3)}`), el("div", { class: "muted" }, ratings));
      const row = el("div", { class: "similar-item" });
      if (item.thumbnail) row.append(el("img", { src: item.thumbnail, alt: item.image || "" }));
      row.append(text);
      list.push(row);
    }
    document.getElementById("similar").replaceChildren(...list);
  } catch (err) {
    showDemoError(`Could not score ${file.name}. ${err.message}`);
  }
}

function setupDemo() {
  const drop = document.getElementById("drop");
  const input = document.getElementById("file");
  input.addEventListener("change", () => { if (input.files[0]) scoreFile(input.files[0]); });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) scoreFile(event.dataTransfer.files[0]);
  });
}

async function start() {
  try {
    state.config = await getJSON("/api/config");
  } catch (error) {
    document.querySelector("main").replaceChildren(el("p", { class: "error" }, `The page cannot start. ${error.message}`));
    return;
  }
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
  showModelNote(state.config);
  setupDemo();
  setupMap(state.config);
  showView(state.config.bounds ? "map" : "demo");
  document.body.dataset.ready = "true";
}

start();
