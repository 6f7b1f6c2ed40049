"""synth.py, the command line of the synthetic digits: its preview grid, its export (which must
use only the training photos of the split), and a data error as one line."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

import cli
import composite
import synth
from helpers import MNIST_ROOT, needs_mnist, photo_folder, run_script


def test_preview_grid_writes_png(tmp_path):
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    synth.preview_grid(images, torch.arange(5), tmp_path / "a" / "grid.png", ncol=3)
    synth.preview_grid(images[:, :1], None, tmp_path / "grey.png")
    for p in (tmp_path / "a" / "grid.png", tmp_path / "grey.png"):
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 64


@pytest.mark.slow  # synth.py as two subprocesses, ~38 s
@needs_mnist
def test_cli_preview_and_export_use_only_training_photos(tmp_path):
    # 20 flat grey photos, grey level 4 + 12i for file i: the median of a tile's border names its photo
    labels = [i % 10 for i in range(20)]
    folder = photo_folder(tmp_path / "photos", [str(c) for c in labels], 1, layout="flat", stem="x{k:02d}",
                          size=(40, 48), colours=[[4 + 12 * i] * 3 for i in range(20)])  # x<i>_label<i % 10>.png
    out, export_dir = tmp_path / "out" / "synthetic.png", tmp_path / "export"
    r = run_script("synth.py", "--data-dir", folder, "--mnist-root", MNIST_ROOT, "--no-download", "--img-size", 32,
                   "--no-group-split", "--n", 40, "--val-fraction", 0.5, "--split-seed", 0, "--out", out,
                   "--export", export_dir)
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        assert im.format == "PNG"
    files = sorted(p.name for p in export_dir.iterdir())
    assert len(files) == 40 and all(re.fullmatch(r"synth\d{6}_label\d\.png", f) for f in files)
    assert files[0].startswith("synth000000_") and files[-1].startswith("synth000039_")

    import data  # the split the CLI must respect (the same call data.py makes)
    _, val = data.stratified_split(torch.tensor(labels), 0.5, 0)
    assert len(val) == 10
    used = set()
    for f in files:
        img = np.asarray(Image.open(export_dir / f)).astype(float)
        assert img.shape == (32, 32, 3)
        border = np.concatenate([img[:3].ravel(), img[-3:].ravel(), img[:, :3].ravel(), img[:, -3:].ravel()])
        used.add(int(round((np.median(border) - 4) / 12)))
    assert used and not used & set(val.tolist())

    r = run_script("synth.py", "--data-dir", folder, "--mnist-root", MNIST_ROOT, "--no-download", "--img-size", 32,
                   "--n", 8, "--all", "--out", tmp_path / "all" / "s.png")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert names == sorted(f"s_{s}_{b}.png" for s in composite.SOURCES for b in ("field", "shuffle", "photo-crops"))


def test_cli_data_error_is_one_line(tmp_path, capsys):
    # in-process (no second interpreter start): main() must exit 2 with one line, not raise
    args = synth.get_args_parser().parse_args(["--data-dir", str(tmp_path / "missing"), "--mnist-root",
                                               str(MNIST_ROOT), "--no-download", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit) as e:
        cli.run_main(synth.main, lambda: args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()
