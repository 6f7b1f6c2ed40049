"""Datasets, the stratified train/val split, transforms and augmentation presets.

Every image set is held in memory as one uint8 tensor [N, C, H, W] (MNIST as it comes, a
photo folder decoded and resized once into a cache), and `build_datasets` is the one function
that every script calls to get the same train / val / test sets back from a checkpoint's
`data` dict.
"""
import argparse
import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import stat
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchvision.transforms import v2

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
AUGMENT_PRESETS = ("none", "light", "strong")
# `x_label7.jpg`; group 2: a copy's suffix (`x_label7 (1).jpg`, `x_label7 copy.jpg`, `x_label7 - Copy (2).jpg`)
LABEL_RE = re.compile(r"_label([^_.\s()]+)(\s*(?:-\s*)?(?:copy(?:\s*\d+)?|\(\d+\))(?:\s*\(\d+\))?)?\.[^.]+$",
                      re.IGNORECASE)
JUNK_DIRS = ("__MACOSX",)  # macOS zip debris, never a class
SYNTHETIC_SOURCES = ("mnist", "fonts", "both")      # synth.SOURCES
BACKGROUND_CHOICES = ("field", "shuffle", "photo-crops")  # or a folder of digit-free photos
CACHE_VERSION = 1
# photos this correlated are frames of one scene (see photo_groups): measured on meter_digits, pairs
# above 0.98 are repeated shots of one digit; below ~0.97 other digits of the same meter appear
GROUP_THRESHOLD = 0.98
GROUP_SIDE = 32  # photos are grouped on a decode at this size, the same for every --img-size


class DataError(Exception):
    """Bad or missing data, or a bad option value: reported as one line by the scripts."""


def warn(msg):
    print(f"warning: {msg}", file=sys.stderr)


@contextlib.contextmanager
def atomic_write(path, mode="w", fsync=False):
    """Open a temp file beside `path` and rename it over `path` when the block ends without an
    error, so a crash, a full disk or a bad character never leaves a half-written file (and an
    older `path` stays as it was). Text is UTF-8; file names that are not valid UTF-8 (surrogate
    escapes) are written back as their original bytes. The file gets the usual mode (umask)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_figure(fig, path, **kwargs):
    """matplotlib's savefig through `atomic_write` (the format from the file extension); closes `fig`."""
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", **kwargs)
    finally:
        if "matplotlib.pyplot" in sys.modules:  # synth.py draws without pyplot
            sys.modules["matplotlib.pyplot"].close(fig)


def write_json(path, obj):
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1)


def run_in_folder(folder, key, record, run, label):
    """The bookkeeping of one run folder of a sweep (experiments.py's cells, analyze.py --folds):
    a finished run (FOLDER/result.json) is not run again and its stored result is returned (with a
    warning when it was run with another `record`); an interrupted one (FOLDER/last.pt) resumes.
    `run(resume)` (resume: the last.pt or None) trains and returns a dict, stored with
    {key: record} in result.json, so running the same command again continues a sweep."""
    done, last = os.path.join(folder, "result.json"), os.path.join(folder, "last.pt")
    if os.path.isfile(done):
        try:
            with open(done) as f:
                stored = json.load(f)
        except (OSError, ValueError) as e:
            raise DataError(f"{done} is unreadable ({type(e).__name__}); delete it to run {label} again") from None
        print(f"== {label}: finished before, skipped")
        if stored.get(key) != record:
            warn(f"{folder} was run with other settings; delete it to run it again")
        return stored
    resume = last if os.path.isfile(last) else None
    print(f"== {label}{': resuming' if resume else ''}", flush=True)
    result = {key: record, **run(resume)}
    os.makedirs(folder, exist_ok=True)
    write_json(done, result)
    return result


def check_args(args, *rules):
    """Bad option values: one line (DataError) before anything is loaded or trained. A rule is
    (option dest, ok, what the value must be)."""
    for name, ok, need in rules:
        if not ok:
            raise DataError(f"--{name.replace('_', '-')} must be {need}, got {getattr(args, name)}")


def check_device(name):
    """--device: a device torch knows and this machine has (else one line, not a CUDA traceback)."""
    if name is None:
        return
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DataError(f"--device {name!r} is not a device (cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"--device {name}: no CUDA GPU is available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DataError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DataError(f"--device {name}: MPS is not available here (use --device cpu)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DataError(f"--device {name!r}: choose cpu, cuda, cuda:N or mps")


def check_folder_arg(path, option):
    """An output folder option (--out, --save-dir, --cache-dir) that names an existing file."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise DataError(f"{option} {path} is a file, not a folder")


def check_data_args(args):
    """The shared data options (add_data_args), checked before any data is read."""
    check_args(args,
               ("val_fraction", 0.0 < args.val_fraction < 1.0, "in (0, 1)"),
               ("train_fraction", 0.0 < args.train_fraction <= 1.0, "in (0, 1]"),
               ("img_size", args.img_size is None or args.img_size >= 1, ">= 1"),
               ("synthetic_n", args.synthetic_n >= 0, ">= 0"),
               ("synthetic_ratio", 0.0 < args.synthetic_ratio <= 1.0, "in (0, 1]"),
               ("group_threshold", 0.0 < args.group_threshold <= 1.0, "in (0, 1]"),
               ("split_seed", args.split_seed >= 0, ">= 0"),
               ("folds", args.folds == 0 or args.folds >= 2, "0 (off) or >= 2"),
               ("fold", args.fold is None or (args.folds >= 2 and 0 <= args.fold < args.folds),
                f"in 0..{args.folds - 1} (with --folds K >= 2)" if args.folds >= 2 else "used with --folds K >= 2"))
    check_folder_arg(args.cache_dir, "--cache-dir")
    if args.group_regex is not None:
        group_regex(args.group_regex)
    if args.dataset == "folder" and not os.path.isdir(args.data_dir):
        raise DataError(f"data folder not found: {args.data_dir}")
    if getattr(args, "test_dir", None):
        if args.dataset != "folder":
            raise DataError("--test-dir is for --dataset folder (MNIST brings its own test split)")
        if not os.path.isdir(args.test_dir):
            raise DataError(f"--test-dir folder not found: {args.test_dir}")


def printable_stdout():
    """A file name that is not valid UTF-8 is printed escaped, not a UnicodeEncodeError."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")


def run_main(main, parser, *errors):
    """A script's entry point: main(parsed args), with bad input (DataError and `errors`)
    reported as one line `error: ...` on stderr and exit code 2, never a traceback."""
    printable_stdout()
    try:
        return main(parser.parse_args())
    except (DataError, *errors) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


# ----------------------------------------------------------------------------- split

def stratified_split(labels, val_fraction, seed):
    """Indices (train, val): round(val_fraction * n_c) of every class c to val, the rest to
    train, chosen by a generator seeded with `seed`. Both are sorted LongTensors."""
    labels = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        # at least one of each class on both sides (classes have >= 2 samples)
        n_val = min(max(1, int(round(val_fraction * len(idx)))), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def stratified_subset(indices, labels, fraction, seed):
    """A stratified random `fraction` of `indices` (at least one sample per class)."""
    if fraction >= 1.0:
        return indices
    labels = torch.as_tensor(labels)[indices]
    g = torch.Generator().manual_seed(seed + 1)  # not the split's own stream
    keep = []
    for c in torch.unique(labels).tolist():
        idx = indices[labels == c]
        n = max(1, int(round(fraction * len(idx))))
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.cat(keep).sort().values


def stratified_folds(labels, k, seed):
    """K disjoint folds of positions 0..len(labels)-1 (sorted LongTensors) with about 1/K of every
    class each: a class's shuffled samples are dealt round-robin, starting at the fold where the
    previous class stopped, so classes smaller than K do not all land in fold 0."""
    labels = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(seed + 2)  # neither the split's nor the subset's stream
    fold, start = torch.empty(len(labels), dtype=torch.long), 0
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        fold[idx[torch.randperm(len(idx), generator=g)]] = (torch.arange(len(idx)) + start) % k
        start += len(idx)
    return [torch.nonzero(fold == f).flatten() for f in range(k)]


def pixel_vectors(images, indices=None, side=32, chunk=1024):
    """images[indices] (uint8 [N, C, H, W]; all when None) pooled to at most side x side, centred
    and L2-normalised: the dot product of two is their pixel correlation, which ignores brightness
    and contrast. Pixels, not a network's features: training pulls all clean images of a class
    together in feature space, so features would pair look-alikes, not copies."""
    indices = torch.arange(len(images)) if indices is None else torch.as_tensor(indices)
    out = [torch.empty(0, min(side, images.shape[-1]) ** 2 * images.shape[1])]
    for a in range(0, len(indices), chunk):
        x = images[indices[a:a + chunk]].float()
        x = F.adaptive_avg_pool2d(x, min(side, x.shape[-1])).flatten(1)
        out.append(F.normalize(x - x.mean(1, keepdim=True), dim=1))
    return torch.cat(out)


def near_duplicates(vectors, threshold, device="cpu", chunk=512, limit=10_000):
    """Row pairs (i < j) whose vectors have cosine similarity >= threshold, most similar first:
    (LongTensor [P, 2], similarities [P]). Chunk x N similarities at a time; at most the `limit`
    most similar pairs are kept (None: all)."""
    x = vectors.to(device)
    pairs, sims = torch.empty(0, 2, dtype=torch.long), torch.empty(0)
    for a in range(0, len(x), chunk):
        s = (x[a:a + chunk] @ x[a:].T).triu_(1)  # column j is row a + j: each pair once
        i, j = (s >= threshold).nonzero(as_tuple=True)
        pairs = torch.cat([pairs, torch.stack([i + a, j + a], 1).cpu()])
        sims = torch.cat([sims, s[i, j].float().cpu()])
        if limit is not None and len(sims) > limit:
            keep = sims.topk(limit).indices
            pairs, sims = pairs[keep], sims[keep]
    order = sims.argsort(descending=True, stable=True)
    return pairs[order], sims[order]


def photo_groups(images, paths, threshold=None, regex=None):
    """A group id per image (LongTensor [N], ids 0..G-1 in order of first appearance): images whose
    pixel correlation (pixel_vectors) is >= `threshold`, directly or through a chain, share a group
    (consecutive frames of one meter), and so do files whose names give the same `regex` match
    (its first group if it has one, e.g. a meter or camera id). Neither: every image alone."""
    n = len(images)
    parent = list(range(n))

    def root(i):
        while parent[i] != i:  # path halving: bounded by the tree's depth
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i, j):
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    if threshold is not None:
        pairs, _ = near_duplicates(pixel_vectors(images), threshold, limit=None)
        for i, j in pairs.tolist():
            join(i, j)
    if regex is not None:
        first = {}
        for i, p in enumerate(paths):
            m = regex.search(os.path.basename(p))
            if m:
                key = m.group(1) if m.groups() else m.group(0)
                join(i, first.setdefault(key, i))
    roots = [root(i) for i in range(n)]
    ids = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return torch.tensor([ids[r] for r in roots], dtype=torch.long)


def stratified_group_split(labels, groups, val_fraction, seed):
    """stratified_split that never cuts a group: (train, val) sorted LongTensors. A group belongs
    to the class most of its images have. Each class's images are shuffled exactly as in
    stratified_split, and their groups, in that order, go to val when that brings the class's val
    count closer to round(val_fraction * n_c); at least one group goes to val and one stays in
    train. With every image its own group it is stratified_split's split, so grouping changes val
    only where groups are."""
    labels, groups = torch.as_tensor(labels), torch.as_tensor(groups)
    g = torch.Generator().manual_seed(seed)
    n_groups = int(groups.max()) + 1
    group_class = torch.zeros(n_groups, int(labels.max()) + 1, dtype=torch.long)
    group_class.index_put_((groups, labels), torch.ones_like(labels), accumulate=True)
    size, owner = group_class.sum(1).tolist(), group_class.argmax(1).tolist()  # argmax: lowest class on a tie
    in_val = torch.zeros(n_groups, dtype=torch.bool)
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]  # the same draws as stratified_split
        mine = [grp for grp in dict.fromkeys(groups[idx].tolist()) if owner[grp] == c]
        n_c = sum(size[grp] for grp in mine)
        target, have, taken = min(max(1, round(val_fraction * n_c)), n_c - 1), 0, 0
        for grp in mine:  # the class always keeps a group for training
            if taken < len(mine) - 1 and abs(have + size[grp] - target) < abs(have - target):
                in_val[grp] = True
                have, taken = have + size[grp], taken + 1
        if not taken and len(mine) > 1:  # every group is too large to get closer: the smallest one
            in_val[min(mine, key=lambda grp: size[grp])] = True
    val = in_val[groups]
    return torch.nonzero(~val).flatten(), torch.nonzero(val).flatten()


def fingerprint(*parts):
    """A short hash that pins a split (the file list and the val indices)."""
    h = hashlib.sha1()
    for p in parts:
        h.update(repr(p).encode() if not torch.is_tensor(p) else p.numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- transforms

STRONG_REF_SIZE = 128  # the `strong` preset is Table 1 of the reference report, specified at 128 px


def strong_blur(img_size):
    """(kernel size, (sigma min, sigma max)) of `strong`'s Gaussian blur at `img_size`: Table 1's
    5 px kernel with sigma 0.1-2 px at 128 px, scaled by img_size / 128 so that every size gets the
    same blur relative to the digit (the kernel stays odd and >= 3). The blur is the preset's only
    step measured in pixels; crops, shifts, perspective and erasing are fractions of the image."""
    s = img_size / STRONG_REF_SIZE
    return max(3, 2 * round(2 * s) + 1), (0.1 * s, 2.0 * s)


def build_transform(preset, img_size, mean, std, train=True):
    """uint8 image tensor [C, H, W] -> normalised float tensor [C, img_size, img_size].

    Val / test (train=False) and the `none` preset are deterministic: resize and normalise.
    `light` is the classic assignment's small rotation / affine / blur; `strong` is the
    in-the-wild photo preset (no flips: a 6 must not become a 9)."""
    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augment preset {preset!r}")
    resize = v2.Resize((img_size, img_size), antialias=True)
    to_float = [v2.ToDtype(torch.float32, scale=True)]
    norm = v2.Normalize(mean, std)
    if not train or preset == "none":
        return v2.Compose([resize] + to_float + [norm])
    if preset == "light":
        return v2.Compose([
            resize,
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.3),
            *to_float, norm,
        ])
    return v2.Compose([
        v2.RandomResizedCrop(img_size, scale=(0.7, 1.0), ratio=(0.75, 1.33), antialias=True),
        v2.RandomRotation(20),
        v2.RandomPerspective(0.2, p=0.5),
        v2.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
        v2.GaussianBlur(*strong_blur(img_size)),
        *to_float,
        v2.GaussianNoise(sigma=0.05),
        norm,
        v2.RandomErasing(p=0.25, scale=(0.02, 0.15)),
    ])


# ----------------------------------------------------------------------------- datasets

class TensorImageDataset(Dataset):
    """Images held as one uint8 tensor, viewed through `indices` (no copies per split).
    Items are (image, label, source, weight): source 0 = real, 1 = synthetic; weight scales
    the sample's loss (--sample-weights; 0 drops it)."""

    def __init__(self, images, labels, indices=None, transform=None, source=0, paths=None, weights=None):
        self.images, self.labels = images, torch.as_tensor(labels)
        self.indices = torch.arange(len(images)) if indices is None else torch.as_tensor(indices)
        self.transform, self.source, self.paths, self.weights = transform, source, paths, weights

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        img = self.images[j]
        if self.transform is not None:
            img = self.transform(img)
        weight = 1.0 if self.weights is None else float(self.weights[j])
        return img, int(self.labels[j]), self.source, weight

    @property
    def targets(self):
        return self.labels[self.indices]

    def path(self, i):
        return self.paths[int(self.indices[i])] if self.paths is not None else f"#{int(self.indices[i])}"

    def with_transform(self, transform):
        return TensorImageDataset(self.images, self.labels, self.indices, transform, self.source,
                                  self.paths, self.weights)


def raw_image(dataset, i):
    """Sample i of a (possibly combined) dataset as stored: uint8 numpy [H, W, C], for plots."""
    if isinstance(dataset, ConcatDataset):
        k = int(np.searchsorted(dataset.cumulative_sizes, i, side="right"))
        dataset, i = dataset.datasets[k], i - (dataset.cumulative_sizes[k - 1] if k else 0)
    return dataset.images[int(dataset.indices[i])].permute(1, 2, 0).numpy()


def to_channels(images, channels):
    """uint8 [N, C, H, W] -> `channels` channels (RGB <-> grayscale), for classifying
    arbitrary images with a model trained on the other kind."""
    if images.shape[1] == channels:
        return images
    if channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, channels, -1, -1).contiguous()


def real_part(dataset):
    """The real-image part of a training set (drops the synthetic half of a combined set)."""
    return dataset.datasets[0] if isinstance(dataset, ConcatDataset) else dataset


def load_mnist(root, train=True, download=True):
    """MNIST as (uint8 images [N, 1, 28, 28], int64 labels [N]) via torchvision.

    The download is attempted only when the files are missing under root/MNIST/raw/."""
    from torchvision import datasets
    raw = os.path.join(root, "MNIST", "raw")
    have = all(os.path.isfile(os.path.join(raw, f)) or os.path.isfile(os.path.join(raw, f + ".gz"))
               for f in MNIST_FILES)
    if not have and not download:
        raise DataError(f"MNIST not found in {raw}/ (needs {', '.join(MNIST_FILES)}; "
                        f"--download fetches them)")
    try:
        ds = datasets.MNIST(root, train=train, download=not have)
    except Exception as e:  # offline, a bad mirror, a corrupt file: one line, not a traceback
        why = f"download failed ({type(e).__name__})" if not have else f"unreadable ({type(e).__name__})"
        raise DataError(f"MNIST not found in {raw}/ (needs {', '.join(MNIST_FILES)}): {why}") from None
    return ds.data.unsqueeze(1).contiguous(), ds.targets.clone()


def _skip_reason(path):
    """None for a regular file (also behind a symlink), else why it is not read: a FIFO or device
    would block or never end, a symlink loop or a dangling link cannot be opened."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        return "dangling link" if os.path.islink(path) else (e.strerror or type(e).__name__).lower()
    return None if stat.S_ISREG(st.st_mode) else "not a regular file"


def _warn_skipped_entries(root, skipped):
    """One warning for the entries of `root` a scan left out: [(path, why)]."""
    if skipped:
        whys = ", ".join(f"{n} {why}" for why, n in sorted(
            {w: sum(1 for _, x in skipped if x == w) for _, w in skipped}.items()))
        names = ", ".join(os.path.basename(p) for p, _ in skipped[:3])
        warn(f"skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} in {root} ({whys}): "
             f"{names}{', ...' if len(skipped) > 3 else ''}")


def _walk_images(top, skipped):
    """Regular image files under `top`, recursively and sorted; hidden files and folders and
    what `_skip_reason` refuses are added to `skipped` instead."""
    files = []
    for dp, dirs, fs in os.walk(top):
        for d in sorted(dirs):
            if d.startswith(".") or d in JUNK_DIRS:
                skipped.append((os.path.join(dp, d), "hidden folder"))
        dirs[:] = sorted(d for d in dirs if not (d.startswith(".") or d in JUNK_DIRS))
        for f in sorted(fs):
            if not f.lower().endswith(IMG_EXTENSIONS):
                continue
            p = os.path.join(dp, f)
            why = "hidden file" if f.startswith(".") else _skip_reason(p)
            if why:
                skipped.append((p, why))
            else:
                files.append(p)
    return files


def _is_dir(entry):
    try:
        return entry.is_dir()
    except OSError:
        return False


def scan_folder(root):
    """(paths, label names) of a labelled image folder, in either layout:
    one subfolder per class (`7/x.jpg`, `muffin/y.jpg`) or flat files named `..._label7.jpg`.
    Only regular files are read; hidden files and folders, `__MACOSX/`, FIFOs, symlink loops and
    dangling links are skipped with one warning."""
    if not os.path.isdir(root):
        raise DataError(f"data folder not found: {root}")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    skipped = [(e.path, "hidden folder") for e in entries if _is_dir(e) and e.name in JUNK_DIRS]
    subdirs = [e for e in entries if _is_dir(e) and not e.name.startswith(".") and e.name not in JUNK_DIRS]
    flat = [e.path for e in entries if not _is_dir(e) and not e.name.startswith(".")
            and e.name.lower().endswith(IMG_EXTENSIONS)]
    labelled = [p for p in flat if LABEL_RE.search(os.path.basename(p))]
    if subdirs and labelled:
        with_images = [d.name for d in subdirs if _walk_images(d.path, [])]
        if with_images:
            raise DataError(f"{root} mixes both layouts: {len(labelled)} files named like x_label7.jpg and "
                            f"class folders with images ({', '.join(with_images[:3])}); move one kind out")
        skipped += [(d.path, "folder without images") for d in subdirs]
        subdirs = []
    if subdirs:
        paths, names = [], []
        for d in subdirs:
            files = _walk_images(d.path, skipped)
            if not files:
                raise DataError(f"class folder {d.path} has no images ({'/'.join(IMG_EXTENSIONS)})")
            paths += files
            names += [d.name] * len(files)
        skipped += [(p, "image outside the class folders") for p in flat]
        _warn_skipped_entries(root, skipped)
        return paths, names
    paths, names, copies = [], [], []
    for p in flat:
        m = LABEL_RE.search(os.path.basename(p))
        if not m:
            continue
        why = _skip_reason(p)
        if why:
            skipped.append((p, why))
            continue
        paths.append(p)
        names.append(m.group(1))
        if m.group(2):
            copies.append(p)
    if not paths:
        raise DataError(f"no labelled images in {root} (expected class subfolders or files "
                        f"named like x_label7.jpg; found {len(flat)} image files)")
    if len(labelled) < len(flat):
        warn(f"{len(flat) - len(labelled)} images in {root} have no _label<name> in the file name; skipped")
    if copies:
        warn(f"{len(copies)} files in {root} are named like copies (e.g. {os.path.basename(copies[0])}): "
             f"labelled as their originals; analyze.py lists near-duplicates")
    _warn_skipped_entries(root, skipped)
    return paths, names


def list_images(root):
    """All regular image files under `root` (recursively), sorted: for classifying an unlabelled folder."""
    if not os.path.isdir(root):
        raise DataError(f"image folder not found: {root}")
    skipped = []
    paths = _walk_images(root, skipped)
    if not paths:
        raise DataError(f"no images ({'/'.join(IMG_EXTENSIONS)}) in {root}"
                        + (f" ({len(skipped)} skipped: {_names([p for p, _ in skipped])})" if skipped else ""))
    _warn_skipped_entries(root, skipped)
    return paths


def decode_image(path, size):
    """One file -> uint8 RGB tensor [3, size, size], or None when it cannot be read.

    EXIF orientation is applied; grayscale, palette, RGBA (composited on white), CMYK and
    16-bit images become 8-bit RGB. JPEGs are decoded at reduced scale when much larger."""
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (size, size))  # DCT-domain downscale: much faster decode
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                a = np.asarray(img, dtype=np.float32)
                a = a / 257.0 if a.max() > 255 else a  # 16-bit -> 8-bit
                img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img.alpha_composite(rgba)
            img = img.convert("RGB").resize((size, size), Image.BILINEAR)
            return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def cache_size(img_size):
    """Side of the decoded cache: a little above img_size, so crops and resizes have margin."""
    return img_size + img_size // 8


def decode_folder(paths, size, cache_dir=None, workers=None, warn_skipped=True):
    """Decode `paths` once into (uint8 [N, 3, size, size], kept index list), skipping unreadable
    files with one warning. With `cache_dir`, the result is stored on disk keyed by the file
    list, sizes and mtimes, so a second run (or evaluate.py) skips decoding entirely."""
    key = None
    if cache_dir:
        stats = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths]
        key = fingerprint(CACHE_VERSION, size, stats)
        cache_file = os.path.join(cache_dir, f"images-{size}px-{key}.pt")
        if os.path.isfile(cache_file):
            try:
                c = torch.load(cache_file, weights_only=True)
                if warn_skipped:
                    _warn_skipped([paths[i] for i in c["skipped"]])
                return c["images"], c["kept"]
            except Exception as e:  # a broken cache is rebuilt, never fatal
                warn(f"ignoring unreadable cache {cache_file} ({type(e).__name__})")
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is an error, not a grey image
    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:  # PIL releases the GIL
        decoded = list(pool.map(lambda p: decode_image(p, size), paths, chunksize=16))
    kept = [i for i, t in enumerate(decoded) if t is not None]
    skipped = [i for i, t in enumerate(decoded) if t is None]
    if warn_skipped:
        _warn_skipped([paths[i] for i in skipped])
    images = torch.stack([decoded[i] for i in kept]) if kept else torch.empty(0, 3, size, size, dtype=torch.uint8)
    if key:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = cache_file + ".tmp"
        torch.save({"images": images, "kept": kept, "skipped": skipped}, tmp)
        os.replace(tmp, cache_file)
    return images, kept


def _warn_skipped(bad):
    if bad:
        warn(f"skipped {len(bad)} unreadable image file(s): {_names(bad)}")


def _names(paths):
    return ", ".join(os.path.basename(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")


def load_folder(root, img_size, cache_dir=None):
    """A labelled photo folder -> (uint8 images, labels, class names, kept paths)."""
    all_paths, all_names = scan_folder(root)
    images, kept = decode_folder(all_paths, cache_size(img_size), cache_dir, warn_skipped=False)
    paths, names = [all_paths[i] for i in kept], [all_names[i] for i in kept]
    classes = sorted(set(names), key=_natural_key)
    bad = [p for i, p in enumerate(all_paths) if i not in set(kept)]
    if not paths:
        raise DataError(f"none of the images in {root} could be read ({_names(bad)})")
    lost = sorted(set(all_names) - set(classes))
    if lost:
        raise DataError(f"class {lost[0]!r} in {root} has no readable images ({_names(bad)})")
    _warn_skipped(bad)
    index = {c: i for i, c in enumerate(classes)}
    return images, torch.tensor([index[n] for n in names]), classes, paths


def _natural_key(name):
    """Sort '2' before '10', names alphabetically."""
    # the name breaks ties ('3' and '03'), so the order never depends on the hash seed
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


# ----------------------------------------------------------------------------- the contract

@dataclass
class Data:
    train: Dataset
    val: Dataset
    test: Dataset | None
    classes: list
    in_channels: int
    img_size: int
    mean: tuple
    std: tuple
    config: dict = field(default_factory=dict)  # stored in the checkpoint as "data"


def add_data_args(parser):
    """The data arguments shared by every script that builds datasets."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="folder", choices=["folder", "mnist"])
    g.add_argument("--data-dir", default="data/dataset", help="photo folder (--dataset folder)")
    g.add_argument("--mnist-root", default="data", help="holds MNIST/raw/ (downloaded there if missing)")
    g.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download MNIST when its files are missing (default: yes)")
    g.add_argument("--val-fraction", type=float, default=0.15)
    g.add_argument("--split-seed", type=int, default=0)
    g.add_argument("--train-fraction", type=float, default=1.0,
                   help="stratified random subset of the training split (val and test unchanged)")
    g.add_argument("--img-size", type=int, default=None, help="default: 28 for MNIST, 128 for folders")
    g.add_argument("--cache-dir", default=None, help="keep the decoded photo cache on disk here")
    g.add_argument("--test-dir", default=None, metavar="DIR",
                   help="--dataset folder: a labelled test folder (either layout), scored as the test split; "
                        "never used for model selection")
    g.add_argument("--synthetic-n", type=int, default=0,
                   help="a pool of N synthetic digits composited onto backgrounds from the training "
                        "photos (training only; val and test stay real)")
    g.add_argument("--synthetic-source", default="fonts", choices=SYNTHETIC_SOURCES,
                   help="the synthetic digits: printed (fonts, no MNIST needed), handwritten (mnist) or half "
                        "each (both); default fonts, the best synthetic-to-real score (README)")
    g.add_argument("--backgrounds", default="field", metavar="{" + ",".join(BACKGROUND_CHOICES) + "} or DIR",
                   help="synthetic backgrounds: field (the training photos' colours and texture, no digit), "
                        "shuffle (their patches shuffled), photo-crops (crops of the photos as they are: "
                        "each shows the photo's own digit too; the reference recipe), or a folder of "
                        "digit-free photos of any size, randomly cropped (default: field, the best "
                        "synthetic-to-real score in README)")
    g.add_argument("--synthetic-ratio", type=float, default=0.5, metavar="R",
                   help="with --synthetic-n: the share of synthetic images in every training batch "
                        "(an epoch is one pass over the real training images; 1 = synthetic only)")
    g.add_argument("--group-split", action=argparse.BooleanOptionalAction, default=True,
                   help="photo folders: keep near-duplicate photos (and --group-regex groups) on one side "
                        "of the train/val split (default: yes)")
    g.add_argument("--group-threshold", type=float, default=GROUP_THRESHOLD, metavar="T",
                   help="photos whose downscaled pixels correlate >= T are one group (default: %(default)s)")
    g.add_argument("--group-regex", default=None, metavar="REGEX",
                   help="files whose names give the same match (its first group, if any) are one group, "
                        r"e.g. '^(meter\d+)_' for a meter id")
    g.add_argument("--folds", type=int, default=0,
                   help="cut the training split into K stratified folds (cross-validation, with --fold)")
    g.add_argument("--fold", type=int, default=None,
                   help="with --folds K: train on the other folds, validate on fold k (0..K-1)")
    return g


def data_config(args):
    """The checkpoint's `data` dict, from parsed arguments."""
    img_size = args.img_size or (28 if args.dataset == "mnist" else 128)
    return {
        "dataset": args.dataset,
        "data_dir": os.path.abspath(args.data_dir) if args.dataset == "folder" else None,
        "mnist_root": os.path.abspath(args.mnist_root),
        "download": args.download,
        "val_fraction": args.val_fraction,
        "split_seed": args.split_seed,
        "train_fraction": args.train_fraction,
        "img_size": img_size,
        "cache_dir": args.cache_dir,
        "test_dir": os.path.abspath(args.test_dir) if getattr(args, "test_dir", None) else None,
        "synthetic_n": args.synthetic_n,
        "synthetic_ratio": args.synthetic_ratio,
        "synthetic_seed": getattr(args, "seed", 0),
        "synthetic_source": args.synthetic_source,
        "backgrounds": (args.backgrounds if args.backgrounds in BACKGROUND_CHOICES
                        else os.path.abspath(args.backgrounds)),
        "group_split": args.group_split and args.dataset == "folder",
        "group_threshold": args.group_threshold,
        "group_regex": args.group_regex,
        "sample_weights": os.path.abspath(args.sample_weights) if getattr(args, "sample_weights", None) else None,
        "folds": args.folds,
        "fold": args.fold,
    }


def build_datasets(cfg, augment="none", check=True):
    """The one way to get (train, val, test) for a `data` config (see `data_config`).

    `cfg` may carry "num_samples" / "split_hash" from a checkpoint: the split is then checked
    to be the one the model was trained with (a changed folder is a warning, not silence)."""
    img_size = cfg["img_size"]
    if cfg["dataset"] == "mnist" and cfg.get("synthetic_n", 0) > 0:
        raise DataError("--synthetic-n composites digits onto photos of a folder (--dataset folder "
                        "--data-dir D); MNIST is handwritten digits already")
    if cfg["dataset"] == "mnist":
        images, labels = load_mnist(cfg["mnist_root"], train=True, download=cfg.get("download", True))
        test_images, test_labels = load_mnist(cfg["mnist_root"], train=False, download=False)
        classes, mean, std, paths = [str(i) for i in range(10)], MNIST_MEAN, MNIST_STD, None
    else:
        images, labels, classes, paths = load_folder(cfg["data_dir"], img_size, cfg.get("cache_dir"))
        test_images = None
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if not 0.0 < cfg["val_fraction"] < 1.0:
        raise DataError(f"--val-fraction must be in (0, 1), got {cfg['val_fraction']}")
    if not 0.0 < cfg["train_fraction"] <= 1.0:
        raise DataError(f"--train-fraction must be in (0, 1], got {cfg['train_fraction']}")
    counts = torch.bincount(labels, minlength=len(classes))
    if len(classes) < 2:
        raise DataError(f"need at least 2 classes, found {len(classes)}: {classes}")
    if counts.min() < 2:
        raise DataError(f"class {classes[int(counts.argmin())]!r} has fewer than 2 images; "
                        f"cannot split it into train and val")
    groups = _groups(cfg, paths) if cfg.get("group_split") else None  # (older checkpoints: no key)
    if groups is None:
        train_idx, val_idx = stratified_split(labels, cfg["val_fraction"], cfg["split_seed"])
    else:
        train_idx, val_idx = stratified_group_split(labels, groups, cfg["val_fraction"], cfg["split_seed"])
    train_idx = stratified_subset(train_idx, labels, cfg["train_fraction"], cfg["split_seed"])
    if cfg.get("folds") or cfg.get("fold") is not None:  # a cross-validation run: fold k is its val
        train_idx, val_idx = _fold_split(train_idx, labels, cfg.get("folds") or 0, cfg.get("fold"), cfg["split_seed"])
    split_hash = fingerprint([os.path.basename(p) for p in paths] if paths else len(labels), val_idx, train_idx)
    if check and cfg.get("split_hash") and cfg["split_hash"] != split_hash:
        warn(f"the data differ from those the checkpoint was trained on ({len(labels)} samples now, "
             f"{cfg.get('num_samples')} then): train/val are not the same split")
    in_channels = images.shape[1]
    train_tf = build_transform(augment, img_size, mean, std, train=True)
    eval_tf = build_transform(augment, img_size, mean, std, train=False)
    weights = read_sample_weights(cfg["sample_weights"], paths, len(labels)) if cfg.get("sample_weights") else None
    if weights is not None and not weights[train_idx].any():
        raise DataError(f"every training sample has weight 0 in {cfg['sample_weights']}: nothing to learn from")
    train = TensorImageDataset(images, labels, train_idx, train_tf, paths=paths, weights=weights)
    val = TensorImageDataset(images, labels, val_idx, eval_tf, paths=paths)
    test = TensorImageDataset(test_images, test_labels, None, eval_tf) if test_images is not None else None
    if cfg.get("test_dir"):
        test = load_test_folder(cfg["test_dir"], classes, img_size, eval_tf, cfg.get("cache_dir"))
    if cfg.get("synthetic_n", 0) < 0 or not 0.0 < cfg.get("synthetic_ratio", 0.5) <= 1.0:
        raise DataError(f"--synthetic-n must be >= 0 and --synthetic-ratio in (0, 1], got "
                        f"{cfg.get('synthetic_n')} and {cfg.get('synthetic_ratio')}")
    if cfg.get("synthetic_n", 0) > 0:
        train = ConcatDataset([train, _synthetic(cfg, images[train_idx], classes, train_tf)])
    config = dict(cfg, num_samples=len(labels), split_hash=split_hash,
                  num_groups=None if groups is None else int(groups.max()) + 1)
    return Data(train, val, test, classes, in_channels, img_size, mean, std, config)


def load_test_folder(root, classes, img_size, transform, cache_dir=None):
    """A labelled test folder (either layout) as a dataset labelled by the training `classes`,
    matched by name; a class the training data do not have is refused with its name."""
    images, labels, names, paths = load_folder(root, img_size, cache_dir)
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise DataError(f"--test-dir {root} has class(es) the training data do not: {', '.join(unknown)} "
                        f"(training classes: {', '.join(classes)})")
    labels = torch.tensor([classes.index(n) for n in names])[labels]
    return TensorImageDataset(images, labels, None, transform, paths=paths)


def decode_size(cfg):
    """The side the images of a `data` config are stored at before the eval transform resizes them:
    MNIST's native 28 px, a folder's decoded cache. Images classified for a checkpoint (evaluate.py
    --images, export.py) are decoded at this size, so they go through exactly the evaluation path."""
    return 28 if cfg["dataset"] == "mnist" else cache_size(cfg["img_size"])


def group_regex(text):
    """--group-regex compiled, or one line when it is not a regular expression."""
    try:
        return re.compile(text)
    except re.error as e:
        raise DataError(f"--group-regex {text!r} is not a regular expression: {e}") from None


def _groups(cfg, paths):
    """photo_groups for a folder config, with its arguments checked. The photos are compared at
    GROUP_SIDE px whatever --img-size (a decode of their own, cached like the training images),
    so the split is the same at every image size."""
    threshold = cfg.get("group_threshold", GROUP_THRESHOLD)
    if not 0.0 < threshold <= 1.0:
        raise DataError(f"--group-threshold must be in (0, 1], got {threshold}")
    regex = group_regex(cfg["group_regex"]) if cfg.get("group_regex") else None
    images, kept = decode_folder(paths, GROUP_SIDE, cfg.get("cache_dir"))
    if len(kept) != len(paths):
        raise DataError(f"{len(paths) - len(kept)} photo(s) of {cfg['data_dir']} became unreadable while loading")
    return photo_groups(images, paths, threshold, regex)


def _fold_split(train_idx, labels, folds, fold, seed):
    """(the other folds, fold `fold`) of the training split cut into `folds` stratified folds."""
    if folds < 2 or fold is None or not 0 <= fold < folds:
        raise DataError(f"cross-validation needs --folds K >= 2 and --fold k in 0..K-1, "
                        f"got --folds {folds} --fold {fold}")
    held = torch.zeros(len(train_idx), dtype=torch.bool)
    held[stratified_folds(labels[train_idx], folds, seed)[fold]] = True
    if held.all() or not held.any():
        raise DataError(f"--folds {folds} cannot be cut from {len(train_idx)} training samples")
    return train_idx[~held], train_idx[held]


def read_sample_weights(csv_path, paths, n):
    """A weight per sample from a CSV of `path,weight` rows (header optional). Paths match by
    full path or by file name; MNIST samples by index (`#123` or `123`). Unlisted = 1."""
    import csv
    if not os.path.isfile(csv_path):
        raise DataError(f"--sample-weights file not found: {csv_path}")
    weights = torch.ones(n)
    # a row names a file by its full path or by its last one or two components (`x.jpg`,
    # `cat/x.jpg`); a short name that several files share matches none of them (ambiguous)
    keys, ambiguous = {}, set()
    for i, p in enumerate(paths or []):
        keys[os.path.abspath(p)] = i
        parts = os.path.abspath(p).split(os.sep)
        for k in (parts[-1], "/".join(parts[-2:])):
            if k in keys and keys[k] != i:
                ambiguous.add(k)
            keys[k] = i
    for k in ambiguous:
        del keys[k]
    unknown = []
    try:  # Excel writes a BOM; older tools Latin-1
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:
        with open(csv_path, newline="", encoding="latin-1") as f:
            text = f.read()
    except OSError as e:
        raise DataError(f"cannot read --sample-weights {csv_path}: {e.strerror}") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:  # e.g. a NUL byte: not a text CSV
        raise DataError(f"--sample-weights {csv_path} is not a CSV file ({e})") from None
    for row in rows:
        if not row or row[0].strip().lower() in ("path", "file") or row[0].startswith("#!"):
            continue
        if len(row) < 2:
            raise DataError(f"{csv_path}: rows must be path,weight; got {row}")
        key = row[0].strip()
        tail = key.replace(os.sep, "/").split("/")
        i = keys.get(os.path.abspath(key), keys.get("/".join(tail[-2:]), keys.get(tail[-1])))
        if i is None and paths is None and key.lstrip("#").isdigit():
            i = int(key.lstrip("#"))
        try:
            w = float(row[1])
        except ValueError:
            raise DataError(f"{csv_path}: weight {row[1]!r} of {key} is not a number") from None
        if not (math.isfinite(w) and w >= 0):
            raise DataError(f"{csv_path}: weight {row[1]!r} of {key} must be a finite number >= 0")
        if i is None or i >= n:
            unknown.append(key)
        else:
            weights[i] = w
    if unknown:
        warn(f"{len(unknown)} path(s) in {csv_path} are not in the dataset, e.g. {unknown[0]}")
    return weights


def _synthetic(cfg, photos, classes, transform):
    """Training-only synthetic digits (synth.py) on backgrounds made from the training photos
    (never val), or from a folder of digit-free photos (--backgrounds DIR)."""
    import synth
    if sorted(classes) != [str(d) for d in range(10)]:
        raise DataError(f"--synthetic-n needs digit classes 0-9; this dataset has {classes[:5]}...")
    source, backgrounds = cfg.get("synthetic_source", "mnist"), cfg.get("backgrounds", "photo-crops")
    if source not in SYNTHETIC_SOURCES:
        raise DataError(f"--synthetic-source must be one of {', '.join(SYNTHETIC_SOURCES)}, got {source!r}")
    mnist = load_mnist(cfg["mnist_root"], train=True, download=cfg.get("download", True)) if source != "fonts" else None
    mode = {"photo-crops": "crops"}.get(backgrounds, backgrounds)
    if backgrounds not in BACKGROUND_CHOICES:  # a folder: decoded at twice the size, crops of a quarter
        if not os.path.isdir(backgrounds):
            raise DataError(f"--backgrounds must be one of {', '.join(BACKGROUND_CHOICES)} or a folder, "
                            f"got {backgrounds} (no such folder)")
        photos, _ = decode_folder(list_images(backgrounds), 2 * cfg["img_size"], cfg.get("cache_dir"))
        if len(photos) == 0:
            raise DataError(f"none of the images in --backgrounds {backgrounds} could be read")
        mode = "crops"
    images, labels = synth.make_synthetic(photos, synth.digit_bank(source, mnist), cfg["synthetic_n"],
                                          cfg["img_size"], seed=cfg.get("synthetic_seed", 0), background=mode)
    labels = torch.tensor([classes.index(str(int(d))) for d in labels])
    return TensorImageDataset(images, labels, None, transform, source=1)


def make_loader(dataset, batch_size, shuffle=False, workers=0, generator=None, drop_last=False, sampler=None):
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
                      generator=generator, drop_last=drop_last, persistent_workers=False,
                      pin_memory=torch.cuda.is_available())


def epoch_order(n, seed, rank=0, world=1):
    """This process's training order for one epoch (a list of indices): torch's DistributedSampler,
    i.e. a permutation of range(n) seeded by `seed`, padded to a multiple of `world` and dealt out
    round-robin. Under torchrun every process draws the same permutation of the same split and
    takes its share; alone (world 1) it is a plain shuffle."""
    from torch.utils.data.distributed import DistributedSampler
    return list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed))


def mixed_epoch_order(n_real, n_synthetic, ratio, batch_size, seed, epoch, pool_seed=0, rank=0, world=1):
    """This process's order for epoch `epoch` (from 1, shuffled by `seed`) over a combined set (real
    0..n_real-1, then the synthetic pool): every consecutive `batch_size` chunk is one batch holding
    round(ratio * batch_size) synthetic images and the rest real, so a large pool cannot drown the
    photos. An epoch is one pass over the real images (`epoch_order` of them, in whole batches, and
    a last smaller batch at the same ratio where `epoch_length` would keep it); the synthetic
    images come from an endless stream of reshuffles of the pool (seeded by `pool_seed`), epoch
    after epoch, so every composite is used before any repeats.
    ratio 1: one pass over the pool per epoch, no photos."""
    k = min(batch_size, max(1, round(ratio * batch_size)))  # synthetic per batch (ratio > 0)
    if k == batch_size:
        pool = epoch_order(n_synthetic, seed, rank, world)
        return [n_real + i for i in pool[:max(1, len(pool) // batch_size) * batch_size]]
    real, r = epoch_order(n_real, seed, rank, world), batch_size - k
    if len(real) < r:  # fewer photos than one batch's real share: repeat them
        real = (real * -(-r // len(real)))[:r]
    steps = len(real) // r
    # the photos left after whole batches make a last, smaller batch (at the same ratio) where
    # epoch_length would keep them: more than PARTIAL_BATCH_KEPT of the photos
    rest = epoch_length(len(real), r) - steps * r
    k_rest = max(1, round(rest * k / r)) if rest else 0
    # the global stream position of this epoch: every epoch takes (steps * k + k_rest) * world composites
    need = (steps * k + k_rest) * world
    start = (epoch - 1) * need
    stream, cycle = [], start // n_synthetic
    while len(stream) < start % n_synthetic + need:  # bounded: need / n_synthetic + 2 reshuffles
        g = torch.Generator().manual_seed(seed_of_cycle(pool_seed, cycle))
        stream += torch.randperm(n_synthetic, generator=g).tolist()
        cycle += 1
    synthetic = stream[start % n_synthetic:][:need][rank::world]
    order = []
    for s in range(steps + bool(rest)):
        order += real[s * r:(s + 1) * r] + [n_real + i for i in synthetic[s * k:(s + 1) * k]]
    return order


PARTIAL_BATCH_KEPT = 0.05  # a last partial batch larger than this share of the epoch is trained on


def epoch_length(n, batch_size):
    """How many of an epoch's n samples are trained on: the last partial batch is dropped (a few
    samples would make a noisy step and a BatchNorm batch of nearly nothing; they are in the next
    epoch's shuffle) unless it is more than PARTIAL_BATCH_KEPT of the epoch, as for a small folder
    (1/16 of meter_digits at batch 32: 54 photos, dropping 22 would lose 41% of every epoch)."""
    partial = n % batch_size
    if n < batch_size or (partial >= 2 and partial > PARTIAL_BATCH_KEPT * n):
        return n
    return n - partial


def train_order(data, batch_size, seed, epoch, pool_seed=0, rank=0, world=1):
    """The one place that decides a training epoch's order (see epoch_order, mixed_epoch_order) and
    its length: whole batches, and a last partial batch only where epoch_length keeps it."""
    n, ratio = len(data.train), data.config.get("synthetic_ratio")
    if isinstance(data.train, ConcatDataset) and ratio:  # real photos + a synthetic pool (whole batches)
        n_real = len(data.train.datasets[0])
        return mixed_epoch_order(n_real, n - n_real, ratio, batch_size, seed, epoch, pool_seed, rank, world)
    order = epoch_order(n, seed, rank, world)  # (checkpoints from before --synthetic-ratio: one shuffle of all)
    return order[:epoch_length(len(order), batch_size)]


def seed_of_cycle(seed, cycle):
    """The seed of the pool's `cycle`-th reshuffle (a stream of its own, not an epoch's)."""
    return (seed * 1_000_003 + cycle) % (2 ** 63)


# ----------------------------------------------------------------------------- batched augmentation
#
# The same presets as `build_transform`, applied per sample but to whole uint8 batches held on
# the training device (as the CIFAR-10 speedruns do): every geometric step (random resized crop,
# rotation, perspective, affine) is a 3x3 matrix, so a sample's whole geometry is one homography
# and a batch needs one grid_sample. Opt-in (--device-data): its random streams differ from
# torchvision's, and hue is shifted by a rotation in YIQ space rather than in HSV.

def _uniform(n, lo, hi, device):
    return torch.rand(n, device=device) * (hi - lo) + lo


def _rotation(angle_deg):
    a = torch.deg2rad(angle_deg)
    m = torch.zeros(len(a), 3, 3, device=a.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 2, 2] = a.cos(), -a.sin(), a.sin(), a.cos(), 1
    return m


def _scale_shift(sx, sy, tx, ty):
    m = torch.zeros(len(sx), 3, 3, device=sx.device)
    m[:, 0, 0], m[:, 1, 1], m[:, 0, 2], m[:, 1, 2], m[:, 2, 2] = sx, sy, tx, ty, 1
    return m


def _homography(src, dst):
    """Per-sample 3x3 H with H @ src_i ~ dst_i for 4 point pairs [B, 4, 2] (DLT, h33 = 1)."""
    b = src.shape[0]
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], -1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)
    h = torch.linalg.solve(a, torch.cat([u, v], 1))
    return torch.cat([h, torch.ones(b, 1, device=src.device)], 1).view(b, 3, 3)


def _blur(x, sigma, k):
    """Per-sample Gaussian blur (separable, reflect padding) with sigma [B]."""
    b, c, h, w = x.shape
    r = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
    kern = torch.exp(-r[None] ** 2 / (2 * sigma[:, None] ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B*C, k]
    y = F.pad(x.reshape(1, b * c, h, w), [k // 2] * 4, mode="reflect")
    y = F.conv2d(y, kern[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kern[:, None, :, None], groups=b * c)
    return y.view(b, c, h, w)


def _gray(x):
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if x.shape[1] == 3 else x


class BatchAugment:
    """Preset augmentation for a uint8 batch [B, C, S, S] on any device -> normalised float
    [B, C, img_size, img_size]. Uses the global torch RNG (seeded per epoch by train.py)."""

    def __init__(self, preset, img_size, mean, std):
        if preset not in AUGMENT_PRESETS:
            raise ValueError(f"unknown augment preset {preset!r}")
        self.preset, self.img_size = preset, img_size
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self._base = None

    def geometry(self, b, device):
        """The preset's geometric steps as output -> input coordinate maps [B, 3, 3], in the order
        torchvision applies them (the first one reads the source image)."""
        if self.preset == "light":  # RandomAffine(10, translate 0.1, scale 0.9-1.1)
            return [_rotation(_uniform(b, -10, 10, device)) @ self._affine(b, device)]
        # strong: RandomResizedCrop -> RandomRotation -> RandomPerspective -> RandomAffine
        area = _uniform(b, 0.7, 1.0, device)
        ratio = torch.exp(_uniform(b, math.log(0.75), math.log(1.33), device))
        w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
        cx, cy = _uniform(b, -1, 1, device) * (1 - w), _uniform(b, -1, 1, device) * (1 - h)
        crop = _scale_shift(w, h, cx, cy)
        corners = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1]], device=device, dtype=torch.float32)
        inward = -corners.sign() * torch.rand(b, 4, 2, device=device) * 0.2  # distortion 0.2
        moved = corners + inward * (torch.rand(b, 1, 1, device=device) < 0.5)
        persp = _homography(moved, corners.expand(b, 4, 2))  # output corners come from the image corners
        return [crop, _rotation(_uniform(b, -20, 20, device)), persp, self._affine(b, device)]

    @staticmethod
    def _affine(b, device):
        s = _uniform(b, 0.9, 1.1, device)
        t = _uniform(b * 2, -0.2, 0.2, device).view(2, b)  # translate 0.1 of the side = 0.2 in [-1, 1]
        return _scale_shift(1 / s, 1 / s, -t[0] / s, -t[1] / s)

    def __call__(self, images):
        x = images.float().div_(255)
        b, dev, n = x.shape[0], x.device, self.img_size
        if self.preset == "none":
            if x.shape[-1] != n:
                x = F.interpolate(x, size=(n, n), mode="bilinear", antialias=True, align_corners=False)
        else:
            if self._base is None or self._base.device != dev:
                r = (torch.arange(n, device=dev, dtype=torch.float32) * 2 + 1) / n - 1
                yy, xx = torch.meshgrid(r, r, indexing="ij")
                self._base = torch.stack([xx, yy, torch.ones_like(xx)], -1)  # [n, n, 3]
            # Walk each output pixel back through the steps. torchvision fills zeros at every step
            # whose frame the pixel leaves (the rotated crop's corners...), so mask those; the
            # first step reads the source image, where grid_sample's zero padding does the same.
            steps, grid = self.geometry(b, dev), self._base.expand(b, n, n, 3)
            inside = torch.ones(b, n, n, dtype=torch.bool, device=dev)
            for k, m in enumerate(reversed(steps)):
                grid = torch.einsum("bij,bhwj->bhwi", m, grid)
                grid = grid / grid[..., 2:].clamp_min(1e-6)
                if k < len(steps) - 1:
                    inside &= (grid[..., :2].abs() <= 1).all(-1)
            x = F.grid_sample(x, grid[..., :2], mode="bilinear", padding_mode="zeros", align_corners=False)
            x = x * inside.unsqueeze(1)
            if self.preset == "light":  # RandomApply(GaussianBlur(3, 0.1-1.0), p=0.3)
                sigma = torch.where(torch.rand(b, device=dev) < 0.3, _uniform(b, 0.1, 1.0, dev),
                                    torch.full((b,), 1e-3, device=dev))
                x = _blur(x, sigma, 3)
            else:
                x = self._color_jitter(x)
                k, (lo, hi) = strong_blur(n)
                x = _blur(x, _uniform(b, lo, hi, dev), k)
                x = (x + 0.05 * torch.randn_like(x)).clamp_(0, 1)
        x = (x - self.mean.to(dev)) / self.std.to(dev)
        if self.preset == "strong":
            x = self._erase(x)
        return x

    @staticmethod
    def _color_jitter(x):
        """brightness, contrast, saturation 0.4 and hue 0.1, in that order."""
        b, dev = x.shape[0], x.device
        f = lambda: _uniform(b, 0.6, 1.4, dev).view(b, 1, 1, 1)  # noqa: E731
        x = (x * f()).clamp(0, 1)
        m = _gray(x).mean((1, 2, 3), keepdim=True)
        x = ((x - m) * f() + m).clamp(0, 1)
        if x.shape[1] == 3:
            g = _gray(x)
            x = ((x - g) * f() + g).clamp(0, 1)
            theta = _uniform(b, -0.1, 0.1, dev) * 2 * math.pi  # hue: rotate the IQ chroma plane
            yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=dev)
            rot = torch.zeros(b, 3, 3, device=dev)
            rot[:, 0, 0], rot[:, 1, 1], rot[:, 2, 2] = 1, theta.cos(), theta.cos()
            rot[:, 1, 2], rot[:, 2, 1] = -theta.sin(), theta.sin()
            m3 = torch.linalg.inv(yiq) @ rot @ yiq
            x = torch.einsum("bij,bjhw->bihw", m3, x).clamp(0, 1)
        return x

    @staticmethod
    def _erase(x):
        """RandomErasing(p=0.25, scale=(0.02, 0.15), ratio=(0.3, 3.3), value=0)."""
        b, _, h, w = x.shape
        dev = x.device
        area = _uniform(b, 0.02, 0.15, dev) * h * w
        ratio = torch.exp(_uniform(b, math.log(0.3), math.log(3.3), dev))
        eh, ew = (area * ratio).sqrt().clamp(max=h), (area / ratio).sqrt().clamp(max=w)
        y0, x0 = torch.rand(b, device=dev) * (h - eh), torch.rand(b, device=dev) * (w - ew)
        yy = torch.arange(h, device=dev).view(1, h, 1)
        xx = torch.arange(w, device=dev).view(1, 1, w)
        mask = ((yy >= y0.view(b, 1, 1)) & (yy < (y0 + eh).view(b, 1, 1)) & (xx >= x0.view(b, 1, 1))
                & (xx < (x0 + ew).view(b, 1, 1)) & (torch.rand(b, 1, 1, device=dev) < 0.25))
        return x.masked_fill(mask[:, None], 0.0)


class DeviceLoader:
    """Training batches straight from uint8 tensors held on `device` (MNIST, a photo folder at
    128 px), augmented by `BatchAugment`. Yields (images, labels, sources, weights) like a
    DataLoader over the dataset, in the order of `sampler` (indices, e.g. `epoch_order`) when it
    is set, else shuffled by `generator`."""

    def __init__(self, dataset, batch_size, device, augment, drop_last=True):
        parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
        side = max(p.images.shape[-1] for p in parts)
        imgs = []
        for p in parts:
            x = p.images[p.indices]
            if x.shape[-1] != side:  # e.g. synthetic composites next to larger cached photos
                x = F.interpolate(x.float(), size=(side, side), mode="bilinear", antialias=True).round().clamp(0, 255).to(torch.uint8)
            imgs.append(x)
        self.images = torch.cat(imgs).to(device)
        self.labels = torch.cat([p.labels[p.indices] for p in parts]).to(device)
        self.sources = torch.cat([torch.full((len(p),), p.source) for p in parts]).to(device)
        self.weights = torch.cat([torch.ones(len(p)) if p.weights is None else p.weights[p.indices]
                                  for p in parts]).to(device)
        self.batch_size, self.augment, self.drop_last = batch_size, augment, drop_last
        self.sampler = self.generator = None

    def __len__(self):
        n = len(self.labels) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def __iter__(self):
        order = (torch.randperm(len(self.labels), generator=self.generator) if self.sampler is None
                 else torch.as_tensor(self.sampler, dtype=torch.long)).to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.augment(self.images[idx]), self.labels[idx], self.sources[idx], self.weights[idx]
