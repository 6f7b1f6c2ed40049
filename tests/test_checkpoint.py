"""checkpoint.py: the format's round trip (weights and BatchNorm buffers, bit for bit), and every
damaged or foreign checkpoint refused with a CheckpointError: corrupt, truncated, missing, not a
dict, another architecture, weights that do not fit, a pickled object."""
import random

import pytest
import torch

import checkpoint as CK
import device as DV
import model as M
from helpers import load_raw


def make_checkpoint(net, name, **over):
    ck = {"model": name, "model_args": {}, "state_dict": net.state_dict(), "classes": [str(i) for i in range(10)],
          "in_channels": 1, "img_size": 28, "mean": [0.1307], "std": [0.3081],
          "data": {"dataset": "mnist", "mnist_root": "/x", "val_fraction": 0.15}, "args": {"lr": 1e-3},
          "epoch": 3, "best_val_acc": 0.5}
    ck.update(over)
    return ck


@pytest.fixture
def saved_net(tmp_path):
    """A `net` (BatchNorm: buffers matter) with non-default running stats, saved to tmp."""
    torch.manual_seed(0)
    net = M.build_model("net", 10, 1)
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 1, 28, 28))  # move the BatchNorm running statistics
    net.eval()
    path = tmp_path / "ck.pt"
    CK.save_checkpoint(make_checkpoint(net, "net"), str(path))
    return net, path


def test_checkpoint_round_trip(saved_net):
    net, path = saved_net
    raw = load_raw(path)  # plain types only
    assert set(CK.CHECKPOINT_KEYS) <= set(raw)
    ck = CK.load_checkpoint(str(path))
    loaded = CK.model_from_checkpoint(ck, expect="net")
    assert not loaded.training
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    if DV.use_channels_last(torch.device("cpu"), loaded.amp, 28):
        net = net.to(memory_format=torch.channels_last)  # the layout train.py trains and evaluates in
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    for k, v in net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert not any(p.name.startswith(".tmp-") for p in path.parent.iterdir())  # no temp files left


def test_checkpoint_corrupt_file_raises(tmp_path):
    bad = tmp_path / "random.pt"
    bad.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CK.CheckpointError):
        CK.load_checkpoint(str(bad))


def test_checkpoint_truncated_file_raises(saved_net, tmp_path):
    _, path = saved_net
    blob = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CK.CheckpointError):
        CK.load_checkpoint(str(cut))


def test_checkpoint_corrupt_file_message_says_unreadable(tmp_path):
    bad = tmp_path / "random.pt"
    bad.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CK.CheckpointError) as e:
        CK.load_checkpoint(str(bad))
    assert "not a readable checkpoint" in str(e.value)


def test_checkpoint_missing_path_raises(tmp_path):
    with pytest.raises(CK.CheckpointError, match="not found"):
        CK.load_checkpoint(str(tmp_path / "nope.pt"))


def test_checkpoint_missing_keys_or_not_a_dict_raise(saved_net, tmp_path):
    net, _ = saved_net
    torch.save({"state_dict": net.state_dict()}, tmp_path / "partial.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for name in ("partial.pt", "tensor.pt"):
        with pytest.raises(CK.CheckpointError):
            CK.load_checkpoint(str(tmp_path / name))


def test_checkpoint_other_architecture_raises(saved_net):
    _, path = saved_net
    ck = CK.load_checkpoint(str(path))
    with pytest.raises(CK.CheckpointError, match="convnet"):
        CK.model_from_checkpoint(ck, expect="convnet")


def test_checkpoint_weights_that_do_not_fit_raise(saved_net):
    _, path = saved_net
    ck = CK.load_checkpoint(str(path))
    ck["classes"] = ck["classes"][:5]  # a 5-class model cannot take 10-class weights
    with pytest.raises(CK.CheckpointError):
        CK.model_from_checkpoint(ck)


UNPICKLED = []


def _record(x):
    UNPICKLED.append(x)
    return x


class Payload:
    """Unpickling this would call _record: weights_only loading must refuse it first."""

    def __reduce__(self):
        return (_record, ("unpickled",))


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    net = M.build_model("convnet", 10, 1)
    ck = make_checkpoint(net, "convnet", args={"evil": Payload()})
    torch.save(ck, tmp_path / "evil.pt")
    with pytest.raises(CK.CheckpointError):
        CK.load_checkpoint(str(tmp_path / "evil.pt"))
    assert UNPICKLED == []
