"""Synthetic training digits: printed (font) or handwritten (MNIST) digits composited onto
digit-free backgrounds made from real photos (synth.py previews and exports them).

Tensors in, tensors out: `make_synthetic(photos, bank, n, img_size, ...)` takes uint8 photos
[B, 3, H, W] and a digit bank (uint8 alpha glyphs [M, G, G] with labels: MNIST's 28 px digits,
`font_digits()` or both) and returns uint8 composites [n, 3, S, S] with labels. data.py loads
the photos and MNIST and calls it; this module imports nothing of the project.

One sample: a background (`BACKGROUNDS`), one glyph placed with a random size, aspect, slant,
rotation and position, used as an antialiased soft alpha (no threshold), painted in a colour whose
luminance differs from the background under it by at least MIN_CONTRAST, optionally with an
outline or a drop shadow, then blurred, noised and JPEG-compressed like a photo. Backgrounds:

  field        the photo's 4x4 colour grid, its 16 cells shuffled, upsampled to a smooth field,
               plus low-pass noise with the photo's own fine-detail contrast: colours and texture
               of the photos, no digit strokes
  shuffle      a crop of the photo cut into 8x8 patches that are shuffled: real texture and
               edges, no whole digit
  photo-crops  a random crop of a photo as it is. On tightly framed digit photos (the reference
               report's recipe) every crop contains the photo's own digit: two digits, one
               label. Meant for a folder of digit-free photos (--backgrounds DIR).

Sample i depends only on (seed, i): its parameters come from `np.random.default_rng([seed, i])`,
and its noise from fixed banks cropped at positions it draws, so any slice start..start+n, at any
batch size, gives the same images. The pixel work is done a batch at a time with tensor ops.
"""
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

BACKGROUNDS = ("field", "shuffle", "photo-crops")  # --backgrounds: these, or a folder of digit-free photos
SOURCES = ("mnist", "fonts", "both")  # --synthetic-source
GLYPH_SIZE = 64            # side of a rendered font glyph; its digit is GLYPH_HEIGHT of that high
GLYPH_HEIGHT = 20 / 28     # as in MNIST: a 20 px digit in a 28 px canvas
SCALE_RANGE = (0.8, 1.25)  # glyph canvas side / tile side: digit height 0.57..0.89 of the tile
ASPECT_RANGE = (0.75, 1.4)  # width stretch (photos of tall digits are squashed into squares)
SLANT_MAX = 0.15           # shear x += slant * height
MAX_ANGLE = 6.0            # rotation ~ U(-MAX_ANGLE, MAX_ANGLE) degrees
SHIFT_MAX = 0.08           # glyph centre offset, fraction of the tile side
MIN_CONTRAST = 0.25        # |luminance(digit colour) - luminance(background under it)| >= this (0..1)
P_OUTLINE, P_SHADOW = 0.15, 0.15
BLUR_LEVELS = (1, 2, 3)    # the digit is drawn at 1/1, 1/2 or 1/3 of the tile's resolution (blur)
NOISE_MAX = 10.0           # sensor noise sigma ~ U(0, NOISE_MAX) grey levels
P_JPEG, JPEG_QUALITY = 0.3, (20, 90)
FIELD_GRID, SHUFFLE_GRID = 4, 8
N_BANK = 8                 # noise fields per bank (each sample crops one at a random offset)

# Fixed font files (matplotlib ships them), so glyphs render the same on every machine. cmmi10
# (old-style figures), cmsy10 / cmex10 (symbols) and the STIX size variants have no usable digits.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf",
)
STROKES = (0, 2)           # extra stroke width (px at GLYPH_SIZE) rendered for every face: weight
_CACHE = {}                # glyph bank and noise banks, built once per process


# ----------------------------------------------------------------------------- digit sources

def font_digits(size=GLYPH_SIZE):
    """Digits 0-9 of every FONT_FILES face at every STROKES width, rendered with Pillow:
    (uint8 alpha [M, size, size], int64 labels [M]), each digit's box GLYPH_HEIGHT of the canvas
    high and centred. Rendered once per process (about 0.2 s)."""
    key = ("fonts", size)
    if key not in _CACHE:
        import matplotlib
        from PIL import Image, ImageDraw, ImageFont
        root = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
        glyphs, labels = [], []
        big = 4 * size  # render large, then downsample: antialiased edges at any stroke width
        for name in FONT_FILES:
            font = ImageFont.truetype(os.path.join(root, name), int(big * GLYPH_HEIGHT))
            for stroke in STROKES:
                for d in range(10):
                    img = Image.new("L", (2 * big, 2 * big), 0)
                    ImageDraw.Draw(img).text((big // 2, big // 2), str(d), fill=255, font=font,
                                             stroke_width=4 * stroke, stroke_fill=255)
                    x0, y0, x1, y1 = img.getbbox()
                    h = y1 - y0  # scale the ink box to GLYPH_HEIGHT of the canvas, aspect kept
                    s = GLYPH_HEIGHT * size / h
                    w = max(1, round((x1 - x0) * s))
                    ink = img.crop((x0, y0, x1, y1)).resize((min(w, size), round(h * s)), Image.LANCZOS)
                    canvas = Image.new("L", (size, size), 0)
                    canvas.paste(ink, ((size - ink.width) // 2, (size - ink.height) // 2))
                    glyphs.append(torch.from_numpy(np.array(canvas)))
                    labels.append(d)
        _CACHE[key] = (torch.stack(glyphs), torch.tensor(labels))
    return _CACHE[key]


def digit_bank(source, mnist=None):
    """[(alpha uint8 [M, G, G], labels [M]), ...] for `source` (mnist | fonts | both); `mnist`
    is (digits [M, 28, 28] or [M, 1, 28, 28], labels), needed for mnist and both."""
    if source not in SOURCES:
        raise ValueError(f"unknown synthetic source {source!r} (one of {', '.join(SOURCES)})")
    banks = []
    if source in ("mnist", "both"):
        if mnist is None:
            raise ValueError(f"source {source!r} needs the MNIST digits")
        digits, labels = mnist
        banks.append((digits[:, 0] if digits.dim() == 4 else digits, torch.as_tensor(labels)))
    if source in ("fonts", "both"):
        banks.append(font_digits())
    return banks


# ----------------------------------------------------------------------------- random parameters

# The uniforms every sample draws, by name (the same for every source and background, so a
# sample's draws never depend on the options: only which ones are used does).
_DRAWS = ["photo", "bank", "digit", "scale", "aspect", "slant", "angle", "dx", "dy", "lum", "r", "g", "b",
          "crop_y", "crop_x", "effect", "shadow_dir", "blur", "noise", "jpeg", "jpeg_q", "noise_k",
          "noise_y", "noise_x", "tex_k", "tex_y", "tex_x", "tex_amp"]
_COL = {name: i for i, name in enumerate(_DRAWS)}
_N_PERM = max(FIELD_GRID, SHUFFLE_GRID) ** 2
N_DRAWS = len(_DRAWS) + _N_PERM  # + one uniform per patch: a permutation by argsort


def _params(seed, indices):
    """Uniforms [b, N_DRAWS] of samples `indices`, each from its own (seed, index) stream."""
    return torch.from_numpy(np.stack([np.random.default_rng([seed, i]).random(N_DRAWS) for i in indices])).float()


def _col(u, name):
    return u[:, _COL[name]]


def _pick(u, name, k):
    """U{0..k-1} from a uniform column."""
    return (_col(u, name) * k).long().clamp_(max=k - 1)


def _lerp(u, name, lo, hi):
    return lo + (hi - lo) * _col(u, name)


def _perm(u, k):
    """A random permutation of k*k patches per sample [b, k*k] (argsort of its uniforms)."""
    return u[:, len(_DRAWS):len(_DRAWS) + k * k].argsort(1)


# ----------------------------------------------------------------------------- backgrounds

def _noise_bank(kind, size):
    """N_BANK fixed noise fields [N_BANK, 1, 2*size, 2*size] with unit std: 'white' (
    sensor noise) or 'texture' (low-pass, low-pass: grain and mottling). Seeded constants."""
    key = (kind, size)
    if key not in _CACHE:
        g = torch.Generator().manual_seed(1234)
        if kind == "white":  # luminance noise (one channel, added to all three)
            bank = torch.randn(N_BANK, 1, 2 * size, 2 * size, generator=g)
        else:  # two scales of low-pass noise: fine grain plus larger blotches
            bank = torch.zeros(N_BANK, 1, 2 * size, 2 * size)
            for sigma, w in ((max(0.7, size / 64), 0.6), (max(1.5, size / 12), 0.8)):
                z = torch.randn(N_BANK, 1, 2 * size, 2 * size, generator=g)
                z = _blur(z, torch.full((N_BANK,), sigma), reflect=False)
                bank += w * z / z.std((1, 2, 3), keepdim=True)
            bank /= bank.std((1, 2, 3), keepdim=True)
        _CACHE[key] = bank
    return _CACHE[key]


def _crop_at(images, idx, fy, fx, size):
    """Crops [b, C, size, size] of images[idx] at fractional positions fy, fx [b] of the free range."""
    h, w = images.shape[-2:]
    y = (fy * (h - size + 1)).long().clamp_(0, h - size)
    x = (fx * (w - size + 1)).long().clamp_(0, w - size)
    # unfold gives a view [B, C, nH, nW, size, size] of every crop; indexing copies only the chosen ones
    return images.unfold(2, size, 1).unfold(3, size, 1)[idx, :, y, x]


def _photo_crops(photos, idx, fy, fx, size):
    """Crops of photos[idx]; photos smaller than `size` on a side are first upsampled (aspect kept)."""
    h, w = photos.shape[-2:]
    if min(h, w) < size:
        scale = size / min(h, w)
        hw = (max(size, round(h * scale)), max(size, round(w * scale)))
        photos = F.interpolate(photos[idx].float(), size=hw, mode="bilinear",
                               align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        idx = torch.arange(len(idx))
    return _crop_at(photos, idx, fy, fx, size)


def field_stats(photos):
    """Per photo: its FIELD_GRID^2 cell colours [B, 3, k*k] and its fine-detail contrast [B] (the
    std of its 16x16 thumbnail around its 4x4 grid), computed once per make_synthetic call."""
    k = FIELD_GRID
    thumb = torch.cat([F.adaptive_avg_pool2d(p.float(), 4 * k) for p in photos.split(256)])
    cells = F.avg_pool2d(thumb, 4)
    detail = thumb - F.interpolate(cells, scale_factor=4, mode="nearest")
    return cells.flatten(2), detail.std((1, 2, 3))


def _upsampler(k, size):
    """[size, k]: the linear map of bicubic k -> 4k then bilinear 4k -> size interpolation (smooth),
    so that upsampling an image X [k, k] is up @ X @ up.T."""
    key = ("up", k, size)
    if key not in _CACHE:
        cubic = F.interpolate(torch.eye(k)[:, None, :, None], size=(4 * k, 1), mode="bicubic",
                              align_corners=False)[:, 0, :, 0].T  # [4k, k]
        linear = F.interpolate(torch.eye(4 * k)[:, None], size=size, mode="linear",
                               align_corners=False)[:, 0].T  # [size, 4k]
        _CACHE[key] = (linear @ cubic).contiguous()
    return _CACHE[key]


def _field(stats, idx, u, size):
    """Digit-free fields [b, 3, size, size] (float 0..255): the photo's FIELD_GRID^2 cell colours
    in shuffled cells, upsampled (smooth), plus low-pass texture scaled to the photo's own
    fine-detail contrast."""
    b, k = len(idx), FIELD_GRID
    cells, detail = stats[0][idx], stats[1][idx]
    cells = cells.gather(2, _perm(u, k)[:, None].expand(b, 3, k * k)).view(b, 3, k, k)
    up = _upsampler(k, size)
    field = up @ cells @ up.T  # two small GEMMs: far faster on CPU than F.interpolate to full size
    amp = detail.clamp(max=40.0) * _lerp(u, "tex_amp", 0.3, 1.0)
    tex = _crop_at(_noise_bank("texture", size), _pick(u, "tex_k", N_BANK), _col(u, "tex_y"), _col(u, "tex_x"), size)
    return field.addcmul_(tex, amp.view(b, 1, 1, 1))  # clamped with the composite


def _shuffled(crops, u):
    """Crops [b, 3, S, S] cut into SHUFFLE_GRID^2 patches, shuffled per sample (float 0..255)."""
    b, _, s, _ = crops.shape
    k = SHUFFLE_GRID
    p = max(1, s // k)
    x = crops[:, :, :k * p, :k * p] if s >= k else F.interpolate(crops.float(), size=(k, k))
    patches = x.view(b, 3, k, p, k, p).permute(0, 2, 4, 1, 3, 5).reshape(b, k * k, 3, p, p)
    patches = patches.gather(1, _perm(u, k)[:, :, None, None, None].expand_as(patches))
    x = patches.view(b, k, k, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, 3, k * p, k * p).float()
    return x if k * p == s else F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)


def _backgrounds(photos, u, size, mode, stats=None):
    idx = _pick(u, "photo", len(photos))
    if mode == "field":
        return _field(stats, idx, u, size)
    crops = _photo_crops(photos, idx, _col(u, "crop_y"), _col(u, "crop_x"), size)
    return _shuffled(crops, u) if mode == "shuffle" else crops.float()


# ----------------------------------------------------------------------------- the digit

def _glyph_grid(u, size):
    """Sampling grid [b, size, size, 2]: tile -> glyph coordinates for a glyph scaled by `scale`
    (its canvas side / the tile side), stretched by `aspect`, slanted, rotated and shifted."""
    scale = _lerp(u, "scale", *SCALE_RANGE)
    aspect = torch.exp(_lerp(u, "aspect", math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])))
    slant = _lerp(u, "slant", -SLANT_MAX, SLANT_MAX)
    a = torch.deg2rad(_lerp(u, "angle", -MAX_ANGLE, MAX_ANGLE))
    tx, ty = _lerp(u, "dx", -2 * SHIFT_MAX, 2 * SHIFT_MAX), _lerp(u, "dy", -2 * SHIFT_MAX, 2 * SHIFT_MAX)
    # glyph -> tile is T + R @ [[1, -slant], [0, 1]] @ diag(scale * aspect, scale); the grid needs
    # its inverse M = diag(1 / (scale * aspect), 1 / scale) @ [[1, slant], [0, 1]] @ R(-a)
    c, s = torch.cos(a), torch.sin(a)
    sx, sy = 1 / (scale * aspect), 1 / scale
    m00, m01 = sx * (c + slant * -s), sx * (s + slant * c)
    m10, m11 = sy * -s, sy * c
    # Built from separable row and column terms rather than F.affine_grid, which materialises a
    # [b, size*size, 3] base grid and a bmm (the slowest step on CPU, 2-3x this).
    t = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1  # pixel centres, align_corners=False
    col = t[None, :] - tx[:, None]  # [b, size] along x
    row = t[None, :] - ty[:, None]  # [b, size] along y
    grid = torch.empty(len(u), size, size, 2)
    torch.add((m00[:, None] * col)[:, None, :], (m01[:, None] * row)[:, :, None], out=grid[..., 0])
    torch.add((m10[:, None] * col)[:, None, :], (m11[:, None] * row)[:, :, None], out=grid[..., 1])
    return grid


def _alpha(banks, u, size):
    """Soft alpha [b, 1, size, size] in 0..1 (bilinear: antialiased, no threshold) and labels [b]."""
    bank_idx = _pick(u, "bank", len(banks))
    grid = _glyph_grid(u, size)
    alpha = torch.empty(len(u), 1, size, size)
    labels = torch.empty(len(u), dtype=torch.int64)
    # Blur (a digit out of focus, or a small photo upsampled): the glyph is first reduced to
    # 1/2 or 1/3 of its side in the tile (antialiased), so that scaling it up softens it. On
    # glyph-sized data, far cheaper than blurring the tile.
    level = _pick(u, "blur", len(BLUR_LEVELS))
    for k, (glyphs, glyph_labels) in enumerate(banks):
        for lv, factor in enumerate(BLUR_LEVELS):
            rows = torch.nonzero((bank_idx == k) & (level == lv)).flatten()
            if not len(rows):
                continue
            j = _pick(u[rows], "digit", len(glyphs))
            g = glyphs[j, None].float()
            side = max(4, round(size / factor))
            if factor > 1 and side < g.shape[-1]:
                g = F.interpolate(g, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            alpha[rows] = F.grid_sample(g, grid[rows], mode="bilinear", padding_mode="zeros", align_corners=False)
            labels[rows] = glyph_labels[j]
    return alpha.mul_(1 / 255).clamp_(0, 1), labels


def _luminance(x):
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def digit_colour(u, bg_lum):
    """Colours [b, 3] (0..255) whose luminance differs from bg_lum [b] (0..255) by at least
    MIN_CONTRAST: the luminance is drawn from the allowed part of 0..1, the hue from r, g, b,
    and the chroma kept where it leaves every channel in range (the luminance is then exact)."""
    lb, c = bg_lum / 255, MIN_CONTRAST
    below, above = (lb - c).clamp(min=0), (1 - lb - c).clamp(min=0)
    v = _col(u, "lum") * (below + above)
    lum = torch.where(v < below, v, lb + c + (v - below))
    rgb = torch.stack([_col(u, "r"), _col(u, "g"), _col(u, "b")], 1)
    chroma = rgb - _luminance(rgb[..., None, None])[:, None, 0, 0]
    # largest s in [0, 1] with lum + s * chroma inside [0, 1] in every channel
    lim = torch.where(chroma > 0, (1 - lum[:, None]) / chroma.clamp(min=1e-6),
                      torch.where(chroma < 0, lum[:, None] / (-chroma).clamp(min=1e-6), torch.ones_like(chroma)))
    s = lim.min(1).values.clamp(0, 1)
    return (lum[:, None] + s[:, None] * chroma).clamp(0, 1) * 255


# ----------------------------------------------------------------------------- photographic degradation

def _blur(x, sigma, reflect=True):
    """Per-sample Gaussian blur of x [b, C, H, W] with sigma [b] (px) (used for the noise banks)."""
    b, ch, h, w = x.shape
    r = max(1, int(math.ceil(3 * float(sigma.max()))))
    r = min(r, (min(h, w) - 1) if reflect else r)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    kern = torch.exp(-t[None] ** 2 / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # [b*C, 2r+1]
    y = F.pad(x.reshape(1, b * ch, h, w), [r] * 4, mode="reflect" if reflect else "circular")
    y = F.conv2d(y, kern[:, None, None, :], groups=b * ch)
    y = F.conv2d(y, kern[:, None, :, None], groups=b * ch)
    return y.view(b, ch, h, w)


def _channel_mix(x, m, bias):
    """m [3, 3] @ every pixel of x [b, 3, H, W] + bias [3]: one batched GEMM."""
    b, c, h, w = x.shape
    return torch.baddbmm(bias.view(1, 3, 1), m.expand(b, 3, 3), x.reshape(b, c, h * w)).view(b, 3, h, w)


_RGB2YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC2RGB = torch.linalg.inv(_RGB2YCC)
_Q_LUMA = torch.tensor([  # the JPEG standard's quantisation tables (Annex K)
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)
_Q_CHROMA = torch.full((8, 8), 99.0)
_Q_CHROMA[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]])


def _dct_matrix(n=8):
    k, i = torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n, dtype=torch.float32)[None]
    d = torch.cos((2 * i + 1) * k * math.pi / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


_DCT64 = torch.kron(_dct_matrix(), _dct_matrix())  # the 2-D 8x8 DCT of a flattened block: one GEMM


def jpeg_like(x, quality):
    """JPEG's losses on x [b, 3, H, W] (float 0..255) at quality [b] (1..100): YCbCr, 2x chroma
    subsampling, 8x8 DCT quantised with the standard tables. Tensor ops only."""
    b, _, h, w = x.shape
    ph, pw = -h % 16, -w % 16
    y = F.pad(x, [0, pw, 0, ph], mode="replicate") if ph or pw else x
    y = _channel_mix(y, _RGB2YCC, torch.tensor([-128.0, 0.0, 0.0]))
    y[:, 1:] = F.interpolate(F.avg_pool2d(y[:, 1:], 2), scale_factor=2, mode="nearest")
    H, W = y.shape[-2:]
    blocks = y.view(b, 3, H // 8, 8, W // 8, 8).transpose(3, 4).reshape(b, 3, -1, 64)
    coef = blocks @ _DCT64.T
    q = quality.clamp(1, 100)
    scale = torch.where(q < 50, 50 / q, 2 - q / 50)  # libjpeg's quality -> table scale
    step = (torch.stack([_Q_LUMA, _Q_CHROMA, _Q_CHROMA]).view(1, 3, 1, 64) * scale.view(b, 1, 1, 1)).clamp_(min=1)
    coef = coef.div_(step).round_().mul_(step)
    y = (coef @ _DCT64).view(b, 3, H // 8, W // 8, 8, 8).transpose(3, 4).reshape(b, 3, H, W)
    y = _channel_mix(y, _YCC2RGB, _YCC2RGB[:, 0] * 128)
    return y[..., :h, :w]


# ----------------------------------------------------------------------------- compositing

def composite(bg, alpha, u):
    """Paint the digit (alpha [b, 1, S, S]) onto backgrounds bg [b, 3, S, S] (float 0..255, modified)
    in a contrasting colour, with an outline or shadow on some samples, then degrade like a photo."""
    b, _, size, _ = bg.shape
    # the background's luminance under the digit, on every 4th pixel (a cheap, close estimate)
    small_a = alpha[:, :, ::4, ::4]
    bg_lum = (_luminance(bg[:, :, ::4, ::4])[:, None] * small_a).sum((1, 2, 3)) / small_a.sum((1, 2, 3)).clamp(min=1e-6)
    colour = digit_colour(u, bg_lum)
    effect = _col(u, "effect")
    r = max(1, round(size / 64))  # outline width / shadow offset, in pixels at this size
    x = bg
    rows = torch.nonzero(effect < P_OUTLINE).flatten()
    if len(rows):  # outline: the alpha dilated by r, in the digit's opposite grey
        ring = F.max_pool2d(alpha[rows], (1, 2 * r + 1), stride=1, padding=(0, r))  # separable dilation
        ring = F.max_pool2d(ring, (2 * r + 1, 1), stride=1, padding=(r, 0))
        grey = (255 - _luminance(colour[rows, :, None, None])).view(-1, 1, 1, 1)
        x[rows] = torch.lerp(x[rows], grey.expand(-1, 3, 1, 1), ring)
    rows = torch.nonzero((effect >= P_OUTLINE) & (effect < P_OUTLINE + P_SHADOW)).flatten()
    d = (_col(u, "shadow_dir") * 4).long()  # shadow: the alpha shifted by r or 2r down, r left or right
    for k in range(4):
        sub = rows[d[rows] == k]
        if len(sub):
            shadow = torch.roll(alpha[sub], ((1 + k // 2) * r, (1 if k % 2 else -1) * r), (2, 3))
            x[sub] *= 1 - 0.6 * shadow  # 60 % darker
    x = torch.lerp(x, colour[:, :, None, None].expand_as(x), alpha)  # the soft-alpha paste
    noise = _crop_at(_noise_bank("white", size), _pick(u, "noise_k", N_BANK), _col(u, "noise_y"),
                     _col(u, "noise_x"), size)
    x.addcmul_(noise, _lerp(u, "noise", 0.0, NOISE_MAX).view(b, 1, 1, 1))
    rows = torch.nonzero(_col(u, "jpeg") < P_JPEG).flatten()
    if len(rows):
        x[rows] = jpeg_like(x[rows].clamp_(0, 255), _lerp(u[rows], "jpeg_q", *JPEG_QUALITY))
    return x.add_(0.5).clamp_(0, 255).to(torch.uint8)  # + 0.5 and truncation: rounding


def make_synthetic(photos, banks, n, img_size, seed=0, start=0, batch_size=512, background="field"):
    """n composites [n, 3, img_size, img_size] (uint8) and their digit labels [n] (int64), for
    sample indices start..start+n-1.

    photos: uint8 [B, 3, H, W], the backgrounds' source (training photos, or a folder of
    digit-free photos for `photo-crops`); banks: `digit_bank(...)` or one (alpha [M, G, G], labels)
    pair; background: one of BACKGROUNDS."""
    if isinstance(banks, tuple) and len(banks) == 2 and torch.is_tensor(banks[0]):
        banks = [banks]
    banks = [(g[:, 0] if g.dim() == 4 else g, torch.as_tensor(y)) for g, y in banks]
    if photos.dim() != 4 or photos.shape[1] != 3 or len(photos) == 0:
        raise ValueError(f"photos must be a non-empty [B, 3, H, W] tensor, got {tuple(photos.shape)}")
    for g, y in banks:
        if g.dim() != 3 or len(g) == 0 or len(g) != len(y):
            raise ValueError(f"digits must be [M, G, G] with M labels, got {tuple(g.shape)} and {len(y)} labels")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r} (one of {', '.join(BACKGROUNDS)})")
    if n < 0 or start < 0 or seed < 0 or batch_size < 1 or img_size < 1:
        raise ValueError("n, start and seed must be >= 0; batch_size and img_size >= 1")
    images = torch.empty(n, 3, img_size, img_size, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    stats = field_stats(photos) if background == "field" and n else None
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        u = _params(seed, range(start + lo, start + hi))
        bg = _backgrounds(photos, u, img_size, background, stats)
        alpha, labels[lo:hi] = _alpha(banks, u, img_size)
        images[lo:hi] = composite(bg, alpha, u)
    return images, labels


def benchmark(n=4096, img_size=128, batch_size=512, n_photos=256, seed=0, background="field", source="fonts"):
    """Composites per second on random photo-sized backgrounds (content does not change speed)."""
    g = torch.Generator().manual_seed(seed)
    side = img_size + img_size // 8  # the size images.load_folder caches photos at
    photos = torch.randint(0, 256, (n_photos, 3, side, side), dtype=torch.uint8, generator=g)
    mnist = (torch.randint(0, 256, (1000, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (1000,), generator=g))
    banks = digit_bank(source, mnist)
    make_synthetic(photos, banks, min(n, batch_size), img_size, batch_size=batch_size, background=background)  # warm-up
    t0 = time.perf_counter()
    make_synthetic(photos, banks, n, img_size, seed=seed, batch_size=batch_size, background=background)
    return n / (time.perf_counter() - t0)
