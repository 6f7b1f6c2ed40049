"""Preview, export or benchmark the synthetic training digits that `train.py --synthetic-n N` adds
(composite.py makes them), with train.py's data options, so a preview shows exactly what a run
trains on.

    python synth.py --data-dir ../shared/data/meter_digits --mnist-root ../shared/data --n 64 --out synthetic.png
    python synth.py --data-dir ... --all --out previews/synthetic.png    # every source x background
    python synth.py --data-dir ... --export synth_dir --n 5000
    python synth.py --benchmark
"""
import os

import torch

import cli
import composite
import data
from images import IMG_EXTENSIONS

PREVIEW_MAX = 64  # tiles in a preview grid


def preview_title(shown, n, cfg):
    """What a preview grid of synthetic digits shows: how many, made how (a data config's synthetic options)."""
    return (f"synthetic training digits, not photos: {shown} of {n} "
            f"(source {cfg['synthetic_source']}, backgrounds {os.path.basename(os.path.normpath(cfg['backgrounds']))})")


def preview_grid(images, labels, path, ncol=8, title=None):
    """A labelled grid of uint8 images [N, C, H, W] (C = 1 or 3) written to `path` (PNG), under `title`."""
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
                ax.set_title(str(labels[k] if isinstance(labels[k], str) else int(labels[k])), fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cli.save_figure(fig, path, dpi=100)


def export(images, labels, out_dir, start=0):
    """Write images as out_dir/synth{i:06d}_label{d}.png (the naming images.scan_folder reads)."""
    from PIL import Image
    os.makedirs(out_dir, exist_ok=True)
    for k, (img, d) in enumerate(zip(images, labels)):
        with cli.atomic_write(os.path.join(out_dir, f"synth{start + k:06d}_label{d}.png"), "wb") as f:
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(f, format="PNG", compress_level=1)


def get_args_parser(add_help=True):
    p = cli.ArgumentParser(description="Preview or export the synthetic training digits that "
                                "train.py --synthetic-n N adds (same data options)", add_help=add_help)
    data.add_data_args(p)
    p.add_argument("--n", type=int, default=64, help="number of synthetic samples (the --synthetic-n they stand for)")
    p.add_argument("--seed", type=int, default=0, help="train.py's --seed (it seeds the composites)")
    p.add_argument("--out", default=None, help="preview grid PNG (default runs/synthetic.png unless --export)")
    p.add_argument("--all", action="store_true",
                   help="one preview per source x background: --out's name + _<source>_<background>.png")
    p.add_argument("--export", default=None, metavar="DIR", help="write the N samples as PNG files here")
    p.add_argument("--benchmark", action="store_true", help="print composites/s on random data and exit")
    p.add_argument("--batch-size", type=int, default=512, help="composites per tensor batch (--benchmark)")
    return p


def check_args(args):
    cli.check_args(args, ("n", args.n >= 1, ">= 1"), ("seed", args.seed >= 0, ">= 0"),
                   ("batch_size", args.batch_size >= 1, ">= 1"))
    if args.out and os.path.isdir(args.out):
        raise cli.UsageError(f"--out {args.out} is a folder; it names the preview PNG file")
    cli.check_folder_arg(args.export, "--export")
    if args.benchmark:
        return
    data.check_data_args(args)
    inputs = [("--data-dir", args.data_dir), ("--test-dir", args.test_dir), ("--mnist-root", args.mnist_root),
              ("--backgrounds", args.backgrounds if os.path.isdir(args.backgrounds) else None)]
    for option, out in (("--export", args.export), ("--out", args.out and os.path.dirname(os.path.abspath(args.out)))):
        for name, folder in inputs:
            if out and folder and os.path.isdir(folder) and data.nested(out, folder):
                raise cli.UsageError(f"{option} {out} is inside {name} {folder}: synth.py never writes into its inputs "
                                     f"(composites there would be read as real photos)")
    if args.export and any(f.lower().endswith(IMG_EXTENSIONS) for _, _, fs in os.walk(args.export) for f in fs):
        raise cli.UsageError(f"--export {args.export} already holds images: export into an empty folder, so "
                             f"two exports never mix")


def main(args):
    check_args(args)
    if args.benchmark:  # a few batches, so that per-call overheads do not dominate
        size = args.img_size or 128
        n = max(args.n, 8 * args.batch_size)
        for bg in composite.BACKGROUNDS:
            rate = composite.benchmark(n=n, img_size=size, batch_size=args.batch_size, background=bg,
                                       source=args.synthetic_source)
            print(f"{rate:.0f} composites/s at img_size {size}, background {bg}, source "
                  f"{args.synthetic_source} ({torch.get_num_threads()} threads)")
        return
    if args.dataset != "folder":
        raise cli.UsageError("synth.py composites onto photos: use a --data-dir folder of digit photos")
    out = args.out or (None if args.export else os.path.join("runs", "synthetic.png"))
    bgs = list(composite.BACKGROUNDS) + ([] if args.backgrounds in composite.BACKGROUNDS else [args.backgrounds])
    combos = [(s, b) for s in composite.SOURCES for b in bgs] if args.all else [(args.synthetic_source, args.backgrounds)]
    for source, backgrounds in combos:
        args.synthetic_source, args.backgrounds = source, backgrounds
        args.synthetic_n = args.n if args.export else min(args.n, PREVIEW_MAX)  # a preview shows PREVIEW_MAX at most
        d = data.build_datasets(data.data_config(args))
        syn = d.train.datasets[-1]  # the synthetic part (val and test are real photos only)
        names = [d.classes[int(c)] for c in syn.labels]
        n_photos = len(data.real_part(d.train))
        tag = f"{source}_{os.path.basename(os.path.normpath(backgrounds))}"  # a DIR by its name
        if args.export:
            folder = os.path.join(args.export, tag) if args.all else args.export
            with cli.folder_lock(folder, "--export", "synth.py export"):
                export(syn.images, names, folder)
            print(f"wrote {len(syn)} synthetic images to {folder}/ ({source} on {backgrounds}, "
                  f"{n_photos} training photos)")
        if out:
            path = out
            if args.all:
                stem, ext = os.path.splitext(out)
                path = f"{stem}_{tag}{ext or '.png'}"
            preview_grid(syn.images[:PREVIEW_MAX], names[:PREVIEW_MAX], path,
                         title=preview_title(min(len(syn), PREVIEW_MAX), len(syn), d.config))
            print(f"wrote a preview of {min(len(syn), PREVIEW_MAX)} synthetic samples to {path} "
                  f"({source} on {backgrounds}, {n_photos} training photos)")


if __name__ == "__main__":
    cli.run_main(main, get_args_parser().parse_args)
