"""export.py: TorchScript with its metadata and the parity check (which can fail), ONNX or the
line that says how to install it. On conftest's mnist_run."""
import json
from pathlib import Path

import pytest
import torch

import cli
import data as D
import evaluate as E
from helpers import run_script

CPU = torch.device("cpu")


@pytest.mark.slow  # export.py as a subprocess; fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is marked deprecated (torch >= 2.9)
def test_export_torchscript_metadata_and_parity(mnist_run, tmp_path):
    import export
    tmp, _ = mnist_run
    r = run_script("export.py", tmp / "run" / "best.pt", "--out", tmp_path / "new" / "m.pt", "--parity-images", 200)
    assert r.returncode == 0, r.stderr
    assert "parity on 200 test images: max |logit difference|" in r.stdout and "same top-1 on 200/200" in r.stdout
    files = {"metadata.json": ""}
    loaded = torch.jit.load(str(tmp_path / "new" / "m.pt"), _extra_files=files)
    meta = json.loads(files["metadata.json"])
    assert meta["classes"] == [str(i) for i in range(10)] and meta["img_size"] == 28
    assert meta["mean"] == list(D.MNIST_MEAN) and meta["std"] == list(D.MNIST_STD)
    # the deployed file alone, with the metadata's preprocessing, classifies like evaluate.py in fp32
    # (the exported model is fp32; the checkpoint evaluates under its training --amp by default)
    model, _, data = E.load_run(str(tmp / "run" / "best.pt"), CPU, amp="off")
    raw = data.test.images[:50].float() / 255
    x = (raw - torch.tensor(meta["mean"]).view(1, -1, 1, 1)) / torch.tensor(meta["std"]).view(1, -1, 1, 1)
    ref = E.collect(model, torch.utils.data.Subset(data.test, range(50)), CPU)["logits"]
    assert torch.allclose(loaded(x), ref, atol=1e-4)
    # the check can fail: a model that is off reports a difference and fewer agreeing top-1
    diff, same, total = export.parity(model, lambda t: model(t).flip(1), x)
    assert diff > 0.1 and same < total


@pytest.mark.slow  # export.py as a subprocess; fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
def test_export_onnx_exports_or_says_how_to_install(mnist_run, tmp_path):
    tmp, _ = mnist_run
    r = run_script("export.py", tmp / "run" / "best.pt", "--format", "onnx", "--out", tmp_path / "m.onnx",
                   "--parity-images", 50)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        assert r.returncode == 0, r.stderr
        assert "same top-1 on 50/50" in r.stdout and (tmp_path / "m.onnx").is_file()
    except ImportError:  # nothing exported: exit 2 with one line, not 0
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "pip install onnx onnxruntime" in r.stderr
        assert not (tmp_path / "m.onnx").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is marked deprecated (torch >= 2.9)
def test_out_names_a_new_folder_by_a_slash_or_no_model_suffix(tmp_path, mnist_root):
    """`--out DIR/` for a DIR not made yet once failed with errno 20 (it was opened as a file): a
    trailing slash, or a new name without .pt / .pth / .onnx, is a folder, made, with the default name in it."""
    import export
    from helpers import fabricate_checkpoint
    ck = fabricate_checkpoint(tmp_path / "best.pt", mnist_root)
    for out, want in ((f"{tmp_path / 'new'}/", tmp_path / "new" / "best.torchscript.pt"),
                      (tmp_path / "deploy" / "v1", tmp_path / "deploy" / "v1" / "best.torchscript.pt"),
                      (tmp_path / "other" / "m.pt", tmp_path / "other" / "m.pt")):  # a model suffix: a file
        r = export.main(export.get_args_parser().parse_args([str(ck), "--out", str(out), "--parity-images", "8"]))
        assert Path(r["path"]) == want and want.is_file() and r["same_top1"] == 8
    (tmp_path / "file").write_text("")  # an existing file is no folder: one line, nothing written
    with pytest.raises(cli.UsageError, match="is a file, not a folder"):
        export.main(export.get_args_parser().parse_args([str(ck), "--out", f"{tmp_path / 'file'}/", "--parity-images", "8"]))
    assert (tmp_path / "file").read_text() == ""
