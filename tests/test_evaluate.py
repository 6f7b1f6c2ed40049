"""evaluate.py: the metrics of every split (the same lines train.py printed, fp32 and bf16),
--images on labelled and unlabelled folders (the evaluation path's exact logits), test-time
augmentation, ensembles, calibration (ECE, --temperature auto), a folder run end to end, and its
command line as a subprocess (a user error is one `error:` line).

On the tests' MNIST subset (conftest's tiny_run and mnist_run) or small photo folders."""
import io
import json
import random
import re
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import checkpoint as CK
import device as DV
import data as D
import evaluate as E
import model as M
from helpers import (DRAWN, MIXED, MNIST_RUN_IMAGES, assert_one_line_error, assert_png, data_config,
                     fabricate_checkpoint, photo_folder, read_csv, run_script, run_scripts, run_train, save_image,
                     save_rgba, saved_figures, summary_by_split, summary_lines, title_text)

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- the metrics of a run

@pytest.mark.slow  # evaluate.py on the 1% run: every split and its figures, ~2 s
def test_evaluate(tiny_run, tmp_path, capsys):
    d, train_out, results = tiny_run("--eval-test")
    E.main(E.get_args_parser().parse_args([str(d / "best.pt"), "--out", str(tmp_path)]))
    out = capsys.readouterr().out
    with open(tmp_path / "metrics.json") as f:
        m = json.load(f)
    assert set(m) == {"settings", "train", "val", "test"}
    assert m.pop("settings")["checkpoints"] == [str(d / "best.pt")]  # what produced the numbers
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
    assert summary_by_split(out)["Test"] == summary_by_split(train_out)["Test"]
    assert summary_by_split(out) == summary_by_split(train_out)  # train and val lines too


@pytest.mark.slow  # fixture tiny_run('--amp', 'bf16'): a training run, emulated where the CPU has no native bf16, ~9 s
def test_evaluate_repeats_train_lines_under_bf16(tiny_run, tmp_path, capsys):
    d, train_out, _ = tiny_run("--amp", "bf16")
    model, ckpt, _ = E.load_run(str(d / "best.pt"), torch.device("cpu"), with_data=False)
    assert model.amp == "bf16"  # the checkpoint's precision is the default
    E.main(E.get_args_parser().parse_args([str(d / "best.pt"), "--out", str(tmp_path)]))
    lines = summary_lines(capsys.readouterr().out)
    assert len(lines) == 3 and lines == summary_lines(train_out)
    # --amp overrides it, and fp32 scores the same weights differently (logits, so the loss)
    model, _, _ = E.load_run(str(d / "best.pt"), torch.device("cpu"), with_data=False, amp="off")
    assert model.amp == "off"
    E.main(E.get_args_parser().parse_args([str(d / "best.pt"), "--out", str(tmp_path), "--amp", "off"]))
    fp32 = summary_lines(capsys.readouterr().out)
    assert len(fp32) == 3 and fp32 != lines


# ----------------------------------------------------------------------------- --images

@pytest.mark.slow  # fixture tiny_run: train.py on MNIST with --eval-test and its figures, ~4 s
def test_evaluate_classifies_an_image_folder(tiny_run, tmp_path, mnist_root, capsys):
    d, _, _ = tiny_run("--eval-test")
    images, labels = D.load_mnist(str(mnist_root), train=False, download=False)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):  # RGB files: the grayscale model gets them converted
        rgb = images[i, 0, :, :, None].expand(28, 28, 3).numpy()
        Image.fromarray(rgb).save(folder / ("sub" if i % 2 else "") / f"d{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    E.main(E.get_args_parser().parse_args([str(d / "best.pt"), "--images", str(folder), "--out", str(tmp_path)]))
    capsys.readouterr()
    rows = read_csv(tmp_path / "predictions.csv")
    assert len(rows) == 6
    assert all(r["prediction"] in [str(i) for i in range(10)] for r in rows)
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
    assert not any(r["path"].endswith("broken.png") for r in rows)


@pytest.mark.slow  # fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
@pytest.mark.parametrize("layout", ["sub", "flat"])
def test_images_predictions_are_right_and_scored(mnist_run, layout, tmp_path, capsys):
    tmp, labels = mnist_run
    E.main(E.get_args_parser().parse_args([str(tmp / "run" / "best.pt"), "--images", str(tmp / layout),
                                           "--out", str(tmp_path)]))
    out, err = capsys.readouterr()
    rows = read_csv(tmp_path / "predictions.csv")
    digits = [r for r in rows if r["label"] != "cat"]
    assert len(digits) == MNIST_RUN_IMAGES
    right = sum(r["prediction"] == r["label"] for r in digits)
    assert right >= 0.8 * MNIST_RUN_IMAGES  # a 90% model on its own test digits
    # the label column is what the folder says, and the accuracy printed / stored is over it
    assert sorted(int(r["label"]) for r in digits) == sorted(labels.tolist())
    m = json.loads((tmp_path / "images_metrics.json").read_text())["images"]
    assert m["correct"] == right and m["total"] == MNIST_RUN_IMAGES and 0 <= m["ece"] <= 1
    assert f"Accuracy: {right}/{MNIST_RUN_IMAGES}" in out and (tmp_path / "images_confusion.png").is_file()
    if layout == "sub":  # a class the model does not know: named, not scored, no crash
        assert "cat (1)" in err and "Traceback" not in err


@pytest.mark.slow  # fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
def test_images_preprocess_exactly_like_evaluation(mnist_run, mnist_root):
    """The PNGs of test digits through --images' path give the logits of the test split itself."""
    tmp, _ = mnist_run
    model, ckpt, data = E.load_run(str(tmp / "run" / "best.pt"), CPU)
    ref = E.collect(model, torch.utils.data.Subset(data.test, range(MNIST_RUN_IMAGES)), CPU, 64)
    _, labels, probs, _, _ = E.classify_folder([(model, ckpt)], str(tmp / "flat"), CPU,
                                               str(tmp / "p.csv"), batch_size=64)
    assert torch.equal(labels, ref["labels"])
    assert torch.equal(probs, ref["probs"])  # identical, not merely close


# ----------------------------------------------------------------------------- test-time augmentation

@pytest.mark.slow  # fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
def test_tta_views_are_deterministic_shifts_and_help_or_keep(mnist_run):
    x = torch.zeros(1, 1, 50, 50)
    x[0, 0, 25, 25] = 1.0
    moved = E.tta_view(x, 1, 0, 1.0)
    ys, xs = torch.nonzero(moved[0, 0] == moved[0, 0].max(), as_tuple=True)
    assert ys.tolist() == [25] and xs.item() == 25 + round(E.TTA_SHIFT * 50)  # right by 6% of the side
    assert torch.equal(E.tta_view(x, 0, 0, 1.0), x) and torch.equal(E.tta_view(x, 1, 0, 1.0), moved)
    tmp, _ = mnist_run
    model, ckpt, data = E.load_run(str(tmp / "run" / "best.pt"), CPU)
    plain = E.collect(model, data.test, CPU)
    one = E.collect(model, data.test, CPU, tta=1)
    five = E.collect(model, data.test, CPU, tta=5)
    assert torch.equal(plain["probs"], one["probs"])
    assert not torch.allclose(five["probs"], plain["probs"])
    assert torch.allclose(five["probs"].sum(1), torch.ones(len(data.test)), atol=1e-5)
    acc = lambda o: (o["preds"] == o["labels"]).float().mean().item()  # noqa: E731
    assert acc(five) >= acc(plain) - 0.02  # small shifts of centred digits cost next to nothing


def test_tta_is_the_mean_softmax_of_its_views_in_the_run_layout():
    """predict(views=...) is one loop with predict(): the mean softmax of the views, each view fed in
    the layout the plain path uses (channels_last under bf16 at 28 px and up)."""
    torch.manual_seed(0)
    model = M.build_model("net", 10, 1).eval()
    model.amp = "bf16"
    loader = [(torch.randn(6, 1, 28, 28), torch.arange(6))]
    layouts = []
    model.features[0].register_forward_pre_hook(
        lambda m, inp: layouts.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    views = [lambda x: x, lambda x: x.flip(-1)]
    out = E.predict(model, loader, CPU, views=views, temperature=2.0)
    p = [E.predict(model, [(v(x), y) for x, y in loader], CPU, temperature=2.0)["logits"].softmax(1) for v in views]
    assert torch.allclose(out["logits"].softmax(1), (p[0] + p[1]) / 2, atol=1e-6)
    assert layouts == [DV.use_channels_last(CPU, "bf16", 28)] * 4


# ----------------------------------------------------------------------------- ensembles

@pytest.mark.slow  # evaluate.py as a subprocess; fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
def test_ensemble_is_the_mean_softmax_and_refuses_other_classes(mnist_run, mnist_root, tmp_path, capsys):
    tmp, _ = mnist_run
    a, b = tmp / "run" / "best.pt", fabricate_checkpoint(tmp_path / "best.pt", mnist_root, "net", seed=1)
    res = E.main(E.get_args_parser().parse_args([str(a), str(b), "--split", "test", "--out", str(tmp_path / "ens")]))
    outs = []
    for path in (a, b):
        model, _, data = E.load_run(str(path), CPU)
        outs.append(E.collect(model, data.test, CPU)["probs"])
    mean = (outs[0] + outs[1]) / 2
    assert res["test"]["correct"] == int((mean.argmax(1) == data.test.targets).sum())
    assert "2-model ensemble Test set" in capsys.readouterr().out
    ck = CK.load_checkpoint(str(b))
    ck["classes"] = [f"c{i}" for i in range(10)]
    CK.save_checkpoint(ck, str(tmp_path / "other.pt"))
    r = run_script("evaluate.py", a, tmp_path / "other.pt", "--out", tmp_path / "x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "same class list" in r.stderr


# ----------------------------------------------------------------------------- calibration

def test_calibration_error_and_temperature_fit():
    probs = torch.full((100, 2), 0.1)
    probs[:, 0] = 0.9
    labels = torch.zeros(100, dtype=torch.long)
    labels[:10] = 1  # 90% right at confidence 0.9: calibrated
    assert E.calibration_bins(probs, labels)[3] == pytest.approx(0.0, abs=1e-6)
    labels[:50] = 1  # 50% right at 0.9: 0.4 over-confident
    assert E.calibration_bins(probs, labels)[3] == pytest.approx(0.4)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 5, generator=g) * 2
    y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)  # labels drawn from softmax(z)
    assert E.fit_temperature(z * 3, y) == pytest.approx(3.0, rel=0.1)  # logits 3x too sharp


def test_calibration_gap_looks_like_its_legend_and_shares_read_as_percent(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    probs = torch.tensor([[0.9, 0.1]] * 50 + [[0.6, 0.4]] * 50)
    labels = torch.tensor([0] * 20 + [1] * 30 + [0] * 50)  # 40% right at 0.9 (over-), 100% at 0.6 (under-confident)
    E.plot_calibration(probs, labels, str(tmp_path / "calibration.png"))
    ax, hist = figures["calibration.png"].axes
    legend = ax.get_legend()
    bars = {c.get_label(): c.patches for c in ax.containers}
    for handle, name in zip(legend.legend_handles, [t.get_text() for t in legend.get_texts()]):
        for bar in bars.get(name, []):
            # an unfilled or opaque bar looks like its legend handle wherever it is drawn; a translucent
            # fill over the accuracy bars (the under-confident bin) blended into a colour the legend lacked
            assert not bar.get_fill() or bar.get_alpha() in (None, 1), name
            assert (bar.get_fill(), bar.get_hatch(), bar.get_facecolor(), bar.get_edgecolor()) == (
                handle.get_fill(), handle.get_hatch(), handle.get_facecolor(), handle.get_edgecolor()), name
    lo, hi = hist.get_ylim()
    shown = [t.get_text() for t in hist.yaxis.get_majorticklabels() if lo <= t.get_position()[1] <= hi]
    assert len(shown) >= 2 and all(re.fullmatch(r"\d+(\.\d+)?%", t) for t in shown), shown  # not 10^{-1}


def test_figures_name_the_split_and_the_checkpoint(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    folder = photo_folder(tmp_path / "photos", [str(d) for d in range(3)], 6, layout="flat", **DRAWN)
    data = D.build_datasets(data_config("--data-dir", folder, "--img-size", 16))
    model = M.build_model("convnet", 3, 3, img_size=16)
    settings = {"checkpoints": [str(tmp_path / "run7" / "best.pt")]}
    E.evaluate_run(model, data, CPU, str(tmp_path), settings=settings)
    for name in ("confusion.png", "mistakes.png", "calibration.png"):
        assert "val split" in title_text(figures[name]) and "run7/best.pt" in title_text(figures[name]), name


@pytest.mark.slow  # fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
def test_temperature_auto_writes_a_calibrated_copy_and_lowers_ece(mnist_run, tmp_path, capsys):
    tmp, _ = mnist_run
    ck_path = tmp_path / "best.pt"
    ck_path.write_bytes((tmp / "run" / "best.pt").read_bytes())
    original = ck_path.read_bytes()
    before = CK.load_checkpoint(str(ck_path))
    E.main(E.get_args_parser().parse_args([str(ck_path), "--temperature", "auto", "--split", "val"]))
    out = capsys.readouterr().out
    assert ck_path.read_bytes() == original  # the input checkpoint is never rewritten
    after = CK.load_checkpoint(str(tmp_path / "best-calibrated.pt"))
    assert after["temperature"] > 0 and after["calibrated_from"] == str(ck_path)
    assert set(after) == set(before) | {"temperature", "calibrated_from"}
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    ece = [float(v) for v in __import__("re").search(r"val ECE ([\d.]+)% -> ([\d.]+)%", out).groups()]
    assert ece[1] < ece[0]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["val"]["ece"] == pytest.approx(ece[1] / 100, abs=1e-4)  # this evaluation used the fitted T
    assert m["settings"]["temperature"] == [pytest.approx(after["temperature"])]
    # the copy carries T: evaluating it, or giving T by hand, repeats the calibrated numbers
    for argv in ([str(tmp_path / "best-calibrated.pt")], [str(ck_path), "--temperature", str(after["temperature"])]):
        E.main(E.get_args_parser().parse_args(argv + ["--split", "val", "--out", str(tmp_path / "again")]))
        again = json.loads((tmp_path / "again" / "metrics.json").read_text())
        assert again["val"]["ece"] == pytest.approx(m["val"]["ece"], abs=1e-6)
    assert (tmp_path / "calibration.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- a folder run, end to end

@pytest.mark.slow  # trains and evaluates a folder run, ~8 s
def test_train_then_evaluate_on_a_folder(tmp_path, capsys):
    d = photo_folder(tmp_path / "data", ["dark"], 20, stem="{c}{i:02d}", seed=0, lo=0, hi=60, **MIXED)
    photo_folder(d, ["bright"], 20, stem="{c}{i:02d}", seed=1, lo=190, hi=256, **MIXED)
    save_dir, out = tmp_path / "run", tmp_path / "eval"
    results, _ = run_train([
        "--data-dir", d, "--img-size", 32, "--model", "convnet", "--epochs", 2,
        "--augment", "none", "--quiet", "--save-dir", save_dir, "--batch-size", 16,
        "--workers", 0, "--device", "cpu", "--cache-dir", tmp_path / "cache"], figures=True)
    assert set(results) == {"train", "val"}
    assert results["train"]["total"] == 34 and results["val"]["total"] == 6
    for f in ("best.pt", "last.pt", "history.csv", "curves.png"):
        assert (save_dir / f).is_file(), f
    assert len(read_csv(save_dir / "history.csv")) == 2
    ck = torch.load(save_dir / "best.pt", map_location="cpu", weights_only=True)
    assert ck["classes"] == ["bright", "dark"] and ck["img_size"] == 32 and ck["in_channels"] == 3
    assert list((tmp_path / "cache").glob("images-36px-*.pt"))

    E.main(E.get_args_parser().parse_args([str(save_dir / "best.pt"), "--out", str(out), "--device", "cpu"]))
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"settings", "train", "val"}
    assert m["settings"]["checkpoints"] == [str(save_dir / "best.pt")] and m["settings"]["tta"] == 1
    assert list(m["val"]["per_class"]) == ["bright", "dark"]
    assert m["val"]["total"] == 6 and m["train"]["total"] == 34
    assert m["val"]["correct"] == results["val"]["correct"]  # the same split and weights
    assert (out / "confusion.png").is_file()

    imgs = tmp_path / "unlabelled"
    save_image(imgs / "a.jpg", (40, 30), seed=1, hi=50)
    save_image(imgs / "b.png", (22, 60), seed=2, lo=200)
    save_image(imgs / "c.bmp", (30, 30), seed=3, mode="L")
    save_image(imgs / "sub" / "d.webp", (25, 25), seed=4)
    save_rgba(imgs / "e.png")
    (imgs / "notes.txt").write_text("not an image")
    capsys.readouterr()
    E.main(E.get_args_parser().parse_args([str(save_dir / "best.pt"), "--images", str(imgs),
                                           "--out", str(out), "--device", "cpu"]))
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 5
    assert sorted(Path(r["path"]).name for r in rows) == ["a.jpg", "b.png", "c.bmp", "d.webp", "e.png"]
    for r in rows:
        assert r["prediction"] in ("bright", "dark") and 0.0 <= float(r["confidence"]) <= 1.0
    assert "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- the command line (subprocesses)

@pytest.fixture(scope="module")
def script_errors(tmp_path_factory, fake_convnet_dir):
    """evaluate.py's command-line cases, run as subprocesses (the `if __name__ == "__main__"` block
    is what is tested), started together once: {case: CompletedProcess}."""
    tmp = tmp_path_factory.mktemp("cli")
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(random.Random(0).randbytes(4096))
    return run_scripts({
        "evaluate_missing": ("evaluate.py", tmp / "missing.pt"),
        "evaluate_corrupt": ("evaluate.py", corrupt),
        "evaluate_data_moved": ("evaluate.py", fake_convnet_dir / "best.pt", "--mnist-root", tmp / "moved",
                                "--out", tmp / "ev"),
    })


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_evaluate_missing_checkpoint(script_errors):
    assert_one_line_error(script_errors["evaluate_missing"], "missing.pt")


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_evaluate_corrupt_checkpoint(script_errors):
    assert_one_line_error(script_errors["evaluate_corrupt"], "corrupt.pt")


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_evaluate_when_the_data_moved(script_errors):
    assert_one_line_error(script_errors["evaluate_data_moved"], "moved")


def fake_data(classes, per_class, dataset="folder"):
    labels = torch.arange(len(classes)).repeat_interleave(torch.tensor(per_class))
    ds = D.TensorImageDataset(torch.zeros(len(labels), 1, 28, 28, dtype=torch.uint8), labels,
                              transform=lambda x: x.float() / 255)
    return D.Data(ds, ds, None, classes, 1, 28, (0.5,), (0.5,), {"dataset": dataset})


def test_found_line_names_the_classes_and_their_counts_in_one_line():
    assert E.found_line(fake_data(["cat", "muffin"], [3, 1])) == "Found 4 files belonging to 2 classes: cat (3), muffin (1)"
    assert E.found_line(fake_data(["0", "1"], [1, 1], "mnist")).startswith("Found 2 images belonging to 2 classes")
    many = E.found_line(fake_data([f"class{i:03d}" for i in range(500)], [2] * 500))
    assert many.startswith("Found 1000 files belonging to 500 classes: class000 (2), class001 (2), ")
    assert len(many) <= 160 and re.search(r", \.\.\. \((\d+) more\)$", many), many
    shown = many.count("(2)")
    assert int(re.search(r"\((\d+) more\)$", many).group(1)) == 500 - shown


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_predictions_draw_a_progress_bar_on_a_terminal(monkeypatch):
    model = M.build_model("convnet", 2, 1).eval()
    data = fake_data(["a", "b"], [5, 5])
    for quiet in (False, True):
        monkeypatch.setattr("sys.stderr", Terminal())
        out = E.collect(model, data.val, torch.device("cpu"), batch_size=4, desc="predicting val", quiet=quiet)
        assert len(out["preds"]) == 10
        assert ("predicting val" in sys.stderr.getvalue()) != quiet
