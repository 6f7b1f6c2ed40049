"""Tests of synth.py: MNIST digits composited onto crops of real photos."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # also runnable without tests/conftest.py
    sys.path.insert(0, str(REPO))
import synth  # noqa: E402

MNIST_ROOT = Path(__file__).resolve().parent / "data"  # the tests' MNIST subset (tests/data/make_mnist_subset.py)
MNIST_RAW = MNIST_ROOT / "MNIST" / "raw"
needs_mnist = pytest.mark.skipif(not (MNIST_RAW / "train-images-idx3-ubyte").is_file(),
                                 reason=f"MNIST not in {MNIST_RAW}")


@pytest.fixture(scope="module")
def mnist():
    """The first 1000 MNIST training digits and labels, read straight from the IDX files."""
    if not (MNIST_RAW / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST not in {MNIST_RAW}")
    n = 1000
    images = np.fromfile(MNIST_RAW / "train-images-idx3-ubyte", np.uint8, count=n * 784, offset=16)
    labels = np.fromfile(MNIST_RAW / "train-labels-idx1-ubyte", np.uint8, count=n, offset=8)
    return torch.from_numpy(images.reshape(n, 28, 28).copy()), torch.from_numpy(labels.astype(np.int64))


def photos(n=6, h=72, w=80, seed=0):
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def blank_like(digits):
    """Digits that paint nothing: the composite is then exactly the background crop."""
    return torch.zeros_like(digits)


def painted_mask(images, crops):
    return (images != crops).any(-3)  # over RGB, for one image or a batch


def test_shapes_and_dtypes(mnist):
    digits, labels = mnist
    x, y = synth.make_synthetic(photos(), digits, labels, 5, 64)
    assert x.shape == (5, 3, 64, 64) and x.dtype == torch.uint8
    assert y.shape == (5,) and y.dtype == torch.int64
    x, y = synth.make_synthetic(photos(), digits[:, None], labels, 0, 64)  # [M,1,28,28] is accepted
    assert x.shape == (0, 3, 64, 64) and y.shape == (0,)


def test_deterministic_per_index(mnist):
    digits, labels = mnist
    args = (photos(), digits, labels)
    x10, y10 = synth.make_synthetic(*args, n=10, img_size=64, seed=3, start=0, batch_size=3)
    x4, y4 = synth.make_synthetic(*args, n=4, img_size=64, seed=3, start=3)
    assert torch.equal(x10[3:7], x4) and torch.equal(y10[3:7], y4)
    for bs in (1, 4, 512):
        xb, yb = synth.make_synthetic(*args, n=10, img_size=64, seed=3, batch_size=bs)
        assert torch.equal(xb, x10) and torch.equal(yb, y10)
    xs, _ = synth.make_synthetic(*args, n=10, img_size=64, seed=4)
    assert not torch.equal(xs, x10)
    assert len({x10[i].float().mean().item() for i in range(10)}) == 10  # samples differ from each other


def test_background_is_a_crop_of_a_photo():
    bgs = photos(n=3, h=36, w=40)
    digits = torch.zeros(4, 28, 28, dtype=torch.uint8)  # paints nothing
    x, _ = synth.make_synthetic(bgs, digits, torch.arange(4), 20, 32, seed=1)
    found = set()
    for img in x:
        hits = [(b, i, j) for b in range(3) for i in range(36 - 32 + 1) for j in range(40 - 32 + 1)
                if torch.equal(img, bgs[b, :, i:i + 32, j:j + 32])]
        assert len(hits) == 1
        found.add(hits[0])
    assert len({b for b, _, _ in found}) == 3 and len(found) > 10  # random photos and positions


def test_digit_painted_in_one_colour(mnist):
    digits, labels = mnist
    bgs = photos()
    x, _ = synth.make_synthetic(bgs, digits, labels, 16, 128, seed=0)
    crops, _ = synth.make_synthetic(bgs, blank_like(digits), labels, 16, 128, seed=0)
    for img, crop in zip(x, crops):
        mask = painted_mask(img, crop)
        assert 0.01 < mask.float().mean() < 0.4  # an MNIST stroke, not nothing, not the whole tile
        assert len(torch.unique(img[:, mask], dim=1).T) == 1  # every painted pixel has one colour


def test_digit_geometry_and_proportional_padding():
    """A solid 28x28 'digit' paints the whole (S - 2p) square: centred, p in the spec's range,
    and the same fraction of the tile at every img_size (p scales with it)."""
    digits = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    fracs = {}
    for size in (64, 128):
        bgs = photos(h=size + 8, w=size + 8)
        x, _ = synth.make_synthetic(bgs, digits, torch.arange(2), 24, size, seed=5)
        crops, _ = synth.make_synthetic(bgs, blank_like(digits), torch.arange(2), 24, size, seed=5)
        mask = painted_mask(x, crops).float()
        fracs[size] = mask.mean((1, 2))
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        cy = (mask * ys).sum((1, 2)) / mask.sum((1, 2))
        cx = (mask * xs).sum((1, 2)) / mask.sum((1, 2))
        assert torch.allclose(cy, torch.full_like(cy, (size - 1) / 2), atol=1.0)
        assert torch.allclose(cx, torch.full_like(cx, (size - 1) / 2), atol=1.0)
    # side of the painted square (rotation keeps its area): 128 - 2p for p in 10..30, plus the
    # bilinear fringe above ALPHA_MIN outside the digit's edge (under one source pixel, ~4 px)
    side = fracs[128].sqrt() * 128
    assert side.min() > 128 - 2 * 30 - 1 and side.max() < 128 - 2 * 10 + 4
    assert side.max() - side.min() > 10  # the padding varies
    assert torch.allclose(fracs[64], fracs[128], atol=0.03)


def test_labels_follow_the_pasted_digit():
    # digit k is solid when k is even, empty when odd: a sample is painted iff its label is even
    m = 10
    digits = torch.zeros(m, 28, 28, dtype=torch.uint8)
    digits[::2] = 255
    bgs = photos()
    x, idx = synth.make_synthetic(bgs, digits, torch.arange(m), 40, 32, seed=2)
    crops, _ = synth.make_synthetic(bgs, blank_like(digits), torch.arange(m), 40, 32, seed=2)
    painted = painted_mask(x, crops).any(-1).any(-1)
    assert torch.equal(painted, idx % 2 == 0)
    relabel = (torch.arange(m) * 7 + 3) % m
    _, y = synth.make_synthetic(bgs, digits, relabel, 40, 32, seed=2)
    assert torch.equal(y, relabel[idx]) and len(idx.unique()) > 5


def test_small_background_is_upsampled(mnist):
    digits, labels = mnist
    colours = torch.tensor([[200, 10, 10], [10, 200, 10]], dtype=torch.uint8)
    bgs = colours[:, :, None, None].expand(2, 3, 20, 30).contiguous()  # smaller than img_size
    x, _ = synth.make_synthetic(bgs, blank_like(digits), labels, 8, 64)
    assert x.shape == (8, 3, 64, 64)
    for img in x:  # a crop of an upsampled flat photo is that flat colour
        assert any(torch.equal(img, c[:, None, None].expand(3, 64, 64)) for c in colours)
    x, _ = synth.make_synthetic(photos(h=20, w=90), digits, labels, 8, 64)  # one side too small
    assert x.shape == (8, 3, 64, 64)


def test_sampling_grid_is_affine_grid():
    digits = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pad, angle = torch.tensor([10.0, 17, 25, 30]), torch.tensor([-10.0, -3, 0, 9.5])
    zoom = synth.REF_SIZE / (synth.REF_SIZE - 2 * pad)
    a = torch.deg2rad(angle)
    theta = torch.stack([torch.stack([a.cos(), -a.sin(), 0 * a], 1), torch.stack([a.sin(), a.cos(), 0 * a], 1)], 1)
    grid = F.affine_grid(theta * zoom[:, None, None], (4, 1, 48, 48), align_corners=False)
    expected = F.grid_sample(digits[:, None].float(), grid, align_corners=False)[:, 0]
    assert torch.allclose(synth._digit_alpha(digits, pad, angle, 48), expected, atol=1e-3)


def test_preview_grid_writes_png(tmp_path):
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    synth.preview_grid(images, torch.arange(5), tmp_path / "a" / "grid.png", ncol=3)
    synth.preview_grid(images[:, :1], None, tmp_path / "grey.png")
    for p in (tmp_path / "a" / "grid.png", tmp_path / "grey.png"):
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 64


# ----------------------------------------------------------------------------- CLI

def run_cli(*args):
    return subprocess.run([sys.executable, str(REPO / "synth.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


@needs_mnist
def test_cli_preview_and_export_use_only_training_photos(tmp_path):
    # 30 flat grey photos, grey level 4 + 8i for file i: a tile's median colour names its photo
    folder = tmp_path / "photos"
    folder.mkdir()
    labels = [i % 10 for i in range(30)]
    for i, d in enumerate(labels):
        Image.new("RGB", (40, 48), (4 + 8 * i,) * 3).save(folder / f"x{i:02d}_label{d}.jpg", quality=95)
    out, export_dir = tmp_path / "out" / "synthetic.png", tmp_path / "export"
    r = run_cli("--data-dir", folder, "--mnist-root", MNIST_ROOT, "--no-download", "--img-size", 32,
                "--n", 40, "--val-fraction", 0.34, "--split-seed", 0, "--out", out, "--export", export_dir)
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        assert im.format == "PNG"
    files = sorted(p.name for p in export_dir.iterdir())
    assert len(files) == 40 and all(re.fullmatch(r"synth\d{6}_label\d\.png", f) for f in files)
    assert files[0].startswith("synth000000_") and files[-1].startswith("synth000039_")

    import data  # the split the CLI must respect (the same call data.py makes)
    _, val = data.stratified_split(torch.tensor(labels), 0.34, 0)
    assert len(val) == 10
    used = set()
    for f in files:
        img = np.asarray(Image.open(export_dir / f))
        assert img.shape == (32, 32, 3)
        used.add(int(round((np.median(img) - 4) / 8)))
    assert used and not used & set(val.tolist())


def test_cli_data_error_is_one_line(tmp_path, capsys):
    # in-process (no second interpreter start): main() must exit 2 with one line, not raise
    args = synth.get_args_parser().parse_args(["--data-dir", str(tmp_path / "missing"), "--mnist-root",
                                               str(MNIST_ROOT), "--no-download", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit) as e:
        synth.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()
