"""model.py: the models' parameter counts, and model.py's own command line.
(One training step of every model: test_smoke.py at the top level.)"""
import pytest

import model as M
from helpers import run_script


def test_convnet_parameter_count():
    net = M.build_model("convnet", 10, 1, img_size=28)
    assert M.count_parameters(net) == 14_178


def test_resnet18_parameter_count():
    for drop in (None, 0.0, 0.2):
        net = M.build_model("resnet18", 10, 3, drop_rate=drop)
        assert M.count_parameters(net) == 11_181_642, drop


@pytest.mark.slow  # model.py as a subprocess
def test_model_py_prints_parameter_count():
    proc = run_script("model.py", "convnet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "parameters: 14178"
