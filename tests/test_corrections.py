"""train.py --corrections (corrections.py, data.apply_corrections): a relabel, an exclusion, a reweight
and an added image land where they say; val keeps its images and gets its labels corrected; the
checkpoint records the file's hash and what it changed; evaluate.py rebuilds the same data and says
in one line when the file changed or is gone. The bad rows (one line each) are in test_bad_data.py.

Folders are tiny noise-photo folders (helpers.photo_folder): 2 classes x 6, one val photo per class."""
import hashlib
import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
import corrections as C
import data as D
import evaluate as E
import report
from checkpoint import save_checkpoint
from helpers import data_config, photo_folder, run_train, save_image, summary_by_split, warning_lines
from model import build_model, model_kwargs

IMG = 16


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """d/: classes 0 and 1, 6 noise photos each; extra/new.png: a photo from outside d/."""
    root = tmp_path_factory.mktemp("corrections")
    photo_folder(root / "d", ("0", "1"), 6, stem="p{i}", size=20)
    save_image(root / "extra" / "new.png", 20, seed=99)
    return root


def cfg(root, *extra):
    return data_config("--data-dir", root / "d", "--img-size", IMG, *extra)


def paths_of(ds):
    return [ds.path(i) for i in range(len(ds))]


def labels_by_path(data, ds):
    return {ds.path(i): data.classes[int(ds.labels[ds.indices[i]])] for i in range(len(ds))}


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_each_kind_of_row_lands_where_it_says(photos, tmp_path):
    base = D.build_datasets(cfg(photos))
    zeros = [p for p in paths_of(base.train) if "/0/" in p]
    relabel, exclude, heavy, val = zeros[0], zeros[1], zeros[2], base.val.path(0)
    fixes = tmp_path / "fixes"
    fixes.mkdir()
    # a relative path starts at the CSV file's folder; an absolute one is taken as it is
    csv_path = write(fixes / "c.csv", f"path,label,weight\n{os.path.relpath(relabel, fixes)},1,\n{exclude},,0\n"
                                      f"{heavy},,2.5\n{val},1,\n{photos / 'extra' / 'new.png'},cat,\n")
    data = D.build_datasets(cfg(photos, "--corrections", csv_path))
    assert data.classes == ["0", "1", "cat"]  # a new class comes after the folder's, which keep their indices
    assert torch.equal(data.val.indices, base.val.indices)  # val keeps the same images...
    assert labels_by_path(data, data.val)[val] == "1"  # ...with their labels corrected
    train = labels_by_path(data, data.train)
    assert train[relabel] == "1" and exclude not in train
    assert train[str(photos / "extra" / "new.png")] == "cat"  # an added image is in train, with its label
    weights = {data.train.path(i): data.train[i][3] for i in range(len(data.train))}
    assert weights[heavy] == 2.5 and weights[zeros[3]] == 1.0
    assert len(data.train) == len(base.train) - 1 + 1
    assert data.config["split_hash"] == base.config["split_hash"]  # the split is the folder's, as before
    assert data.config["corrections_sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert data.config["corrections_summary"] == {"relabelled": 2, "relabelled_val": 1, "excluded": 1,
                                                  "reweighted": 1, "added": 1, "new_classes": ["cat"], "ignored": 0}
    # the folder's own val labels stay beside the corrected ones (evaluate.py scores both); none where none changed
    assert data.val.original_targets.tolist() == base.val.targets.tolist() != data.val.targets.tolist()
    assert base.val.original_targets is None and data.train.original_targets is None


def test_excel_files_read_as_written(tmp_path):
    # a BOM, ';' separators and a decimal comma: what Excel writes in a comma-decimal locale
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffPath;Label;Weight\r\na.png;;0,5\r\nb.png;7;\r\n".encode())
    assert [(r.path, r.label, r.weight) for r in C.read_rows(str(path))] == [("a.png", None, 0.5), ("b.png", "7", None)]


def test_a_label_that_looks_like_a_class_is_a_typo(photos, tmp_path):
    path = write(tmp_path / "c.csv", f"path,label\n{photos / 'd' / '0' / 'p1.png'},01\n")
    with pytest.raises(cli.UsageError, match="did you mean '1'"):
        D.build_datasets(cfg(photos, "--corrections", path))


@pytest.mark.slow  # 20 data sets built, ~2.5 s
@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.dictionaries(st.integers(0, 11), st.tuples(st.sampled_from([None, "0", "1", "new"]),
                                                         st.sampled_from([None, 0.0, 0.5, 1.0, 3.0])),
                            max_size=12))
def test_generated_rows_do_what_they_say_and_val_keeps_its_images(photos, tmp_path, rows):
    base = D.build_datasets(cfg(photos), check=False)
    files = sorted(p for p in paths_of(base.train) + paths_of(base.val))
    listed = {files[k]: v for k, v in rows.items() if v != (None, None)}
    path = write(tmp_path / "c.csv", "path,label,weight\n" + "".join(
        f"{p},{label or ''},{'' if w is None else w}\n" for p, (label, w) in listed.items()))
    train = set(paths_of(base.train))
    if listed and all(w == 0 for p, (_, w) in listed.items() if p in train) and train <= set(listed):
        with pytest.raises(cli.UsageError, match="every training sample"):
            D.build_datasets(cfg(photos, "--corrections", path), check=False)
        return
    data = D.build_datasets(cfg(photos, "--corrections", path), check=False)
    assert paths_of(data.val) == paths_of(base.val)
    old = {**labels_by_path(base, base.train), **labels_by_path(base, base.val)}
    new = {**labels_by_path(data, data.train), **labels_by_path(data, data.val)}
    for p in files:
        label, w = listed.get(p, (None, None))
        if p in train and w == 0:
            assert p not in paths_of(data.train)  # excluded: out of training
        else:
            assert new[p] == (label or old[p])
    weights = {data.train.path(i): data.train[i][3] for i in range(len(data.train))}
    assert all(weights[p] == (1.0 if w is None else w) for p, (_, w) in listed.items() if p in weights)


# CSV pieces that have broken readers: separators, quotes, line ends, a BOM, NUL, odd numbers, paths
# inside, outside and beside the data folder, a comment.
PIECES = ["path", "label", "weight", "file", ",", ";", "\t", "\n", "\r\n", "\r", '"', "0", "1", "new", "d/0/img0.png",
          "d/1/img0.png", "../d/0/img1.png", "extra/new.png", "/no/such.png", "0.5", "0,5", "-1", "nan", "inf",
          "1e400", " ", "\ufeff", "#", "#!", "\x00", "é", "\udcff", ""]


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(PIECES), max_size=24).map("".join), header=st.booleans(),
       tail=st.binary(max_size=6))
def test_any_file_is_read_or_refused_in_one_line(photos, tmp_path, text, header, tail):
    path = tmp_path / "c.csv"
    path.write_bytes(("path,label,weight\n" * header + text).encode("utf-8", "surrogateescape") + tail)
    paths = [str(p) for p in sorted((photos / "d").rglob("*.png"))]
    for read in (lambda: C.read_corrections(str(path), paths, ["0", "1"], base=str(photos)),
                 lambda: C.read_sample_weights(str(path), paths, len(paths))):
        try:
            read()
        except cli.UsageError as e:  # run_main prints it as one line (cli.one_line)
            assert str(path) in str(e)  # and it names the file


# ----------------------------------------------------------------------------- a run, and its rebuild

@pytest.fixture(scope="module")
def corrected_run(photos, tmp_path_factory):
    """A 1-epoch convnet trained with a corrections file that relabels a training photo, excludes
    one, relabels the first val photo and adds extra/new.png as class 'cat'."""
    root = tmp_path_factory.mktemp("corrected_run")
    base = D.build_datasets(cfg(photos), check=False)
    train = paths_of(base.train)
    csv_path = write(root / "c.csv", f"path,label,weight\n{train[0]},1,\n{train[1]},,0\n{base.val.path(0)},1,\n"
                                     f"{photos / 'extra' / 'new.png'},cat,\n")
    _, out = run_train(["--data-dir", photos / "d", "--model", "convnet", "--img-size", IMG, "--epochs", 1,
                        "--batch-size", 4, "--workers", 0, "--quiet", "--augment", "none", "--no-download",
                        "--save-dir", root / "run", "--corrections", csv_path])
    return root, base, csv_path, out


def test_the_checkpoint_records_the_file_and_evaluate_rebuilds_the_same_data(corrected_run, capsys):
    root, base, csv_path, out = corrected_run
    assert "corrections c.csv" in out and "2 relabelled (1 of them val), 1 excluded" in out  # said at the start
    ckpt = torch.load(root / "run" / "best.pt", weights_only=True)
    assert ckpt["data"]["corrections"] == str(csv_path)
    assert ckpt["data"]["corrections_sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert ckpt["data"]["corrections_summary"]["added"] == 1 and ckpt["classes"] == ["0", "1", "cat"]
    capsys.readouterr()
    _, _, data = E.load_run(str(root / "run" / "best.pt"), torch.device("cpu"))
    assert warning_lines(capsys.readouterr().err) == []
    assert paths_of(data.val) == paths_of(base.val) and labels_by_path(data, data.val)[base.val.path(0)] == "1"
    train = labels_by_path(data, data.train)
    assert train[paths_of(base.train)[0]] == "1" and paths_of(base.train)[1] not in train
    assert train[next(p for p in train if p.endswith("new.png"))] == "cat"
    report.write_report(str(root / "run"))  # the report says what the file changed, and that it is still that file
    line = next(ln for ln in (root / "run" / "report.md").read_text().splitlines() if "corrections c.csv" in ln)
    assert "2 relabelled (1 of them val)" in line and "changed since" not in line


def no_eval_figures(mp):
    """evaluate_run's figures left out through the MonkeyPatch `mp` (most of its time; the numbers are the test)."""
    for name in ("plot_confusion", "plot_mistakes", "plot_calibration"):
        mp.setattr(E, name, lambda *a, **k: None)


def test_evaluate_scores_val_on_the_original_and_the_corrected_labels(corrected_run, tmp_path, monkeypatch):
    # val: one photo of class 0 (relabelled 1 by the file) and one of class 1; every val image predicted
    # `guess`, counted by hand: corrected labels (1, 1), original labels (0, 1)
    root, base, _, _ = corrected_run
    no_eval_figures(monkeypatch)
    _, _, data = E.load_run(str(root / "run" / "best.pt"), torch.device("cpu"))
    assert [data.classes[int(t)] for t in data.val.targets] == ["1", "1"]
    for guess, corrected, original in (("0", 0, 1), ("1", 2, 1)):
        logits = torch.full((2, len(data.classes)), -5.0)
        logits[:, data.classes.index(guess)] = 5.0
        outs = {"val": {"logits": logits, "probs": logits.softmax(1), "preds": logits.argmax(1),
                        "labels": data.val.targets}}
        results, _ = E.evaluate_run(None, data, torch.device("cpu"), str(tmp_path), "val", outs=outs)
        r = json.loads((tmp_path / "metrics.json").read_text())["val"]
        assert r == json.loads(json.dumps(results["val"]))  # what is returned is what is written
        assert (r["labels"], r["correct"], r["total"]) == ("corrected", corrected, 2)
        o = r["original_labels"]
        assert (o["labels"], o["correct"], o["total"], o["relabelled"]) == ("original", original, 2, 1)
        assert o["per_class"]["0"]["support"] == 1 and r["per_class"]["0"]["support"] == 0
    # no val label changed: metrics.json as ever, one score per split
    plain = {"val": {"logits": logits, "probs": logits.softmax(1), "preds": logits.argmax(1), "labels": base.val.targets}}
    E.evaluate_run(None, base, torch.device("cpu"), str(tmp_path), "val", outs=plain)
    r = json.loads((tmp_path / "metrics.json").read_text())["val"]
    assert "original_labels" not in r and "labels" not in r and r["correct"] == 1


@pytest.mark.slow  # evaluate.py's figures, ~3 s
def test_evaluate_scores_the_corrected_split(corrected_run):
    root, base, _, _ = corrected_run
    E.main(E.get_args_parser().parse_args([str(root / "run" / "best.pt"), "--out", str(root / "ev")]))
    metrics = json.loads((root / "ev" / "metrics.json").read_text())
    assert metrics["train"]["total"] == len(base.train) and metrics["val"]["total"] == len(base.val)


def test_evaluate_prints_and_the_report_shows_both_val_scores(corrected_run, monkeypatch, capsys):
    root, base, _, _ = corrected_run
    no_eval_figures(monkeypatch)
    best = str(root / "run" / "best.pt")
    real = E.predict

    def class_0(*args, **kwargs):  # the 1-epoch model says `cat` to all; every image predicted 0 tells the labels apart
        out = real(*args, **kwargs)
        out["logits"] = 10.0 * F.one_hot(torch.zeros(len(out["labels"]), dtype=torch.long), out["logits"].shape[1])
        return out
    monkeypatch.setattr(E, "predict", class_0)
    preds = ["0"] * len(base.val)
    folder = [os.path.basename(os.path.dirname(p)) for p in paths_of(base.val)]  # the labels the folder gives
    fixed = ["1"] + folder[1:]  # the file relabels the first val photo as 1
    right = lambda labels: sum(p == t for p, t in zip(preds, labels))  # noqa: E731
    assert (folder, right(fixed), right(folder)) == (["0", "1"], 0, 1)  # counted by hand
    capsys.readouterr()
    E.main(E.get_args_parser().parse_args([best, "--out", str(root / "ev2"), "--quiet"]))
    out = capsys.readouterr().out
    assert summary_by_split(out)["Val"].endswith(f"Accuracy: {right(fixed)}/2 ({50.0 * right(fixed):.2f}%)")
    line = next(ln for ln in out.splitlines() if ln.startswith("Val set, original labels:"))
    assert f"Accuracy: {right(folder)}/2 ({50.0 * right(folder):.2f}%)" in line and "1 of the 2 changed" in line
    r = json.loads((root / "ev2" / "metrics.json").read_text())["val"]
    assert (r["correct"], r["original_labels"]["correct"]) == (right(fixed), right(folder))
    report.write_report(str(root / "ev2"), best)  # the page: both, in its results block
    md = (root / "ev2" / "report.md").read_text()
    assert summary_by_split(md)["Val"] in out and line in md
    assert "val accuracy" in md and "on the corrected labels)" in md.split("\n")[2]
    assert "Val set, original labels:" in (root / "ev2" / "report.html").read_text()


def fabricated(path, config):
    """A checkpoint of an untrained convnet whose data config is `config` (what train.py stores)."""
    data = D.build_datasets(config, check=False)
    kwargs = model_kwargs("convnet", img_size=IMG)
    save_checkpoint({"model": "convnet", "model_args": kwargs, "classes": data.classes, "in_channels": 3,
                     "state_dict": build_model("convnet", len(data.classes), 3, **kwargs).state_dict(),
                     "img_size": IMG, "mean": list(data.mean), "std": list(data.std), "data": data.config,
                     "args": {}, "epoch": 1, "best_val_acc": 0.5}, str(path))
    return path


def r_verdict(folder):
    return json.loads((folder / "c" / "compare.json").read_text())["verdict"]


def test_compare_says_which_labels_it_scored_when_corrections_touch_val(photos, tmp_path, capsys):
    """evaluate.py --compare of runs whose corrections relabel val: two runs with the same corrected
    labels are scored on them and on the original ones; runs that disagree on the original labels,
    which neither chose, and on each one's own; never one run's labels passed off as both's."""
    base = D.build_datasets(cfg(photos), check=False)
    add = f"{photos / 'extra' / 'new.png'},cat\n"  # both files add the same class, so the class lists match
    fixed = write(tmp_path / "fix.csv", f"path,label\n{base.val.path(0)},1\n{add}")
    torch.manual_seed(0)
    a = fabricated(tmp_path / "a.pt", cfg(photos, "--corrections", fixed))
    b = fabricated(tmp_path / "b.pt", cfg(photos, "--corrections", write(tmp_path / "add.csv", f"path,label\n{add}")))
    original = base.val.targets
    corrected = original.clone()
    corrected[0] = 1
    assert original.tolist() == [0, 1]  # so the file's relabelling of val photo 0 changes its label
    preds = {}
    for path in (a, b):
        model, _, data = E.load_run(str(path), torch.device("cpu"))
        preds[path] = E.collect(model, data.val, torch.device("cpu"))["preds"]
    labels = {"the original labels": original, "A's corrected labels": corrected, "the corrected labels": corrected,
              "the labels as given": original}
    for pair, kinds, said in (((a, b), ["the original labels", "A's corrected labels"], "A and B were trained with"),
                              ((b, a), ["the original labels", "B's corrected labels"], "A and B were trained with"),
                              ((a, a), ["the corrected labels", "the original labels"], "1 of the 2 relabelled"),
                              ((b, b), ["the labels as given"], None)):
        capsys.readouterr()
        r = E.main(E.get_args_parser().parse_args([str(pair[0]), str(pair[1]), "--compare", "--out", str(tmp_path / "c")]))
        out = capsys.readouterr().out
        pa, pb = preds[pair[0]], preds[pair[1]]
        want = {**E.paired_numbers(pa, pb, labels[kinds[0]]), "labels": kinds[0]}
        if len(kinds) > 1:
            want["other_labels"] = {k: E.paired_numbers(pa, pb, labels[k.replace("B's", "A's")]) for k in kinds[1:]}
        assert r == want
        assert json.loads((tmp_path / "c" / "compare.json").read_text()).items() >= json.loads(json.dumps(r)).items()
        assert (said is None) == ("scored on" not in out) and (said is None or said in out)
        assert (f"images scored on {kinds[0]}, A" in r_verdict(tmp_path)) == (said is not None)  # the pasted paragraph too


def test_a_changed_or_lost_file_is_refused_where_val_would_be_wrong(photos, tmp_path, capsys):
    base = D.build_datasets(cfg(photos), check=False)
    val_fix = write(tmp_path / "val.csv", f"path,label\n{base.val.path(0)},1\n")
    ck = fabricated(tmp_path / "a.pt", cfg(photos, "--corrections", val_fix))
    val_fix.write_text(val_fix.read_text() + f"{base.train.path(0)},1\n")
    with pytest.raises(cli.UsageError, match="changed since training.*relabelled 1 val image"):
        E.load_run(str(ck), torch.device("cpu"))
    val_fix.unlink()
    with pytest.raises(cli.UsageError, match="is gone: it relabelled 1 val image"):
        E.load_run(str(ck), torch.device("cpu"))


def test_the_run_folder_keeps_the_file_it_trained_with(corrected_run, tmp_path):
    root, _, csv_path, out = corrected_run
    assert (root / "run" / C.RUN_COPY).read_bytes() == csv_path.read_bytes()  # the exact bytes, whatever the file becomes
    sha = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert f"corrections c.csv (sha256 {sha[:12]}): the run's copy is {root / 'run' / C.RUN_COPY}" in out  # at the end
    assert not [p for p in os.listdir(root / "run") if p.startswith(".tmp")]  # written atomically
    report.write_report(str(tmp_path), str(root / "run" / "best.pt"))  # the report names the file, its hash, the copy
    line = next(ln for ln in (tmp_path / "report.md").read_text().splitlines() if "corrections c.csv" in ln)
    assert f"(sha256 {sha[:12]})" in line and "changed since" not in line
    assert f"the run's copy as training read it: [{C.RUN_COPY}](" in line


def test_an_edited_file_is_rebuilt_from_the_runs_copy(photos, tmp_path, capsys):
    # the file's rows are relative to its own folder, fixes/: the copy in the run folder reads with them
    base = D.build_datasets(cfg(photos), check=False)
    fix = write(tmp_path / "fixes" / "c.csv", f"path,label\n{os.path.relpath(base.val.path(0), tmp_path / 'fixes')},1\n"
                                               f"{os.path.relpath(base.train.path(0), tmp_path / 'fixes')},1\n")
    (tmp_path / "runs" / "r1").mkdir(parents=True)  # not beside fixes/: its relative paths would miss
    ck = fabricated(tmp_path / "runs" / "r1" / "best.pt", cfg(photos, "--corrections", fix))
    shutil.copyfile(fix, tmp_path / "runs" / "r1" / C.RUN_COPY)  # what train.py keeps
    fix.write_text("path,label\n")  # the next round's file, edited in place
    capsys.readouterr()
    _, _, data = E.load_run(str(ck), torch.device("cpu"))
    said = capsys.readouterr()
    assert warning_lines(said.err) == [] and f"rebuilt from the run's copy of it as training read it, " \
        f"{tmp_path / 'runs' / 'r1' / C.RUN_COPY}" in said.out
    assert labels_by_path(data, data.val)[base.val.path(0)] == "1" and labels_by_path(data, data.train)[
        base.train.path(0)] == "1"
    assert data.val.original_targets.tolist() == base.val.targets.tolist()
    assert data.config["corrections_summary"] == torch.load(ck, weights_only=True)["data"]["corrections_summary"]
    (tmp_path / "runs" / "r1" / C.RUN_COPY).write_text("path,label\n")  # a copy that is not the file training read: not used
    with pytest.raises(cli.UsageError, match="changed since training.*relabelled 1 val image"):
        E.load_run(str(ck), torch.device("cpu"))


def test_resume_takes_the_runs_copy_and_overwrite_clears_it(corrected_run, photos, tmp_path):
    root, _, csv_path, _ = corrected_run
    shutil.copytree(root / "run", tmp_path / "run")
    copy = tmp_path / "run" / C.RUN_COPY
    stat = copy.stat()
    common = ["--data-dir", photos / "d", "--model", "convnet", "--img-size", IMG, "--batch-size", 4, "--workers", 0,
              "--quiet", "--augment", "none", "--no-download", "--save-dir", tmp_path / "run"]
    run_train(common + ["--epochs", 2, "--corrections", copy, "--resume", tmp_path / "run" / "last.pt"])
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["data"]["corrections_sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert copy.read_bytes() == csv_path.read_bytes() and copy.stat().st_mtime_ns == stat.st_mtime_ns  # an input: not written
    run_train(common + ["--epochs", 1, "--overwrite"])  # a new run without corrections: no copy of the old run's
    assert not copy.exists()


def test_a_lost_file_that_left_val_alone_is_one_warning(photos, tmp_path, capsys):
    base = D.build_datasets(cfg(photos), check=False)
    fix = write(tmp_path / "train.csv", f"path,label\n{base.train.path(0)},cat\n")
    ck = fabricated(tmp_path / "a.pt", cfg(photos, "--corrections", fix))
    fix.unlink()
    capsys.readouterr()
    _, _, data = E.load_run(str(ck), torch.device("cpu"))
    lines = warning_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "is gone: rebuilt without it (val is right" in lines[0]
    assert data.classes == ["0", "1", "cat"] and paths_of(data.val) == paths_of(base.val)


def test_a_moved_data_folder_does_not_pass_for_the_same_corrections(photos, tmp_path):
    # absolute paths into the folder training read: a copy of it scored instead would relabel nothing
    base = D.build_datasets(cfg(photos), check=False)
    fix = write(tmp_path / "c.csv", f"path,label\n{base.val.path(0)},1\n")
    ck = fabricated(tmp_path / "a.pt", cfg(photos, "--corrections", fix))
    shutil.copytree(photos / "d", tmp_path / "copy")
    with pytest.raises(cli.UsageError, match="changes other images now than in training"):
        E.load_run(str(ck), torch.device("cpu"), data_dir=str(tmp_path / "copy"))


# analyze.py --folds on a corrected run: tests/test_data.py (its fold runs hold out the folds it scores) and
# tests/test_experiments.py (experiments.py clean reviews runs trained with --corrections)


def test_resume_refuses_other_corrections(corrected_run, photos, tmp_path):
    root, _, csv_path, _ = corrected_run
    other = write(tmp_path / "c.csv", csv_path.read_text().replace(",,0\n", ",,0.5\n"))
    with pytest.raises(cli.UsageError, match="other --corrections"):
        run_train(["--data-dir", photos / "d", "--model", "convnet", "--img-size", IMG, "--epochs", 1,
                   "--batch-size", 4, "--workers", 0, "--quiet", "--augment", "none", "--no-download",
                   "--save-dir", tmp_path / "run", "--corrections", other, "--resume", root / "run" / "last.pt"])
