"""--resize: how a photo becomes a square (squash, pad, crop). The decode's geometry on a tall and a
wide image, the cache per mode, the option in the checkpoint's data config and every place that
rebuilds the preprocessing from it (evaluate/analyze's data, evaluate.py --images, export's metadata)."""
import numpy as np
import pytest
import torch
from PIL import Image

import cli
import data as D
import evaluate as E
import export
import images as I
from helpers import data_config, photo_folder, run_train

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def banded(path, w, h):
    """A w x h image in three bands along its long side: a red quarter, a green half, a blue quarter."""
    a = np.zeros((h, w, 3), np.uint8)
    n = max(w, h)
    for lo, hi, c in ((0, n // 4, RED), (n // 4, 3 * n // 4, GREEN), (3 * n // 4, n, BLUE)):
        if h >= w:
            a[lo:hi] = c
        else:
            a[:, lo:hi] = c
    Image.fromarray(a).save(path)
    return str(path)


def test_tall_image_in_each_mode(tmp_path):
    p = banded(tmp_path / "tall.png", 20, 40)
    squash, pad, crop = (I.decode_image(p, 16, m).permute(1, 2, 0).int() for m in ("squash", "pad", "crop"))
    assert squash.shape == pad.shape == crop.shape == (16, 16, 3)
    # squash: all three bands, stretched to the full width
    assert squash[1, 8].tolist() == list(RED) and squash[8, 0].tolist() == list(GREEN)
    assert squash[14, 15].tolist() == list(BLUE)
    # pad: the whole image 8 px wide in the middle, 4 columns of one colour (its mean) on each side
    assert pad[1, 6].tolist() == list(RED) and pad[14, 9].tolist() == list(BLUE)
    sides = torch.cat([pad[:, :4], pad[:, 12:]], 1).reshape(-1, 3)
    assert (sides == sides[0]).all() and sides[0].tolist() == [64, 128, 64]
    # crop: the short side fitted, the centre kept: only the green half, edge to edge
    assert (crop[1:15, :, 1] > 200).all() and (crop[1:15, :, 0] < 50).all() and (crop[1:15, :, 2] < 50).all()


def test_wide_image_pads_rows_and_square_image_is_the_same_in_every_mode(tmp_path):
    pad = I.decode_image(banded(tmp_path / "wide.png", 40, 20), 16, "pad").permute(1, 2, 0).int()
    rows = torch.cat([pad[:4], pad[12:]]).reshape(-1, 3)
    assert (rows == rows[0]).all() and pad[8, 1].tolist() == list(RED)
    sq = banded(tmp_path / "square.png", 24, 24)
    assert all(torch.equal(I.decode_image(sq, 16), I.decode_image(sq, 16, m)) for m in I.RESIZE_MODES)


def test_cache_keeps_one_entry_per_mode(tmp_path, monkeypatch):
    paths = [banded(tmp_path / f"t{i}.png", 20 + i, 40) for i in range(3)]
    cache = str(tmp_path / "cache")
    squash, _ = I.decode_folder(paths, 16, cache)
    pad, _ = I.decode_folder(paths, 16, cache, resize="pad")
    assert len(list((tmp_path / "cache").glob("images-16px-*.pt"))) == 2 and not torch.equal(squash, pad)
    monkeypatch.setattr(I, "decode_image", lambda *a: pytest.fail("decoded although cached"))
    assert torch.equal(I.decode_folder(paths, 16, cache, resize="pad")[0], pad)
    assert torch.equal(I.decode_folder(paths, 16, cache)[0], squash)


def test_config_default_old_checkpoints_and_a_bad_value():
    mnist = ("--dataset", "mnist")
    assert data_config(*mnist)["resize"] == "squash" and data_config(*mnist, "--resize", "crop")["resize"] == "crop"
    old = {k: v for k, v in data_config(*mnist).items() if k != "resize"}  # a checkpoint from before the option
    assert D.resize_mode(old) == "squash" and export.metadata(
        {"classes": ["a"], "img_size": 28, "in_channels": 1, "mean": [0], "std": [1], "model": "net",
         "temperature": 1.0, "data": old})["resize"] == "squash"
    with pytest.raises(cli.UsageError, match="--resize must be one of squash, pad, crop, got 'stretch'"):
        D.check_data_config({**D.DATA_DEFAULTS, **data_config(*mnist), "resize": "stretch"})


def test_bad_value_on_the_command_line_is_one_line(capsys):
    import train
    with pytest.raises(SystemExit) as e:
        train.get_args_parser().parse_args(["--resize", "stretch"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--resize: invalid choice: 'stretch'" in err


def test_checkpoint_records_the_mode_and_everything_rebuilds_with_it(tmp_path, monkeypatch):
    d = photo_folder(tmp_path / "data", ["a", "b"], 8, size=(12, 30), seed=0)
    run_train(["--data-dir", d, "--img-size", 16, "--model", "convnet", "--epochs", 1, "--augment", "none",
               "--resize", "pad", "--quiet", "--save-dir", tmp_path / "run", "--batch-size", 8, "--workers", 0,
               "--device", "cpu", "--threads", 1, "--no-group-split"])
    ckpt_path = str(tmp_path / "run" / "best.pt")
    model, ckpt, data = E.load_run(ckpt_path, torch.device("cpu"))  # evaluate.py's and analyze.py's data
    assert ckpt["data"]["resize"] == "pad"
    padded, _, _, _ = I.load_folder(str(d), 16, resize="pad")
    assert torch.equal(data.val.images, padded)
    assert export.metadata(ckpt)["resize"] == "pad"
    seen = []
    real = E.decode_folder
    monkeypatch.setattr(E, "decode_folder", lambda *a, **k: seen.append(k.get("resize")) or real(*a, **k))
    E.classify_folder([(model, ckpt)], str(d / "a"), torch.device("cpu"), str(tmp_path / "p.csv"), quiet=True)
    assert seen == ["pad"]  # evaluate.py --images decodes new photos as the checkpoint's were
