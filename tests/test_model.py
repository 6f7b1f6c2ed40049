"""model.py: the models' parameter counts, and model.py's own command line.
(One training step of every model: test_smoke.py at the top level.)"""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import model as M
from helpers import run_script


def test_convnet_parameter_count():
    net = M.build_model("convnet", 10, 1, img_size=28)
    assert M.count_parameters(net) == 14_178


def test_resnet18_parameter_count():
    for drop in (None, 0.0, 0.2):
        net = M.build_model("resnet18", 10, 3, drop_rate=drop)
        assert M.count_parameters(net) == 11_181_642, drop


@pytest.mark.parametrize("name,size,extra", [("convnet", 28, {}), ("net", 28, {}), ("resnet18", 64, {}),
                                             ("resnet18", 17, {}), ("resnet18", 28, {"head": "mlp"})])
def test_forward_cost_agrees_with_torchs_flop_counter(name, size, extra):
    flops, acts = M.forward_cost(name, 3, size, **extra)  # (the mlp head's BatchNorm1d needs a batch of 2)
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        M.build_model(name, 2, 3, img_size=size, **extra).train()(torch.zeros(2, 3, size, size))
    assert flops == pytest.approx(counter.get_total_flops() / 2, rel=0.02)  # conv and linear are the whole cost
    assert acts > 4 * 3 * size * size  # the layers' outputs: more than the input image
    if (name, size) in (("convnet", 28), ("resnet18", 64)):  # (net's input is fixed; resnet18's stem changes below 32)
        assert M.forward_cost(name, 3, 2 * size)[0] == pytest.approx(4 * flops, rel=0.25)  # twice the side, ~4x the work


@pytest.mark.slow  # model.py as a subprocess
def test_model_py_prints_parameter_count():
    proc = run_script("model.py", "convnet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "parameters: 14178"
