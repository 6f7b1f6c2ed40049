"""Core behaviour: the split, parameter counts, the lr schedule, checkpoints, early stopping,
exact resume, and evaluate.py / analyze.py on a tiny trained checkpoint.

Everything runs in-process on 1% of MNIST with the 14k-parameter convnet (see conftest.py)."""
import contextlib
import csv
import io
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import tiny_train_args
import analyze as A
import train


def run_train(argv):
    return train.main(train.get_args_parser().parse_args([str(a) for a in argv]))


def read_history(folder):
    with open(Path(folder) / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def load_raw(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_png(path):
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 50 and im.size[1] > 50
        im.verify()


def summary_lines(text):
    return {m.group(1): m.group(0) for m in re.finditer(r"^(Train|Val|Test) set: .*$", text, re.M)}


# ----------------------------------------------------------------------------- MNIST loading


# ----------------------------------------------------------------------------- split


# ----------------------------------------------------------------------------- schedule


# ----------------------------------------------------------------------------- early stopping


# ----------------------------------------------------------------------------- exact resume


# ----------------------------------------------------------------------------- evaluate / analyze

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_root):
    """One epoch of convnet on 1% of MNIST: (save dir, what train.py printed, its results)."""
    d = tmp_path_factory.mktemp("tiny_run")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        results = run_train(tiny_train_args(mnist_root, d, "--epochs", 1, "--warmup-epochs", 0,
                                            "--augment", "none", "--val-fraction", 0.05, "--eval-test"))
    return d, buf.getvalue(), results


@pytest.mark.slow  # analyze.py: t-SNE, neighbours and figures, ~11 s
def test_analyze(tiny_run, tmp_path, capsys):
    d, _, _ = tiny_run
    A.main(A.get_args_parser().parse_args([str(d / "best.pt"), "--out", str(tmp_path), "--tsne-samples", "300",
                                        "--queries", "4", "--neighbors", "4", "--max-mistakes", "20",
                                        "--dashboard-points", "200"]))
    for f in ("kernels.png", "tsne.png", "neighbors.png"):
        assert_png(tmp_path / f)
    assert "wrote" in capsys.readouterr().out


