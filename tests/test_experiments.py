"""experiments.py: learning curve, ablation and grid on tiny budgets (the tests' MNIST subset
and a fabricated 10-class photo folder); skipping of finished runs, resuming of interrupted ones."""
import json
import re
import types

import matplotlib.colors
import numpy as np
import pytest
import torch

import cli
import data as D
import evaluate as E
import experiments
import train
from helpers import (MNIST_ROOT, have_mnist, interrupt_at_epoch, needs_mnist, no_figures, photo_folder, read_csv,
                     saved_figures)

HAVE_MNIST = have_mnist()
MNIST_ARGS = ["--dataset", "mnist", "--mnist-root", MNIST_ROOT, "--no-download", "--model", "convnet",
              "--epochs", 1, "--batch-size", 64, "--val-fraction", 0.02, "--quiet", "--warmup-epochs", 0,
              "--augment", "none", "--workers", 0]


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    """train.py's per-run figures are tested in test_train; skipping them keeps this file fast."""
    no_figures(monkeypatch)


def run(*argv):
    return experiments.main(experiments.parse_args([str(a) for a in argv]))


def outputs_exist(out, stem):
    for ext in ("md", "csv"):
        assert (out / f"{stem}.{ext}").stat().st_size > 0
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return (out / f"{stem}.md").read_text(), read_csv(out / f"{stem}.csv")


def forbid_training(mp):
    def boom(args):
        raise AssertionError(f"train.main called for {args.save_dir}")
    mp.setattr(train, "main", boom)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """Class folders '0'..'9' with 4 tiny random JPEGs each (`<class>/<i>.jpg`)."""
    return photo_folder(tmp_path_factory.mktemp("digits"), [str(c) for c in range(10)], 4, stem="{i}", ext="jpg",
                        size=24)


def folder_args(root, *extra):
    return ["--data-dir", root, "--model", "convnet", "--img-size", 32, "--epochs", 1, "--batch-size", 16,
            "--quiet", "--warmup-epochs", 0, "--workers", 0, *extra]


# ----------------------------------------------------------------------------- learning curve (MNIST)

@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    if not HAVE_MNIST:
        pytest.skip(f"MNIST not in {MNIST_ROOT}")
    out = tmp_path_factory.mktemp("lc")
    with pytest.MonkeyPatch.context() as mp:
        no_figures(mp)
        run("learning-curve", "--fractions", "0.02,1/100", "--out", out, *MNIST_ARGS)
    return out


@needs_mnist
def test_learning_curve_outputs(curve):
    md, rows = outputs_exist(curve, "learning_curve")
    assert [float(r["fraction"]) for r in rows] == [0.02, 0.01]
    assert "`python experiments.py learning-curve --fractions 0.02,1/100" in md and "seeds: 1" in md
    assert "| 0.02 | " in md and "| 0.01 | " in md and "test acc" in md and " ± " not in md
    for f in ("0.02", "0.01"):
        run_dir = curve / f"frac{f}" / "seed0"
        assert {"best.pt", "last.pt", "history.csv", "result.json"} <= {p.name for p in run_dir.iterdir()}


@needs_mnist
def test_learning_curve_x_is_the_number_of_training_examples(curve):
    labels = D.load_mnist(str(MNIST_ROOT), train=True, download=False)[1]
    train_idx, _ = D.stratified_split(labels, 0.02, 0)
    rows = read_csv(curve / "learning_curve.csv")
    for r in rows:
        expected = len(D.stratified_subset(train_idx, labels, float(r["fraction"]), 0))
        assert int(r["n_train"]) == expected
        assert f"| {expected} |" in (curve / "learning_curve.md").read_text()
    assert int(rows[0]["n_train"]) > int(rows[1]["n_train"])


@needs_mnist
def test_second_invocation_skips_finished_runs(curve, monkeypatch, capsys):
    before = (curve / "learning_curve.csv").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in curve.rglob("*.pt")}
    forbid_training(monkeypatch)
    run("learning-curve", "--fractions", "0.02,1/100", "--out", curve, *MNIST_ARGS)
    assert capsys.readouterr().out.count("finished before, skipped") == 2
    assert (curve / "learning_curve.csv").read_text() == before
    assert mtimes == {p: p.stat().st_mtime_ns for p in curve.rglob("*.pt")}


# ----------------------------------------------------------------------------- resume (photo folder)

def test_interrupted_run_is_resumed(digit_folder, tmp_path, monkeypatch, capsys):
    argv = ["learning-curve", "--fractions", "1", "--out", tmp_path,
            *folder_args(digit_folder, "--epochs", 2, "--augment", "none")]
    with monkeypatch.context() as mp:
        mp.setattr(train, "train_one_epoch", interrupt_at_epoch(2))
        with pytest.raises(KeyboardInterrupt):
            run(*argv)
    run_dir = tmp_path / "frac1" / "seed0"
    assert (run_dir / "last.pt").is_file() and not (run_dir / "result.json").exists()
    capsys.readouterr()
    rows = run(*argv)
    out = capsys.readouterr().out
    assert "frac1 seed 0: resuming" in out and "resumed from" in out and "at epoch 2" in out
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 2
    assert [int(r["epoch"]) for r in read_csv(run_dir / "history.csv")] == [1, 2]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["results"]["val"]["acc"] == rows[0]["val_acc"]
    assert rows[0]["n_train"] == 30 and rows[0]["test_acc"] is None  # a folder has no test split: val


# ----------------------------------------------------------------------------- grid, seeds

@pytest.mark.slow  # trains a 2-cell grid x 2 seeds, over 1 s
def test_grid_marks_best_cell_and_reports_mean_std(digit_folder, tmp_path):
    run("grid", "--grid", "lr=1e-3,3e-2", "--grid", "batch-size=16", "--seeds", 2, "--out", tmp_path,
        *folder_args(digit_folder, "--augment", "none"))
    md, rows = outputs_exist(tmp_path, "grid")
    assert [(r["lr"], r["batch_size"]) for r in rows] == [("1e-3", "16"), ("3e-2", "16")]
    assert all(r["seeds"] == "2" for r in rows)
    best = [r for r in rows if r["best"] == "1"]
    assert len(best) == 1 and float(best[0]["val_acc"]) == max(float(r["val_acc"]) for r in rows)
    assert md.count("(best)") == 1 and "seeds: 2" in md and "| lr \\ batch_size | 16 |" in md
    best_line = next(line for line in md.splitlines() if "(best)" in line)
    assert best_line.startswith(f"| {best[0]['lr']} |") and " ± " in best_line
    for r in rows:
        for seed in (0, 1):
            assert (tmp_path / f"lr={r['lr']}_batch_size=16" / f"seed{seed}" / "result.json").is_file()
        accs = [json.loads((tmp_path / f"lr={r['lr']}_batch_size=16" / f"seed{s}" / "result.json").read_text())
                ["results"]["val"]["acc"] for s in (0, 1)]
        assert float(r["val_acc"]) == pytest.approx(np.mean(accs))
        assert float(r["val_acc_std"]) == pytest.approx(np.std(accs, ddof=1))
        assert f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f}" in md
    # the seeds' ensemble beside the mean single model, recomputed here from the two best.pt
    ens_md = (tmp_path / "grid_ensemble.md").read_text()
    for r in rows:
        cell = f"lr={r['lr']}_batch_size=16"
        paths = [str(tmp_path / cell / f"seed{k}" / "best.pt") for k in (0, 1)]
        probs, labels = [], None
        for p in paths:
            model, _, data = E.load_run(p, torch.device("cpu"))
            out = E.collect(model, data.val, torch.device("cpu"))
            probs.append(out["probs"])
            labels = out["labels"]
        acc = ((probs[0] + probs[1]).argmax(1) == labels).float().mean().item()
        line = next(line for line in ens_md.splitlines() if line.startswith(f"| {cell} |"))
        assert line.endswith(f"| **{100 * acc:.2f}** |") and "| val | 2 |" in line


def test_grid_figure_text_reads_on_every_cell(tmp_path, monkeypatch):
    """Each cell's number contrasts with its colour (white on viridis' bright yellow, the best cell, did not)."""
    figures = saved_figures(monkeypatch)
    accs = {"1e-3": 0.90, "3e-2": 0.97, "1e-1": 0.93}
    monkeypatch.setattr(experiments, "run_cell", lambda args, name, overrides: [
        {"results": {s: {"acc": accs[overrides[1]], "total": 10} for s in ("train", "val")}}])
    args = types.SimpleNamespace(grid=[("lr", list(accs)), ("batch_size", ["16"])], seeds=1)
    experiments.grid(args, None)[3](str(tmp_path / "grid.png"))
    ax = figures["grid.png"].axes[0]
    im = ax.images[0]
    luma = lambda c: np.dot(matplotlib.colors.to_rgb(c), [0.2126, 0.7152, 0.0722])  # noqa: E731
    for text in ax.texts:
        x, y = (round(v) for v in text.get_position())
        cell = im.cmap(im.norm(im.get_array()[y, x]))
        assert abs(luma(cell) - luma(text.get_color())) > 0.4, text.get_text()


def test_grid_rejects_unknown_option_before_training(tmp_path, monkeypatch, digit_folder):
    forbid_training(monkeypatch)
    with pytest.raises(cli.UsageError, match="no option --no-such-option"):
        run("grid", "--grid", "lr=1e-3", "--grid", "no_such_option=1", "--out", tmp_path, *folder_args(digit_folder))


# ----------------------------------------------------------------------------- ablation

@pytest.mark.slow  # trains 4 ablation cells, ~2 s
@needs_mnist
def test_ablation_on_folder_with_synthetic_data(digit_folder, tmp_path):
    run("ablation", "--synthetic-on", 20, "--out", tmp_path, *folder_args(digit_folder, "--mnist-root", MNIST_ROOT,
                                                                          "--no-download"))
    md, rows = outputs_exist(tmp_path, "ablation")
    assert [(r["augment"], r["synthetic_n"]) for r in rows] == [("none", "0"), ("none", "20"),
                                                                ("strong", "0"), ("strong", "20")]
    assert "| augment | val acc (synthetic 0) | train acc (synthetic 0) | val acc (synthetic 20) |" in md
    table = [line for line in md.splitlines() if line.startswith("| none") or line.startswith("| strong")]
    assert len(table) == 2 and all(line.count("|") == 6 for line in table)
    for r in rows:
        run_dir = tmp_path / f"aug-{r['augment']}_syn-{r['synthetic_n']}" / "seed0"
        cfg = torch.load(run_dir / "last.pt", weights_only=True)
        assert (cfg["args"]["augment"], cfg["data"]["synthetic_n"]) == (r["augment"], int(r["synthetic_n"]))


def test_ablation_on_mnist_is_the_augmentation_axis_only(tmp_path, monkeypatch):
    seen = []

    def fake_main(args):
        seen.append((args.augment, args.synthetic_n, args.seed))
        acc = {"none": 0.9, "light": 0.95}[args.augment]
        return {s: {"loss": 0.1, "correct": 1, "total": 10, "acc": acc + 0.01 * args.seed} for s in ("train", "val", "test")}

    monkeypatch.setattr(train, "main", fake_main)
    rows = run("ablation", "--seeds", 2, "--out", tmp_path, "--dataset", "mnist", "--mnist-root", "x")
    assert seen == [("none", 0, 0), ("none", 0, 1), ("light", 0, 0), ("light", 0, 1)]
    assert [(r["augment"], r["synthetic_n"]) for r in rows] == [("none", 0), ("light", 0)]
    md = (tmp_path / "ablation.md").read_text()
    assert "| light | 95.50 ± 0.71 | 95.50 ± 0.71 |" in md and "synthetic 9000" not in md


# ----------------------------------------------------------------------------- synth-to-real

def test_synth_to_real_cells_train_on_synthetic_only(digit_folder, tmp_path, monkeypatch):
    seen = []

    def fake_main(args):  # records each cell's data options; the accuracy names the cell
        seen.append((args.synthetic_source, args.backgrounds, args.synthetic_n, args.synthetic_ratio))
        acc = 0.5 if args.synthetic_n == 0 else {"fonts": 0.2, "both": 0.3}[args.synthetic_source] + (
            0.01 if args.backgrounds == "field" else 0.0)
        return {"train": {"acc": 0.9, "total": 40}, "val": {"acc": acc, "total": 20}}

    monkeypatch.setattr(train, "main", fake_main)
    rows = run("synth-to-real", "--sources", "fonts,both", "--backgrounds-list", "field,photo-crops",
               "--synthetic-on", 30, "--out", tmp_path, *folder_args(digit_folder))
    assert seen == [("fonts", "field", 30, 1.0), ("fonts", "photo-crops", 30, 1.0), ("both", "field", 30, 1.0),
                    ("both", "photo-crops", 30, 1.0), ("fonts", "field", 0, 0.5)]  # last: the real-photo reference (defaults)
    md, _ = outputs_exist(tmp_path, "synth_to_real")
    assert "| source \\ backgrounds | field | photo-crops |" in md
    assert "| fonts | 21.00 | 20.00 |" in md and "| both | 31.00 | 30.00 |" in md
    assert "40 real training photos: 50.00" in md and len(rows) == 5
    with pytest.raises(SystemExit):
        run("synth-to-real", "--sources", "fonts,handwriting", "--out", tmp_path, *folder_args(digit_folder))


# ----------------------------------------------------------------------------- clean: the data loop

def test_proposals_relabel_the_sure_exclude_the_unsure_and_merge_over_earlier_rounds(tmp_path):
    import corrections as C
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    suspect, suggested = torch.tensor([True, True, False, True]), torch.tensor([0, 2, -1, 0])
    got = C.propose(["/a", "/b", "/c", "/d"], None, probs, suspect, suggested, ["x", "y", "z"], relabel_above=0.5)
    assert got == {"/a": ("x", None), "/b": (None, 0.0), "/d": (None, 0.0)}  # /d: p(x) = 0.2 < 0.5
    earlier = {"/a": ("z", None), "/b": ("y", 2.0), "/e": ("y", None)}
    both = C.merged(earlier, got)
    assert both == {"/a": ("x", None), "/b": ("y", 0.0), "/d": (None, 0.0), "/e": ("y", None)}
    C.write_table(tmp_path / "r.csv", both, "round 1")
    assert (tmp_path / "r.csv").read_text().splitlines()[:2] == ["#! round 1", "path,label,weight"]
    assert C.read_table(tmp_path / "r.csv") == both
    (tmp_path / "sub").mkdir()  # a user's file with relative paths: the same images from any folder
    (tmp_path / "sub" / "mine.csv").write_text("path,label,weight\nx/a.jpg,3,\n#7,,0\n")
    assert C.read_table(tmp_path / "sub" / "mine.csv") == {str(tmp_path / "sub" / "x" / "a.jpg"): ("3", None),
                                                          "#7": (None, 0.0)}


def test_label_damage_counts_planted_flips_left_and_correct_labels_lost():
    truth = {"true": {"/a": "1", "/b": "2", "/c": "3", "/d": "4"}, "flipped": ["/a", "/b"]}
    table = {"/a": ("7", None),   # a flip left wrong
             "/b": ("2", None),   # a flip fixed
             "/c": (None, 0.0),   # a correct label excluded: lost
             "/d": ("5", None)}   # a correct label relabelled wrong: lost
    assert experiments.label_damage(table, truth) == (1, 2)
    assert experiments.label_damage({"/a": (None, 0.0)}, truth) == (0, 0)  # an excluded flip is not left wrong


@pytest.mark.parametrize("argv,text", [(["--rounds", 0], "--rounds must be >= 1"), (["--folds", 1], "--folds must be >= 2"),
                                       (["--flip", 1], "--flip must be in [0, 1)"),
                                       (["--relabel-above", 0], "--relabel-above must be in (0, 1]"),
                                       (["--flip", 0.1, "--corrections", "x.csv"], "give no --corrections")])
def test_clean_refuses_bad_options_before_training(argv, text, monkeypatch, tmp_path):
    forbid_training(monkeypatch)
    (tmp_path / "x.csv").write_text("path,label,weight\n")
    with pytest.raises(cli.UsageError, match=re.escape(text)):
        run("clean", *MNIST_ARGS, "--out", tmp_path / "c", *[tmp_path / a if a == "x.csv" else a for a in argv])


@needs_mnist
@pytest.mark.slow  # 5 tiny MNIST runs (clean, round 0, 2 folds, round 1) and a rerun, ~60 s
def test_clean_plants_flips_reviews_corrects_and_retrains(tmp_path, capsys):
    import corrections as C
    out = tmp_path / "loop"
    argv = ["clean", *MNIST_ARGS, "--model", "net", "--epochs", 5, "--val-fraction", 0.1, "--flip", 0.1,
            "--rounds", 1, "--folds", 2, "--out", out]
    run(*argv, "--propose-only")  # stops with round1.csv written, for the user to review
    seed = out / "seed0"
    assert (seed / "round1.csv").is_file() and not (seed / "round1").exists()
    rows = run(*argv)  # goes on: the finished runs are reused, round 1 trains
    flips = json.loads((seed / "flips.json").read_text())
    planted = C.read_table(seed / "flips.csv")
    assert sorted(planted) == flips["flipped"] and len(planted) == round(0.1 * len(flips["true"]))
    assert all(flips["true"][p] != label for p, (label, _) in planted.items())
    noisy = torch.load(seed / "round0" / "best.pt", weights_only=True)
    val = set(D.build_datasets(noisy["data"], augment="none", check=False).val.indices.tolist())
    assert not val & {int(p[1:]) for p in planted}  # "#i": no val image flipped
    assert noisy["data"]["corrections_summary"]["relabelled"] == len(planted)
    fold_run = json.loads((seed / "round0" / "folds" / "fold0" / "result.json").read_text())["settings"]
    assert fold_run["epochs"] == 10 and fold_run["folds"] == 2  # --fold-epochs' default: twice the run's 5
    # round 1 trained with round1.csv: the flips, overwritten where the review proposed a change
    fixed = C.read_table(seed / "round1.csv")
    assert fixed == C.read_table(seed / "round1-proposed.csv") and set(planted) <= set(fixed)
    ckpt = torch.load(seed / "round1" / "best.pt", weights_only=True)
    assert ckpt["data"]["corrections_sha256"] == C.file_hash(seed / "round1.csv")
    # the table's damage count, recomputed from the data round 1 trained on
    data = E.run_data(ckpt)
    ds = E.eval_splits(data)["train"]
    wrong = [ds.path(i) for i, c in enumerate(ds.targets.tolist()) if data.classes[c] != flips["true"][ds.path(i)]]
    row = rows[0]
    assert row["r1_wrong_left"] == len(set(wrong) & set(planted))
    assert row["r1_relabelled"] + row["r1_excluded"] == row["r1_flagged"]
    preds = {}
    for stage, folder in (("clean", "clean"), ("r0", "round0"), ("r1", "round1")):
        stored = json.loads((seed / folder / "result.json").read_text())
        assert row[f"{stage}_val_acc"] == stored["results"]["val"]["acc"]
        model, _, d = E.load_run(str(seed / folder / "best.pt"), torch.device("cpu"))
        preds[stage] = E.collect(model, d.val, torch.device("cpu"))["preds"]
    md = (out / "clean.md").read_text()
    for stage, name in (("clean", "clean labels"), ("r1", "round 1")):  # each against round 0, paired
        p = E.paired_numbers(preds["r0"], preds[stage], d.val.targets)
        assert (row[f"{stage}_only_r0"], row[f"{stage}_only"], row[f"{stage}_mcnemar_p"]) == (p["only_a"], p["only_b"],
                                                                                            p["mcnemar_p"])
        assert f"| 0 | {name} | {p['only_a']} | {p['only_b']} | {p['mcnemar_p']:.3g} |" in md
    assert f"| 0 | {100 * row['clean_val_acc']:.2f} | {100 * row['r0_val_acc']:.2f} | {100 * row['r1_val_acc']:.2f} |" in md
    # the same command again trains nothing; an edited round1.csv is kept, and its run refused
    capsys.readouterr()
    assert run(*argv) == rows and "finished before, skipped" in capsys.readouterr().out
    (seed / "round1.csv").write_text("path,label,weight\n")
    with pytest.raises(cli.UsageError, match="round1 holds seed 0 round 1 run with other settings"):
        run(*argv)
    assert (seed / "round1.csv").read_text() == "path,label,weight\n"  # the user's edit is never overwritten


@needs_mnist
@pytest.mark.slow  # 4 one-epoch MNIST runs, ~20 s
def test_clean_stops_at_a_review_below_the_floor(tmp_path, capsys):
    rows = run("clean", *MNIST_ARGS, "--model", "net", "--flip", 0.2, "--rounds", 2, "--folds", 2, "--out", tmp_path)
    assert "below the floor: no corrections proposed, the loop stops here" in capsys.readouterr().err
    assert not rows[0]["r1_shown"] and rows[0]["r1_val_acc"] is None and rows[0]["r2_flagged"] is None
    assert not list((tmp_path / "seed0").glob("round1*"))  # nothing proposed, nothing trained
    assert "below the floor: withheld" in (tmp_path / "clean.md").read_text()


def test_clean_tables_mean_over_the_seeds_that_reached_each_round(monkeypatch):
    """The mean row's gap closed uses, for every term, the seeds that reached the round (a seed the
    floor stopped would otherwise pull the noisy mean into a gap it took no part in)."""
    def row(seed, clean, noisy, r1):
        r = {"seed": seed, "clean_val_acc": clean, "r0_val_acc": noisy, "r1_val_acc": r1, "flipped": 10}
        r.update({f"r1_{m}": None if r1 is None else v for m, v in (
            ("flagged", 4), ("relabelled", 3), ("excluded", 1), ("reviewer_acc", 0.7), ("skill", 0.65), ("precision", 0.75),
            ("recall", 0.3), ("wrong_left", 7), ("clean_lost", 1))})
        r["r1_shown"] = r1 is not None
        return r
    rows = [row(0, 0.90, 0.80, 0.85), row(1, 0.70, 0.50, None)]
    monkeypatch.setattr(experiments, "clean_seed", lambda args, base, seed: rows[seed])
    args = types.SimpleNamespace(planning=False, seeds=2, rounds=1, flip=0.2)
    _, table, got, _ = experiments.clean(args, None)
    text = "\n".join(table)
    assert got == rows
    assert "| 0 | 90.00 | 80.00 | 85.00 | 50% |" in text and "| 1 | 70.00 | 50.00 | - | - |" in text
    # the mean: noisy 65 over both seeds, but round 1's gap from seed 0 alone: (85 - 80) / (90 - 80)
    assert "| mean | 80.00 ± 14.14 | 65.00 ± 21.21 | 85.00 | 50% (1 seed) |" in text


@pytest.mark.parametrize("experiment", ["clean", "grid"])
def test_out_inside_the_data_folder_is_refused_before_anything_is_written(experiment, digit_folder, monkeypatch):
    forbid_training(monkeypatch)
    before = sorted(p for p in digit_folder.rglob("*"))
    with pytest.raises(cli.UsageError, match="is inside --data-dir"):
        run(experiment, *folder_args(digit_folder), "--out", digit_folder / "sweep")
    assert sorted(p for p in digit_folder.rglob("*")) == before


def test_clean_pairs_rounds_on_the_labels_compare_would_score(monkeypatch):
    """A round whose corrections (an edited round<r>.csv) give val other labels than round 0's is paired
    with it on the folder's original labels, as evaluate.py --compare does, not on round 0's."""
    original, fixed = torch.tensor([0, 1, 1, 0]), torch.tensor([1, 1, 1, 0])
    views = {"round0": (fixed, original, torch.tensor([1, 1, 1, 0])),  # round 0's --corrections relabel val photo 0
             "round1": (original, None, torch.tensor([0, 1, 1, 0]))}   # the edit for round 1 undid it
    val = lambda f: types.SimpleNamespace(targets=views[f][0], original_targets=views[f][1])  # noqa: E731
    monkeypatch.setattr(E, "load_run", lambda path, device: (path.split("/")[-2], None,
                                                             types.SimpleNamespace(val=val(path.split("/")[-2]))))
    monkeypatch.setattr(E, "collect", lambda folder, ds, device: {"preds": views[folder][2]})
    out = experiments.paired_with_round0("seed0", ["r1"], {"r0_val_acc": 1.0, "r1_val_acc": 1.0}, None)
    want = E.paired_numbers(views["round0"][2], views["round1"][2], original)
    assert (out["r1_only_r0"], out["r1_only"], out["r1_mcnemar_p"]) == (want["only_a"], want["only_b"], want["mcnemar_p"])
    assert (out["r1_only_r0"], out["r1_only"]) == (0, 1)  # on round 0's labels it would read (1, 0)
