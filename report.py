"""A run's record and pages: history.csv and its curves, the input previews, an interactive
feature map and the run report.

    python analyze.py checkpoints/best.pt                     # writes both, after its figures
    python report.py checkpoints/ [--sweeps runs/ablation]    # rewrites report.md/.html from the folder

dashboard.html  the labelling page (page.py; one self-contained file, no network, no server): PCA
                and t-SNE of the penultimate features of a sample of train / val / test (and, behind a
                toggle, synthetic) images. Hover a point for its image; select (lasso, box), relabel or exclude
                in a grid, and download the corrections CSV that train.py --corrections reads.
report.md       the run written up: command, data, model, curves, final lines, confusion matrix,
report.html     mistakes, kernels, t-SNE, neighbours, suspects, sweep tables; the same content
                twice, figures as the PNG files beside it (relative links).
"""
import csv
import html
import io
import json
import os
import re
from base64 import b64encode
from urllib.parse import quote

import numpy as np
import torch

import cli
import corrections as C
import data as D
import evaluate as E
import synth
from checkpoint import CheckpointError, checkpoint_path, load_checkpoint, model_from_checkpoint
from evaluate import summary_line
from model import count_parameters

THUMB = 40                       # thumbnail side (px) of grey images (digits) in dashboard.html
THUMB_PHOTO = 96                 # of colour photos: the hover card shows them at 96 px, the grid at 112
THUMB_CAM = 64                   # of Grad-CAM overlays: their heat map is a coarse grid, smooth when enlarged
SOURCES = ("real", "synthetic")  # TensorImageDataset.source 0 / 1
# right / wrong in every figure: Okabe-Ito blue and vermillion, told apart with any colour vision (red/green is not)
CORRECT, WRONG = "#0072B2", "#D55E00"


# ----------------------------------------------------------------------------- history.csv and the run's figures

def write_history(history, path):
    with cli.atomic_write(path) as f:
        # the union of the rows' keys: a resume may add columns (--eval-test)
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in history for k in row)), restval="")
        w.writeheader()
        w.writerows(history)


def epoch_axis(ax):
    """An x axis of whole epochs: a short run's default ticks (1.25, 1.5, ...) name epochs that do not exist."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def plot_history(history, classes, folder):
    """curves.png (loss, accuracy, lr) and curves_detail.png (per class and per source)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for split in ("train", "val", "test"):
        if any(f"{split}_loss" not in h for h in history):  # test: only with --eval-test from the start
            continue
        ax[0].plot(ep, [h[f"{split}_loss"] for h in history], label=split)
        ax[1].plot(ep, [h[f"{split}_acc"] for h in history], label=split)
    ax[2].plot(ep, [h["lr"] for h in history])
    for a, t in zip(ax, ("loss", "accuracy", "learning rate (end of epoch)")):
        a.set_title(t)
        epoch_axis(a)
    ax[0].legend()
    ax[1].legend()
    fig.tight_layout()
    cli.save_figure(fig, os.path.join(folder, "curves.png"), dpi=90)

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        ax[0].plot(ep, [h[f"train_loss_{c}"] for h in history], color=cmap(i % cmap.N), label=c)
        ax[1].plot(ep, [h[f"val_acc_{c}"] for h in history], color=cmap(i % cmap.N), label=c)
    for src in ("real", "synthetic"):
        if any(h[f"train_n_{src}"] for h in history):
            ax[2].plot(ep, [h[f"train_acc_{src}"] for h in history], label=f"train {src}")
    ax[2].plot(ep, [h["val_acc"] for h in history], label="val (real)", linestyle="--")
    for a, t in zip(ax, ("train loss per class", "val accuracy per class", "accuracy per source")):
        a.set_title(t)
        epoch_axis(a)
        a.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    cli.save_figure(fig, os.path.join(folder, "curves_detail.png"), dpi=90)


def history_row(epoch, train, val, lr, classes, test=None):
    row = {"epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"], "val_loss": val["loss"],
           "val_acc": val["acc"], "lr": lr, "seconds": train["seconds"], "images_per_s": train["images_per_s"]}
    if test is not None:
        row["test_loss"], row["test_acc"] = test["loss"], test["acc"]
    for c, l, a in zip(classes, train["loss_per_class"], train["acc_per_class"]):
        row[f"train_loss_{c}"], row[f"train_acc_{c}"] = l, a
    for c, a in zip(classes, val["acc_per_class"]):
        row[f"val_acc_{c}"] = a
    for i, src in enumerate(("real", "synthetic")):
        row[f"train_acc_{src}"], row[f"train_n_{src}"] = train["acc_per_source"][i], int(train["count_per_source"][i])
    return row


# ----------------------------------------------------------------------------- what the network is fed

def _denorm(x, mean, std):
    """Normalised [C, H, W] -> displayable [H, W(, 3)] in [0, 1]."""
    x = (x.float().cpu() * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)).clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def plot_inputs(data, augment_fn, folder, n=8, copies=4, seed=0, augment=""):
    """augmentations.png (originals beside augmented copies), mixup.png and, with synthetic
    data, synthetic.png: written at the start of a run so a user sees what the network is fed.
    `augment` (the --augment preset) names the augmentation in the titles."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    g = torch.Generator().manual_seed(seed)
    real = D.real_part(data.train)
    idx = torch.randperm(len(real), generator=g)[:n].tolist()
    gray = data.in_channels == 1
    fig, axes = plt.subplots(len(idx), copies + 1, figsize=(1.6 * (copies + 1), 1.6 * len(idx)), squeeze=False)
    for r, i in enumerate(idx):
        raw = D.raw_image(real, i)
        axes[r, 0].imshow(raw[..., 0] if gray else raw, cmap="gray" if gray else None)
        axes[r, 0].set_title(f"original: {data.classes[int(real.targets[i])]}", fontsize=8)
        for c in range(copies):
            axes[r, c + 1].imshow(_denorm(augment_fn(real, i), data.mean, data.std), cmap="gray" if gray else None)
        for ax in axes[r]:
            ax.axis("off")
    how = f" (augment {augment})" if augment else ""
    fig.suptitle(f"real train photos: original, then {copies} augmented copies{how}", fontsize=9)
    fig.tight_layout()
    cli.save_figure(fig, os.path.join(folder, "augmentations.png"), dpi=80)

    others = idx[4:8] if len(idx) >= 8 else idx[1:] + idx[:1]  # a tiny dataset: pair neighbours
    pairs = [(augment_fn(real, i), augment_fn(real, j)) for i, j in zip(idx[:4], others)]
    lams = torch.distributions.Beta(0.2, 0.2).sample((len(pairs),)).tolist()
    fig, axes = plt.subplots(len(pairs), 3, figsize=(5, 1.7 * len(pairs)), squeeze=False)
    for r, ((a, b), lam) in enumerate(zip(pairs, lams)):
        for ax, x, t in zip(axes[r], (a, b, lam * a + (1 - lam) * b), ("a", "b", f"mixup, lambda={lam:.2f}")):
            ax.imshow(_denorm(x, data.mean, data.std), cmap="gray" if gray else None)
            ax.set_title(t, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"real train photos, augmented{how}: mixup of a and b", fontsize=9)
    fig.tight_layout()
    cli.save_figure(fig, os.path.join(folder, "mixup.png"), dpi=80)

    if isinstance(data.train, torch.utils.data.ConcatDataset):
        syn = data.train.datasets[1]
        k = min(64, len(syn))
        synth.preview_grid(syn.images[:k], [data.classes[int(c)] for c in syn.labels[:k]],
                           os.path.join(folder, "synthetic.png"), title=synth.preview_title(k, len(syn), data.config))


# ----------------------------------------------------------------------------- dashboard: the page

def thumbnail_uri(img, side=None):
    """uint8 [H, W, C] -> a data: URI of at most side x side px (default: THUMB for grey images,
    THUMB_PHOTO for colour ones)."""
    from PIL import Image, features
    im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    side = side or (THUMB if im.mode == "L" else THUMB_PHOTO)
    im.thumbnail((side, side), Image.LANCZOS)
    buf = io.BytesIO()
    if im.mode == "L":  # grey digits: lossless PNG is also the smallest
        im.save(buf, "PNG")
        mime = "png"
    elif features.check("webp"):  # colour photos: WebP is half the size of JPEG here (RESULTS.md, "Dashboard size")
        im.save(buf, "WEBP", quality=80)
        mime = "webp"
    else:  # a Pillow built without libwebp
        im.save(buf, "JPEG", quality=85)
        mime = "jpeg"
    return f"data:image/{mime};base64," + b64encode(buf.getvalue()).decode("ascii")


def class_colours(k):
    """A hex colour per class: matplotlib's tab10 / tab20, as in tsne.png."""
    import matplotlib
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
    return [matplotlib.colors.to_hex(cmap(c % cmap.N)) for c in range(k)]


def fit_box(xy, side=1000):
    """2-D points -> (flat ints, [width, height]): one scale for both axes (no stretching) that
    makes the points' longer extent `side`, from 0 at their minimum, so the map's box (its SVG
    viewBox and on-page aspect ratio) is the points' own bounding box and they fill it."""
    xy = np.asarray(xy, dtype=np.float64)
    lo, hi = xy.min(0), xy.max(0)
    scale = side / max((hi - lo).max(), 1e-12)
    xy = (xy - lo) * scale
    box = np.maximum(np.rint((hi - lo) * scale), 1).astype(int)
    return np.rint(xy).astype(int).ravel().tolist(), box.tolist()


def write_dashboard(path, points, maps, classes, title="", note=""):
    """dashboard.html, the labelling page (page.py): `points` (analyze.dashboard_points: labels, preds,
    conf, split, source, names, paths, images, cams; optionally analyze.page_signals' lists) drawn on
    `maps`, {"tsne": [N, 2], "pca": [N, 2]}."""
    import page
    if len(points["labels"]) < 3:
        raise ValueError(f"a dashboard needs at least 3 images, got {len(points['labels'])}")
    points = {**points, "labels": points["labels"].tolist(), "preds": points["preds"].tolist(),
              "conf": points["conf"].tolist(), "thumbs": [thumbnail_uri(im) for im in points["images"]],
              "cam_thumbs": [thumbnail_uri(im, THUMB_CAM) for im in points.get("cams") or []]}  # Grad-CAM overlays
    return page.write_page(path, points, maps, classes, title, note, fit_box, class_colours(len(classes)))


# ----------------------------------------------------------------------------- report: pieces

def md_table(header, rows):
    """A markdown table as a list of lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(str, r)) + " |" for r in rows]


def cell(value):
    """A markdown table cell (a `|` inside would end the cell)."""
    return str(value).replace("|", "\\|")


def csv_head(path, n=10):
    """A CSV's first n rows as a markdown table, and its row count."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            rows = list(csv.reader(f))
    except csv.Error as e:
        cli.warn(f"{path} is damaged ({e}); left out")
        return [], 0
    if not rows:
        return [], 0
    header, body = rows[0], rows[1:]
    return md_table([cell(h) for h in header], [[cell(v) for v in r] for r in body[:n]]), len(body)


def sweep_tables(run_dir, extra_dirs=()):
    """experiments.py's markdown tables related to a run: those of the experiments --out folder the
    run lives in (<out>/<cell>/seed<k>/, so one or two levels up) and those in `extra_dirs`."""
    names = ("learning_curve.md", "ablation.md", "grid.md")  # experiments.py's tables (<experiment>.md)
    up1 = os.path.dirname(os.path.abspath(run_dir))
    found = []
    for d in (up1, os.path.dirname(up1), *extra_dirs):
        for n in names:
            p = os.path.abspath(os.path.join(d, n))
            if os.path.isfile(p) and p not in found:
                found.append(p)
    return found


def read_history(path, ckpt):
    """history.csv as a list of {column: float}, else the checkpoint's copy (best.pt's ends at its epoch)."""
    if path:
        try:
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                reader = csv.DictReader(f)
                columns = set(reader.fieldnames or ())
                rows = [{k: float(v) for k, v in row.items() if k is not None and v not in ("", None)}
                        for row in reader]
            if {"epoch", "val_acc", "seconds", "images_per_s"} <= columns and all(
                    {"epoch", "val_acc", "seconds", "images_per_s"} <= row.keys() for row in rows):
                return rows
            cli.warn(f"{path} lacks columns of train.py's history; using the checkpoint's copy")
        except (OSError, ValueError, csv.Error) as e:
            cli.warn(f"{path} is damaged ({type(e).__name__}); using the checkpoint's copy of the history")
    return ckpt["history"]


def read_review(path):
    """analyze.py's review.json: one {shown, summary} per reviewed split (how good the label review's
    models are); [] when there is none, and with a warning when it is damaged."""
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as f:
            review = list(json.load(f).values())
        if all(isinstance(q["shown"], bool) and isinstance(q["summary"], str) for q in review):
            return review
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    cli.warn(f"{path} is not analyze.py's label review; left out")
    return []


def read_metrics(path, classes, checkpoint):
    """(metrics.json's {split: metrics}, what produced them) as evaluate.py wrote it; ({}, None) with a
    warning when it is damaged or holds another checkpoint's (or an ensemble's) scores."""
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        settings = results.pop("settings", None) if isinstance(results, dict) else None
        if isinstance(results, dict) and all(
                isinstance(r, dict) and {"loss", "correct", "total", "per_class", "confusion"} <= r.keys()
                and set(r["per_class"]) == set(classes) and original_scores_ok(r) for r in results.values()):
            if settings is None or settings.get("checkpoints") == [os.path.abspath(checkpoint)]:
                return results, settings
            cli.warn(f"{path} holds the scores of {', '.join(settings.get('checkpoints') or ['other checkpoints'])}, "
                     f"not of {checkpoint}; left out")
        else:
            cli.warn(f"{path} is not evaluate.py's metrics of this checkpoint's classes; left out")
    except (OSError, ValueError) as e:
        cli.warn(f"{path} is damaged ({type(e).__name__}); left out")
    return {}, None


def original_scores_ok(r):
    """Whether a split's metrics hold no scores on its original labels, or well-formed ones (evaluate.py writes
    them where --corrections changed the split's labels)."""
    o = r.get("original_labels")
    return o is None or isinstance(o, dict) and {"loss", "correct", "total", "relabelled"} <= o.keys()


def produced_by(settings):
    """The report's line on what produced its scores: the TTA views and temperature where they are not plain."""
    if settings is None:
        return "Scored by an evaluate.py that recorded no settings."
    tta, t = settings.get("tta", 1), (settings.get("temperature") or [1.0])[0]
    how = [f"test-time augmentation over {tta} views" if tta > 1 else "no test-time augmentation",
           f"softmax temperature {t:.3f}" if t != 1.0 else "no temperature"]
    return f"Scored with {' and '.join(how)} (metrics.json, split {settings.get('split_hash')})."


# ----------------------------------------------------------------------------- report

def write_report(out_dir, checkpoint=None, sweeps=()):
    """report.md and report.html in out_dir, from the files there and beside the checkpoint
    (default out_dir/best.pt); missing files leave their section short, never an error."""
    out_dir = os.path.abspath(out_dir)
    checkpoint = os.path.abspath(checkpoint or os.path.join(out_dir, "best.pt"))
    ckpt = load_checkpoint(checkpoint)
    folders = list(dict.fromkeys([out_dir, os.path.dirname(checkpoint)]))

    def find(name):
        return next((os.path.join(d, name) for d in folders if os.path.exists(os.path.join(d, name))), None)

    def link(path):
        return quote(os.path.relpath(path, out_dir).replace(os.sep, "/"))

    def figures(*names):
        """One line with those of the figures that exist, and a blank line; nothing if none does."""
        images = [f"![{n[:-4]}]({link(find(n))})" for n in names if find(n)]
        return [" ".join(images), ""] if images else []

    args, cfg, classes = ckpt["args"], ckpt["data"], ckpt["classes"]
    results, scored_by = {}, None
    if find("metrics.json"):
        results, scored_by = read_metrics(find("metrics.json"), classes, checkpoint)
    history = read_history(find("history.csv"), ckpt)
    name = os.path.basename(os.path.dirname(checkpoint))
    source = f"MNIST from `{cfg['mnist_root']}`" if cfg["dataset"] == "mnist" else f"photo folder `{cfg['data_dir']}`"
    md = [f"# Run report: {name}", ""]
    corrected = " on the corrected labels" if (cfg.get("corrections_summary") or {}).get("relabelled_val") else ""
    headline = [f"`{ckpt['model']}` on the {source}, {len(classes)} classes; checkpoint `{os.path.basename(checkpoint)}` "
                f"(epoch {ckpt['epoch']}, val accuracy {100 * ckpt['best_val_acc']:.2f}%{corrected})."]
    if find("dashboard.html"):
        headline.append(f"Interactive feature map: [dashboard.html]({link(find('dashboard.html'))}).")
    md += [" ".join(headline), ""]

    command = ckpt.get("command") or "python train.py " + " ".join(f"--{k.replace('_', '-')}={v}" for k, v in args.items())
    md += ["## Command", "", "```", command, "```", "",
           "The options the run was given, every one at its default left out (--amp, --threads and "
           "--workers, when left out, are chosen again by the machine that runs it)." if "command" in ckpt else
           "Every stored argument (this checkpoint predates the stored command line).", ""]

    md += ["## Data", "", f"- source: {source}", f"- classes ({len(classes)}): {', '.join(map(str, classes))}",
           f"- split: {cfg['val_fraction']:g} of every class to val (split seed {cfg['split_seed']}), "
           f"train fraction {cfg['train_fraction']:g}; test: "
           + ("MNIST's official test set" if cfg["dataset"] == "mnist" else "none (a photo folder has train and val)"),
           f"- image size {cfg['img_size']} px"
           + (f" (made square by {D.resize_mode(cfg)})" if cfg["dataset"] == "folder" else "")
           + f", {ckpt['in_channels']} channel(s); {cfg.get('num_samples', '?')} "
           f"labelled images" + (f"; {cfg['synthetic_n']} synthetic composites added to training"
                                 if cfg.get("synthetic_n") else ""), ""]
    if cfg.get("corrections_summary"):  # what the run's labels owe to its corrections file, and whether it is still that file
        path, sha = cfg["corrections"], cfg["corrections_sha256"]
        now = C.file_hash(path) if os.path.isfile(path) else None
        copy = find(C.RUN_COPY)  # train.py's copy in the run folder: the file as training read it
        kept = ""
        if copy and os.path.isfile(copy):
            kept = (f"; the run's copy as training read it: [{C.RUN_COPY}]({link(copy)})" if C.file_hash(copy) == sha
                    else f"; the run's {C.RUN_COPY} differs from it (sha256 {C.file_hash(copy)[:12]})")
        md[-1:] = [f"- {C.summary_line(path, sha, cfg['corrections_summary'])} (`{path}`"
                   + ("" if now == sha else ", gone since training" if now is None else ", changed since training")
                   + ")" + kept, ""]
    if results:
        splits = [s for s in E.SPLITS if s in results]
        support = {s: [results[s]["per_class"][c]["support"] for c in classes] for s in splits}
        md += md_table(["class"] + splits,
                                   [[cell(c)] + [support[s][i] for s in splits] for i, c in enumerate(classes)]
                                   + [["**total**"] + [f"**{sum(support[s])}**" for s in splits]])
        md += ["", "Images per class and split (train: real images only).", ""]

    model = model_from_checkpoint(ckpt)
    settings = f" {json.dumps(ckpt['model_args'])}" if ckpt["model_args"] else ""
    md += ["## Model", "", f"`{ckpt['model']}`{settings}, input {ckpt['in_channels']} x "
           f"{ckpt['img_size']} x {ckpt['img_size']}, **{count_parameters(model):,} parameters**.", ""]
    md += md_table(["module", "parameters"], [[n, f"{count_parameters(m):,}"] for n, m in model.named_children()])
    md += [""]

    md += ["## Training", ""]
    if history:
        md += [f"{len(history)} epoch{'s' * (len(history) != 1)} (of --epochs {args.get('epochs')}), best val accuracy "
               f"{100 * max(h['val_acc'] for h in history):.2f}% at epoch "
               f"{int(max(history, key=lambda h: h['val_acc'])['epoch'])}; "
               f"{sum(h['seconds'] for h in history):.1f} s of training, median {np.median([h['images_per_s'] for h in history]):.0f} images/s.", ""]
        est = next((h for h in history if "est_total_s" in h), None)
        if est:  # train.py's estimate after the first steps (the rows of a resumed run may carry a newer one)
            md += [f"Estimated after the first steps: {est['est_images_per_s']:.0f} images/s, "
                   f"{est['est_epoch_s']:.0f} s per epoch, {est['est_total_s']:.0f} s for the whole run "
                   f"(early stopping aside); precision: {ckpt.get('amp', 'off (fp32)')}.", ""]
    md += figures("curves.png", "curves_detail.png")
    if find("augmentations.png"):
        md += ["What the network is fed (augmented copies, mixup, synthetic composites):", ""]
        md += figures("augmentations.png", "mixup.png", "synthetic.png")

    md += ["## Results", ""]
    if results:
        shown = E.shown_split(results)
        md += [produced_by(scored_by), "", "```"]
        for s, r in results.items():  # a split whose labels --corrections changed: on the original ones too
            md += [summary_line(s.capitalize(), r["loss"], r["correct"], r["total"])]
            md += [E.original_labels_line(s.capitalize(), r)] if r.get("original_labels") else []
        md += ["```", "", f"Per class on the {shown} split:", ""]
        md += md_table(["class", "precision", "recall", "F1", "support"],
                                   [[cell(c), f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", r["support"]]
                                    for c, r in results[shown]["per_class"].items()])
        md += ["", f"Confusion matrix ({shown}):", ""] + figures("confusion.png")
        if "ece" in results[shown]:
            md += [f"Calibration ({shown}): expected calibration error {100 * results[shown]['ece']:.2f}% "
                   f"(reliability diagram below; `evaluate.py --temperature auto` fits a temperature).", ""]
        md += figures("calibration.png")
    else:
        md += ["_No metrics.json: `python evaluate.py` or `python analyze.py` on the checkpoint writes it._", ""]

    md += ["## Mistakes", ""] + (figures("mistakes.png") or ["_No mistakes.png: `python evaluate.py` writes it._", ""])
    if find("mistakes") and os.path.isdir(find("mistakes")):
        n = sum(len([f for f in files if not f.startswith(".")]) for _, _, files in os.walk(find("mistakes")))
        md += [f"Every mistake as an image file: [mistakes/]({link(find('mistakes'))}/) ({n} files).", ""]

    md += ["## What the network learned", ""] + figures("kernels.png") + figures("tsne.png") + figures("neighbors.png")
    md += figures("gradcam.png")
    if find("dashboard.html"):
        md += [f"Hover the points of [dashboard.html]({link(find('dashboard.html'))}) for the images behind the map.", ""]

    md += ["## Suspects", ""]
    review = read_review(find("review.json"))  # how good the label review's models are, before its list
    md += [f"- {q['summary']}" if q["shown"] else f"- **{q['summary']}**" for q in review] + [""] * bool(review)
    md += figures("suspects.png")
    if not any(find(n) for n in ("suspects.png", "suspects.csv", "duplicates.csv", "samples.csv")):
        md += ["_None of suspects.png, suspects.csv, duplicates.csv, samples.csv in the folder._", ""]
    for csv_name, what in (("suspects.csv", "suspect labels"), ("duplicates.csv", "duplicate images"),
                           ("samples.csv", "every sample")):
        if find(csv_name):
            table, n = csv_head(find(csv_name))
            if csv_name == "samples.csv":  # one row per image: a link, not a table
                md += [f"[{csv_name}]({link(find(csv_name))}): {what}, {n} rows.", ""]
            else:
                md += [f"[{csv_name}]({link(find(csv_name))}): {what}, {n} rows" + (", the first 10:" if n > 10 else ":"), ""]
                md += table + [""]

    sweep_files = sweep_tables(out_dir, sweeps)
    if sweep_files:
        md += ["## Sweeps", ""]
        for p in sweep_files:
            with open(p, encoding="utf-8", errors="replace") as f:  # demoted two levels, below this report's headings
                md += [re.sub(r"^(#+) ", r"##\1 ", line) for line in f.read().rstrip("\n").split("\n")] + [""]
            png = p[:-3] + ".png"
            if os.path.isfile(png):
                md += [f"![{os.path.basename(png)[:-4]}]({link(png)})", ""]
            md += [f"From [{os.path.relpath(p, out_dir)}]({link(p)}).", ""]

    text = "\n".join(md).rstrip("\n") + "\n"
    with cli.atomic_write(os.path.join(out_dir, "report.md")) as f:
        f.write(text)
    with cli.atomic_write(os.path.join(out_dir, "report.html")) as f:
        f.write(markdown_to_html(text, f"Run report: {name}"))
    return os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")


# ----------------------------------------------------------------------------- markdown -> HTML

def inline(text):
    """The inline markdown report.md uses: `code`, ![img](src), [link](href), **bold**, _em_."""
    out = []
    for k, part in enumerate(re.split(r"(`[^`]*`)", text)):
        part = html.escape(part)
        if k % 2:
            out.append(f"<code>{part[1:-1]}</code>")
            continue
        part = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", r'<img src="\2" alt="\1">', part)
        part = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', part)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        out.append(re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"<em>\1</em>", part))
    return "".join(out)


def markdown_to_html(md, title):
    """The markdown this module writes (and experiments.py's tables) as a standalone HTML page:
    headings, paragraphs, lists, fenced code, tables, images and links; not general markdown."""
    lines, body, i = md.split("\n"), [], 0
    starts_block = lambda s: not s.strip() or s.startswith(("```", "#", "|", "- "))  # noqa: E731
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            body.append("<pre><code>" + html.escape("\n".join(lines[i + 1:end])) + "</code></pre>")
            i = end + 1
        elif m := re.match(r"(#{1,6}) (.*)", line):
            body.append(f"<h{len(m[1])}>{inline(m[2])}</h{len(m[1])}>")
            i += 1
        elif line.startswith(("|", "- ")):
            kind, block = line[0], []
            while i < len(lines) and lines[i].startswith("|" if kind == "|" else "- "):
                block.append(lines[i])
                i += 1
            if kind == "-":
                body.append("<ul>" + "".join(f"<li>{inline(b[2:])}</li>" for b in block) + "</ul>")
                continue
            rows = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", b.strip())[1:-1]]
                    for b in block if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", b.strip())]
            head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
            trs = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
        elif not line.strip():
            i += 1
        else:
            block = [line]
            i += 1
            while i < len(lines) and not starts_block(lines[i]):
                block.append(lines[i])
                i += 1
            body.append(f"<p>{inline(' '.join(block))}</p>")
    return REPORT_PAGE.replace("__TITLE__", html.escape(title)).replace("__BODY__", "\n".join(body))


REPORT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 20px auto; padding: 0 20px; color: #222; }
h1 { font-size: 26px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 3px; margin-top: 32px; }
img { max-width: 100%; vertical-align: top; margin: 4px 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 3px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 10px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
code { font-size: 13px; }
</style></head>
<body>
__BODY__
</body></html>
"""


# ----------------------------------------------------------------------------- CLI

def get_args_parser():
    p = cli.ArgumentParser(description="(Re)write report.md and report.html of a run folder from its files.")
    p.add_argument("run_dir", help="the folder with the checkpoint and the figures")
    p.add_argument("--checkpoint", default=None, help="a checkpoint, or a run folder for its best.pt "
                                                      "(default: RUN_DIR/best.pt)")
    p.add_argument("--sweeps", nargs="+", default=[], metavar="DIR",
                   help="also include the experiments.py tables in these folders")
    return p


def main(args):
    if not os.path.isdir(args.run_dir):
        raise CheckpointError(f"run folder not found: {args.run_dir}")
    for d in args.sweeps:
        if not os.path.isdir(d):
            raise CheckpointError(f"--sweeps folder not found: {d}")
    if args.checkpoint:
        args.checkpoint = checkpoint_path(args.checkpoint)
    md, page = write_report(args.run_dir, args.checkpoint, args.sweeps)
    print(f"wrote {md} and {page}")


if __name__ == "__main__":
    cli.run_main(main, get_args_parser().parse_args)
