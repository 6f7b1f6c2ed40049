"""Evaluate a checkpoint: metrics, confusion matrix, mistakes; or classify a folder of images.

    python evaluate.py checkpoints/best.pt                   # train / val / test
    python evaluate.py checkpoints/best.pt --images photos/  # -> predictions.csv (+ accuracy when labelled)
    python evaluate.py a/best.pt b/best.pt c/best.pt         # an ensemble: the mean of their softmax
    python evaluate.py checkpoints/best.pt --tta 5 --temperature auto
    python evaluate.py a/best.pt b/best.pt --compare         # paired: Wilson intervals, exact McNemar, a verdict

Needs nothing but the checkpoint: the data config inside it rebuilds the same split
(`--data-dir` / `--mnist-root` point at the data where it moved).
"""
import csv
import functools
import os

import numpy as np
import torch
import torch.nn.functional as F

import cli
import corrections as C
import data as D
import stats
from augment import build_transform
from checkpoint import CheckpointError, checkpoint_path, load_checkpoint, model_from_checkpoint, save_checkpoint
from device import AMP_CHOICES, autocast, check_device, get_device, use_channels_last
from images import (IMG_EXTENSIONS, LABEL_RE, decode_folder, fingerprint, list_images, scan_folder, short_names,
                    to_channels, warn_unreadable)

SPLITS = ("train", "val", "test")
REJECTED = "none"  # the prediction --reject-below writes: the name a user-made "none of these" class would have too


def get_args_parser():
    p = cli.ArgumentParser(description="Evaluate a checkpoint.")
    p.add_argument("checkpoint", nargs="+", help="one checkpoint (or a run folder: its best.pt), or several of the "
                                                 "same classes: an ensemble (the mean of their softmax; architectures "
                                                 "and sizes may differ)")
    p.add_argument("--split", default="all", choices=SPLITS + ("all",))
    p.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder; for an "
                                               "ensemble, ensemble/ in the checkpoints' common folder)")
    p.add_argument("--images", default=None, help="classify every image in this folder (or this one image file) -> "
                                                  "predictions.csv; scored too when labels can be read (class "
                                                  "subfolders or x_label7.jpg)")
    p.add_argument("--reject-below", type=float, default=None, metavar="P",
                   help=f"with --images: the prediction is {REJECTED!r} where the top probability is under P (0..1), "
                        f"for photos that show none of the classes")
    p.add_argument("--compare", action="store_true",
                   help="two checkpoints A and B on the same --split val (default) or test images: both accuracies "
                        "with 95%% Wilson intervals, the images one gets right and the other misses, the exact "
                        "McNemar test and a verdict -> compare.json, compare.csv")
    p.add_argument("--tta", type=int, default=1, metavar="N",
                   help=f"test-time augmentation: the mean softmax over N deterministic views (small shifts "
                        f"and scales, no flips; 1..{len(TTA_VIEWS)}; default 1 = off)")
    p.add_argument("--temperature", default=None, metavar="auto|T",
                   help="auto: fit one softmax temperature on val, report the calibration error (ECE) before and "
                        "after, and write a copy of the checkpoint that carries it (<out>/<name>-calibrated.pt); "
                        "a number T: divide the logits by T for this evaluation")
    p.add_argument("--data-dir", default=None, help="the photo folder, if it moved since training")
    p.add_argument("--mnist-root", default=None, help="the MNIST root, if it moved since training")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=None)
    p.add_argument("--amp", default=None, choices=AMP_CHOICES,
                   help="autocast precision (default: the checkpoint's, what training evaluated with)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


# ----------------------------------------------------------------------------- predictions and metrics

@torch.no_grad()
def predict(model, loader, device, features=False, amp=None, views=None, temperature=1.0):
    """Run `model` over `loader` in eval mode, under autocast of `amp` (default: `model.amp`, which
    model_from_checkpoint and train.py set, else fp32). Returns a dict of CPU tensors: logits
    [N, C] divided by `temperature`, labels [N] and, with features=True, the penultimate features
    [N, D]. `views` (test-time augmentation): functions of an image batch; the logits are then the
    log of the mean softmax over the views (softmax gives that mean back, and the cross-entropy is
    the averaged prediction's), the features those of the first view."""
    amp = amp or getattr(model, "amp", "off")
    model.eval()
    out = {"logits": [], "labels": [], "features": []}
    for images, labels, *_ in loader:
        images, probs = images.to(device, non_blocking=True), 0
        for k, view in enumerate(views or (None,)):
            x = view(images) if view else images
            if use_channels_last(device, amp, x.shape[-1]):
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                feats = model.forward_features(x)
                logits = model.forward_head(feats)
            logits = logits.float() / temperature
            if features and k == 0:
                out["features"].append(feats.float().cpu())
            if views:
                probs = probs + logits.softmax(1)
        out["logits"].append((probs / len(views)).clamp_min(1e-12).log().cpu() if views else logits.cpu())
        out["labels"].append(labels.cpu())
    return {k: torch.cat(v) if v else None for k, v in out.items()}


def summary_line(split, loss, correct, total):
    """The classic assignment's result line, e.g.
    `Test set: Average loss: 0.0370, Accuracy: 9889/10000 (98.89%)`."""
    return f"{split} set: Average loss: {loss:.4f}, Accuracy: {correct}/{total} ({100.0 * correct / total:.2f}%)"


def original_labels_line(split, r):
    """The line under a split's summary_line where --corrections changed some of its labels (val): the
    same predictions scored on the folder's original labels (metrics' `original_labels`, with_original_labels)."""
    o = r["original_labels"]
    return (summary_line(split, o["loss"], o["correct"], o["total"]).replace(" set:", " set, original labels:", 1)
            + f"; the line above scores the corrected labels ({o['relabelled']} of the {o['total']} changed "
              f"by --corrections)")


def with_original_labels(r, logits, labels, original, classes):
    """metrics() `r` of (corrected) `labels` with the same `logits` scored on the `original` labels beside
    them, each named by its "labels" entry; `r` as it is where no label differs."""
    if original is None or torch.equal(original, labels):
        return r
    return {**r, "labels": "corrected", "original_labels": {**metrics(logits, original, classes), "labels": "original",
                                                            "relabelled": int((original != labels).sum())}}


def calibration_bins(probs, labels, bins=15):
    """Reliability-diagram bins of the top-1 confidence: (count, mean confidence, accuracy) per
    equal-width bin of [0, 1], and the expected calibration error (ECE: the count-weighted mean
    |accuracy - confidence|, Guo et al. 2017)."""
    conf, preds = probs.max(1)
    hit = (preds == labels).double()
    which = (conf.double() * bins).long().clamp(max=bins - 1)
    count = torch.bincount(which, minlength=bins).double()
    mean_conf = torch.bincount(which, conf.double(), minlength=bins) / count.clamp_min(1)
    acc = torch.bincount(which, hit, minlength=bins) / count.clamp_min(1)
    ece = ((acc - mean_conf).abs() * count).sum() / count.sum().clamp_min(1)
    return count, mean_conf, acc, ece.item()


def metrics(logits, labels, classes):
    """Loss (plain cross-entropy), accuracy, confusion matrix and per-class precision / recall / F1
    of logits [N, C] against labels [N]: the one place train.py, evaluate.py and analyze.py get
    their numbers from. `classes`: the class names (keys of per_class)."""
    k = len(classes)
    preds = logits.argmax(1)
    cm = torch.bincount(labels * k + preds, minlength=k * k).view(k, k)
    tp = cm.diag().double()
    precision = tp / cm.sum(0).double().clamp_min(1)
    recall = tp / cm.sum(1).double().clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    correct = int(tp.sum())
    return {
        "loss": F.cross_entropy(logits, labels).item(), "accuracy": correct / max(len(labels), 1),
        "correct": correct, "total": len(labels), "ece": calibration_bins(logits.softmax(1), labels)[3],
        "per_class": {c: {"precision": precision[i].item(), "recall": recall[i].item(), "f1": f1[i].item(),
                          "support": int(cm[i].sum())} for i, c in enumerate(classes)},
        "confusion": cm.tolist(),
    }


# ----------------------------------------------------------------------------- shared with analyze.py

# (dx, dy, scale) of the TTA views, identity first; shifts in units of TTA_SHIFT of the image side
TTA_VIEWS = ((0, 0, 1.0), (1, 0, 1.0), (-1, 0, 1.0), (0, 1, 1.0), (0, -1, 1.0), (0, 0, 0.92), (0, 0, 1.08),
             (1, 1, 1.0), (-1, -1, 1.0), (1, -1, 1.0), (-1, 1, 1.0))
TTA_SHIFT = 0.06  # ~2 px at 28 px: about the jitter of a hand-centred digit, far less than training's shifts
ECE_BINS = 15


def tta_view(images, dx, dy, scale):
    """Normalised images [B, C, H, W] shifted by (dx, dy) * TTA_SHIFT of the side and scaled about the
    centre; the frame edge is replicated (the same in normalised and pixel units), bilinear."""
    if (dx, dy, scale) == (0, 0, 1.0):
        return images
    b = images.shape[0]
    theta = torch.tensor([[1 / scale, 0, -2 * TTA_SHIFT * dx], [0, 1 / scale, -2 * TTA_SHIFT * dy]],
                         dtype=images.dtype, device=images.device).expand(b, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tta_views(n):
    """The first n TTA_VIEWS as functions of an image batch, for predict(views=...)."""
    return [functools.partial(tta_view, dx=dx, dy=dy, scale=scale) for dx, dy, scale in TTA_VIEWS[:n]]


def load_run(path, device, data_dir=None, mnist_root=None, with_data=True, amp=None, synthetic=False):
    """(model, checkpoint, Data) from a checkpoint; the datasets use the eval transforms. The model
    predicts under `amp` (an --amp choice), by default the checkpoint's (see model_from_checkpoint)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, device, amp=amp)
    return model, ckpt, run_data(ckpt, data_dir, mnist_root, synthetic, checkpoint=path) if with_data else None


def corrections_copies(ckpt, checkpoint=None):
    """Where the run's own copy of its --corrections file (train.py's <save-dir>/trained_corrections.csv) may be:
    beside the checkpoint at `checkpoint`, beside the one it was calibrated from, in its --save-dir."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in (checkpoint, ckpt.get("calibrated_from")) if p]
    folders += [os.path.abspath(ckpt["args"]["save_dir"])] if ckpt["args"].get("save_dir") else []
    return [os.path.join(f, C.RUN_COPY) for f in dict.fromkeys(folders)]


def run_data(ckpt, data_dir=None, mnist_root=None, synthetic=False, checkpoint=None):
    """The checkpoint's Data (the same split, eval transforms), from where the data are now. The
    synthetic training images are made only when `synthetic` (analyze.py shows them; a score never uses them).
    `checkpoint`: its path, where the run's copy of a --corrections file edited since is looked for."""
    cfg = dict(ckpt["data"])
    if cfg.get("corrections"):  # (data.corrections_at_rebuild takes a copy only where its sha256 is training's)
        cfg["corrections_copies"] = corrections_copies(ckpt, checkpoint)
    if not synthetic:
        cfg["synthetic_n"] = 0
    if data_dir:
        cfg["data_dir"] = os.path.abspath(data_dir)
    if mnist_root:
        cfg["mnist_root"] = os.path.abspath(mnist_root)
    cfg["download"] = False
    # inputs that only training needs: scoring goes on without them, saying what is left out
    for key, left_out, off in (("sample_weights", "the sample weights (training only)", None),
                               ("test_dir", "the test split", None),
                               ("backgrounds", "the synthetic training images", "field")):
        path = cfg.get(key)
        if path and os.path.isabs(path) and not os.path.exists(path) and (key != "backgrounds" or cfg.get("synthetic_n")):
            cli.warn(f"{path} (--{key.replace('_', '-')} in training) is gone: {left_out} left out")
            cfg[key] = off
            if key == "backgrounds":
                cfg["synthetic_n"] = 0
    data = D.build_datasets(dict(cfg, split_hash=None), augment="none")  # the split is checked below
    if match_classes(data, ckpt["classes"], cfg.get("data_dir") or cfg.get("mnist_root")) and \
            cfg.get("split_hash") and cfg["split_hash"] != data.config["split_hash"]:
        cli.warn(f"the data differ from those the checkpoint was trained on ({data.config['num_samples']} samples "
               f"now, {cfg.get('num_samples')} then): train/val are not the same split")
    return data


def found_line(data, width=160):
    """`Found 1006 files belonging to 10 classes: 0 (101), 1 (99), ...` (as Keras says it) for the
    train + val pool of `data`: every class with its count, the list cut to one line where it is long."""
    counts = torch.bincount(D.real_part(data.train).labels, minlength=len(data.classes)).tolist()
    noun = "files" if data.config.get("dataset", "folder") == "folder" else "images"
    head = f"Found {sum(counts)} {noun} belonging to {cli.plural(len(data.classes), 'class')}: "
    shown, more = [f"{c} ({n})" for c, n in zip(data.classes, counts)], ""
    while len(shown) > 1 and len(head + ", ".join(shown) + more) > width:  # as many as fit, then how many more
        shown.pop()
        more = f", ... ({len(data.classes) - len(shown)} more)"
    return head + ", ".join(shown) + more


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
        raise cli.UsageError(f"the classes in {where} differ from the checkpoint's: not in the checkpoint: "
                             f"{', '.join(added)}; not in the data: {', '.join(removed) or 'none'} "
                             f"(renamed or added after training?); refused")
    if removed:
        cli.warn(f"{where} has no images of the checkpoint's class(es) {', '.join(removed)} (so not the split it "
               f"was trained on): the other classes are scored by name")
    index = torch.tensor([list(trained).index(c) for c in data.classes])
    for ds in {id(d): d for d in (D.real_part(data.train), data.val, data.test) if d is not None}.values():
        ds.labels = index[ds.labels]
        if getattr(ds, "original_labels", None) is not None:
            ds.original_labels = index[ds.original_labels]
    data.classes = list(trained)
    return not removed


def eval_splits(data, which="all"):
    """{split name: dataset} with eval transforms; train = the real training images."""
    sets = {"train": D.real_part(data.train).with_transform(data.val.transform), "val": data.val, "test": data.test}
    return {k: v for k, v in sets.items() if v is not None and which in ("all", k)}


def collect(model, dataset, device, batch_size=256, features=False, tta=1, temperature=1.0, desc=None, quiet=False):
    """Predictions of `model` on `dataset`: logits, probs, preds, labels (and features); with
    tta > 1 the mean softmax of that many views, logits divided by `temperature` first. `desc`: the
    label of a progress bar over the batches (cli.progress; none without it, or when `quiet`)."""
    loader = D.make_loader(dataset, batch_size)
    out = predict(model, cli.progress(loader, desc, quiet) if desc else loader, device, features=features,
                  views=tta_views(tta) if tta > 1 else None, temperature=temperature)
    out["probs"] = out["logits"].softmax(1)
    out["preds"] = out["logits"].argmax(1)
    return out


def show_image(ax, dataset, i):
    """Draw sample i of `dataset` as stored (uint8, before normalisation)."""
    img = D.raw_image(dataset, i)
    ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def figure_title(shown, settings):
    """A figure's title: what images it shows (`shown`: "test split") and the checkpoint(s) that
    predicted them (`settings`, eval_settings; <run folder>/<file>), so a copied figure still says both."""
    paths = (settings or {}).get("checkpoints") or []
    names = [os.path.join(os.path.basename(os.path.dirname(p)), os.path.basename(p)) for p in paths]
    by = names[0] if len(names) == 1 else f"{len(names)}-model ensemble ({', '.join(names)})" if names else ""
    return f"{shown}, {by}" if by else shown


def plot_confusion(cm, classes, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(classes)
    size = max(5, 0.5 * k + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, m, name, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised (recall)", ".2f")):
        im = ax.imshow(m, cmap="Blues")
        ax.set_title(name)
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
    fig.suptitle(f"confusion matrix: {title}" if title else "confusion matrix")
    fig.tight_layout()
    cli.save_figure(fig, path, dpi=90)


def plot_mistakes(dataset, out, classes, path, n=9, title=""):
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
    what = f"{len(wrong)} most confident mistakes" if len(wrong) else "no mistakes"
    fig.suptitle(f"{what}: {title}" if title else what)
    fig.tight_layout()
    cli.save_figure(fig, path, dpi=90)


def shown_split(names):
    """The split the figures show: the held-out one, test where there is one, else val."""
    return "test" if "test" in names else "val" if "val" in names else next(iter(names))


def plot_calibration(probs, labels, path, title=""):
    """calibration.png: the reliability diagram (accuracy per confidence bin against the diagonal)
    with the share of images per bin below it, and the ECE in the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    count, conf, acc, ece = calibration_bins(probs, labels, ECE_BINS)
    edges = np.linspace(0, 1, ECE_BINS + 1)
    used = (count > 0).numpy()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    x, a, c = edges[:-1][used], acc.numpy()[used], conf.numpy()[used]
    ax.bar(x, a, width=1 / ECE_BINS, align="edge", color="C0", edgecolor="k", label="accuracy")
    # the gap unfilled and hatched: it lies over the accuracy bar where confidence < accuracy, and a
    # translucent fill there blended into a colour the legend did not show
    ax.bar(x, np.abs(c - a), bottom=np.minimum(a, c), width=1 / ECE_BINS, align="edge", fill=False,
           edgecolor="C3", hatch="////", lw=0, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}ECE {100 * ece:.2f}% ({ECE_BINS} bins, {len(labels)} images)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    hist.bar(edges[:-1], (count / count.sum()).numpy(), width=1 / ECE_BINS, align="edge", color="C0", edgecolor="k")
    hist.set_yscale("log")  # most images sit in the top bin: a linear axis hides the others
    hist.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    hist.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))  # 10%, not 10^-1
    hist.yaxis.set_minor_formatter(NullFormatter())
    hist.set_xlabel("confidence (top-1 probability)")
    hist.set_ylabel("share of images")
    fig.tight_layout()
    cli.save_figure(fig, path, dpi=90)


def eval_settings(paths, ckpts, data, tta):
    """What produced a metrics.json, stored in it as "settings": the checkpoints, the split (its hash),
    the TTA views and each checkpoint's softmax temperature."""
    return {"checkpoints": [os.path.abspath(p) for p in paths], "split_hash": data.config["split_hash"],
            "tta": tta, "temperature": [ck["temperature"] for ck in ckpts]}


def evaluate_run(model, data, device, out_dir, which="all", batch_size=256, outs=None, settings=None):
    """Score the `which` splits and write metrics.json (with `settings`, what produced it), confusion.png,
    mistakes.png and calibration.png (of `shown_split`) to out_dir. `outs` ({split: collect() output})
    skips splits already predicted. Returns (results, outs)."""
    outs, results = dict(outs or {}), {}
    if not eval_splits(data, which):  # before metrics.json is touched
        raise cli.UsageError(f"--split {which}: these data have no {which} split (they have "
                             f"{', '.join(eval_splits(data))})")
    for name, ds in eval_splits(data, which).items():
        if name not in outs:
            outs[name] = collect(model, ds, device, batch_size)
        results[name] = with_original_labels(metrics(outs[name]["logits"], outs[name]["labels"], data.classes),
                                             outs[name]["logits"], outs[name]["labels"],
                                             getattr(ds, "original_targets", None), data.classes)
    cli.write_json(os.path.join(out_dir, "metrics.json"), {"settings": settings, **results})
    shown = shown_split(results)
    title = figure_title(f"{shown} split", settings)
    plot_confusion(results[shown]["confusion"], data.classes, os.path.join(out_dir, "confusion.png"), title)
    plot_mistakes(eval_splits(data, shown)[shown], outs[shown], data.classes, os.path.join(out_dir, "mistakes.png"),
                  title=title)
    plot_calibration(outs[shown]["probs"], outs[shown]["labels"], os.path.join(out_dir, "calibration.png"),
                     f"{title}\n")
    return results, outs


def fit_temperature(logits, labels):
    """The one temperature T > 0 that minimises the cross-entropy of logits / T (Guo et al. 2017),
    by L-BFGS on log T; it never changes a prediction."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    logits = logits.double()

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss
    opt.step(closure)
    return float(log_t.detach().exp())


def ensemble_outs(members):
    """{split: collect()-style output} of several (model outputs per split) dicts: the mean of the
    members' softmax, logits = its log. Every member must have scored the same images."""
    outs = {}
    for name in members[0]:
        labels = members[0][name]["labels"]
        for m in members[1:]:
            if name not in m or not torch.equal(m[name]["labels"], labels):
                raise cli.UsageError(f"the checkpoints do not share the same {name} split (other data, "
                                     f"--val-fraction or --split-seed): they cannot be scored as one ensemble")
        probs = torch.stack([m[name]["probs"] for m in members]).mean(0)
        outs[name] = {"logits": probs.clamp_min(1e-12).log(), "probs": probs, "preds": probs.argmax(1),
                      "labels": labels}
    return outs


def split_fingerprints(splits):
    """{split name: a hash of its images' pixels} of eval_splits(): runs (an ensemble's members, --compare's
    two) must score the same images, compared by pixels, not labels."""
    return {name: fingerprint(ds.images[ds.indices]) for name, ds in splits.items()}


def check_same_images(path, same, first, scored, why):
    """Refuse, in one line saying `why`, the run at `path` whose split_fingerprints `same` differ from
    those (`scored`) of the run at `first`."""
    if same != scored:
        raise cli.UsageError(f"{path} has other {'/'.join(k for k in same if same[k] != scored.get(k))} images "
                             f"than {first} (other data, --val-fraction, --split-seed or --train-fraction): {why}")


def image_labels(folder):
    """{path: class name} for the images of `folder` whose label can be read (class subfolders or
    x_label7.jpg names), {} for an unlabelled folder. `folder` may be one image file (its name's label)."""
    import contextlib
    import io
    if os.path.isfile(folder):
        m = LABEL_RE.search(os.path.basename(folder))
        return {folder: m.group(1)} if m else {}
    with contextlib.redirect_stderr(io.StringIO()):  # its warnings concern training folders
        try:
            paths, names = scan_folder(folder)
        except cli.UsageError:
            return {}
    return dict(zip(paths, names))


def folder_dataset(ckpt, paths, folder):
    """(dataset, kept positions of `paths`): the image files `paths` of `folder` decoded and
    transformed exactly as the checkpoint's evaluation data (labels 0); unreadable files left out."""
    images, kept = decode_folder(paths, D.decode_size(ckpt["data"]), warn_skipped=False,
                                 resize=D.resize_mode(ckpt["data"]))
    if not kept:
        raise cli.UsageError(f"none of the {len(paths)} images in {folder} could be read ({short_names(paths)})")
    images = to_channels(images, ckpt["in_channels"])
    tf = build_transform("none", ckpt["img_size"], ckpt["mean"], ckpt["std"], train=False)
    return D.TensorImageDataset(images, torch.zeros(len(images), dtype=torch.long), None, tf), kept


def below_threshold(probs, reject_below):
    """Which rows of `probs` [N, C] the --reject-below threshold turns into `none` (a bool tensor):
    a top probability under it; none without a threshold."""
    return probs.max(1).values < reject_below if reject_below is not None else torch.zeros(len(probs), dtype=torch.bool)


def classify_folder(runs, folder, device, out_csv, batch_size=256, tta=1, quiet=False, reject_below=None):
    """Predict every image in `folder` (recursively) with `runs` ([(model, ckpt)], one or an ensemble),
    each image decoded and transformed exactly as the checkpoint's evaluation data; write path,
    prediction, confidence, top-3 (and the label where the folder gives one). With `reject_below`
    P, the prediction is REJECTED (`none`) where the top probability is under P. Returns
    (number classified, labels tensor or None, mean probs, class names, unknown {name: count})."""
    paths = [folder] if os.path.isfile(folder) else list_images(folder)
    probs, kept = [], None
    for model, ckpt in runs:
        ds, kept = folder_dataset(ckpt, paths, folder)
        probs.append(collect(model, ds, device, batch_size, tta=tta, temperature=ckpt["temperature"],
                             desc=f"classifying {os.path.basename(folder)}", quiet=quiet)["probs"])
    warn_unreadable([p for i, p in enumerate(paths) if i not in set(kept)])
    probs = torch.stack(probs).mean(0)
    classes = runs[0][1]["classes"]
    given = image_labels(folder)
    names = [given.get(paths[i]) for i in kept]
    top = probs.topk(min(3, len(classes)), dim=1)
    rejected = below_threshold(probs, reject_below)
    shown = [REJECTED if r else classes[c] for r, c in zip(rejected.tolist(), top.indices[:, 0].tolist())]
    with cli.atomic_write(out_csv) as f:
        w = csv.writer(f)
        w.writerow(["path", "prediction", "confidence", "top3"] + (["label"] if given else []))
        for row, i in enumerate(kept):
            w.writerow([paths[i], shown[row], f"{top.values[row, 0]:.4f}",
                        " ".join(f"{classes[c]}:{p:.3f}" for c, p in zip(top.indices[row].tolist(), top.values[row].tolist()))]
                       + ([names[row] or ""] if given else []))
    if os.path.isfile(folder):  # one image: its answer here, not only in the CSV
        print(f"{folder}: {shown[0]} ({100 * top.values[0, 0]:.1f}%)")
    if reject_below is not None:
        print(f"{int(rejected.sum())} of {cli.plural(len(kept), 'image')} below --reject-below {reject_below}: "
              f"prediction {REJECTED}")
    unknown = {}
    for n in names:
        if n is not None and n not in classes:
            unknown[n] = unknown.get(n, 0) + 1
    known = [r for r, n in enumerate(names) if n in classes]
    labels = torch.tensor([classes.index(names[r]) for r in known]) if known else None
    return len(kept), labels, probs[known] if known else None, classes, unknown


def score_images(labels, probs, classes, unknown, out_dir, settings):
    """images_metrics.json, always, with `settings` (what produced predictions.csv: the folder, the
    checkpoints, TTA); for a labelled folder also its scores, the accuracy line and images_confusion.png."""
    folder = settings["folder"]
    if unknown:
        cli.warn(f"{sum(unknown.values())} image(s) in {folder} are of class(es) the model does not know, not scored: "
                 + ", ".join(f"{c} ({n})" for c, n in sorted(unknown.items())))
    r = None if labels is None else metrics(probs.clamp_min(1e-12).log(), labels, classes)
    cli.write_json(os.path.join(out_dir, "images_metrics.json"), {"settings": settings, "images": r})
    confusion = os.path.join(out_dir, "images_confusion.png")
    if r is None:
        if os.path.isfile(confusion):  # an earlier --images folder's: it would pass for this one's
            os.unlink(confusion)
        print(f"wrote images_metrics.json to {out_dir} (no labels in {folder}: nothing scored)")
        return None
    plot_confusion(r["confusion"], classes, confusion, figure_title(f"images in {folder}", settings))
    print(summary_line("Images", r["loss"], r["correct"], r["total"]))
    print(f"wrote images_metrics.json, images_confusion.png to {out_dir}")
    return r


# ----------------------------------------------------------------------------- --compare: two runs, paired

def paired_numbers(pred_a, pred_b, labels):
    """The paired comparison of two runs' predictions on the same images: each accuracy with its 95% Wilson
    interval, the discordant images (right by one run only) and the exact McNemar p-value of those."""
    right_a, right_b = pred_a == labels, pred_b == labels
    n = len(labels)
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())

    def score(right):
        k = int(right.sum())
        return {"correct": k, "accuracy": k / max(n, 1), "wilson95": list(stats.wilson_interval(k, n))}
    return {"images": n, "a": score(right_a), "b": score(right_b), "only_a": only_a, "only_b": only_b,
            "both_right": int((right_a & right_b).sum()), "both_wrong": int((~right_a & ~right_b).sum()),
            "mcnemar_p": stats.mcnemar_exact(only_a, only_b)}


def verdict(r, names, split, tta=1, alpha=0.05):
    """One paragraph for a report. A winner is named only when McNemar's p < alpha; the one right on more
    discordant images is the one with the higher accuracy (their difference over n is the accuracy gap)."""
    (a, b), p = names, r["mcnemar_p"]
    lead, other, k_lead, k_other = ("B", "A", r["only_b"], r["only_a"]) if r["only_b"] > r["only_a"] else \
        ("A", "B", r["only_a"], r["only_b"])
    conclusion = (f"{lead} is better, significant at the {100 * alpha:g}% level" if p < alpha else
                  f"no significant difference at the {100 * alpha:g}% level")

    def acc(s):
        return f"{100 * s['accuracy']:.2f}% (95% CI {100 * s['wilson95'][0]:.1f}-{100 * s['wilson95'][1]:.1f}%)"
    views = f" ({tta} TTA views)" if tta > 1 else ""
    if r.get("labels", "the labels as given") != "the labels as given":  # corrections relabelled some of them
        views += f" scored on {r['labels']}"
    return (f"On the same {r['images']} {split} images{views}, A ({a}) scores {acc(r['a'])} and B ({b}) {acc(r['b'])}. "
            f"{lead} is right on {k_lead} images {other} misses, {other} on {k_other} that {lead} misses "
            f"(exact McNemar p = {p:.3g}): {conclusion}.")


def check_compare(args):
    """--compare's own rules, one line each, before the general option checks."""
    if len(args.checkpoint) != 2:
        raise cli.UsageError(f"--compare takes exactly two checkpoints (A and B), got {len(args.checkpoint)}")
    if args.split not in ("all", "val", "test"):
        raise cli.UsageError(f"--compare scores held-out images: --split val (the default) or test, not {args.split}")
    if args.images:
        raise cli.UsageError("--compare scores the checkpoints' own val or test split, not --images: run evaluate.py "
                             "--images on each checkpoint instead")
    if args.reject_below is not None:
        raise cli.UsageError("--reject-below applies to --images predictions, not to --compare")
    if args.temperature:
        raise cli.UsageError("--compare uses each checkpoint's own temperature: run --temperature auto on each first "
                             "and compare the -calibrated.pt copies")


def compared_labels(targets):
    """The labels a paired comparison scores, [(name, labels)], the verdict's first, and a line saying why
    (None when the runs' labels are the folder's own). `targets`: each run's (labels, original labels or
    None) of the split, which differ where its corrections relabelled images. Two runs with the same
    labels are scored on them, and on the original ones too; runs whose corrections disagree are scored
    on the original labels, which neither chose, and on each run's own."""
    (a, orig_a), (b, orig_b) = targets
    original = orig_a if orig_a is not None else orig_b if orig_b is not None else a
    if torch.equal(a, b):
        if torch.equal(a, original):
            return [("the labels as given", a)], None
        n = int((a != original).sum())
        return ([("the corrected labels", a), ("the original labels", original)],
                f"the corrected labels both runs trained with ({n} of the {len(a)} relabelled)")
    n = int((a != b).sum())
    out = [("the original labels", original)] + [(f"{who}'s corrected labels", t) for who, t in (("A", a), ("B", b))
                                                 if not torch.equal(t, original)]
    return out, (f"the folder's original labels: A and B were trained with corrections that label {n} of the "
                 f"{len(a)} images differently")


def compare(args):
    """--compare: A and B predict the same split (refused otherwise, in one line); prints each accuracy,
    the discordant counts and the verdict; writes compare.json (settings and numbers) and compare.csv
    (the discordant images: index in the split, path or #MNIST index, label, both predictions)."""
    check_compare(args)
    check_args(args)
    device, paths = get_device(args.device), args.checkpoint
    split = "val" if args.split == "all" else args.split
    out_dir = args.out or os.path.join(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]),
                                       "compare")
    os.makedirs(out_dir, exist_ok=True)
    runs = load_members(paths, device, args.amp)  # the same class list
    preds, scored, data, ds, targets = [], None, None, None, []
    for path, (model, ckpt) in zip(paths, runs):
        data_k = run_data(ckpt, args.data_dir, args.mnist_root, checkpoint=path)
        splits = eval_splits(data_k, split)
        if not splits:
            raise cli.UsageError(f"--split {split}: the data of {path} have no {split} split")
        same = split_fingerprints(splits)
        if scored:
            check_same_images(path, same, paths[0], scored, "a comparison needs the same images")
        scored, data, ds = same, data or data_k, ds or splits[split]
        targets.append((splits[split].targets, getattr(splits[split], "original_targets", None)))
        preds.append(collect(model, splits[split], device, args.batch_size, tta=args.tta,
                             temperature=ckpt["temperature"])["preds"])
    label_sets, why = compared_labels(targets)
    (kind, labels), others = label_sets[0], label_sets[1:]
    r = {**paired_numbers(preds[0], preds[1], labels), "labels": kind}
    text = verdict(r, paths, split, args.tta)
    for name, path in zip("AB", paths):
        s = r[name.lower()]
        print(f"{name} = {path}: {split} {100 * s['accuracy']:.2f}% ({s['correct']}/{r['images']}), 95% Wilson CI "
              f"{100 * s['wilson95'][0]:.1f}-{100 * s['wilson95'][1]:.1f}%")
    print(f"right only by A: {r['only_a']}, only by B: {r['only_b']} (both right {r['both_right']}, "
          f"both wrong {r['both_wrong']}); exact McNemar p = {r['mcnemar_p']:.3g}")
    if why:
        print(f"scored on {why}")
        r["other_labels"] = {}
        for other_kind, other in others:
            o = r["other_labels"][other_kind] = paired_numbers(preds[0], preds[1], other)
            print(f"on {other_kind}: A {100 * o['a']['accuracy']:.2f}%, B {100 * o['b']['accuracy']:.2f}%, right only by A "
                  f"{o['only_a']}, only by B {o['only_b']}; exact McNemar p = {o['mcnemar_p']:.3g}")
    print(text)
    settings = dict(eval_settings(paths, [ck for _, ck in runs], data, args.tta), split=split, images=r["images"])
    cli.write_json(os.path.join(out_dir, "compare.json"), {"settings": settings, **r, "verdict": text})
    with cli.atomic_write(os.path.join(out_dir, "compare.csv")) as f:
        w = csv.writer(f)
        w.writerow(["right", "index", "path", "label", "prediction_a", "prediction_b"])
        for who, mask in (("A", (preds[0] == labels) & (preds[1] != labels)),
                          ("B", (preds[1] == labels) & (preds[0] != labels))):
            for i in torch.nonzero(mask).flatten().tolist():
                w.writerow([who, i, ds.path(i)] + [data.classes[int(t[i])] for t in (labels, preds[0], preds[1])])
    print(f"wrote compare.json, compare.csv to {out_dir}")
    return r


# ----------------------------------------------------------------------------- main

def check_args(args):
    """Bad option values and paths: one line before the checkpoint is loaded."""
    cli.check_args(args, ("batch_size", args.batch_size >= 1, ">= 1"),
                 ("tta", 1 <= args.tta <= len(TTA_VIEWS), f"in 1..{len(TTA_VIEWS)}"),
                 ("temperature", args.temperature in (None, "auto") or _positive(args.temperature),
                  "auto (fit on val) or a number > 0"),
                 ("reject_below", args.reject_below is None or 0 <= args.reject_below <= 1, "in [0, 1]"))
    check_device(args.device)
    cli.check_folder_arg(args.out, "--out")
    args.checkpoint = [checkpoint_path(p) for p in args.checkpoint]
    for path in args.checkpoint:
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint not found: {path}")
    if args.temperature and len(args.checkpoint) > 1:
        raise cli.UsageError("--temperature sets one checkpoint's: run --temperature auto on each member first and "
                             "ensemble the -calibrated.pt copies")
    if args.reject_below is not None and not args.images:
        raise cli.UsageError("--reject-below applies to --images predictions (analyze.py --unlabeled takes it too)")
    if args.temperature == "auto" and args.images:
        raise cli.UsageError("--temperature auto fits on the checkpoint's val split, not on --images")
    if args.images and os.path.isfile(args.images) and not args.images.lower().endswith(IMG_EXTENSIONS):
        raise cli.UsageError(f"--images {args.images} is not an image file ({'/'.join(IMG_EXTENSIONS)}) nor a folder")
    for option, path in (("--images", args.images), ("--data-dir", args.data_dir), ("--mnist-root", args.mnist_root)):
        if path and not os.path.isdir(path) and not (option == "--images" and os.path.isfile(path)):
            raise cli.UsageError(f"{option} folder not found: {path}")


def load_members(paths, device, amp=None):
    """[(model, ckpt)] of an ensemble; refused with one line when the class lists differ."""
    runs = [load_run(p, device, with_data=False, amp=amp)[:2] for p in paths]
    for p, (_, ck) in zip(paths[1:], runs[1:]):
        if list(ck["classes"]) != list(runs[0][1]["classes"]):
            raise CheckpointError(f"{p} has other classes than {paths[0]} ({', '.join(ck['classes'])} vs "
                                  f"{', '.join(runs[0][1]['classes'])}): an ensemble needs the same class list")
    return runs


def _positive(text):
    try:
        return 0 < float(text) < float("inf")
    except ValueError:
        return False


def calibrated_path(path, out_dir):
    """Where --temperature auto writes its copy of the checkpoint at `path`: never `path` itself."""
    return os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + "-calibrated.pt")


def calibrate(path, model, ckpt, data, device, batch_size, out_dir):
    """--temperature auto: fit T on val and write a copy of the checkpoint carrying it (the input
    checkpoint is never rewritten); print ECE before and after."""
    val = collect(model, data.val, device, batch_size)
    t = fit_temperature(val["logits"], val["labels"])
    before = metrics(val["logits"], val["labels"], data.classes)
    after = metrics(val["logits"] / t, val["labels"], data.classes)
    out = calibrated_path(path, out_dir)
    save_checkpoint(dict(ckpt, temperature=t, calibrated_from=os.path.abspath(path)), out)
    print(f"temperature {t:.3f} (fitted on val): val ECE {100 * before['ece']:.2f}% -> {100 * after['ece']:.2f}%, "
          f"loss {before['loss']:.4f} -> {after['loss']:.4f}; wrote {out}")
    return t


def main(args):
    if args.compare:
        return compare(args)
    check_args(args)
    device = get_device(args.device)
    paths = args.checkpoint
    default_out = (os.path.dirname(os.path.abspath(paths[0])) if len(paths) == 1 else
                   os.path.join(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]), "ensemble"))
    out_dir = args.out or default_out
    os.makedirs(out_dir, exist_ok=True)
    if args.images:
        runs = load_members(paths, device, args.amp)
        n, labels, probs, classes, unknown = classify_folder(runs, args.images, device,
                                                             os.path.join(out_dir, "predictions.csv"),
                                                             args.batch_size, args.tta, args.quiet, args.reject_below)
        print(f"classified {cli.plural(n, 'image')} -> {os.path.join(out_dir, 'predictions.csv')}")
        settings = {"folder": os.path.abspath(args.images), "checkpoints": [os.path.abspath(p) for p in paths],
                    "tta": args.tta, "temperature": [ck["temperature"] for _, ck in runs],
                    "reject_below": args.reject_below}
        score_images(labels, probs, classes, unknown, out_dir, settings)
        return
    members, data, scored = [], None, None
    runs = load_members(paths, device, args.amp)  # class lists checked first
    for path, (model, ckpt) in zip(paths, runs):
        data_k = run_data(ckpt, args.data_dir, args.mnist_root, checkpoint=path)
        if not members:
            print(found_line(data_k))
        if args.temperature == "auto":
            ckpt["temperature"] = calibrate(path, model, ckpt, data_k, device, args.batch_size, out_dir)
        elif args.temperature:
            ckpt["temperature"] = float(args.temperature)
        t = ckpt["temperature"]
        splits = eval_splits(data_k, args.split)
        same = split_fingerprints(splits) if len(paths) > 1 else None  # one model: no hashing
        if members:
            check_same_images(path, same, paths[0], scored, "an ensemble averages predictions of the same images")
        scored = same
        outs = {name: collect(model, ds, device, args.batch_size, tta=args.tta, temperature=t,
                              desc=f"predicting {name}", quiet=args.quiet) for name, ds in splits.items()}
        if len(paths) > 1:
            for name, o in outs.items():
                r = metrics(o["logits"], o["labels"], data_k.classes)
                print(f"  {path} {name}: {100 * r['accuracy']:.2f}% ({r['correct']}/{r['total']})")
        members.append(outs)
        data = data or data_k
    outs = members[0] if len(members) == 1 else ensemble_outs(members)
    settings = eval_settings(paths, [ck for _, ck in runs], data, args.tta)
    results, _ = evaluate_run(None, data, device, out_dir, args.split, args.batch_size, outs=outs, settings=settings)
    label = f"{len(paths)}-model ensemble " if len(paths) > 1 else ""
    for name, r in results.items():
        print(label + summary_line(name.capitalize(), r["loss"], r["correct"], r["total"]))
        if "original_labels" in r:
            print(label + original_labels_line(name.capitalize(), r))
    print(f"calibration error (ECE, {ECE_BINS} bins): "
          + ", ".join(f"{n} {100 * r['ece']:.2f}%" for n, r in results.items()))
    print(f"wrote metrics.json, confusion.png, mistakes.png, calibration.png ({shown_split(results)} split) to {out_dir}")
    return results


if __name__ == "__main__":
    cli.run_main(main, get_args_parser().parse_args)
