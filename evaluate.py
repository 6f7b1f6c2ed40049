"""Evaluate a checkpoint: metrics, confusion matrix, mistakes; or classify a folder of images.

    python evaluate.py checkpoints/best.pt                   # train / val / test
    python evaluate.py checkpoints/best.pt --images photos/  # -> predictions.csv

Needs nothing but the checkpoint: the data config inside it rebuilds the same split
(`--data-dir` / `--mnist-root` point at the data where it moved).
"""
import argparse
import csv
import os

import numpy as np
import torch

import data as D
from model import (AMP_CHOICES, CheckpointError, get_device, load_checkpoint, metrics, model_from_checkpoint, predict,
                   summary_line)

SPLITS = ("train", "val", "test")


def get_args_parser():
    p = argparse.ArgumentParser(description="Evaluate a checkpoint.")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="all", choices=SPLITS + ("all",))
    p.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    p.add_argument("--images", default=None, help="classify every image in this folder -> predictions.csv")
    p.add_argument("--data-dir", default=None, help="the photo folder, if it moved since training")
    p.add_argument("--mnist-root", default=None, help="the MNIST root, if it moved since training")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=None)
    p.add_argument("--amp", default=None, choices=AMP_CHOICES,
                   help="autocast precision (default: the checkpoint's, what training evaluated with)")
    return p


# ----------------------------------------------------------------------------- shared with analyze.py

def load_run(path, device, data_dir=None, mnist_root=None, with_data=True, amp=None):
    """(model, checkpoint, Data) from a checkpoint; the datasets use the eval transforms. The model
    predicts under `amp` (an --amp choice), by default the checkpoint's (see model_from_checkpoint)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, device, amp=amp)
    if not with_data:
        return model, ckpt, None
    cfg = dict(ckpt["data"])
    if data_dir:
        cfg["data_dir"] = os.path.abspath(data_dir)
    if mnist_root:
        cfg["mnist_root"] = os.path.abspath(mnist_root)
    cfg["download"] = False
    data = D.build_datasets(dict(cfg, split_hash=None), augment="none")  # the split is checked below
    if match_classes(data, ckpt["classes"], cfg.get("data_dir") or cfg.get("mnist_root")) and \
            cfg.get("split_hash") and cfg["split_hash"] != data.config["split_hash"]:
        D.warn(f"the data differ from those the checkpoint was trained on ({data.config['num_samples']} samples "
               f"now, {cfg.get('num_samples')} then): train/val are not the same split")
    return model, ckpt, data


def match_classes(data, trained, where):
    """The data's classes against the checkpoint's, by name: a class added or renamed since training
    would be scored as another (0% and every image a "label error"), so it is refused with one line
    that names the differences. Classes removed since (a subset) map by name, with a warning.
    Returns whether the classes are the same (else the warning already says the data changed)."""
    if data.classes == list(trained):
        return True
    added = [c for c in data.classes if c not in trained]
    removed = [c for c in trained if c not in data.classes]
    if added:
        raise D.DataError(f"the classes in {where} differ from the checkpoint's: not in the checkpoint: "
                          f"{', '.join(added)}; not in the data: {', '.join(removed) or 'none'} "
                          f"(renamed or added after training?); refused")
    if removed:
        D.warn(f"{where} has no images of the checkpoint's class(es) {', '.join(removed)} (so not the split it "
               f"was trained on): the other classes are scored by name")
    index = torch.tensor([list(trained).index(c) for c in data.classes])
    for ds in {id(d): d for d in (D.real_part(data.train), data.val, data.test) if d is not None}.values():
        ds.labels = index[ds.labels]
    data.classes = list(trained)
    return not removed


def eval_splits(data, which="all"):
    """{split name: dataset} with eval transforms; train = the real training images."""
    sets = {"train": D.real_part(data.train).with_transform(data.val.transform), "val": data.val, "test": data.test}
    return {k: v for k, v in sets.items() if v is not None and which in ("all", k)}


def collect(model, dataset, device, batch_size=256, features=False):
    """Predictions of `model` on `dataset`: logits, probs, preds, labels (and features)."""
    out = predict(model, D.make_loader(dataset, batch_size), device, features=features)
    out["probs"] = out["logits"].softmax(1)
    out["preds"] = out["logits"].argmax(1)
    return out


def show_image(ax, dataset, i):
    """Draw sample i of `dataset` as stored (uint8, before normalisation)."""
    img = D.raw_image(dataset, i)
    ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_confusion(cm, classes, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(classes)
    size = max(5, 0.5 * k + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, m, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised (recall)", ".2f")):
        im = ax.imshow(m, cmap="Blues")
        ax.set_title(title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(k), classes, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), classes)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] > m.max() / 2 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    D.save_figure(fig, path, dpi=90)


def plot_mistakes(dataset, out, classes, path, n=9):
    """A 3x3 grid of the most confident wrong predictions: true, predicted, confidence."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    wrong = torch.nonzero(out["preds"] != out["labels"]).flatten()
    conf = out["probs"].max(1).values
    wrong = wrong[conf[wrong].argsort(descending=True)][:n]
    fig, axes = plt.subplots(3, 3, figsize=(7, 7.6))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist()):
        ax.axis("on")
        show_image(ax, dataset, i)
        ax.set_title(f"true {classes[out['labels'][i]]} / pred {classes[out['preds'][i]]}\n"
                     f"confidence {conf[i]:.2f}", fontsize=9)
    fig.suptitle(f"{len(wrong)} most confident mistakes" if len(wrong) else "no mistakes")
    fig.tight_layout()
    D.save_figure(fig, path, dpi=90)


def shown_split(names):
    """The split the figures show: the held-out one, test where there is one, else val."""
    return "test" if "test" in names else "val" if "val" in names else next(iter(names))


def evaluate_run(model, data, device, out_dir, which="all", batch_size=256, outs=None):
    """Score the `which` splits and write metrics.json, confusion.png and mistakes.png (of
    `shown_split`) to out_dir. `outs` ({split: collect() output}) skips splits already
    predicted. Returns (results, outs)."""
    outs, results = dict(outs or {}), {}
    if not eval_splits(data, which):  # before metrics.json is touched
        raise D.DataError(f"--split {which}: these data have no {which} split (they have "
                          f"{', '.join(eval_splits(data))})")
    for name, ds in eval_splits(data, which).items():
        if name not in outs:
            outs[name] = collect(model, ds, device, batch_size)
        results[name] = metrics(outs[name]["logits"], outs[name]["labels"], data.classes)
    D.write_json(os.path.join(out_dir, "metrics.json"), results)
    shown = shown_split(results)
    plot_confusion(results[shown]["confusion"], data.classes, os.path.join(out_dir, "confusion.png"))
    plot_mistakes(eval_splits(data, shown)[shown], outs[shown], data.classes, os.path.join(out_dir, "mistakes.png"))
    return results, outs


def classify_folder(model, ckpt, folder, device, out_csv, batch_size=256):
    """Predict every image in `folder` (recursively) and write path, prediction, confidence, top-3."""
    paths = D.list_images(folder)
    images, kept = D.decode_folder(paths, D.cache_size(ckpt["img_size"]), warn_skipped=False)
    if not kept:
        raise D.DataError(f"none of the {len(paths)} images in {folder} could be read ({D._names(paths)})")
    D._warn_skipped([p for i, p in enumerate(paths) if i not in set(kept)])
    images = D.to_channels(images, ckpt["in_channels"])
    tf = D.build_transform("none", ckpt["img_size"], ckpt["mean"], ckpt["std"], train=False)
    out = collect(model, D.TensorImageDataset(images, torch.zeros(len(images), dtype=torch.long), None, tf),
                  device, batch_size)
    classes = ckpt["classes"]
    top = out["probs"].topk(min(3, len(classes)), dim=1)
    with D.atomic_write(out_csv) as f:
        w = csv.writer(f)
        w.writerow(["path", "prediction", "confidence", "top3"])
        for row, i in enumerate(kept):
            w.writerow([paths[i], classes[top.indices[row, 0]], f"{top.values[row, 0]:.4f}",
                        " ".join(f"{classes[c]}:{p:.3f}" for c, p in zip(top.indices[row].tolist(), top.values[row].tolist()))])
    return len(kept)


# ----------------------------------------------------------------------------- main

def check_args(args):
    """Bad option values and paths: one line before the checkpoint is loaded."""
    D.check_args(args, ("batch_size", args.batch_size >= 1, ">= 1"))
    D.check_device(args.device)
    D.check_folder_arg(args.out, "--out")
    if not os.path.isfile(args.checkpoint):
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    for option, path in (("--images", args.images), ("--data-dir", args.data_dir), ("--mnist-root", args.mnist_root)):
        if path and not os.path.isdir(path):
            raise D.DataError(f"{option} folder not found: {path}")


def main(args):
    check_args(args)
    device = get_device(args.device)
    out_dir = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out_dir, exist_ok=True)
    if args.images:
        model, ckpt, _ = load_run(args.checkpoint, device, with_data=False, amp=args.amp)
        n = classify_folder(model, ckpt, args.images, device, os.path.join(out_dir, "predictions.csv"), args.batch_size)
        print(f"classified {n} images -> {os.path.join(out_dir, 'predictions.csv')}")
        return
    model, ckpt, data = load_run(args.checkpoint, device, args.data_dir, args.mnist_root, amp=args.amp)
    results, _ = evaluate_run(model, data, device, out_dir, args.split, args.batch_size)
    for name, r in results.items():
        print(summary_line(name.capitalize(), r["loss"], r["correct"], r["total"]))
    print(f"wrote metrics.json, confusion.png, mistakes.png ({shown_split(results)} split) to {out_dir}")
    return results


if __name__ == "__main__":
    D.run_main(main, get_args_parser(), CheckpointError)
