"""analyze.py: its figures, Grad-CAM, the dashboard's points, and the data-quality outputs on a photo
folder of MNIST digits whose labels are corrupted on purpose (conftest's flipped_run): the
label-issue finder (out-of-fold confident learning) must rank the flipped samples first;
samples.csv, suspects.csv (a --sample-weights file), duplicates.csv and mistakes/ are checked on
the same run. Its command line as a subprocess: a user error is one `error:` line."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import analyze
import analyze as A
import data as D
import evaluate as E
import model as M
import report
import train
from helpers import (DRAWN, assert_one_line_error, assert_png, data_config, no_figures, page_data, photo_folder,
                     read_csv, run_analyze, run_script, saved_figures, title_text)


# ----------------------------------------------------------------------------- its figures, Grad-CAM

@pytest.mark.slow  # analyze.py: t-SNE, neighbours and figures, ~11 s
def test_analyze(tiny_run, tmp_path, capsys):
    d, _, _ = tiny_run("--eval-test")
    A.main(A.get_args_parser().parse_args([str(d / "best.pt"), "--out", str(tmp_path), "--tsne-samples", "300",
                                        "--queries", "4", "--neighbors", "4", "--max-mistakes", "20",
                                        "--dashboard-points", "200"]))
    for f in ("kernels.png", "tsne.png", "neighbors.png"):
        assert_png(tmp_path / f)
    assert "wrote" in capsys.readouterr().out


def test_kernels_share_one_scale_centred_on_grey_strongest_first():
    w = torch.zeros(3, 1, 3, 3)
    w[0, 0, 0, 0], w[1, 0, 1, 1], w[1, 0, 2, 2] = 0.01, 1.0, -1.0  # a weak, a strong and a dead kernel
    tiles, scale = A.kernel_images(w)
    assert scale == 1.0
    assert tiles[0][1, 1] == 1.0 and tiles[0][2, 2] == 0.0  # the strong one first, spanning black to white
    assert tiles[1].max() == pytest.approx(0.505) and tiles[1].min() == 0.5  # the weak one stays near grey
    assert (tiles[2] == 0.5).all()  # zero is mid-grey, not stretched into a pattern


@pytest.mark.parametrize("name, size, stage, side", [
    ("resnet18", 64, "backbone.layer2", 8),    # layer4 would be 2x2, layer3 4x4
    ("resnet18", 224, "backbone.layer4", 7),  # big enough: the last stage, as usual
    ("net", 28, "features.6", 7),              # the last conv stage, before its pooling
    ("convnet", 16, "features.5", 5)])         # 16 px: 3 px cells of the second conv, not the first conv's 14x14
def test_grad_cam_reads_a_fine_enough_map(name, size, stage, side):
    model = M.build_model(name, 10, 3, img_size=size)
    found, (h, w) = A.cam_stage(model, (3, size, size))
    assert found.startswith(stage) and h == w == side
    cams, logits = A.grad_cam(model, torch.randn(2, 3, size, size))
    assert cams.shape == (2, size, size) and logits.shape == (2, 10)


def test_figures_say_their_stage_and_colour_right_and_wrong_blind_safely(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    folder = photo_folder(tmp_path / "photos", [str(d) for d in range(4)], 6, layout="flat", **DRAWN)
    data = D.build_datasets(data_config("--data-dir", folder, "--img-size", 64))
    torch.manual_seed(0)
    model = M.build_model("resnet18", 4, 3, img_size=64)
    out = E.collect(model, data.val, torch.device("cpu"))
    out["preds"][:2] = (out["labels"][:2] + 1) % 4  # a mistake and a right answer at least
    out["preds"][2:4] = out["labels"][2:4]
    A.plot_gradcam(model, data.val, out, data.classes, torch.device("cpu"), str(tmp_path / "gradcam.png"), n=2,
                   title="val split")
    fig = figures["gradcam.png"]
    assert "8x8" in title_text(fig) and "layer2" in title_text(fig) and "val split" in title_text(fig)
    colours = {ax.title.get_color() for ax in fig.axes[:2]}, {ax.title.get_color() for ax in fig.axes[2:]}
    assert colours == ({report.WRONG}, {report.CORRECT})  # row 1 mistakes, row 2 right answers
    pool = torch.arange(len(data.train))
    labels = torch.tensor([int(data.train.targets[i]) for i in pool])
    nn_idx = torch.stack([pool[:3]] * 2)
    A.plot_neighbors(data.val, [0, 1], out["labels"][:2].tolist(), data.train, nn_idx, labels.tolist(), data.classes,
                     str(tmp_path / "neighbors.png"))
    fig = figures["neighbors.png"]
    for r in range(2):
        for c in range(3):
            same = labels[c] == out["labels"][r]
            assert fig.axes[4 * r + c + 1].title.get_color() == (report.CORRECT if same else report.WRONG)


def test_tsne_marks_the_mistakes(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    labels = np.arange(20) % 4
    preds = labels.copy()
    preds[[1, 5, 9]] = 0
    xy = np.random.default_rng(0).normal(size=(20, 2))
    A.plot_tsne(xy, labels, preds, list("abcd"), str(tmp_path / "t.png"), "t")
    ax = figures["t.png"].axes[0]
    crosses = [c for c in ax.collections if len(c.get_offsets()) and (c.get_edgecolor()[:, :3] == 0).all()]
    assert sum(len(c.get_offsets()) for c in crosses) == 3
    assert "misclassified (3)" in [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.mark.slow  # trains net on 3,000 synthetic composites, ~40 s
def test_grad_cam_lands_on_the_digit_of_synthetic_composites(mnist_root):
    """A `net` trained a little on composites (MNIST digits pasted with their own alpha, in a random
    colour, at a random place, on textured colour backgrounds): its Grad-CAM correlates with each
    image's digit region, known exactly because the test pastes the digit itself."""
    import analyze
    g = torch.Generator().manual_seed(0)
    digits, digit_labels = D.load_mnist(str(mnist_root), train=True, download=False)
    size, n_train, n_test = 32, 3000, 400
    n = n_train + n_test
    pick = torch.randint(0, len(digits), (n,), generator=g)
    y = digit_labels[pick]
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=size, mode="bilinear")
    bg = smooth * 200 + torch.rand(n, 3, size, size, generator=g) * 55
    alpha = torch.nn.functional.interpolate(digits[pick].float() / 255, size=20, mode="bilinear")  # [n, 1, 20, 20]
    canvas = torch.zeros(n, 1, size, size)
    canvas[:, :, 6:26, 6:26] = alpha
    # shift every digit (and its region) by up to 6 px, so that where the digit is differs from
    # image to image and the control below is another place
    shifts = torch.randint(-6, 7, (n, 2), generator=g).tolist()
    canvas = torch.stack([c.roll(s, (1, 2)) for c, s in zip(canvas, shifts)])
    colour = torch.rand(n, 3, 1, 1, generator=g) * 255
    x = bg * (1 - canvas) + colour * canvas
    digit = (canvas[n_train:, 0] > 0.5).float()  # [n_test, size, size]: 1 on the pasted digit
    assert 0.05 < digit.mean() < 0.5
    x = (x.float() / 255 - 0.5) / 0.25
    torch.manual_seed(0)
    net = M.build_model("net", 10, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    net.train()
    for epoch in range(5):
        for idx in torch.randperm(n_train, generator=g).split(64):
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    cams, logits = analyze.grad_cam(net, x[n_train:])
    right = logits.argmax(1) == y[n_train:]
    assert right.float().mean() > 0.3 and cams.shape == digit.shape  # chance: 0.1

    def corr(a, b):
        a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    on_digit = corr(cams, digit)[right].mean().item()
    other = corr(cams, digit.roll(1, 0))[right].mean().item()  # another image's digit region: the control
    assert on_digit > 0.2 and on_digit > other + 0.1, (on_digit, other)
    inside = (cams * digit).sum((1, 2)) / digit.sum((1, 2))
    outside = (cams * (1 - digit)).sum((1, 2)) / (1 - digit).sum((1, 2))
    assert (inside > outside)[right].float().mean() > 0.7


# ----------------------------------------------------------------------------- the dashboard's points

def test_balanced_sample():
    keys = torch.tensor([0] * 100 + [1] * 5 + [2] * 50)
    pick = analyze.balanced_sample(keys, 60, seed=1)
    counts = torch.bincount(keys[pick]).tolist()
    assert counts[1] == 5 and sorted(counts) == [5, 27, 28] and len(set(pick.tolist())) == 60
    assert pick.tolist() == sorted(pick.tolist()) and torch.equal(pick, analyze.balanced_sample(keys, 60, seed=1))
    assert len(analyze.balanced_sample(keys, 1000)) == 155


@pytest.mark.slow  # fixture analysed_run: a trained and analysed run, ~17 s
def test_dashboard_points_balanced_over_split_and_class(analysed_run):
    d = page_data((analysed_run / "dashboard.html").read_text())
    assert len(d["label"]) == 80
    groups = {}
    for s, src, lab in zip(d["split"], d["source"], d["label"]):
        groups.setdefault((s, src), []).append(lab)
    assert set(groups) == {("train", 0), ("train", 1), ("val", 0)}
    assert sorted(groups[("val", 0)]) == list(range(10))  # the whole (small) val split: one per class
    real = np.bincount(groups[("train", 0)], minlength=10)  # 5 per class in the split: 4 or 5 drawn
    assert real.max() <= 5 and real.max() - real.min() <= 1


@pytest.mark.slow  # analyze.py on conftest's analysed_run (a trained run, ~17 s) with --unlabeled, ~10 s more
def test_unlabeled_photos_and_signals_on_the_dashboard(analysed_run, tmp_path):
    """analyze.py --unlabeled DIR runs the whole analysis and puts DIR's photos on dashboard.html's map
    (embedded with the others, label -1, source 2) with unlabeled.csv's prediction, confidence and
    margin and their absolute paths; the real images' signals are their samples.csv rows'."""
    new = photo_folder(tmp_path / "new", [str(d) for d in range(10)], 1, layout="plain", stem="n{k}", seed=7,
                       size=(24, 32), content="digit")
    out = tmp_path / "out"
    A.main(A.get_args_parser().parse_args([str(analysed_run / "best.pt"), "--unlabeled", str(new), "--out", str(out),
                                           "--tsne-samples", "50", "--queries", "4", "--dashboard-points", "80",
                                           "--quiet"]))
    d = page_data((out / "dashboard.html").read_text())
    unl = {r["path"]: r for r in read_csv(out / "unlabeled.csv")}
    assert len(unl) == 10 and (out / "samples.csv").is_file() and (out / "kernels.png").is_file()
    u = [i for i, s in enumerate(d["source"]) if s == 2]
    assert len(d["tsne"]) == len(d["pca"]) == 2 * len(d["label"]) and len(d["label"]) == 80 + 10
    assert sorted(d["path"][i] for i in u) == sorted(unl) and all(os.path.isabs(d["path"][i]) for i in u)
    for i in u:
        row = unl[d["path"][i]]
        assert d["label"][i] == -1 and d["split"][i] == "unlabelled" and d["classes"][d["pred"][i]] == row["prediction"]
        assert d["conf"][i] == pytest.approx(float(row["confidence"]), abs=1e-3)
        assert d["margin"][i] == pytest.approx(float(row["margin"]), abs=1e-3)
        assert d["loss"][i] is d["knn"][i] is d["dup_group"][i] is None and d["flag"][i] == row["flag"]
    samples = {(r["split"], os.path.abspath(r["path"])): r for r in read_csv(out / "samples.csv")}
    review = json.loads((out / "review.json").read_text())
    real = [i for i, s in enumerate(d["source"]) if s == 0 and d["path"][i]]
    assert real and {d["split"][i] for i in real} == {"train", "val"}
    for i in real:
        row = samples[(d["split"][i], d["path"][i])]
        assert d["loss"][i] == pytest.approx(float(row["loss"]), abs=1e-3)
        assert d["p_label"][i] == pytest.approx(float(row["confidence"]), abs=1e-3)
        assert d["margin"][i] == pytest.approx(float(row["margin"]), abs=1e-3)
        assert d["knn"][i] == pytest.approx(float(row["knn_agreement"]), abs=6e-3)  # 2 decimals in samples.csv
        want = -1 if d["split"][i] == "train" else int("suspect" in row["flag"]) if review["val"]["shown"] else -2
        assert d["suspect"][i] == want  # train: no --folds, not reviewed; val: its review shown or withheld
    synthetic = [i for i, s in enumerate(d["source"]) if s == 1]
    assert synthetic and all(d["loss"][i] is not None and d["knn"][i] is None for i in synthetic)
    assert [r["split"] for r in d["review"]] == ["train", "val", "unlabelled", "synthetic"]


@pytest.mark.slow  # fixture analysed_run: a trained and analysed run, ~17 s
def test_dashboard_confidences_are_made_as_evaluate_makes_them(analysed_run):
    """analyze.py --tta and a fitted temperature reach the dashboard's hover card, not only metrics.json."""
    import evaluate as E
    model, ckpt, data = E.load_run(str(analysed_run / "best.pt"), torch.device("cpu"))
    val = data.val
    for tta, temperature in ((1, 1.0), (3, 0.5)):
        pts = analyze.dashboard_points(model, data, torch.device("cpu"), max_points=300, tta=tta, temperature=temperature)
        out = E.collect(model, val, torch.device("cpu"), tta=tta, temperature=temperature)
        from_val = pts["conf"][[s == "val" for s in pts["split"]]]
        assert len(from_val) == len(val)  # the small val split is drawn whole, in order
        assert torch.allclose(from_val, out["probs"].max(1).values, atol=1e-6)
    plain = analyze.dashboard_points(model, data, torch.device("cpu"), max_points=300)["conf"]
    assert not torch.allclose(plain, pts["conf"], atol=1e-3)  # TTA and T = 0.5 change the confidences


@pytest.mark.slow  # fixture analysed_run: a trained and analysed run, ~17 s
def test_heat_maps_explain_the_prediction_shown(analysed_run, tmp_path, monkeypatch):
    """With TTA the shown prediction need not be the plain model's argmax: the dashboard's and
    gradcam.png's heat maps are Grad-CAMs of the class shown beside them."""
    import evaluate as E
    model, ckpt, data = E.load_run(str(analysed_run / "best.pt"), torch.device("cpu"))
    asked, grad_cam = [], analyze.grad_cam

    def recording(model, images, target=None):  # keeps the class each heat map explains
        cams, logits = grad_cam(model, images, target)
        asked.append(logits.argmax(1) if target is None else target.clone())
        return cams, logits
    monkeypatch.setattr(analyze, "grad_cam", recording)
    pts = analyze.dashboard_points(model, data, torch.device("cpu"), max_points=300, tta=3)
    assert torch.equal(torch.cat(asked), pts["preds"])
    out = E.collect(model, data.val, torch.device("cpu"))
    out["preds"] = (out["preds"] + 1) % len(data.classes)  # shown predictions that are no argmax
    asked.clear()
    analyze.plot_gradcam(model, data.val, out, data.classes, torch.device("cpu"), str(tmp_path / "g.png"), n=4)
    wrong = torch.nonzero(out["preds"] != out["labels"]).flatten()
    shown = out["preds"][wrong[out["probs"].max(1).values[wrong].argsort(descending=True)][:4]]
    assert torch.equal(asked[0], shown)  # the mistakes row: its heat maps are of the classes in the titles


# ----------------------------------------------------------------------------- the label-issue finder

def test_confident_learning_uses_per_class_thresholds():
    # thresholds: class 0 (0.9 + 0.8 + 0.3) / 3 = 0.667, class 1 (0.6 + 0.5) / 2 = 0.55
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    suspect, suggested = A.confident_learning(probs, labels)
    # sample 2 is confidently 1 (0.7 >= 0.55) though labelled 0; sample 4 clears no threshold
    assert suspect.tolist() == [False, False, True, False, False]
    assert suggested.tolist() == [0, 0, 1, 1, -1]


def fabricated_review(train_reviewer, val_reviewer, folds=3, per_class=30, seed=0):
    """sample_table on 10 classes with 10% of the training labels flipped (no val flips) and
    out-of-sample probabilities made up, no training: a "good" reviewer puts most weight on each
    image's true class, a "weak" one is noise. Returns (table, splits, flipped training rows)."""
    g = torch.Generator().manual_seed(seed)
    true = {"train": torch.arange(10).repeat(per_class), "val": torch.arange(10).repeat(per_class // 3)}
    given = {k: v.clone() for k, v in true.items()}
    flip = torch.randperm(len(true["train"]), generator=g)[:len(true["train"]) // 10]
    given["train"][flip] = (true["train"][flip] + torch.randint(1, 10, (len(flip),), generator=g)) % 10
    splits, outs = {}, {}
    for (name, y), reviewer in zip(given.items(), (train_reviewer, val_reviewer)):
        paths = [f"/photos/{name}{i}_label{int(c)}.png" for i, c in enumerate(y)]
        splits[name] = D.TensorImageDataset(torch.zeros(len(y), 1, 4, 4, dtype=torch.uint8), y, paths=paths)
        logits = torch.randn(len(y), 10, generator=g) + (8.0 * F.one_hot(true[name], 10) if reviewer == "good" else 0)
        outs[name] = {"probs": logits.softmax(1), "labels": y, "features": torch.randn(len(y), 8, generator=g)}
    fold = torch.arange(len(given["train"])) % folds
    table = A.sample_table(None, splits, torch.device("cpu"), outs=outs, oof_probs=outs["train"]["probs"],
                           oof_fold=fold)
    return table, splits, set(flip.tolist())


def test_a_weak_reviewers_suspects_are_withheld(tmp_path, capsys):
    """Fold models that know nothing would flag most labels; the review says how good they are and
    withholds the list (samples.csv, suspects.csv, the warning), while val's good reviewer is shown."""
    table, splits, flipped = fabricated_review("weak", "good")
    train = torch.from_numpy(table["split"] == "train")
    q = table["review"]["train"]
    assert q["flagged"] > train.sum() / 2 and not q["shown"]  # what the list would have been
    assert not table["suspect"][train].any() and (table["suggested"][train] == -1).all()
    assert table["review"]["val"]["shown"] and table["suspect"][~train].any() == (table["review"]["val"]["flagged"] > 0)
    right = (table["pred"] == table["label"])[train].float()
    assert q["accuracy"] == pytest.approx(right.mean().item())
    assert q["per_fold"] == pytest.approx([right[k::3].mean().item() for k in range(3)])

    A.write_quality(table, torch.empty(0, 2, dtype=torch.long), torch.empty(0), [str(c) for c in range(10)], tmp_path)
    assert not [r for r in read_csv(tmp_path / "suspects.csv") if r["split"] == "train"]
    assert not [r for r in read_csv(tmp_path / "samples.csv") if r["split"] == "train" and "suspect" in r["flag"]]
    stored = json.loads((tmp_path / "review.json").read_text())
    assert stored["train"]["shown"] is False and stored["train"]["accuracy"] == pytest.approx(q["accuracy"])
    assert len(stored["train"]["per_fold"]) == 3 and stored["val"]["shown"] is True

    capsys.readouterr()
    A.print_quality(table, torch.empty(0, 2, dtype=torch.long), torch.empty(0), [str(c) for c in range(10)], 10)
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("warning: train label review withheld")
    assert f"accuracy {q['accuracy']:.1%}" in err and f"floor {q['floor_accuracy']:.1%}" in err
    assert "--fold-epochs" in err and "val labels reviewed by the checkpoint" in out
    assert "suspected label errors: train withheld, val " in out
    assert err == f"warning: {stored['train']['summary']}\n"  # the line review.json keeps for the report
    assert [q["shown"] for q in report.read_review(str(tmp_path / "review.json"))] == [False, True]
    (tmp_path / "review.json").write_text("{")
    assert report.read_review(str(tmp_path / "review.json")) == [] and "warning:" in capsys.readouterr().err


def test_a_good_reviewers_suspects_are_shown(tmp_path):
    table, splits, flipped = fabricated_review("good", "good")
    q = table["review"]["train"]
    assert q["shown"] and q["skill"] >= A.REVIEW_FLOOR
    train = table["split"] == "train"
    suspects = set(np.flatnonzero(train & table["suspect"].numpy()).tolist())
    assert len(suspects & flipped) >= 0.9 * len(flipped) and len(suspects & flipped) >= 0.9 * len(suspects)
    A.write_quality(table, torch.empty(0, 2, dtype=torch.long), torch.empty(0), [str(c) for c in range(10)], tmp_path)
    assert len([r for r in read_csv(tmp_path / "suspects.csv") if r["split"] == "train"]) == q["flagged"]


def test_duplicate_groups_join_chains_and_number_by_first_row():
    pairs = torch.tensor([[5, 7], [1, 3], [7, 9], [3, 8]])  # 5-7-9 through a chain; 1-3-8
    assert A.duplicate_groups(pairs, 10).tolist() == [-1, 0, -1, 0, -1, 1, -1, 1, 0, 1]
    assert A.duplicate_groups(torch.empty(0, 2, dtype=torch.long), 3).tolist() == [-1, -1, -1]


def test_label_scores():
    loss, p, margin = A.label_scores(torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]]), torch.tensor([0, 2]))
    assert p.tolist() == pytest.approx([0.7, 0.3]) and margin.tolist() == pytest.approx([0.5, -0.2])
    assert loss.tolist() == pytest.approx([-np.log(0.7), -np.log(0.3)])


def test_page_signals_come_from_the_sample_table():
    """dashboard.html's signals of a real image are its samples.csv row's (found by split and index,
    whatever order the points come in); a withheld review shows no suspect but says so, val's shown
    one its flags; synthetic images get the scores of their own probabilities, unlabelled ones the
    prediction's margin and their flag, and nothing else."""
    table, splits, _ = fabricated_review("good", "weak")
    table["dup_group"] = A.duplicate_groups(torch.tensor([[3, 310]]), len(table["split"]))  # a train / val pair
    n_train = len(splits["train"])
    suspect = int(np.flatnonzero(table["suspect"].numpy())[0])  # a train row
    assert not table["suspect"][3]
    rows = [("train", suspect), ("train", 3), ("val", 310 - n_train), ("val", 0)]
    probs = torch.tensor([[0.6, 0.3, 0.1] + [0.0] * 7, [0.1, 0.2, 0.7] + [0.0] * 7])
    points = {"split": [s for s, _ in rows] + ["train", "unlabelled"], "source": [0] * len(rows) + [1, 2],
              "index": [i for _, i in rows] + [0, 1], "labels": torch.tensor([0] * len(rows) + [1, -1]),
              "probs": torch.cat([torch.zeros(len(rows), 10), probs])}
    unl = {"scores": {"margin": torch.tensor([0.9, 0.25])}, "flags": ["ok", "below threshold"]}
    sig = A.page_signals(points, table, unl)
    for k, (split, i) in enumerate(rows):
        r = n_train * (split == "val") + i
        assert sig["loss"][k] == pytest.approx(float(table["loss"][r]), abs=5e-4)
        assert sig["margin"][k] == pytest.approx(float(table["margin"][r]), abs=5e-4)
        assert sig["p_label"][k] == pytest.approx(float(table["confidence"][r]), abs=5e-4)
        assert sig["knn"][k] == pytest.approx(float(table["knn_agreement"][r]), abs=5e-4)
    assert sig["suspect"][:4] == [1, 0, -2, -2]  # train shown, val withheld
    assert sig["suggested"][0] == int(table["suggested"][suspect]) >= 0
    assert sig["dup_group"][1:3] == [0, 0] and sig["dup_size"][1:3] == [2, 2] and sig["dup_group"][3] == -1
    assert sig["loss"][4] == pytest.approx(-np.log(0.3), abs=5e-4) and sig["margin"][4] == pytest.approx(-0.3)
    assert sig["knn"][4] is None and sig["suspect"][4] == -1 and sig["dup_group"][4] is None
    assert sig["margin"][5] == 0.25 and sig["flag"][5] == "below threshold"
    assert [sig[k][5] for k in ("loss", "p_label", "knn", "dup_group")] == [None] * 4 and sig["suspect"][5] == -1
    review = {r["split"]: r for r in sig["review"]}
    assert review["train"]["shown"] and not review["train"]["withheld"] and "train labels reviewed" in review["train"]["text"]
    assert review["val"]["withheld"] and "withheld, below the floor" in review["val"]["text"]
    assert "synthetic" in review and "unlabelled" in review


def test_review_floor_is_skill_over_the_majority_class():
    """A reviewer that always says the commonest class is no reviewer, however high its accuracy;
    the floor's accuracy moves with the class count (skill, not accuracy, is what it fixes)."""
    labels = torch.tensor([0] * 90 + [1] * 10)
    q = A.review_quality(F.one_hot(torch.zeros(100, dtype=torch.long), 2).float(), labels)
    assert q["accuracy"] == pytest.approx(0.9) and q["skill"] == pytest.approx(0) and not q["shown"]
    for classes in (2, 10):
        labels = torch.arange(classes).repeat(200 // classes)
        floor = 1 / classes + A.REVIEW_FLOOR * (1 - 1 / classes)
        for accuracy in (floor - 0.05, floor + 0.05):  # right on the first `accuracy` share of the rows
            preds = torch.where(torch.arange(200) < round(200 * accuracy), labels, (labels + 1) % classes)
            q = A.review_quality(F.one_hot(preds, classes).float(), labels)
            assert q["floor_accuracy"] == pytest.approx(floor) and q["accuracy"] == pytest.approx(accuracy)
            assert q["shown"] == (accuracy > floor)


@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_flipped_labels_rank_first(flipped_run, capsys):
    n = flipped_run["n"]
    suspects = [os.path.basename(r["path"]) for r in read_csv(flipped_run["out"] / "suspects.csv")]
    flipped = flipped_run["flipped"]
    recall = {k: len(set(suspects[:k]) & flipped) / len(flipped) for k in (len(flipped), 2 * len(flipped))}
    with capsys.disabled():
        print(f"\nrecall of {len(flipped)} flipped labels among {n} samples: top-{len(flipped)} "
              f"{recall[len(flipped)]:.3f}, top-{2 * len(flipped)} {recall[2 * len(flipped)]:.3f} "
              f"({len(suspects)} suspects; chance {len(flipped) / n:.2f})")
    assert recall[len(flipped)] >= 0.6  # chance: 0.10


# ----------------------------------------------------------------------------- the data-quality files

@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_samples_csv(flipped_run):
    n = flipped_run["n"]
    rows = read_csv(flipped_run["out"] / "samples.csv")
    assert list(rows[0]) == ["split", "index", "path", "label", "prediction", "loss", "confidence", "margin",
                             "knn_agreement", "out_of_sample", "suggested", "dup_group", "flag"]
    assert len(rows) == n and {r["split"] for r in rows} == {"train", "val"}
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


@pytest.mark.slow  # fixture flipped_run, then analyze.py once more on its finished fold runs, with the pages
def test_dashboard_shows_a_passing_folds_review(flipped_run, tmp_path):
    """The page of an out-of-fold review that clears the floor: every training photo's suspect flag and
    suggested class as samples.csv has them, the review line shown (not withheld), and the suspects
    there mostly the planted flips."""
    out = tmp_path / "out"
    shutil.copytree(flipped_run["out"] / "folds", out / "folds")  # finished: reused, not trained again
    with pytest.MonkeyPatch.context() as mp:
        no_figures(mp)
        run_analyze(flipped_run["ckpt"], out, "--folds", flipped_run["folds"], "--fold-epochs", 10)
    review = json.loads((out / "review.json").read_text())
    assert review["train"]["shown"] and review["train"]["reviewer"] == f"{flipped_run['folds']} fold models (out of fold)"
    d = page_data((out / "dashboard.html").read_text())
    assert [r for r in d["review"] if r["split"] == "train"][0]["shown"]
    rows = {os.path.abspath(r["path"]): r for r in read_csv(out / "samples.csv") if r["split"] == "train"}
    train = [i for i, s in enumerate(d["split"]) if s == "train" and d["source"][i] == 0]
    assert len(train) == len(rows)  # every training photo is on the page (1,200 photos: under the sample size)
    suspects = []
    for i in train:
        r = rows[d["path"][i]]
        assert d["suspect"][i] == int("suspect" in r["flag"])
        assert (d["classes"][d["suggested"][i]] if d["suspect"][i] else "") == r["suggested"]
        suspects += [os.path.basename(d["path"][i])] if d["suspect"][i] else []
    assert len(suspects) == review["train"]["flagged"] > 0
    assert sum(s in flipped_run["flipped"] for s in suspects) > len(suspects) / 2  # chance: 10%


@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_leakage_pair_found(flipped_run):
    src, dst = flipped_run["dup"]
    pairs = read_csv(flipped_run["out"] / "duplicates.csv")
    hit = [p for p in pairs if {p["path_a"], p["path_b"]} == {src, dst}]
    assert len(hit) == 1 and hit[0]["cross_split"] == "1" and float(hit[0]["similarity"]) > 0.999
    assert {hit[0]["split_a"], hit[0]["split_b"]} == {"train", "val"}
    rows = read_csv(flipped_run["out"] / "samples.csv")
    flags, group = {r["path"]: r["flag"] for r in rows}, {r["path"]: int(r["dup_group"]) for r in rows}
    assert "duplicate" in flags[src] and "duplicate" in flags[dst]
    assert group[src] == group[dst] >= 0  # one group, in samples.csv as on the page
    in_pairs = {p[k] for p in pairs for k in ("path_a", "path_b")}
    assert all((group[r["path"]] >= 0) == (r["path"] in in_pairs) == ("duplicate" in r["flag"]) for r in rows)


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
    folds = flipped_run["folds"]
    def boom(args):
        raise AssertionError(f"trained {args.save_dir} again")
    no_figures(monkeypatch)  # the fold runs' figures and report.py's pages: tested elsewhere
    monkeypatch.setattr(A, "write_pages", lambda *a, **k: None)
    monkeypatch.setattr(train, "main", boom)
    shutil.copytree(flipped_run["out"] / "folds", tmp_path / "folds")
    run_analyze(flipped_run["ckpt"], tmp_path, "--folds", folds, "--fold-epochs", 10)
    out = capsys.readouterr().out
    assert out.count("finished before, skipped") == folds
    assert "suspected label errors: train" in out and "across splits (leakage)" in out
    assert (tmp_path / "suspects.csv").read_text() == (flipped_run["out"] / "suspects.csv").read_text()


@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_without_folds_only_val_is_reviewed(flipped_run, tmp_path):
    n = flipped_run["n"]
    model, _, data = E.load_run(str(flipped_run["ckpt"]), "cpu")
    splits = E.eval_splits(data)
    table = A.sample_table(model, splits, torch.device("cpu"))
    train_rows = torch.from_numpy(table["split"] == "train")
    assert not table["out_of_sample"][train_rows].any() and table["out_of_sample"][~train_rows].all()
    assert not table["suspect"][train_rows].any() and table["suspect"][~train_rows].any()
    assert table["probs"].shape == (n, 10) and len(table["features"]) == len(table["path"]) == n
    assert (table["index"][train_rows] == torch.arange(len(splits["train"]))).all()
    # --max-mistakes: the most confident ones
    assert A.save_mistakes(table, splits, data.classes, tmp_path / "m", limit=3) == 3
    wrong = ~train_rows & (table["pred"] != table["label"])
    top = table["probs"][wrong].max(1).values.sort(descending=True).values[:3]
    saved = sorted(float(f.stem.rsplit("_", 1)[1]) for f in (tmp_path / "m").rglob("*.png"))
    assert saved == sorted(round(float(c), 2) for c in top)


# ----------------------------------------------------------------------------- the command line

@pytest.mark.slow  # analyze.py as a subprocess; fixture flipped_run: 3 fold runs + analyze.py, ~35 s
def test_bad_option_is_one_line(flipped_run):
    proc = run_script("analyze.py", flipped_run["ckpt"], "--folds", 1)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: --folds must be 0 (off) or >= 2, got 1"


@pytest.mark.slow  # analyze.py as a subprocess
def test_analyze_missing_checkpoint(tmp_path):
    assert_one_line_error(run_script("analyze.py", tmp_path / "missing.pt"), "missing.pt")
