"""composite.py: printed (font) and MNIST digits composited onto digit-free backgrounds: shapes,
determinism per index, every digit of every font, soft alpha, guaranteed contrast, backgrounds
without digit strokes, the labels, the geometry, the JPEG-like loss. (synth.py, its command line:
test_synth.py; composites in a training set: test_data.py.)"""
import subprocess
import sys

import numpy as np
import pytest
import torch

import composite
from helpers import MNIST_ROOT, REPO

MNIST_RAW = MNIST_ROOT / "MNIST" / "raw"
MODES = composite.BACKGROUNDS


@pytest.fixture(scope="module")
def mnist():
    """The first 1000 MNIST training digits and labels, read straight from the IDX files."""
    if not (MNIST_RAW / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST not in {MNIST_RAW}")
    n = 1000
    images = np.fromfile(MNIST_RAW / "train-images-idx3-ubyte", np.uint8, count=n * 784, offset=16)
    labels = np.fromfile(MNIST_RAW / "train-labels-idx1-ubyte", np.uint8, count=n, offset=8)
    return torch.from_numpy(images.reshape(n, 28, 28).copy()), torch.from_numpy(labels.astype(np.int64))


@pytest.fixture(scope="module")
def fonts():
    return composite.font_digits()


def photos(n=6, h=72, w=80, seed=0):
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def flat_photos(colours, h=40, w=48):
    return torch.tensor(colours, dtype=torch.uint8)[:, :, None, None].expand(-1, 3, h, w).contiguous()


def blank(bank):
    """The same bank with nothing to paint: a composite is then its degraded background."""
    return [(torch.zeros_like(g), y) for g, y in bank]


def luminance(x):
    return 0.299 * x[..., 0, :, :] + 0.587 * x[..., 1, :, :] + 0.114 * x[..., 2, :, :]


def test_shapes_and_dtypes(mnist, fonts):
    for source in composite.SOURCES:
        bank = composite.digit_bank(source, mnist)
        for mode in MODES:
            x, y = composite.make_synthetic(photos(), bank, 5, 48, background=mode)
            assert x.shape == (5, 3, 48, 48) and x.dtype == torch.uint8
            assert y.shape == (5,) and y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) <= 9
    x, y = composite.make_synthetic(photos(), (mnist[0][:, None], mnist[1]), 0, 64)  # [M,1,28,28] is accepted
    assert x.shape == (0, 3, 64, 64) and y.shape == (0,)
    with pytest.raises(ValueError):
        composite.make_synthetic(photos(), fonts, 4, 32, background="crops")  # one name per background: photo-crops
    with pytest.raises(ValueError):
        composite.digit_bank("mnist")  # needs the digits


@pytest.mark.parametrize("mode", MODES)
def test_deterministic_per_index(mnist, mode):
    args = (photos(), composite.digit_bank("both", mnist))
    x10, y10 = composite.make_synthetic(*args, n=10, img_size=40, seed=3, start=0, batch_size=3, background=mode)
    x4, y4 = composite.make_synthetic(*args, n=4, img_size=40, seed=3, start=3, background=mode)
    assert torch.equal(x10[3:7], x4) and torch.equal(y10[3:7], y4)
    for bs in (1, 4, 512):
        xb, yb = composite.make_synthetic(*args, n=10, img_size=40, seed=3, batch_size=bs, background=mode)
        assert torch.equal(xb, x10) and torch.equal(yb, y10)
    xs, _ = composite.make_synthetic(*args, n=10, img_size=40, seed=4, background=mode)
    assert not torch.equal(xs, x10)
    assert len({x10[i].float().mean().item() for i in range(10)}) == 10  # samples differ from each other


def test_fonts_render_every_digit_of_every_font_the_same_way(fonts):
    glyphs, labels = fonts
    per_font = 10 * len(composite.STROKES)
    assert glyphs.shape == (len(composite.FONT_FILES) * per_font, composite.GLYPH_SIZE, composite.GLYPH_SIZE)
    assert labels.tolist() == list(range(10)) * (len(composite.FONT_FILES) * len(composite.STROKES))
    g = glyphs.float()
    for k in range(0, len(g), 10):  # one face at one stroke width: 10 inked, distinct digits
        face = g[k:k + 10]
        assert (face.amax((1, 2)) > 200).all(), composite.FONT_FILES[k // per_font]
        ink = (face > 127).float()
        rows = torch.nonzero(ink.sum(2) > 0)
        diff = (ink[:, None] - ink[None]).abs().mean((2, 3)) + torch.eye(10)
        assert diff.min() > 0.01, f"{composite.FONT_FILES[k // per_font]}: two digits render alike (.notdef?)"
        for d in range(10):  # the digit's ink is GLYPH_HEIGHT of the canvas high
            r = rows[rows[:, 0] == d, 1]
            assert abs((r.max() - r.min() + 1) / composite.GLYPH_SIZE - composite.GLYPH_HEIGHT) < 0.06
    # deterministic: a fresh render (cache cleared) gives the same bytes
    composite._CACHE.pop(("fonts", composite.GLYPH_SIZE))
    again, _ = composite.font_digits()
    assert torch.equal(again, glyphs)


def test_soft_alpha_has_intermediate_values(fonts, mnist):
    for bank in (composite.digit_bank("fonts"), composite.digit_bank("mnist", mnist)):
        u = composite._params(0, range(64))
        alpha, _ = composite._alpha(bank, u, 64)
        inked = alpha[alpha > 0.02]
        soft = ((inked > 0.1) & (inked < 0.9)).float().mean()
        assert 0.05 < soft < 0.7  # an antialiased edge, not a 0/1 mask, nor a haze
        # and every digit has a solid core (0.75: a thin MNIST stroke drawn at 1/3 of the resolution
        # peaks a little lower; a haze would stay far below)
        assert (alpha.amax((1, 2, 3)) > 0.75).all()
    # in the composite: on a flat background, pixels between the background and the digit colour
    bgs = flat_photos([[128, 128, 128]])
    x, _ = composite.make_synthetic(bgs, fonts, 32, 64, seed=1, background="photo-crops")
    grey = luminance(x.float())
    assert ((grey - 128).abs() > 60).float().mean() > 0.05  # the digits, in contrast
    assert (((grey - 128).abs() > 15) & ((grey - 128).abs() < 45)).float().mean() > 0.01  # and their soft edges


def test_contrast_is_guaranteed():
    u = torch.rand(5000, composite.N_DRAWS, generator=torch.Generator().manual_seed(0))
    bg_lum = torch.rand(5000, generator=torch.Generator().manual_seed(1)) * 255
    bg_lum[:100] = 0
    bg_lum[100:200] = 255
    colour = composite.digit_colour(u, bg_lum)
    assert colour.min() >= 0 and colour.max() <= 255
    contrast = (luminance(colour[:, :, None, None])[:, 0, 0] - bg_lum).abs()
    assert contrast.min() >= composite.MIN_CONTRAST * 255 - 1e-3
    assert contrast.max() > 0.7 * 255 and colour.std(1).mean() > 10  # the whole range, in colour


def test_contrast_in_composites(fonts):
    """On any flat background, the core of the digit (where alpha is 1) differs in luminance from
    the background by MIN_CONTRAST (less only by the noise and JPEG loss on top)."""
    colours = [[0, 0, 0], [255, 255, 255], [128, 128, 128], [200, 40, 40], [30, 90, 200]]
    bgs = flat_photos(colours)
    u = composite._params(5, range(40))
    alpha, _ = composite._alpha([fonts], u, 64)
    x, _ = composite.make_synthetic(bgs, fonts, 40, 64, seed=5, background="photo-crops")
    bg_lum = luminance(bgs.float())[:, 0, 0]
    checked = 0
    for i in range(40):
        core = alpha[i, 0] > 0.95  # (a digit drawn blurred may have no solid core: skipped)
        if core.sum() < 5:
            continue
        lum = luminance(x[i].float())
        k = int(np.argmin([abs(float(lum[~(alpha[i, 0] > 0)].median()) - float(b)) for b in bg_lum]))
        assert abs(float(lum[core].median()) - float(bg_lum[k])) > 0.95 * composite.MIN_CONTRAST * 255 - 12
        checked += 1
    assert checked > 20


def conflict_photo(digit, size=36):
    """A tightly framed photo of one big printed digit, white on a dark background."""
    glyph = composite.font_digits()[0][digit]  # DejaVu Sans, no extra stroke
    g = torch.nn.functional.interpolate(glyph[None, None].float(), size=(size, size), mode="bilinear")[0, 0]
    return (40 + g * (200 / 255)).round().to(torch.uint8).expand(3, size, size)


@pytest.mark.parametrize("mode", ["field", "shuffle"])
def test_backgrounds_carry_no_digit_strokes(fonts, mode):
    """A composite's background made from a photo that is one clear digit must not correlate with
    that digit's strokes more than with another digit's; a crop of the photo does (the old recipe)."""
    ph = torch.stack([conflict_photo(d) for d in (0, 1, 4, 7)])  # four very different shapes
    strokes = luminance(ph[:, :, 2:34, 2:34].float()).flatten(1)
    strokes = strokes - strokes.mean(1, keepdim=True)

    def own_vs_other(background):
        x, _ = composite.make_synthetic(ph, blank([fonts]), 200, 32, seed=0, background=background)
        u = composite._params(0, range(200))
        photo = composite._pick(u, "photo", len(ph))
        g = luminance(x.float()).flatten(1)
        g = g - g.mean(1, keepdim=True)
        r = (g @ strokes.T) / (g.norm(dim=1, keepdim=True) * strokes.norm(dim=1) + 1e-6)  # [200, 4]
        own = r[torch.arange(200), photo]
        other = (r.sum(1) - own) / 3
        return float(own.mean()), float(other.mean())

    own, other = own_vs_other(mode)
    assert own - other < 0.1 and own < 0.2, (own, other)
    own, other = own_vs_other("photo-crops")  # the test can fail: a crop of the photo shows its digit
    assert own > 0.5 and own - other > 0.3, (own, other)


def test_labels_follow_the_pasted_digit():
    # digit k is solid when k is even, empty when odd: a sample differs from its blank twin iff even
    m = 10
    digits = torch.zeros(m, 28, 28, dtype=torch.uint8)
    digits[::2, 4:24, 8:20] = 255
    bgs = photos()
    x, idx = composite.make_synthetic(bgs, (digits, torch.arange(m)), 40, 32, seed=2)
    twin, _ = composite.make_synthetic(bgs, (torch.zeros_like(digits), torch.arange(m)), 40, 32, seed=2)
    painted = (x != twin).flatten(1).any(1)
    assert torch.equal(painted, idx % 2 == 0) and len(idx.unique()) > 5
    relabel = (torch.arange(m) * 7 + 3) % m
    _, y = composite.make_synthetic(bgs, (digits, relabel), 40, 32, seed=2)
    assert torch.equal(y, relabel[idx])


def test_digit_geometry_scales_with_the_tile():
    """A solid square glyph paints about the same centred fraction of the tile at every size."""
    digits = torch.zeros(1, 28, 28, dtype=torch.uint8)
    digits[:, 4:24, 4:24] = 255
    fracs = {}
    for size in (32, 64, 128):
        bgs = flat_photos([[128, 128, 128]], size + 8, size + 8)
        u = composite._params(7, range(40))
        alpha, _ = composite._alpha([(digits, torch.zeros(1, dtype=torch.long))], u, size)
        a = alpha[:, 0]
        fracs[size] = a.mean((1, 2))
        ys = torch.arange(size).float()
        cy = (a.sum(2) * ys).sum(1) / a.sum((1, 2))
        cx = (a.sum(1) * ys).sum(1) / a.sum((1, 2))
        off = composite.SHIFT_MAX * size + 1.5
        assert ((cy - (size - 1) / 2).abs() < off).all() and ((cx - (size - 1) / 2).abs() < off).all()
        x, _ = composite.make_synthetic(bgs, (digits, torch.zeros(1, dtype=torch.long)), 40, size, seed=7)
        assert x.shape == (40, 3, size, size)
    # (the blur levels soften a small tile's digit a little more)
    assert torch.allclose(fracs[32], fracs[128], atol=0.06) and torch.allclose(fracs[64], fracs[128], atol=0.04)
    lo, hi = composite.SCALE_RANGE  # the square is 20/28 of the glyph canvas, which is scale x the tile
    side = fracs[128].sqrt() / (20 / 28)
    assert side.min() > lo * composite.ASPECT_RANGE[0] ** 0.5 - 0.05 and side.max() < hi * composite.ASPECT_RANGE[1] ** 0.5 + 0.05
    assert side.max() - side.min() > 0.15  # sizes vary


def test_small_photos_are_upsampled(fonts):
    colours = [[200, 10, 10], [10, 200, 10]]
    for mode in MODES:
        x, _ = composite.make_synthetic(flat_photos(colours, 20, 30), blank([fonts]), 8, 64, background=mode)
        assert x.shape == (8, 3, 64, 64)
        for img in x:  # the background of a flat photo is that flat colour (+ noise and JPEG loss)
            med = img.flatten(1).median(1).values.float()
            assert min((med - torch.tensor(c).float()).abs().max() for c in colours) < 12


def test_jpeg_like_loses_more_at_low_quality():
    g = torch.Generator().manual_seed(0)  # grey (no chroma to subsample): the DCT quantisation alone
    x = torch.nn.functional.interpolate(torch.rand(4, 1, 8, 8, generator=g) * 200, size=(40, 40), mode="bicubic")
    x = (x + 20 * torch.rand(4, 1, 40, 40, generator=g)).clamp(0, 255).expand(4, 3, 40, 40).contiguous()
    err = {q: (composite.jpeg_like(x.clone(), torch.full((4,), float(q))) - x).abs().mean().item() for q in (10, 50, 95)}
    assert err[95] < err[50] < err[10] and err[95] < 6 and err[10] > 5
    assert composite.jpeg_like(x.clone(), torch.full((4,), 50.0)).shape == x.shape


@pytest.mark.slow  # a fresh interpreter as a subprocess
def test_library_does_not_import_data():
    r = subprocess.run([sys.executable, "-c", "import sys, composite; assert 'data' not in sys.modules"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
