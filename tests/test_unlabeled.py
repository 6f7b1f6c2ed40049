"""analyze.py --unlabeled DIR --unlabeled-only (unlabeled.py) and evaluate.py --images --reject-below:
unlabeled.csv's columns and order on a fabricated checkpoint (no training), the copy of a training photo
flagged, the threshold's `none` and flag, the bad folders (one line each), and the round trip: unlabeled.csv
with two labels filled in is a train.py --corrections file that adds those two photos with those labels.
Without --unlabeled-only the photos are on dashboard.html too: tests/test_analyze.py."""
import json
import os

import pytest
import torch
from PIL import Image

import analyze as A
import cli
import data as D
import evaluate as E
import unlabeled as U
from checkpoint import load_checkpoint
from helpers import assert_one_line_error, fabricate_checkpoint, photo_folder, read_csv, run_script, run_train


def analyze_unlabeled(ckpt, folder, out, *extra):
    return A.main(A.get_args_parser().parse_args([str(ckpt), "--unlabeled", str(folder), "--unlabeled-only",
                                                  "--out", str(out), "--quiet", *map(str, extra)]))


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory, mnist_root):
    """An untrained MNIST convnet checkpoint, and a folder of 8 drawn digits plus a copy of a training photo."""
    root = tmp_path_factory.mktemp("unlabeled")
    (root / "run").mkdir()
    ckpt = fabricate_checkpoint(root / "run" / "best.pt", mnist_root)
    folder = photo_folder(root / "new", [str(c) for c in range(8)], 1, layout="plain", stem="u{k}", size=28,
                          content="digit")
    train = E.eval_splits(E.run_data(load_checkpoint(ckpt)), "train")["train"]
    Image.fromarray(D.raw_image(train, 0).squeeze(-1)).save(folder / "copy.png")
    return ckpt, folder


def test_columns_order_and_settings(fabricated, tmp_path, capsys):
    ckpt, folder = fabricated
    analyze_unlabeled(ckpt, folder, tmp_path)
    rows = read_csv(tmp_path / "unlabeled.csv")
    assert list(rows[0]) == U.COLUMNS and len(rows) == 9
    assert [int(r["rank"]) for r in rows] == list(range(1, 10))
    assert all(os.path.isabs(r["path"]) and os.path.isfile(r["path"]) and r["label"] == "" for r in rows)
    num = lambda r, k: float(r[k])  # noqa: E731
    for r in rows:
        assert num(r, "usefulness") == pytest.approx((1 - num(r, "margin")) * num(r, "distance"), abs=2e-4)
        assert 0 <= num(r, "margin") <= num(r, "confidence") <= 1 and r["prediction"] in [str(c) for c in range(10)]
    assert [num(r, "usefulness") for r in rows] == sorted((num(r, "usefulness") for r in rows), reverse=True)
    copy = next(r for r in rows if r["path"].endswith("copy.png"))
    assert copy["flag"] == U.COPY and num(copy, "distance") == pytest.approx(0, abs=1e-4)  # a training photo
    assert copy is rows[-1]  # distance 0: nothing to learn from labelling it
    assert {r["flag"] for r in rows if r is not copy} == {"ok"}
    settings = json.loads((tmp_path / "unlabeled.json").read_text())
    assert settings["checkpoint"] == str(ckpt) and settings["folder"] == str(folder)
    assert settings["n_images"] == 9 and settings["tta"] == 1 and settings["order"] == U.ORDER
    assert "have the pixels of a labelled photo" in capsys.readouterr().err


def test_order_is_most_useful_first_ties_by_path():
    assert U.order(torch.tensor([0.1, 0.5, 0.0, 0.5, 0.0]), ["e", "d", "c", "b", "a"]) == [3, 1, 0, 4, 2]
    s = U.scores(torch.tensor([[0.6, 0.4], [1.0, 0.0], [0.5, 0.5]]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]),
                 torch.tensor([[1.0, 0.0]]))
    assert s["margin"].tolist() == pytest.approx([0.2, 1.0, 0.0])
    assert s["distance"].tolist() == pytest.approx([0.0, 1.0, 1.0], abs=1e-6)  # cosine: the same direction is 0
    assert s["usefulness"].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-6)  # uncertain AND unlike first


def test_reject_threshold(fabricated, tmp_path):
    ckpt, folder = fabricated
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    assert E.below_threshold(probs, 0.6).tolist() == [True, False] and not E.below_threshold(probs, None).any()
    runs = E.load_members([str(ckpt)], torch.device("cpu"))
    E.classify_folder(runs, str(folder), torch.device("cpu"), tmp_path / "all.csv", quiet=True)
    p = sorted(float(r["confidence"]) for r in read_csv(tmp_path / "all.csv"))[4]  # the median: some each side
    E.classify_folder(runs, str(folder), torch.device("cpu"), tmp_path / "predictions.csv", quiet=True, reject_below=p)
    rows = read_csv(tmp_path / "predictions.csv")
    assert {r["prediction"] == E.REJECTED for r in rows} == {True, False}
    assert all((r["prediction"] == E.REJECTED) == (float(r["confidence"]) < p) for r in rows)
    analyze_unlabeled(ckpt, folder, tmp_path, "--reject-below", p)
    for r in read_csv(tmp_path / "unlabeled.csv"):
        assert (U.BELOW in r["flag"]) == (float(r["confidence"]) < p)


def test_bad_folders_are_one_line(fabricated, tmp_path):
    ckpt, folder = fabricated
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_text("not an image")
    for bad, needle in ((tmp_path / "nope", "--unlabeled folder not found"), (tmp_path / "empty", "no images"),
                        (tmp_path / "broken", "could be read")):
        with pytest.raises(cli.UsageError, match=needle):
            analyze_unlabeled(ckpt, bad, tmp_path / "out")
    with pytest.raises(cli.UsageError, match="--reject-below"):
        analyze_unlabeled(ckpt, folder, tmp_path / "out", "--reject-below", 1.5)
    for given, where in ((folder, "is"), (folder / "sub", "is inside"), (folder.parent, "holds")):
        (folder / "sub").mkdir(exist_ok=True)
        with pytest.raises(cli.UsageError, match=f"{where} the training folder"):
            U.check_folder(str(given), str(folder))
    U.check_folder(str(tmp_path / "empty"), str(folder))  # a sibling is fine
    (folder / "sub").rmdir()


@pytest.mark.slow  # analyze.py as a subprocess
def test_missing_folder_is_one_line_on_the_command_line(fabricated, tmp_path):
    ckpt, _ = fabricated
    assert_one_line_error(run_script("analyze.py", ckpt, "--unlabeled", tmp_path / "nope"), "--unlabeled", "nope")
    assert_one_line_error(run_script("evaluate.py", ckpt, "--reject-below", 0.5), "--reject-below")


def test_unlabeled_csv_with_two_labels_is_a_corrections_file(tmp_path):
    photos = photo_folder(tmp_path / "d", ("0", "1"), 6, stem="p{i}", size=20, content="digit")
    new = photo_folder(tmp_path / "new", ("0", "1", "1"), 2, layout="plain", stem="n{k}", size=20, seed=5,
                       content="digit")
    train = ["--data-dir", photos, "--model", "convnet", "--img-size", 16, "--epochs", 1, "--batch-size", 4,
             "--workers", 0, "--quiet", "--augment", "none", "--threads", 1]
    run_train([*train, "--save-dir", tmp_path / "run"])
    analyze_unlabeled(tmp_path / "run" / "best.pt", new, tmp_path / "out")
    with pytest.raises(cli.UsageError, match="is inside the training folder"):
        analyze_unlabeled(tmp_path / "run" / "best.pt", photos / "0", tmp_path / "out")
    table = tmp_path / "out" / "unlabeled.csv"
    rows = read_csv(table)
    rows[0]["label"], rows[1]["label"] = "1", "none"  # a digit, and a user-made "none of these" class
    with open(table, "w", newline="") as f:  # as a spreadsheet would save it: the other rows' labels empty
        f.write(",".join(U.COLUMNS) + "\n" + "".join(",".join(r[k] for k in U.COLUMNS) + "\n" for r in rows))
    _, out = run_train([*train, "--save-dir", tmp_path / "run2", "--corrections", table])
    assert "2 added to train, new class(es): none" in out
    ckpt = load_checkpoint(tmp_path / "run2" / "best.pt")
    data = E.run_data(ckpt)
    ds = D.real_part(data.train)
    added = {ds.path(i): data.classes[int(ds.labels[ds.indices[i]])] for i in range(len(ds))
             if not ds.path(i).startswith(str(photos))}
    assert added == {rows[0]["path"]: "1", rows[1]["path"]: "none"}
