"""Adversarial suite, part 1: every numeric and path option of every script, checked up front.

One case per line: (script, arguments added to the script's base command line, lower-case
fragment of the one `error:` line). Each runs in a fresh copy of a tiny world (a 3-class photo
folder `data/` and a trained convnet run `run/`), exits 2 with one line before any data is read
or model trained, and changes no file. See tests/adversarial.py for how a case is judged."""
import pytest
import torch

from adversarial import TRAIN, check, slow

BASE = {
    "train.py": TRAIN,
    "evaluate.py": ["run/best.pt", "--data-dir", "data", "--out", "ev"],
    "analyze.py": ["run/best.pt", "--data-dir", "data", "--out", "an"],
    "report.py": ["run"],
    "experiments.py": ["learning-curve", "--out", "sweep", *TRAIN[:-4]],
    "synth.py": ["--data-dir", "data", "--mnist-root", "nomnist", "--no-download", "--n", 4, "--img-size", 16],
    "bench.py": ["--data-dir", "data", "--img-size", 12, "--only", "cache", "--out", "bench.json"],
    "model.py": ["convnet"],
}


def cases(script, *rows):
    return [pytest.param(script, list(args), text, id=f"{script[:-3]}:{' '.join(map(str, args))}")
            for args, text in rows]


def bad(option, values, text=None):
    return [((option, v), text or option) for v in values]


TRAIN_CASES = cases("train.py",
    *bad("--epochs", [0, -1]), *bad("--batch-size", [0, -5]), *bad("--lr", [0, -1, "nan", "inf"]),
    *bad("--min-lr", [-1, 1, "nan"], "--min-lr"), *bad("--momentum", [-0.1, 1, 5, "nan"]),
    *bad("--weight-decay", [-1, "inf"]), *bad("--label-smoothing", [-0.1, 1, 2]),
    *bad("--mixup-alpha", [-1]), *bad("--mix-prob", [-0.1, 1.5]), *bad("--clip-grad", [-1, 0]),
    *bad("--warmup-epochs", [-1, "nan"]), *bad("--step-size", [0]), *bad("--gamma", [0, 1.5, -1]),
    *bad("--t0", [0, -3]), *bad("--t-mult", [0]), *bad("--patience", [0, -1]), *bad("--seed", [-1]),
    *bad("--workers", [-1]), *bad("--drop-rate", [-0.1, 1]), *bad("--width", [0, -4]),
    *bad("--val-fraction", [0, 1, -0.5, 1.5, "nan"]), *bad("--train-fraction", [0, 1.5, -1]),
    *bad("--img-size", [0, -1]), *bad("--img-size", [5, 9], "(it takes --img-size >= 10)"),
    *bad("--synthetic-n", [-1, -100]), *bad("--split-seed", [-1]), *bad("--folds", [1, -2]),
    *bad("--threads", [0, -1]), *bad("--synthetic-ratio", [0, -0.5, 1.5, "nan"]), *bad("--group-threshold", [0, -1, 1.01, "nan"]),
    (("--group-regex", "("), "--group-regex '(' is not a regular expression"),
    (("--group-regex", "[a-"), "is not a regular expression"),
    (("--fold", 0), "--fold"), (("--folds", 3, "--fold", 3), "in 0..2"), (("--folds", 3, "--fold", -1), "in 0..2"),
    (("--model", "mnist_example"), "28 or 29"), (("--model", "mnist_example", "--img-size", 32), "28 or 29"),
    (("--model", "net", "--img-size", 7), ">= 8"),
    (("--cache-dir", "notes.txt"), "--cache-dir notes.txt is a file"),
    (("--save-dir", "notes.txt"), "cannot create --save-dir notes.txt"),
    (("--data-dir", "missing"), "data folder not found: missing"),
    (("--data-dir", "notes.txt"), "data folder not found: notes.txt"),
    (("--run-as", "--epochs", 1), "no data given: pass --data-dir DIR (a photo folder) or --dataset mnist"),
    (("--device", "bogus"), "--device 'bogus' is not a device"), (("--device", "tpu"), "is not a device"),
    (("--device", "cuda:7"), "--device cuda:7"),
    (("--sample-weights", "missing.csv"), "--sample-weights file not found"),
    (("--resume", "missing.pt"), "checkpoint not found: missing.pt"),
    (("--resume", "notes.txt"), "not a readable checkpoint"), (("--resume", "table.csv"), "not a readable checkpoint"),
    (("--resume", "config.json"), "not a readable checkpoint"), (("--resume", "empty.pt"), "not a readable checkpoint"),
    (("--resume", "noise.pt"), "not a readable checkpoint"), (("--resume", "data/0/img0.png"), "not a readable checkpoint"),
    (("--resume", "run/best.pt"), "no training state"),
    (("--resume", "run/last.pt", "--model", "net", "--img-size", 12), "not 'net'"),
    (("--resume", "run/last.pt", "--optimizer", "sgd"), "--optimizer"),
    (("--resume", "run/last.pt", "--drop-rate", 0.5), "model settings"),
    (("--epochs", "abc"), "invalid int value"), (("--model", "vgg"), "invalid choice"),
    (("--optimizer", "adam"), "invalid choice"), (("--scheduler", "none"), "invalid choice"),
    (("--img-size", "1.5"), "invalid int value"), (("--lr", "fast"), "invalid float value"),
)
if not torch.cuda.is_available():
    TRAIN_CASES += cases("train.py", (("--device", "cuda"), "no cuda gpu"))
    TRAIN_CASES += cases("evaluate.py", (("--device", "cuda"), "no cuda gpu"))
    TRAIN_CASES += cases("analyze.py", (("--device", "cuda"), "no cuda gpu"))
    TRAIN_CASES += cases("bench.py", (("--device", "cuda"), "no cuda gpu"))

EVALUATE_CASES = cases("evaluate.py",
    *bad("--batch-size", [0, -1]), (("--device", "bogus"), "not a device"), (("--out", "notes.txt"), "is a file"),
    (("--data-dir", "missing"), "--data-dir folder not found"), (("--mnist-root", "missing"), "--mnist-root folder"),
    (("--images", "missing"), "--images folder not found"), (("--images", "notes.txt"), "is not an image file"),
    (("--split", "test"), "no test split"), (("--split", "bogus"), "invalid choice"),
    *bad("--temperature", [0, -1, "nan", "inf", "warm"]), *bad("--reject-below", [-0.1, 1.5, "nan"]),
    (("--reject-below", 0.5), "--reject-below applies to --images"),
)
CHECKPOINTS = [("missing.pt", "checkpoint not found"), ("notes.txt", "not a readable checkpoint"),
               ("table.csv", "not a readable checkpoint"), ("config.json", "not a readable checkpoint"),
               ("empty.pt", "not a readable checkpoint"), ("noise.pt", "not a readable checkpoint"),
               ("data", "checkpoint not found"), ("data/0/img0.png", "not a readable checkpoint")]
for script in ("evaluate.py", "analyze.py"):
    EVALUATE_CASES += [pytest.param(script, ["--checkpoint-as", ck], text, id=f"{script[:-3]}:checkpoint {ck}")
                       for ck, text in CHECKPOINTS]

ANALYZE_CASES = cases("analyze.py",
    *bad("--tsne-samples", [1, 0, -5]), *bad("--queries", [0, -1]), *bad("--neighbors", [0, -2]),
    *bad("--knn", [0, -1]), *bad("--dashboard-points", [2, 0]), *bad("--duplicate-threshold", [0, 1.5, -1, "nan"]),
    *bad("--max-mistakes", [-1]), *bad("--folds", [1, -1]), *bad("--fold-epochs", [0]), *bad("--seed", [-1]),
    *bad("--batch-size", [0]), (("--device", "bogus"), "not a device"), (("--out", "notes.txt"), "is a file"),
    (("--data-dir", "missing"), "--data-dir folder not found"), (("--mnist-root", "missing"), "--mnist-root folder"),
    (("--unlabeled", "missing"), "--unlabeled folder not found"), (("--unlabeled", "data"), "is the training folder"),
    (("--unlabeled", "data/1"), "is inside the training folder"), (("--reject-below", 0.5), "give --unlabeled"),
    (("--unlabeled", "data/1", "--unlabeled-only"), "is inside the training folder"),
    (("--unlabeled-only",), "--unlabeled-only ranks --unlabeled photos"),
    *bad("--reject-below", [2, "nan"]),
)

REPORT_CASES = [pytest.param("report.py", args, text, id=f"report:{' '.join(args)}") for args, text in [
    (["--run-as", "missing"], "run folder not found"), (["--run-as", "notes.txt"], "run folder not found"),
    (["--checkpoint", "notes.txt"], "not a readable checkpoint"), (["--checkpoint", "missing.pt"], "checkpoint not found"),
    (["--checkpoint", "config.json"], "not a readable checkpoint"), (["--sweeps", "missing"], "--sweeps folder not found"),
    (["--run-as", "data"], "checkpoint not found"),
]]

EXPERIMENT_CASES = cases("experiments.py",
    *bad("--seeds", [0, -1]), (("--out", "notes.txt"), "--out notes.txt is a file"),
    (("--epochs", 0), "--epochs"), (("--lr", -1), "--lr"), (("--t0", 0), "--t0"), (("--img-size", 5), ">= 10"),
    (("--clip-grad", -1), "--clip-grad"), (("--data-dir", "missing"), "data folder not found"),
    (("--dry-run",), "--dry-run makes no results"), (("--fractions", "0"), "fractions must be in (0, 1]"),
    (("--fractions", "a,b"), "not a list of fractions"), (("--device", "bogus"), "not a device"),
)
EXPERIMENT_CASES += [pytest.param("experiments.py", ["--grid-as", *args], text, id=f"experiments:grid {' '.join(args)}")
                     for args, text in [
    (["--grid", "lr=1e-3", "--grid", "no_such=1"], "no option --no-such"),
    (["--grid", "lr=1e-3,-1", "--grid", "batch_size=4"], "--lr"),
    (["--grid", "seed=1,2", "--grid", "lr=1e-3"], "set by experiments.py"),
    (["--grid", "lr=1e-3"], "two different --grid"),
    (["--grid", "lr=1e-3", "--grid", "lr=1e-2"], "two different --grid"),
    (["--grid", "lr"], "expected name=v1,v2"),
    (["--grid", "batch_size=0,4", "--grid", "lr=1e-3"], "--batch-size"),
    (["--grid", "t0=0", "--grid", "lr=1e-3"], "--t0"),
]]
EXPERIMENT_CASES += [pytest.param("experiments.py", ["--run-as", "ablation", "--out", "sweep", *TRAIN[:-4], *args], text,
                                  id=f"experiments:ablation {' '.join(map(str, args))}") for args, text in [
    (["--synthetic-on", 0], "--synthetic-on must be >= 1"), (["--synthetic-on", -5], "--synthetic-on"),
    (["--aug-on", "none"], "invalid choice"), (["--seeds", 0], "--seeds"),
]]

SYNTH_CASES = cases("synth.py",
    *bad("--n", [0, -1], "--n"), *bad("--img-size", [0, -1], "--img-size"), *bad("--batch-size", [0], "--batch-size"),
    *bad("--seed", [-1], "--seed"), *bad("--val-fraction", [0, 1, -1], "--val-fraction"),
    *bad("--split-seed", [-1], "--split-seed"), (("--out", "data"), "--out data is a folder"),
    (("--export", "notes.txt"), "--export notes.txt is a file"), (("--cache-dir", "notes.txt"), "--cache-dir notes.txt"),
    (("--data-dir", "missing"), "data folder not found"), (("--data-dir", "notes.txt"), "data folder not found"),
    ((), "needs digit classes 0-9"),  # the world's folder has 3 classes (the default source, fonts, needs no MNIST)
    (("--synthetic-source", "mnist"), "needs digit classes 0-9"),
)

BENCH_CASES = cases("bench.py",
    *bad("--seconds", [0, -1, "nan"]), *bad("--batch-size", [0]), *bad("--workers", [-1]), *bad("--img-size", [0]),
    *bad("--target", [0, 2]), *bad("--peer-epochs", [0]), *bad("--folder-n", [0]), *bad("--only", ["bogus", "cache,x"]),
    (("--out", "data"), "--out data is a folder"), (("--device", "bogus"), "not a device"),
    (("--data-dir", "missing"), "data folder not found"),
)

MODEL_CASES = cases("model.py",
    *bad("--in-channels", [0, -1]), *bad("--num-classes", [0, -3]), (("--img-size", 0), "does not fit model"),
    (("--img-size", 9), "(it takes --img-size >= 10)"), (("--img-size", -5), ">= 10"),
)
MODEL_CASES += [pytest.param("model.py", ["--model-as", *args], text, id=f"model:{' '.join(map(str, args))}")
                for args, text in [(["mnist_example", "--img-size", 32], "28 or 29"),
                                   (["mnist_example", "--img-size", 14], "28 or 29"),
                                   (["net", "--img-size", 7], ">= 8"), (["vgg"], "invalid choice")]]

ALL = (TRAIN_CASES + EVALUATE_CASES + ANALYZE_CASES + REPORT_CASES + EXPERIMENT_CASES + SYNTH_CASES + BENCH_CASES
       + MODEL_CASES)
# marked slow (pytest.ini), measured with pytest --durations=0: a bad --img-size has the model tried at
# every size up to 64 (model.img_size_error). train.py caches that per model, so its first case per model
# pays (~1 s for net: marked; the convnet and mnist_example ones stay); model.py runs afresh each time,
# so each of its cases pays (0.4-1.4 s): marked, train.py's cases keep the check in the fast loop.
SLOW = {"train:--model net --img-size 7", "model:--img-size 0", "model:--img-size 9", "model:--img-size -5",
        "model:mnist_example --img-size 32", "model:mnist_example --img-size 14", "model:net --img-size 7"}
ALL = [slow(case) if case.id in SLOW else case for case in ALL]


def command_line(script, args):
    """The base command line with the case's arguments; `--X-as` arguments replace its first part."""
    base = list(BASE[script])
    if args and args[0] == "--checkpoint-as":
        return [args[1], *base[1:]]
    if args and args[0] == "--run-as":
        return [args[1], *args[2:]]
    if args and args[0] == "--grid-as":
        return ["grid", *base[1:], *args[1:]]
    if args and args[0] == "--model-as":
        return list(args[1:])
    return base + list(args)


@pytest.mark.parametrize("script,args,text", ALL)
def test_bad_option(case_dir, script, args, text):
    check(case_dir, script, command_line(script, args), 2, text)


# What a newcomer passes that is not wrong: a run folder for a checkpoint (its best.pt, said in one
# line), one image file for --images. (script, arguments, outputs it writes, a fragment of stdout)
WELCOME = [
    ("evaluate.py", ["run", "--data-dir", "data", "--out", "ev"], ("ev/*",), "run is a run folder: using run/best.pt"),
    ("evaluate.py", ["run/best.pt", "--images", "data/1/img0.png", "--out", "ev"], ("ev/*",),
     "classified 1 image -> "),
    ("evaluate.py", ["run/best.pt", "--images", "data/1/img0.png", "--out", "ev"], ("ev/*",), "data/1/img0.png: "),
    ("export.py", ["run", "--out", "ex.pt"], ("ex.pt",), "using run/best.pt"),
    ("report.py", ["run", "--checkpoint", "run"], ("run/report.*",), "using run/best.pt"),
    slow(pytest.param("analyze.py", ["run", "--data-dir", "data", "--out", "an", "--tsne-samples", 4], ("an/*", "an/*/*/*"),
                      "using run/best.pt", id="analyze.py run")),
]


@pytest.mark.parametrize("script,args,outputs,stdout", WELCOME)
def test_a_run_folder_or_one_image_is_taken(case_dir, script, args, outputs, stdout):
    check(case_dir, script, args, 0, None, outputs, stdout=stdout)
