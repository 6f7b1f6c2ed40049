"""Experiments on top of train.py, one command each: a learning curve, an ablation, a grid.

    python experiments.py learning-curve --dataset mnist --mnist-root ../shared/data --model net --epochs 10
    python experiments.py ablation --model resnet18 --epochs 100 --seeds 3
    python experiments.py grid --grid lr=1e-4,3e-4,1e-3 --grid batch_size=32,64,128 --epochs 20
    python experiments.py synth-to-real --data-dir ../shared/data/meter_digits --model net --img-size 32 --epochs 15

Options this script does not know go to train.py. Every run of a sweep is an ordinary train.py run
folder <out>/<cell>/seed<k>/: a finished one (it has result.json) is skipped, an interrupted one
(it has last.pt) is resumed, so running the same command again continues a sweep. The results go
to <out>/<experiment>.md (a markdown table, also printed), .csv (fractions, full precision) and .png.
With --seeds K >= 2, <out>/<experiment>_ensemble.md also sets each cell's K-seed ensemble (evaluate.py's
mean softmax of the seeds' best.pt) beside its mean single model, on test (val where there is none).
"""
import argparse
import csv
import math
import os
import shlex
import statistics
import sys
from fractions import Fraction

import torch

import analyze as A
import cli
import corrections as C
import data as D
import evaluate as E
import train
from device import get_device
from report import md_table
from sweep import run_in_folder, stored_result

SPLITS = ("train", "val", "test")
DEFAULT_GRID = [("lr", ["1e-4", "3e-4", "1e-3"]), ("batch_size", ["32", "64", "128"])]


def fractions(text):
    try:
        fs = [float(Fraction(f)) for f in text.split(",")]
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a list of fractions: {text!r}") from None
    if not all(0 < f <= 1 for f in fs):
        raise argparse.ArgumentTypeError(f"fractions must be in (0, 1]: {text!r}")
    return fs


def grid_axis(text):
    name, _, values = text.partition("=")
    if not name or not values:
        raise argparse.ArgumentTypeError(f"expected NAME=V1,V2,... (a train.py option), got {text!r}")
    return name.lstrip("-").replace("-", "_"), values.split(",")


def choice_list(dest):
    """A comma-separated list of values of train.py's --<dest> (each checked by train.py's parser)."""
    def parse(text):
        values = [v for v in text.split(",") if v]
        option = next(a for a in train.get_args_parser()._actions if a.dest == dest)
        bad = [v for v in values if option.choices and v not in option.choices]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"expected a list of {', '.join(option.choices or ['values'])}, got {text!r}")
        return values
    return parse


def get_args_parser():
    p = cli.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="experiment", required=True)

    def add(name, help):
        q = sub.add_parser(name, help=help, description=f"{help} Other options go to train.py.", allow_abbrev=False)
        q.add_argument("--out", default=None, help="output folder (default: runs/<experiment>)")
        q.add_argument("--seeds", type=int, default=1, help="repeat every cell with train --seed 0..K-1")
        return q

    add("learning-curve", "Train on fractions of the training split; error against examples.").add_argument(
        "--fractions", type=fractions, default=fractions("1,1/2,1/4,1/8,1/16"),
        help="fractions of the training split (default: 1,1/2,1/4,1/8,1/16)")
    q = add("ablation", "Augmentation on/off x synthetic data on/off (MNIST: augmentation only).")
    q.add_argument("--aug-on", default=None, choices=["light", "strong"],
                   help="the 'on' preset (default: the run's --augment, else strong for folders, light for MNIST)")
    q.add_argument("--synthetic-on", type=int, default=9000, metavar="N", help="the 'on' --synthetic-n")
    q = add("synth-to-real", "Train on synthetic digits only, score on the real val photos, per digit "
            "source x background: how much a synthetic source resembles the photos.")
    q.add_argument("--sources", type=choice_list("synthetic_source"), default="mnist,fonts,both",
                   help="--synthetic-source values")
    q.add_argument("--backgrounds-list", type=choice_list("backgrounds"), default="field,shuffle,photo-crops",
                   metavar="B1,B2,...", help="--backgrounds values, names or folders")
    q.add_argument("--synthetic-on", type=int, default=2000, metavar="N", help="the pool size --synthetic-n")
    q.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="also train on the real photos only, the same budget")
    q = add("clean", "The data loop: train, review the training labels out of fold, correct them (relabel where "
            "the reviewer is sure, exclude where not), retrain; every round's corrections in a CSV.")
    q.add_argument("--rounds", type=int, default=2, help="review-and-retrain rounds after the first run")
    q.add_argument("--folds", type=int, default=4, help="cross-validation runs of each review (analyze.py --folds)")
    q.add_argument("--fold-epochs", type=int, default=None,
                   help="epochs of each fold run (default: twice the run's --epochs; a fold run sees (K-1)/K of the "
                        "photos, and a weak reviewer flags its own mistakes)")
    q.add_argument("--relabel-above", type=float, default=0.5, metavar="P",
                   help="relabel a suspect when the reviewer gives its suggested class at least P, else exclude it")
    q.add_argument("--flip", type=float, default=0.0, metavar="FRACTION",
                   help="measure the loop: flip this fraction of the training labels (seeded, recorded in "
                        "<out>/seed<k>/flips.csv; val untouched), and also train on the clean labels")
    q.add_argument("--propose-only", action="store_true",
                   help="write the last round's corrections.csv and stop before training on it: review it on "
                        "the dashboard, then run the same command without this option")
    add("grid", "Two train.py hyper-parameters over lists, for a fixed budget of epochs.").add_argument(
        "--grid", action="append", type=grid_axis, metavar="NAME=V1,V2,...",
        help="twice; default: lr=1e-4,3e-4,1e-3 and batch_size=32,64,128")
    return p


def parse_args(argv=None):
    """experiments.py's options, with the rest (train.py's) in .train_args and the command in .command."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args, rest = get_args_parser().parse_known_args(argv)
    args.train_args, args.command = rest, "python experiments.py " + shlex.join(argv)
    return args


# ----------------------------------------------------------------------------- running the cells

def parse_train_args(argv):
    return vars(train.get_args_parser().parse_args(argv))


def run_cell(args, name, overrides):
    """Run cell `name` (train.py arguments `overrides` on top of the passed-through ones) with
    seeds 0..K-1 in <out>/<name>/seed<k>/; returns the runs' result.json contents. While
    `args.planning`, only checks the cell (its options, a finished run's settings) and returns []."""
    runs = []
    if not args.planning:
        args.__dict__.setdefault("cells", []).append(name)
    for seed in range(args.seeds):
        folder = os.path.join(args.out, name, f"seed{seed}")
        argv = args.train_args + overrides + ["--seed", str(seed)]
        if args.planning:
            train.resolve_defaults(train.get_args_parser().parse_args(argv + ["--save-dir", folder]))  # checks it
            stored_result(folder, "argv", argv, f"{name} seed {seed}", parse_train_args)
            continue

        def run_one(resume):
            targs = train.get_args_parser().parse_args(argv + ["--save-dir", folder])
            targs.resume = resume
            try:
                return {"results": train.main(targs)}
            except train.TrainingError as e:  # a diverging cell (too high an lr) is a result too
                cli.error(e)
                return {"error": str(e)}
        runs.append(run_in_folder(folder, "argv", argv, run_one, f"{name} seed {seed}", parse_train_args))
    return runs


def summarize(runs):
    """Accuracy mean and std (sample std; 0 for one seed) per split over the cell's finished runs."""
    ok = [r["results"] for r in runs if "results" in r]
    row = {"seeds": len(ok), "failed": len(runs) - len(ok)}
    for split in SPLITS:
        accs = [r[split]["acc"] for r in ok if split in r]
        row[f"{split}_acc"] = statistics.fmean(accs) if accs else None
        row[f"{split}_acc_std"] = statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else None)
    row["n_train"] = ok[0]["train"]["total"] if ok else None
    return row


def pct(row, split, seeds):
    m, s = row[f"{split}_acc"], row[f"{split}_acc_std"]
    if m is None:
        return "failed"
    return f"{100 * m:.2f} ± {100 * s:.2f}" if seeds > 1 else f"{100 * m:.2f}"


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def text_colour(im, value):
    """Black or white, whichever reads on the cell colour `im` (an imshow) gives `value`: white on
    viridis' bright yellow, where the best cell is, could not be read."""
    if value != value:  # nan: a failed cell, drawn blank
        return "k"
    r, g, b, _ = im.cmap(im.norm(value))
    return "k" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "w"  # luma (Rec. 709 weights)


def ensemble_rows(args, device):
    """Per cell: the held-out accuracy of each seed's best.pt and of their ensemble (mean softmax)."""
    rows = []
    for name in args.cells:
        paths = [p for p in (os.path.join(args.out, name, f"seed{k}", "best.pt") for k in range(args.seeds))
                 if os.path.isfile(p)]
        if len(paths) < 2:
            continue
        members, split = [], None
        for path in paths:
            model, _, data = E.load_run(path, device)
            split = "test" if data.test is not None else "val"
            members.append({split: E.collect(model, getattr(data, split), device)})
        ens = E.ensemble_outs(members)[split]
        singles = [(m[split]["preds"] == m[split]["labels"]).float().mean().item() for m in members]
        rows.append({"cell": name, "split": split, "members": len(paths), "single_acc": statistics.fmean(singles),
                     "single_acc_std": statistics.stdev(singles), "best_single_acc": max(singles),
                     "ensemble_acc": (ens["preds"] == ens["labels"]).float().mean().item()})
    return rows


def write_ensemble_report(args, stem, device):
    rows = ensemble_rows(args, device)
    if not rows:
        return None
    table = md_table(["cell", "split", "seeds", "single model (mean ± std)", "best single", "ensemble"],
                     [[r["cell"], r["split"], r["members"], f"{100 * r['single_acc']:.2f} ± {100 * r['single_acc_std']:.2f}",
                       f"{100 * r['best_single_acc']:.2f}", f"**{100 * r['ensemble_acc']:.2f}**"] for r in rows])
    md = "\n".join([f"# Ensembles of the {args.seeds} seeds", "", f"`{args.command}`", "",
                    "Each cell's seeds' best.pt averaged (the mean of their softmax, `python evaluate.py A.pt B.pt ...`); "
                    "accuracy in %.", "", *table]) + "\n"
    with cli.atomic_write(stem + "_ensemble.md") as f:
        f.write(md)
    print("\n" + md + f"\nwritten: {stem}_ensemble.md")
    return rows


# ----------------------------------------------------------------------------- the experiments

def learning_curve(args, base):
    rows = [dict(fraction=f, **summarize(run_cell(args, f"frac{f:g}", ["--train-fraction", repr(f)])))
            for f in args.fractions]
    split = "test" if any(r["test_acc"] is not None for r in rows) else "val"
    shown = [s for s in SPLITS if any(r[f"{s}_acc"] is not None for r in rows)]
    table = md_table(["fraction", "train examples"] + [f"{s} acc" for s in shown],
                     [[f"{r['fraction']:g}", r["n_train"]] + [pct(r, s, args.seeds) for s in shown] for r in rows])

    def plot(path):
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for s, style in (("train", "o-"), (split, "s-")):
            pts = sorted((r["n_train"], 1 - r[f"{s}_acc"], r[f"{s}_acc_std"]) for r in rows if r[f"{s}_acc"] is not None)
            if pts:
                x, y, e = zip(*pts)  # an error of 0 (no mistakes) is drawn at 1e-4 on the log axis
                ax.errorbar(x, [max(v, 1e-4) for v in y], yerr=e, fmt=style, capsize=3, label=f"{s} error")
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xticks(x, [str(n) for n in x])
                ax.tick_params(axis="x", which="minor", labelbottom=False)
        pct_fmt = plt.FuncFormatter(lambda v, _: f"{100 * v:.3g}%")
        ax.yaxis.set_major_formatter(pct_fmt)
        lo, hi = ax.get_ylim()  # label the minor ticks only where a decade has no major one
        ax.yaxis.set_minor_formatter(pct_fmt if hi / lo < 10 else plt.NullFormatter())
        ax.set_xlabel("training examples")
        ax.set_ylabel("error (1 - accuracy)")
        ax.set_title("learning curve" + (f" (mean ± std of {args.seeds} seeds)" if args.seeds > 1 else ""))
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        fig.tight_layout()
        cli.save_figure(fig, path, dpi=90)

    return "Learning curve", table, rows, plot


def ablation(args, base):
    mnist = base.dataset == "mnist"
    aug_on = args.aug_on or (base.augment if base.augment not in (None, "none") else "light" if mnist else "strong")
    syns = [0] if mnist else [0, args.synthetic_on]  # MNIST has no synthetic option: the aug axis only
    rows = [dict(augment=a, synthetic_n=n, **summarize(run_cell(
                args, f"aug-{a}_syn-{n}", ["--augment", a, "--synthetic-n", str(n)])))
            for a in ("none", aug_on) for n in syns]
    cell = {(r["augment"], r["synthetic_n"]): r for r in rows}
    header = ["augment"] + [f"{s} (synthetic {n})" for n in syns for s in ("val acc", "train acc")]
    table = md_table(header, [[a] + [pct(cell[a, n], s, args.seeds) for n in syns for s in ("val", "train")]
                              for a in ("none", aug_on)])

    def plot(path):
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(1.8 * len(rows) + 2, 4))
        for k, (s, dx) in enumerate((("val", -0.2), ("train", 0.2))):
            ax.bar([i + dx for i in range(len(rows))], [100 * (r[f"{s}_acc"] or 0) for r in rows], 0.4,
                   yerr=[100 * (r[f"{s}_acc_std"] or 0) for r in rows], capsize=3, label=s, color=f"C{k}")
        ax.set_xticks(range(len(rows)), [f"augment {r['augment']}\nsynthetic {r['synthetic_n']}" for r in rows])
        ax.set_ylabel("accuracy (%)")
        ax.set_title("ablation: val vs train accuracy (the gap is over-fitting)")
        ax.legend()
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        cli.save_figure(fig, path, dpi=90)

    return "Ablation", table, rows, plot


def grid(args, base):
    (p1, v1s), (p2, v2s) = args.grid
    rows = [{p1: a, p2: b, **summarize(run_cell(
                args, f"{p1}={a}_{p2}={b}".replace(os.sep, "_"),
                [f"--{p1.replace('_', '-')}", a, f"--{p2.replace('_', '-')}", b]))}
            for a in v1s for b in v2s]
    scored = [r for r in rows if r["val_acc"] is not None]
    best = max(scored, key=lambda r: r["val_acc"]) if scored else None
    for r in rows:
        r["best"] = int(r is best)
    cell = {(r[p1], r[p2]): r for r in rows}
    mark = lambda r: f"**{pct(r, 'val', args.seeds)}** (best)" if r["best"] else pct(r, "val", args.seeds)  # noqa: E731
    table = md_table([f"{p1} \\ {p2}"] + v2s, [[a] + [mark(cell[a, b]) for b in v2s] for a in v1s])
    table += ["", f"val accuracy (%); best: {p1}={best[p1]}, {p2}={best[p2]}" if best else "every cell failed"]

    def plot(path):
        plt = pyplot()
        z = [[100 * cell[a, b]["val_acc"] if cell[a, b]["val_acc"] is not None else math.nan for b in v2s]
             for a in v1s]
        fig, ax = plt.subplots(figsize=(1.3 * len(v2s) + 2.5, 1.0 * len(v1s) + 1.8))
        im = ax.imshow(z, cmap="viridis")
        for i, a in enumerate(v1s):
            for j, b in enumerate(v2s):
                r = cell[a, b]
                ax.text(j, i, pct(r, "val", args.seeds).replace(" ± ", "\n± "), ha="center", va="center",
                        color=text_colour(im, z[i][j]), fontsize=8, fontweight="bold" if r["best"] else "normal")
                if r["best"]:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="k", lw=3))
        ax.set_xticks(range(len(v2s)), v2s)
        ax.set_yticks(range(len(v1s)), v1s)
        ax.set_xlabel(p2)
        ax.set_ylabel(p1)
        ax.set_title("val accuracy (%), best outlined in black")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        cli.save_figure(fig, path, dpi=90)

    return "Grid", table, rows, plot


def synth_to_real(args, base):
    """Every source x background cell trains on `--synthetic-on` composites only (--synthetic-ratio
    1: no photo in any batch) and is scored on the real val photos, which no composite is made from."""
    if base.dataset != "folder":
        raise cli.UsageError("synth-to-real scores synthetic digits on a folder of real digit photos (--data-dir)")
    tag = lambda b: os.path.basename(os.path.normpath(b)).replace(os.sep, "_")  # noqa: E731 (a DIR by its name)
    rows = [dict(source=s, backgrounds=b, **summarize(run_cell(
                args, f"{s}_{tag(b)}", ["--synthetic-n", str(args.synthetic_on), "--synthetic-ratio", "1",
                                        "--synthetic-source", s, "--backgrounds", b])))
            for s in args.sources for b in args.backgrounds_list]
    if args.reference:
        rows.append(dict(source="real photos", backgrounds="-", **summarize(run_cell(args, "real", ["--synthetic-n", "0"]))))
    cell = {(r["source"], r["backgrounds"]): r for r in rows}
    table = md_table(["source \\ backgrounds"] + [tag(b) for b in args.backgrounds_list],
                     [[s] + [pct(cell[s, b], "val", args.seeds) for b in args.backgrounds_list] for s in args.sources])
    table += ["", f"real val accuracy (%) of a model trained on {args.synthetic_on} synthetic images only"]
    if args.reference:
        table[-1] += (f"; the same budget on the {cell['real photos', '-']['n_train']} real training photos: "
                      f"{pct(cell['real photos', '-'], 'val', args.seeds)}")

    def plot(path):
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(1.6 * len(args.backgrounds_list) * len(args.sources) / 2 + 3, 4))
        width = 0.8 / len(args.sources)
        for k, s in enumerate(args.sources):
            ax.bar([i + (k - (len(args.sources) - 1) / 2) * width for i in range(len(args.backgrounds_list))],
                   [100 * (cell[s, b]["val_acc"] or 0) for b in args.backgrounds_list], width,
                   yerr=[100 * (cell[s, b]["val_acc_std"] or 0) for b in args.backgrounds_list], capsize=3,
                   label=s, color=f"C{k}")
        if args.reference and cell["real photos", "-"]["val_acc"] is not None:
            ax.axhline(100 * cell["real photos", "-"]["val_acc"], color="k", ls="--", label="real photos")
        ax.set_xticks(range(len(args.backgrounds_list)), [tag(b) for b in args.backgrounds_list])
        ax.set_ylabel("real val accuracy (%)")
        ax.set_title("trained on synthetic digits only, scored on real photos")
        ax.legend()
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)

    return "Synthetic to real", table, rows, plot


def clean(args, base):
    """Per seed, in <out>/seed<k>/: round0/ trains on the labels as given; round r reviews the run of
    round r-1 out of fold (analyze.py --folds' fold runs, in its folds/), writes the corrections it
    proposes on top of the earlier ones to round<r>.csv (a file you already edited there is kept and
    used) and trains round<r>/ with them. With --flip, flips.csv/.json plant and record the noise and
    clean/ trains on the true labels, so the table can say how much of the gap each round closed."""
    if args.planning:
        return None
    rows = [clean_seed(args, base, seed) for seed in range(args.seeds)]
    rounds = range(1, args.rounds + 1)
    acc = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    stages = (["clean"] if args.flip else []) + ["r0"] + [f"r{r}" for r in rounds]
    names = {"clean": "clean labels", "r0": "noisy (round 0)" if args.flip else "as given (round 0)"}
    name = lambda s: names.get(s, f"round {s[1:]}")  # noqa: E731
    header = ["seed"] + [name(s) for s in stages]
    body = [[r["seed"]] + [acc(r[f"{s}_val_acc"]) for s in stages] for r in rows]
    means = []
    if len(rows) > 1:  # mean ± std over the seeds that reached each stage
        mean, cells = {}, ["mean"]
        for s in stages:
            v = [r[f"{s}_val_acc"] for r in rows if r[f"{s}_val_acc"] is not None]
            mean[f"{s}_val_acc"] = statistics.fmean(v) if v else None
            cells.append(f"{100 * mean[f'{s}_val_acc']:.2f} ± {100 * statistics.stdev(v):.2f}"
                         + (f" ({len(v)} seeds)" if len(v) < len(rows) else "") if len(v) > 1 else acc(mean[f"{s}_val_acc"]))
        body.append(cells)
        means.append(mean)
    if args.flip:
        header += [f"gap closed, round {k}" for k in rounds]
        for line, r in zip(body, rows):
            line += [gap_closed(r, k) for k in rounds]
        if means:  # the gap of the means over the seeds that reached round k, so every term has the same seeds
            for k in rounds:
                done = [r for r in rows if r[f"r{k}_val_acc"] is not None]
                body[-1].append(gap_closed({f"{s}_val_acc": statistics.fmean(r[f"{s}_val_acc"] for r in done) if done
                                            else None for s in ("r0", "clean", f"r{k}")}, k)
                                + (f" ({len(done)} seed{'s' * (len(done) > 1)})" if 0 < len(done) < len(rows) else ""))
    table = ["val accuracy (%) of each run's best.pt (val labels never changed)", "", *md_table(header, body), ""]
    review_head = ["seed", "round", "reviewer accuracy (skill)", "flagged", "relabelled", "excluded"]
    if args.flip:
        review_head += ["precision", "recall", "wrong labels left in train", "clean labels lost"]
    review_rows = []
    for r in rows:
        for k in rounds:
            if r[f"r{k}_flagged"] is None:
                continue
            line = [r["seed"], k, f"{100 * r[f'r{k}_reviewer_acc']:.1f}% ({r[f'r{k}_skill']:.2f})"
                    + ("" if r[f"r{k}_shown"] else ", below the floor: withheld"),
                    r[f"r{k}_flagged"], r[f"r{k}_relabelled"], r[f"r{k}_excluded"]]
            if args.flip:
                line += [acc(r[f"r{k}_precision"]), acc(r[f"r{k}_recall"]),
                         None if r[f"r{k}_wrong_left"] is None else f"{r[f'r{k}_wrong_left']} of {r['flipped']} planted",
                         r[f"r{k}_clean_lost"]]
            review_rows.append(["-" if v is None else v for v in line])  # (withheld: nothing proposed)
    table += ["Each round's review of the run before it (precision and recall in %, of the labels still wrong "
              "when it ran):", "", *md_table(review_head, review_rows)]
    paired = [[r["seed"], name(s), r[f"{s}_only_r0"], r[f"{s}_only"], f"{r[f'{s}_mcnemar_p']:.3g}"]
              for r in rows for s in stages if s != "r0" and r.get(f"{s}_mcnemar_p") is not None]
    if paired:
        table += ["", "Each run against round 0, paired on the same val images (evaluate.py --compare):", "",
                  *md_table(["seed", "run", "right only by round 0", "right only by this run", "exact McNemar p"],
                            paired)]

    def plot(path):
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(1.2 * len(stages) + 3.5, 4))
        curve = lambda r: [math.nan if r[f"{s}_val_acc"] is None else 100 * r[f"{s}_val_acc"] for s in stages]  # noqa: E731
        for k, r in enumerate(rows):
            ax.plot(range(len(stages)), curve(r), "o-", color=f"C{k}", alpha=0.6, label=f"seed {r['seed']}")
        if means:
            ax.plot(range(len(stages)), curve(means[0]), "s-", color="black", lw=2.5, label="mean")
        ax.set_xticks(range(len(stages)), [name(s) for s in stages])
        ax.set_ylabel("val accuracy (%)")
        ax.set_title("the data loop: val accuracy after each round" + (f" ({args.flip:.0%} of labels flipped)"
                                                                        if args.flip else ""))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the lines, never over them
        fig.tight_layout()
        cli.save_figure(fig, path, dpi=90)

    return "The data loop", table, rows, plot


def gap_closed(row, k):
    """Round k's share of the val-accuracy gap between the noisy and the clean labels, in %."""
    noisy, clean_, now = row["r0_val_acc"], row["clean_val_acc"], row[f"r{k}_val_acc"]
    if None in (noisy, clean_, now) or clean_ == noisy:
        return "-"
    return f"{100 * (now - noisy) / (clean_ - noisy):.0f}%"


def without_option(argv, option):
    """`argv` without `option VALUE` (or `option=VALUE`)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def train_stage(args, seed, folder, corrections, label):
    """One run of the loop, trained with `corrections` (a file or None) in `folder`; its results.
    The file's hash is part of the settings, so an edited file is never taken for the one a
    finished run used."""
    argv = (without_option(args.train_args, "--corrections") + (["--corrections", corrections] if corrections else [])
            + ["--seed", str(seed)])
    record = dict(parse_train_args(argv), corrections_sha256=C.file_hash(corrections) if corrections else None)

    def run(resume):
        targs = train.get_args_parser().parse_args(argv + ["--save-dir", folder])
        targs.resume = resume
        return {"results": train.main(targs)}
    return run_in_folder(folder, "settings", record, run, label)["results"]


def plant_flips(args, base, folder, seed):
    """flips.csv: --flip of the training labels changed to another class, uniformly, by a generator
    seeded with the run's seed (val untouched); flips.json: every training image's true label and
    which were flipped. Returns that record."""
    data = D.build_datasets(D.data_config(train.resolve_defaults(train.get_args_parser().parse_args(
        without_option(args.train_args, "--corrections")))), augment="none")
    ds, classes = D.real_part(data.train), data.classes
    g = torch.Generator().manual_seed(1000 + seed)
    n = round(args.flip * len(ds))
    picked = torch.randperm(len(ds), generator=g)[:n]
    shift = torch.randint(1, len(classes), (n,), generator=g)
    labels = ds.targets
    paths = [C.row_path(ds.path(i)) for i in range(len(ds))]
    given = {paths[i]: classes[(int(labels[i]) + int(d)) % len(classes)] for i, d in zip(picked.tolist(), shift.tolist())}
    C.write_table(os.path.join(folder, "flips.csv"), {p: (c, None) for p, c in given.items()},
                  f"{n} of {len(ds)} training labels flipped (experiments.py clean --flip {args.flip:g}, seed {seed})")
    record = {"true": {p: classes[int(c)] for p, c in zip(paths, labels)}, "flipped": sorted(given)}
    cli.write_json(os.path.join(folder, "flips.json"), record)
    return record


def review_run(args, base, folder):
    """The out-of-fold review of the run in `folder` (analyze.py --folds' fold runs, in folder/folds/):
    (training paths, their labels as trained, probabilities, suspects, suggested classes, quality, classes)."""
    device = get_device(base.device)
    _, ckpt, data = E.load_run(os.path.join(folder, "best.pt"), device)
    ds = E.eval_splits(data)["train"]
    fargs = argparse.Namespace(folds=args.folds, fold_epochs=args.fold_epochs or 2 * ckpt["args"]["epochs"],
                               device=base.device, amp=None, batch_size=256)
    probs, fold = A.out_of_fold_probs(fargs, ckpt, data, ds, folder, device)
    labels = ds.targets
    suspect, suggested = A.confident_learning(probs, labels)
    q = A.review_quality(probs, labels, fold)
    q.update(reviewer=f"{args.folds} fold models (out of fold)", flagged=int(suspect.sum()))
    return [C.row_path(ds.path(i)) for i in range(len(ds))], labels, probs, suspect, suggested, q, data.classes


def clean_seed(args, base, seed):
    """The loop for one seed (see clean); returns its row of the tables."""
    folder = os.path.join(args.out, f"seed{seed}")
    os.makedirs(folder, exist_ok=True)
    row = {"seed": seed, "clean_val_acc": None, "flipped": None}
    for k in range(args.rounds + 1):
        row.update({f"r{k}_{m}": None for m in ("val_acc", "flagged", "relabelled", "excluded", "reviewer_acc", "skill",
                                                 "shown", "precision", "recall", "wrong_left", "clean_lost")} if k else
                   {"r0_val_acc": None})
    truth, current = None, base.corrections
    if args.flip:
        truth = plant_flips(args, base, folder, seed)
        row["flipped"] = len(truth["flipped"])
        row["clean_val_acc"] = train_stage(args, seed, os.path.join(folder, "clean"), None,
                                           f"seed {seed}: clean labels")["val"]["acc"]
        current = os.path.join(folder, "flips.csv")
    table = C.read_table(current) if current else {}
    run = os.path.join(folder, "round0")
    row["r0_val_acc"] = train_stage(args, seed, run, current, f"seed {seed} round 0")["val"]["acc"]
    for k in range(1, args.rounds + 1):
        paths, labels, probs, suspect, suggested, q, classes = review_run(args, base, run)
        print(A.review_summary(f"seed {seed} round {k}: train", q))
        row.update({f"r{k}_flagged": q["flagged"], f"r{k}_reviewer_acc": q["accuracy"], f"r{k}_skill": q["skill"],
                    f"r{k}_shown": q["shown"]})
        if truth:
            wrong = {p for p, c in zip(paths, labels.tolist()) if classes[c] != truth["true"][p]}
            hit = sum(paths[i] in wrong for i in suspect.nonzero().flatten().tolist())
            row[f"r{k}_precision"] = hit / q["flagged"] if q["flagged"] else None
            row[f"r{k}_recall"] = hit / len(wrong) if wrong else None
        if not q["shown"]:
            cli.warn(f"seed {seed}: the review of round {k - 1} is below the floor: no corrections proposed, the loop "
                     f"stops here (more --fold-epochs or a stronger --model)")
            break
        proposal = C.propose(paths, labels, probs, suspect, suggested, classes, args.relabel_above)
        row[f"r{k}_relabelled"] = sum(w is None for _, w in proposal.values())
        row[f"r{k}_excluded"] = len(proposal) - row[f"r{k}_relabelled"]
        proposed = C.merged(table, proposal)
        what = (f"round {k} of experiments.py clean (seed {seed}): {row[f'r{k}_relabelled']} relabelled, "
                f"{row[f'r{k}_excluded']} excluded on top of {os.path.basename(current) if current else 'no corrections'}")
        C.write_table(os.path.join(folder, f"round{k}-proposed.csv"), proposed, what)
        current = os.path.join(folder, f"round{k}.csv")
        if os.path.isfile(current) and C.read_table(current) != proposed:
            print(f"{current} differs from round{k}-proposed.csv (edited): trained as it is")
        elif not os.path.isfile(current):
            C.write_table(current, proposed, what)
        table = C.read_table(current)
        if truth:
            row[f"r{k}_wrong_left"], row[f"r{k}_clean_lost"] = label_damage(table, truth)
        if args.propose_only and k == args.rounds:
            print(f"wrote {current}: review it (python analyze.py {os.path.join(run, 'best.pt')}, then load it on "
                  f"dashboard.html), then run the same command without --propose-only")
            break
        run = os.path.join(folder, f"round{k}")
        row[f"r{k}_val_acc"] = train_stage(args, seed, run, current, f"seed {seed} round {k}")["val"]["acc"]
    row.update(paired_with_round0(folder, ["clean"] * bool(args.flip) + [f"r{k}" for k in range(1, args.rounds + 1)],
                                  row, get_device(base.device)))
    return row


def paired_with_round0(folder, stages, row, device):
    """Each finished stage's val predictions against round 0's, paired on the same images (evaluate.py
    --compare's numbers, on the labels it would score): <stage>_only_r0 (right only by round 0), <stage>_only
    (right only by the stage) and <stage>_mcnemar_p (exact McNemar p), None for a stage that did not run."""
    preds, targets = {}, {}
    for s in ["r0"] + stages:
        if row[f"{s}_val_acc"] is not None:
            model, _, data = E.load_run(os.path.join(folder, s if s == "clean" else f"round{s[1:]}", "best.pt"), device)
            preds[s] = E.collect(model, data.val, device)["preds"]
            targets[s] = (data.val.targets, getattr(data.val, "original_targets", None))  # an edited round may relabel val
    out = {}
    for s in stages:
        r = {}
        if s in preds:
            (_, labels), *_ = E.compared_labels([targets["r0"], targets[s]])[0]  # the verdict's labels
            r = E.paired_numbers(preds["r0"], preds[s], labels)
        out.update({f"{s}_only_r0": r.get("only_a"), f"{s}_only": r.get("only_b"), f"{s}_mcnemar_p": r.get("mcnemar_p")})
    return out


def label_damage(table, truth):
    """(planted flips still wrong in training, correct training labels now wrong or excluded) after `table`."""
    flipped, wrong_left, lost = set(truth["flipped"]), 0, 0
    for p, true in truth["true"].items():
        label, weight = table.get(p, (None, None))
        kept, right = weight != 0, (label or true) == true
        if p in flipped:
            wrong_left += kept and not right
        else:
            lost += not (kept and right)
    return wrong_left, lost


EXPERIMENTS = {"learning-curve": learning_curve, "ablation": ablation, "grid": grid, "synth-to-real": synth_to_real,
               "clean": clean}


def main(args):
    for k, v in (("train_args", []), ("command", f"python experiments.py {args.experiment} ..."), ("planning", False)):
        if not hasattr(args, k):
            setattr(args, k, v)
    args.out = args.out or os.path.join("runs", args.experiment)
    if args.seeds < 1:
        raise cli.UsageError("--seeds must be at least 1")
    if args.experiment == "ablation" and args.synthetic_on < 1:
        raise cli.UsageError(f"--synthetic-on must be >= 1, got {args.synthetic_on}")
    cli.check_folder_arg(args.out, "--out")
    base = train.get_args_parser().parse_args(args.train_args)  # checks the passed-through options
    train.check_args(train.resolve_defaults(train.get_args_parser().parse_args(args.train_args)))  # and their ranges
    if base.dataset == "folder" and base.data_dir:  # the sweep's run folders and files go to --out
        out, data = os.path.realpath(args.out), os.path.realpath(base.data_dir)
        if out == data or out.startswith(data.rstrip(os.sep) + os.sep):
            raise cli.UsageError(f"--out {args.out} is inside --data-dir {base.data_dir}: no tool writes into its inputs")
    if args.experiment == "clean":
        for name, ok, need in (("rounds", args.rounds >= 1, ">= 1"), ("folds", args.folds >= 2, ">= 2"),
                               ("fold-epochs", args.fold_epochs is None or args.fold_epochs >= 1, ">= 1"),
                               ("relabel-above", 0 < args.relabel_above <= 1, "in (0, 1]"),
                               ("flip", 0 <= args.flip < 1, "in [0, 1)")):
            if not ok:
                raise cli.UsageError(f"--{name} must be {need}, got {getattr(args, name.replace('-', '_'))}")
        if args.flip and base.corrections:
            raise cli.UsageError("--flip plants noise in the data's own labels, to measure the loop: give no --corrections")
    if base.dry_run:
        raise cli.UsageError("--dry-run makes no results to compare; run train.py --dry-run instead")
    if args.experiment == "grid":
        args.grid = args.grid or DEFAULT_GRID
        if len(args.grid) != 2 or args.grid[0][0] == args.grid[1][0]:
            raise cli.UsageError("grid takes two different --grid NAME=V1,V2,...")
        for name, _ in args.grid:  # (its values are checked with every cell's options, below)
            if name in ("seed", "save_dir", "resume"):
                raise cli.UsageError(f"--{name.replace('_', '-')} is set by experiments.py, not a grid axis")
            if f"--{name.replace('_', '-')}" not in train.get_args_parser()._option_string_actions:
                raise cli.UsageError(f"--grid {name}: train.py has no option --{name.replace('_', '-')}")
    args.planning = True  # every cell's options and folder are checked before the first one trains
    EXPERIMENTS[args.experiment](args, base)
    args.planning = False
    os.makedirs(args.out, exist_ok=True)

    title, table, rows, plot = EXPERIMENTS[args.experiment](args, base)
    stem = os.path.join(args.out, args.experiment.replace("-", "_"))
    md = "\n".join([f"# {title}", "", f"`{args.command}`", "",
                    f"seeds: {args.seeds} (train --seed {'0' if args.seeds == 1 else f'0..{args.seeds - 1}'}); accuracy in %"
                    + (", mean ± std (sample std) over seeds" if args.seeds > 1 else ""), "", *table]) + "\n"
    with cli.atomic_write(stem + ".md") as f:
        f.write(md)
    with cli.atomic_write(stem + ".csv") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(stem + ".png")
    print("\n" + md + f"\nwritten: {stem}.md, .csv, .png")
    if args.seeds > 1 and args.experiment != "clean":  # (clean's runs answer another question than an ensemble)
        write_ensemble_report(args, stem, get_device(base.device))
    return rows


if __name__ == "__main__":
    cli.run_main(main, parse_args, interrupted=lambda e: f"run the same command again to go on ({e.last_pt} resumes)"
                 if isinstance(e, train.Interrupted) else None)
