"""analyze.py's data-quality outputs on a photo folder of MNIST digits whose labels we corrupt on
purpose: the label-issue finder (out-of-fold confident learning) must rank the flipped samples
first; samples.csv, suspects.csv (a --sample-weights file), duplicates.csv and mistakes/ are
checked on the same run. Also data.py's cross-validation folds."""
import csv
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import images as I
from helpers import run_script
import analyze as A
import data as D
import evaluate as E
import report
import train

N, FLIPPED, FOLDS = 1200, 120, 3  # 10% of the labels flipped
TRAIN_ARGS = ["--model", "convnet", "--img-size", 28, "--epochs", 10, "--batch-size", 32, "--lr", 3e-3,
              "--augment", "none", "--warmup-epochs", 0, "--mix-prob", 0, "--label-smoothing", 0,
              "--workers", 0, "--device-data", "--quiet"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def make_folder(root, mnist_root):
    """N MNIST training digits as `d<k>_label<d>.png`, FLIPPED of them labelled with another
    digit; then one val image overwritten with a training image of the same class (leakage).
    Returns (names of the flipped files, (train copy, val copy))."""
    images, labels = D.load_mnist(str(mnist_root), train=True, download=False)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(labels), N, replace=False)
    flip = set(rng.choice(N, FLIPPED, replace=False).tolist())
    flipped = set()
    for k, i in enumerate(pick.tolist()):
        label = int(labels[i])
        if k in flip:
            label = int((label + 1 + rng.integers(9)) % 10)
            flipped.add(f"d{k:04d}_label{label}.png")
        Image.fromarray(images[i, 0].numpy()).save(root / f"d{k:04d}_label{label}.png")
    # without --group-split the split depends on names and labels only, so a file's pixels can
    # change afterwards (the group split would keep the copy on its original's side: tested below)
    paths, names = I.scan_folder(str(root))
    train_idx, val_idx = D.stratified_split(torch.tensor([int(n) for n in names]), 0.15, 0)
    clean = lambda idx: [paths[i] for i in idx.tolist() if os.path.basename(paths[i]) not in flipped]  # noqa: E731
    src = clean(train_idx)[0]
    dst = next(p for p in clean(val_idx) if p.endswith(src[-10:]))  # same label: `_label<d>.png`
    shutil.copyfile(src, dst)
    return flipped, (src, dst)


def run_analyze(ckpt, out, *extra):
    argv = [ckpt, "--out", out, "--tsne-samples", 100, "--queries", 4, "--neighbors", 4, *extra]
    A.main(A.get_args_parser().parse_args([str(a) for a in argv]))


def quiet_figures(mp):
    """train.py's per-run figures and report.py's pages are tested elsewhere; skipping them keeps this fast."""
    mp.setattr(report, "plot_inputs", lambda *a, **k: None)
    mp.setattr(report, "plot_history", lambda *a, **k: None)
    mp.setattr(A, "write_pages", lambda *a, **k: None)


@pytest.fixture(scope="module")
def flipped_run(tmp_path_factory, mnist_root):
    """The corrupted folder, a checkpoint trained on it, and analyze.py --folds on it."""
    tmp = tmp_path_factory.mktemp("quality")
    root = tmp / "digits"
    root.mkdir()
    flipped, dup = make_folder(root, mnist_root)
    with pytest.MonkeyPatch.context() as mp:
        quiet_figures(mp)
        train.main(train.get_args_parser().parse_args(
            [str(a) for a in ["--data-dir", root, "--save-dir", tmp / "run", "--no-group-split", *TRAIN_ARGS]]))
        run_analyze(tmp / "run" / "best.pt", tmp / "out", "--folds", FOLDS, "--fold-epochs", 10)
    return {"root": root, "ckpt": tmp / "run" / "best.pt", "out": tmp / "out", "flipped": flipped, "dup": dup}


# ----------------------------------------------------------------------------- the label-issue finder

@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_flipped_labels_rank_first(flipped_run, capsys):
    suspects = [os.path.basename(r["path"]) for r in read_csv(flipped_run["out"] / "suspects.csv")]
    flipped = flipped_run["flipped"]
    recall = {k: len(set(suspects[:k]) & flipped) / len(flipped) for k in (len(flipped), 2 * len(flipped))}
    with capsys.disabled():
        print(f"\nrecall of {len(flipped)} flipped labels among {N} samples: top-{len(flipped)} "
              f"{recall[len(flipped)]:.3f}, top-{2 * len(flipped)} {recall[2 * len(flipped)]:.3f} "
              f"({len(suspects)} suspects; chance {len(flipped) / N:.2f})")
    assert recall[len(flipped)] >= 0.6  # chance: 0.10


def test_confident_learning_uses_per_class_thresholds():
    # thresholds: class 0 (0.9 + 0.8 + 0.3) / 3 = 0.667, class 1 (0.6 + 0.5) / 2 = 0.55
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    suspect, suggested = A.confident_learning(probs, labels)
    # sample 2 is confidently 1 (0.7 >= 0.55) though labelled 0; sample 4 clears no threshold
    assert suspect.tolist() == [False, False, True, False, False]
    assert suggested.tolist() == [0, 0, 1, 1, -1]


# ----------------------------------------------------------------------------- the files

@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_samples_csv(flipped_run):
    rows = read_csv(flipped_run["out"] / "samples.csv")
    assert list(rows[0]) == ["split", "index", "path", "label", "prediction", "loss", "confidence", "margin",
                             "knn_agreement", "out_of_sample", "suggested", "flag"]
    assert len(rows) == N and {r["split"] for r in rows} == {"train", "val"}
    assert all(r["out_of_sample"] == "1" for r in rows)  # --folds: training rows scored out of fold
    for r in rows:
        assert set(r["flag"].split("+")) <= {"ok", "suspect", "mistake", "duplicate"}, r["flag"]
        assert ("suspect" in r["flag"]) == (r["suggested"] != "") and r["suggested"] != r["label"]
        assert ("mistake" in r["flag"]) == (r["prediction"] != r["label"])
        assert 0 <= float(r["confidence"]) <= 1 and 0 <= float(r["knn_agreement"]) <= 1
        assert r["path"].startswith(str(flipped_run["root"]))
    suspects = read_csv(flipped_run["out"] / "suspects.csv")
    assert len(suspects) == sum("suspect" in r["flag"] for r in rows)
    assert [float(s["margin"]) for s in suspects] == sorted(float(s["margin"]) for s in suspects)


@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_suspects_csv_is_a_sample_weights_file(flipped_run, tmp_path, capsys):
    rows = read_csv(flipped_run["out"] / "suspects.csv")
    assert list(rows[0])[:2] == ["path", "weight"] and {r["weight"] for r in rows} == {"1"}
    drop = {r["path"] for r in rows[:30] if r["split"] == "train"}
    edited = tmp_path / "weights.csv"
    with open(flipped_run["out"] / "suspects.csv") as f, open(edited, "w") as g:
        for line in f:  # what a user does: set the weight of the samples to drop to 0
            path, weight, rest = line.split(",", 2)
            g.write(",".join([path, "0" if path in drop else weight, rest]))
    cfg = dict(torch.load(flipped_run["ckpt"], weights_only=True)["data"], sample_weights=str(edited))
    capsys.readouterr()
    data = D.build_datasets(cfg)
    assert capsys.readouterr().err == ""  # every row named a sample
    weights = {data.train.path(i): data.train[i][3] for i in range(len(data.train))}
    assert {p for p, w in weights.items() if w == 0} == drop and set(weights.values()) == {0.0, 1.0}


@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_leakage_pair_found(flipped_run):
    src, dst = flipped_run["dup"]
    pairs = read_csv(flipped_run["out"] / "duplicates.csv")
    hit = [p for p in pairs if {p["path_a"], p["path_b"]} == {src, dst}]
    assert len(hit) == 1 and hit[0]["cross_split"] == "1" and float(hit[0]["similarity"]) > 0.999
    assert {hit[0]["split_a"], hit[0]["split_b"]} == {"train", "val"}
    flags = {r["path"]: r["flag"] for r in read_csv(flipped_run["out"] / "samples.csv")}
    assert "duplicate" in flags[src] and "duplicate" in flags[dst]


@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_mistakes_on_disk(flipped_run):
    rows = read_csv(flipped_run["out"] / "samples.csv")
    wrong = {(r["label"], f"val_{r['index']}_pred-{r['prediction']}") for r in rows
             if r["split"] == "val" and r["prediction"] != r["label"]}
    files = sorted((flipped_run["out"] / "mistakes").rglob("*.png"))
    assert wrong and {(f.parent.name, f.name.rsplit("_", 1)[0]) for f in files} == wrong and len(files) == len(wrong)
    with Image.open(files[0]) as im:
        assert im.format == "PNG" and min(im.size) >= 112


@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_rerun_reuses_the_fold_runs(flipped_run, tmp_path, monkeypatch, capsys):
    def boom(args):
        raise AssertionError(f"trained {args.save_dir} again")
    quiet_figures(monkeypatch)
    monkeypatch.setattr(train, "main", boom)
    shutil.copytree(flipped_run["out"] / "folds", tmp_path / "folds")
    run_analyze(flipped_run["ckpt"], tmp_path, "--folds", FOLDS, "--fold-epochs", 10)
    out = capsys.readouterr().out
    assert out.count("finished before, skipped") == FOLDS
    assert "suspected label errors: train" in out and "across splits (leakage)" in out
    assert (tmp_path / "suspects.csv").read_text() == (flipped_run["out"] / "suspects.csv").read_text()


@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_without_folds_only_val_is_reviewed(flipped_run, tmp_path):
    model, _, data = E.load_run(str(flipped_run["ckpt"]), "cpu")
    splits = E.eval_splits(data)
    table = A.sample_table(model, splits, torch.device("cpu"))
    train_rows = torch.from_numpy(table["split"] == "train")
    assert not table["out_of_sample"][train_rows].any() and table["out_of_sample"][~train_rows].all()
    assert not table["suspect"][train_rows].any() and table["suspect"][~train_rows].any()
    assert table["probs"].shape == (N, 10) and len(table["features"]) == len(table["path"]) == N
    assert (table["index"][train_rows] == torch.arange(len(splits["train"]))).all()
    # --max-mistakes: the most confident ones
    assert A.save_mistakes(table, splits, data.classes, tmp_path / "m", limit=3) == 3
    wrong = ~train_rows & (table["pred"] != table["label"])
    top = table["probs"][wrong].max(1).values.sort(descending=True).values[:3]
    saved = sorted(float(f.stem.rsplit("_", 1)[1]) for f in (tmp_path / "m").rglob("*.png"))
    assert saved == sorted(round(float(c), 2) for c in top)


@pytest.mark.slow  # analyze.py as a subprocess; fixture flipped_run: 3 fold runs + analyze.py, ~35 s
def test_bad_option_is_one_line(flipped_run):
    proc = run_script("analyze.py", flipped_run["ckpt"], "--folds", 1)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: --folds must be 0 (off) or >= 2, got 1"


# ----------------------------------------------------------------------------- data.py: cross-validation folds


