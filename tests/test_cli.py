"""The scripts' command-line contract: a user error exits 2 with one `error: ...` line on stderr
and no traceback; `--dry-run` exits 0.

Every case is a real subprocess (the `if __name__ == "__main__"` blocks are what is tested).
Importing torch costs seconds per process, so the cases are started together once per module
(a few at a time) and each test checks its own result."""
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import run_script, tiny_train_args

pytestmark = pytest.mark.slow  # every case is a script run as a subprocess (the module fixture cli)


@pytest.fixture(scope="module")
def cli(tmp_path_factory, mnist_root, fake_convnet_dir):
    tmp = tmp_path_factory.mktemp("cli")
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(random.Random(0).randbytes(4096))
    tiny = lambda name, *extra: tiny_train_args(mnist_root, tmp / name, "--augment", "none", *extra)  # noqa: E731
    cases = {
        "train_missing_data_dir": ("train.py", "--data-dir", tmp / "no_such_folder", "--save-dir", tmp / "s1",
                                   "--quiet"),
        "train_missing_mnist": ("train.py", "--dataset", "mnist", "--mnist-root", "/nonexistent", "--no-download",
                                "--save-dir", tmp / "s2", "--quiet"),
        "evaluate_missing": ("evaluate.py", tmp / "missing.pt"),
        "evaluate_corrupt": ("evaluate.py", corrupt),
        "evaluate_data_moved": ("evaluate.py", fake_convnet_dir / "best.pt", "--mnist-root", tmp / "moved",
                                "--out", tmp / "ev"),
        "analyze_missing": ("analyze.py", tmp / "missing.pt"),
        "resume_best_other_model": ("train.py", *tiny("s3", "--model", "net", "--resume", fake_convnet_dir / "best.pt")),
        "resume_last_other_model": ("train.py", *tiny("s4", "--model", "net", "--resume", fake_convnet_dir / "last.pt")),
        "dry_run": ("train.py", *tiny("s5", "--dry-run")),
    }
    with ThreadPoolExecutor(3) as pool:
        futures = {k: pool.submit(run_script, *v) for k, v in cases.items()}
        return {k: f.result() for k, f in futures.items()}


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])


def test_train_missing_data_dir(cli):
    assert_one_line_error(cli["train_missing_data_dir"], "no_such_folder")


def test_train_missing_mnist_no_download(cli):
    assert_one_line_error(cli["train_missing_mnist"], "/nonexistent", "train-images-idx3-ubyte")


def test_evaluate_missing_checkpoint(cli):
    assert_one_line_error(cli["evaluate_missing"], "missing.pt")


def test_evaluate_corrupt_checkpoint(cli):
    assert_one_line_error(cli["evaluate_corrupt"], "corrupt.pt")


def test_evaluate_when_the_data_moved(cli):
    assert_one_line_error(cli["evaluate_data_moved"], "moved")


def test_analyze_missing_checkpoint(cli):
    assert_one_line_error(cli["analyze_missing"], "missing.pt")


def test_resume_best_pt_of_another_model(cli):
    assert_one_line_error(cli["resume_best_other_model"], "best.pt")


def test_resume_last_pt_of_another_model(cli):
    assert_one_line_error(cli["resume_last_other_model"], "convnet", "net")


def test_dry_run(cli):
    proc = cli["dry_run"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dry run" in proc.stdout
    assert "Traceback" not in proc.stderr
