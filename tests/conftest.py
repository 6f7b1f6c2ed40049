"""Shared fixtures: the repo on sys.path, the local MNIST root, small fabricated checkpoints,
and a helper that runs a script as a subprocess.

Nothing here downloads: MNIST is the committed subset in tests/data/MNIST/raw/ (2,000 training
and 500 test digits, written by tests/data/make_mnist_subset.py), so a fresh clone runs every test.
Skip reasons are printed (-rs in pytest.ini); under CI (the CI variable set) a skip is a failure.
"""
import os
import subprocess
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

import checkpoint as CK  # noqa: E402
import data as D  # noqa: E402
import model as M  # noqa: E402

MNIST_ROOT = Path(__file__).resolve().parent / "data"  # holds MNIST/raw/: the tests' subset


def have_mnist(root=MNIST_ROOT):
    raw = Path(root) / "MNIST" / "raw"
    return all((raw / f).is_file() or (raw / (f + ".gz")).is_file() for f in D.MNIST_FILES)


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


def tiny_train_args(mnist_root, save_dir, *extra):
    """The smallest sensible train.py command line on MNIST (a list of strings)."""
    return ["--dataset", "mnist", "--mnist-root", str(mnist_root), "--no-download",
            "--model", "convnet", "--train-fraction", "0.01", "--batch-size", "64",
            "--quiet", "--workers", "0", "--save-dir", str(save_dir), *map(str, extra)]


def fabricate_checkpoint(path, mnist_root, model_name="convnet", with_state=False, seed=0):
    """A checkpoint in the toolkit's format without training: a freshly initialised model and
    the data config that train.py would store for a tiny MNIST run."""
    import train
    torch.manual_seed(seed)
    args = train.resolve_defaults(train.get_args_parser().parse_args(
        tiny_train_args(mnist_root, Path(path).parent, "--model", model_name)))
    kwargs = M.model_kwargs(model_name, img_size=28, drop_rate=args.drop_rate, head=args.head, width=args.width)
    net = M.build_model(model_name, 10, 1, **kwargs)
    ck = {"model": model_name, "model_args": kwargs, "state_dict": net.state_dict(),
          "classes": [str(i) for i in range(10)], "in_channels": 1, "img_size": 28,
          "mean": list(D.MNIST_MEAN), "std": list(D.MNIST_STD), "data": D.data_config(args),
          "args": vars(args), "epoch": 1, "best_val_acc": 0.1, "history": []}
    if with_state:
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        ck.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), scaler={},
                  rng={"torch": torch.get_rng_state()},
                  early_stopping={"acc": 0.1, "epoch": 1, "bad_epochs": 0})
    CK.save_checkpoint(ck, str(path))
    return Path(path)


@pytest.fixture(scope="session")
def fake_convnet_dir(tmp_path_factory, mnist_root):
    """best.pt (weights only) and last.pt (with training state) of an untrained convnet."""
    d = tmp_path_factory.mktemp("fake_convnet")
    fabricate_checkpoint(d / "best.pt", mnist_root)
    fabricate_checkpoint(d / "last.pt", mnist_root, with_state=True)
    return d


def run_script(script, *args, cwd=REPO, timeout=120):
    """Run `python script args...` in the repo; returns the CompletedProcess (text)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # warnings are NOT silenced
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def interrupt_at_epoch(epoch):
    """A stand-in for train.train_one_epoch that raises KeyboardInterrupt when it reaches
    `epoch` (a run killed there, with last.pt from the epoch before) and trains otherwise."""
    import train
    real = train.train_one_epoch

    def interrupted(model, loader, optimizer, scheduler, scaler, device, at_epoch, *rest, **kw):
        if at_epoch == epoch:
            raise KeyboardInterrupt
        return real(model, loader, optimizer, scheduler, scaler, device, at_epoch, *rest, **kw)
    return interrupted
