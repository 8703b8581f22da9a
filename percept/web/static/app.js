"use strict";

const state = { config: null, map: null, layer: null, marker: null };

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
  return box;
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return body;
}

function showView(view) {
  for (const name of ["map", "demo"]) {
    document.getElementById(`view-${name}`).hidden = name !== view;
    document.getElementById(`tab-${name}`).classList.toggle("active", name === view);
  }
  if (view === "map" && state.map) state.map.invalidateSize();
}

/* Map Explorer */

function setupMap(config) {
  const select = document.getElementById("category");
  for (const category of config.categories) select.append(el("option", { value: category }, category));
  document.getElementById("radius").value = config.default_radius;
  const map = L.map("map", { preferCanvas: true });
  if (config.tile_url) L.tileLayer(config.tile_url, { attribution: config.tile_attribution || "" }).addTo(map);
  if (config.bounds) {
    const [w, s, e, n] = config.bounds;
    map.fitBounds([[s, w], [n, e]], { padding: [20, 20] });
  } else {
    map.setView([52.3676, 4.9041], 13);
  }
  state.map = map;
  state.layer = L.layerGroup().addTo(map);
  map.on("moveend", loadPoints);
  select.addEventListener("change", loadPoints);
  map.on("click", (event) => clickPoint(event.latlng));
  loadPoints();
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
    for (const feature of data.features) {
      const [lon, lat] = feature.geometry.coordinates;
      L.circleMarker([lat, lon], {
        radius: 5, weight: 0, fillOpacity: 0.85, fillColor: colour(feature.properties.value),
      }).addTo(state.layer);
    }
    status.textContent = `${data.features.length} rated locations shown`;
  } catch (error) {
    status.textContent = `could not load rated locations: ${error.message}`;
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
    panel.replaceChildren(el("p", { class: "error" }, error.message));
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

async function scoreFile(file) {
  const error = document.getElementById("demo-error");
  const preview = document.getElementById("preview");
  error.hidden = true;
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
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
    error.textContent = err.message;
    error.hidden = false;
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
  state.config = await getJSON("/api/config");
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
  setupDemo();
  setupMap(state.config);
  showView(state.config.bounds ? "map" : "demo");
  document.body.dataset.ready = "true";
}

start();
