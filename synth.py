"""Synthetic training digits: MNIST digits composited onto random crops of real photos.

Each sample i takes a random training photo, a random `img_size` square crop of it, and a random
MNIST training digit scaled into the square with a random padding, given one random colour,
rotated a little, and hard-pasted wherever its grey level (its alpha) exceeds ALPHA_MIN.
Sample i depends only on (seed, i): its parameters come from `np.random.default_rng([seed, i])`,
so any slice start..start+n, at any batch size, gives the same images. The pixel work is done a
batch at a time with tensor ops (one affine_grid + grid_sample for all digits of a batch).

    python synth.py --data-dir ../shared/data/meter_digits --mnist-root ../shared/data --n 64 --out synthetic.png
    python synth.py --data-dir ... --mnist-root ... --export synth_dir --n 5000
    python synth.py --benchmark
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REF_SIZE = 128             # the padding range below is in pixels at this img_size
PAD_RANGE = (10, 30)       # padding p ~ U{10..30} around the digit (at REF_SIZE), inclusive
MAX_ANGLE = 10.0           # rotation ~ U(-MAX_ANGLE, MAX_ANGLE) degrees
ALPHA_MIN = 20             # digit pixels with grey level > ALPHA_MIN (of 255) are painted
PREVIEW_MAX = 64           # tiles in a preview grid
N_DRAWS = 9                # uniforms per sample: photo, digit, pad, angle, RGB colour, crop y, x


# ----------------------------------------------------------------------------- compositing

def _params(seed, indices, n_backgrounds, n_digits):
    """Random parameters of samples `indices`. Each sample draws its own N_DRAWS uniforms from
    its (seed, index) stream, so it never depends on which other samples are made with it."""
    u = torch.from_numpy(np.stack([np.random.default_rng([seed, i]).random(N_DRAWS) for i in indices]))

    def pick(col, k):  # U{0..k-1} from uniform column(s) col
        return (u[:, col] * k).long().clamp_(max=k - 1)

    bg, digit = pick(0, n_backgrounds), pick(1, n_digits)
    pad = PAD_RANGE[0] + pick(2, PAD_RANGE[1] - PAD_RANGE[0] + 1)
    angle = (2 * u[:, 3] - 1) * MAX_ANGLE
    colour = pick(slice(4, 7), 256).to(torch.uint8)
    pos = u[:, 7:9]  # crop position as a fraction of the free range (independent of photo size)
    return bg, digit, pad.float(), angle.float(), colour, pos.float()


def _crops(backgrounds, bg_idx, pos, size):
    """Crops [b, 3, size, size] of backgrounds[bg_idx] at fractional positions pos [b, 2] (y, x).
    Photos smaller than `size` on a side are first upsampled bilinearly (aspect kept)."""
    h, w = backgrounds.shape[-2:]
    if min(h, w) < size:
        scale = size / min(h, w)
        hw = (max(size, round(h * scale)), max(size, round(w * scale)))
        backgrounds = F.interpolate(backgrounds[bg_idx].float(), size=hw, mode="bilinear",
                                    align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        bg_idx, (h, w) = torch.arange(len(bg_idx)), hw
    y = (pos[:, 0] * (h - size + 1)).long().clamp_(max=h - size)
    x = (pos[:, 1] * (w - size + 1)).long().clamp_(max=w - size)
    # unfold gives a view [B, 3, nH, nW, size, size] of every crop; indexing copies only the chosen ones
    windows = backgrounds.unfold(2, size, 1).unfold(3, size, 1)
    return windows[bg_idx, :, y, x]


def _digit_alpha(digits, pad, angle, size):
    """Digits [b, 28, 28] scaled to (size - 2p) square, centred in a size canvas and rotated:
    one sampling grid + one grid_sample. Returns float alpha [b, size, size] in 0..255."""
    # In grid_sample's normalised coordinates (align_corners=False) the canvas spans [-1, 1]; the
    # digit must span (size - 2p) / size of it, and with p scaled by size / REF_SIZE that ratio is
    # (REF_SIZE - 2p) / REF_SIZE whatever the size. The grid maps canvas -> digit coordinates.
    zoom = REF_SIZE / (REF_SIZE - 2 * pad)
    a = torch.deg2rad(angle)
    cos, sin = torch.cos(a) * zoom, torch.sin(a) * zoom
    # This is F.affine_grid(theta = zoom * [[cos, -sin, 0], [sin, cos, 0]]), built from its
    # separable row and column terms: affine_grid materialises a [b, size*size, 3] base grid and
    # a bmm, which made it the slowest step on CPU (2-3x this).
    t = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1  # pixel centres
    grid = torch.empty(len(digits), size, size, 2)
    torch.add((cos[:, None] * t)[:, None, :], (-sin[:, None] * t)[:, :, None], out=grid[..., 0])
    torch.add((sin[:, None] * t)[:, None, :], (cos[:, None] * t)[:, :, None], out=grid[..., 1])
    return F.grid_sample(digits[:, None].float(), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[:, 0]


def make_synthetic(backgrounds, digits, digit_labels, n, img_size, seed=0, start=0, batch_size=512):
    """backgrounds: uint8 [B,3,H,W] real training photos; digits: uint8 [M,28,28] MNIST train digits;
    digit_labels: int64 [M]. Returns (uint8 images [n,3,img_size,img_size], int64 digit labels [n])
    for sample indices start..start+n-1."""
    if digits.dim() == 4:  # [M, 1, 28, 28] as load_mnist gives it
        digits = digits[:, 0]
    if backgrounds.dim() != 4 or backgrounds.shape[1] != 3 or len(backgrounds) == 0:
        raise ValueError(f"backgrounds must be a non-empty [B, 3, H, W] tensor, got {tuple(backgrounds.shape)}")
    if digits.dim() != 3 or len(digits) == 0 or len(digits) != len(digit_labels):
        raise ValueError(f"digits must be [M, 28, 28] with M labels, got {tuple(digits.shape)} "
                         f"and {len(digit_labels)} labels")
    if n < 0 or start < 0 or seed < 0 or batch_size < 1 or img_size < 1:
        raise ValueError("n, start and seed must be >= 0; batch_size and img_size >= 1")
    images = torch.empty(n, 3, img_size, img_size, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    digit_labels = torch.as_tensor(digit_labels)
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        bg, dig, pad, angle, colour, pos = _params(seed, range(start + lo, start + hi),
                                                   len(backgrounds), len(digits))
        crops = _crops(backgrounds, bg, pos, img_size)
        painted = _digit_alpha(digits[dig], pad, angle, img_size) > ALPHA_MIN
        # hard paste: crop outside the digit, its colour inside (the same as torch.where, but a
        # where with a broadcast colour is 2-3x slower on CPU than this uint8 arithmetic)
        painted = painted[:, None]
        torch.add(crops * ~painted, colour[:, :, None, None] * painted, out=images[lo:hi])
        labels[lo:hi] = digit_labels[dig]
    return images, labels


def benchmark(n=4096, img_size=128, batch_size=512, n_backgrounds=256, seed=0):
    """Composites per second on random photo-sized backgrounds (content does not change speed)."""
    g = torch.Generator().manual_seed(seed)
    side = img_size + img_size // 8  # the size data.load_folder caches photos at
    backgrounds = torch.randint(0, 256, (n_backgrounds, 3, side, side), dtype=torch.uint8, generator=g)
    digits = torch.randint(0, 256, (1000, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (1000,), generator=g)
    make_synthetic(backgrounds, digits, labels, min(n, batch_size), img_size, batch_size=batch_size)  # warm-up
    t0 = time.perf_counter()
    make_synthetic(backgrounds, digits, labels, n, img_size, seed=seed, batch_size=batch_size)
    return n / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- output

def preview_grid(images, labels, path, ncol=8):
    """A labelled grid of uint8 images [N, C, H, W] (C = 1 or 3) written to `path` (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend needed, lazy for import time
    images, n = images[:PREVIEW_MAX], min(len(images), PREVIEW_MAX)
    ncol = max(1, min(ncol, n))
    nrow = max(1, -(-n // ncol))
    fig = Figure(figsize=(1.4 * ncol, 1.6 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < n:
            img = images[k].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
            if labels is not None:
                ax.set_title(str(int(labels[k])), fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    import data  # here, not at the top: data.py imports synth
    data.save_figure(fig, path, dpi=100)


def export(images, labels, out_dir, start=0):
    """Write images as out_dir/synth{i:06d}_label{d}.png (the naming data.scan_folder reads)."""
    from PIL import Image
    import data
    os.makedirs(out_dir, exist_ok=True)
    for k, (img, d) in enumerate(zip(images, labels.tolist())):
        with data.atomic_write(os.path.join(out_dir, f"synth{start + k:06d}_label{d}.png"), "wb") as f:
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(f, "PNG", compress_level=1)


# ----------------------------------------------------------------------------- CLI

def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description="Composite MNIST digits onto crops of real training photos",
                                add_help=add_help)
    p.add_argument("--data-dir", default="data/dataset", help="labelled photo folder (its training split is used)")
    p.add_argument("--mnist-root", default="data", help="holds MNIST/raw/")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download MNIST when its files are missing (default: yes)")
    p.add_argument("--cache-dir", default=None, help="decoded photo cache (as in data.py)")
    p.add_argument("--n", type=int, default=64, help="number of synthetic samples")
    p.add_argument("--img-size", type=int, default=REF_SIZE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.15, help="as in training: val photos are never used")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", default=None, help="preview grid PNG (default synthetic.png unless --export)")
    p.add_argument("--export", default=None, metavar="DIR", help="write the N samples as PNG files here")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--benchmark", action="store_true", help="print composites/s on random data and exit")
    return p


def fail(msg):
    """A usage or data problem: one line on stderr and exit status 2, no traceback."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def main(args):
    if args.n < 1 or args.img_size < 1 or args.seed < 0 or args.batch_size < 1:
        fail("--n, --img-size and --batch-size must be >= 1, --seed >= 0")
    if not 0.0 < args.val_fraction < 1.0 or args.split_seed < 0:
        fail(f"--val-fraction must be in (0, 1) and --split-seed >= 0, got {args.val_fraction}, {args.split_seed}")
    if args.out and os.path.isdir(args.out):
        fail(f"--out {args.out} is a folder; it names the preview PNG file")
    if args.export and os.path.exists(args.export) and not os.path.isdir(args.export):
        fail(f"--export {args.export} is a file, not a folder")
    if args.cache_dir and os.path.exists(args.cache_dir) and not os.path.isdir(args.cache_dir):
        fail(f"--cache-dir {args.cache_dir} is a file, not a folder")
    if args.benchmark:  # a few batches, so that per-call overheads do not dominate
        rate = benchmark(n=max(args.n, 8 * args.batch_size), img_size=args.img_size, batch_size=args.batch_size)
        print(f"{rate:.0f} composites/s at img_size {args.img_size} ({torch.get_num_threads()} threads)")
        return
    import data  # here, not at the top: data.py imports synth for its synthetic dataset
    try:
        photos, photo_labels, _, _ = data.load_folder(args.data_dir, args.img_size, args.cache_dir)
        train_idx, _ = data.stratified_split(photo_labels, args.val_fraction, args.split_seed)
        if len(train_idx) == 0:
            raise data.DataError(f"the training split of {args.data_dir} is empty")
        digits, digit_labels = data.load_mnist(args.mnist_root, train=True, download=args.download)
    except data.DataError as e:
        fail(e)
    backgrounds = photos[train_idx]
    make = lambda n, start: make_synthetic(backgrounds, digits, digit_labels, n, args.img_size,  # noqa: E731
                                           seed=args.seed, start=start, batch_size=args.batch_size)
    if args.export:
        chunk = 8 * args.batch_size  # bounded memory for large N; same samples as one call
        for start in range(0, args.n, chunk):
            export(*make(min(chunk, args.n - start), start), args.export, start)
        print(f"wrote {args.n} synthetic images to {args.export}/ ({len(backgrounds)} training photos)")
    out = args.out or (None if args.export else "synthetic.png")
    if out:
        images, labels = make(min(args.n, PREVIEW_MAX), 0)
        preview_grid(images, labels, out)
        print(f"wrote a preview of {len(images)} synthetic samples to {out} ({len(backgrounds)} training photos)")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
