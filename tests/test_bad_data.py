"""Adversarial suite, part 2: bad data, lost files, damaged outputs, hangs.

One case per line: (id, setup(folder), script, arguments, exit code, fragment of the one
`error:` / `warning:` line or None for none, and the outputs the run may write). Each is built in
a fresh copy of the tiny world of tests/adversarial.py (`data/`: 3 classes x 5 PNGs, `run/`: a
trained convnet) and judged by adversarial.check: exit code, one line, no traceback, every other
file unchanged."""
import json
import os
import shutil

import pytest

import images as I
from adversarial import TRAIN, check, slow, snapshot
from helpers import photo_folder, run_train, save_image

DRY = ["--data-dir", "d", *TRAIN[2:], "--dry-run"]           # train.py --dry-run on folder d/
EVAL = ["run/best.pt", "--data-dir", "data", "--out", "ev"]  # evaluate.py / analyze.py of the trained run
ANALYZE = [*EVAL[:-1], "an", "--tsne-samples", 10, "--dashboard-points", 10]
FIX = [*DRY, "--corrections", "c.csv"]                      # train.py --dry-run on d/ with c.csv
RUN_FILES = ("run/best.pt", "run/last.pt", "run/history.csv", "run/*.png")


# ----------------------------------------------------------------------------- setups

def flat(w, per_class=3, classes=("0", "1")):
    photo_folder(w / "d", classes, per_class, layout="flat")


def sub(w, per_class=3, classes=("0", "1")):
    photo_folder(w / "d", classes, per_class)


def then(*steps):
    def setup(w):
        for s in steps:
            s(w)
    return setup


def png(rel, seed=7):
    return lambda w: save_image(w / rel, 16, seed)


def text(rel, content, encoding="utf-8"):
    def setup(w):
        (w / rel).parent.mkdir(parents=True, exist_ok=True)
        (w / rel).write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return setup


def fifo(rel):
    return lambda w: os.mkfifo(w / rel)


def link(rel, target):
    def setup(w):
        (w / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, w / rel)
    return setup


def move(a, b):
    return lambda w: shutil.move(w / a, w / b)


def remove(rel):
    return lambda w: shutil.rmtree(w / rel) if (w / rel).is_dir() else (w / rel).unlink()


def bytes_name(folder, name):
    """A file whose name is not valid UTF-8 (a PNG)."""
    def setup(w):
        (w / folder).mkdir(parents=True, exist_ok=True)
        src = save_image(w / "tmp.png", 16, 5)
        os.rename(os.fsencode(src), os.path.join(os.fsencode(w / folder), name))
    return setup


def weights(content, encoding="utf-8"):
    return text("w.csv", content, encoding)


def fixes(content):
    return text("c.csv", content)


def copy_folder(a, b):
    return lambda w: shutil.copytree(w / a, w / b)


def copy_run(dst):
    return lambda w: shutil.copytree(w / "run", w / dst)


def metrics(content):
    return text("run/metrics.json", content)


def history(content):
    return text("run/history.csv", content)


def tiny_folder_run(w):
    """tr/: a 1-epoch run on t/, 2 classes x 2 images (1 train and 1 val image each)."""
    photo_folder(w / "t", ("0", "1"), 2)
    run_train([*TRAIN, "--save-dir", w / "tr", "--data-dir", w / "t"], figures=True)


def C(id, setup, script, args, code, line, outputs=(), warning=None, subprocess=False, stdout=None):
    warning = code == 0 if warning is None else warning
    return pytest.param(setup, script, list(args), code, line, outputs, warning, subprocess, stdout, id=id)


TRAIN_OUT = ("out/*",)
CASES = [
    # --- layouts: a flat _label<d> folder with stray folders, copies, hidden and junk entries
    C("flat+__MACOSX", then(flat, png("d/__MACOSX/._img0_label0.png")), "train.py", DRY, 0, "__MACOSX", stdout="2 classes"),
    C("flat+empty-subfolder", then(flat, text("d/extra/readme.txt", "x")), "train.py", DRY, 0, "folder without images"),
    C("flat+subfolder-with-images", then(flat, png("d/extra/a.png")), "train.py", DRY, 2, "mixes both layouts"),
    C("flat+hidden-folder", then(flat, png("d/.thumbs/a_label0.png")), "train.py", DRY, 0, None, stdout="2 classes"),
    C("copy (1)", then(flat, png("d/img0_label0 (1).png")), "train.py", DRY, 0, "named like copies", stdout="2 classes"),
    C("copy 'copy'", then(flat, png("d/img0_label0 copy.png")), "train.py", DRY, 0, "named like copies", stdout="2 classes"),
    C("copy '- Copy (2)'", then(flat, png("d/img0_label1 - Copy (2).png")), "train.py", DRY, 0, "copies", stdout="2 classes"),
    C("copy 'copy 3'", then(flat, png("d/img1_label1 copy 3.png")), "train.py", DRY, 0, "copies", stdout="2 classes"),
    C("label with a space", then(flat, png("d/img0_label0 foo.png")), "train.py", DRY, 0, "no _label<name>"),
    C("unlabelled flat file", then(flat, png("d/plain.png")), "train.py", DRY, 0, "no _label<name>"),
    C("hidden folder in class", then(sub, png("d/0/.thumbs/a.png")), "train.py", DRY, 0, "hidden folder"),
    C("hidden file in class", then(sub, png("d/0/._img0.png")), "train.py", DRY, 0, "hidden file"),
    C("__MACOSX as class", then(sub, png("d/__MACOSX/0/._a.png")), "train.py", DRY, 0, "__MACOSX", stdout="2 classes"),
    C("__MACOSX in class", then(sub, png("d/1/__MACOSX/._a.png")), "train.py", DRY, 0, "hidden folder"),
    C("image beside class folders", then(sub, png("d/stray.png")), "train.py", DRY, 0, "outside the class folders"),
    C("classes 3 and 03", then(lambda w: photo_folder(w / "d", ("3", "03"), 3)), "train.py", DRY, 0, None,
      stdout="2 classes"),
    C("class folder without images", then(sub, text("d/emu/readme.txt", "x")), "train.py", DRY, 2, "emu"),
    C("one class", lambda w: photo_folder(w / "d", ("0",), 4), "train.py", DRY, 2, "at least 2 classes"),
    C("class of one image", lambda w: photo_folder(w / "d", ("0", "1"), 1), "train.py", DRY, 2, "fewer than 2 images"),
    C("empty folder", lambda w: (w / "d").mkdir(), "train.py", DRY, 2, "no labelled images"),
    C("only text files", text("d/a.txt", "x"), "train.py", DRY, 2, "no labelled images"),
    C("all unreadable", then(text("d/0/a.png", "x"), text("d/1/b.png", "y")), "train.py", DRY, 2, "could be read"),
    C("a class unreadable", then(sub, text("d/2/a.png", "x")), "train.py", DRY, 2, "'2'"),
    C("truncated image", then(sub, text("d/0/t.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20)), "train.py", DRY, 0,
      "unreadable"),
    C("empty image file", then(sub, text("d/1/e.jpg", b"")), "train.py", DRY, 0, "unreadable"),
    C("a file that is not an image named", then(sub, text("d/1/e.txt", "x")), "train.py", DRY, 0, "not an image file"),
    C("non-UTF-8 name", then(sub, bytes_name("d/0", b"\xff\xfe_x.png")), "train.py", DRY, 0, None),
    C("non-UTF-8 flat name", then(flat, bytes_name("d", b"\xe9t\xe9_label1.png")), "train.py", DRY, 0, None),
    C("non-UTF-8 class name", then(sub, bytes_name("d/\udcff", b"a.png"), bytes_name("d/\udcff", b"b.png")),
      "train.py", DRY, 0, None, stdout="3 classes"),
    # --- links and special files: only regular files are read; nothing hangs
    C("symlink loop", then(sub, link("d/0/loop.png", "loop.png")), "train.py", DRY, 0, "symlink loop"),
    C("symlink loop+cache", then(sub, link("d/0/loop.png", "loop.png")), "train.py", [*DRY, "--cache-dir", "c"], 0,
      "symlink loop"),
    C("dangling link", then(sub, link("d/1/gone.png", "nowhere.png")), "train.py", DRY, 0, "dangling link"),
    C("dangling link+cache", then(sub, link("d/1/gone.png", "nowhere.png")), "train.py", [*DRY, "--cache-dir", "c"],
      0, "dangling link"),
    C("flat symlink loop", then(flat, link("d/l_label0.png", "l_label0.png")), "train.py", DRY, 0, "symlink loop"),
    C("flat dangling link", then(flat, link("d/g_label1.png", "x.png")), "train.py", DRY, 0, "dangling link"),
    C("good symlink", then(sub, lambda w: os.symlink(w / "d/0/img0.png", w / "d/1/l.png")), "train.py", DRY, 0, None),
    C("folder symlink loop", then(sub, link("d/0/up", "..")), "train.py", DRY, 0, "symlinked folder, not followed"),
    C("data dir is a symlink loop", link("d", "d"), "train.py", DRY, 2, "data folder not found"),
    slow(C("FIFO in class", then(sub, fifo("d/0/pipe.png")), "train.py", DRY, 0, "not a regular file",
           subprocess=True)),
    slow(C("FIFO flat", then(flat, fifo("d/p_label0.png")), "train.py", DRY, 0, "not a regular file",
           subprocess=True)),
    slow(C("FIFO + cache", then(sub, fifo("d/1/pipe.jpg")), "train.py", [*DRY, "--cache-dir", "c"], 0,
           "not a regular file", subprocess=True)),
    slow(C("FIFO in --images", then(sub, fifo("d/0/pipe.png")), "evaluate.py", [*EVAL, "--images", "d"], 0,
           "not a regular file", ("ev/*",), subprocess=True)),
    # --- sample weights: Excel's BOM, Latin-1, harmful values
    C("weights BOM", then(sub, weights("\ufeffpath,weight\nimg0.png,0.5\n")), "train.py",
      [*DRY, "--sample-weights", "w.csv"], 0, "not in the dataset"),
    C("weights BOM match", then(sub, weights("\ufeffpath,weight\n0/img0.png,0.5\n")), "train.py",
      [*DRY, "--sample-weights", "w.csv"], 0, None),
    C("weights Latin-1", then(sub, weights("path,weight\n0/img0.png,0.5\ncafé.png,1\n", "latin-1")), "train.py",
      [*DRY, "--sample-weights", "w.csv"], 0, "café.png"),
    C("weights negative", then(sub, weights("0/img0.png,-1\n")), "train.py", [*DRY, "--sample-weights", "w.csv"], 2,
      "finite number >= 0"),
    C("weights nan", then(sub, weights("0/img0.png,nan\n")), "train.py", [*DRY, "--sample-weights", "w.csv"], 2,
      "finite number >= 0"),
    C("weights inf", then(sub, weights("0/img1.png,inf\n")), "train.py", [*DRY, "--sample-weights", "w.csv"], 2,
      "finite number >= 0"),
    C("weights all zero", then(sub, weights("".join(f"{c}/img{i}.png,0\n" for c in "01" for i in range(3)))),
      "train.py", [*DRY, "--sample-weights", "w.csv"], 2, "every training sample has weight 0"),
    C("weights not a number", then(sub, weights("0/img0.png,heavy\n")), "train.py", [*DRY, "--sample-weights", "w.csv"],
      2, "not a number"),
    C("weights one column", then(sub, weights("0/img0.png\n")), "train.py", [*DRY, "--sample-weights", "w.csv"], 2,
      "rows must be path,weight"),
    C("weights binary", then(sub, weights(b"\0\1\2,\0\n")), "train.py", [*DRY, "--sample-weights", "w.csv"], 2,
      "binary or UTF-16 file"),
    C("corrections UTF-16", then(sub, fixes("path,label\n0/img0.png,1\n".encode("utf-16"))), "train.py", FIX, 2,
      "binary or UTF-16 file"),
    C("weights a folder", then(sub, lambda w: (w / "w.csv").mkdir()), "train.py", [*DRY, "--sample-weights", "w.csv"],
      2, "not found"),
    # --- corrections (path,label,weight; a relative path starts at the CSV's folder): each bad row is one line
    C("corrections relabel", then(sub, fixes("path,label,weight\nd/0/img0.png,1,\n")), "train.py", FIX, 0, None,
      stdout="1 relabelled"),
    C("corrections BOM", then(sub, fixes("\ufeffpath,label,weight\nd/0/img0.png,1,\n")), "train.py", FIX, 0, None,
      stdout="1 relabelled"),
    C("corrections ;", then(sub, fixes("path;label;weight\nd/0/img0.png;1;\n")), "train.py", FIX, 0, None,
      stdout="1 relabelled"),
    C("corrections new class", then(lambda w: sub(w, 5), fixes("path,label\nd/0/img0.png,cat\nd/0/img1.png,cat\n")),
      "train.py", FIX, 0, None, stdout="new class(es): cat"),
    C("corrections add", then(sub, png("x/new.png"), fixes("path,label\nx/new.png,1\n")), "train.py", FIX, 0, None,
      stdout="1 added to train"),
    C("corrections unknown path", then(sub, fixes("path,label\nd/0/nope.png,1\n")), "train.py", FIX, 2,
      "neither an image of the data set nor an image file"),
    C("corrections class typo", then(sub, fixes("path,label\nd/0/img0.png,01\n")), "train.py", FIX, 2,
      "did you mean '1'"),
    C("corrections listed twice", then(sub, fixes("path,label,weight\nd/0/img0.png,1,\n./d/0/img0.png,,0\n")),
      "train.py", FIX, 2, "listed twice"),
    C("corrections no header", then(sub, fixes("d/0/img0.png,1,\n")), "train.py", FIX, 2, "has no header"),
    C("corrections binary", then(sub, fixes(b"\0\1\2,\0\n")), "train.py", FIX, 2, "binary or UTF-16 file"),
    C("corrections negative", then(sub, fixes("path,weight\nd/0/img0.png,-1\n")), "train.py", FIX, 2,
      "finite number >= 0"),
    C("corrections nan", then(sub, fixes("path,weight\nd/0/img0.png,nan\n")), "train.py", FIX, 2, "finite number >= 0"),
    C("corrections not a number", then(sub, fixes("path,weight\nd/0/img0.png,heavy\n")), "train.py", FIX, 2,
      "not a number"),
    C("corrections no label column", then(sub, fixes("path,split\nd/0/img0.png,train\n")), "train.py", FIX, 2,
      "no label or weight column"),
    C("corrections empty path", then(sub, fixes("path,label\n,1\n")), "train.py", FIX, 2, "no path"),
    C("corrections add without label", then(sub, png("x/new.png"), fixes("path,label,weight\nx/new.png,,2\n")),
      "train.py", FIX, 2, "give its label"),
    C("corrections add unreadable", then(sub, text("x/bad.png", "x"), fixes("path,label\nx/bad.png,1\n")),
      "train.py", FIX, 2, "cannot be read as an image"),
    C("corrections add a val copy", then(sub, copy_folder("d", "x"), fixes("path,label\n" + "".join(
        f"x/{c}/img{i}.png,{c}\n" for c in "01" for i in range(3)))), "train.py", FIX, 2, "pixels of a val photo"),
    C("corrections exclude all", then(sub, fixes("path,weight\n" + "".join(f"d/{c}/img{i}.png,0\n" for c in "01"
                                                                           for i in range(3)))),
      "train.py", FIX, 2, "every training sample has weight 0"),
    C("corrections missing", sub, "train.py", FIX, 2, "--corrections file not found"),
    C("corrections and sample weights", then(sub, fixes("path,label\nd/0/img0.png,1\n"), weights("path,weight\n")),
      "train.py", [*FIX, "--sample-weights", "w.csv"], 2, "give one file"),
    # --- classes changed after training: refused by name, or mapped by name when unambiguous
    C("class renamed", move("data/2", "data/two"), "evaluate.py", EVAL, 2, "not in the checkpoint: two; not in the data: 2"),
    C("class added", then(png("data/3/a.png"), png("data/3/b.png", 8)), "evaluate.py", EVAL, 2, "not in the checkpoint: 3"),
    slow(C("class removed", remove("data/2"), "evaluate.py", EVAL, 0, "no images of the checkpoint's class(es) 2",
           ("ev/*",))),
    slow(C("class removed analyze", remove("data/2"), "analyze.py", ANALYZE, 0, "class(es) 2", ("an/*",))),
    slow(C("files added since training", png("data/0/new.png"), "evaluate.py", EVAL, 0, "not the same split",
           ("ev/*",))),
    C("class renamed analyze", move("data/2", "data/two"), "analyze.py", ANALYZE, 2, "not in the checkpoint: two"),
    C("class added analyze", then(png("data/3/a.png"), png("data/3/b.png", 8)), "analyze.py", ANALYZE, 2, "not in the checkpoint: 3"),
    # --- evaluate: --images edge cases
    C("--images all unreadable", then(text("im/a.png", "x"), text("im/b.jpg", b"")), "evaluate.py",
      [*EVAL, "--images", "im"], 2, "none of the 2 images"),
    C("--images no images", text("im/a.txt", "x"), "evaluate.py", [*EVAL, "--images", "im"], 2, "no images"),
    slow(C("analyze prints a non-UTF-8 name",
           lambda w: os.link(w / "data/0/img0.png", os.path.join(os.fsencode(w / "data/0"), b"\xff.png")),
           "analyze.py", ANALYZE, 0, "not the same split", ("an/*",), subprocess=True, stdout="duplicate")),
    C("--images non-UTF-8", bytes_name("im", b"\xff.png"), "evaluate.py", [*EVAL, "--images", "im"], 0, None, ("ev/*",),
      stdout="classified 1 image "),
    C("--images hidden only", png("im/.a.png"), "evaluate.py", [*EVAL, "--images", "im"], 2, "no images"),
    C("--split test keeps metrics.json", text("ev/metrics.json", '{"val": 1}'), "evaluate.py",
      [*EVAL, "--split", "test"], 2, "no test split"),
    C("--out a file keeps it", text("ev", "mine"), "evaluate.py", EVAL, 2, "is a file"),
    # --- lost data: a run folder, analyze's mistakes/
    C("second run refused", None, "train.py", [*TRAIN, "--save-dir", "run"], 2, "--resume run/last.pt"),
    C("second run default dir", copy_run("checkpoints"), "train.py", TRAIN[:-4], 2, "holds a run"),
    C("second run only history", lambda w: [remove(f"run/{f}")(w) for f in ("best.pt", "last.pt")], "train.py",
      [*TRAIN, "--save-dir", "run"], 2, "holds a run (history.csv)"),
    slow(C("second run --overwrite", None, "train.py", [*TRAIN, "--save-dir", "run", "--overwrite"], 0, None,
           RUN_FILES)),
    C("resume elsewhere into a run", copy_run("run2"), "train.py", [*TRAIN, "--save-dir", "run", "--resume",
                                                                    "run2/last.pt"], 2, "holds a run"),
    slow(C("resume in place", None, "train.py", [*TRAIN, "--save-dir", "run", "--resume", "run/last.pt", "--epochs", 2],
           0, "--epochs 1 -> 2", RUN_FILES)),
    C("dry run into a run", None, "train.py", [*TRAIN, "--save-dir", "run", "--dry-run"], 0, None),
    slow(C("analyze keeps user files in mistakes/",
           then(text("an/mistakes/notes.txt", "mine"), png("an/mistakes/0/mine.png")),
           "analyze.py", ANALYZE, 0, None, ("an/*.*", "an/mistakes/.analyze-files"))),
    C("analyze mistakes/ is a file", text("an/mistakes", "mine"), "analyze.py", ANALYZE, 2, "is a file"),
    # --- datasets smaller than a figure, a batch or a k-NN needs: the figures degrade
    slow(C("tiny dataset: train", lambda w: photo_folder(w / "t", ("0", "1"), 2), "train.py",
           ["--data-dir", "t", *TRAIN[2:]], 0, None, TRAIN_OUT, stdout="2 train, 2 val")),
    slow(C("tiny dataset: analyze --folds", tiny_folder_run, "analyze.py",
           ["tr/best.pt", "--out", "an", "--folds", 2, "--fold-epochs", 1, "--dashboard-points", 3], 0, None,
           ("an/*",), stdout="wrote metrics.json")),
    slow(C("tiny dataset: evaluate", tiny_folder_run, "evaluate.py", ["tr/best.pt", "--out", "ev"], 0, None, ("ev/*",))),
    # --- damaged outputs that report.py reads
    C("report: history truncated", history("epoch,val_acc,seconds\n1,0.5"), "report.py", ["run"], 0, "lacks columns",
      ("run/report.*",)),
    C("report: history text", history("epoch,val_acc,seconds,images_per_s\n1,abc,2,3\n"), "report.py", ["run"], 0,
      "damaged", ("run/report.*",)),
    C("report: history binary", history(b"\xff\xfe\0\0garbage"), "report.py", ["run"], 0, "history", ("run/report.*",)),
    C("report: history empty", history(""), "report.py", ["run"], 0, "lacks columns", ("run/report.*",)),
    C("report: metrics truncated", metrics('{"val": {"loss": 0.'), "report.py", ["run"], 0, "damaged", ("run/report.*",)),
    C("report: metrics a list", metrics("[]"), "report.py", ["run"], 0, "metrics.json", ("run/report.*",)),
    C("report: metrics other classes", metrics(json.dumps({"val": {"loss": 1, "correct": 1, "total": 2, "per_class": {
        "cat": {}}, "confusion": [[1]]}})), "report.py", ["run"], 0, "metrics.json", ("run/report.*",)),
    C("report: metrics binary", metrics(b"\xff\x00"), "report.py", ["run"], 0, "damaged", ("run/report.*",)),
    C("report: samples.csv binary", text("run/samples.csv", b"\xff\0,\n"), "report.py", ["run"], 0, None,
      ("run/report.*",)),
    C("report: suspects.csv non-UTF-8", text("run/suspects.csv", b"path,weight\n\xe9.png,1\n"), "report.py", ["run"],
      0, None, ("run/report.*",)),
    C("report: sweep table non-UTF-8", text("grid.md", b"# Grid\n\xff\n"), "report.py", ["run", "--sweeps", "."], 0,
      None, ("run/report.*",)),
    C("report: mistakes is a file", text("run/mistakes", "x"), "report.py", ["run"], 0, None, ("run/report.*",)),
]


@pytest.mark.parametrize("setup,script,args,code,line,outputs,warning,subprocess,stdout", CASES)
def test_bad_data(case_dir, setup, script, args, code, line, outputs, warning, subprocess, stdout):
    if setup:
        setup(case_dir)
    check(case_dir, script, args, code, line, outputs, warning, subprocess, stdout)


# ----------------------------------------------------------------------------- beyond exit codes

def test_class_order_does_not_depend_on_the_hash_seed():
    names = ["3", "03", "10", "2", "b", "B", "003"]
    orders = {tuple(sorted(p, key=I._natural_key)) for p in (names, names[::-1], sorted(names), sorted(names)[::-1])}
    assert orders == {("2", "003", "03", "3", "10", "B", "b")}


def test_copies_are_labelled_as_their_originals(tmp_path):
    photo_folder(tmp_path, ("0", "1"), 2, layout="flat")
    for name in ("img0_label0 (1).png", "img0_label0 copy.png", "img1_label1 - Copy (2).png"):
        save_image(tmp_path / name, 16)
    _, names = I.scan_folder(str(tmp_path))
    assert sorted(set(names)) == ["0", "1"] and len(names) == 7


@pytest.mark.slow  # trains a run, ~4 s
def test_outputs_get_the_umask_mode(world, tmp_path):
    """Checkpoints and every other output: the usual mode, so a group can read a shared run folder."""
    old = os.umask(0o022)
    try:
        run_train([*TRAIN, "--save-dir", tmp_path / "r", "--data-dir", world / "data"], figures=True)
    finally:
        os.umask(old)
    for f in ("best.pt", "last.pt", "history.csv", "curves.png"):
        assert (tmp_path / "r" / f).stat().st_mode & 0o777 == 0o644, f
    assert not [p for p in os.listdir(tmp_path / "r") if p.startswith(".tmp")]


@pytest.mark.slow  # analyze.py twice, ~12 s
def test_analyze_removes_only_its_own_mistakes(case_dir):
    """A second analyze.py into the same --out: the first run's mistake images go, a user's files stay."""
    check(case_dir, "analyze.py", ANALYZE, 0, None, ("an/*",))
    mine = save_image(case_dir / "an" / "mistakes" / "mine.png", 16)
    written = (case_dir / "an" / "mistakes" / ".analyze-files").read_text().split()
    stale = case_dir / "an" / "mistakes" / "0" / "val_99_pred-1_0.99.png"
    stale.parent.mkdir(exist_ok=True)
    (case_dir / "an" / "mistakes" / ".analyze-files").write_text("\n".join(written + ["0/val_99_pred-1_0.99.png"]))
    shutil.copy(mine, stale)
    check(case_dir, "analyze.py", ANALYZE, 0, None, ("an/*",))
    assert mine.is_file() and not stale.exists()
    assert (case_dir / "an" / "mistakes" / ".analyze-files").read_text().split() == written


def test_snapshot_sees_a_changed_file(tmp_path):
    """The suite's own check can fail: a changed or removed file is noticed."""
    (tmp_path / "a").write_text("1")
    before = snapshot(tmp_path)
    (tmp_path / "a").write_text("2")
    assert snapshot(tmp_path) != before
