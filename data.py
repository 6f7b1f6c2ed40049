"""Datasets, the stratified train/val split, the data options, and the epoch order.

Every image set is held in memory as one uint8 tensor [N, C, H, W] (MNIST as it comes, a
photo folder decoded and resized once into a cache, images.py), and `build_datasets` is the one
function that every script calls to get the same train / val / test sets back from a
checkpoint's `data` dict.
"""
import argparse
import gzip
import hashlib
import math
import os
import re
import shutil
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset

import composite
import corrections as C
from augment import build_transform
from cli import UsageError, check_args, check_folder_arg, check_memory, warn
from corrections import read_sample_weights  # noqa: F401 (data.read_sample_weights, as before)
from images import RESIZE_MODES, cache_size, decode_folder, fingerprint, list_images, load_folder

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# photos this correlated are frames of one scene (see photo_groups): measured on meter_digits, pairs
# above 0.98 are repeated shots of one digit; below ~0.97 other digits of the same meter appear
GROUP_THRESHOLD = 0.98
GROUP_SIDE = 32  # photos are grouped on a decode at this size, the same for every --img-size
DATA_KEYS = ("dataset", "data_dir", "mnist_root", "val_fraction", "split_seed", "train_fraction", "img_size")
# the keys a `data` config gained later: what an older checkpoint without one did (synthetic_ratio
# None: photos and composites in one shuffle)
DATA_DEFAULTS = {"download": True, "cache_dir": None, "test_dir": None, "synthetic_n": 0, "synthetic_ratio": None,
                 "synthetic_seed": 0, "synthetic_source": "mnist", "backgrounds": "photo-crops", "group_split": False,
                 "group_threshold": GROUP_THRESHOLD, "group_regex": None, "sample_weights": None, "folds": 0,
                 "fold": None, "corrections": None, "resize": "squash"}


def check_data_args(args):
    """The shared data options (add_data_args), checked before any data is read."""
    if args.dataset == "folder" and args.data_dir is None:  # a default path would be one the user never chose
        raise UsageError("no data given: pass --data-dir DIR (a photo folder) or --dataset mnist")
    check_args(args, ("img_size", args.img_size is None or args.img_size >= 1, ">= 1"))
    check_data_config(data_config(args))
    check_folder_arg(args.cache_dir, "--cache-dir")
    if args.dataset == "folder" and not os.path.isdir(args.data_dir):
        raise UsageError(f"data folder not found: {args.data_dir}")
    if args.group_regex is not None and not (args.group_split and args.dataset == "folder"):
        raise UsageError("--group-regex groups photos for the group-aware split of a folder: it does nothing "
                         "with --no-group-split or --dataset mnist")
    if getattr(args, "test_dir", None):
        if args.dataset != "folder":
            raise UsageError("--test-dir is for --dataset folder (MNIST brings its own test split)")
        if not os.path.isdir(args.test_dir):
            raise UsageError(f"--test-dir folder not found: {args.test_dir}")
        if nested(args.test_dir, args.data_dir):
            raise UsageError(f"--test-dir {args.test_dir} and --data-dir {args.data_dir} overlap: a test split "
                             f"must hold photos training never saw")


def nested(a, b):
    """Whether folders a and b are the same folder or one holds the other (symlinks resolved)."""
    a, b = os.path.realpath(a), os.path.realpath(b)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep)


def check_data_config(cfg):
    """The ranges of a `data` config's values (data_config): the one place they are checked, for
    parsed options before any data is read and for a checkpoint's config in build_datasets."""
    c = argparse.Namespace(**cfg)
    check_args(c,
               ("val_fraction", 0.0 < c.val_fraction < 1.0, "in (0, 1)"),
               ("train_fraction", 0.0 < c.train_fraction <= 1.0, "in (0, 1]"),
               ("img_size", c.img_size >= 1, ">= 1"),
               ("synthetic_n", c.synthetic_n >= 0, ">= 0"),
               ("synthetic_ratio", c.synthetic_ratio is None or 0.0 < c.synthetic_ratio <= 1.0, "in (0, 1]"),
               ("group_threshold", 0.0 < c.group_threshold <= 1.0, "in (0, 1]"),
               ("split_seed", c.split_seed >= 0, ">= 0"),
               ("folds", c.folds == 0 or c.folds >= 2, "0 (off) or >= 2"),
               ("fold", c.fold is None or (c.folds >= 2 and 0 <= c.fold < c.folds),
                f"in 0..{c.folds - 1} (with --folds K >= 2)" if c.folds >= 2 else "used with --folds K >= 2"),
               ("fold", c.folds == 0 or c.fold is not None, f"set with --folds {c.folds}: the fold that validates"))
    if c.resize not in RESIZE_MODES:
        raise UsageError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {c.resize!r}")
    if c.group_regex is not None:
        group_regex(c.group_regex)
    if c.sample_weights and c.corrections:
        raise UsageError("--sample-weights is a --corrections file without a label column: give one file "
                         "(add the weights as its weight column)")
    if c.synthetic_source not in composite.SOURCES:
        raise UsageError(f"--synthetic-source must be one of {', '.join(composite.SOURCES)}, got {c.synthetic_source!r}")
    if c.dataset == "mnist" and c.synthetic_n > 0:
        raise UsageError("--synthetic-n composites digits onto photos of a folder (--dataset folder "
                         "--data-dir D); MNIST is handwritten digits already")
    if c.synthetic_n and c.backgrounds not in composite.BACKGROUNDS and not os.path.isdir(c.backgrounds):
        raise UsageError(f"--backgrounds must be one of {', '.join(composite.BACKGROUNDS)} or a folder, "
                         f"got {c.backgrounds} (no such folder)")
    check_memory(c.synthetic_n * 3 * c.img_size ** 2, f"--synthetic-n {c.synthetic_n} at --img-size {c.img_size}")


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


def connected_groups(n, pairs):
    """A group id per item 0..n-1 (LongTensor, ids 0..G-1 in order of first appearance): items joined
    by `pairs` (i, j), directly or through a chain, share one; an item in no pair is alone."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:  # path halving: bounded by the tree's depth
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for i, j in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = [root(i) for i in range(n)]
    ids = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return torch.tensor([ids[r] for r in roots], dtype=torch.long)


def photo_groups(images, paths, threshold=None, regex=None):
    """A group id per image (LongTensor [N], ids 0..G-1 in order of first appearance): images whose
    pixel correlation (pixel_vectors) is >= `threshold`, directly or through a chain, share a group
    (consecutive frames of one meter), and so do files whose names give the same `regex` match
    (its first group if it has one, e.g. a meter or camera id). Neither: every image alone."""
    pairs = []
    if threshold is not None:
        pairs += near_duplicates(pixel_vectors(images), threshold, limit=None)[0].tolist()
    if regex is not None:
        first = {}
        for i, p in enumerate(paths):
            m = regex.search(os.path.basename(p))
            if m:
                pairs.append((i, first.setdefault(m.group(1) if m.groups() else m.group(0), i)))
    return connected_groups(len(images), pairs)


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


# ----------------------------------------------------------------------------- datasets

class TensorImageDataset(Dataset):
    """Images held as one uint8 tensor, viewed through `indices` (no copies per split).
    Items are (image, label, source, weight): source 0 = real, 1 = synthetic; weight scales
    the sample's loss (--sample-weights; 0 drops it). `original_labels` (like `labels`): the
    folder's own labels where --corrections changed some of this view's (val), else None."""

    def __init__(self, images, labels, indices=None, transform=None, source=0, paths=None, weights=None,
                 original_labels=None):
        self.images, self.labels = images, torch.as_tensor(labels)
        self.indices = torch.arange(len(images)) if indices is None else torch.as_tensor(indices)
        self.transform, self.source, self.paths, self.weights = transform, source, paths, weights
        self.original_labels = original_labels

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

    @property
    def original_targets(self):
        return None if self.original_labels is None else self.original_labels[self.indices]

    def path(self, i):
        return self.paths[int(self.indices[i])] if self.paths is not None else f"#{int(self.indices[i])}"

    def with_transform(self, transform):
        return TensorImageDataset(self.images, self.labels, self.indices, transform, self.source,
                                  self.paths, self.weights, self.original_labels)


def raw_image(dataset, i):
    """Sample i of a (possibly combined) dataset as stored: uint8 numpy [H, W, C], for plots."""
    if isinstance(dataset, ConcatDataset):
        k = int(np.searchsorted(dataset.cumulative_sizes, i, side="right"))
        dataset, i = dataset.datasets[k], i - (dataset.cumulative_sizes[k - 1] if k else 0)
    return dataset.images[int(dataset.indices[i])].permute(1, 2, 0).numpy()


def real_part(dataset):
    """The real-image part of a training set (drops the synthetic half of a combined set)."""
    return dataset.datasets[0] if isinstance(dataset, ConcatDataset) else dataset


def read_idx(path):
    """An IDX file (MNIST's format, plain or gzipped) as a uint8 tensor of its dimensions."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise ValueError("not a uint8 IDX file")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(data[3])]
    body = data[4 + 4 * len(dims):]
    if len(body) != math.prod(dims):
        raise ValueError(f"{len(body)} bytes of data for dimensions {dims}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(*dims)


def mnist_files(raw):
    """{name: the file's path under `raw` (plain or .gz) or None} of MNIST_FILES."""
    return {f: next((p for p in (os.path.join(raw, f), os.path.join(raw, f + ".gz")) if os.path.isfile(p)), None)
            for f in MNIST_FILES}


def load_mnist(root, train=True, download=True):
    """MNIST as (uint8 images [N, 1, 28, 28], int64 labels [N]) from root/MNIST/raw/ (the IDX files,
    plain or gzipped). Downloaded there (torchvision) only when missing and `download`."""
    raw = os.path.join(root, "MNIST", "raw")
    found = mnist_files(raw)
    if not all(found.values()):
        if all(mnist_files(root).values()):  # --mnist-root names the files' own folder
            parent = os.path.dirname(os.path.dirname(os.path.abspath(root)))
            at_raw = os.path.abspath(root) == os.path.join(parent, "MNIST", "raw")
            where = f"pass --mnist-root {parent}" if at_raw else f"move them to {raw}/"
            raise UsageError(f"--mnist-root is the folder that holds MNIST/raw/, and the files are in {root}: {where}")
        if not download:
            raise UsageError(f"MNIST not found in {raw}/ (needs {', '.join(MNIST_FILES)}; --download fetches them)")
        download_mnist(root, raw)
        found = mnist_files(raw)
    split = "train" if train else "t10k"
    try:
        images, labels = read_idx(found[f"{split}-images-idx3-ubyte"]), read_idx(found[f"{split}-labels-idx1-ubyte"])
    except (OSError, EOFError, ValueError) as e:  # gzip.BadGzipFile is an OSError
        raise UsageError(f"MNIST in {raw}/ is unreadable ({type(e).__name__}: {e})") from None
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise UsageError(f"MNIST in {raw}/ is unreadable: {tuple(images.shape)} images, {tuple(labels.shape)} labels")
    return images.unsqueeze(1).contiguous(), labels.long()


def download_mnist(root, raw):
    """torchvision's download into root/MNIST/raw/; a failure removes the folders it made, so a wrong
    --mnist-root is left as it was."""
    from torchvision import datasets
    made = next((d for d in (root, os.path.join(root, "MNIST"), raw) if not os.path.isdir(d)), None)
    try:
        datasets.MNIST(root, train=True, download=True)
    except Exception as e:  # offline, a bad mirror, a full disk: one line, not a traceback
        if made:
            shutil.rmtree(made, ignore_errors=True)
        raise UsageError(f"MNIST is not in {raw}/ and downloading it failed ({type(e).__name__}; no network "
                         f"here?): pass --mnist-root the folder that holds MNIST/raw/") from None


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
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="the photo folder (--dataset folder): class subfolders, or files named like x_label7.jpg")
    g.add_argument("--mnist-root", default="data", help="holds MNIST/raw/ (downloaded there if missing)")
    g.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download MNIST when its files are missing")
    g.add_argument("--val-fraction", type=float, default=0.15)
    g.add_argument("--split-seed", type=int, default=0)
    g.add_argument("--train-fraction", type=float, default=1.0,
                   help="stratified random subset of the training split (val and test unchanged)")
    g.add_argument("--img-size", type=int, default=None, help="default: 28 for MNIST, 128 for folders")
    g.add_argument("--resize", default="squash", choices=RESIZE_MODES,
                   help="how a photo becomes a square: squash (stretch it), pad (fit the long side, fill the "
                        "rest with the photo's mean colour), crop (fit the short side, keep the centre)")
    g.add_argument("--cache-dir", default=None, help="keep the decoded photo cache on disk here")
    g.add_argument("--test-dir", default=None, metavar="DIR",
                   help="--dataset folder: a labelled test folder (either layout), scored as the test split; "
                        "never used for model selection")
    g.add_argument("--synthetic-n", type=int, default=0,
                   help="a pool of N synthetic digits composited onto backgrounds from the training "
                        "photos (training only; val and test stay real)")
    g.add_argument("--synthetic-source", default="fonts", choices=composite.SOURCES,
                   help="the synthetic digits: printed (fonts, no MNIST needed), handwritten (mnist) or half "
                        "each (both); default fonts, the best synthetic-to-real score (RESULTS.md)")
    g.add_argument("--backgrounds", default="field", metavar="{" + ",".join(composite.BACKGROUNDS) + "} or DIR",
                   help="synthetic backgrounds: field (the training photos' colours and texture, no digit), "
                        "shuffle (their patches shuffled), photo-crops (crops of the photos as they are: "
                        "each shows the photo's own digit too; the reference recipe), or a folder of "
                        "digit-free photos of any size, randomly cropped (default: field, the best "
                        "synthetic-to-real score in RESULTS.md)")
    g.add_argument("--synthetic-ratio", type=float, default=0.5, metavar="R",
                   help="with --synthetic-n: the share of synthetic images in every training batch "
                        "(an epoch is one pass over the real training images; 1 = synthetic only)")
    g.add_argument("--group-split", action=argparse.BooleanOptionalAction, default=True,
                   help="photo folders: keep near-duplicate photos (and --group-regex groups) on one side "
                        "of the train/val split")
    g.add_argument("--group-threshold", type=float, default=GROUP_THRESHOLD, metavar="T",
                   help="photos whose downscaled pixels correlate >= T are one group")
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
        "resize": args.resize,
        "cache_dir": args.cache_dir,
        "test_dir": os.path.abspath(args.test_dir) if getattr(args, "test_dir", None) else None,
        "synthetic_n": args.synthetic_n,
        "synthetic_ratio": args.synthetic_ratio,
        "synthetic_seed": getattr(args, "seed", 0),
        "synthetic_source": args.synthetic_source,
        "backgrounds": (args.backgrounds if args.backgrounds in composite.BACKGROUNDS
                        else os.path.abspath(args.backgrounds)),
        "group_split": args.group_split and args.dataset == "folder",
        "group_threshold": args.group_threshold,
        "group_regex": args.group_regex,
        "sample_weights": os.path.abspath(args.sample_weights) if getattr(args, "sample_weights", None) else None,
        "corrections": os.path.abspath(args.corrections) if getattr(args, "corrections", None) else None,
        "folds": args.folds,
        "fold": args.fold,
    }


def build_datasets(cfg, augment="none", check=True):
    """The one way to get (train, val, test) for a `data` config (see `data_config`).

    `cfg` may carry "num_samples" / "split_hash" from a checkpoint: the split is then checked
    to be the one the model was trained with (a changed folder is a warning, not silence)."""
    missing = [k for k in DATA_KEYS if k not in cfg]
    if missing:
        raise UsageError(f"the data config lacks {', '.join(missing)}: not a checkpoint of this toolkit's format")
    cfg = {**DATA_DEFAULTS, **cfg}
    check_data_config(cfg)
    img_size = cfg["img_size"]
    if cfg["dataset"] == "mnist":
        images, labels = load_mnist(cfg["mnist_root"], train=True, download=cfg["download"])
        test_images, test_labels = load_mnist(cfg["mnist_root"], train=False, download=False)
        classes, mean, std, paths = [str(i) for i in range(10)], MNIST_MEAN, MNIST_STD, None
    else:
        images, labels, classes, paths = load_folder(cfg["data_dir"], img_size, cfg["cache_dir"], cfg["resize"])
        test_images = None
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    train_idx, val_idx, groups = split_indices(cfg, labels, classes, paths)
    split_hash = fingerprint([os.path.basename(p) for p in paths] if paths else len(labels), val_idx, train_idx,
                             *((cfg["folds"], cfg["fold"]) if cfg["folds"] else ()))
    if check and cfg.get("split_hash") and cfg["split_hash"] != split_hash:
        warn(f"the data differ from those the checkpoint was trained on ({len(labels)} samples now, "
             f"{cfg.get('num_samples')} then): train/val are not the same split")
    n_folder, fixed = len(labels), {}
    in_channels = images.shape[1]
    train_tf = build_transform(augment, img_size, mean, std, train=True)
    eval_tf = build_transform(augment, img_size, mean, std, train=False)
    weights = read_sample_weights(cfg["sample_weights"], paths, len(labels)) if cfg["sample_weights"] else None
    folder_labels = labels  # (apply_corrections relabels a copy)
    if cfg["corrections"]:  # after the split, so val keeps the same images
        images, labels, classes, paths, train_idx, weights, fixed = apply_corrections(
            cfg, images, labels, classes, paths, train_idx, val_idx)
    if not len(train_idx) or (weights is not None and not weights[train_idx].any()):
        raise UsageError(f"every training sample has weight 0 in {cfg['sample_weights'] or cfg['corrections']}: "
                         f"nothing to learn from")
    if cfg["sample_weights"] and (weights[val_idx] != 1).any() and check:
        warn(f"{int((weights[val_idx] != 1).sum())} weight(s) in {cfg['sample_weights']} are of val photos: they "
             f"change nothing (validation is scored unweighted)")
    if cfg["folds"]:  # a cross-validation run, cut after the corrections: the folds analyze.py --folds scores
        train_idx, val_idx = _fold_split(train_idx, labels, cfg["folds"], cfg["fold"], cfg["split_seed"])
    train = TensorImageDataset(images, labels, train_idx, train_tf, paths=paths, weights=weights)
    # a corrected val label changes val accuracy: the folder's labels stay beside them, so both can be scored
    relabelled_val = not torch.equal(labels[val_idx], folder_labels[val_idx])
    val = TensorImageDataset(images, labels, val_idx, eval_tf, paths=paths,
                             original_labels=folder_labels if relabelled_val else None)
    test = TensorImageDataset(test_images, test_labels, None, eval_tf) if test_images is not None else None
    if cfg["test_dir"]:
        test = load_test_folder(cfg["test_dir"], classes, img_size, eval_tf, cfg["cache_dir"], cfg["resize"])
        shared = same_pixels(images, test.images)
        if shared:
            raise UsageError(f"--test-dir {cfg['test_dir']} holds {len(shared)} image(s) with the same pixels as "
                             f"photos of --data-dir (e.g. {os.path.basename(test.paths[shared[0]])}): a test split "
                             f"must hold photos training never saw")
    if cfg["synthetic_n"] > 0:
        train = ConcatDataset([train, _synthetic(cfg, images[train_idx], classes, train_tf)])
    config = dict(cfg, num_samples=n_folder, split_hash=split_hash,
                  num_groups=None if groups is None else int(groups.max()) + 1, **fixed)
    return Data(train, val, test, classes, in_channels, img_size, mean, std, config)


def apply_corrections(cfg, images, labels, classes, paths, train_idx, val_idx):
    """--corrections (corrections.py) applied to a data set after its split: labels change on both
    sides (a wrong val label makes val accuracy wrong), while val keeps its images; excluded
    (weight 0) images leave training, added images join it. New classes come after the folder's,
    which keep their indices. Returns (images, labels, classes, paths, train_idx, weights or None,
    the config entries a checkpoint records: corrections_sha256, corrections_summary).
    From a checkpoint whose file is gone or changed, see corrections_at_rebuild."""
    path, recorded = cfg["corrections"], cfg.get("corrections_summary")
    source = corrections_at_rebuild(cfg)
    if not source:
        return images, labels, classes + recorded["new_classes"], paths, train_idx, None, {}
    fix = C.read_corrections(source, paths, classes, len(labels), base=os.path.dirname(path))
    names = [*fix.labels.values(), *(label for _, label, _ in fix.added)]
    new = [c for c in dict.fromkeys(names) if c not in classes]
    classes, n = list(classes) + new, len(labels)
    before, labels = labels, labels.clone()
    for i, c in fix.labels.items():
        labels[i] = classes.index(c)
    weights = torch.ones(n + len(fix.added))
    for i, weight in fix.weights.items():
        weights[i] = weight
    in_train = torch.zeros(n, dtype=torch.bool)
    in_train[train_idx] = True
    w = weights[:n]
    summary = {"relabelled": int((labels != before).sum()),
               "relabelled_val": int((labels[val_idx] != before[val_idx]).sum()),
               "excluded": int((in_train & (w == 0)).sum()),
               "reweighted": int((in_train & (w != 0) & (w != 1)).sum()),
               "added": len(fix.added), "new_classes": new,
               "ignored": int((~in_train & (w != 1)).sum())}  # weights of val images: val keeps them
    if recorded is not None and summary != recorded:
        diff = ", ".join(f"{k} {recorded.get(k)} then, {v} now" for k, v in summary.items() if recorded.get(k) != v)
        message = f"--corrections {path} changes other images now than in training ({diff}): the data folder changed?"
        if summary["relabelled_val"] != recorded.get("relabelled_val"):
            raise UsageError(message + " val would be scored with other labels; refused")
        warn(message)
    if fix.added:
        added, kept = decode_folder([p for p, _, _ in fix.added], images.shape[-1], cfg["cache_dir"],
                                    warn_skipped=False, resize=cfg["resize"])
        if len(kept) < len(fix.added):
            bad = next(p for k, (p, _, _) in enumerate(fix.added) if k not in kept)
            raise UsageError(f"--corrections {path} adds {bad}, which cannot be read as an image")
        leak = same_pixels(images[val_idx], added)
        if leak:
            raise UsageError(f"--corrections {path} adds {fix.added[leak[0]][0]}, which has the pixels of a val "
                             f"photo: training on it would leak val into training")
        images, paths = torch.cat([images, added]), paths + [p for p, _, _ in fix.added]
        labels = torch.cat([labels, torch.tensor([classes.index(c) for _, c, _ in fix.added])])
        weights[n:] = torch.tensor([w for _, _, w in fix.added])
    train_idx = torch.cat([train_idx[weights[train_idx] != 0], torch.arange(n, len(labels))])
    empty = [c for c, k in zip(classes, torch.bincount(labels[train_idx], minlength=len(classes)).tolist()) if not k]
    if empty and len(train_idx) and recorded is None:  # (none at all is refused in build_datasets)
        warn(f"after --corrections {path}, class(es) {', '.join(empty)} have no training images")
    return (images, labels, classes, paths, train_idx, weights if (weights != 1).any() else None,
            {"corrections_sha256": fix.sha256, "corrections_summary": summary})


def corrections_at_rebuild(cfg):
    """The file to apply a checkpoint's corrections from, or None: the file training read when it
    still is (same sha256; or not from a checkpoint), else the first of `corrections_copies` (the
    run's own copies, train.py's <save-dir>/trained_corrections.csv; evaluate.run_data lists them) with the
    recorded sha256, said in one line. Neither: when the file relabelled no val image, val is still
    right, so the data are rebuilt without it and one warning says so; when it did, val would be
    scored with other labels, so it is refused in one line."""
    path, then = cfg["corrections"], cfg.get("corrections_sha256")
    now = C.file_hash(path) if os.path.isfile(path) else None
    if then is None or now == then:
        return path
    what = "is gone" if now is None else f"has changed since training (sha256 {then[:12]} then, {now[:12]} now)"
    copy = next((p for p in cfg.get("corrections_copies") or () if os.path.isfile(p) and C.file_hash(p) == then), None)
    if copy:
        print(f"--corrections {path} {what}: rebuilt from the run's copy of it as training read it, {copy}")
        return copy
    summary = cfg["corrections_summary"]
    if summary["relabelled_val"]:
        raise UsageError(f"--corrections {path} {what}: it relabelled {summary['relabelled_val']} val image(s), so "
                         f"val would be scored with other labels; put the file back as training read it (a run "
                         f"folder's {C.RUN_COPY} is that copy)")
    warn(f"--corrections {path} {what}: rebuilt without it (val is right, the file relabelled no val image; the "
         f"train split has the folder's labels, without its {summary['added']} added image(s))")
    return None


def split_indices(cfg, labels, classes, paths):
    """(train, val, photo groups or None) of a `data` config: the stratified split (group-aware for
    folders) and the --train-fraction subset of train (build_datasets cuts a --folds run's fold later)."""
    counts = torch.bincount(labels, minlength=len(classes))
    if len(classes) < 2:
        raise UsageError(f"need at least 2 classes, found {len(classes)}: {classes}")
    if counts.min() < 2:
        raise UsageError(f"class {classes[int(counts.argmin())]!r} has fewer than 2 images; "
                         f"cannot split it into train and val")
    groups = _groups(cfg, paths) if cfg["group_split"] else None
    if groups is None:
        train_idx, val_idx = stratified_split(labels, cfg["val_fraction"], cfg["split_seed"])
    else:
        train_idx, val_idx = stratified_group_split(labels, groups, cfg["val_fraction"], cfg["split_seed"])
    train_idx = stratified_subset(train_idx, labels, cfg["train_fraction"], cfg["split_seed"])
    return train_idx, val_idx, groups


def same_pixels(images, others):
    """Positions in `others` (uint8 [M, C, H, W]) of images whose pixels equal one of `images`: the
    same photo under another name, compared by content."""
    digest = lambda x: hashlib.sha1(x.numpy().tobytes()).digest()  # noqa: E731
    seen = {digest(x) for x in images}
    return [i for i, x in enumerate(others) if digest(x) in seen]


def load_test_folder(root, classes, img_size, transform, cache_dir=None, resize="squash"):
    """A labelled test folder (either layout) as a dataset labelled by the training `classes`,
    matched by name; a class the training data do not have is refused with its name."""
    images, labels, names, paths = load_folder(root, img_size, cache_dir, resize)
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise UsageError(f"--test-dir {root} has class(es) the training data do not: {', '.join(unknown)} "
                         f"(training classes: {', '.join(classes)})")
    labels = torch.tensor([classes.index(n) for n in names])[labels]
    return TensorImageDataset(images, labels, None, transform, paths=paths)


def decode_size(cfg):
    """The side the images of a `data` config are stored at before the eval transform resizes them:
    MNIST's native 28 px, a folder's decoded cache. Images classified for a checkpoint (evaluate.py
    --images, export.py) are decoded at this size, so they go through exactly the evaluation path."""
    return 28 if cfg["dataset"] == "mnist" else cache_size(cfg["img_size"])


def resize_mode(cfg):
    """How the photos of a `data` config were made square (--resize); `squash` for a checkpoint from
    before the option. Images classified for a checkpoint are decoded with it, as decode_size."""
    return cfg.get("resize", DATA_DEFAULTS["resize"])


def group_regex(text):
    """--group-regex compiled, or one line when it is not a regular expression."""
    try:
        return re.compile(text)
    except re.error as e:
        raise UsageError(f"--group-regex {text!r} is not a regular expression: {e}") from None


def _groups(cfg, paths):
    """photo_groups for a folder config. The photos are compared at
    GROUP_SIDE px whatever --img-size and --resize (a squashed decode of their own, cached like the
    training images), so the split is the same at every image size and resize mode."""
    regex = group_regex(cfg["group_regex"]) if cfg["group_regex"] else None
    images, kept = decode_folder(paths, GROUP_SIDE, cfg["cache_dir"])
    if len(kept) != len(paths):
        raise UsageError(f"{len(paths) - len(kept)} photo(s) of {cfg['data_dir']} became unreadable while loading")
    return photo_groups(images, paths, cfg["group_threshold"], regex)


def _fold_split(train_idx, labels, folds, fold, seed):
    """(the other folds, fold `fold`) of the training split cut into `folds` stratified folds."""
    held = torch.zeros(len(train_idx), dtype=torch.bool)
    held[stratified_folds(labels[train_idx], folds, seed)[fold]] = True
    if held.all() or not held.any():
        raise UsageError(f"--folds {folds} cannot be cut from {len(train_idx)} training samples")
    return train_idx[~held], train_idx[held]


def _synthetic(cfg, photos, classes, transform):
    """Training-only synthetic digits (composite.py) on backgrounds made from the training photos
    (never val), or from a folder of digit-free photos (--backgrounds DIR)."""
    if sorted(classes) != [str(d) for d in range(10)]:
        raise UsageError(f"--synthetic-n needs digit classes 0-9; this dataset has {classes[:5]}...")
    source, backgrounds = cfg["synthetic_source"], cfg["backgrounds"]
    # rendering the digits and compositing them takes a while (16 s for 9000 at 128 px): say so first
    print(f"making {cfg['synthetic_n']} synthetic digits ({source} on {os.path.basename(backgrounds)} backgrounds) "
          f"for training ...", flush=True)
    mnist = load_mnist(cfg["mnist_root"], train=True, download=cfg["download"]) if source != "fonts" else None
    mode = backgrounds if backgrounds in composite.BACKGROUNDS else "photo-crops"
    if backgrounds not in composite.BACKGROUNDS:  # a folder (checked): decoded at twice the size, crops of a quarter
        photos, _ = decode_folder(list_images(backgrounds), 2 * cfg["img_size"], cfg["cache_dir"])
        if len(photos) == 0:
            raise UsageError(f"none of the images in --backgrounds {backgrounds} could be read")
    images, labels = composite.make_synthetic(photos, composite.digit_bank(source, mnist), cfg["synthetic_n"],
                                              cfg["img_size"], seed=cfg["synthetic_seed"], background=mode)
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
