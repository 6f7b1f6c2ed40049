"""dashboard.html as a labelling page: one self-contained file (inline JSON, base64 thumbnails,
vanilla JS on a canvas; no network, no server) that maps the images' features and writes the
corrections CSV that `train.py --corrections` reads (corrections.py).

Select points on the map (lasso or box; shift adds), look at them in a sortable grid, relabel
(a class, a new class name, or a digit key), exclude (weight 0) or undo, then "Download
corrections": `path,label,weight` rows with absolute paths, one per changed image. "Load
corrections" reads such a file back (its rows for images not on the map are kept and written
back). Hand-written rather than Bokeh or Plotly: measure_page.py and RESULTS.md give the figures.

Per-image signals (analyze.page_signals: samples.csv's loss, p(label), margin, kNN label agreement,
the label review's suspects, near-duplicate groups; split, source, confidence) colour the map,
filter it and sort the grid. Unlabelled photos (analyze.py --unlabeled) are squares with label -1:
labelled here, they become rows that add them to training.
"""
import html
import json

import cli

# Points whose images can be corrected have a path: the train / val images of a photo folder (an
# absolute path) or of MNIST (`#i`); test and synthetic images have none (a corrections row for
# them would add a test image to training, or name nothing).

# Per-image signals: a list each (None where an image has none); a page made without them offers none of them.
SIGNALS = ("loss", "p_label", "margin", "knn", "suspect", "suggested", "dup_group", "dup_size", "flag")


def write_page(path, points, maps, classes, title, note, fit_box, palette):
    """Writes the page: `points` as report.write_dashboard makes them (labels, preds, conf, split,
    source, names, paths, `thumbs` and `cam_thumbs`: data: URIs), `maps` {"tsne": [N, 2], "pca":
    [N, 2]} placed by `fit_box` (report.fit_box), `palette` a colour per class. Optional: the SIGNALS
    lists and `review` (analyze.page_signals); label -1 and source 2: an unlabelled photo."""
    n = len(points["labels"])
    payload = {
        "title": title, "note": note, "classes": list(classes), "palette": palette,
        "sources": ("real", "synthetic", "unlabelled"), **{k: v for name in ("tsne", "pca")
                                             for k, v in zip((name, name + "_box"), fit_box(maps[name]))},
        "label": [int(x) for x in points["labels"]], "pred": [int(x) for x in points["preds"]],
        "conf": [round(float(c), 3) for c in points["conf"]],
        "split": list(points["split"]), "source": [int(s) for s in points["source"]], "name": list(points["names"]),
        "path": [p or "" for p in (points.get("paths") or [""] * n)],
        "img": list(points["thumbs"]), "cam": list(points.get("cam_thumbs") or []),
    }
    payload.update({k: [None] * n if points.get(k) is None else list(points[k]) for k in SIGNALS},
                   review=list(points.get("review") or []))
    # "<" escaped: no "</script>" or "<!--" (class names are user data) can end or upset the script element
    data = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")
    text = PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)
    with cli.atomic_write(path) as f:
        f.write(text)
    return path


# Everything inline: no URL other than data: URIs (the download too), so the file
# works from disk with no network. User data reach the DOM through textContent only.
PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 12px 20px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; }
#note, .hint { color: #555; margin: 0 0 8px; }
#controls label, #controls select { margin-right: 10px; }
#tabs { margin: 8px 0; }
button { margin: 0 3px 3px 0; padding: 3px 9px; border: 1px solid #aaa; background: #f4f4f4; cursor: pointer; }
button.on { background: #333; color: #fff; border-color: #333; }
#main { display: flex; gap: 16px; align-items: flex-start; }
#map { border: 1px solid #ccc; background: #fff; cursor: crosshair; touch-action: none; }
#legend div { margin: 3px 0; white-space: nowrap; }
#legend .sw { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: -1px; }
#tip { position: fixed; display: none; pointer-events: none; background: #fff; border: 1px solid #888;
       padding: 6px; box-shadow: 0 2px 6px #0004; font-size: 13px; line-height: 1.35; }
#tip img { display: inline-block; width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated; margin: 0 4px 4px 0; }
#tip img[hidden] { display: none; }
.bad { color: #c00; font-weight: bold; }
#act { position: sticky; top: 0; background: #fff; padding: 6px 0; border-bottom: 1px solid #ddd; margin-top: 12px; }
#act input[type=text] { width: 9em; }
#status { margin-left: 8px; color: #333; }
#grid { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 8px; }
.card { width: 120px; border: 2px solid #ddd; padding: 4px; font-size: 12px; line-height: 1.3; cursor: pointer; }
.card.picked { border-color: #0072B2; background: #eef6fc; }
.card.fixed { opacity: .45; cursor: default; }
.card img { width: 112px; height: 112px; object-fit: contain; image-rendering: pixelated; display: block; background: #eee; }
#tip img:not([src^="data:image/png"]), .card img:not([src^="data:image/png"]) { image-rendering: auto; }  /* photos: smooth */
.card .new { color: #0072B2; font-weight: bold; }
.card .gone { text-decoration: line-through; color: #888; }
.card .nm { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: #555; }
.card .sig { color: #555; }
#review { margin: 0 0 8px; color: #333; }
#filter { margin-top: 6px; }
#filter input[type=number] { width: 5em; }
</style></head>
<body>
<h1 id="title"></h1>
<p id="note"></p>
<div id="review"></div>
<div id="controls">
  projection: <label><input type="radio" name="proj" value="tsne" checked> t-SNE</label>
  <label><input type="radio" name="proj" value="pca"> PCA</label>
  colour by: <select id="colour">
    <option value="class">class</option><option value="correct">correct / wrong</option>
    <option value="source">source (real / synthetic)</option><option value="split">split (train / val / test)</option>
    <option value="changed">changed here</option></select>
  <label id="synthbox" hidden><input type="checkbox" id="synth"> show synthetic</label>
  select: <label><input type="radio" name="tool" value="lasso" checked> lasso</label>
  <label><input type="radio" name="tool" value="box"> box</label>
</div>
<div id="filter">filter: <select id="fsig"><option value="">none</option></select>
  <span id="fnum" hidden>from <input type="number" id="fmin" step="any"> to <input type="number" id="fmax" step="any"></span>
  <select id="fcat" hidden></select></div>
<div id="tabs"></div>
<div id="main"><canvas id="map" width="800" height="800"></canvas><div id="legend"></div></div>
<p class="hint">Drag on the map to select (shift: add to the selection); click a card to pick or unpick it. Keys: a digit
sets the picked images' label, x excludes them, u undoes.</p>
<div id="act">
  <span id="setto"></span>
  <input type="text" id="newname" placeholder="new class name"> <button id="setnew">set</button>
  <button id="exclude">exclude (weight 0)</button> <button id="include">include</button> <button id="undo">undo</button>
  sort: <select id="sort"><option value="conf">confidence, lowest first</option><option value="label">label</option>
    <option value="pred">prediction</option><option value="name">file name</option></select>
  <button id="download">Download corrections</button>
  <label>Load corrections <input type="file" id="load" accept=".csv,text/csv"></label>
  <span id="status"></span>
</div>
<div id="grid"></div>
<div id="tip"><img id="tipimg" alt=""><img id="tipcam" alt="Grad-CAM" title="Grad-CAM" hidden><div id="tiptext"></div></div>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const N = D.label.length, cv = document.getElementById("map"), ctx = cv.getContext("2d"), tip = document.getElementById("tip");
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
const classes = D.classes.slice();                 // grows with new class names
const label = D.label.slice(), weight = new Array(N).fill(null);  // null: unchanged
const other = [];                                  // rows of a loaded file for images not on this map: written back
const undoStack = [];                                // undo: lists of [i, label, weight] before a change
let sel = [], picked = new Set();
const changed = i => label[i] !== D.label[i] || weight[i] !== null;
const cname = k => k < 0 ? "unlabelled" : classes[k];         // label -1: an unlabelled photo
const wrongAt = i => label[i] >= 0 && D.pred[i] !== label[i];  // an unlabelled photo is never wrong
const GREY = "#c8c8c8";
const COLOURINGS = {
  class: {get names() { return classes.concat(["unlabelled"]); }, of: i => label[i] < 0 ? classes.length : label[i],
          get colours() {  // rebuilt only when a class is added: draw() reads it for every point
            if (!this.cache || this.cache.length !== classes.length + 1) this.cache = D.palette.slice(0, classes.length).concat([GREY]);
            return this.cache; }},
  correct: {names: ["correct", "wrong", "unlabelled"], colours: ["#2ca02c", "#d62728", GREY], of: i => label[i] < 0 ? 2 : +(D.pred[i] !== label[i])},
  source: {names: D.sources, colours: ["#1f77b4", "#ff7f0e", "#7f7f7f"], of: i => D.source[i]},
  changed: {names: ["unchanged", "changed here"], colours: ["#bbbbbb", "#D55E00"], of: i => +changed(i)},
};

// ---- per-image signals (analyze.page_signals; null where an image has none): colour by, filter by, sort by
const RAMP = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];  // viridis: ordered and colour-blind safe
function numeric(key, title, edges, low) {  // binned for colour and filter by category; `low`: sorted lowest first
  const v = i => D[key][i], last = edges.length + 1;
  const names = ["below " + edges[0], ...edges.slice(1).map((e, k) => edges[k] + " to " + e),
                 edges[edges.length - 1] + " and above", "no value"];
  const cat = i => { const x = v(i); if (x === null) return last; let k = 0; while (k < edges.length && x >= edges[k]) k++; return k; };
  return {title, v, edges, low, names, colours: RAMP.concat([GREY]), cat};
}
const SIGNALS = {
  loss: numeric("loss", "loss", [0.05, 0.2, 0.7, 2], false),
  p_label: numeric("p_label", "p(label)", [0.2, 0.4, 0.6, 0.8], true),
  margin: numeric("margin", "margin", [-0.5, 0, 0.5, 0.9], true),
  conf: numeric("conf", "confidence", [0.2, 0.4, 0.6, 0.8], false),
  knn: numeric("knn", "kNN label agreement", [0.2, 0.4, 0.6, 0.8], true),
  suspect: {title: "label review", names: ["not a suspect", "suspect", "not reviewed", "review withheld"],
            colours: ["#2ca02c", "#d62728", GREY, "#9467bd"], order: [1, 0, 3, 2],  // suspects first in a sort
            cat: i => { const x = D.suspect[i]; return x === null || x === -1 ? 2 : x === -2 ? 3 : x; }},
  dup: {title: "near-duplicate group", names: ["in a group", "in none", "not checked"], colours: ["#d62728", "#2ca02c", GREY],
        order: [0, 1, 2], cat: i => D.dup_group[i] === null ? 2 : D.dup_group[i] >= 0 ? 0 : 1},
  split: {title: "split", names: ["train", "val", "test", "unlabelled"], colours: ["#1f77b4", "#2ca02c", "#9467bd", "#7f7f7f"],
          order: [0, 1, 2, 3], cat: i => Math.max(0, ["train", "val", "test", "unlabelled"].indexOf(D.split[i]))},
  source: {title: "source", names: D.sources, order: [0, 1, 2], cat: i => D.source[i]},  // its colouring is above
};
// a signal the page has no value of (a page made without analyze.py's table) is not offered
const offered = Object.keys(SIGNALS).filter(k => !["loss", "p_label", "margin", "knn", "suspect", "dup"].includes(k) ||
  (D[k === "dup" ? "dup_group" : k] || []).some(x => x !== null));
offered.forEach(k => { if (!COLOURINGS[k]) COLOURINGS[k] = {names: SIGNALS[k].names, colours: SIGNALS[k].colours, of: SIGNALS[k].cat}; });
const dupOnMap = new Map();  // near-duplicate group -> its images on this map
D.dup_group.forEach(g => { if (g !== null && g >= 0) dupOnMap.set(g, (dupOnMap.get(g) || 0) + 1); });
const filt = {key: "", lo: null, hi: null, cat: 0};  // the filter: a signal's range, or one of its categories
function passes(i) {
  if (!filt.key) return true;
  const g = SIGNALS[filt.key];
  if (!g.edges) return g.cat(i) === filt.cat;
  const x = g.v(i);
  return x !== null && (filt.lo === null || x >= filt.lo) && (filt.hi === null || x <= filt.hi);
}
const pct = x => (100 * x).toFixed(1) + "%";
function signalText(i) {  // the numbers of image i that it has, one line
  const m = D.source[i] === 2 ? "margin of the prediction " : "margin ";
  return [["loss ", D.loss[i], x => x.toFixed(2)], ["p(label) ", D.p_label[i], pct], [m, D.margin[i], x => x.toFixed(2)],
          ["kNN agreement ", D.knn[i], x => x.toFixed(2)]].filter(([, x]) => x !== null).map(([t, x, f]) => t + f(x)).join(" · ");
}
function signalFlags(i) {  // what is worth a glance: suspect, near-duplicate, an unlabelled photo's flag
  const out = [];
  if (D.suspect[i] === 1) out.push("suspect: looks like " + cname(D.suggested[i]));
  if (D.suspect[i] === -2) out.push("label review withheld for its split");
  if (D.dup_group[i] !== null && D.dup_group[i] >= 0)
    out.push("near-duplicate group " + D.dup_group[i] + " (" + D.dup_size[i] + " images, " + dupOnMap.get(D.dup_group[i]) + " on the map)");
  if (D.flag[i] && D.flag[i] !== "ok") out.push(D.flag[i]);
  return out;
}
const state = {proj: "tsne", colour: "class", tab: -1, tool: "lasso", synth: false};  // tab: a class index, -1 = all
const R = N > 3000 ? 3 : N > 500 ? 4.5 : 6, M = 12;  // point radius and margin (px)
let sx = [], sy = [], base = null;                  // points on the canvas; the drawn map without overlays

document.getElementById("title").textContent = D.title;
document.getElementById("note").textContent = D.note;
const real = i => state.synth || D.source[i] !== 1;  // synthetic composites only when asked for: they are not the user's photos
const shown = i => real(i) && (state.tab < 0 || label[i] === state.tab || D.pred[i] === state.tab) && passes(i);

function layout() {  // canvas size and point positions: one scale for both axes, the shown points' own box
  const xy = D[state.proj];
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (let i = 0; i < N; i++) if (shown(i)) {
    x0 = Math.min(x0, xy[2 * i]); x1 = Math.max(x1, xy[2 * i]); y0 = Math.min(y0, xy[2 * i + 1]); y1 = Math.max(y1, xy[2 * i + 1]);
  }
  if (x0 > x1) [x0, y0, x1, y1] = [0, 0, ...D[state.proj + "_box"]];  // nothing shown: the whole map
  const bw = Math.max(x1 - x0, 1), bh = Math.max(y1 - y0, 1);
  const room = Math.max(300, Math.min(innerWidth - 260, 820)), s = (room - 2 * M) / Math.max(bw, bh);
  const w = Math.round(bw * s + 2 * M), h = Math.round(bh * s + 2 * M), dpr = devicePixelRatio || 1;
  cv.width = w * dpr; cv.height = h * dpr; cv.style.width = w + "px"; cv.style.height = h + "px";
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  for (let i = 0; i < N; i++) { sx[i] = M + (xy[2 * i] - x0) * s; sy[i] = M + (y1 - xy[2 * i + 1]) * s; }
}

function draw() {  // the whole map; `base` keeps it so that a lasso drag only repaints its outline
  const col = COLOURINGS[state.colour], counts = col.names.map(() => 0), inSel = new Uint8Array(N);
  let squares = 0, rings = 0;  // the legend explains only the marks on the map
  sel.forEach(i => inSel[i] = 1);
  ctx.clearRect(0, 0, cv.width, cv.height);
  for (const pass of [0, 1]) {  // the selected points last, on top
    for (let i = 0; i < N; i++) {
      if (!shown(i) || inSel[i] !== pass) continue;
      const k = col.of(i);
      counts[k]++;
      ctx.globalAlpha = sel.length && !pass ? 0.25 : 1;
      ctx.beginPath();
      const r = pass ? R + 1.5 : R;
      if (D.source[i] === 2) { ctx.rect(sx[i] - r, sy[i] - r, 2 * r, 2 * r); squares++; } else ctx.arc(sx[i], sy[i], r, 0, 6.2832);  // unlabelled: a square
      ctx.fillStyle = col.colours[k % col.colours.length]; ctx.fill();
      rings += wrongAt(i);
      if (wrongAt(i) || pass) { ctx.lineWidth = pass ? 2 : 1.5; ctx.strokeStyle = "#000"; ctx.stroke(); }
    }
  }
  ctx.globalAlpha = 1;
  base = base || document.createElement("canvas");  // a copy: a lasso drag repaints it, then its outline
  base.width = cv.width; base.height = cv.height;
  base.getContext("2d").drawImage(cv, 0, 0);
  cv.dataset.shown = counts.reduce((a, b) => a + b, 0);
  for (const b of tabs.children) b.classList.toggle("on", +b.dataset.tab === state.tab);
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  col.names.forEach((name, k) => {
    if (!counts[k]) return;
    const row = el("div"), sw = el("span", undefined, "sw");
    sw.style.background = col.colours[k % col.colours.length];
    row.append(sw, name + " (" + counts[k] + ")");
    legend.appendChild(row);
  });
  if (state.colour !== "correct" && rings) legend.appendChild(el("div", "black ring: wrong prediction"));
  if (squares) legend.appendChild(el("div", "square: unlabelled photo"));
}

const tabs = document.getElementById("tabs");
function buildTabs() {
  tabs.replaceChildren();
  [-1, ...classes.keys()].forEach(k => {
    const n = label.filter((l, i) => real(i) && (k < 0 || l === k)).length;
    const b = el("button", (k < 0 ? "All" : classes[k]) + " (" + n + ")");
    b.dataset.tab = k;
    b.title = k < 0 ? "every sampled image" : "images labelled " + classes[k] + " or predicted as it";
    b.onclick = () => { state.tab = k; layout(); draw(); };
    tabs.appendChild(b);
  });
  const setto = document.getElementById("setto");  // one button per class: set the picked images' label
  setto.replaceChildren("label: ");
  classes.forEach((c, k) => { const b = el("button", c); b.onclick = () => setLabel(k); setto.appendChild(b); });
}
document.querySelectorAll("input[name=proj]").forEach(r => r.onchange = () => { state.proj = r.value; layout(); draw(); });
document.querySelectorAll("input[name=tool]").forEach(r => r.onchange = () => state.tool = r.value);
document.getElementById("colour").onchange = e => { state.colour = e.target.value; draw(); };
document.getElementById("synthbox").hidden = !D.source.some(s => s === 1);
document.getElementById("synth").onchange = e => { state.synth = e.target.checked; buildTabs(); layout(); draw(); };
// the signals' entries in the colour, filter and sort menus (option text from the page's own titles)
const option = (value, text) => { const o = el("option", text); o.value = value; return o; };
offered.forEach(k => { if (!["source", "split"].includes(k)) document.getElementById("colour").appendChild(option(k, SIGNALS[k].title)); });  // (those two are in the menu already)
offered.forEach(k => document.getElementById("fsig").appendChild(option(k, SIGNALS[k].title)));
function setFilter() {  // the filter's inputs -> filt, then the map again
  const key = document.getElementById("fsig").value, g = SIGNALS[key], num = x => x === "" || isNaN(+x) ? null : +x;
  if (key !== filt.key) {  // another signal: its own range or categories, unset
    document.getElementById("fmin").value = document.getElementById("fmax").value = "";
    document.getElementById("fcat").replaceChildren(...(g && !g.edges ? g.names.map((n, c) => option(c, n)) : []));
  }
  document.getElementById("fnum").hidden = !(g && g.edges);
  document.getElementById("fcat").hidden = !(g && !g.edges);
  Object.assign(filt, {key, lo: num(document.getElementById("fmin").value), hi: num(document.getElementById("fmax").value),
                       cat: +document.getElementById("fcat").value || 0});
  draw();
}
["fsig", "fcat"].forEach(id => document.getElementById(id).onchange = setFilter);
["fmin", "fmax"].forEach(id => document.getElementById(id).oninput = setFilter);
document.getElementById("review").replaceChildren(...D.review.map(r => el("div", r.text, r.withheld ? "bad" : "")));

// ---- selection: lasso or box on the canvas, in CSS pixels
function local(e) { const r = cv.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
function screenXY(i) { const r = cv.getBoundingClientRect(); return [r.left + sx[i], r.top + sy[i]]; }  // for tests
function nearest(x, y) {
  let best = -1, bd = (R + 3) ** 2;
  for (let i = 0; i < N; i++) {
    if (!shown(i)) continue;
    const d = (sx[i] - x) ** 2 + (sy[i] - y) ** 2;
    if (d <= bd) { bd = d; best = i; }
  }
  return best;
}
function inside(poly, x, y) {  // even-odd rule
  let hit = false;
  for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
    const [xa, ya] = poly[a], [xb, yb] = poly[b];
    if ((ya > y) !== (yb > y) && x < (xb - xa) * (y - ya) / (yb - ya) + xa) hit = !hit;
  }
  return hit;
}
let drag = null;
cv.addEventListener("pointerdown", e => {
  if (e.button !== 0) return;
  try { cv.setPointerCapture(e.pointerId); } catch (err) { /* a synthetic pointer has no capture; the drag still works */ }
  drag = {pts: [local(e)], add: e.shiftKey};
  tip.style.display = "none";
});
cv.addEventListener("pointermove", e => {
  if (!drag) return hover(e);
  const p = local(e);
  if (state.tool === "box") drag.pts = [drag.pts[0], p]; else drag.pts.push(p);
  ctx.save(); ctx.setTransform(1, 0, 0, 1, 0, 0); ctx.clearRect(0, 0, cv.width, cv.height); ctx.drawImage(base, 0, 0); ctx.restore();
  ctx.beginPath(); ctx.strokeStyle = "#000"; ctx.lineWidth = 1; ctx.setLineDash([4, 3]);
  if (state.tool === "box") { const [[x0, y0], [x1, y1]] = drag.pts; ctx.rect(x0, y0, x1 - x0, y1 - y0); }
  else { drag.pts.forEach(([x, y], k) => k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)); ctx.closePath(); }
  ctx.stroke(); ctx.setLineDash([]);
});
cv.addEventListener("pointerup", e => {
  if (!drag) return;
  const {pts, add} = drag, [x1, y1] = local(e);
  drag = null;
  let hits;
  if (pts.length < 2 || Math.hypot(x1 - pts[0][0], y1 - pts[0][1]) < 3 && state.tool === "box") {  // a click
    const i = nearest(x1, y1);
    hits = i < 0 ? [] : [i];
  } else if (state.tool === "box") {
    const [x0, y0] = pts[0], lo = [Math.min(x0, x1), Math.min(y0, y1)], hi = [Math.max(x0, x1), Math.max(y0, y1)];
    hits = [...Array(N).keys()].filter(i => shown(i) && sx[i] >= lo[0] && sx[i] <= hi[0] && sy[i] >= lo[1] && sy[i] <= hi[1]);
  } else {
    hits = [...Array(N).keys()].filter(i => shown(i) && inside(pts, sx[i], sy[i]));
  }
  select(add ? [...new Set([...sel, ...hits])] : hits);
});
function select(indices) {
  sel = indices;
  gridMax = 200;
  picked = new Set(sel.filter(i => D.path[i]));  // every correctable image picked at first
  draw();
  grid();
  document.dispatchEvent(new CustomEvent("selection", {detail: sel.length}));
}

// ---- the hover card
function hover(e) {
  const [x, y] = local(e), i = nearest(x, y);
  if (i < 0) { tip.style.display = "none"; return; }
  const wrong = wrongAt(i);
  document.getElementById("tipimg").src = D.img[i];
  const cam = document.getElementById("tipcam");
  cam.hidden = !D.cam[i];  // the Grad-CAM heat map of the prediction, beside the image
  if (D.cam[i]) cam.src = D.cam[i];
  const lines = [el("div", "label: " + cname(label[i]) + (label[i] !== D.label[i] ? " (was " + cname(D.label[i]) + ")" : "")),
                 el("div", "prediction: " + classes[D.pred[i]] + (wrong ? " (wrong)" : ""), wrong ? "bad" : ""),
                 el("div", "confidence: " + (100 * D.conf[i]).toFixed(1) + "%"),
                 el("div", (D.source[i] === 2 ? "unlabelled photo" : D.split[i] + " split, " + D.sources[D.source[i]]) + (weight[i] === 0 ? ", excluded" : "")),
                 el("div", D.name[i])];
  if (signalText(i)) lines.splice(lines.length - 1, 0, el("div", signalText(i)));
  lines.splice(lines.length - 1, 0, ...signalFlags(i).map(t => el("div", t, "bad")));
  document.getElementById("tiptext").replaceChildren(...lines);
  tip.style.display = "block";
  const w = tip.offsetWidth, h = tip.offsetHeight;  // beside the pointer, flipped to stay inside the window
  tip.style.left = (e.clientX + 14 + w > innerWidth ? e.clientX - 14 - w : e.clientX + 14) + "px";
  tip.style.top = Math.max(0, Math.min(e.clientY + 14, innerHeight - h)) + "px";
}
cv.addEventListener("pointerleave", () => tip.style.display = "none");

// ---- the grid of the selection
const SORTS = {conf: (a, b) => D.conf[a] - D.conf[b], label: (a, b) => label[a] - label[b] || D.conf[a] - D.conf[b],
               pred: (a, b) => D.pred[a] - D.pred[b] || D.conf[a] - D.conf[b], name: (a, b) => D.name[a].localeCompare(D.name[b])};
function signalSort(key) {  // a signal's order for the grid: nulls last, ties by confidence
  const g = SIGNALS[key];
  if (key === "dup") {  // a group's images side by side, groups in order, the others after
    const at = i => D.dup_group[i] === null || D.dup_group[i] < 0 ? 1e9 : D.dup_group[i];
    return (a, b) => at(a) - at(b) || D.conf[a] - D.conf[b];
  }
  if (!g.edges) return (a, b) => g.order[g.cat(a)] - g.order[g.cat(b)] || D.conf[a] - D.conf[b];
  const dir = g.low ? 1 : -1;
  return (a, b) => { const x = g.v(a), y = g.v(b); return (x === null) - (y === null) || (x === null ? 0 : dir * (x - y)) || a - b; };
}
offered.forEach(k => {
  SORTS["sig:" + k] = signalSort(k);
  const g = SIGNALS[k], how = g.edges ? (g.low ? ", lowest first" : ", highest first") : k === "suspect" ? ": suspects first" : "";
  document.getElementById("sort").appendChild(option("sig:" + k, g.title + how));
});
document.getElementById("sort").onchange = () => grid();
let gridMax = 200;  // cards drawn; "show more" adds 200 (thousands of cards take seconds to lay out)
function grid() {
  const order = sel.slice().sort(SORTS[document.getElementById("sort").value]);
  const cards = order.slice(0, gridMax).map(i => {
    const c = el("div", undefined, "card" + (picked.has(i) ? " picked" : "") + (D.path[i] ? "" : " fixed"));
    c.dataset.i = i;
    const img = el("img"); img.src = D.img[i]; img.alt = "";
    const lab = el("div", "label: " + cname(label[i]) + (label[i] !== D.label[i] ? " (was " + cname(D.label[i]) + ")" : ""),
                   label[i] !== D.label[i] ? "new" : "");
    if (weight[i] === 0) lab.classList.add("gone");
    const wrong = wrongAt(i);
    c.append(img, lab, el("div", "pred: " + classes[D.pred[i]] + " " + (100 * D.conf[i]).toFixed(0) + "%", wrong ? "bad" : ""),
             el("div", D.path[i] ? D.name[i] : D.source[i] === 2 ? "unlabelled: an MNIST run adds no photos" :
                       D.split[i] + ", " + D.sources[D.source[i]] + ": not correctable", "nm"));
    const sig = cardSignal(i);  // the sort's number and the flags
    if (sig) c.append(el("div", sig, "sig" + (D.suspect[i] === 1 ? " bad" : "")));
    c.title = D.path[i] || "a test or synthetic image: a corrections row cannot change it";
    c.onclick = () => { if (!D.path[i]) return; picked.has(i) ? picked.delete(i) : picked.add(i); c.classList.toggle("picked"); };
    return c;
  });
  if (order.length > gridMax) {
    const more = el("button", "show " + Math.min(200, order.length - gridMax) + " more of " + (order.length - gridMax));
    more.onclick = () => { gridMax += 200; grid(); };
    cards.push(more);
  }
  document.getElementById("grid").replaceChildren(...cards);
  say(sel.length + " selected, " + picked.size + " picked; " + count() + " image(s) changed");
}
function cardSignal(i) {  // one short line: the value the grid is sorted by, if a number, and the flags
  const key = document.getElementById("sort").value.replace(/^sig:/, ""), g = SIGNALS[key], parts = [];
  if (g && g.edges && g.v(i) !== null) parts.push(g.title + " " + (key === "p_label" || key === "conf" ? pct(g.v(i)) : g.v(i).toFixed(2)));
  if (D.suspect[i] === 1) parts.push("suspect: " + cname(D.suggested[i]) + "?");
  if (D.dup_group[i] !== null && D.dup_group[i] >= 0) parts.push("duplicate group " + D.dup_group[i]);
  if (D.flag[i] && D.flag[i] !== "ok") parts.push(D.flag[i]);
  return parts.join(", ");
}
function say(text) { document.getElementById("status").textContent = text; }
function count() { let n = other.length; for (let i = 0; i < N; i++) n += rowOf(i) !== null; return n; }

// ---- acting on the picked images
function change(f) {  // one undoable step: f(i) on each picked image
  const ids = [...picked];
  if (!ids.length) { say("pick images first: select on the map"); return; }
  undoStack.push(ids.map(i => [i, label[i], weight[i]]));
  ids.forEach(f);
  after();
}
function after() { buildTabs(); draw(); grid(); }
function setLabel(k) { change(i => label[i] = k); }
function norm(name) {  // as corrections.py's _norm: a class name as a typo would miss it
  name = name.trim().toLowerCase();
  return /^\d+$/.test(name) ? name.replace(/^0+/, "") || "0" : name;
}
function classIndex(name) {  // an existing class, a new one, or an error (corrections.py refuses near-misses)
  name = name.trim();
  if (!name || /[\r\n]/.test(name)) return "a class name is one line of text";
  if (classes.includes(name)) return classes.indexOf(name);
  const near = classes.find(c => norm(c) === norm(name));
  if (near !== undefined) return "'" + name + "' looks like the class '" + near + "': corrections.py would refuse it";
  classes.push(name);
  D.palette.push(["#000000", "#7f7f7f", "#bcbd22", "#17becf"][classes.length % 4]);
  return classes.length - 1;
}
document.getElementById("setnew").onclick = () => {
  const k = classIndex(document.getElementById("newname").value);
  typeof k === "number" ? setLabel(k) : say(k);
};
document.getElementById("exclude").onclick = () => change(i => weight[i] = 0);
document.getElementById("include").onclick = () => change(i => weight[i] = null);
function undo() {
  const step = undoStack.pop();
  if (!step) { say("nothing to undo"); return; }
  step.reverse().forEach(([i, l, w]) => { label[i] = l; weight[i] = w; });
  after();
}
document.getElementById("undo").onclick = undo;
addEventListener("keydown", e => {
  if (["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName) || e.ctrlKey && e.key !== "z" || e.altKey || e.metaKey) return;
  if (/^\d$/.test(e.key)) {  // the class of that name, else the class of that index
    const k = classes.includes(e.key) ? classes.indexOf(e.key) : +e.key < classes.length ? +e.key : -1;
    if (k >= 0) setLabel(k);
  } else if (e.key === "x" || e.key === "Delete") change(i => weight[i] = 0);
  else if (e.key === "u" || e.ctrlKey && e.key === "z") undo();
});

// ---- the corrections file: path,label,weight (corrections.py reads it; paths absolute)
function cell(v) { v = String(v); return /[",\r\n]/.test(v) || /^\s|\s$/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
function rowOf(i) {  // image i's corrections row, or null when it asks nothing
  if (!D.path[i] || !changed(i)) return null;
  // an unlabelled photo's row adds it to training: only with a label, and not excluded (corrections.py refuses
  // an added image without a label or with weight 0); an excluded one is simply left out
  if (D.label[i] < 0) return label[i] < 0 || weight[i] === 0 ? null : [D.path[i], classes[label[i]], weight[i] === null ? "" : weight[i]];
  return [D.path[i], label[i] !== D.label[i] ? classes[label[i]] : "", weight[i] === null ? "" : weight[i]];
}
function correctionsCSV() {
  const rows = [["path", "label", "weight"]];
  for (let i = 0; i < N; i++) { const r = rowOf(i); if (r) rows.push(r); }
  return rows.concat(other).map(r => r.map(cell).join(",")).join("\r\n") + "\r\n";
}
document.getElementById("download").onclick = () => {
  const a = el("a");
  a.href = "data:text/csv;charset=utf-8," + encodeURIComponent(correctionsCSV());  // a data: URI, as the page's images
  a.download = "corrections.csv";
  document.body.appendChild(a); a.click(); a.remove();
  say("corrections.csv: " + count() + " row(s); train with: python train.py ... --corrections corrections.csv");
};
function parseCSV(text) {  // RFC 4180: quoted cells may hold commas, quotes and line breaks
  const rows = [];
  let row = [], v = "", q = false;
  text = text.replace(/^\ufeff/, "");
  const sep = !text.split(/\r?\n/)[0].includes(",") && text.split(/\r?\n/)[0].includes(";") ? ";" : ",";
  for (let k = 0; k < text.length; k++) {
    const c = text[k];
    if (q) { if (c === '"' && text[k + 1] === '"') { v += '"'; k++; } else if (c === '"') q = false; else v += c; }
    else if (c === '"') q = true;
    else if (c === sep) { row.push(v); v = ""; }
    else if (c === "\n" || c === "\r") { if (c === "\r" && text[k + 1] === "\n") k++; row.push(v); rows.push(row); row = []; v = ""; }
    else v += c;
  }
  if (v || row.length) { row.push(v); rows.push(row); }
  return rows.filter(r => r.some(x => x.trim()) && !r[0].startsWith("#!"));
}
function loadCSV(text) {  // a corrections file back onto the map: one undoable step
  const rows = parseCSV(text), head = (rows.shift() || []).map(h => h.trim().toLowerCase());
  const p = head.indexOf("path") >= 0 ? head.indexOf("path") : head.indexOf("file"), l = head.indexOf("label"), w = head.indexOf("weight");
  if (p < 0 || l < 0 && w < 0) { say("not a corrections file: the header must name path and label and/or weight"); return; }
  const at = new Map(D.path.map((q, i) => [q, i])), step = [];
  let matched = 0, bad = [];
  other.length = 0;
  rows.forEach(r => {
    const path = (r[p] || "").trim(), lab = l >= 0 ? (r[l] || "").trim() : "", wt = w >= 0 ? (r[w] || "").trim() : "";
    if (!path) return;
    const i = at.has(path) ? at.get(path) : -1;
    if (i < 0 || !D.path[i]) { other.push([path, lab, wt]); return; }  // kept as it is, written back
    const k = lab ? classIndex(lab) : label[i], wn = +wt.replace(",", ".");  // "0,5": a comma-decimal locale
    if (typeof k !== "number") { bad.push(k); return; }
    if (wt !== "" && !(wn >= 0 && isFinite(wn))) { bad.push("weight '" + wt + "' of " + path + " is not a number >= 0"); return; }
    step.push([i, label[i], weight[i]]);
    label[i] = k;
    if (wt !== "") weight[i] = wn;
    matched++;
  });
  if (step.length) undoStack.push(step);
  after();
  say("loaded " + matched + " row(s) onto the map, " + other.length + " for images not on it (kept)" +
         (bad.length ? "; refused: " + bad[0] : ""));
}
document.getElementById("load").onchange = e => {
  const f = e.target.files[0];
  if (f) f.text().then(loadCSV);
};

addEventListener("resize", () => { layout(); draw(); });
buildTabs(); layout(); draw(); grid();
</script>
</body></html>
"""
