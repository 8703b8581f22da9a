"use strict";

const state = { config: null, map: null, layer: null, marker: null, markers: [], legend: null, loads: 0 };
const SCALE = [1, 2, 3, 4, 5];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function known(value) { return value !== null && value !== undefined && !Number.isNaN(value); }

function fmt(value) { return known(value) ? value.toFixed(2) : "–"; }

function percent(share) { return `${Number((share * 100).toFixed(1))} %`; }

/* A score with its prediction interval: "3.42 (90 %: 2.80–4.05)"; without a known level, "(interval …)". */
function withInterval(value, lo, hi, level) {
  if (!known(value) || !known(lo) || !known(hi)) return fmt(value);
  return `${fmt(value)} (${known(level) ? percent(level) + ":" : "interval"} ${fmt(lo)}–${fmt(hi)})`;
}

function spread(sd) { return known(sd) ? ` ± ${fmt(sd)}` : ""; }

/* The printed maps' colour-blind-safe palette (matplotlib's viridis, percept.study.maps), sampled at 33
   evenly spaced stops over the survey's 1–5 scale and interpolated linearly between them. */
const VIRIDIS = [
  [68, 1, 84], [71, 13, 96], [72, 24, 106], [72, 35, 116], [71, 45, 123], [69, 55, 129],
  [66, 64, 134], [62, 73, 137], [59, 82, 139], [55, 91, 141], [51, 99, 141], [47, 107, 142],
  [44, 114, 142], [41, 122, 142], [38, 130, 142], [35, 137, 142], [33, 145, 140], [31, 152, 139],
  [31, 160, 136], [34, 167, 133], [40, 174, 128], [50, 182, 122], [63, 188, 115], [78, 195, 107],
  [94, 201, 98], [112, 207, 87], [132, 212, 75], [152, 216, 62], [173, 220, 48], [194, 223, 35],
  [216, 226, 25], [236, 229, 27], [253, 231, 37],
];
const NO_SCORE = "#9a9a9a";
const OUT_OF_DOMAIN = "#55595f";

/* Where a score lies on the 1–5 scale, from 0 to 1 (clamped). */
function position(value) { return Math.max(0, Math.min(1, (value - SCALE[0]) / (SCALE[SCALE.length - 1] - SCALE[0]))); }

function colour(value) {
  if (!known(value)) return NO_SCORE;
  const at = position(value) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(at), VIRIDIS.length - 2);
  const mix = VIRIDIS[i].map((c, n) => Math.round(c + (VIRIDIS[i + 1][n] - c) * (at - i)));
  return `rgb(${mix.join(", ")})`;
}

/* Scores on the survey's 1–5 scale: one bar per category, starting at 1, and an axis placed with the same scale. */

function percentAt(value) { return `${position(value) * 100}%`; }

function scaleAxis(className = "axis") {
  const ticks = el("div", { class: "ticks" });
  for (const n of SCALE) {
    const tick = el("span", { class: "tick", "data-value": String(n) }, String(n));
    tick.style.left = percentAt(n);
    ticks.append(tick);
  }
  return el("div", { class: className, "aria-hidden": "true" }, ticks);
}

function bars(scores, sd, interval) {
  const box = el("div", { class: "bars" });
  const level = interval ? interval.level : null;
  for (const [category, value] of Object.entries(scores)) {
    const lo = interval ? interval.lo[category] : null;
    const hi = interval ? interval.hi[category] : null;
    const fill = el("div", { class: "fill" });
    fill.style.width = known(value) ? percentAt(value) : "0%";
    fill.style.background = colour(value);
    const bar = el("div", { class: "bar" }, fill);
    if (known(lo) && known(hi)) {
      const whisker = el("div", { class: "whisker" });
      whisker.style.left = percentAt(lo);
      whisker.style.width = `${(position(hi) - position(lo)) * 100}%`;
      bar.append(whisker);
    }
    box.append(el("div", { class: "bar-row", "data-category": category },
      el("div", { class: "bar-head" }, el("span", {}, category),
        el("strong", {}, withInterval(value, lo, hi, level) + spread(sd && sd[category]))),
      bar));
  }
  box.append(scaleAxis());
  const notes = ["Scores use the survey's scale from 1 (low) to 5 (high): 5 walkability means very walkable."];
  if (known(level)) {
    notes.push(`The line over each bar is the ${percent(level)} prediction interval: for images like the survey's, `
      + `the score people give lies inside it ${percent(level)} of the time (calibrated on the survey).`);
  }
  box.append(el("p", { class: "muted small scale-note" }, notes.join(" ")));
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
    const tab = document.getElementById(`tab-${name}`);
    tab.classList.toggle("active", name === view);
    tab.setAttribute("aria-pressed", String(name === view));
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
  const stops = VIRIDIS.map((_, i) => colour(SCALE[0] + (i / (VIRIDIS.length - 1)) * (SCALE[SCALE.length - 1] - SCALE[0])));
  ramp.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  box.append(ramp, scaleAxis("legend-axis"));
  box.append(el("div", { class: "ends" }, el("span", {}, "1 low"), el("span", {}, "5 high")));
  const none = el("i", { class: "swatch" });
  none.style.background = colour(null);
  const pano = el("i", { class: "swatch ring" });
  const outside = el("i", { class: "swatch outside" });
  box.append(el("div", {}, none, " no score"), el("div", {}, pano, " several crops of one panorama"),
    el("div", {}, outside, " hollow, dashed: outside the survey's domain"));
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
    // tile hosts (OpenStreetMap's policy) ask for the page's origin as Referer; the page's own policy sends none
    L.tileLayer(config.tile_url, { attribution: config.tile_attribution || "",
                                   referrerPolicy: "strict-origin-when-cross-origin" }).addTo(map);
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

const OUTSIDE_TEXT = "outside the survey's domain";

/* What a rated image's numbers rest on: spread, best similarity and dissimilarity, where the rated file has them.
   Intervals show their level where the rated file records it (GeoJSON, Parquet), else "(interval lo–hi)". */
function trustLine(item) {
  const parts = [];
  if (known(item.sd)) parts.push(`spread ± ${fmt(item.sd)}`);
  if (known(item.best_similarity)) parts.push(`best similarity ${item.best_similarity.toFixed(3)}`);
  if (known(item.dissimilarity)) parts.push(`dissimilarity ${item.dissimilarity.toFixed(2)}`);
  return parts.join(" · ");
}

function ratedLines(item, value, lo, hi) {
  const lines = [el("div", {}, withInterval(value, lo, hi, item.level))];
  const trust = trustLine(item);
  if (trust) lines.push(el("div", { class: "muted" }, trust));
  if (item.out_of_domain) lines.push(el("div", { class: "outside" }, OUTSIDE_TEXT));
  return lines;
}

function isOutside(properties) {
  const crops = properties.crops || [];
  return Boolean(properties.out_of_domain) || crops.some((crop) => crop.out_of_domain);
}

function markerTooltip(properties, category) {
  const crops = properties.crops || [];
  if (crops.length <= 1) {
    return el("div", { class: "tip" }, el("strong", {}, properties.image), el("div", { class: "muted" }, category),
      ...ratedLines(properties, properties.value, properties.lo, properties.hi));
  }
  const outside = crops.filter((crop) => crop.out_of_domain).length;
  return el("div", { class: "tip crops" },
    el("strong", {}, properties.image),
    el("div", {}, `${crops.length} crops of one panorama, mean ${category} ${fmt(properties.value)}`),
    outside ? el("div", { class: "outside" }, `${outside} of ${crops.length} crops ${OUTSIDE_TEXT}`) : "",
    el("ul", {}, ...crops.map((crop) => el("li", {}, `${crop.image}: `,
      withInterval(crop.value, crop.lo, crop.hi, crop.level) + spread(crop.sd),
      crop.out_of_domain ? el("span", { class: "outside" }, ` (${OUTSIDE_TEXT})`) : ""))));
}

function markerStyle(properties) {
  const several = (properties.crops || []).length > 1;
  const fill = colour(properties.value);
  if (isOutside(properties)) {
    return { radius: several ? 7 : 6, weight: 2, color: OUT_OF_DOMAIN, dashArray: "3 2", fillColor: fill,
      fillOpacity: 0.15 };
  }
  return { radius: several ? 7 : 5, weight: several ? 2 : 0, color: "#1d2433", fillOpacity: 0.85, fillColor: fill };
}

async function loadPoints() {
  const b = state.map.getBounds();
  const clamp = (v, lim) => Math.max(-lim, Math.min(lim, v));
  const params = new URLSearchParams({
    west: clamp(b.getWest(), 180), south: clamp(b.getSouth(), 90), east: clamp(b.getEast(), 180),
    north: clamp(b.getNorth(), 90), category: document.getElementById("category").value,
  });
  const status = document.getElementById("map-status");
  const load = ++state.loads;  // only the latest request draws: an older answer arriving late is dropped
  try {
    const data = await getJSON(`/api/rated?${params}`);
    if (load !== state.loads) return;
    state.layer.clearLayers();
    state.markers = [];
    for (const feature of data.features) {
      const [lon, lat] = feature.geometry.coordinates;
      const marker = L.circleMarker([lat, lon], markerStyle(feature.properties))
        .bindTooltip(markerTooltip(feature.properties, data.category)).addTo(state.layer);
      state.markers.push({ marker, feature });
    }
    status.textContent = data.shown < data.total
      ? `${data.shown} of ${data.total} rated locations shown (thinned evenly: zoom in to see all)`
      : `${data.shown} rated locations shown`;
    status.classList.remove("error");
  } catch (error) {
    if (load !== state.loads) return;
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
      const category = document.getElementById("category").value;
      parts.push(el("p", { class: "muted" }, `${data.count} rated images within ${data.radius} m (inverse-distance weighted)`));
      parts.push(bars(data.scores));
      parts.push(el("p", { class: "muted small truncated" }, (data.shown < data.count
        ? `Nearest images: ${data.shown} of ${data.count} shown` : "Nearest images")
        + `, with the weight each has in these scores and its own ${category} score`));
      parts.push(el("ul", { class: "nearby small" }, ...data.points.map((point) => nearbyItem(point, category))));
    } else {
      parts.push(el("p", { class: "no-imagery" }, data.message));
    }
    if (data.mapillary) {
      const m = data.mapillary;
      if (m.found) {
        parts.push(el("h4", {}, `Mapillary image ${m.id} (${m.distance_m} m away)`));
        parts.push(el("img", { src: m.thumb_url, alt: "Mapillary image", class: "mapillary" }));
        parts.push(bars(m.scores, m.sd, m.interval), domainNote(m), similarList(m.similar));
      } else {
        parts.push(el("p", { class: "muted" }, m.message));
      }
    }
    panel.replaceChildren(...parts);
  } catch (error) {
    panel.replaceChildren(el("p", { class: "error" }, `Could not score this point. ${error.message}`));
  }
}

/* One rated image near a clicked point: its distance and weight, its score with interval and what that rests on. */
function nearbyItem(point, category) {
  const pick = (field) => (point[field] && typeof point[field] === "object" ? point[field][category] : null);
  const item = { sd: pick("sd"), best_similarity: point.best_similarity, dissimilarity: point.dissimilarity,
    out_of_domain: point.out_of_domain };
  return el("li", { class: point.out_of_domain ? "outside-item" : "" },
    el("div", {}, el("strong", {}, point.image), ` · ${point.distance_m} m · weight ${percent(point.weight)}`),
    ...ratedLines(item, point.scores[category], pick("lo"), pick("hi")));
}

/* Image Demo */

function domainNote(data) {
  const parts = [`± weighted sd of the ${data.k || "K"} neighbours' scores`,
    `best similarity to the survey ${known(data.best_similarity) ? data.best_similarity.toFixed(3) : "–"}`];
  if (known(data.dissimilarity)) {
    parts.push(`dissimilarity ${data.dissimilarity.toFixed(2)} (distance to the nearest survey image over the `
      + "survey's mean: about 1 inside the survey, larger further out)");
  }
  if (!data.interval) parts.push("no prediction intervals (the model holds no calibration, or they are off)");
  const note = el("p", { class: "muted small domain" }, parts.join("; "));
  if (!data.out_of_domain) return note;
  return el("div", {}, el("p", { class: "outside domain-flag", role: "note" },
    `This photo is ${OUTSIDE_TEXT}: it is less like the survey than 95 % of survey images are like each other, `
    + "so its scores extrapolate."), note);
}

/* The weight a similar survey image had in the scores: one number where every category gave it the same. */
function weightText(weights) {
  const values = Object.values(weights || {});
  if (!values.length) return "";
  if (values.every((w) => Math.abs(w - values[0]) < 5e-4)) return `weight ${percent(values[0])}`;
  return "weight " + Object.entries(weights).map(([c, w]) => `${c} ${percent(w)}`).join(", ");
}

function similarList(similar) {
  const list = el("div", { class: "similar-list" }, el("h3", {}, `${similar.length} most similar survey images`),
    el("p", { class: "muted small" }, "Each image's weight is its share in the scores (the model's neighbour weights)."));
  for (const item of similar) {
    const ratings = Object.entries(item.ratings).map(([c, v]) => `${c} ${fmt(v)}`).join(" · ");
    const text = el("div", { class: "small" }, el("strong", {}, item.image || `sample ${item.vector}`),
      el("div", {}, `similarity ${item.similarity.toFixed(3)} · `, el("span", { class: "weight" }, weightText(item.weights))),
      el("div", { class: "muted" }, ratings));
    const row = el("div", { class: "similar-item" });
    if (item.thumbnail) row.append(el("img", { src: item.thumbnail, alt: item.image || "" }));
    row.append(text);
    list.append(row);
  }
  return list;
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
    document.getElementById("demo-scores").replaceChildren(bars(data.scores, data.sd, data.interval), domainNote(data));
    document.getElementById("similar").replaceChildren(similarList(data.similar));
  } catch (err) {
    showDemoError(`Could not score ${file.name}. ${err.message}`);
  }
}

function setupDemo() {
  const drop = document.getElementById("drop");
  const input = document.getElementById("file");
  input.addEventListener("change", () => { if (input.files[0]) scoreFile(input.files[0]); });
  // the button (Enter or Space) and a click anywhere on the drop area open the file chooser
  drop.addEventListener("click", (event) => { if (event.target !== input) input.click(); });
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
