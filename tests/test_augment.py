"""augment.py: the batched device augmentation (BatchAugment: shapes, determinism, the same
statistics as torchvision's per-sample presets step by step, the size-aware `strong` blur) and
the DeviceLoader."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset
from torchvision.transforms import v2

import augment as AU
import data as D
import images as I
from helpers import data_config, needs_mnist

IMG = 16                       # img_size of the data tests
S = I.cache_size(IMG)          # side of the decoded cache


# ----------------------------------------------------------------------------- BatchAugment

def _batch(side, n=4, seed=0):
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("preset", AU.AUGMENT_PRESETS)
def test_batch_augment_shape_dtype(preset):
    aug = AU.BatchAugment(preset, IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)
    out = aug(_batch(S, n=5))
    assert out.shape == (5, 3, IMG, IMG) and out.dtype == torch.float32 and torch.isfinite(out).all()
    lo = min((0 - m) / s for m, s in zip(D.IMAGENET_MEAN, D.IMAGENET_STD))
    hi = max((1 - m) / s for m, s in zip(D.IMAGENET_MEAN, D.IMAGENET_STD))
    assert out.min() >= lo - 1e-4 and out.max() <= hi + 1e-4  # normalised pixels in [0, 1]


def test_batch_augment_none_matches_build_transform():
    tf = AU.build_transform("none", IMG, D.IMAGENET_MEAN, D.IMAGENET_STD, train=True)
    aug = AU.BatchAugment("none", IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)
    # at S == img_size neither resizes: identical up to float error
    x = _batch(IMG)
    ref = torch.stack([tf(i) for i in x])
    assert (aug(x) - ref).abs().max() < 1e-2
    mean, std = torch.tensor(D.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(D.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(aug(x), (x.float() / 255 - mean) / std, atol=1e-5)
    # from the cache size: both resize bilinearly with antialiasing; torchvision rounds its uint8
    # result, BatchAugment stays in float, so they differ by at most one grey level
    x = _batch(S, seed=1)
    diff = (aug(x) - torch.stack([tf(i) for i in x])).abs()
    assert diff.max() <= 1.01 / (255 * min(D.IMAGENET_STD)) and diff.mean() < 1e-2


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_batch_augment_deterministic_under_seed(preset):
    aug = AU.BatchAugment(preset, IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)
    x = _batch(S, n=6)
    torch.manual_seed(123)
    a = aug(x)
    torch.manual_seed(123)
    b = aug(x)
    torch.manual_seed(124)
    c = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batch_augment_strong_changes_the_image():
    x = _batch(S, n=6, seed=2)
    none = AU.BatchAugment("none", IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)(x)
    torch.manual_seed(0)
    strong = AU.BatchAugment("strong", IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)(x)
    assert ((strong - none).abs().flatten(1).mean(1) > 0.1).all()
    with pytest.raises(ValueError):
        AU.BatchAugment("wild", IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)


@pytest.mark.slow  # torchvision on 384 images one by one, ~1 s
@pytest.mark.parametrize("preset", ["light"])
def test_batch_augment_same_statistics_as_torchvision(preset):
    """On a uniform grey image every black pixel is geometric fill (a rotated crop's corners,
    the perspective's margins): the batched preset must fill as much as torchvision's does,
    and move the pixels as much, on average over many draws."""
    size = 48  # large enough that border interpolation (nearest in torchvision) does not matter
    x = torch.full((384, 3, I.cache_size(size), I.cache_size(size)), 128, dtype=torch.uint8)
    torch.manual_seed(0)
    tf = AU.build_transform(preset, size, (0, 0, 0), (1, 1, 1))
    ref = torch.stack([tf(img) for img in x])
    out = AU.BatchAugment(preset, size, (0, 0, 0), (1, 1, 1))(x)
    dark = lambda t: (t < 0.1).float().mean().item()  # noqa: E731
    assert dark(ref) > 0.03  # the fill is there to compare
    assert dark(out) == pytest.approx(dark(ref), abs=0.03)  # without the masks, strong: 0.09 vs 0.17
    assert out.mean().item() == pytest.approx(ref.mean().item(), abs=0.025)


def _strong_stats(t):
    """Statistics of augmented images [N, 3, H, W] (normalised with mean 0.5, std 1), each moved by
    one step of `strong`: geometric fill (rotation, perspective, affine: black corners and margins),
    the share of images with a RandomErasing patch (exact zeros after Normalize, never produced
    otherwise), the spread of per-image brightness and saturation (ColorJitter), the bright blob's
    area (RandomResizedCrop zooms in) and the neighbour difference (GaussianNoise; GaussianBlur
    in the photometric test, where nothing else smooths)."""
    zero = (t == 0).all(1, keepdim=True).float()
    erased = (F.avg_pool2d(zero, 3, 1) == 1).flatten(1).any(1).float().mean().item()
    u = t + 0.5
    sat = u.max(1).values - u.min(1).values
    return {"fill": (u < 0.1).all(1).float().mean().item(), "erased": erased,
            "bright_sd": u.mean((1, 2, 3)).std().item(), "sat_sd": sat.mean((1, 2)).std().item(),
            "blob": (u.mean(1) > 0.75).float().mean().item(), "hf": (u[..., 1:] - u[..., :-1]).abs().mean().item()}


def _differs(a, b, tol):
    return [k for k in tol if abs(a[k] - b[k]) > tol[k]]


@pytest.mark.slow  # torchvision per image, every step, ~21 s
def test_batch_augment_strong_each_step_matches_torchvision():
    """Every step of `strong` leaves its mark on a statistic, and the batched preset matches
    torchvision's on each of them; the tolerances are checked to be tight enough that torchvision's
    preset without any one step fails the comparison (so a step lost in either would be caught)."""
    from torchvision.transforms import v2
    size, n, mean, std = 80, 256, (0.5,) * 3, (1.0,) * 3
    side = I.cache_size(size)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    img = torch.tensor([0.45, 0.30, 0.20]).view(3, 1, 1) + 0.15 * ((xx + yy) % 2)  # saturated, textured
    img[:, (xx - 0.6 * side) ** 2 + (yy - 0.4 * side) ** 2 < (0.18 * side) ** 2] = 1.0  # a white blob
    x = (img * 255).round().to(torch.uint8).expand(n, 3, side, side).contiguous()
    steps = AU.build_transform("strong", size, mean, std).transforms

    def tv(parts, images):
        torch.manual_seed(0)
        return _strong_stats(torch.stack([v2.Compose(parts)(i) for i in images]))

    # tolerances: ~2-3x the gap between two seeds / between the two implementations
    tol = {"fill": 0.02, "erased": 0.08, "bright_sd": 0.015, "sat_sd": 0.015, "blob": 0.008, "hf": 0.01}
    ref = tv(steps, x)
    torch.manual_seed(0)
    out = _strong_stats(AU.BatchAugment("strong", size, mean, std)(x))
    assert ref["fill"] > 0.05 and ref["erased"] > 0.1  # the marks are there to compare
    assert not _differs(out, ref, tol), (out, ref)
    for i, step in enumerate(steps):
        if not isinstance(step, (v2.ToDtype, v2.Normalize, v2.GaussianBlur)):
            assert _differs(tv(steps[:i] + steps[i + 1:], x), ref, tol), f"without {type(step).__name__}"

    # the blur: only photometric steps (BatchAugment's geometry the identity), a 1-px checkerboard
    board = ((0.3 + 0.4 * ((xx + yy) % 2))[:size, :size] * 255).round().to(torch.uint8).expand(n, 3, size, size)
    photo = [s for s in steps if not isinstance(s, (v2.RandomResizedCrop, v2.RandomRotation, v2.RandomPerspective,
                                                     v2.RandomAffine))]
    aug = AU.BatchAugment("strong", size, mean, std)
    aug.geometry = lambda b, device: [torch.eye(3, device=device).expand(b, 3, 3)]
    ref = tv(photo, board)
    torch.manual_seed(0)
    out = _strong_stats(aug(board.contiguous()))
    hf_tol = {"hf": 0.01}
    assert not _differs(out, ref, hf_tol), (out["hf"], ref["hf"])
    blur = next(i for i, s in enumerate(photo) if isinstance(s, v2.GaussianBlur))
    assert _differs(tv(photo[:blur] + photo[blur + 1:], board), ref, hf_tol), "without GaussianBlur"


# ----------------------------------------------------------------------------- size-aware strong

def _blur_of(tf):
    return next(t for t in tf.transforms if isinstance(t, v2.GaussianBlur))


@pytest.mark.parametrize("size,kernel,sigma", [(128, 5, (0.1, 2.0)), (64, 3, (0.05, 1.0)), (32, 3, (0.025, 0.5)),
                                               (256, 9, (0.2, 4.0))])
def test_strong_blur_scales_with_the_image_and_is_table_1_at_128(size, kernel, sigma):
    blur = _blur_of(AU.build_transform("strong", size, (0.5,) * 3, (0.5,) * 3))
    assert list(blur.kernel_size) == [kernel, kernel]
    assert blur.sigma == pytest.approx(list(sigma))
    assert AU.strong_blur(size) == (kernel, pytest.approx(sigma))


def test_batched_strong_blurs_as_much_relative_to_the_image_at_every_size():
    """A sharp edge through BatchAugment's strong blur alone: its width in pixels halves with the size."""
    torch.manual_seed(0)
    widths = {}
    for size in (64, 128):
        k, (lo, hi) = AU.strong_blur(size)
        x = torch.zeros(64, 1, size, size)
        x[..., size // 2:] = 1
        sigma = torch.full((64,), hi)
        y = AU._blur(x, sigma, k)[:, 0, size // 2]
        widths[size] = ((y > 0.05) & (y < 0.95)).sum(1).float().mean().item()
    assert widths[128] == pytest.approx(2 * widths[64], rel=0.35)


# ----------------------------------------------------------------------------- DeviceLoader

def test_device_loader_covers_concat_once_per_epoch():
    # every sample a constant image of its own grey value: 7 real (of 10, size 12) + 5 synthetic (size 10)
    real_imgs = torch.arange(10, dtype=torch.uint8).mul(10).view(10, 1, 1, 1).expand(10, 3, 12, 12).clone()
    real = D.TensorImageDataset(real_imgs, torch.arange(10) % 3, indices=[0, 2, 3, 5, 6, 8, 9],
                                weights=torch.arange(10, dtype=torch.float32) / 10)
    syn_imgs = torch.arange(5, dtype=torch.uint8).add(200).view(5, 1, 1, 1).expand(5, 3, 10, 10).clone()
    syn = D.TensorImageDataset(syn_imgs, torch.tensor([0, 1, 2, 0, 1]), source=1)
    loader = AU.DeviceLoader(ConcatDataset([real, syn]), 5, "cpu", lambda x: x, drop_last=False)
    assert len(loader) == 3
    for seed in (0, 1):
        loader.generator = torch.Generator().manual_seed(seed)
        values, sources, weights, labels = [], [], [], []
        for imgs, y, src, w in loader:
            assert imgs.shape[1:] == (3, 12, 12) and imgs.dtype == torch.uint8
            assert (imgs == imgs[:, :1, :1, :1]).all()   # still constant after resizing
            values += imgs[:, 0, 0, 0].tolist()
            sources += src.tolist()
            weights += w.tolist()
            labels += y.tolist()
        assert sorted(values) == [0, 20, 30, 50, 60, 80, 90, 200, 201, 202, 203, 204]
        for v, s, w, y in zip(values, sources, weights, labels):
            if v >= 200:
                assert (s, w, y) == (1, 1.0, [0, 1, 2, 0, 1][v - 200])
            else:
                assert s == 0 and w == pytest.approx(v / 100) and y == (v // 10) % 3
    # same generator seed -> same order
    orders = []
    for _ in range(2):
        loader.generator = torch.Generator().manual_seed(7)
        orders.append(torch.cat([b[0][:, 0, 0, 0] for b in loader]))
    assert torch.equal(*orders)


@needs_mnist
def test_device_loader_on_synthetic_build(digits_dir):
    data = D.build_datasets(data_config("--data-dir", digits_dir, "--img-size", IMG, "--val-fraction", "0.34",
                                       "--synthetic-n", "20"))
    aug = AU.BatchAugment("none", data.img_size, data.mean, data.std)
    loader = AU.DeviceLoader(data.train, 16, "cpu", aug, drop_last=False)
    n, n_syn = 0, 0
    for imgs, y, src, w in loader:
        assert imgs.shape[1:] == (3, IMG, IMG) and imgs.dtype == torch.float32
        n += len(y)
        n_syn += int(src.sum())
    assert n == len(data.train) == 40 and n_syn == 20
    assert len(AU.DeviceLoader(data.train, 16, "cpu", aug)) == 2  # drop_last default
