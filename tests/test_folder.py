"""Photo folders: scanning both layouts, decoding odd and broken files, the decoded-image cache,
build_datasets on a folder (split, synthetic digits, sample weights), the batched device
augmentation / loader, and a tiny end-to-end train.py -> evaluate.py run.

Every fixture is a few dozen tiny images written with PIL into tmp_path; only the synthetic-digit
tests read MNIST from ../shared/data (skipped when it is not there)."""
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import images as I  # noqa: E402
import data as D  # noqa: E402
import evaluate as E  # noqa: E402
import train  # noqa: E402

from helpers import MNIST_ROOT as SHARED, have_mnist  # noqa: E402  (the tests' MNIST subset)
from helpers import save_rgba  # noqa: E402

MNIST_RAW = SHARED / "MNIST" / "raw"
needs_mnist = pytest.mark.skipif(not have_mnist(), reason=f"MNIST not in {MNIST_RAW}")

IMG = 16                       # img_size of the data tests
S = I.cache_size(IMG)          # side of the decoded cache
SIZES = [(20, 30), (60, 40), (33, 21), (45, 45), (24, 52), (40, 20)]  # (width, height)
EXTS = ["jpg", "jpeg", "png", "bmp", "webp", "PNG"]


# ----------------------------------------------------------------------------- helpers

def random_rgb(w, h, seed, lo=0, hi=256):
    return np.random.default_rng(seed).integers(lo, hi, (h, w, 3), dtype=np.uint8)


def save(path, w=30, h=20, seed=0, lo=0, hi=256, mode="RGB"):
    """A random-content image at `path` (format from the extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_rgb(w, h, seed, lo, hi)).convert(mode).save(path)
    return path


def jpeg_bytes(w=60, h=40, seed=0):
    buf = io.BytesIO()
    Image.fromarray(random_rgb(w, h, seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_flat(folder, labels, per_class, seed=0):
    """`folder/img{k}_label{c}.{ext}` with cycling extensions and sizes."""
    k = 0
    for c in labels:
        for _ in range(per_class):
            w, h = SIZES[k % len(SIZES)]
            save(Path(folder) / f"img{k:03d}_label{c}.{EXTS[k % len(EXTS)]}", w, h, seed + k)
            k += 1
    return Path(folder)


def make_subfolders(folder, counts, seed=0, lo=0, hi=256):
    """`folder/<class>/<class>{i}.<ext>` for {class: n}."""
    k = 0
    for c, n in counts.items():
        for i in range(n):
            w, h = SIZES[k % len(SIZES)]
            save(Path(folder) / c / f"{c}{i:02d}.{EXTS[k % len(EXTS)]}", w, h, seed + k, lo, hi)
            k += 1
    return Path(folder)


def warning_lines(err):
    return [ln for ln in err.splitlines() if ln.startswith("warning:")]


def folder_cfg(data_dir, *extra, img_size=IMG):
    """The `data` config train.py would build for these command-line arguments."""
    args = train.get_args_parser().parse_args(
        ["--data-dir", str(data_dir), "--img-size", str(img_size), "--mnist-root", str(SHARED),
         "--no-download", *map(str, extra)])
    return D.data_config(args)


def one_line(exc):
    msg = str(exc.value)
    assert msg and "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- 1. layouts


# ----------------------------------------------------------------------------- 2. bad input


# ----------------------------------------------------------------------------- 3. conversions


# ----------------------------------------------------------------------------- 4. the cache


# ----------------------------------------------------------------------------- 5. build_datasets


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return make_flat(tmp_path_factory.mktemp("digits"), [str(c) for c in range(10)], per_class=3)


# ----------------------------------------------------------------------------- 6. sample weights


# ----------------------------------------------------------------------------- 7. BatchAugment, DeviceLoader


# ----------------------------------------------------------------------------- edge cases of the split


# ----------------------------------------------------------------------------- 8. end to end

@pytest.mark.slow  # trains and evaluates a folder run, ~8 s
def test_train_then_evaluate_on_a_folder(tmp_path, capsys):
    d = tmp_path / "data"
    make_subfolders(d, {"dark": 20}, seed=0, lo=0, hi=60)
    make_subfolders(d, {"bright": 20}, seed=100, lo=190, hi=256)
    save_dir, out = tmp_path / "run", tmp_path / "eval"
    args = train.get_args_parser().parse_args([
        "--data-dir", str(d), "--img-size", "32", "--model", "convnet", "--epochs", "2",
        "--augment", "none", "--quiet", "--save-dir", str(save_dir), "--batch-size", "16",
        "--workers", "0", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")])
    results = train.main(args)
    assert set(results) == {"train", "val"}
    assert results["train"]["total"] == 34 and results["val"]["total"] == 6
    for f in ("best.pt", "last.pt", "history.csv", "curves.png"):
        assert (save_dir / f).is_file(), f
    with open(save_dir / "history.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    ck = torch.load(save_dir / "best.pt", map_location="cpu", weights_only=True)
    assert ck["classes"] == ["bright", "dark"] and ck["img_size"] == 32 and ck["in_channels"] == 3
    assert list((tmp_path / "cache").glob("images-36px-*.pt"))

    E.main(E.get_args_parser().parse_args([str(save_dir / "best.pt"), "--out", str(out), "--device", "cpu"]))
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"train", "val"}
    assert list(m["val"]["per_class"]) == ["bright", "dark"]
    assert m["val"]["total"] == 6 and m["train"]["total"] == 34
    assert m["val"]["correct"] == results["val"]["correct"]  # the same split and weights
    assert (out / "confusion.png").is_file()

    imgs = tmp_path / "unlabelled"
    save(imgs / "a.jpg", 40, 30, seed=1, hi=50)
    save(imgs / "b.png", 22, 60, seed=2, lo=200)
    save(imgs / "c.bmp", 30, 30, seed=3, mode="L")
    save(imgs / "sub" / "d.webp", 25, 25, seed=4)
    save_rgba(imgs / "e.png")
    (imgs / "notes.txt").write_text("not an image")
    capsys.readouterr()
    E.main(E.get_args_parser().parse_args([str(save_dir / "best.pt"), "--images", str(imgs),
                                           "--out", str(out), "--device", "cpu"]))
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    assert sorted(Path(r["path"]).name for r in rows) == ["a.jpg", "b.png", "c.bmp", "d.webp", "e.png"]
    for r in rows:
        assert r["prediction"] in ("bright", "dark") and 0.0 <= float(r["confidence"]) <= 1.0
    assert "Traceback" not in capsys.readouterr().err
