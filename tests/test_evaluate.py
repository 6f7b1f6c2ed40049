"""evaluate.py: the metrics of every split (the same lines train.py printed, fp32 and bf16),
--images on labelled and unlabelled folders (the evaluation path's exact logits), test-time
augmentation, ensembles, calibration (ECE, --temperature auto), a folder run end to end, and its
command line as a subprocess (a user error is one `error:` line).

On the tests' MNIST subset (conftest's tiny_run and mnist_run) or small photo folders."""
import random

import pytest

from helpers import assert_one_line_error, run_scripts


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
