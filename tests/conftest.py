"""pytest's hooks and the fixtures shared by several test files: the repo on sys.path, the local
MNIST root, small fabricated checkpoints and the trained runs more than one file reads. The
helpers themselves (the photo-folder builder, train.py in this process, ...) are in helpers.py.

Nothing here downloads: MNIST is the committed subset in tests/data/MNIST/raw/ (2,000 training
and 500 test digits, written by tests/data/make_mnist_subset.py), so a fresh clone runs every test.
Skip reasons are printed (-rs in pytest.ini); under CI (the CI variable set) a skip is a failure.
"""
import os
import shutil
import sys
from pathlib import Path

# One thread for torch and OpenMP (sklearn's t-SNE): these tests push tiny tensors through
# per-sample transforms, where intra-op threads on a shared 2-core machine only spin (10x slower).
# It also keeps CPU results independent of the machine's core count.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from helpers import (DRAWN, MIXED, MNIST_ROOT, MNIST_RUN_IMAGES, fabricate_checkpoint,  # noqa: E402
                     have_mnist, no_figures, photo_folder, run_analyze, run_train, tiny_train_args)
from adversarial import case_dir, world  # noqa: E402,F401 (fixtures: here, so the session's world is built once)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI nothing may skip: a skipped test (a missing browser, file or subset) is reported
    as a failure with its reason, so CI cannot pass with parts of the suite silently not run."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"skipped under CI (CI is set, nothing may skip): {reason}"


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def mnist_root():
    """The folder that holds MNIST/raw/ (torchvision layout); skips when the files are absent."""
    if not have_mnist(MNIST_ROOT):
        pytest.skip(f"MNIST IDX files not in {MNIST_ROOT / 'MNIST' / 'raw'}")
    return MNIST_ROOT


@pytest.fixture(scope="session")
def fake_convnet_dir(tmp_path_factory, mnist_root):
    """best.pt (weights only) and last.pt (with training state) of an untrained convnet."""
    d = tmp_path_factory.mktemp("fake_convnet")
    fabricate_checkpoint(d / "best.pt", mnist_root)
    fabricate_checkpoint(d / "last.pt", mnist_root, with_state=True)
    return d


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """A flat folder of the digit classes 0-9, 3 noise photos each (mixed sizes and formats)."""
    return photo_folder(tmp_path_factory.mktemp("digits"), [str(c) for c in range(10)], 3, layout="flat",
                        stem="img{k:03d}", **MIXED)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, mnist_root):
    """One epoch of convnet on 1% of MNIST, with its figures unless figures=False: tiny_run(*extra train.py
    options) -> (save dir, what train.py printed, its results), trained once per set of options in a session."""
    runs = {}

    def run(*extra, figures=True):
        key = (*map(str, extra), figures)
        if key not in runs:
            d = tmp_path_factory.mktemp("tiny_run")
            results, out = run_train(tiny_train_args(mnist_root, d, "--epochs", 1, "--warmup-epochs", 0, "--augment",
                                                     "none", "--val-fraction", 0.05, *extra), figures=figures)
            runs[key] = d, out, results
        return runs[key]
    return run


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory, mnist_root):
    """`net` trained 3 epochs on the MNIST subset (~90% test) in run/; its first MNIST_RUN_IMAGES test
    digits as PNG files in both layouts (sub/, flat/), plus sub/cat/, a class the model does not know.
    Returns (the folder, the labels of those digits)."""
    tmp = tmp_path_factory.mktemp("use")
    run_train(["--dataset", "mnist", "--mnist-root", mnist_root, "--no-download", "--model", "net", "--epochs", 3,
               "--warmup-epochs", 0, "--device-data", "--quiet", "--workers", 0, "--save-dir", tmp / "run"])
    import data as D
    images, labels = D.load_mnist(str(mnist_root), train=False, download=False)
    n = MNIST_RUN_IMAGES
    for layout in ("sub", "flat"):
        photo_folder(tmp / layout, [str(int(c)) for c in labels[:n]], 1, layout=layout, stem="t{k:03d}",
                     pixels=images[:n, 0].numpy())
    photo_folder(tmp / "sub", ["cat"], 1, stem="c", pixels=images[:1, 0].numpy())
    return tmp, labels[:n]


@pytest.fixture(scope="session")
def analysed_run(tmp_path_factory, mnist_root):
    """A 1-epoch convnet on a 60-photo digit folder plus 30 synthetic composites (so the dashboard has
    every split and both sources), analysed, at <sweep>/cell/seed0/ beside a grid.md + grid.png of
    that sweep (a fake experiments --out folder). Returns the run folder."""
    import analyze
    tmp = tmp_path_factory.mktemp("report")
    photos = photo_folder(tmp / "photos", [str(d) for d in range(10)], 6, layout="flat", **DRAWN)
    sweep = tmp / "sweep"
    run = sweep / "cell" / "seed0"
    run_train(["--data-dir", photos, "--mnist-root", mnist_root, "--no-download", "--img-size", 16, "--model",
               "convnet", "--epochs", 1, "--synthetic-n", 30, "--augment", "none", "--quiet", "--workers", 0,
               "--save-dir", run], figures=True)
    (sweep / "grid.md").write_text("# Grid\n\n`python experiments.py grid ...`\n\n| lr \\ batch_size | 32 |\n"
                                   "|---|---|\n| 1e-3 | **91.00** (best) |\n")
    shutil.copy(run / "curves.png", sweep / "grid.png")
    analyze.main(analyze.get_args_parser().parse_args([
        str(run / "best.pt"), "--tsne-samples", "50", "--queries", "4", "--dashboard-points", "80"]))
    return run


@pytest.fixture(scope="session")
def flipped_run(tmp_path_factory, mnist_root):
    """A photo folder of n MNIST training digits (`d<k>_label<d>.png`), `flipped` of them labelled
    with another digit and one val image overwritten with a training image of the same class
    (leakage: `dup` = (train copy, val copy)); a checkpoint trained on it (`ckpt`), and analyze.py
    --folds on it (`out`)."""
    import analyze as A
    import numpy as np
    import data as D
    import images as I
    n, n_flipped, folds = 1200, 120, 3  # 10% of the labels flipped
    tmp = tmp_path_factory.mktemp("quality")
    root = tmp / "digits"
    images, labels = D.load_mnist(str(mnist_root), train=True, download=False)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(labels), n, replace=False)
    flip = set(rng.choice(n, n_flipped, replace=False).tolist())
    names, flipped = [], set()
    for k, i in enumerate(pick.tolist()):
        label = int(labels[i])
        if k in flip:
            label = int((label + 1 + rng.integers(9)) % 10)
            flipped.add(f"d{k:04d}_label{label}.png")
        names.append(str(label))
    photo_folder(root, names, 1, layout="flat", stem="d{k:04d}", pixels=images[pick, 0].numpy())
    # without --group-split the split depends on names and labels only, so a file's pixels can
    # change afterwards (the group split would keep the copy on its original's side: tested in test_data)
    paths, names = I.scan_folder(str(root))
    train_idx, val_idx = D.stratified_split(torch.tensor([int(c) for c in names]), 0.15, 0)
    clean = lambda idx: [paths[i] for i in idx.tolist() if os.path.basename(paths[i]) not in flipped]  # noqa: E731
    src = clean(train_idx)[0]
    dst = next(p for p in clean(val_idx) if p.endswith(src[-10:]))  # same label: `_label<d>.png`
    shutil.copyfile(src, dst)
    run_train(["--data-dir", root, "--save-dir", tmp / "run", "--no-group-split", "--model", "convnet", "--img-size",
               28, "--epochs", 10, "--batch-size", 32, "--lr", 3e-3, "--augment", "none", "--warmup-epochs", 0,
               "--mix-prob", 0, "--label-smoothing", 0, "--workers", 0, "--device-data", "--quiet"])
    with pytest.MonkeyPatch.context() as mp:  # the fold runs' figures and report.py's pages: tested elsewhere
        no_figures(mp)
        mp.setattr(A, "write_pages", lambda *a, **k: None)
        run_analyze(tmp / "run" / "best.pt", tmp / "out", "--folds", folds, "--fold-epochs", 10)
    return {"root": root, "ckpt": tmp / "run" / "best.pt", "out": tmp / "out", "flipped": flipped, "dup": (src, dst),
            "n": n, "folds": folds}
