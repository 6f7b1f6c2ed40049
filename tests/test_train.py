"""train.py: the lr schedules, mixup, early stopping, exact resume, what a run writes and prints,
--test-dir, --clip-grad, --head mlp, --sample-weights and --amp in real runs, and its command line
as a subprocess (a user error is one `error:` line, --dry-run exits 0).

The runs are tiny: 1% of the tests' MNIST subset with the 14k-parameter convnet (helpers.tiny_train_args)
or a few drawn-digit photos, in this process (helpers.run_train) unless the command line is the point."""
import argparse
import contextlib
import dataclasses
import io
import re
from argparse import Namespace

import numpy as np
import pytest
import torch

import checkpoint as CK
import data as D
import evaluate as E
import model as M
import train
from helpers import (DRAWN, MNIST_ROOT, assert_one_line_error, assert_png, interrupt_at_epoch, load_raw, no_figures, photo_folder,
                     read_csv, run_script, run_scripts, run_train, summary_by_split, tiny_train_args)

CPU = torch.device("cpu")
DIGITS = [str(d) for d in range(10)]


# ----------------------------------------------------------------------------- the lr schedules

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


# ----------------------------------------------------------------------------- mixup

def test_mixup_loss_ignores_the_label_of_a_weight_zero_sample():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    weights = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 1.0])
    perm = torch.tensor([2, 0, 1, 5, 3, 4])  # sample 0 is mixed with the weight-0 sample 2
    loss, _ = train.mixup_loss(logits, labels, weights, perm, 0.7, 0.0)
    other = labels.clone()
    other[2] = 0  # a different (wrong) label on the dropped sample changes nothing
    assert train.mixup_loss(logits, other, weights, perm, 0.7, 0.0)[0] == pytest.approx(loss.item())
    # unit weights: the plain mean of the mixed cross-entropy
    ones = torch.ones(6)
    ce = torch.nn.functional.cross_entropy
    plain = 0.7 * ce(logits, labels) + 0.3 * ce(logits, labels[perm])
    assert train.mixup_loss(logits, labels, ones, perm, 0.7, 0.0)[0] == pytest.approx(plain.item())
    # the mean is over the weighted samples: doubling every weight changes nothing
    assert train.mixup_loss(logits, labels, 2 * weights, perm, 0.7, 0.0)[0] == pytest.approx(loss.item())


def test_mixup_returns_the_partner_permutation():
    args = Namespace(mixup_alpha=0.2, mix_prob=1.0)
    x = torch.arange(5.0).view(5, 1)
    mixed, perm, lam = train.mixup(x, args)
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    assert train.mixup(x, Namespace(mixup_alpha=0.2, mix_prob=0.0)) == (x, None, 1.0)


# ----------------------------------------------------------------------------- early stopping

@pytest.fixture
def no_test_split(monkeypatch):
    """Leave MNIST's 10,000-image test split out of train.py's final report: irrelevant to the
    tests that use this, and evaluating it is most of a tiny run's time."""
    real = D.build_datasets

    def without_test(*a, **kw):
        return dataclasses.replace(real(*a, **kw), test=None)

    monkeypatch.setattr(D, "build_datasets", without_test)


def test_early_stopping(tmp_path, mnist_root, no_test_split):
    epochs = 4
    _, out = run_train(tiny_train_args(mnist_root, tmp_path, "--epochs", epochs, "--patience", 1, "--lr", 1e-9,
                                       "--min-lr", 1e-12, "--warmup-epochs", 0, "--augment", "none",
                                       "--val-fraction", 0.02))  # without figures: not what this test is about
    rows = read_csv(tmp_path / "history.csv")
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
def test_resume_equals_uninterrupted_run(tmp_path, mnist_root, monkeypatch, no_test_split, amp):
    """Run A: 3 epochs straight. Run B: the same, interrupted at the start of epoch 2, then
    resumed from its last.pt for epochs 2 and 3. Same weights, optimizer state and history,
    in fp32 and under bf16 autocast (the default on a CPU with native bf16; emulated, and as exact,
    on one without)."""
    common = ("--epochs", 3, "--warmup-epochs", 1, "--augment", "light", "--mix-prob", 0.5,
              "--val-fraction", 0.02, "--patience", 10, "--amp", amp)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    res_a, _ = run_train(tiny_train_args(mnist_root, a_dir, *common))

    with monkeypatch.context() as m:
        m.setattr(train, "train_one_epoch", interrupt_at_epoch(2))
        with pytest.raises(KeyboardInterrupt):
            run_train(tiny_train_args(mnist_root, b_dir, *common))
    assert load_raw(b_dir / "last.pt")["epoch"] == 1
    res_b, out = run_train(tiny_train_args(mnist_root, b_dir, *common, "--resume", b_dir / "last.pt"))
    assert "at epoch 2" in out

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

    ha, hb = read_csv(a_dir / "history.csv"), read_csv(b_dir / "history.csv")
    assert len(ha) == len(hb) == 3
    for key in ("val_acc", "val_loss", "train_loss", "train_acc", "lr"):
        assert [r[key] for r in ha] == [r[key] for r in hb], key
    assert res_a == res_b


# ----------------------------------------------------------------------------- what a run writes and prints

@pytest.mark.slow  # fixture tiny_run: train.py on MNIST with --eval-test and its figures, ~4 s
def test_train_outputs(tiny_run):
    d, out, results = tiny_run("--eval-test")
    for f in ("best.pt", "last.pt", "history.csv"):
        assert (d / f).is_file(), f
    for f in ("curves.png", "curves_detail.png"):
        assert_png(d / f)
    assert set(summary_by_split(out)) == {"Train", "Val", "Test"}
    assert results["test"]["total"] == 500 and results["val"]["total"] == 100  # the subset: 500 test, 5% of 2000
    # --eval-test logs the test split per epoch; one epoch, so it is the final best.pt's score
    (row,) = read_csv(d / "history.csv")
    assert float(row["test_acc"]) == pytest.approx(results["test"]["acc"], abs=1e-12)
    assert float(row["test_loss"]) == pytest.approx(results["test"]["loss"], rel=1e-5)


@pytest.mark.slow  # fixture tiny_run('--amp', 'bf16'): a training run, emulated where the CPU has no native bf16, ~9 s
def test_checkpoint_stores_amp_and_history_the_estimate(tiny_run):
    d, out, _ = tiny_run("--amp", "bf16")
    assert re.search(r"^convnet: .*\| amp bf16 \|", out, re.M), out
    for name in ("best.pt", "last.pt"):
        ck = torch.load(d / name, map_location="cpu", weights_only=True)
        assert ck["amp"] == "bf16" and ck["args"]["amp"] == "bf16"
        assert "--amp bf16" in ck["command"]
    m = re.search(r"^estimate: (\d+) img/s, (\d+) s/epoch, .* in all for 1 epoch \(early stopping aside\)$", out, re.M)
    assert m, out
    (row,) = read_csv(d / "history.csv")
    assert float(row["est_images_per_s"]) == pytest.approx(float(m.group(1)), abs=0.5)
    assert float(row["est_total_s"]) > 0


def test_a_mixed_run_says_which_photos_it_leaves_out(tmp_path, mnist_root):
    """Photos + composites: the photos left after whole batches are a step of their own when they
    count (train_order), and the first lines name the photos left out when they do not."""
    photos = photo_folder(tmp_path / "photos", DIGITS, 8, layout="flat", **DRAWN)  # 80 photos: 70 train, 10 val
    base = ["--data-dir", photos, "--mnist-root", mnist_root, "--no-download", "--img-size", 16, "--model", "convnet",
            "--synthetic-n", 40, "--augment", "none", "--workers", 0, "--dry-run", "--quiet"]
    _, out = run_train(base + ["--batch-size", 32, "--save-dir", tmp_path / "a"])  # 16 photos a batch: 4 batches, then 6 photos (8.6%) + 6 composites
    assert "70 train + 40 synthetic" in out and "5 steps of 32 per epoch\n" in out
    _, out = run_train(base + ["--batch-size", 24, "--save-dir", tmp_path / "b"])  # 12 photos a batch: 5 batches, and 10 photos (14%) kept
    assert "6 steps of 24 per epoch\n" in out
    _, out = run_train(base + ["--batch-size", 34, "--save-dir", tmp_path / "c"])  # 17 photos a batch: 4 batches, and 2 photos (2.9%) left out
    assert "4 steps of 34 per epoch (the last partial batch, 2 photos, is left out" in out


def test_the_first_lines_say_what_was_found_and_that_composites_are_being_made(tmp_path, mnist_root, monkeypatch):
    """Before the seconds spent on composites, a line says so; then the classes found, with their counts."""
    import device
    monkeypatch.setattr(device, "threads_of_other_runs", lambda: 0)  # other runs on this machine add a line first
    photos = photo_folder(tmp_path / "photos", DIGITS, 3, layout="flat", **DRAWN)
    _, out = run_train(["--data-dir", photos, "--mnist-root", mnist_root, "--no-download", "--img-size", 16, "--model",
                        "convnet", "--synthetic-n", 20, "--augment", "none", "--workers", 0, "--threads", 1, "--dry-run", "--quiet",
                        "--save-dir", tmp_path / "run"])
    lines = out.splitlines()
    assert lines[0] == "making 20 synthetic digits (fonts on field backgrounds) for training ..."
    assert lines[1] == "Found 30 files belonging to 10 classes: " + ", ".join(f"{d} (3)" for d in DIGITS)
    assert lines[2].startswith("convnet: ")


@pytest.mark.parametrize("threads", [None, 1])
def test_other_runs_threads_are_said_only_when_the_count_was_not_chosen(threads, tmp_path, mnist_root, monkeypatch):
    import device
    monkeypatch.setattr(device, "threads_of_other_runs", lambda: 1)
    argv = tiny_train_args(mnist_root, tmp_path / "run", "--dry-run") + (["--threads", threads] if threads else [])
    _, out = run_train(argv)
    said = [line for line in out.splitlines() if line.startswith("other runs of this toolkit hold 1 thread(s)")]
    assert len(said) == (threads is None)


def test_a_run_prints_accuracy_in_percent_and_the_estimate_on_its_own_line(tmp_path, mnist_root):
    """Accuracy as the final lines give it (a percentage), the counts in words that fit them, what
    feeds the batches (--device-data: no loader worker), and the estimate after the bar, not on it."""
    argv = tiny_train_args(mnist_root, tmp_path / "run", "--epochs", 1, "--warmup-epochs", 0, "--augment", "none",
                           "--device-data", "--threads", 1)
    argv.remove("--quiet")  # the bar is what the estimate line must not be glued to
    text = io.StringIO()  # stdout and stderr in one stream, as a terminal shows them
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        no_figures(mp)
        train.main(train.get_args_parser().parse_args(argv))
    out = text.getvalue()
    assert "| 1 thread, data on the device | augment none" in out, out
    assert re.search(r"(^|[\r\n])estimate: \d+ img/s", out) and not re.search(r"[^\r\n]estimate:", out), out
    out = out.replace("\r", "\n")  # (the bar's redraws)
    assert "1 step of 64 per epoch" in out
    assert re.search(r"^epoch   1/1 \| train loss \S+ acc +\d+\.\d\d% \| val loss \S+ acc +\d+\.\d\d% \* \|", out, re.M), out
    assert re.search(r"^Val set: Average loss: \S+, Accuracy: \d+/\d+ \(\d+\.\d\d%\)$", out, re.M), out


@pytest.mark.slow  # trains two MNIST runs, over 1 s
def test_train_prints_the_steps_and_what_it_leaves_out(tmp_path, mnist_root):
    _, out = run_train(tiny_train_args(mnist_root, tmp_path, "--epochs", 1, "--train-fraction", 0.25, "--augment", "none"))
    # 420 training digits: 6 steps of 64 and 36 (8.6%) kept
    assert "7 steps of 64 per epoch\n" in out
    _, out = run_train(tiny_train_args(mnist_root, tmp_path / "b", "--epochs", 1, "--train-fraction", 0.25,
                                       "--batch-size", 100, "--augment", "none"))
    assert "4 steps of 100 per epoch (the last partial batch, 20 images, is left out" in out  # 4.8%


# ----------------------------------------------------------------------------- --test-dir

@pytest.mark.slow  # trains two runs and evaluates one, over 1 s
def test_test_dir_is_the_test_split(tmp_path):
    photos = photo_folder(tmp_path / "photos", list("0123"), 8, layout="flat", **DRAWN)
    test_dir = photo_folder(tmp_path / "test", list("012"), 3, seed=1, **DRAWN)  # a subset of the classes
    res, out = run_train(["--data-dir", photos, "--test-dir", test_dir, "--img-size", 16, "--model", "convnet",
                          "--epochs", 2, "--eval-test", "--augment", "none", "--quiet", "--workers", 0,
                          "--save-dir", tmp_path / "run"])
    assert res["test"]["total"] == 9 and "Test set:" in out and ", 9 test |" in out
    ck = CK.load_checkpoint(str(tmp_path / "run" / "best.pt"))
    assert ck["data"]["test_dir"] == str(test_dir)
    assert all(r["test_acc"] != "" for r in read_csv(tmp_path / "run" / "history.csv"))
    m = E.main(E.get_args_parser().parse_args([str(tmp_path / "run" / "best.pt"), "--out", str(tmp_path / "ev")]))
    assert m["test"]["correct"] == res["test"]["correct"] and m["test"]["total"] == 9
    # best.pt is picked by val: the same run with a different test folder picks the same epoch
    photo_folder(tmp_path / "test2", list("0123"), 2, layout="flat", seed=5, **DRAWN)
    res2, _ = run_train(["--data-dir", photos, "--test-dir", tmp_path / "test2", "--img-size", 16, "--model", "convnet",
                         "--epochs", 2, "--eval-test", "--augment", "none", "--quiet", "--workers", 0,
                         "--save-dir", tmp_path / "run2"])
    assert res2["val"] == res["val"]
    assert CK.load_checkpoint(str(tmp_path / "run2" / "best.pt"))["epoch"] == ck["epoch"]


@pytest.mark.slow  # train.py as subprocesses, ~26 s
def test_test_dir_unknown_class_and_bad_use_are_one_line(tmp_path, mnist_root):
    photos = photo_folder(tmp_path / "photos", list("01"), 4, layout="flat", **DRAWN)
    odd = photo_folder(tmp_path / "odd", ["0", "cat"], 2, layout="flat", seed=1, **DRAWN)
    for argv, words in (
            (["--data-dir", photos, "--test-dir", odd], "cat"),
            (["--data-dir", photos, "--test-dir", tmp_path / "missing"], "--test-dir folder not found"),
            (["--dataset", "mnist", "--mnist-root", mnist_root, "--test-dir", odd], "--dataset folder")):
        r = run_script("train.py", *argv, "--img-size", 16, "--model", "convnet", "--epochs", 1, "--quiet",
                       "--save-dir", tmp_path / "run")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr, r.stderr


# ----------------------------------------------------------------------------- real training steps

@pytest.mark.slow  # trains 6 MNIST steps, ~1 s
def test_clip_grad_clips_every_real_step(tmp_path, mnist_root, monkeypatch):
    norms, real = [], torch.nn.utils.clip_grad_norm_

    def clip_and_check(params, max_norm, *a, **k):
        params = list(params)
        total = real(params, max_norm, *a, **k)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        norms.append((float(total), float(after), max_norm))
        return total
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_and_check)
    res, _ = run_train(tiny_train_args(mnist_root, tmp_path, "--epochs", 1, "--clip-grad", 0.05,
                                       "--train-fraction", 0.2, "--augment", "none"))
    assert len(norms) == 6  # 340 images: 5 steps of 64 and the partial batch of 20 (5.9% of the epoch, kept)
    assert all(t > m and a <= m * (1 + 1e-4) for t, a, m in norms)  # every step clipped to 0.05
    assert np.isfinite(res["val"]["loss"])


@pytest.mark.slow  # trains MNIST with --head mlp, ~19 s
def test_head_mlp_trains_and_reloads(tmp_path, mnist_root):
    res, _ = run_train(tiny_train_args(mnist_root, tmp_path, "--model", "resnet18", "--head", "mlp", "--epochs", 1,
                                       "--val-fraction", 0.02, "--augment", "none"))
    ck = CK.load_checkpoint(str(tmp_path / "best.pt"))
    assert ck["model_args"]["head"] == "mlp"
    net = CK.model_from_checkpoint(ck)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules())  # the mlp head, not a Linear
    init = M.build_model("resnet18", 10, 1, **ck["model_args"]).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in ck["state_dict"].items() if ".bias" in k and "fc" in k)
    m = E.main(E.get_args_parser().parse_args([str(tmp_path / "best.pt"), "--split", "val", "--out", str(tmp_path / "e")]))
    assert m["val"]["correct"] == res["val"]["correct"]


@pytest.mark.slow  # trains two MNIST runs (1 epoch on all 2,000 digits), ~5 s
def test_sample_weights_steer_a_real_run(tmp_path, mnist_root):
    """Weight 0 on every training digit but the 3s: the trained model calls most val digits 3."""
    _, labels = D.load_mnist(str(mnist_root), train=True, download=False)
    csv_path = tmp_path / "w.csv"
    csv_path.write_text("path,weight\n" + "".join(f"#{i},0\n" for i in range(len(labels)) if labels[i] != 3))
    common = ["--epochs", 1, "--train-fraction", 1.0, "--augment", "none", "--warmup-epochs", 0, "--mix-prob", 0]
    run_train(tiny_train_args(mnist_root, tmp_path / "w", *common, "--sample-weights", csv_path))
    run_train(tiny_train_args(mnist_root, tmp_path / "u", *common))
    share3 = []
    for run in ("w", "u"):
        model, _, data = E.load_run(str(tmp_path / run / "best.pt"), CPU)
        share3.append((E.collect(model, data.val, CPU)["preds"] == 3).float().mean().item())
    assert share3[0] > 0.5 and share3[1] < 0.3, share3


# ----------------------------------------------------------------------------- the command line (subprocesses)

@pytest.fixture(scope="module")
def script_errors(tmp_path_factory, mnist_root, fake_convnet_dir):
    """train.py's command-line cases, run as subprocesses (the `if __name__ == "__main__"` block is
    what is tested), started together once: {case: CompletedProcess}."""
    tmp = tmp_path_factory.mktemp("cli")
    tiny = lambda name, *extra: tiny_train_args(mnist_root, tmp / name, "--augment", "none", *extra)  # noqa: E731
    return run_scripts({
        "train_missing_data_dir": ("train.py", "--data-dir", tmp / "no_such_folder", "--save-dir", tmp / "s1",
                                   "--quiet"),
        "train_missing_mnist": ("train.py", "--dataset", "mnist", "--mnist-root", "/nonexistent", "--no-download",
                                "--save-dir", tmp / "s2", "--quiet"),
        "resume_best_other_model": ("train.py", *tiny("s3", "--model", "net", "--resume", fake_convnet_dir / "best.pt")),
        "resume_last_other_model": ("train.py", *tiny("s4", "--model", "net", "--resume", fake_convnet_dir / "last.pt")),
        "dry_run": ("train.py", *tiny("s5", "--dry-run")),
    })


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_train_missing_data_dir(script_errors):
    assert_one_line_error(script_errors["train_missing_data_dir"], "no_such_folder")


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_train_missing_mnist_no_download(script_errors):
    assert_one_line_error(script_errors["train_missing_mnist"], "/nonexistent", "train-images-idx3-ubyte")


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_resume_best_pt_of_another_model(script_errors):
    assert_one_line_error(script_errors["resume_best_other_model"], "best.pt")


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_resume_last_pt_of_another_model(script_errors):
    assert_one_line_error(script_errors["resume_last_other_model"], "convnet", "net")


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_dry_run(script_errors):
    proc = script_errors["dry_run"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dry run" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # train.py as a subprocess
def test_mnist_with_synthetic_is_one_error_line(tmp_path):
    r = run_script("train.py", "--dataset", "mnist", "--mnist-root", MNIST_ROOT, "--no-download", "--synthetic-n", 10,
                   "--epochs", 1, "--save-dir", tmp_path / "run")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "--synthetic-n" in r.stderr and "Traceback" not in r.stderr


def test_the_end_of_a_run_says_where_it_is_and_what_next(tiny_run):
    d, out, _ = tiny_run("--no-keep-last", figures=False)
    assert (d / "best.pt").is_file() and not (d / "last.pt").exists()  # --no-keep-last: removed once it ended
    saved, nxt = out.strip().splitlines()[-2:]
    assert saved.startswith(f"saved {d / 'best.pt'} (epoch 1, val ") and "last.pt removed" in saved
    assert nxt.startswith(f"next: python evaluate.py {d / 'best.pt'}") and f"python analyze.py {d / 'best.pt'}" in nxt
    d, out, _ = tiny_run("--eval-test")  # the run other tests read: last.pt kept by default
    assert (d / "last.pt").is_file() and "what --resume needs" in out
