"""analyze.py: its figures, Grad-CAM, the dashboard's points, and the data-quality outputs on a photo
folder of MNIST digits whose labels are corrupted on purpose (conftest's flipped_run): the
label-issue finder (out-of-fold confident learning) must rank the flipped samples first;
samples.csv, suspects.csv (a --sample-weights file), duplicates.csv and mistakes/ are checked on
the same run. Its command line as a subprocess: a user error is one `error:` line."""
import pytest

from helpers import assert_one_line_error, run_script


# ----------------------------------------------------------------------------- the command line (subprocesses)

@pytest.mark.slow  # analyze.py as a subprocess
def test_analyze_missing_checkpoint(tmp_path):
    assert_one_line_error(run_script("analyze.py", tmp_path / "missing.pt"), "missing.pt")
