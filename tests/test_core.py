"""Core behaviour: the split, parameter counts, the lr schedule, checkpoints, early stopping,
exact resume, and evaluate.py / analyze.py on a tiny trained checkpoint.

Everything runs in-process on 1% of MNIST with the 14k-parameter convnet (see conftest.py)."""
import argparse
import contextlib
import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import interrupt_at_epoch, tiny_train_args
import analyze as A
import data as D
import evaluate as E
import report
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

def schedule_args(**kw):
    base = dict(warmup_epochs=2, epochs=10, lr=1e-3, min_lr=1e-6, scheduler="cosine",
                step_size=1, gamma=0.7, t0=2, t_mult=2)
    base.update(kw)
    return argparse.Namespace(**base)


SPE = 50  # steps per epoch


def test_cosine_schedule_warmup_and_floor():
    a = schedule_args()
    f = [train.lr_factor(s, SPE, a) for s in range(a.epochs * SPE + 1)]
    warm = a.warmup_epochs * SPE
    assert f[0] == 0.0
    assert f[warm // 2] == pytest.approx(0.5)
    assert all(x < y for x, y in zip(f[:warm], f[1:warm + 1]))  # linear warmup rises
    assert f[warm] == pytest.approx(1.0)
    assert f[-1] == pytest.approx(a.min_lr / a.lr, rel=1e-9)
    assert all(x >= y for x, y in zip(f[warm:], f[warm + 1:]))  # monotone after warmup
    assert f[warm] > f[(warm + len(f)) // 2] > f[-1]
    assert min(f[warm:]) >= a.min_lr / a.lr - 1e-12


def test_step_schedule_decays_by_gamma():
    a = schedule_args(scheduler="step", warmup_epochs=0, step_size=2, gamma=0.5)
    for epoch in range(10):
        assert train.lr_factor(epoch * SPE, SPE, a) == pytest.approx(0.5 ** (epoch // 2))
        assert train.lr_factor(epoch * SPE + SPE - 1, SPE, a) == pytest.approx(0.5 ** (epoch // 2))


def test_restarts_schedule_returns_to_peak():
    a = schedule_args(scheduler="restarts", epochs=20)  # warmup 2, cycles of 2, 4, 8 epochs
    warm = a.warmup_epochs * SPE
    for boundary in (warm, warm + 2 * SPE, warm + 6 * SPE, warm + 14 * SPE):
        assert train.lr_factor(boundary, SPE, a) == pytest.approx(1.0)
        if boundary > warm:
            assert train.lr_factor(boundary - 1, SPE, a) < 0.01  # end of the previous cycle
    mid = train.lr_factor(warm + 2 * SPE + 2 * SPE, SPE, a)  # half-way through the 4-epoch cycle
    assert mid == pytest.approx(0.5, abs=0.01)


# ----------------------------------------------------------------------------- early stopping

@pytest.fixture
def no_test_split(monkeypatch):
    """Leave MNIST's 10,000-image test split out of train.py's final report: irrelevant to the
    tests that use this, and evaluating it is most of a tiny run's time."""
    real = D.build_datasets

    def without_test(*a, **kw):
        return dataclasses.replace(real(*a, **kw), test=None)

    monkeypatch.setattr(D, "build_datasets", without_test)


def test_early_stopping(tmp_path, mnist_root, capsys, monkeypatch, no_test_split):
    for plot in ("plot_history", "plot_inputs"):  # figures are not what this test is about
        monkeypatch.setattr(report, plot, lambda *a, **k: None)
    epochs = 4
    run_train(tiny_train_args(mnist_root, tmp_path, "--epochs", epochs, "--patience", 1, "--lr", 1e-9,
                              "--min-lr", 1e-12, "--warmup-epochs", 0, "--augment", "none",
                              "--val-fraction", 0.02))
    out = capsys.readouterr().out
    rows = read_history(tmp_path)
    assert len(rows) < epochs
    assert len(rows) == 2 and rows[0]["val_acc"] == rows[1]["val_acc"]
    assert "early stopping" in out
    assert load_raw(tmp_path / "last.pt")["epoch"] == 2
    assert load_raw(tmp_path / "best.pt")["epoch"] == 1
    assert "Val set:" in out  # the final report still runs after stopping early


# ----------------------------------------------------------------------------- exact resume

def _nested_equal(a, b, where=""):
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _nested_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _nested_equal(x, y, f"{where}/{i}")
    else:
        assert a == b, where


@pytest.mark.slow  # trains MNIST twice (interrupted + resumed, and whole), ~13 s
@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_resume_equals_uninterrupted_run(tmp_path, mnist_root, monkeypatch, capsys, no_test_split, amp):
    """Run A: 3 epochs straight. Run B: the same, interrupted at the start of epoch 2, then
    resumed from its last.pt for epochs 2 and 3. Same weights, optimizer state and history,
    in fp32 and under bf16 autocast (the default on a CPU with native bf16; emulated, and as exact,
    on one without)."""
    common = ("--epochs", 3, "--warmup-epochs", 1, "--augment", "light", "--mix-prob", 0.5,
              "--val-fraction", 0.02, "--patience", 10, "--amp", amp)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    res_a = run_train(tiny_train_args(mnist_root, a_dir, *common))

    with monkeypatch.context() as m:
        m.setattr(train, "train_one_epoch", interrupt_at_epoch(2))
        with pytest.raises(KeyboardInterrupt):
            run_train(tiny_train_args(mnist_root, b_dir, *common))
    assert load_raw(b_dir / "last.pt")["epoch"] == 1
    capsys.readouterr()
    res_b = run_train(tiny_train_args(mnist_root, b_dir, *common, "--resume", b_dir / "last.pt"))
    assert "at epoch 2" in capsys.readouterr().out

    for name in ("last.pt", "best.pt"):
        a, b = load_raw(a_dir / name), load_raw(b_dir / name)
        assert a["epoch"] == b["epoch"]
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for k in a["state_dict"]:
            assert torch.equal(a["state_dict"][k], b["state_dict"][k]), (name, k)
    a, b = load_raw(a_dir / "last.pt"), load_raw(b_dir / "last.pt")
    _nested_equal(a["optimizer"], b["optimizer"], "optimizer")
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert a["early_stopping"] == b["early_stopping"]

    ha, hb = read_history(a_dir), read_history(b_dir)
    assert len(ha) == len(hb) == 3
    for key in ("val_acc", "val_loss", "train_loss", "train_acc", "lr"):
        assert [r[key] for r in ha] == [r[key] for r in hb], key
    assert res_a == res_b


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


@pytest.mark.slow  # fixture tiny_run: train.py on MNIST with --eval-test and its figures, ~4 s
def test_train_outputs(tiny_run):
    d, out, results = tiny_run
    for f in ("best.pt", "last.pt", "history.csv"):
        assert (d / f).is_file(), f
    for f in ("curves.png", "curves_detail.png"):
        assert_png(d / f)
    assert set(summary_lines(out)) == {"Train", "Val", "Test"}
    assert results["test"]["total"] == 500 and results["val"]["total"] == 100  # the subset: 500 test, 5% of 2000
    # --eval-test logs the test split per epoch; one epoch, so it is the final best.pt's score
    (row,) = read_history(d)
    assert float(row["test_acc"]) == pytest.approx(results["test"]["acc"], abs=1e-12)
    assert float(row["test_loss"]) == pytest.approx(results["test"]["loss"], rel=1e-5)


@pytest.mark.slow  # evaluate.py on the 1% run: every split and its figures, ~2 s
def test_evaluate(tiny_run, tmp_path, capsys):
    d, train_out, results = tiny_run
    E.main(E.get_args_parser().parse_args([str(d / "best.pt"), "--out", str(tmp_path)]))
    out = capsys.readouterr().out
    with open(tmp_path / "metrics.json") as f:
        m = json.load(f)
    assert set(m) == {"train", "val", "test"}
    for split, r in m.items():
        assert r["total"] == results[split]["total"], split
        assert r["correct"] == results[split]["correct"], split
        assert set(r["per_class"]) == {str(i) for i in range(10)}
        for c, pc in r["per_class"].items():
            assert {"precision", "recall", "f1"} <= set(pc)
            assert all(0.0 <= pc[k] <= 1.0 for k in ("precision", "recall", "f1")), (split, c)
        assert sum(pc["support"] for pc in r["per_class"].values()) == r["total"]
        assert sum(map(sum, r["confusion"])) == r["total"]
    assert_png(tmp_path / "confusion.png")
    assert_png(tmp_path / "mistakes.png")
    assert summary_lines(out)["Test"] == summary_lines(train_out)["Test"]
    assert summary_lines(out) == summary_lines(train_out)  # train and val lines too


@pytest.mark.slow  # analyze.py: t-SNE, neighbours and figures, ~11 s
def test_analyze(tiny_run, tmp_path, capsys):
    d, _, _ = tiny_run
    A.main(A.get_args_parser().parse_args([str(d / "best.pt"), "--out", str(tmp_path), "--tsne-samples", "300",
                                        "--queries", "4", "--neighbors", "4", "--max-mistakes", "20",
                                        "--dashboard-points", "200"]))
    for f in ("kernels.png", "tsne.png", "neighbors.png"):
        assert_png(tmp_path / f)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.slow  # fixture tiny_run: train.py on MNIST with --eval-test and its figures, ~4 s
def test_evaluate_classifies_an_image_folder(tiny_run, tmp_path, mnist_root, capsys):
    d, _, _ = tiny_run
    images, labels = D.load_mnist(str(mnist_root), train=False, download=False)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):  # RGB files: the grayscale model gets them converted
        rgb = images[i, 0, :, :, None].expand(28, 28, 3).numpy()
        Image.fromarray(rgb).save(folder / ("sub" if i % 2 else "") / f"d{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    E.main(E.get_args_parser().parse_args([str(d / "best.pt"), "--images", str(folder), "--out", str(tmp_path)]))
    capsys.readouterr()
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert all(r["prediction"] in [str(i) for i in range(10)] for r in rows)
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
    assert not any(r["path"].endswith("broken.png") for r in rows)
