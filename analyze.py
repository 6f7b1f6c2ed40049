"""Explain what a trained network learned.

    python analyze.py checkpoints/best.pt

Writes next to the checkpoint (or into --out):
  kernels.png    every first-layer kernel (and the second layer's, when the first has < 9)
  tsne.png       penultimate features of the test set (val where there is none) in 2-D
  neighbors.png  query images, each followed by its 8 nearest training images in feature space
Predictions and features come from evaluate.py, so both scripts see the same data and model.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import data as D
import evaluate as E
from model import CheckpointError, first_conv, get_device


def get_args_parser():
    p = argparse.ArgumentParser(description="Kernels, t-SNE and nearest neighbours of a checkpoint.")
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    p.add_argument("--data-dir", default=None, help="the photo folder, if it moved since training")
    p.add_argument("--mnist-root", default=None, help="the MNIST root, if it moved since training")
    p.add_argument("--tsne-samples", type=int, default=2000, help="points in the t-SNE map (random subset)")
    p.add_argument("--queries", type=int, default=6, help="query images in neighbors.png (>= 4)")
    p.add_argument("--neighbors", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=None)
    return p


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def kernel_images(weight):
    """Conv weights [out, in, k, k] -> a list of displayable [k, k(, 3)] arrays in [0, 1]:
    RGB kernels as colour images, others one grey image per (out, in) pair."""
    w = weight.detach().float().cpu()
    if w.shape[1] == 3:
        tiles = [k.permute(1, 2, 0) for k in w]
    else:
        tiles = [k for k in w.flatten(0, 1)]
    out = []
    for t in tiles:  # each kernel scaled on its own, so weak kernels stay visible
        t = (t - t.min()) / (t.max() - t.min()).clamp_min(1e-12)
        out.append(t.numpy())
    return out


def plot_kernels(model, path):
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    layers = [("first layer", first_conv(model))]
    if len(kernel_images(convs[0].weight)) < 9 and len(convs) > 1:
        layers.append(("second layer", convs[1]))
    plt = _plt()
    fig = plt.figure(figsize=(10, 5 * len(layers)))
    subfigs = fig.subfigures(len(layers), 1) if len(layers) > 1 else [fig]
    for sf, (title, conv) in zip(subfigs, layers):
        tiles = kernel_images(conv.weight)
        cols = int(np.ceil(np.sqrt(len(tiles))))
        rows = int(np.ceil(len(tiles) / cols))
        axes = np.atleast_1d(sf.subplots(rows, cols)).flatten()
        for ax in axes:
            ax.axis("off")
        for ax, t in zip(axes, tiles):
            ax.imshow(t, cmap="gray" if t.ndim == 2 else None, interpolation="nearest")
        sf.suptitle(f"{title}: {tuple(conv.weight.shape)} ({len(tiles)} kernels)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def tsne_2d(features, seed=0):
    """2-D t-SNE of `features` (PCA to 50 dims first, as usual, for speed and noise)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    x = features.numpy().astype(np.float32)
    if x.shape[1] > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    return TSNE(2, init="pca", random_state=seed, perplexity=min(30, len(x) - 1)).fit_transform(x)


def plot_tsne(xy, labels, classes, path, title):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 8))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c in range(len(classes)):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(c % cmap.N), label=classes[c], alpha=0.8)
    ax.legend(markerscale=3, fontsize=8, loc="best", ncol=1 + len(classes) // 12)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def nearest(query_feats, pool_feats, k):
    """Indices [Q, k] of the k nearest pool samples by cosine similarity."""
    sim = F.normalize(query_feats, dim=1) @ F.normalize(pool_feats, dim=1).T
    return sim.topk(k, dim=1).indices


def plot_neighbors(query_ds, query_idx, query_labels, pool_ds, nn_idx, pool_labels, classes, path):
    plt = _plt()
    q, k = nn_idx.shape
    fig, axes = plt.subplots(q, k + 1, figsize=(1.4 * (k + 1), 1.6 * q))
    axes = np.atleast_2d(axes)
    for r in range(q):
        E.show_image(axes[r, 0], query_ds, query_idx[r])
        axes[r, 0].set_title(f"query: {classes[query_labels[r]]}", fontsize=8, color="blue")
        for c in range(k):
            j = int(nn_idx[r, c])
            E.show_image(axes[r, c + 1], pool_ds, j)
            same = pool_labels[j] == query_labels[r]
            axes[r, c + 1].set_title(classes[pool_labels[j]], fontsize=8, color="black" if same else "red")
    fig.suptitle("nearest training images in feature space (red: other class)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(args):
    device = get_device(args.device)
    model, ckpt, data = E.load_run(args.checkpoint, device, args.data_dir, args.mnist_root)
    out_dir = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)

    plot_kernels(model, os.path.join(out_dir, "kernels.png"))

    splits = E.eval_splits(data)
    held = "test" if "test" in splits else "val"
    held_out = E.collect(model, splits[held], device, args.batch_size, features=True)
    pick = torch.randperm(len(splits[held]), generator=g)[:args.tsne_samples]
    xy = tsne_2d(held_out["features"][pick], args.seed)
    plot_tsne(xy, held_out["labels"][pick].numpy(), data.classes, os.path.join(out_dir, "tsne.png"),
              f"t-SNE of penultimate features, {len(pick)} {held} images")

    train_out = E.collect(model, splits["train"], device, args.batch_size, features=True)
    queries = torch.randperm(len(splits[held]), generator=g)[:max(4, args.queries)]
    nn_idx = nearest(held_out["features"][queries], train_out["features"], args.neighbors)
    plot_neighbors(splits[held], queries.tolist(), held_out["labels"][queries].tolist(), splits["train"],
                   nn_idx, train_out["labels"].tolist(), data.classes, os.path.join(out_dir, "neighbors.png"))
    print(f"wrote kernels.png, tsne.png, neighbors.png to {out_dir}")


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except (D.DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
