"""checkpoint.py: the format's round trip (weights and BatchNorm buffers, bit for bit), and every
damaged or foreign checkpoint refused with a CheckpointError: corrupt, truncated, missing, not a
dict, another architecture, weights that do not fit, a pickled object."""
import io
import random
import zipfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


def zip_of(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def torch_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


NOT_CHECKPOINTS = {  # file name: its bytes, and what the one line says it is
    "table.csv": (b"path,weight\na.png,0\n", "a text file"),
    "notes.txt": ("a note, é\n".encode(), "a text file"),
    "config.json": (b'{"model": "net", "state_dict": {}}', "a text file"),
    "empty.pt": (b"", "an empty file"),
    "noise.pt": (random.Random(1).randbytes(3000), "not a torch file"),
    "archive.zip": (zip_of({"a.txt": "x", "b/c.csv": "1,2"}), "a zip archive"),
    "tensor.pt": (torch_bytes(torch.zeros(3)), "a torch file holding a Tensor"),
    "list.pt": (torch_bytes([1, 2]), "a torch file holding a list"),
    "partial.pt": (torch_bytes({"state_dict": {}}), "a dict without model"),
    "cut.pt": (torch_bytes({"w": torch.zeros(1000)})[:500], "damaged"),
}


@pytest.mark.parametrize("name", NOT_CHECKPOINTS)
def test_every_other_file_is_not_a_readable_checkpoint_in_one_plain_line(tmp_path, name):
    """Whatever the file, one line that says it is no checkpoint and what it looks like, never the
    unpickler's own error (`IndexError: pop from empty list` for a CSV)."""
    data, kind = NOT_CHECKPOINTS[name]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(CK.CheckpointError) as e:
        CK.load_checkpoint(str(tmp_path / name))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / name} is not a readable checkpoint (") and kind in msg, msg
    assert "\n" not in msg and "Error" not in msg, msg


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_checkpoint_error(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("bytes") / "x.pt"
    path.write_bytes(blob)
    with pytest.raises(CK.CheckpointError, match="is not a readable checkpoint"):
        CK.load_checkpoint(str(path))


def test_a_run_folder_stands_for_its_best_pt(saved_net, tmp_path, capsys):
    _, path = saved_net  # tmp_path/ck.pt
    assert CK.checkpoint_path(str(path)) == str(path)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CK.CheckpointError, match=f"checkpoint not found: {run} is a folder without a best.pt"):
        CK.checkpoint_path(str(run))
    path.rename(run / "best.pt")
    capsys.readouterr()
    assert CK.checkpoint_path(str(run)) == str(run / "best.pt")
    assert capsys.readouterr().out == f"{run} is a run folder: using {run / 'best.pt'}\n"
