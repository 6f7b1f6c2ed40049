"""report.py: dashboard.html (self-contained, checked in a real headless browser: screenshot, hover,
tabs, and chromium's net log to prove the page requests no URL), its map's box, and report.md /
report.html of a run folder.

On conftest's analysed_run: a 1-epoch convnet on a 60-photo digit folder plus 30 synthetic
composites (so the dashboard has every split and both sources) inside a fake experiments --out
folder, analysed once. The browser tests need Debian's chromium (.ci/run installs it) and skip
without it."""
import html
import json
import re
import shlex
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data as D
import report
import train
from helpers import DRAWN, data_config, page_data, photo_folder, run_script, run_train, saved_figures, title_text

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium; CI installs it)")


# ----------------------------------------------------------------------------- the run's figures

def test_curves_tick_whole_epochs(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    classes = ["a", "b"]
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "train_acc": e / 4, "val_acc": e / 4, "lr": 0.1,
                "train_acc_real": e / 4, "train_n_real": 10, "train_acc_synthetic": 0.0, "train_n_synthetic": 0,
                **{f"train_loss_{c}": 1 / e for c in classes}, **{f"val_acc_{c}": e / 4 for c in classes}}
               for e in (1, 2, 3)]  # 3 epochs: matplotlib's own ticks are 1.0, 1.25, ..., 3.0
    report.plot_history(history, classes, str(tmp_path))
    for name in ("curves.png", "curves_detail.png"):
        for ax in figures[name].axes:
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), (name, ticks)


def test_previews_say_what_they_show(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    folder = photo_folder(tmp_path / "photos", [str(d) for d in range(10)], 2, layout="flat", **DRAWN)
    data = D.build_datasets(data_config("--data-dir", folder, "--img-size", 16, "--synthetic-n", 8,
                                        "--synthetic-source", "fonts"))
    report.plot_inputs(data, lambda ds, i: ds[i][0], str(tmp_path), n=4, copies=2, augment="light")
    for name in ("augmentations.png", "mixup.png"):
        assert "real train photos" in title_text(figures[name]) and "augment light" in title_text(figures[name]), name
    synthetic = title_text(figures["synthetic.png"])
    assert "synthetic" in synthetic and "source fonts" in synthetic


# ----------------------------------------------------------------------------- chromium

def chromium(path, *flags, timeout=60):
    """Load `path` from file:// in headless chromium (fresh profile, DNS answering nothing, so
    nothing leaves the machine even when a page asks); returns the CompletedProcess."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
             f"--user-data-dir={profile}", "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--virtual-time-budget=5000", *flags, Path(path).resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout)


def page_requests(path):
    """Every network request the page at `path` made: the URLs of chromium's net log that were
    started for a file:// document (the browser's own background requests have other keys).
    data: URIs never reach the network stack, so they are not in it."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "net.json"
        proc = chromium(path, f"--log-net-log={log}", "--dump-dom")
        assert proc.returncode == 0, proc.stderr[-2000:]
        net = json.loads(log.read_text())
    start_job = net["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in net["events"] if e["type"] == start_job
            and "file://" in e["params"].get("network_isolation_key", "")]


def external_refs(page):
    """Static check: src / href / url(...) / @import values in the HTML that are not data: URIs
    or fragments, and any scheme (`://`) outside data: URIs (a URL in a script)."""
    refs = re.findall(r"""<[a-z][^>]*?\s(?:src|href|srcset|poster|action)\s*=\s*["']?([^"'\s>]+)""", page, re.I)
    refs += re.findall(r"""url\(\s*["']?([^"')]+)""", page, re.I) + re.findall(r"""@import\s+["']?([^"';\s]+)""", page)
    bad = [r for r in refs if not r.startswith(("data:", "#"))]
    without_data = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]*", "", page)
    return bad + re.findall(r"[\w.+-]*://[^\s\"'<>)]*", without_data)


EXTERNAL_PAGE = """<!doctype html><html><head><link rel="stylesheet" href="https://cdn.example.com/x.css">
<script src="https://cdn.example.com/lib.js"></script></head><body><p id="x">no</p>
<script>document.getElementById("x").textContent = "ran"; fetch("ht" + "tps://api.example.com/data")</script>
</body></html>"""


def probe_page(page, script, tmp_path):
    """The `out` object a probe `script` (a <script> ... </body> tail) leaves in data-out after running on
    the dashboard at `page` in headless chromium; the probe's own errors fail the test."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", script))
    proc = chromium(probed, "--dump-dom", "--window-size=1200,900")
    m = re.search(r'data-out="([^"]*)"', proc.stdout)
    assert m, proc.stderr[-2000:]
    out = json.loads(html.unescape(m.group(1)))
    assert "error" not in out, out
    return out


@pytest.mark.slow  # headless chromium
def test_negative_control_external_page_is_detected(tmp_path):
    page = tmp_path / "cdn.html"
    page.write_text(EXTERNAL_PAGE)
    assert set(external_refs(EXTERNAL_PAGE)) >= {"https://cdn.example.com/x.css", "https://cdn.example.com/lib.js"}
    if CHROMIUM is None:
        pytest.skip("chromium not installed: only the static half ran")
    requests = page_requests(page)
    assert "https://cdn.example.com/lib.js" in requests
    assert "https://api.example.com/data" in requests  # a URL built at run time: only the browser sees it


@pytest.mark.slow  # fixture analysed_run: a trained and analysed run, ~17 s
def test_dashboard_is_self_contained_static(analysed_run):
    page = (analysed_run / "dashboard.html").read_text()
    assert external_refs(page) == []
    d = page_data(page)
    assert all(u.startswith(("data:image/png;base64,", "data:image/webp;base64,", "data:image/jpeg;base64,"))
               for u in d["img"])
    assert len(d["cam"]) == len(d["img"]) and all(u.startswith("data:image/") for u in d["cam"])  # Grad-CAM
    for p, split, source in zip(d["path"], d["split"], d["source"]):  # what a corrections row may name
        assert (p != "") == (split != "test" and source == 0) and (not p or Path(p).is_absolute() and Path(p).is_file())
    assert any(d["path"]) and not all(d["path"])  # the synthetic composites have none


@pytest.mark.slow  # headless chromium; fixture analysed_run: a trained and analysed run, ~17 s
@needs_chromium
def test_dashboard_loads_no_external_url(analysed_run):
    assert page_requests(analysed_run / "dashboard.html") == []


@pytest.mark.slow  # headless chromium; fixture analysed_run: a trained and analysed run, ~17 s
@needs_chromium
def test_dashboard_renders_in_headless_chromium(analysed_run, tmp_path):
    shot = tmp_path / "dashboard.png"
    proc = chromium(analysed_run / "dashboard.html", f"--screenshot={shot}", "--window-size=1200,900")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (900, 1200)
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert len(colours) > 20, f"a near-blank screenshot ({len(colours)} colours)"
    palette = {tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in report.class_colours(10)}
    assert len(palette & colours) >= 5, "the class colours of the points are not on the screen"


@pytest.mark.slow  # headless chromium; fixture analysed_run: a trained and analysed run, ~17 s
@needs_chromium
def test_dashboard_script_builds_points_tabs_and_legend(analysed_run):
    page = (analysed_run / "dashboard.html").read_text()
    d = page_data(page)
    dom = chromium(analysed_run / "dashboard.html", "--dump-dom").stdout
    real = [i for i, s in enumerate(d["source"]) if s == 0]  # the synthetic composites: hidden at first
    assert f'data-shown="{len(real)}"' in dom and len(d["label"]) == len(d["img"]) == len(d["tsne"]) // 2
    assert re.findall(r'<button data-tab="(-?\d+)"', dom) == [str(k) for k in range(-1, 10)]
    assert "All (" + str(len(real)) + ")" in dom
    assert dom.count('class="sw"') == len({d["label"][i] for i in real})  # legend: one swatch per class shown
    assert {"train", "val"} <= set(d["split"]) and set(d["source"]) == {0, 1}


@pytest.mark.slow  # fixture analysed_run: a trained and analysed run, ~17 s
def test_dashboard_note_counts_what_the_page_holds(analysed_run):
    """The note once said "balanced over split x class" of a page that held 1,850 train and 150 val
    points: it counts the points per split (and source) that the page holds."""
    d = page_data((analysed_run / "dashboard.html").read_text())
    counts = {s: [sum(1 for sp, so in zip(d["split"], d["source"]) if sp == s and so == k) for k in (0, 1)]
              for s in dict.fromkeys(d["split"])}
    held = ", ".join(f"{r + y} {s}" + (f" ({r} real, {y} synthetic)" if y else "") for s, (r, y) in counts.items())
    assert d["note"].startswith(f"Penultimate features of {len(d['split'])} images: {held}; "), d["note"]
    assert counts["train"][1] > 0 and 'hidden until "show synthetic" is ticked' in d["note"]
    assert "balanced" not in d["note"]


def test_dashboard_note_counts_per_split_and_source():
    import analyze
    note = analyze.dashboard_note({"split": ["train"] * 1850 + ["val"] * 150, "source": [0] * 852 + [1] * 998 + [0] * 150},
                                  2000)
    assert note.startswith("Penultimate features of 2,000 images: 1,850 train (852 real, 998 synthetic), 150 val; ")
    assert "show synthetic" in note
    note = analyze.dashboard_note({"split": ["train"] * 5 + ["test"] * 3, "source": [0] * 8}, 2000)
    assert note.startswith("Penultimate features of 8 images: 5 train, 3 test; ") and "synthetic" not in note


@pytest.mark.slow  # headless chromium; fixture analysed_run: a trained and analysed run, ~17 s
@needs_chromium
def test_dashboard_hover_tab_and_controls(analysed_run, tmp_path):
    """Drives the page with synthetic DOM events (a copy with a script appended): hovering a point
    fills the tooltip, a class tab hides the other points, and every thumbnail decodes."""
    page = (analysed_run / "dashboard.html").read_text()
    d = page_data(page)
    probe = """<script>
// a wrong prediction that no other point covers, hovered at its centre
const wrong = [...Array(N).keys()].find(i => D.pred[i] !== D.label[i] && nearest(sx[i], sy[i]) === i);
const [x, y] = screenXY(wrong);
cv.dispatchEvent(new PointerEvent("pointermove", {bubbles: true, clientX: x, clientY: y}));
document.body.dataset.tip = tip.style.display;
document.body.dataset.wrong = wrong;
document.querySelector("input[value=pca]").click();
document.body.dataset.sx = JSON.stringify(sx.slice(0, 3));
document.querySelectorAll("#tabs button")[2].click();   // the tab of class 1
document.getElementById("synth").click();                // the synthetic composites too
document.getElementById("colour").value = "source";
document.getElementById("colour").dispatchEvent(new Event("change"));
Promise.all(D.img.map(u => { const im = new Image(); im.src = u; return im.decode().then(() => im.naturalWidth); }))
  .then(w => document.body.dataset.decoded = w.filter(x => x > 0).length,
        e => document.body.dataset.decoded = "error " + e);
</script></body>"""
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe))
    for _ in range(3):  # image decoding is asynchronous: on a loaded machine the dump can come first
        dom = chromium(probed, "--dump-dom").stdout
        if "data-decoded=" in dom:
            break
    wrong = int(re.search(r'data-wrong="(\d+)"', dom).group(1))
    tip = re.search(r'<div id="tiptext">(.*?)</div></div>', dom, re.S).group(1)
    assert 'data-tip="block"' in dom
    assert f"label: {d['classes'][d['label'][wrong]]}" in tip
    assert f"prediction: {d['classes'][d['pred'][wrong]]} (wrong)" in tip
    assert f"confidence: {100 * d['conf'][wrong]:.1f}%" in tip and d["name"][wrong] in tip
    assert re.search(r'id="tipimg"[^>]*src="data:image/', dom) or re.search(r'src="data:image/[^"]*"[^>]*id="tipimg"', dom)
    cam = re.search(r'<img[^>]*id="tipcam"[^>]*>', dom).group(0)  # the hover card's Grad-CAM, shown
    assert 'src="data:image/' in cam and "hidden" not in cam
    shown = sum(1 for lab, p in zip(d["label"], d["pred"]) if 1 in (lab, p))  # synthetic ones included: ticked
    assert f'data-shown="{shown}"' in dom
    sx = json.loads(html.unescape(re.search(r'data-sx="([^"]*)"', dom).group(1)))
    pca = d["pca"]  # the PCA projection is drawn: the points' x positions on the canvas are its, scaled
    assert (sx[1] - sx[0]) * (pca[4] - pca[0]) == pytest.approx((sx[2] - sx[0]) * (pca[2] - pca[0]), abs=1e-6 * max(1, sx[2]) * 1000)
    assert re.search(r'class="sw" style="background: rgb\(255, 127, 14\)', dom)  # source legend: synthetic
    assert f'data-decoded="{len(d["img"])}"' in dom


# ----------------------------------------------------------------------------- the page's map and text

def test_dashboard_map_fills_its_box_keeping_the_aspect_ratio():
    import report
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * torch.tensor([30.0, 10.0]) + 5  # a wide cloud, 3:1
    flat, (w, h) = report.fit_box(xy.numpy())
    pts = np.array(flat).reshape(-1, 2)
    assert w == 1000 and 300 <= h <= 345  # the box is the points' own: about 3:1
    assert pts[:, 0].min() == 0 and pts[:, 0].max() == w and pts[:, 1].min() == 0 and pts[:, 1].max() == h
    ratio = (xy.max(0).values - xy.min(0).values)
    assert w / h == pytest.approx(float(ratio[0] / ratio[1]), rel=0.01)  # one scale for both axes


def test_dashboard_escapes_user_text(tmp_path):
    """Class names and titles are user data: they must not end the script element or become markup."""
    classes = ["</script><b>x", "<!--", "a&b"]
    n = 6
    points = {"features": torch.randn(n, 4, generator=torch.Generator().manual_seed(0)),
              "labels": torch.tensor([0, 1, 2] * 2), "preds": torch.tensor([0, 2, 1] * 2), "conf": torch.full((n,), 0.5),
              "split": ["val"] * n, "source": [0] * n, "names": [f"<i>{i}" for i in range(n)],
              "images": [np.full((8, 8, 1), 10 * i, np.uint8) for i in range(n)]}
    maps = {"tsne": points["features"][:, :2], "pca": points["features"][:, 2:]}
    path = report.write_dashboard(tmp_path / "d.html", points, maps, classes, title="<script>t</script>")
    page = Path(path).read_text()
    assert page.count("</script>") == 2 and "<b>" not in page and "<!--" not in page
    d = page_data(page)
    assert d["classes"] == classes and d["title"] == "<script>t</script>" and len(d["tsne"]) == len(d["pca"]) == 2 * n


def mixed_points(n_real=12, n_syn=6, side=144):
    """Colour images for a dashboard: 12 real ones, 4 per class, in train / val / test, class 2 in a
    small corner of the map (x, y in 90..100), and 6 synthetic ones far off (x 200..300)."""
    g = np.random.default_rng(0)
    labels = [0] * 4 + [1] * 4 + [2] * 4 + [0, 1] * (n_syn // 2)
    x = np.r_[np.linspace(0, 30, 4), np.linspace(50, 80, 4), np.linspace(90, 100, 4), np.linspace(200, 300, n_syn)]
    y = np.r_[np.linspace(0, 30, 4), np.linspace(0, 30, 4), np.linspace(90, 100, 4), np.linspace(0, 50, n_syn)]
    n = n_real + n_syn
    points = {"labels": torch.tensor(labels), "preds": torch.tensor(labels), "conf": torch.full((n,), 0.9),
              "split": ["train", "train", "val", "test"] * 3 + ["train"] * n_syn, "source": [0] * n_real + [1] * n_syn,
              "names": [f"im{i}.jpg" for i in range(n)],
              "images": [g.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)],
              "cams": [g.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]}
    return points, np.stack([x, y], 1)


def test_dashboard_thumbnails_of_photos_are_large_enough(tmp_path):
    """40 px thumbnails of photos, shown at 96 px (hover) and 112 px (grid), were too small: photos
    are stored at THUMB_PHOTO (96), their Grad-CAM overlays at THUMB_CAM (64), grey digits at 40."""
    import base64
    import io
    points, xy = mixed_points()
    points["images"][0] = np.full((144, 144, 1), 128, np.uint8)  # a grey image
    points["images"][1] = np.full((28, 28, 1), 128, np.uint8)  # a digit smaller than its thumbnail: not enlarged
    d = page_data(Path(report.write_dashboard(tmp_path / "d.html", points, {"tsne": xy, "pca": xy}, ["a", "b", "c"],
                                              "t")).read_text())
    size = lambda uri: Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size  # noqa: E731
    assert size(d["img"][0]) == (40, 40) and size(d["img"][1]) == (28, 28) and d["img"][0].startswith("data:image/png")
    assert {size(u) for u in d["img"][2:]} == {(96, 96)} and {size(u) for u in d["cam"]} == {(64, 64)}


MIXED_PROBE = """<script>
addEventListener("error", e => document.body.dataset.out = JSON.stringify({error: e.message}));
const out = {}, tabButton = k => document.querySelectorAll("#tabs button")[k + 1];
const frame = () => {  // the shown points' extent on the canvas, and the canvas
  const v = [...Array(N).keys()].filter(shown), xs = v.map(i => sx[i]), ys = v.map(i => sy[i]);
  return [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys), parseFloat(cv.style.width), parseFloat(cv.style.height)];
};
const legend = () => [...document.querySelectorAll("#legend div")].map(e => e.textContent);
out.shown = +cv.dataset.shown; out.all = tabButton(-1).textContent; out.box = !document.getElementById("synthbox").hidden;
out.frame = frame();
document.getElementById("colour").value = "split";
document.getElementById("colour").dispatchEvent(new Event("change"));
out.legend = legend();
tabButton(2).click(); out.frame2 = frame(); out.shown2 = +cv.dataset.shown;
tabButton(-1).click();
document.getElementById("synth").click(); out.shownS = +cv.dataset.shown; out.allS = tabButton(-1).textContent;
out.legendS = legend(); out.frameS = frame();
document.body.dataset.out = JSON.stringify(out);
</script></body>"""


@pytest.mark.slow  # headless chromium
@needs_chromium
def test_dashboard_real_photos_first_split_colours_and_class_zoom(tmp_path):
    """The page shows the real images at first (synthetic composites behind "show synthetic"), can
    colour by split, and frames the points shown: a class tab zooms to its class's points."""
    points, xy = mixed_points()
    page = Path(report.write_dashboard(tmp_path / "d.html", points, {"tsne": xy, "pca": xy}, ["a", "b", "c"], "t"))
    out = probe_page(page, MIXED_PROBE, tmp_path)
    assert out["shown"] == 12 and out["all"] == "All (12)" and out["box"]  # real images only, the toggle offered
    assert out["legend"][:3] == ["train (6)", "val (3)", "test (3)"]
    assert out["shownS"] == 18 and out["allS"] == "All (18)" and out["legendS"][0] == "train (12)"
    margin = 12  # page.py's M
    for key in ("frame", "frame2", "frameS"):  # the points shown fill the canvas, margins aside, on the longer side
        x0, x1, y0, y1, w, h = out[key]
        assert x0 == pytest.approx(margin, abs=0.5) and y0 == pytest.approx(margin, abs=0.5), key
        assert max(x1 - x0 - (w - 2 * margin), y1 - y0 - (h - 2 * margin)) == pytest.approx(0, abs=1), (key, out[key])
    assert out["shown2"] == 4 and out["frame2"][1] - out["frame2"][0] > 700  # class c: 10 map units across the canvas


# ----------------------------------------------------------------------------- report

SECTIONS = ["# Run report: seed0", "## Command", "## Data", "## Model", "## Training", "## Results",
            "## Mistakes", "## What the network learned", "## Suspects", "## Sweeps"]


@pytest.mark.slow  # fixture analysed_run: a trained and analysed run, ~17 s
def test_report_sections_and_links(analysed_run):
    md = (analysed_run / "report.md").read_text()
    page = (analysed_run / "report.html").read_text()
    assert [s for s in SECTIONS if s not in md] == []
    for s in SECTIONS:
        level = s.count("#")
        assert f"<h{level}>{s.lstrip('# ')}</h{level}>" in page
    assert "Train set: Average loss:" in md and "Val set: Average loss:" in md
    assert "| 1e-3 | **91.00** (best) |" in md and "<strong>91.00</strong>" in page  # the sweep's table
    for name in ("curves.png", "confusion.png", "mistakes.png", "kernels.png", "tsne.png", "neighbors.png",
                 "gradcam.png", "calibration.png", "../../grid.png"):
        assert f"]({name})" in md and f'src="{name}"' in page, name
    links = re.findall(r"\]\(([^)]+)\)", md)
    targets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(links) >= 10 and sorted(set(links)) == sorted(set(targets))
    missing = [t for t in links if not (analysed_run / t).exists()]
    assert missing == []


@pytest.mark.slow  # fixture analysed_run: a trained and analysed run, ~17 s
def test_report_command_repeats_the_run(analysed_run):
    ckpt = torch.load(analysed_run / "best.pt", map_location="cpu", weights_only=True)
    md = (analysed_run / "report.md").read_text()
    command = re.search(r"```\n(python train\.py .*)\n```", md).group(1)
    assert command == ckpt["command"]
    argv = shlex.split(command)[2:]
    again = train.get_args_parser().parse_args(argv)
    assert again.amp == "auto" and again.threads is None  # chosen again by the machine that runs it
    resolved = vars(train.resolve_defaults(again))
    assert {k: v for k, v in resolved.items() if k not in ("amp", "threads")} == \
        {k: v for k, v in ckpt["args"].items() if k not in ("amp", "threads")}


def test_report_command_leaves_out_every_default_and_never_pins_bf16(tmp_path, mnist_root, monkeypatch):
    """On a CPU with native bf16 (patched in), a run given no --amp trains in bf16; its report.md
    command must not pin `--amp bf16` (emulated, slower than fp32, on a CPU without it), nor any
    option at its default or at what leaving it out implies (--augment light on MNIST, --lr 1e-3
    with adamw, --batch-size 64), nor the --threads this machine chose."""
    import device
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    d = tmp_path / "run"
    run_train(["--dataset", "mnist", "--mnist-root", mnist_root, "--no-download", "--model", "convnet",
               "--train-fraction", 0.01, "--epochs", 1, "--warmup-epochs", 0, "--batch-size", 64, "--augment", "light",
               "--lr", 1e-3, "--workers", 0, "--quiet", "--save-dir", d])
    ckpt = torch.load(d / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["args"]["amp"] == "bf16"  # the run did train in bf16: only the command leaves it out
    report.write_report(d)
    command = re.search(r"```\n(python train\.py .*)\n```", (d / "report.md").read_text()).group(1)
    assert command == ckpt["command"]
    options = {a for a in shlex.split(command) if a.startswith("--")}
    assert options == {"--dataset", "--mnist-root", "--no-download", "--model", "--train-fraction", "--epochs",
                       "--warmup-epochs", "--workers", "--quiet", "--save-dir"}, command


@pytest.mark.slow  # fixture analysed_run: a trained and analysed run, ~17 s
def test_report_includes_data_quality_files_that_exist(analysed_run, tmp_path):
    """The data-quality outputs analyze.py may write are included when present, whatever their columns."""
    folder = tmp_path / "run"
    shutil.copytree(analysed_run, folder)
    (folder / "suspects.csv").write_text("path,label,prediction\n" + "".join(f"x{i}.png,1,7\n" for i in range(12)))
    shutil.rmtree(folder / "mistakes", ignore_errors=True)
    (folder / "mistakes" / "3").mkdir(parents=True)
    (folder / "mistakes" / "3" / "a.png").write_bytes((folder / "tsne.png").read_bytes())
    report.write_report(folder)
    md = (folder / "report.md").read_text()
    assert "[suspects.csv](suspects.csv): suspect labels, 12 rows, the first 10:" in md
    assert "| x9.png | 1 | 7 |" in md and "x10.png" not in md
    assert "[mistakes/](mistakes/) (1 files)" in md
    assert "## Sweeps" not in md  # no experiments folder above the copy


def test_markdown_to_html():
    page = report.markdown_to_html(
        "# T <x>\n\npara `a<b>` and **bold** [l](a.html)\nmore\n\n| h \\| 1 | h2 |\n|---|---|\n| `c` | ![i](f.png) |\n\n"
        "```\nraw **not bold** <tag>\n```\n- one\n- two\n", "title")
    assert "<h1>T &lt;x&gt;</h1>" in page
    assert '<p>para <code>a&lt;b&gt;</code> and <strong>bold</strong> <a href="a.html">l</a> more</p>' in page
    assert "<th>h | 1</th><th>h2</th>" in page and '<td><code>c</code></td><td><img src="f.png" alt="i"></td>' in page
    assert "<pre><code>raw **not bold** &lt;tag&gt;</code></pre>" in page and "<ul><li>one</li><li>two</li></ul>" in page


@pytest.mark.slow  # report.py as a subprocess; fixture analysed_run: a trained and analysed run, ~17 s
def test_report_cli(analysed_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(analysed_run, folder, ignore=shutil.ignore_patterns("report.*"))
    report.main(report.get_args_parser().parse_args([str(folder), "--sweeps", str(analysed_run.parents[1])]))
    assert "## Sweeps" in (folder / "report.md").read_text() and (folder / "report.html").is_file()
    bad = run_script("report.py", tmp_path / "nowhere")  # the __main__ block: a one-line error
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1


# ----------------------------------------------------------------------------- labelling: select, relabel, download

def labelling_page(tmp_path):
    """A dashboard of 12 photos (3 classes) in three columns of 4 on the t-SNE map, left to right;
    file names with a comma and a space (the CSV must quote them). Returns (page, paths, classes)."""
    classes = ["0", "1", "2"]
    photos = photo_folder(tmp_path / "photos", classes, 4, stem="im {i},x")
    paths = sorted(str(p) for p in photos.rglob("*.png"))  # by class folder, then name
    n = len(paths)
    col = np.repeat([0.0, 50.0, 100.0], 4)
    xy = np.stack([col + np.tile([0, 3, 6, 9], 3), np.tile([0, 30, 60, 90], 3)], 1)
    points = {"labels": torch.tensor([0] * 4 + [1] * 4 + [2] * 4), "preds": torch.tensor([0] * 4 + [1] * 4 + [2] * 4),
              "conf": torch.linspace(0.4, 0.99, n), "split": ["train"] * 8 + ["val"] * 3 + ["test"],
              "source": [0] * n, "names": [Path(p).name for p in paths], "paths": paths[:11] + [""],  # a test image
              "images": [np.full((8, 8, 1), 20 * i, np.uint8) for i in range(n)]}
    page = report.write_dashboard(tmp_path / "dashboard.html", points, {"tsne": xy, "pca": xy}, classes, "t")
    return Path(page), paths, classes


PROBE = """<script>
addEventListener("error", e => document.body.dataset.out = JSON.stringify({error: e.message}));
const r = cv.getBoundingClientRect(), X = f => r.left + f * r.width, Y = f => r.top + f * r.height;
const dragThrough = pts => {  // a pointer drag through pts, as the mouse makes it
  const ev = (type, [x, y]) => cv.dispatchEvent(new PointerEvent(type, {bubbles: true, clientX: x, clientY: y, button: 0, pointerId: 1}));
  ev("pointerdown", pts[0]); pts.slice(1).forEach(p => ev("pointermove", p)); ev("pointerup", pts[pts.length - 1]);
};
const key = k => dispatchEvent(new KeyboardEvent("keydown", {key: k}));
const out = {};
document.querySelector("input[value=box]").click();
dragThrough([[X(-0.01), Y(-0.01)], [X(0.2), Y(0.5)], [X(0.25), Y(1.01)]]);    // box: the left column
out.box = sel.slice().sort((a, b) => a - b);
key("2");                                                              // its 4 images: label 2
document.querySelector("input[value=lasso]").click();
dragThrough([[X(0.35), Y(-0.01)], [X(0.7), Y(-0.01)], [X(0.7), Y(1.01)], [X(0.35), Y(1.01)]]);  // lasso: the middle column
out.lasso = sel.slice().sort((a, b) => a - b);
document.querySelectorAll(".card")[0].click();                         // unpick one card (the lowest confidence)
document.getElementById("exclude").click();                            // the other 3: weight 0
document.getElementById("newname").value = "<b>new</b>";
document.getElementById("setnew").click(); out.grid = document.getElementById("grid").textContent;
key("u");                                                              // undo the new class, keep the exclusion
dragThrough([[X(0.8), Y(-0.01)], [X(1.01), Y(-0.01)], [X(1.01), Y(1.01)], [X(0.8), Y(1.01)]]);  // right column
document.getElementById("newname").value = "01";                     // a near-miss of class 1: refused
document.getElementById("setnew").click(); out.refused = document.getElementById("status").textContent;
document.getElementById("newname").value = " 1";                     // an existing class, spaces aside
document.getElementById("setnew").click();
out.csv = correctionsCSV();
HTMLAnchorElement.prototype.click = function () { out.download = [this.download, this.href]; };  // instead of saving
document.getElementById("download").click();
while (undoStack.length) undo();
out.clean = correctionsCSV();
loadCSV(out.csv + "/elsewhere/not on the map.png,0,\\r\\n");          // back onto the undone state: the same rows
out.csv2 = correctionsCSV();
document.body.dataset.out = JSON.stringify(out);
</script></body>"""


@pytest.mark.slow  # headless chromium
@needs_chromium
def test_dashboard_select_relabel_download(tmp_path):
    """The labelling page end to end in headless chromium: a box and a lasso drag select the map's
    left and middle columns, a digit key relabels, exclude / undo / a new class name act on the
    picked cards, and the CSV the page downloads is one corrections.py reads with those changes."""
    import corrections as C
    page, paths, classes = labelling_page(tmp_path)
    out = probe_page(page, PROBE, tmp_path)
    assert out["box"] == [0, 1, 2, 3] and out["lasso"] == [4, 5, 6, 7]
    assert "label: <b>new</b>" in out["grid"]  # a class name is text, never markup
    csv_path = tmp_path / "saved elsewhere" / "corrections.csv"
    csv_path.parent.mkdir()
    name, href = out["download"]  # what the button saves: the same bytes
    assert name == "corrections.csv" and urllib.parse.unquote(href.removeprefix("data:text/csv;charset=utf-8,")) == out["csv"]
    csv_path.write_bytes(out["csv"].encode())  # absolute paths: the file works in any folder
    fix = C.read_corrections(str(csv_path), paths, classes)
    assert fix.labels == {0: "2", 1: "2", 2: "2", 3: "2", 8: "1", 9: "1", 10: "1"}  # not 11: a test image
    assert "'01' looks like the class '1'" in out["refused"]  # corrections.py would refuse it as a typo
    excluded = {i for i, w in fix.weights.items() if w == 0}
    assert len(excluded) == 3 and excluded < {4, 5, 6, 7} and fix.added == []
    assert out["clean"] == "path,label,weight\r\n"
    assert out["csv2"] == out["csv"] + "/elsewhere/not on the map.png,0,\r\n"  # loaded back; unknown rows kept


# ----------------------------------------------------------------------------- signals and unlabelled photos

LOSS = [0.01, 0.1, 0.3, 1.0, 2.5, 0.02, 0.5, 3.0, 0.04, 1.5, 0.6, 0.15]  # the 12 photos of labelling_page


def signals_page(tmp_path):
    """labelling_page's 12 photos with analyze.page_signals-like signals (train reviewed with two
    suspects, val's review withheld, one near-duplicate pair) plus 4 unlabelled photos (another
    folder) in a fourth column on the right, as squares. Returns (page, paths, unlabelled, classes)."""
    classes = ["0", "1", "2"]
    photos = photo_folder(tmp_path / "photos", classes, 4, stem="im{i}")
    paths = sorted(str(p) for p in photos.rglob("*.png"))
    new = photo_folder(tmp_path / "new photos", ["0"] * 4, 1, layout="plain", stem="u,{k}", seed=3)
    unl = sorted(str(p) for p in new.glob("*.png"))
    col = np.repeat([0.0, 50.0, 100.0, 150.0], 4)
    xy = np.stack([col + np.tile([0, 3, 6, 9], 4), np.tile([0, 30, 60, 90], 4)], 1)
    n, m = 12, 4
    points = {"labels": torch.tensor([0] * 4 + [1] * 4 + [2] * 4 + [-1] * m),
              "preds": torch.tensor([0] * 4 + [1] * 4 + [2] * 4 + [1, 1, 1, 2]),
              "conf": torch.tensor([0.9] * n + [0.95, 0.9, 0.85, 0.5]),
              "split": ["train"] * 8 + ["val"] * 3 + ["test"] + ["unlabelled"] * m, "source": [0] * n + [2] * m,
              "names": [Path(p).name for p in paths + unl], "paths": paths[:11] + [""] + unl,
              "images": [np.full((8, 8, 1), 15 * i, np.uint8) for i in range(n + m)],
              "loss": LOSS + [None] * m, "p_label": [round(float(np.exp(-x)), 3) for x in LOSS] + [None] * m,
              "margin": [0.8, -0.6, 0.5, 0.1, -0.9, 0.7, 0.3, -0.2, 0.95, 0.0, 0.2, 0.4, 0.9, 0.8, 0.7, 0.1],
              "knn": [1.0, 0.2, 0.9, 0.5, 0.1, 0.8, 0.7, 0.6, 0.3, 0.4, 0.9, 1.0] + [None] * m,
              "suspect": [0, 1, 0, 0, 0, 1, 0, 0, -2, -2, -2, -1] + [-1] * m,
              "suggested": [-1, 2, -1, -1, -1, 0] + [-1] * 6 + [None] * m,
              "dup_group": [0, -1, -1, -1, 0] + [-1] * 7 + [None] * m, "dup_size": [2, 0, 0, 0, 2] + [0] * 7 + [None] * m,
              "flag": [None] * n + ["ok", "ok", "same pixels as a labelled photo", "ok"],
              "review": [{"split": "train", "shown": True, "withheld": False, "text": "train labels reviewed: 2 suspects"},
                         {"split": "val", "shown": False, "withheld": True, "text": "val label review withheld, below the floor"}]}
    page = report.write_dashboard(tmp_path / "dashboard.html", points, {"tsne": xy, "pca": xy}, classes, "t")
    return Path(page), paths, unl, classes


SIGNALS_PROBE = """<script>
addEventListener("error", e => document.body.dataset.out = JSON.stringify({error: e.message}));
const r = cv.getBoundingClientRect(), X = f => r.left + f * r.width, Y = f => r.top + f * r.height;
const ev = (type, [x, y]) => cv.dispatchEvent(new PointerEvent(type, {bubbles: true, clientX: x, clientY: y, button: 0, pointerId: 1}));
const dragThrough = pts => { ev("pointerdown", pts[0]); pts.slice(1).forEach(p => ev("pointermove", p)); ev("pointerup", pts[pts.length - 1]); };
const set = (id, v) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event(e.tagName === "INPUT" ? "input" : "change")); };
const legend = () => [...document.querySelectorAll("#legend div")].map(d => d.textContent);
const cards = () => [...document.querySelectorAll(".card")].map(c => +c.dataset.i);
const key = k => dispatchEvent(new KeyboardEvent("keydown", {key: k}));
const out = {review: [...document.querySelectorAll("#review div")].map(d => [d.textContent, d.className])};
out.colours = [...document.getElementById("colour").options].map(o => o.value);
set("colour", "loss"); out.loss = legend();                       // colour by a signal
set("colour", "suspect"); out.suspect = legend();
set("fsig", "loss"); set("fmin", "1"); out.lossFrom1 = +cv.dataset.shown;   // filter: loss >= 1
set("fmax", "2"); out.loss1to2 = +cv.dataset.shown;                          // and <= 2
set("fsig", "suspect"); set("fcat", "1"); out.suspects = +cv.dataset.shown;  // filter: the suspects
set("fsig", "source"); set("fcat", "2"); out.unlabelledShown = +cv.dataset.shown; out.legendUnl = legend();
set("fcat", "0"); out.legendReal = legend();                      // the legend explains only what is drawn
set("fsig", ""); out.all = +cv.dataset.shown;
document.querySelector("input[value=box]").click();
dragThrough([[X(-0.01), Y(-0.01)], [X(0.5), Y(0.5)], [X(1.01), Y(1.01)]]);   // everything
for (const s of ["sig:loss", "sig:margin", "sig:suspect", "sig:dup"]) { set("sort", s); out[s] = cards(); }
out.cardSig = [...document.querySelectorAll(".card .sig")].map(d => d.textContent);
const [hx, hy] = screenXY(14);                                    // hover: the unlabelled copy
cv.dispatchEvent(new PointerEvent("pointermove", {bubbles: true, clientX: hx, clientY: hy}));
out.tipUnlabelled = document.getElementById("tiptext").textContent;
const [sx1, sy1] = screenXY(1);                                   // hover: a suspect
cv.dispatchEvent(new PointerEvent("pointermove", {bubbles: true, clientX: sx1, clientY: sy1}));
out.tipSuspect = document.getElementById("tiptext").textContent;
dragThrough([[X(0.85), Y(-0.01)], [X(0.95), Y(0.5)], [X(1.01), Y(1.01)]]);   // the unlabelled column
out.unlabelled = sel.slice().sort((a, b) => a - b);
key("1");                                                          // labelled 1, all four
const [ux, uy] = screenXY(15);
dragThrough([[ux, uy]]);                                           // a click: the last one alone
out.clicked = sel.slice();
key("x");                                                          // excluded: no row
out.csv = correctionsCSV();
document.body.dataset.out = JSON.stringify(out);
</script></body>"""


@pytest.mark.slow  # headless chromium
@needs_chromium
def test_dashboard_signals_colour_filter_sort_and_unlabelled_rows(tmp_path):
    """The page's per-image signals in headless chromium: colouring by loss and by the label review
    (legend bins and counts), filtering by a loss range and by a category, sorting the grid by loss,
    margin, suspects and near-duplicate group, the review lines (withheld in red); and unlabelled
    photos labelled on the map become rows corrections.py reads as added images (one excluded: no row)."""
    import corrections as C
    page, paths, unl, classes = signals_page(tmp_path)
    out = probe_page(page, SIGNALS_PROBE, tmp_path)
    assert out["review"] == [["train labels reviewed: 2 suspects", ""], ["val label review withheld, below the floor", "bad"]]
    assert {"loss", "p_label", "margin", "conf", "knn", "suspect", "dup", "split"} <= set(out["colours"])
    bins = np.digitize(LOSS, [0.05, 0.2, 0.7, 2])  # the page's bins: [e_k, e_k+1)
    names = ["below 0.05", "0.05 to 0.2", "0.2 to 0.7", "0.7 to 2", "2 and above"]
    want = [f"{names[b]} ({int((bins == b).sum())})" for b in range(5) if (bins == b).any()] + ["no value (4)"]
    assert out["loss"][:len(want)] == want  # then the ring / square notes
    assert out["suspect"][:4] == ["not a suspect (6)", "suspect (2)", "not reviewed (5)", "review withheld (3)"]
    assert out["lossFrom1"] == sum(x >= 1 for x in LOSS) and out["loss1to2"] == sum(1 <= x <= 2 for x in LOSS)
    assert out["suspects"] == 2 and out["unlabelledShown"] == 4 and out["all"] == 16
    assert out["legendUnl"][-1] == "square: unlabelled photo" and not any("square" in x for x in out["legendReal"])
    assert not any("ring" in x for x in out["legendUnl"] + out["legendReal"])  # no wrong prediction among them
    d = page_data(page.read_text())
    by_loss = sorted(range(12), key=lambda i: -LOSS[i]) + [12, 13, 14, 15]  # highest first, no value last (by index)
    assert out["sig:loss"] == by_loss
    assert out["sig:margin"] == sorted(range(16), key=lambda i: (d["margin"][i], i))
    assert out["sig:suspect"][:2] == [1, 5] and set(out["sig:suspect"][2:8]) == {0, 2, 3, 4, 6, 7}  # suspects first,
    assert set(out["sig:suspect"][8:11]) == {8, 9, 10}  # the others reviewed, then the withheld, then the rest
    assert out["sig:dup"][:2] == [0, 4]  # the group's two images side by side, first
    assert out["cardSig"] == ["duplicate group 0", "duplicate group 0", "same pixels as a labelled photo",
                              "suspect: 2?", "suspect: 0?"]  # cards 0, 4, then by confidence: 15, 14, 1, ..., 5, ...
    assert "unlabelled photo" in out["tipUnlabelled"] and "same pixels as a labelled photo" in out["tipUnlabelled"]
    assert "margin of the prediction 0.70" in out["tipUnlabelled"] and "loss" not in out["tipUnlabelled"]
    assert "suspect: looks like 2" in out["tipSuspect"] and "loss 0.10" in out["tipSuspect"]
    assert "near-duplicate" not in out["tipSuspect"]
    assert out["unlabelled"] == [12, 13, 14, 15] and out["clicked"] == [15]
    csv_path = tmp_path / "elsewhere" / "corrections.csv"
    csv_path.parent.mkdir()
    csv_path.write_bytes(out["csv"].encode())
    fix = C.read_corrections(str(csv_path), paths, classes)  # the unlabelled photos are outside the data folder
    assert fix.labels == {} and fix.weights == {}
    assert fix.added == [(p, "1", 1.0) for p in unl[:3]]  # the excluded one left out: corrections.py refuses weight 0
