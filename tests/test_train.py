"""train.py: the lr schedules, mixup, early stopping, exact resume, what a run writes and prints,
--test-dir, --clip-grad, --head mlp, --sample-weights and --amp in real runs, and its command line
as a subprocess (a user error is one `error:` line, --dry-run exits 0).

The runs are tiny: 1% of the tests' MNIST subset with the 14k-parameter convnet (helpers.tiny_train_args)
or a few drawn-digit photos, in this process (helpers.run_train) unless the command line is the point."""
import pytest

from helpers import MNIST_ROOT, assert_one_line_error, run_script, run_scripts, tiny_train_args


# ----------------------------------------------------------------------------- the command line (subprocesses)

@pytest.fixture(scope="module")
def script_errors(tmp_path_factory, mnist_root, fake_convnet_dir):
    """train.py's command-line cases, run as subprocesses (the `if __name__ == "__main__"` block is
    what is tested), started together once: {case: CompletedProcess}."""
    tmp = tmp_path_factory.mktemp("cli")
    tiny = lambda name, *extra: tiny_train_args(mnist_root, tmp / name, "--augment", "none", *extra)  # noqa: E731
    return run_scripts({
        "train_missing_data_dir": ("train.py", "--data-dir", tmp / "no_such_folder", "--save-dir", tmp / "s1",
                                   "--quiet"),
        "train_missing_mnist": ("train.py", "--dataset", "mnist", "--mnist-root", "/nonexistent", "--no-download",
                                "--save-dir", tmp / "s2", "--quiet"),
        "resume_best_other_model": ("train.py", *tiny("s3", "--model", "net", "--resume", fake_convnet_dir / "best.pt")),
        "resume_last_other_model": ("train.py", *tiny("s4", "--model", "net", "--resume", fake_convnet_dir / "last.pt")),
        "dry_run": ("train.py", *tiny("s5", "--dry-run")),
    })


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_train_missing_data_dir(script_errors):
    assert_one_line_error(script_errors["train_missing_data_dir"], "no_such_folder")


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_train_missing_mnist_no_download(script_errors):
    assert_one_line_error(script_errors["train_missing_mnist"], "/nonexistent", "train-images-idx3-ubyte")


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_resume_best_pt_of_another_model(script_errors):
    assert_one_line_error(script_errors["resume_best_other_model"], "best.pt")


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_resume_last_pt_of_another_model(script_errors):
    assert_one_line_error(script_errors["resume_last_other_model"], "convnet", "net")


@pytest.mark.slow  # a script run as a subprocess (fixture script_errors)
def test_dry_run(script_errors):
    proc = script_errors["dry_run"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dry run" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # train.py as a subprocess
def test_mnist_with_synthetic_is_one_error_line(tmp_path):
    r = run_script("train.py", "--dataset", "mnist", "--mnist-root", MNIST_ROOT, "--no-download", "--synthetic-n", 10,
                   "--epochs", 1, "--save-dir", tmp_path / "run")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "--synthetic-n" in r.stderr and "Traceback" not in r.stderr
