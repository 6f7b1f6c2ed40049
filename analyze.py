"""Explain what a trained network learned, and check the data it learned from.

    python analyze.py checkpoints/best.pt
    python analyze.py checkpoints/best.pt --folds 5   # review the training labels too (5 short runs)
    python analyze.py checkpoints/best.pt --unlabeled new/   # also new/'s photos: ranked for labelling
                                                             # -> unlabeled.csv, unlabeled.json (unlabeled.py),
                                                             # and on dashboard.html's map to label there
    python analyze.py checkpoints/best.pt --unlabeled new/ --unlabeled-only   # only the two unlabeled files

Writes next to the checkpoint (or into --out):
  kernels.png    every first-layer kernel (and the second layer's, when the first has < 9), one scale
  tsne.png       penultimate features of the test set (val where there is none) in 2-D, mistakes crossed
  gradcam.png    Grad-CAM heat maps (the last conv map >= 7x7) of the held-out mistakes and a sample of correct images
  neighbors.png  query images, each followed by its 8 nearest training images in feature space
  samples.csv    one row per train / val / test sample: prediction, loss, confidence in the given
                 label, margin, kNN label agreement, near-duplicate group (-1: none) and a flag (ok,
                 or suspect / mistake / duplicate)
  suspects.csv   likely label errors (confident learning), most likely first; with its weight
                 column edited (0 = drop) it is a train.py --sample-weights file
  suspects.png   the top suspects: given label, suggested label, confidence in the given one
  review.json    how good each split's reviewer is (accuracy, per fold too); a split whose reviewer is
                 below the floor (REVIEW_FLOOR) has its suspects withheld from the files above
  duplicates.csv near-duplicate image pairs; those across splits (leakage) marked
  mistakes/      every misclassified val / test image: <true class>/<split>_<index>_pred-<p>_<conf>.png
and then, via report.py: evaluate.py's metrics.json, confusion.png and mistakes.png,
  dashboard.html an interactive PCA / t-SNE map of the features (one file, works offline), a labelling
                 page: samples.csv's signals colour, filter and sort it; --unlabeled photos are on it too
  report.md, report.html  the run written up, with every figure of the folder
Predictions and features come from evaluate.py, so both scripts see the same data and model.
"""
import argparse
import contextlib
import csv
import math
import os
import re

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import ConcatDataset, Subset

import cli
import corrections as C
import data as D
import evaluate as E
import report
import sweep
import train
import unlabeled as U
from checkpoint import CheckpointError, checkpoint_path, load_checkpoint, model_from_checkpoint
from device import AMP_CHOICES, check_device, get_device
from images import list_images, warn_unreadable
from model import first_conv


def get_args_parser():
    p = cli.ArgumentParser(description="Kernels, t-SNE and nearest neighbours of a checkpoint.")
    p.add_argument("checkpoint", help="a checkpoint, or a run folder (its best.pt)")
    p.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    p.add_argument("--data-dir", default=None, help="the photo folder, if it moved since training")
    p.add_argument("--mnist-root", default=None, help="the MNIST root, if it moved since training")
    p.add_argument("--tsne-samples", type=int, default=2000, help="points in the t-SNE map (random subset)")
    p.add_argument("--queries", type=int, default=6, help="query images in neighbors.png (>= 4)")
    p.add_argument("--neighbors", type=int, default=8)
    p.add_argument("--dashboard-points", type=int, default=2000, help="images in dashboard.html (balanced sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=None)
    p.add_argument("--amp", default=None, choices=AMP_CHOICES,
                   help="autocast precision (default: the checkpoint's, what training evaluated with)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tta", type=int, default=1, metavar="N",
                   help=f"predictions are the mean softmax over N test-time views "
                        f"(evaluate.py --tta; 1..{len(E.TTA_VIEWS)})")
    g = p.add_argument_group("data quality")
    g.add_argument("--folds", type=int, default=0,
                   help="also review the training labels: K short train.py runs, each scoring the fold it "
                        "did not train on, in <out>/folds/ (default 0: review val only)")
    g.add_argument("--fold-epochs", type=int, default=5, help="epochs of each --folds run")
    g.add_argument("--knn", type=int, default=10, help="neighbours for the kNN label agreement")
    g.add_argument("--duplicate-threshold", type=float, default=0.99,
                   help="pixel correlation from which two images count as near-duplicates")
    g.add_argument("--max-mistakes", type=int, default=None,
                   help="save at most N mistakes per split to mistakes/, most confident first (default: all)")
    g = p.add_argument_group("unlabelled photos")
    g.add_argument("--unlabeled", default=None, metavar="DIR",
                   help="also rank the photos of DIR for labelling -> unlabeled.csv (a --corrections file once its "
                        "label column is filled) and unlabeled.json, and put them on dashboard.html's map")
    g.add_argument("--unlabeled-only", action="store_true",
                   help="with --unlabeled: write only unlabeled.csv and unlabeled.json (no figures, no data "
                        "quality, no dashboard)")
    g.add_argument("--reject-below", type=float, default=None, metavar="P",
                   help="with --unlabeled: flag 'below threshold' where the top probability is under P "
                        "(evaluate.py --images --reject-below writes prediction none there)")
    return p


def check_args(args):
    """Bad option values: one line before anything is loaded or trained."""
    for name, ok, need in (("folds", args.folds == 0 or args.folds >= 2, "0 (off) or >= 2"),
                           ("fold_epochs", args.fold_epochs >= 1, ">= 1"),
                           ("knn", args.knn >= 1, ">= 1"),
                           ("dashboard_points", args.dashboard_points >= 3, ">= 3"),
                           ("duplicate_threshold", 0 < args.duplicate_threshold <= 1, "in (0, 1]"),
                           ("max_mistakes", args.max_mistakes is None or args.max_mistakes >= 0, ">= 0"),
                           ("tsne_samples", args.tsne_samples >= 2, ">= 2"),
                           ("queries", args.queries >= 1, ">= 1"),
                           ("neighbors", args.neighbors >= 1, ">= 1"),
                           ("seed", args.seed >= 0, ">= 0"),
                           ("batch_size", args.batch_size >= 1, ">= 1"),
                           ("tta", 1 <= args.tta <= len(E.TTA_VIEWS), f"in 1..{len(E.TTA_VIEWS)}"),
                           ("reject_below", args.reject_below is None or 0 <= args.reject_below <= 1, "in [0, 1]")):
        cli.check_args(args, (name, ok, need))
    check_device(args.device)
    args.checkpoint = checkpoint_path(args.checkpoint)
    cli.check_folder_arg(args.out, "--out")
    cli.check_folder_arg(os.path.join(args.out or os.path.dirname(os.path.abspath(args.checkpoint)), "mistakes"),
                       "mistakes/ in --out")
    if not os.path.isfile(args.checkpoint):
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    for option, path in (("--data-dir", args.data_dir), ("--mnist-root", args.mnist_root)):
        if path and not os.path.isdir(path):
            raise cli.UsageError(f"{option} folder not found: {path}")
    if args.reject_below is not None and not args.unlabeled:
        raise cli.UsageError("--reject-below flags --unlabeled photos: give --unlabeled DIR too")
    if args.unlabeled_only and not args.unlabeled:
        raise cli.UsageError("--unlabeled-only ranks --unlabeled photos: give --unlabeled DIR too")
    if args.unlabeled:
        U.check_folder(args.unlabeled, None)  # the training folder is known once the checkpoint is read


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def kernel_images(weight):
    """Conv weights [out, in, k, k] -> (a list of displayable [k, k(, 3)] arrays in [0, 1], strongest
    (L2 norm) first; the scale): RGB kernels as colour images, others one grey image per (out, in) pair.
    One scale for the whole layer, 0 at mid-grey: per-kernel min-max stretching made a dead or still
    random 3x3 kernel look as strong and as structured as a learned one."""
    w = weight.detach().float().cpu()
    tiles = w if w.shape[1] == 3 else w.flatten(0, 1)[:, None]
    tiles = tiles[tiles.flatten(1).norm(dim=1).argsort(descending=True)]
    scale = w.abs().max().clamp_min(1e-12).item()
    tiles = (tiles / (2 * scale) + 0.5).permute(0, 2, 3, 1)
    return [t.squeeze(-1).numpy() for t in tiles], scale


def plot_kernels(model, path):
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    layers = [("first layer", first_conv(model))]
    if len(kernel_images(convs[0].weight)[0]) < 9 and len(convs) > 1:
        layers.append(("second layer", convs[1]))
    plt = _plt()
    grids = [(title, conv, *kernel_images(conv.weight)) for title, conv in layers]
    shapes = [(math.ceil(math.sqrt(len(t))), math.ceil(len(t) / math.ceil(math.sqrt(len(t))))) for _, _, t, _ in grids]
    tile = 0.75 if max(c for c, _ in shapes) > 8 else 1.0  # inches: a 3x3 kernel needs room to be seen
    heights = [r * tile + 0.8 for _, r in shapes]
    width = max(4.5, max(c for c, _ in shapes) * tile)
    fig = plt.figure(figsize=(width, sum(heights)))
    subfigs = fig.subfigures(len(grids), 1, height_ratios=heights) if len(grids) > 1 else [fig]
    for sf, (title, conv, tiles, scale), (cols, rows), h in zip(subfigs, grids, shapes, heights):
        side = (1 - cols * tile / width) / 2 + 0.02  # a narrower grid centred, its tiles as large as the others'
        axes = np.atleast_1d(sf.subplots(rows, cols, gridspec_kw=dict(
            wspace=0.08, hspace=0.08, left=side, right=1 - side, bottom=0.02, top=1 - 0.7 / h))).flatten()
        for ax in axes:
            ax.axis("off")
        for ax, t in zip(axes, tiles):
            ax.imshow(t, cmap="gray" if t.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        sf.suptitle(f"{title} kernels {tuple(conv.weight.shape)}, strongest first\n"
                    f"one scale: mid-grey = 0, black / white = -/+{scale:.2g}", fontsize=10)
    cli.save_figure(fig, path, dpi=90)


def tsne_2d(features, seed=0, quiet=False):
    """2-D t-SNE of `features` (PCA to 50 dims first, as usual, for speed and noise)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    x = features.numpy().astype(np.float32)
    dims = min(50, len(x))  # PCA cannot give more components than samples (a small val split)
    if x.shape[1] > dims:
        x = PCA(dims, random_state=seed).fit_transform(x)
    # one sklearn call, no steps to count: the bar only says what the half minute on a large set is spent on
    with cli.progress(None, f"t-SNE of {len(x)} points", quiet, total=1) as bar:
        xy = TSNE(2, init="pca", random_state=seed, perplexity=min(30, len(x) - 1)).fit_transform(x)
        bar.update()
    return xy


def plot_tsne(xy, labels, preds, classes, path, title):
    """Points coloured by true class; misclassified ones (preds != labels) as black-edged crosses."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 8))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    wrong = preds != labels
    for c in range(len(classes)):
        m = labels == c
        ax.scatter(xy[m & ~wrong, 0], xy[m & ~wrong, 1], s=6, color=cmap(c % cmap.N), label=classes[c], alpha=0.8)
        ax.scatter(xy[m & wrong, 0], xy[m & wrong, 1], s=40, marker="X", color=cmap(c % cmap.N), edgecolors="k",
                   linewidths=0.6)  # still its true class's colour, so a cross inside another cluster reads
    ax.scatter([], [], s=40, marker="X", color="w", edgecolors="k", linewidths=0.6,
               label=f"misclassified ({wrong.sum()})")  # the legend's one entry for every class's crosses
    ax.legend(markerscale=2, fontsize=8, loc="best", ncol=1 + len(classes) // 12)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    cli.save_figure(fig, path, dpi=90)


def nearest(query_feats, pool_feats, k):
    """Indices [Q, k] of the k nearest pool samples by cosine similarity."""
    sim = F.normalize(query_feats, dim=1) @ F.normalize(pool_feats, dim=1).T
    return sim.topk(min(k, len(pool_feats)), dim=1).indices  # a tiny training split has fewer than k


def plot_neighbors(query_ds, query_idx, query_labels, pool_ds, nn_idx, pool_labels, classes, path):
    plt = _plt()
    q, k = nn_idx.shape
    fig, axes = plt.subplots(q, k + 1, figsize=(1.4 * (k + 1), 1.6 * q))
    axes = np.atleast_2d(axes)
    for r in range(q):
        E.show_image(axes[r, 0], query_ds, query_idx[r])
        axes[r, 0].set_title(f"query: {classes[query_labels[r]]}", fontsize=8, fontweight="bold")
        for c in range(k):
            j = int(nn_idx[r, c])
            E.show_image(axes[r, c + 1], pool_ds, j)
            same = pool_labels[j] == query_labels[r]
            axes[r, c + 1].set_title(classes[pool_labels[j]], fontsize=8,
                                     color=report.CORRECT if same else report.WRONG)
    fig.suptitle("nearest training images in feature space (blue label: the query's class; orange: another class)",
                 fontsize=10)
    fig.tight_layout()
    cli.save_figure(fig, path, dpi=90)


# ----------------------------------------------------------------------------- Grad-CAM

POOLS = (torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d,
         torch.nn.Dropout, torch.nn.Dropout2d)


CAM_SIDE = 7  # the coarsest map Grad-CAM was shown on (7x7, ResNet at 224 px); a 2x2 map is four blobs


@contextlib.contextmanager
def feature_maps(model):
    """Records [(module name, output)] of every spatial feature map a leaf module outputs (pools and
    dropout aside), in the order of the forward pass, while open."""
    maps, names = [], {m: n for n, m in model.named_modules()}

    def keep(module, inputs, output):
        if output.dim() == 4 and output.shape[-1] > 1 and not isinstance(module, POOLS):
            maps.append((names[module], output))
    hooks = [m.register_forward_hook(keep) for m in model.modules() if not list(m.children())]
    try:
        yield maps
    finally:
        for h in hooks:
            h.remove()


def cam_map(maps, input_side):
    """The (name, map) Grad-CAM reads: the last at least CAM_SIDE on a side (for small inputs an
    earlier, finer stage than the last: ResNet-18 at 64 px reads layer2's 8x8, not layer4's 2x2),
    or, for inputs under 28 px, the last with cells of at most 4 px (not the first conv's edges)."""
    side = min(CAM_SIDE, input_side // 4)
    return next(((n, m) for n, m in reversed(maps) if min(m.shape[-2:]) >= side), maps[-1])


def cam_stage(model, image_shape):
    """(module name, (h, w)) of the map grad_cam reads for images of `image_shape` [C, H, W] (for titles)."""
    model.eval()
    p = next(model.parameters())
    with torch.no_grad(), feature_maps(model) as maps:
        model(torch.zeros(1, *image_shape, device=p.device, dtype=p.dtype))
        name, m = cam_map(maps, min(image_shape[-2:]))
    return name, tuple(m.shape[-2:])


def grad_cam(model, images, target=None):
    """Grad-CAM (Selvaraju et al. 2017) of the map `cam_map` picks (any model of the registry),
    weighted by the spatially averaged gradient of the `target` logit (default: the prediction),
    ReLU, upsampled to the input and scaled to [0, 1] per image. Returns (cams [B, H, W], logits [B, C]).
    Eval mode, so images are independent."""
    model.eval()
    with torch.enable_grad(), feature_maps(model) as maps:
        logits = model(images)
        maps = cam_map(maps, min(images.shape[-2:]))[1]
        target = logits.argmax(1) if target is None else target
        grads, = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), maps)
    cam = F.relu((grads.mean((2, 3), keepdim=True) * maps).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return (cam / cam.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1)).detach(), logits.detach()


def cam_overlay(img, cam, alpha=0.5):
    """uint8 [H, W, C] image and a [h, w] heat map in [0, 1] -> uint8 [H, W, 3]: the map (jet) blended over it."""
    import matplotlib
    cam = F.interpolate(cam[None, None].float(), size=img.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    heat = matplotlib.colormaps["jet"](cam.clamp(0, 1).numpy())[..., :3]
    base = np.repeat(img, 3, -1) if img.shape[-1] == 1 else img
    return (alpha * heat * 255 + (1 - alpha) * base).round().clip(0, 255).astype(np.uint8)


def dataset_cams(model, dataset, idx, targets, device, batch_size=64):
    """Grad-CAM heat maps [len(idx), H, W] of dataset items `idx` (eval transforms) for the classes
    `targets` [len(idx)] (the predictions shown beside them, which with TTA need not be the plain
    model's argmax), on the CPU."""
    cams, targets = [], torch.as_tensor(targets).to(device)
    for lo in range(0, len(idx), batch_size):
        x = torch.stack([dataset[i][0] for i in idx[lo:lo + batch_size]]).to(device)
        cams.append(grad_cam(model, x, targets[lo:lo + batch_size])[0].cpu())
    return torch.cat(cams) if cams else torch.empty(0)


def plot_gradcam(model, dataset, out, classes, device, path, n=8, seed=0, title=""):
    """gradcam.png: up to n mistakes (most confident first) and n correct images picked at random,
    each with its Grad-CAM heat map for the predicted class."""
    conf = out["probs"].max(1).values
    wrong = torch.nonzero(out["preds"] != out["labels"]).flatten()
    wrong = wrong[conf[wrong].argsort(descending=True)][:n].tolist()
    right = torch.nonzero(out["preds"] == out["labels"]).flatten()
    right = right[torch.randperm(len(right), generator=torch.Generator().manual_seed(seed))[:n]].tolist()
    rows = [("mistake", wrong), ("correct", right)]
    plt = _plt()
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 4.2), squeeze=False)
    for r, (kind, idx) in enumerate(rows):
        cams = dataset_cams(model, dataset, idx, out["preds"][idx], device)
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(idx):
                continue
            i = idx[c]
            ax.imshow(cam_overlay(D.raw_image(dataset, i), cams[c]))
            ax.set_title(f"{classes[out['labels'][i]]} -> {classes[out['preds'][i]]}", fontsize=8,
                         color=report.WRONG if kind == "mistake" else report.CORRECT)
        axes[r, 0].text(-0.1, 0.5, kind, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right")
    x = dataset[0][0]
    stage, (h, w) = cam_stage(model, x.shape)
    fig.suptitle(f"Grad-CAM of {stage}: its {h}x{w} map upsampled to the {x.shape[-2]}x{x.shape[-1]} px input\n"
                 f"true -> predicted class" + (f", {title}" if title else ""), fontsize=9)
    fig.tight_layout()
    cli.save_figure(fig, path, dpi=90)


# ----------------------------------------------------------------------------- data quality

def out_of_fold_probs(args, ckpt, data, train_set, out_dir, device):
    """(probabilities [len(train_set), C] of every training sample from a model that never saw it,
    the fold [len(train_set)] that scored each).

    Run k of K (--folds) is train.py with the checkpoint's own settings, --epochs --fold-epochs
    and --folds K --fold k (data.py: it trains on the other folds; fold k is its val), in
    <out>/folds/fold<k>/. As in experiments.py, a finished run (result.json) is not run again
    and an interrupted one resumes from its last.pt, so the same command continues."""
    if ckpt["data"].get("folds"):
        raise cli.UsageError("--folds needs the checkpoint of a whole run, not of one cross-validation fold")
    base = vars(train.get_args_parser().parse_args([]))
    base.update((k, v) for k, v in ckpt["args"].items() if k in base)  # an older train.py's run: defaults
    base.update({k: data.config[k] for k in ("data_dir", "mnist_root", "sample_weights", "corrections")
                 if data.config.get(k)})
    base.update(download=False, epochs=args.fold_epochs, folds=args.folds, resume=None, device=args.device,
                workers=None, quiet=True, dry_run=False, amp=args.amp or base["amp"],
                warmup_epochs=base["warmup_epochs"] * args.fold_epochs / base["epochs"])  # the same schedule, shorter
    probs, fold = torch.empty(len(train_set), len(ckpt["classes"])), torch.empty(len(train_set), dtype=torch.long)
    for k, held in enumerate(D.stratified_folds(train_set.targets, args.folds, data.config["split_seed"])):
        folder = os.path.join(out_dir, "folds", f"fold{k}")
        settings = dict(base, fold=k, save_dir=folder)
        sweep.run_in_folder(folder, "settings", settings, lambda resume: {"results": train.main(
            argparse.Namespace(**dict(settings, resume=resume)))}, f"fold {k} of {args.folds}")
        last = os.path.join(folder, "last.pt")
        # last.pt, not best.pt: best.pt was picked on this very fold, which would flatter its scores
        net = model_from_checkpoint(load_checkpoint(last), device, amp=args.amp)
        probs[held] = E.collect(net, Subset(train_set, held.tolist()), device, args.batch_size)["probs"]
        fold[held] = k
    return probs, fold


def confident_learning(probs, labels):
    """Label issues by confident learning (Northcutt et al., JAIR 2021) from out-of-sample
    probabilities [N, C]. Class c's threshold is the mean p(c) over the samples labelled c; a
    sample's confident class is its most likely class among those at or above their threshold,
    and the sample is a suspect when that class is another than its label.
    Returns (suspect [N] bool, confident class [N], -1 where no class clears its threshold)."""
    n, c = probs.shape
    count = torch.bincount(labels, minlength=c)
    total = torch.zeros(c).index_add_(0, labels, probs[torch.arange(n), labels].float())
    threshold = torch.where(count > 0, total / count.clamp_min(1), torch.inf)  # unseen class: never confident
    above = probs >= threshold
    confident = probs.masked_fill(~above, -1).argmax(1).masked_fill(~above.any(1), -1)
    return (confident >= 0) & (confident != labels), confident


# A reviewer that is often wrong flags its own mistakes as label errors: measured, a skill (accuracy's share
# of the way from the majority-class rate to 100%, comparable across class counts) of 0.40 gave a list 80%
# wrong and 0.71 one 57% right, so the floor sits between (RESULTS.md, "The label review's floor").
REVIEW_FLOOR = 0.6


def review_quality(probs, labels, fold=None):
    """How good the model(s) behind out-of-sample probabilities [N, C] are as reviewers of these N
    labels: accuracy against the given labels (and per fold, with `fold` [N] from out_of_fold_probs),
    the majority-class rate, skill = (accuracy - majority) / (1 - majority), the accuracy the floor
    asks for here, and whether the review is shown (skill >= REVIEW_FLOOR)."""
    right = probs.argmax(1) == labels
    majority = torch.bincount(labels).max().item() / len(labels)
    accuracy = right.sum().item() / len(labels)
    skill = (accuracy - majority) / (1 - majority) if majority < 1 else 0.0  # one class: nothing to review
    per_fold = None if fold is None else [right[fold == k].float().mean().item() for k in range(int(fold.max()) + 1)]
    return {"rows": len(labels), "accuracy": accuracy, "per_fold": per_fold, "majority": majority, "skill": skill,
            "floor": REVIEW_FLOOR, "floor_accuracy": majority + REVIEW_FLOOR * (1 - majority),
            "shown": skill >= REVIEW_FLOOR}


def review_summary(split, q):
    """One line on the review of `split` (q: review_quality plus `reviewer` and `flagged`): printed,
    stored in review.json and repeated in the report."""
    folds = f" (folds {', '.join(f'{a:.1%}' for a in q['per_fold'])})" if q["per_fold"] else ""
    measured = (f"{q['reviewer']}: accuracy {q['accuracy']:.1%} against the given labels{folds}, floor "
                f"{q['floor_accuracy']:.1%} (skill {q['skill']:.2f} over the majority class's {q['majority']:.1%}, "
                f"floor {q['floor']:.2f})")
    if q["shown"]:
        return f"{split} labels reviewed by {measured}; {q['flagged']} suspects"
    fix = "more --fold-epochs or a stronger --model" if q["per_fold"] else "a better-trained checkpoint"
    return (f"{split} label review withheld, below the floor: {measured}; it would flag {q['flagged']} of "
            f"{q['rows']}, mostly its own mistakes: rerun with {fix}")


def knn_agreement(features, labels, pool, k, device, chunk=512, quiet=False):
    """For every row, the share of its k nearest `pool` rows (cosine on `features`; a row is not
    its own neighbour) that carry its label. `pool`: sorted row numbers (the training rows)."""
    x = F.normalize(features.to(device), dim=1)
    pool_x, pool_y, k = x[pool.to(device)], labels[pool], min(k, len(pool) - 1)
    out = torch.empty(len(x))
    for a in cli.progress(range(0, len(x), chunk), f"{k}-NN label agreement", quiet):
        rows = torch.arange(a, min(a + chunk, len(x)))
        sim = (x[a:a + chunk] @ pool_x.T).cpu()
        at = torch.searchsorted(pool, rows).clamp(max=len(pool) - 1)
        own = pool[at] == rows
        sim[own.nonzero().flatten(), at[own]] = -math.inf
        out[rows] = (pool_y[sim.topk(k, dim=1).indices] == labels[rows, None]).float().mean(1)
    return out


def label_scores(probs, labels):
    """(loss, confidence, margin) per row of `probs` [N, C] against `labels` [N]: -log p(label),
    p(label), and p(label) minus the highest other probability (negative when another class leads)."""
    p_label = probs.gather(1, labels[:, None]).squeeze(1)
    return -p_label.clamp_min(1e-12).log(), p_label, p_label - probs.scatter(1, labels[:, None], -1.0).max(1).values


def duplicate_groups(pairs, n):
    """A group id per row [n] (LongTensor): rows joined by `pairs` [P, 2], directly or through a
    chain, share one, numbered 0.. in order of their first row; -1 for a row in no pair."""
    group, out, ids = D.connected_groups(n, pairs.tolist()), torch.full((n,), -1, dtype=torch.long), {}
    for i in sorted(set(pairs.flatten().tolist())):  # ascending rows: a group's id is set at its first (lowest) row
        out[i] = ids.setdefault(int(group[i]), len(ids))
    return out


def sample_table(model, splits, device, batch_size=256, outs=None, oof_probs=None, knn=10, pairs=None, quiet=False,
                 oof_fold=None):
    """Everything analyze.py knows per sample, one row per sample of `splits` (E.eval_splits),
    split by split in dataset order; `outs` ({split: E.collect(..., features=True)}) skips splits
    already predicted. A dict of aligned columns:
      split, path          numpy str arrays; index: position in the split (E.show_image(ax, splits[split], index))
      label, pred, probs   class ids and probabilities [N, C]; features: the checkpoint's [N, D]
      out_of_sample        probs come from a model that never trained on the row: val and test rows,
                           and train rows when `oof_probs` (out_of_fold_probs) replaces theirs
      loss, confidence     -log p(label), p(label); margin: p(label) - the highest other p
      suspect, suggested   confident learning on the out-of-sample train and val rows (suggested: -1 elsewhere),
                           where the split's reviewer clears REVIEW_FLOOR
      review               not a column: {split: review_quality of its reviewer, with `reviewer` and
                           `flagged`} for the reviewed splits (`oof_fold`: out_of_fold_probs' folds)
      knn_agreement        share of the `knn` nearest training samples (feature space) with the same label
      duplicate            in one of `pairs` (data.near_duplicates over data.pixel_vectors)
      dup_group            its near-duplicate group (duplicate_groups of `pairs`), -1 when in none
      flag                 "ok", or suspect / mistake / duplicate joined by "+"
    """
    outs = {name: (outs or {}).get(name) or E.collect(model, ds, device, batch_size, features=True)
            for name, ds in splits.items()}
    split = np.concatenate([[name] * len(ds) for name, ds in splits.items()])
    if oof_probs is not None:
        outs["train"] = dict(outs["train"], probs=oof_probs)
    probs = torch.cat([o["probs"] for o in outs.values()])
    t = {"split": split, "path": np.array([ds.path(i) for ds in splits.values() for i in range(len(ds))]),
         "index": torch.cat([torch.arange(len(ds)) for ds in splits.values()]),
         "label": torch.cat([o["labels"] for o in outs.values()]), "probs": probs, "pred": probs.argmax(1),
         "features": torch.cat([o["features"] for o in outs.values()]),
         "out_of_sample": torch.from_numpy(split != "train") | (oof_probs is not None)}
    t["loss"], t["confidence"], t["margin"] = label_scores(probs, t["label"])
    t["suspect"], t["suggested"] = torch.zeros(len(split), dtype=torch.bool), torch.full((len(split),), -1)
    # thresholds per split, as each split's probabilities come from one kind of model (fold runs or
    # the checkpoint). Test is not reviewed: it stays the untouched yardstick, and its MNIST ids (#i)
    # would name training samples in a --sample-weights file.
    # A weak reviewer's suspects are withheld (the warning says so), never shown as a finding.
    t["review"] = {}
    for name in ("train", "val"):
        rows = torch.from_numpy(split == name) & t["out_of_sample"]
        if rows.any():
            folds = oof_fold if name == "train" and oof_probs is not None else None
            q = t["review"][name] = review_quality(probs[rows], t["label"][rows], folds)
            suspect, suggested = confident_learning(probs[rows], t["label"][rows])
            q.update(reviewer=f"{int(folds.max()) + 1} fold models (out of fold)" if folds is not None
                     else "the checkpoint", flagged=int(suspect.sum()))
            if q["shown"]:
                t["suspect"][rows], t["suggested"][rows] = suspect, suggested
    t["suggested"][~t["suspect"]] = -1
    t["knn_agreement"] = knn_agreement(t["features"], t["label"], torch.from_numpy(np.flatnonzero(split == "train")),
                                       knn, device, quiet=quiet)
    t["duplicate"] = torch.zeros(len(split), dtype=torch.bool)
    if pairs is not None:
        t["duplicate"][pairs.flatten()] = True
    t["dup_group"] = duplicate_groups(pairs if pairs is not None else torch.empty(0, 2, dtype=torch.long), len(split))
    marks = [("suspect", t["suspect"].tolist()), ("mistake", (t["pred"] != t["label"]).tolist()),
             ("duplicate", t["duplicate"].tolist())]
    t["flag"] = np.array(["+".join(name for name, m in marks if m[r]) or "ok" for r in range(len(split))])
    return t


def ranked_suspects(table):
    """Row numbers of the suspects, most likely label error first (lowest margin: the given label
    trails another class by the most)."""
    rows = table["suspect"].nonzero().flatten()
    return rows[table["margin"][rows].argsort(stable=True)]


def _safe(name):
    """A class name usable as a file or folder name."""
    return re.sub(r"[^\w.-]+", "_", str(name)).strip(".") or "_"


def write_quality(table, pairs, sims, classes, out_dir):
    """samples.csv, suspects.csv, duplicates.csv and review.json (how good each split's reviewer is)."""
    name = lambda c: classes[c] if c >= 0 else ""  # noqa: E731
    cols = {k: v.tolist() for k, v in table.items() if k not in ("probs", "features", "review")}
    with cli.atomic_write(os.path.join(out_dir, "samples.csv")) as f:
        w = csv.writer(f)
        w.writerow(["split", "index", "path", "label", "prediction", "loss", "confidence", "margin",
                     "knn_agreement", "out_of_sample", "suggested", "dup_group", "flag"])
        for r in range(len(cols["split"])):
            w.writerow([cols["split"][r], cols["index"][r], cols["path"][r], name(cols["label"][r]),
                        name(cols["pred"][r]), f"{cols['loss'][r]:.4f}", f"{cols['confidence'][r]:.4f}",
                        f"{cols['margin'][r]:.4f}", f"{cols['knn_agreement'][r]:.2f}",
                        int(cols["out_of_sample"][r]), name(cols["suggested"][r]), cols["dup_group"][r], cols["flag"][r]])
    # path,weight first: read_sample_weights takes this file as it is, other columns ignored
    # (the weights act on training samples; a val suspect needs its label fixed instead)
    with cli.atomic_write(os.path.join(out_dir, "suspects.csv")) as f:
        w = csv.writer(f)
        w.writerow(["path", "weight", "split", "label", "suggested", "confidence", "margin"])
        for r in ranked_suspects(table).tolist():
            w.writerow([cols["path"][r], 1, cols["split"][r], name(cols["label"][r]), name(cols["suggested"][r]),
                        f"{cols['confidence'][r]:.4f}", f"{cols['margin'][r]:.4f}"])
    cli.write_json(os.path.join(out_dir, "review.json"),
                   {split: dict(q, summary=review_summary(split, q)) for split, q in table["review"].items()})
    with cli.atomic_write(os.path.join(out_dir, "duplicates.csv")) as f:
        w = csv.writer(f)
        w.writerow(["similarity", "cross_split", "split_a", "path_a", "label_a", "split_b", "path_b", "label_b"])
        for (a, b), s in zip(pairs.tolist(), sims.tolist()):
            w.writerow([f"{s:.4f}", int(cols["split"][a] != cols["split"][b])]
                       + [x for r in (a, b) for x in (cols["split"][r], cols["path"][r], name(cols["label"][r]))])


def plot_suspects(table, splits, classes, path, n=24, cols=6):
    """The top `n` suspects: image, given -> suggested label, confidence in the given label."""
    plt = _plt()
    ranked = ranked_suspects(table)
    show = ranked[:n].tolist()
    rows = max(1, math.ceil(len(show) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, show):
        ax.axis("on")
        E.show_image(ax, splits[table["split"][r]], int(table["index"][r]))
        ax.set_title(f"{classes[table['label'][r]]} -> {classes[table['suggested'][r]]}\n"
                     f"{table['split'][r]}, conf {table['confidence'][r]:.2f}", fontsize=8)
    withheld = [f"{split} withheld: its reviewer's accuracy {q['accuracy']:.1%} is below the floor "
                f"{q['floor_accuracy']:.1%} (review.json)" for split, q in table["review"].items() if not q["shown"]]
    fig.suptitle("\n".join([f"top {len(show)} of {len(ranked)} suspected label errors: given -> suggested label, "
                            f"confidence in the given one" if show else "no suspected label errors"] + withheld),
                 fontsize=9, color="red" if withheld else "black")
    fig.tight_layout()
    cli.save_figure(fig, path, dpi=90)


MISTAKES_MANIFEST = ".analyze-files"  # the files save_mistakes wrote: the only ones it may remove


def save_mistakes(table, splits, classes, folder, limit=None, min_side=112):
    """Every misclassified val / test image (at most `limit` per split, the most confident) as
    <folder>/<true class>/<split>_<index>_pred-<p>_<conf>.png, enlarged to `min_side` px and titled
    with the true class, the prediction and its confidence. Returns how many were saved."""
    # a previous run's mistakes would mix with these: remove the files it listed in its manifest,
    # never anything else (a user's own files in the folder stay)
    manifest = os.path.join(folder, MISTAKES_MANIFEST)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8", errors="surrogateescape") as f:
            old = [rel for rel in f.read().splitlines() if rel and ".." not in rel.split("/") and not os.path.isabs(rel)]
        for rel in old:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, rel))
        for d in sorted({rel.split("/")[0] for rel in old if "/" in rel}):
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(folder, d))  # only when empty
    written = []
    wrong = np.flatnonzero((table["pred"] != table["label"]).numpy())
    conf, rows = table["probs"].max(1).values.numpy(), []
    for split in ("val", "test"):
        r = wrong[table["split"][wrong] == split]
        rows.append(r[np.argsort(-conf[r], kind="stable")[:limit]])
    for r in np.concatenate(rows).tolist():
        split, i, p = table["split"][r], int(table["index"][r]), float(conf[r])
        true, pred = classes[table["label"][r]], classes[table["pred"][r]]
        img = D.raw_image(splits[split], i)
        img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).convert("RGB")
        scale = max(1, math.ceil(min_side / min(img.size)))
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        page = Image.new("RGB", (max(img.width, 120), img.height + 30), "white")
        page.paste(img, ((page.width - img.width) // 2, 30))
        ImageDraw.Draw(page).text((4, 2), f"true {true}  pred {pred}\nconfidence {p:.2f}", fill="black")
        os.makedirs(os.path.join(folder, _safe(true)), exist_ok=True)
        rel = f"{_safe(true)}/{split}_{i}_pred-{_safe(pred)}_{p:.2f}.png"
        with cli.atomic_write(os.path.join(folder, rel), "wb") as f:
            page.save(f, "PNG")
        written.append(rel)
    os.makedirs(folder, exist_ok=True)
    with cli.atomic_write(manifest) as f:
        f.write("".join(rel + "\n" for rel in written))
    return sum(map(len, rows))


def print_quality(table, pairs, sims, classes, knn, n=10):
    """The data-quality summary: counts per split, the top suspects and duplicate pairs."""
    split = table["split"]
    per_split = lambda m: ", ".join(f"{s} {int((m & (split == s)).sum())}" for s in dict.fromkeys(split))  # noqa: E731
    reviewed = table["out_of_sample"].numpy() & (split != "test")
    print(f"data quality: {len(split)} samples ({per_split(np.ones(len(split), bool))}); labels reviewed "
          f"(out-of-sample probabilities): {per_split(reviewed)}")
    withheld = {s for s, q in table["review"].items() if not q["shown"]}
    suspects = ", ".join(f"{s} withheld" if s in withheld else f"{s} {int((table['suspect'][split == s]).sum())}"
                         for s in dict.fromkeys(split))
    print(f"  mistakes: {per_split((table['pred'] != table['label']).numpy())} | suspected label errors: "
          f"{suspects} | mean {knn}-NN label agreement: "
          + ", ".join(f"{s} {table['knn_agreement'][split == s].mean():.3f}" for s in dict.fromkeys(split)))
    for name, q in table["review"].items():  # how good the reviewer is, next to its review
        if q["shown"]:
            print(f"  {review_summary(name, q)}")
        else:
            cli.warn(review_summary(name, q))
    for r in ranked_suspects(table)[:n].tolist():
        print(f"  suspect {table['path'][r]} ({split[r]}): labelled {classes[table['label'][r]]}, "
              f"looks like {classes[table['suggested'][r]]} (confidence {table['confidence'][r]:.2f})")
    cross = int(sum(split[a] != split[b] for a, b in pairs.tolist()))
    print(f"  near-duplicate pairs: {len(pairs)}, {cross} across splits (leakage)")
    for (a, b), s in zip(pairs[:n].tolist(), sims[:n].tolist()):
        print(f"  duplicate {table['path'][a]} ({split[a]}) ~ {table['path'][b]} ({split[b]}): {s:.3f}")


# ----------------------------------------------------------------------------- dashboard.html and the report

def balanced_sample(keys, n, seed=0):
    """Sorted indices of at most n items spread evenly over the distinct (non-negative int) `keys`:
    every key gets the same share, a small one all its items; random within a key."""
    keys = torch.as_tensor(keys)
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed))
    grouped = order[torch.sort(keys[order], stable=True).indices]  # by key, random within a key
    counts = torch.bincount(keys[grouped])
    rank = torch.arange(len(keys)) - (counts.cumsum(0) - counts)[keys[grouped]]  # place within its key
    return grouped[torch.sort(rank, stable=True).indices[:n]].sort().values  # round robin over keys


def dashboard_points(model, data, device, max_points=2000, seed=0, batch_size=256, tta=1, temperature=1.0, quiet=False,
                     outs=None, unlabeled=None):
    """What write_dashboard draws: at most `max_points` images, balanced over (split, source) x
    class, with the model's penultimate features, predictions, probabilities and confidences (eval
    transforms; the predictions as evaluate.py makes them, with `tta` views and the checkpoint's
    temperature) and `index`, each image's position in its split. `outs` ({split: E.collect output},
    made that way): the real images' predictions taken from it, not made again. `unlabeled`
    (score_unlabeled): at most `max_points` of its photos as well, source 2, label -1."""
    groups = [(split, 0, ds) for split, ds in E.eval_splits(data).items()]
    if isinstance(data.train, ConcatDataset):  # the synthetic part of training
        groups.insert(1, ("train", 1, data.train.datasets[1].with_transform(data.val.transform)))
    k = len(data.classes)
    pick = balanced_sample(torch.cat([g * k + ds.targets for g, (_, _, ds) in enumerate(groups)]), max_points, seed)
    pts = {"features": [], "labels": [], "preds": [], "probs": [], "conf": [], "split": [], "source": [], "index": [],
           "images": [], "names": [], "paths": [], "cams": []}
    start, bar = 0, cli.progress(None, "dashboard images", quiet, total=len(pick), unit="img")
    for split, source, ds in groups:
        idx = (pick[(pick >= start) & (pick < start + len(ds))] - start).tolist()
        start += len(ds)
        if not idx:
            continue
        if outs and source == 0:  # predicted already, with the same views and temperature
            out = {k: outs[split][k][idx] for k in ("features", "labels", "preds", "probs")}
        else:
            out = E.collect(model, Subset(ds, idx), device, batch_size, features=True, tta=tta, temperature=temperature)
        pts["features"].append(out["features"])
        pts["labels"].append(out["labels"])
        pts["preds"].append(out["preds"])
        pts["probs"].append(out["probs"])
        pts["conf"].append(out["probs"].max(1).values)
        pts["split"] += [split] * len(idx)
        pts["source"] += [source] * len(idx)
        pts["index"] += idx
        images = [D.raw_image(ds, i) for i in idx]
        pts["images"] += images
        cams = dataset_cams(model, ds, idx, out["preds"], device)  # of the predictions shown
        pts["cams"] += [cam_overlay(im, cam) for im, cam in zip(images, cams)]
        pts["names"] += [os.path.basename(ds.path(i)) for i in idx]
        # what a corrections row names (absolute, or MNIST's #i); none for test or synthetic images,
        # which a row would add to training or not find
        correctable = split != "test" and source == 0
        pts["paths"] += [C.row_path(ds.path(i)) if correctable else "" for i in idx]
        bar.update(len(idx))
    bar.close()
    if unlabeled:  # a random share where there are more than max_points: the map shows their spread
        u, n = unlabeled, len(unlabeled["paths"])
        idx = sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points].tolist())
        pts["features"].append(u["out"]["features"][idx])
        pts["labels"].append(torch.full((len(idx),), -1))
        pts["preds"].append(u["out"]["preds"][idx])
        pts["probs"].append(u["out"]["probs"][idx])
        pts["conf"].append(u["out"]["probs"][idx].max(1).values)
        pts["split"] += ["unlabelled"] * len(idx)
        pts["source"] += [2] * len(idx)
        pts["index"] += idx
        images = [D.raw_image(u["dataset"], i) for i in idx]
        pts["images"] += images
        cams = dataset_cams(model, u["dataset"], idx, u["out"]["preds"][idx], device)
        pts["cams"] += [cam_overlay(im, cam) for im, cam in zip(images, cams)]
        pts["names"] += [os.path.basename(u["paths"][i]) for i in idx]
        # a corrections row with a label adds the photo to a photo folder's training; MNIST takes none
        addable = data.config.get("dataset") != "mnist"
        pts["paths"] += [os.path.abspath(u["paths"][i]) if addable else "" for i in idx]
    for key in ("features", "labels", "preds", "probs", "conf"):
        pts[key] = torch.cat(pts[key])
    return pts


def dashboard_note(points, max_points, unlabeled=None):
    """The page's first line: what it holds, counted per split and source (a small split is not
    topped up, so "balanced" alone would overstate it), and the unlabelled photos shown."""
    counts = {}
    for split, source in zip(points["split"], points["source"]):
        if source < 2:  # (2: an unlabelled photo, counted below)
            counts.setdefault(split, [0, 0])[source] += 1
    held = ", ".join(f"{real + syn:,} {split}" + (f" ({real:,} real, {syn:,} synthetic)" if syn else "")
                     for split, (real, syn) in counts.items())
    synthetic = sum(syn for _, syn in counts.values())
    n_unl = list(points["source"]).count(2)
    return (f"Penultimate features of {len(points['split']) - n_unl:,} images: {held}; drawn in turn from each split x "
            f"source x class, so a small one gives all it has (at most {max_points:,}; analyze.py "
            f"--dashboard-points). " + ("The synthetic ones are hidden until \"show synthetic\" is ticked. " if synthetic else "")
            + (f"Also {n_unl:,} of the {len(unlabeled['paths']):,} unlabelled photos of {unlabeled['folder']} "
               f"(squares; at most {max_points:,}). " if unlabeled else "")
            + "Hover a point for its image and its Grad-CAM heat map; select points to relabel or exclude them "
              "and download a --corrections file.")


def page_signals(points, table, unlabeled=None):
    """The per-image signals dashboard.html colours, filters and sorts by, one list per key, aligned
    with `points` (dashboard_points), None where an image has none. Real images: `table`'s
    (sample_table, samples.csv's numbers: with --folds the train rows' loss, p(label) and margin
    are out of fold), suspect 1 / 0 where its split's review is shown, -2 where withheld, -1 where
    not reviewed; synthetic ones: loss, p(label) and margin of the page's own probabilities (they
    are not in the table); unlabelled ones (`unlabeled`, score_unlabeled): the prediction's margin
    and their flag (unlabeled.csv's). Also `review`: a line per split on its label review."""
    n, sig = len(points["labels"]), {}
    for key in ("loss", "p_label", "margin", "knn", "suspect", "suggested", "dup_group", "dup_size", "flag"):
        sig[key] = [None] * n
    start = {s: int(np.flatnonzero(table["split"] == s)[0]) for s in dict.fromkeys(table["split"].tolist())}
    sizes = torch.bincount(table["dup_group"][table["dup_group"] >= 0], minlength=1)
    own = label_scores(points["probs"], points["labels"].clamp_min(0))  # used for the synthetic rows only
    r3 = lambda x: round(float(x), 3)  # noqa: E731
    for i, (split, source, k) in enumerate(zip(points["split"], points["source"], points["index"])):
        if source == 0:
            r = start[split] + int(k)
            q = table["review"].get(split)
            sig["loss"][i], sig["p_label"][i], sig["margin"][i], sig["knn"][i] = (
                r3(table[c][r]) for c in ("loss", "confidence", "margin", "knn_agreement"))
            sig["suspect"][i] = -1 if q is None else -2 if not q["shown"] else int(table["suspect"][r])
            sig["suggested"][i] = int(table["suggested"][r])
            g = int(table["dup_group"][r])
            sig["dup_group"][i], sig["dup_size"][i] = g, int(sizes[g]) if g >= 0 else 0
        elif source == 1:
            sig["loss"][i], sig["p_label"][i], sig["margin"][i] = (r3(x[i]) for x in own)
            sig["suspect"][i] = -1
        else:
            sig["margin"][i] = r3(unlabeled["scores"]["margin"][k])
            sig["suspect"][i], sig["flag"][i] = -1, unlabeled["flags"][k]
    review = []
    for split in dict.fromkeys(points["split"]):
        q = table["review"].get(split)
        text = (review_summary(split, q) if q else
                "train labels not reviewed: analyze.py --folds K reviews them out of fold" if split == "train" else
                "test labels are not reviewed: the test split stays the untouched yardstick" if split == "test" else
                "unlabelled photos: nothing to review" if split == "unlabelled" else f"{split}: not reviewed")
        review.append({"split": split, "shown": bool(q and q["shown"]), "withheld": bool(q and not q["shown"]),
                       "text": text})
    if 1 in points["source"]:
        review.append({"split": "synthetic", "shown": False, "withheld": False,
                       "text": "synthetic composites: labels made with the image, not reviewed"})
    sig["review"] = review
    return sig


def pca_2d(features, seed=0):
    from sklearn.decomposition import PCA
    return PCA(2, random_state=seed).fit_transform(features.float().numpy())


def write_pages(model, ckpt, data, checkpoint, out_dir, device, max_points=2000, seed=0, batch_size=256, outs=None,
                tta=1, quiet=False, table=None, unlabeled=None):
    """The last step: evaluate.py's metrics.json / confusion.png / mistakes.png (reusing `outs`,
    {split: collect() output}), dashboard.html, report.md and report.html; the dashboard's
    predictions made as `outs` were (`tta` views, the checkpoint's temperature), its signals
    `table`'s (sample_table; page_signals), `unlabeled` (score_unlabeled) on its map too."""
    E.evaluate_run(model, data, device, out_dir, batch_size=batch_size, outs=outs,
                   settings=E.eval_settings([checkpoint], [ckpt], data, tta))
    points = dashboard_points(model, data, device, max_points, seed, batch_size, tta, ckpt["temperature"], quiet,
                              outs=outs, unlabeled=unlabeled)
    if table is not None:
        points.update(page_signals(points, table, unlabeled))
    maps = {"tsne": tsne_2d(points["features"], seed, quiet), "pca": pca_2d(points["features"], seed)}
    title = f"{os.path.basename(os.path.dirname(os.path.abspath(checkpoint)))}: {ckpt['model']}, {os.path.basename(checkpoint)}"
    note = dashboard_note(points, max_points, unlabeled)
    report.write_dashboard(os.path.join(out_dir, "dashboard.html"), points, maps, data.classes, title, note)
    report.write_report(out_dir, checkpoint)
    print(f"wrote metrics.json, confusion.png, mistakes.png, dashboard.html, report.md, report.html to {out_dir}")


# ----------------------------------------------------------------------------- --unlabeled: what to label next

def unlabeled_files(args, ckpt):
    """The image files of --unlabeled DIR, after its checks (one line each; before any long work)."""
    U.check_folder(args.unlabeled, args.data_dir or ckpt["data"].get("data_dir"))
    return list_images(args.unlabeled)  # one line when it holds no image files


@torch.no_grad()
def rank_unlabeled(args, device):
    """--unlabeled DIR --unlabeled-only: every photo of DIR scored (unlabeled.py says how) ->
    unlabeled.csv, unlabeled.json."""
    ckpt = load_checkpoint(args.checkpoint)
    found = unlabeled_files(args, ckpt)
    out_dir = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out_dir, exist_ok=True)
    model = model_from_checkpoint(ckpt, device, amp=args.amp)
    data = E.run_data(ckpt, args.data_dir, args.mnist_root, checkpoint=args.checkpoint)
    train_set = E.eval_splits(data, "train")["train"]
    pool = E.collect(model, train_set, device, args.batch_size, features=True, desc="features of train",
                     quiet=args.quiet)
    return score_unlabeled(args, ckpt, model, data, found, pool["features"], out_dir, device)["rank"]


@torch.no_grad()
def score_unlabeled(args, ckpt, model, data, found, train_features, out_dir, device):
    """The photos `found` (unlabeled_files) scored against the training photos' `train_features`
    -> unlabeled.csv, unlabeled.json. Returns what the dashboard draws of them: {dataset, paths,
    out (E.collect, features too), scores (U.scores), flags, rank, folder}."""
    ds, kept = E.folder_dataset(ckpt, found, args.unlabeled)
    warn_unreadable([p for i, p in enumerate(found) if i not in set(kept)])
    paths, t = [found[i] for i in kept], ckpt["temperature"]
    train_set = E.eval_splits(data, "train")["train"]
    out = E.collect(model, ds, device, args.batch_size, features=True, tta=args.tta, temperature=t,
                    desc="scoring --unlabeled", quiet=args.quiet)
    s = U.scores(out["probs"], out["features"], train_features)
    labelled = torch.cat([d.images[d.indices] for d in (train_set, data.val)])
    copies = D.same_pixels(labelled, ds.images)  # the same photo under another name: labelled already
    if copies:
        cli.warn(f"{len(copies)} of the {len(paths)} photos in {args.unlabeled} have the pixels of a labelled photo "
                 f"(e.g. {os.path.basename(paths[copies[0]])}): flagged in unlabeled.csv")
    below = E.below_threshold(out["probs"], args.reject_below)
    settings = {"checkpoint": os.path.abspath(args.checkpoint), "folder": os.path.abspath(args.unlabeled),
                "n_unreadable": len(found) - len(paths), "tta": args.tta, "temperature": t,
                "reject_below": args.reject_below, "n_below_threshold": int(below.sum()), "n_copies": len(copies)}
    classes = ckpt["classes"]
    row_flags = U.flags(below.tolist(), copies)
    rank = U.write(out_dir, paths, [classes[c] for c in out["preds"]], s, row_flags, settings)
    print(f"scored {cli.plural(len(paths), 'photo')} of {args.unlabeled}; label first: "
          + ", ".join(os.path.basename(paths[i]) for i in rank[:5]))
    if args.reject_below is not None:
        print(f"{int(below.sum())} of {len(paths)} below --reject-below {args.reject_below} (flagged)")
    print(f"wrote unlabeled.csv, unlabeled.json to {out_dir} (fill in its label column, then: "
          f"train.py ... --corrections {os.path.join(out_dir, 'unlabeled.csv')})")
    return {"dataset": ds, "paths": paths, "out": out, "scores": s, "flags": row_flags, "rank": rank,
            "folder": args.unlabeled}


def main(args):
    check_args(args)
    device = get_device(args.device)
    if args.unlabeled_only:
        return rank_unlabeled(args, device)
    model, ckpt, data = E.load_run(args.checkpoint, device, args.data_dir, args.mnist_root, amp=args.amp,
                                   synthetic=True)
    found = unlabeled_files(args, ckpt) if args.unlabeled else None
    print(E.found_line(data))
    out_dir = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)

    plot_kernels(model, os.path.join(out_dir, "kernels.png"))

    splits = E.eval_splits(data)
    held = "test" if "test" in splits else "val"
    # every split predicted once: the figures, the sample table and the pages all reuse it
    outs = {name: E.collect(model, ds, device, args.batch_size, features=True, tta=args.tta,
                            temperature=ckpt["temperature"], desc=f"predicting {name}", quiet=args.quiet)
            for name, ds in splits.items()}
    held_out, train_out = outs[held], outs["train"]
    pick = torch.randperm(len(splits[held]), generator=g)[:args.tsne_samples]
    xy = tsne_2d(held_out["features"][pick], args.seed, args.quiet)
    plot_tsne(xy, held_out["labels"][pick].numpy(), held_out["preds"][pick].numpy(), data.classes,
              os.path.join(out_dir, "tsne.png"), f"t-SNE of penultimate features, {len(pick)} {held} images")

    queries = torch.randperm(len(splits[held]), generator=g)[:max(4, args.queries)]
    nn_idx = nearest(held_out["features"][queries], train_out["features"], args.neighbors)
    plot_neighbors(splits[held], queries.tolist(), held_out["labels"][queries].tolist(), splits["train"],
                   nn_idx, train_out["labels"].tolist(), data.classes, os.path.join(out_dir, "neighbors.png"))
    plot_gradcam(model, splits[held], held_out, data.classes, device, os.path.join(out_dir, "gradcam.png"),
                 seed=args.seed, title=f"{held} split")
    print(f"wrote kernels.png, tsne.png, neighbors.png, gradcam.png to {out_dir}")

    oof, fold = out_of_fold_probs(args, ckpt, data, splits["train"], out_dir, device) if args.folds else (None, None)
    pairs, sims = D.near_duplicates(torch.cat([D.pixel_vectors(ds.images, ds.indices) for ds in splits.values()]),
                                     args.duplicate_threshold, device)
    table = sample_table(model, splits, device, args.batch_size, outs, oof, args.knn, pairs, args.quiet, fold)
    write_quality(table, pairs, sims, data.classes, out_dir)
    plot_suspects(table, splits, data.classes, os.path.join(out_dir, "suspects.png"))
    n_wrong = save_mistakes(table, splits, data.classes, os.path.join(out_dir, "mistakes"), args.max_mistakes)
    print_quality(table, pairs, sims, data.classes, args.knn)
    print(f"wrote samples.csv, suspects.csv, suspects.png, duplicates.csv, review.json, mistakes/ ({n_wrong} images) "
          f"to {out_dir}")

    # the training photos' features predicted above are the pool unlabeled.csv's distances are to
    unl = (score_unlabeled(args, ckpt, model, data, found, train_out["features"], out_dir, device)
           if args.unlabeled else None)
    write_pages(model, ckpt, data, args.checkpoint, out_dir, device, args.dashboard_points, args.seed, args.batch_size,
                outs=outs, tta=args.tta, quiet=args.quiet, table=table, unlabeled=unl)


if __name__ == "__main__":
    cli.run_main(main, get_args_parser().parse_args)
