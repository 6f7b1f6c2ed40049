"""The tests' helpers (conftest.py holds only pytest's hooks and fixtures): paths, the tiny
photo-folder builder, the CSV reader, train.py / analyze.py run in this process, scripts run as
subprocesses, fabricated checkpoints, and small assertions shared by several test files.

Nothing here downloads: MNIST is the committed subset in tests/data/MNIST/raw/ (2,000 training
and 500 test digits, written by tests/data/make_mnist_subset.py)."""
import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import checkpoint as CK  # noqa: E402
import data as D  # noqa: E402
import model as M  # noqa: E402
import report  # noqa: E402

MNIST_ROOT = Path(__file__).resolve().parent / "data"  # holds MNIST/raw/: the tests' subset


def have_mnist(root=MNIST_ROOT):
    raw = Path(root) / "MNIST" / "raw"
    return all((raw / f).is_file() or (raw / (f + ".gz")).is_file() for f in D.MNIST_FILES)


needs_mnist = pytest.mark.skipif(not have_mnist(), reason=f"MNIST not in {MNIST_ROOT / 'MNIST' / 'raw'}")


MNIST_RUN_IMAGES = 100  # conftest's mnist_run: its test digits written out as image files


# ----------------------------------------------------------------------------- images and photo folders

# photo_folder(**MIXED): formats and sizes (width, height) cycled over a folder's images
MIXED = {"ext": ["jpg", "jpeg", "png", "bmp", "webp", "PNG"],
         "size": [(20, 30), (60, 40), (33, 21), (45, 45), (24, 52), (40, 20)]}
DRAWN = {"stem": "d{i}", "size": (24, 32), "content": "digit"}  # photo_folder(**DRAWN): `d<i>`, the class drawn


def save_image(path, size=(30, 20), seed=0, lo=0, hi=256, mode="RGB"):
    """A random-content image at `path` (the format from the extension): uniform RGB noise in
    [lo, hi) from numpy's default_rng(seed), converted to `mode`. size: (width, height) or a side."""
    w, h = (size, size) if isinstance(size, int) else size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(lo, hi, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def save_rgba(path):
    """A 30 x 20 RGBA PNG (or any format with alpha): the right half opaque dark red, the left half
    fully transparent."""
    a = np.zeros((20, 30, 4), np.uint8)
    a[..., 0] = 200
    a[:, 15:, 3] = 255     # right half opaque dark red, left half fully transparent
    Image.fromarray(a, "RGBA").save(path)
    return Path(path)


def photo_folder(root, classes=("0", "1", "2"), per_class=5, layout="sub", stem="img{i}", ext="png", size=16,
                 seed=0, lo=0, hi=256, content="noise", colours=None, pixels=None):
    """A tiny photo folder at `root` (created as needed); returns its Path.

    classes: the class names in writing order; each entry writes per_class images (an int, or one
        count per entry), and a name may repeat (e.g. one entry per image, labels interleaved).
    layout: "sub" (`<class>/<stem>.<ext>`), "flat" (`<stem>_label<class>.<ext>`) or "plain"
        (`<stem>.<ext>`, unlabelled: an --images or --backgrounds folder).
    stem: a format string of i (the image's index in its entry of classes), k (its index in the
        folder, in writing order) and c (its class).
    ext, size: one value, or a list cycled over k; the extension picks the format, a size is
        (width, height) or a side.
    content: "noise" (uniform RGB in [lo, hi)) or "digit" (the class name drawn in a light colour
        on a dark one: 24 x 32 px fits it, helpers.DRAWN); image i of entry e draws from
        default_rng(10000 seed + 100 e + i): the images differ between folders of different seeds,
        and a class's images do not change when another class gets more.
    colours: one RGB per image (by k): flat images of those colours instead.
    pixels: one uint8 array per image (by k; H x W greyscale or H x W x 3 RGB), written as it is."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    counts = [per_class] * len(classes) if isinstance(per_class, int) else list(per_class)
    exts = [ext] if isinstance(ext, str) else list(ext)
    sizes = [size] if isinstance(size, (int, tuple)) else list(size)
    k = 0
    for e, (c, n) in enumerate(zip(classes, counts, strict=True)):
        for i in range(n):
            name, suffix = stem.format(i=i, k=k, c=c), exts[k % len(exts)]
            path = root / {"sub": f"{c}/{name}.{suffix}", "flat": f"{name}_label{c}.{suffix}",
                           "plain": f"{name}.{suffix}"}[layout]
            size_k = sizes[k % len(sizes)]
            w, h = (size_k, size_k) if isinstance(size_k, int) else size_k
            path.parent.mkdir(parents=True, exist_ok=True)
            if pixels is not None:
                Image.fromarray(np.asarray(pixels[k])).save(path)
            elif colours is not None:
                Image.new("RGB", (w, h), tuple(int(v) for v in colours[k])).save(path)
            elif content == "noise":
                save_image(path, (w, h), 10000 * seed + 100 * e + i, lo, hi)
            elif content == "digit":
                rng = np.random.default_rng(10000 * seed + 100 * e + i)
                im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 120, 3)))
                ImageDraw.Draw(im).text((8, 10), str(c), fill=tuple(int(v) for v in rng.integers(150, 256, 3)))
                im.save(path)
            else:
                raise ValueError(f"content {content!r}")
            k += 1
    return root


# ----------------------------------------------------------------------------- files

def read_csv(path):
    """The rows of a CSV file with a header (history.csv, predictions.csv, ...) as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_raw(path):
    """A checkpoint as torch.load reads it (weights_only: plain types), without the toolkit's checks."""
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_png(path):
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 50 and im.size[1] > 50
        im.verify()


def summary_lines(text):
    """The `Train/Val/Test set: ...` lines of a script's output, in order."""
    return re.findall(r"^(?:Train|Val|Test) set: .*$", text, re.M)


def summary_by_split(text):
    """{"Train" / "Val" / "Test": its (last) `... set: ...` line}."""
    return {m.group(1): m.group(0) for m in re.finditer(r"^(Train|Val|Test) set: .*$", text, re.M)}


def page_data(page):
    """The JSON a dashboard.html embeds (report.write_dashboard)."""
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


def warning_lines(err):
    return [ln for ln in err.splitlines() if ln.startswith("warning:")]


def one_line(exc):
    """The message of a pytest.raises ExceptionInfo, asserted to be one non-empty line."""
    msg = str(exc.value)
    assert msg and "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- runs in this process

def tiny_train_args(mnist_root, save_dir, *extra):
    """The smallest sensible train.py command line on MNIST (a list of strings)."""
    return ["--dataset", "mnist", "--mnist-root", str(mnist_root), "--no-download",
            "--model", "convnet", "--train-fraction", "0.01", "--batch-size", "64",
            "--quiet", "--workers", "0", "--save-dir", str(save_dir), *map(str, extra)]


def saved_figures(mp):
    """Every figure cli.save_figure writes while the MonkeyPatch `mp` holds, as {file name: Figure}
    (still written): the tests read titles, ticks, legends and colours from its artists, not pixels."""
    import cli
    figures, save = {}, cli.save_figure

    def keep(fig, path, **kwargs):
        figures[os.path.basename(path)] = fig
        save(fig, path, **kwargs)
    mp.setattr(cli, "save_figure", keep)
    return figures


def title_text(fig):
    """A figure's suptitle and its axes' titles, one string."""
    return " | ".join([fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes])


def no_figures(mp):
    """Leave out train.py's per-run figures (augmentations.png, mixup.png, curves*.png) through the
    MonkeyPatch `mp`: tested where a test is about them, and a good part of a tiny run's time."""
    mp.setattr(report, "plot_inputs", lambda *a, **k: None)
    mp.setattr(report, "plot_history", lambda *a, **k: None)


def run_train(argv, figures=False):
    """train.py in this process: train.main on the command line `argv` (str() of each item).
    Returns (its results, what it printed). figures=False leaves out the per-run figures."""
    import train
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        if not figures:
            no_figures(mp)
        results = train.main(train.get_args_parser().parse_args([str(a) for a in argv]))
    return results, out.getvalue()


def run_analyze(ckpt, out, *extra):
    """analyze.py in this process, with small t-SNE / neighbour counts."""
    import analyze
    argv = [ckpt, "--out", out, "--tsne-samples", 100, "--queries", 4, "--neighbors", 4, *extra]
    analyze.main(analyze.get_args_parser().parse_args([str(a) for a in argv]))


def data_config(*argv):
    """The `data` config train.py builds for these command-line arguments (MNIST: the tests' subset)."""
    import train
    args = train.get_args_parser().parse_args(["--mnist-root", str(MNIST_ROOT), "--no-download", *map(str, argv)])
    return D.data_config(args)


def interrupt_at_epoch(epoch):
    """A stand-in for train.train_one_epoch that raises KeyboardInterrupt when it reaches
    `epoch` (a run killed there, with last.pt from the epoch before) and trains otherwise."""
    import train
    real = train.train_one_epoch

    def interrupted(model, loader, optimizer, scheduler, scaler, device, at_epoch, *rest, **kw):
        if at_epoch == epoch:
            raise KeyboardInterrupt
        return real(model, loader, optimizer, scheduler, scaler, device, at_epoch, *rest, **kw)
    return interrupted


def fabricate_checkpoint(path, mnist_root, model_name="convnet", with_state=False, seed=0):
    """A checkpoint in the toolkit's format without training: a freshly initialised model and
    the data config that train.py would store for a tiny MNIST run."""
    import train
    torch.manual_seed(seed)
    args = train.resolve_defaults(train.get_args_parser().parse_args(
        tiny_train_args(mnist_root, Path(path).parent, "--model", model_name)))
    kwargs = M.model_kwargs(model_name, img_size=28, drop_rate=args.drop_rate, head=args.head, width=args.width)
    net = M.build_model(model_name, 10, 1, **kwargs)
    ck = {"model": model_name, "model_args": kwargs, "state_dict": net.state_dict(),
          "classes": [str(i) for i in range(10)], "in_channels": 1, "img_size": 28,
          "mean": list(D.MNIST_MEAN), "std": list(D.MNIST_STD), "data": D.data_config(args),
          "args": vars(args), "epoch": 1, "best_val_acc": 0.1, "history": []}
    if with_state:
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        ck.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), scaler={},
                  rng={"torch": torch.get_rng_state()},
                  early_stopping={"acc": 0.1, "epoch": 1, "bad_epochs": 0})
    CK.save_checkpoint(ck, str(path))
    return Path(path)


# ----------------------------------------------------------------------------- subprocesses

def run_script(script, *args, cwd=REPO, timeout=120):
    """Run `python script args...` in the repo; returns the CompletedProcess (text)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # warnings are NOT silenced
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_scripts(cases, at_once=3):
    """{name: (script, *args)} -> {name: CompletedProcess}, a few at a time: importing torch costs
    seconds per process, so a test file starts its cases together once."""
    with ThreadPoolExecutor(at_once) as pool:
        futures = {k: pool.submit(run_script, *v) for k, v in cases.items()}
        return {k: f.result() for k, f in futures.items()}


def assert_one_line_error(proc, *needles):
    """The command-line contract for a user error: exit 2, one `error: ...` line on stderr naming
    each of `needles`, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
