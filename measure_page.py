"""Measures the labelling page's map library candidates in headless chromium (RESULTS.md, "dashboard
map library"): file size, time to first draw and time to finish a lasso selection at N points.

    python3 -m venv /tmp/venv-page && /tmp/venv-page/bin/pip install bokeh plotly websockets pillow numpy
    .venv/bin/python measure_page.py --site /tmp/venv-page/lib/python3.11/site-packages --n 10000

Every page holds the same synthetic points: 2-D coordinates, a class, and a 28 px grey PNG
thumbnail each (inline base64). Chromium is driven over the DevTools protocol: real mouse events
draw the lasso, and the page records performance.now() (first draw: from navigation start to the
frame after the map is drawn; lasso: from the mouse release to the frame after the selection is
drawn). The candidates: today's hand-written SVG dashboard (no lasso), the hand-written canvas map
of page.py, Bokeh (canvas and WebGL) and Plotly (scattergl). page.py's page also holds the per-image
signals analyze.py gives it (made up here) with every 10th point an unlabelled photo, and after the
lasso times, in the page's own script, colouring by loss, filtering loss >= 0.7 and sorting the
selection by loss (each to the end of its synchronous redraw).
"""
import argparse
import asyncio
import base64
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Each page sets window.__drawn (ms since navigation start) once its map is on screen and
# window.__sel = {n, ms} once a selection is drawn; __mapRect() is where the lasso is drawn.
AFTER_PAINT = "requestAnimationFrame(() => setTimeout(() => {%s}, 0))"  # the frame after the paint


def points(n, seed=0):
    """n synthetic points in 10 gaussian clusters, with a digit thumbnail each."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, n)
    centre = rng.uniform(-40, 40, (10, 2))
    xy = centre[label] + rng.normal(0, 6, (n, 2))
    thumbs = []
    for i in range(n):
        im = Image.new("L", (28, 28), int(rng.integers(0, 40)))
        ImageDraw.Draw(im).text((9 + int(rng.integers(-3, 4)), 7 + int(rng.integers(-3, 4))), str(label[i]), fill=255)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        thumbs.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return xy, label, thumbs


def page_today(xy, label, thumbs, path):
    """Today's report.write_dashboard (an SVG circle per point), as main ships it."""
    import torch
    import report
    n = len(label)
    pts = {"labels": torch.as_tensor(label), "preds": torch.as_tensor(label), "conf": torch.full((n,), 0.9),
           "split": ["val"] * n, "source": [0] * n, "names": [f"{i}.png" for i in range(n)],
           "images": [np.zeros((28, 28, 1), np.uint8)] * n}
    report.write_dashboard(path, pts, {"tsne": xy, "pca": xy}, [str(k) for k in range(10)])
    page = open(path).read()
    # the same thumbnails as the other pages (write_dashboard would PNG-encode the arrays itself)
    d = json.loads(page.split('id="data">')[1].split("</script>")[0])
    d["img"] = thumbs
    page = page.split('id="data">')[0] + 'id="data">' + json.dumps(d, separators=(",", ":")) + "</script>" + \
        page.split('id="data">')[1].split("</script>", 1)[1]
    hook = "<script>" + AFTER_PAINT % "window.__drawn = performance.now()" + \
        ";window.__mapRect = () => document.getElementById('map').getBoundingClientRect().toJSON();</script></body>"
    open(path, "w").write(page.replace("</body>", hook))


def page_signals(label, seed=0):
    """Made-up per-image signals in the shapes analyze.page_signals gives them (3 decimals, None where
    an image has none), every 10th point an unlabelled photo (label -1, source 2)."""
    rng = np.random.default_rng(seed)
    n = len(label)
    unl = np.arange(n) % 10 == 9
    p = rng.beta(5, 1, n)
    r3 = lambda x: [round(float(v), 3) for v in x]  # noqa: E731
    none = lambda x: [None if u else v for u, v in zip(unl, x)]  # noqa: E731
    dup = np.where(rng.random(n) < 0.02, rng.integers(0, 50, n), -1)
    return {"labels": np.where(unl, -1, label), "source": np.where(unl, 2, 0).tolist(),
            "split": ["unlabelled" if u else "val" for u in unl], "loss": none(r3(-np.log(p))), "p_label": none(r3(p)),
            "margin": r3(2 * p - 1), "knn": none(r3(rng.random(n))),
            "suspect": none(np.where(rng.random(n) < 0.03, 1, 0).tolist()),
            "suggested": none(rng.integers(0, 10, n).tolist()), "dup_group": none(dup.tolist()),
            "dup_size": none(np.where(dup >= 0, 2, 0).tolist()), "flag": [("ok" if u else None) for u in unl],
            "review": [{"split": "val", "shown": True, "withheld": False, "text": "val labels reviewed"}]}


def page_canvas(xy, label, thumbs, path):
    """The hand-written canvas map with lasso and box selection (page.py's labelling page)."""
    import page
    import report
    n = len(label)
    pts = {"labels": np.asarray(label), "preds": np.asarray(label), "conf": np.full(n, 0.9),
           "split": ["val"] * n, "source": [0] * n, "names": [f"{i}.png" for i in range(n)],
           "paths": [f"/data/{i}.png" for i in range(n)], "images": None, "thumbs": thumbs}
    if hasattr(page, "SIGNALS"):  # a page.py with signals: the page as analyze.py now writes it
        pts.update(page_signals(label))
    page.write_page(path, pts, {"tsne": xy, "pca": xy}, [str(k) for k in range(10)], "", "", report.fit_box,
                    report.class_colours(10))
    hook = ("<script>" + AFTER_PAINT % "window.__drawn = performance.now()" +
            ";window.__mapRect = () => document.getElementById('map').getBoundingClientRect().toJSON();"
            "document.addEventListener('selection', e => " + AFTER_PAINT %
            "window.__sel = {n: e.detail, ms: performance.now() - window.__up}" + ");"
            "addEventListener('pointerup', () => window.__up = performance.now(), true);" + SIGNAL_TIMES + "</script></body>")
    text = open(path).read()
    open(path, "w").write(text.replace("</body>", hook))


# ms of each step, synchronous (draw and grid are): colour by loss, filter loss >= 0.7, sort the selection by loss
SIGNAL_TIMES = """window.__signals = () => {
  if (!document.getElementById("fsig")) return null;
  const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                           e.dispatchEvent(new Event(e.tagName === "INPUT" ? "input" : "change")); };
  const ms = f => { const t = performance.now(); f(); return performance.now() - t; };
  return [ms(() => set("colour", "loss")), ms(() => { set("fsig", "loss"); set("fmin", "0.7"); }),
          ms(() => set("sort", "sig:loss"))];
};"""


def page_bokeh(xy, label, thumbs, path, webgl):
    from bokeh.embed import file_html
    from bokeh.models import BoxSelectTool, ColumnDataSource, CustomJS, HoverTool, LassoSelectTool
    from bokeh.palettes import Category10
    from bokeh.plotting import figure
    from bokeh.resources import INLINE
    src = ColumnDataSource({"x": xy[:, 0], "y": xy[:, 1], "label": label.astype(str), "img": thumbs,
                            "colour": [Category10[10][k] for k in label]})
    p = figure(width=800, height=800, output_backend="webgl" if webgl else "canvas", tools="pan,wheel_zoom,reset")
    p.scatter("x", "y", source=src, color="colour", size=6)
    lasso = LassoSelectTool(continuous=False)  # select once, on release, as the other candidates do
    p.add_tools(lasso, BoxSelectTool(continuous=False), HoverTool(tooltips='<img src="@img" width="96" height="96"><div>@label</div>'))
    p.toolbar.active_drag = lasso
    src.selected.js_on_change("indices", CustomJS(code=AFTER_PAINT % (
        "window.__sel = {n: cb_obj.indices.length, ms: performance.now() - window.__up}")))
    html = file_html(p, INLINE, "bokeh")
    hook = """<script>
for (const t of ["pointerup", "mouseup"]) addEventListener(t, () => window.__up = window.__up || performance.now(), true);  // the release, whichever event comes first
function deep(root) {  // Bokeh's canvas sits inside nested shadow roots
  for (const e of root.querySelectorAll("*")) {
    const c = e.shadowRoot && (e.shadowRoot.querySelector("canvas") || deep(e.shadowRoot));
    if (c) return c;
  }
}
window.__mapRect = () => { const c = deep(document); return c ? c.getBoundingClientRect().toJSON() : undefined; };
function bokehDrawn() {  // Bokeh renders asynchronously: done once every view has finished
  const views = window.Bokeh && Bokeh.index ? [...(Bokeh.index.roots || Object.values(Bokeh.index))] : [];
  if (views.length && views.every(v => v.has_finished())) """ + AFTER_PAINT % "window.__drawn = performance.now()" + """;
  else requestAnimationFrame(bokehDrawn);
}
bokehDrawn();
</script></body>"""
    open(path, "w").write(html.replace("</body>", hook))


def page_plotly(xy, label, thumbs, path):
    import plotly.graph_objects as go
    fig = go.Figure(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", customdata=thumbs,
                                 marker=dict(color=label, colorscale="Turbo", size=6)))
    fig.update_layout(width=800, height=800, dragmode="lasso", margin=dict(l=10, r=10, t=10, b=10))
    post = ("const gd = document.getElementById('{plot_id}');"
            "window.__mapRect = () => gd.querySelector('.nsewdrag').getBoundingClientRect().toJSON();"
            "gd.on('plotly_selected', ev => " + AFTER_PAINT %
            "window.__sel = {n: ev ? ev.points.length : 0, ms: performance.now() - window.__up}" + ");"
            + AFTER_PAINT % "window.__drawn = performance.now()")
    html = fig.to_html(include_plotlyjs=True, full_html=True, post_script=post)
    hook = "<script>addEventListener('mouseup', () => window.__up = performance.now(), true);</script></body>"
    open(path, "w").write(html.replace("</body>", hook))


DOWN = "<script>for (const t of ['pointerdown', 'mousedown']) addEventListener(t, () => window.__down = window.__down || performance.now(), true);</script></body>"


async def measure(chromium, path, lasso=True):
    """(first draw ms, lasso ms, points selected) of one fresh load of `path`."""
    import websockets
    port = 9400 + os.getpid() % 500
    # chromium's helpers may still write to the profile as it is removed: a leftover folder in /tmp, not a crash
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--no-first-run", "--mute-audio",
                                 "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                                 f"--user-data-dir={profile}", "--window-size=1300,1000",
                                 "--host-resolver-rules=MAP * ~NOTFOUND", f"--remote-debugging-port={port}",
                                 "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                    ws_url = next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
                    break
                except (OSError, StopIteration):
                    time.sleep(0.1)
            async with websockets.connect(ws_url, max_size=2**28) as ws:
                ids = iter(range(1, 10**9))

                async def call(method, **params):
                    i = next(ids)
                    await ws.send(json.dumps({"id": i, "method": method, "params": params}))
                    while True:
                        msg = json.loads(await ws.recv())
                        if msg.get("id") == i:
                            return msg.get("result", msg)

                async def wait_for(expr, timeout=120):
                    r = await call("Runtime.evaluate", awaitPromise=True, returnByValue=True, expression=(
                        f"new Promise((ok, no) => {{ const t0 = Date.now(), f = () => {{ const v = {expr}; "
                        f"v !== undefined ? ok(v) : Date.now() - t0 > {timeout * 1000} ? no('timeout') : "
                        f"setTimeout(f, 10); }}; f(); }})"))
                    return r["result"].get("value", r) if "result" in r else r

                text = open(path).read()
                if "window.__down" not in text:
                    open(path, "w").write(text.replace("</body>", DOWN))
                await call("Page.navigate", url="file://" + os.path.abspath(path))
                drawn = await wait_for("window.__drawn")
                if not lasso:
                    return drawn, None, None, None, None
                r = await wait_for("window.__mapRect && window.__mapRect() || undefined")
                assert isinstance(r, dict), r
                cx, cy, rad = r["x"] + r["width"] * 0.5, r["y"] + r["height"] * 0.5, r["width"] * 0.3
                ring = [(cx + rad * math.cos(a / 40 * 2 * math.pi), cy + rad * math.sin(a / 40 * 2 * math.pi))
                        for a in range(41)]
                mouse = dict(button="left", clickCount=1)
                await call("Input.dispatchMouseEvent", type="mouseMoved", x=ring[0][0], y=ring[0][1])
                await call("Input.dispatchMouseEvent", type="mousePressed", x=ring[0][0], y=ring[0][1], **mouse)
                for x, y in ring[1:]:
                    await call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, buttons=1, button="left")
                await call("Input.dispatchMouseEvent", type="mouseReleased", x=ring[-1][0], y=ring[-1][1], **mouse)
                sel = await wait_for("window.__sel", timeout=30)
                if not isinstance(sel, dict):  # the release never made a selection: counted as a failure
                    return drawn, None, 0, None, None
                drag = await wait_for("window.__up - window.__down")  # 40 moves with the outline drawn
                r = await call("Runtime.evaluate", returnByValue=True,
                               expression="window.__signals ? window.__signals() : null")
                return drawn, sel["ms"], sel["n"], drag, r.get("result", {}).get("value")
        finally:
            proc.terminate()
            proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="/tmp/page-bench")
    ap.add_argument("--only", nargs="*", help="candidates to run (default: all)")
    ap.add_argument("--site", help="a venv's site-packages with bokeh, plotly, websockets (appended to sys.path)")
    args = ap.parse_args()
    if args.site:  # appended: the project's own numpy / torch come first
        sys.path.append(args.site)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    os.makedirs(args.out, exist_ok=True)
    xy, label, thumbs = points(args.n)
    makers = {"today (SVG)": lambda p: page_today(xy, label, thumbs, p),
              "page.py (canvas)": lambda p: page_canvas(xy, label, thumbs, p),
              "bokeh (canvas)": lambda p: page_bokeh(xy, label, thumbs, p, webgl=False),
              "bokeh (webgl)": lambda p: page_bokeh(xy, label, thumbs, p, webgl=True),
              "plotly (scattergl)": lambda p: page_plotly(xy, label, thumbs, p)}
    print(f"| candidate (N = {args.n}) | file | first draw (median of {args.repeats}) | lasso: release to drawn | drag of 40 moves | selected |")
    print("|---|---|---|---|---|---|")
    for name, make in makers.items():
        if args.only and not any(o in name for o in args.only):
            continue
        path = os.path.join(args.out, name.split()[0].replace(".py", "") + ("-gl" if "webgl" in name else "") + ".html")
        try:
            make(path)
        except ImportError as e:
            print(f"| {name} | not built: {e} | | | | |")
            continue
        runs = [asyncio.run(measure(chromium, path, lasso="today" not in name)) for _ in range(args.repeats)]
        draw = statistics.median(r[0] for r in runs)
        done = [r for r in runs if r[1] is not None]
        failed = "" if "today" in name or len(done) == len(runs) else f" ({len(runs) - len(done)} of {len(runs)} drags selected nothing in 30 s)"
        lasso = "no lasso" if "today" in name else f"{statistics.median(r[1] for r in done):.0f} ms" if done else "-"
        lasso += failed
        drag = f"{statistics.median(r[3] for r in done):.0f} ms" if done else ""
        runs = done or runs
        print(f"| {name} | {os.path.getsize(path) / 2**20:.1f} MiB | {draw:.0f} ms | {lasso} | {drag} | {runs[0][2] or ''} |",
              flush=True)
        timed = [r[4] for r in runs if r[4]]
        if timed:  # page.py with signals: the median of each step over the loads
            steps = ("colour by loss", "filter loss >= 0.7", f"sort the {runs[0][2]} selected by loss")
            print(f"|   {name}, signals (median of {len(timed)}) | "
                  + "; ".join(f"{s} {statistics.median(t[k] for t in timed):.0f} ms" for k, s in enumerate(steps))
                  + " | | | | |", flush=True)


if __name__ == "__main__":
    main()
