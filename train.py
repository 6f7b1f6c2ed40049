"""Train an image classifier from scratch: the hand-written loop.

    python train.py --model resnet18 --epochs 200 --synthetic-n 9000          # photo folder
    python train.py --dataset mnist --mnist-root ../shared/data --model net   # MNIST

Structure after torchvision's references/classification/train.py: get_args_parser(), main(args),
train_one_epoch() and evaluate(). Each epoch's randomness (shuffling, augmentation, dropout,
mixup) is seeded from (--seed, epoch), so `--resume last.pt` continues exactly as a run that was
never stopped (on CPU; GPU kernels may be non-deterministic). Ctrl-C finishes the current step,
writes last.pt with the position in the epoch and exits 130; `--resume` goes on from that step.

`torchrun --nproc_per_node=N train.py ...` trains with DistributedDataParallel: one process per
GPU (or N CPU processes over gloo), each on its share of every epoch; rank 0 writes the files.
"""
import argparse
import contextlib
import csv
import math
import os
import shlex
import signal
import sys
import threading
import time

import torch
import torch.nn.functional as F

import data as D
from model import (AMP_CHOICES, CheckpointError, all_finite, all_reduce_sum, autocast, build_model,
                   count_parameters, ddp, distributed, from_main_process, img_size_error, is_distributed,
                   is_main_process, list_models, load_checkpoint, metrics, model_kwargs, needs_grad_scaler, predict,
                   rank_and_world, resolve_amp, save_checkpoint, summary_line, use_channels_last)


class TrainingError(Exception):
    """A run that cannot start (bad settings) or go on (a non-finite loss): one line, checkpoints kept."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, handled: training stopped after a step and `last_pt` records where."""

    def __init__(self, last_pt):
        super().__init__(last_pt)
        self.last_pt = last_pt


class SigintStop:
    """While `armed` (the epochs), the first Ctrl-C (SIGINT) only sets `requested`: the loop
    finishes its optimizer step, writes last.pt and stops. Otherwise, and on a second Ctrl-C,
    SIGINT raises KeyboardInterrupt as usual. A context manager, so the previous handler is back
    however main() ends (experiments.py calls it in-process)."""

    def __init__(self, enabled=True):
        # only the main thread may set handlers; under torchrun, Ctrl-C reaches every process
        # at a different step and torchrun stops them all, so there the default is kept
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.armed = self.requested = False

    def __enter__(self):
        if self.enabled:
            self.pid = os.getpid()
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame):
        if os.getpid() != self.pid:
            # a forked DataLoader worker inherits this handler, and a terminal's Ctrl-C reaches
            # the whole process group: the main process stops the run, the worker carries on
            return
        if self.requested or not self.armed:
            raise KeyboardInterrupt
        self.requested = True
        # os.write, not print: the handler may run in the middle of another write to stderr
        os.write(2, b"\nCtrl-C: stopping after this step and saving last.pt (Ctrl-C again to abort)\n")


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description="Train an image classifier from scratch.", add_help=add_help)
    D.add_data_args(p)
    p.add_argument("--augment", default=None, choices=D.AUGMENT_PRESETS,
                   help="augmentation preset (default: strong for folders, light for MNIST)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="resnet18", choices=list_models())
    g.add_argument("--drop-rate", type=float, default=None, help="dropout before the classifier")
    g.add_argument("--head", default=None, choices=["linear", "mlp"], help="resnet18 classifier head")
    g.add_argument("--width", type=int, default=None, help="base width of `net`")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd", "adadelta"])
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default: adamw 1e-3, sgd 0.1, adadelta 1.0)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--label-smoothing", type=float, default=0.05)
    g.add_argument("--mixup-alpha", type=float, default=0.2)
    g.add_argument("--mix-prob", type=float, default=0.2, help="probability that a batch is mixed up")
    g.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this")
    g.add_argument("--scheduler", default="cosine", choices=["cosine", "step", "restarts"])
    g.add_argument("--warmup-epochs", type=float, default=5)
    g.add_argument("--min-lr", type=float, default=1e-6)
    g.add_argument("--step-size", type=int, default=1, help="--scheduler step: epochs per decay")
    g.add_argument("--gamma", type=float, default=0.7, help="--scheduler step: decay factor")
    g.add_argument("--t0", type=int, default=10, help="--scheduler restarts: epochs of the first cycle")
    g.add_argument("--t-mult", type=int, default=2, help="--scheduler restarts: cycle growth")
    g.add_argument("--sample-weights", default=None,
                   help="CSV of path,weight for training samples (weight 0 drops one from the loss)")
    g = p.add_argument_group("run")
    g.add_argument("--patience", type=int, default=50, help="early stopping: epochs without a better val accuracy")
    g.add_argument("--save-dir", default="checkpoints")
    g.add_argument("--resume", default=None, help="continue from a last.pt")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run in --save-dir (its checkpoints, history and figures); without it, "
                        "a --save-dir that holds a run is refused")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None, help="force cuda / mps / cpu (default: the best available)")
    g.add_argument("--workers", type=int, default=None, help="data-loader processes (default: auto)")
    g.add_argument("--threads", type=int, default=None,
                   help="intra-op CPU threads of the training process (default: $OMP_NUM_THREADS if set, else "
                        "every core; 1 on a machine other jobs share)")
    g.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                   help="mixed precision: auto = bf16 on a CPU with native bf16 (AVX512-BF16/AMX) and on CUDA "
                        "where supported, else fp16 with a GradScaler on CUDA/MPS, else fp32 (off)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the training model (default: off, see README \"Speed on a CPU\")")
    g.add_argument("--device-data", action="store_true",
                   help="hold the training images on the device and augment whole batches there "
                        "(much faster, also on CPU; random streams differ from the torchvision presets)")
    g.add_argument("--eval-test", action="store_true",
                   help="also score the test split after every epoch, logged as test_loss/test_acc in "
                        "history.csv (learning curves, time-to-accuracy); never used to pick best.pt")
    g.add_argument("--dry-run", action="store_true", help="one batch of train and val, then stop")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


DEFAULT_LR = {"adamw": 1e-3, "sgd": 0.1, "adadelta": 1.0}


def resolve_defaults(args):
    """Fill the defaults that depend on other arguments (recorded resolved in the checkpoint)."""
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be >= 1")
    if args.augment is None:
        args.augment = "light" if args.dataset == "mnist" else "strong"
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if not (args.lr > 0 and math.isfinite(args.lr)) or not args.min_lr >= 0:
        raise TrainingError(f"--lr must be > 0 and --min-lr >= 0 (got {args.lr}, {args.min_lr})")
    if args.drop_rate is None and args.model == "resnet18":
        args.drop_rate = 0.2
    check_args(args)
    if args.workers is None:
        # CPU: the model needs the cores (set_threads), so loader processes only take the
        # per-sample augmentation off it, half the cores at most;
        # CUDA: decode/augment in parallel with the GPU.
        args.workers = min(8, os.cpu_count() or 1) if torch.cuda.is_available() else (
            0 if args.augment == "none" else max(1, cpu_cores() // 2))
    return args


def cpu_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(args, device):
    """Intra-op threads of this process: --threads, else every core (torch's own default). On the
    idle 2-core machine, resnet18 @128 per-sample `strong` trained at 86-93 img/s with 2 threads
    and 0, 1 or 2 loader workers, and at 77 img/s with 1 thread + 1 worker (README "Speed on a
    CPU"): a worker needs a fraction of a core. On a machine other jobs share, an intra-op thread
    that waits for a core stalls every op of the step; give such runs --threads 1. OMP_NUM_THREADS,
    where set, is the user's choice and is kept. Recorded resolved in args."""
    if args.threads is None and device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        args.threads = cpu_cores()
    if args.threads is not None:  # (its range is checked with the other options, check_args)
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()


def check_args(args):
    """Every option's range, checked before any data is read (a harmful value is one line, never
    a silent wrong run, a hang or a traceback later)."""
    D.check_data_args(args)
    D.check_args(
        args,
        ("min_lr", args.min_lr <= args.lr, f"<= --lr ({args.lr})"),
        ("momentum", 0 <= args.momentum < 1, "in [0, 1)"),
        ("weight_decay", 0 <= args.weight_decay < math.inf, ">= 0"),
        ("label_smoothing", 0 <= args.label_smoothing < 1, "in [0, 1)"),
        ("mixup_alpha", 0 <= args.mixup_alpha < math.inf, ">= 0"),
        ("mix_prob", 0 <= args.mix_prob <= 1, "in [0, 1]"),
        ("clip_grad", args.clip_grad is None or args.clip_grad > 0, "> 0 (leave it out for no clipping)"),
        ("warmup_epochs", 0 <= args.warmup_epochs < math.inf, ">= 0"),
        ("step_size", args.step_size >= 1, ">= 1"),
        ("gamma", 0 < args.gamma <= 1, "in (0, 1]"),
        ("t0", args.t0 >= 1, ">= 1"),  # 0 would make lr_factor loop forever
        ("t_mult", args.t_mult >= 1, ">= 1"),
        ("patience", args.patience >= 1, ">= 1"),
        ("seed", args.seed >= 0, ">= 0"),
        ("workers", args.workers is None or args.workers >= 0, ">= 0"),
        ("drop_rate", args.drop_rate is None or 0 <= args.drop_rate < 1, "in [0, 1)"),
        ("width", args.width is None or args.width >= 1, ">= 1"),
        ("threads", args.threads is None or args.threads >= 1, ">= 1"))
    D.check_device(args.device)
    too_small = img_size_error(args.model, args.img_size or (28 if args.dataset == "mnist" else 128))
    if too_small:
        raise D.DataError(too_small)
    if args.sample_weights and not os.path.isfile(args.sample_weights):
        raise D.DataError(f"--sample-weights file not found: {args.sample_weights}")
    if args.resume and not os.path.isfile(args.resume):
        raise CheckpointError(f"checkpoint not found: {args.resume}")


# ----------------------------------------------------------------------------- schedule

def lr_factor(step, steps_per_epoch, args):
    """Multiplier of the peak lr at optimizer step `step` (stepped every iteration):
    linear warmup from 0 over --warmup-epochs, then cosine to --min-lr, StepLR-style decay,
    or cosine warm restarts (T_0, T_mult in epochs)."""
    warmup = args.warmup_epochs * steps_per_epoch
    if step < warmup:
        return step / warmup
    floor = args.min_lr / args.lr
    t = (step - warmup) / steps_per_epoch  # epochs since warmup
    if args.scheduler == "step":
        return args.gamma ** int(t // args.step_size)
    if args.scheduler == "restarts":
        cycle = args.t0
        while t >= cycle:
            t -= cycle
            cycle *= args.t_mult
        progress = t / cycle
    else:
        total = max(args.epochs * steps_per_epoch - warmup, 1)
        progress = min((step - warmup) / total, 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model, args):
    params = model.parameters()
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, nesterov=True)
    if args.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)


# ----------------------------------------------------------------------------- one epoch

def mixup(images, args):
    """With probability --mix-prob: (mixed images, perm, lam): sample i is lam * i + (1 - lam) * perm[i].
    Otherwise (images, None, 1)."""
    if args.mixup_alpha <= 0 or args.mix_prob <= 0 or torch.rand(()).item() >= args.mix_prob:
        return images, None, 1.0
    lam = torch.distributions.Beta(args.mixup_alpha, args.mixup_alpha).sample().item()
    perm = torch.randperm(images.size(0), device=images.device)
    return lam * images + (1 - lam) * images[perm], perm, lam


def mixup_loss(logits, labels, weights, perm, lam, label_smoothing):
    """(the batch loss, the per-sample loss for the logs). Mixup's soft-target cross-entropy is split
    by linearity into a term per source sample, each scaled by that sample's own weight, so a
    weight-0 sample's label never enters the loss; the mean is over the weighted samples only."""
    ce = lambda y: F.cross_entropy(logits.float(), y, reduction="none", label_smoothing=label_smoothing)  # noqa: E731
    per_sample = ce(labels)
    weighted = per_sample * weights
    if perm is not None:
        other = ce(labels[perm])
        weighted = lam * weighted + (1 - lam) * other * weights[perm]
        per_sample = lam * per_sample + (1 - lam) * other
    # sum(lam * w_i + (1 - lam) * w_perm(i)) = sum(w): the weights' total, whether mixed or not
    return weighted.sum() / weights.sum().clamp_min(1e-12), per_sample


RATE_WARMUP_STEPS = 2  # left out of the measured rate: the first steps allocate, and compile under --compile


def train_one_epoch(model, loader, optimizer, scheduler, scaler, device, epoch, args, num_classes,
                    max_steps=None, stop=None, resumed=None, on_rate=None):
    """One pass over `loader`. Returns loss and accuracy overall, per class and per source
    (0 real, 1 synthetic), over the samples of all processes; accuracy against the un-mixed labels.

    `on_rate(images_per_s, steps_done)` is called once, after the first few steps: the steady rate
    of this process (RATE_WARMUP_STEPS left out), measured over >= 5 steps and >= 5 s (or 50 steps).

    `resumed` is the `progress` of an epoch that Ctrl-C stopped (`loader` then yields the rest of
    its order). When `stop.requested` before the last step, it returns {"progress": ...} instead."""
    from tqdm import tqdm
    model.train()
    n_src = 2
    # per (source, class) sums of loss, hits and samples, kept on the device: no host sync per step
    sums = resumed["sums"].to(device) if resumed else torch.zeros(3, n_src * num_classes, device=device)
    loss_sum, correct, count = sums  # views: adding to them adds to `sums`
    first = resumed["step"] if resumed else 0
    last = first + len(loader) - 1
    counted_before = count.sum().item()
    t0, seen = time.perf_counter(), 0
    bar = tqdm(loader, desc=f"epoch {epoch}", initial=first, total=last + 1, leave=False,
               disable=args.quiet or not is_main_process(), dynamic_ncols=True)
    for step, (images, labels, sources, weights) in enumerate(bar, first):
        images = images.to(device, non_blocking=True)
        if use_channels_last(device, args.amp, images.shape[-1]):
            images = images.contiguous(memory_format=torch.channels_last)
        labels, weights = labels.to(device), weights.to(device, torch.float32)
        mixed, perm, lam = mixup(images, args)
        with autocast(device, args.amp):
            logits = model(mixed)
            loss, per_sample = mixup_loss(logits, labels, weights, perm, lam, args.label_smoothing)
        if not all_finite(loss):  # under torchrun: on any process stops every process
            raise TrainingError(f"loss is not finite ({loss.item()}) at epoch {epoch}, step {step}; stopped "
                                f"(best.pt and last.pt are the last good ones). Lower --lr or set --clip-grad.")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        key = sources.to(device) * num_classes + labels
        hit = (logits.argmax(1) == labels).float()
        loss_sum.index_add_(0, key, per_sample.detach().float())
        correct.index_add_(0, key, hit)
        count.index_add_(0, key, torch.ones_like(hit))
        seen += images.size(0)
        if on_rate is not None:
            done = step - first + 1
            if done == RATE_WARMUP_STEPS and step < last:
                sync(device)
                t_rate, seen_rate = time.perf_counter(), seen
            elif done > RATE_WARMUP_STEPS or step == last:
                sync(device)
                now = time.perf_counter()
                if done <= RATE_WARMUP_STEPS:  # a very short epoch: all of it
                    t_rate, seen_rate = t0, 0
                measured = done - RATE_WARMUP_STEPS
                if (measured >= 5 and now - t_rate >= 5) or measured >= 50 or step == last:
                    on_rate((seen - seen_rate) / (now - t_rate), done)
                    on_rate = None
        if step % 10 == 0 or step == last:
            bar.set_postfix(loss=f"{loss_sum.sum() / count.sum():.4f}", acc=f"{correct.sum() / count.sum():.4f}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        if max_steps and step + 1 >= max_steps:
            break
        if stop is not None and stop.requested and step < last:
            bar.close()
            return {"progress": {"epoch": epoch, "step": step + 1, "sums": sums.cpu()}}
    seconds = time.perf_counter() - t0
    all_reduce_sum(sums)  # torchrun: every process's samples, so all log the same numbers
    loss_sum, correct, count = sums.double().cpu()
    by_class = lambda t: t.view(n_src, num_classes).sum(0)  # noqa: E731
    by_source = lambda t: t.view(n_src, num_classes).sum(1)  # noqa: E731
    div = lambda a, b: (a / b.clamp_min(1)).tolist()  # noqa: E731
    return {
        "loss": (loss_sum.sum() / count.sum()).item(), "acc": (correct.sum() / count.sum()).item(),
        "loss_per_class": div(by_class(loss_sum), by_class(count)), "acc_per_class": div(by_class(correct), by_class(count)),
        "acc_per_source": div(by_source(correct), by_source(count)), "count_per_source": by_source(count).tolist(),
        "seconds": seconds, "images_per_s": (count.sum().item() - counted_before) / seconds,
    }


def sync(device):
    """Wait for queued GPU work, so that a time measured on the host is the device's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(model, loader, device, num_classes, label_smoothing=0.0):
    """Loss (plain cross-entropy), accuracy and per-class accuracy of `model` on `loader`."""
    out = predict(model, loader, device)
    m = metrics(out["logits"], out["labels"], [str(c) for c in range(num_classes)])
    return {"loss": m["loss"], "correct": m["correct"], "total": m["total"], "acc": m["accuracy"],
            "acc_per_class": [r["recall"] for r in m["per_class"].values()], "logits": out["logits"]}


# ----------------------------------------------------------------------------- history

def write_history(history, path):
    with D.atomic_write(path) as f:
        # the union of the rows' keys: a resume may add columns (--eval-test)
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in history for k in row)), restval="")
        w.writeheader()
        w.writerows(history)


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
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    ax[0].legend()
    ax[1].legend()
    fig.tight_layout()
    D.save_figure(fig, os.path.join(folder, "curves.png"), dpi=90)

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
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
        a.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    D.save_figure(fig, os.path.join(folder, "curves_detail.png"), dpi=90)


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


def plot_inputs(data, augment_fn, folder, n=8, copies=4, seed=0):
    """augmentations.png (originals beside augmented copies), mixup.png and, with synthetic
    data, synthetic.png: written at the start of a run so a user sees what the network is fed."""
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
    fig.tight_layout()
    D.save_figure(fig, os.path.join(folder, "augmentations.png"), dpi=80)

    others = idx[4:8] if len(idx) >= 8 else idx[1:] + idx[:1]  # a tiny dataset: pair neighbours
    pairs = [(augment_fn(real, i), augment_fn(real, j)) for i, j in zip(idx[:4], others)]
    lams = torch.distributions.Beta(0.2, 0.2).sample((len(pairs),)).tolist()
    fig, axes = plt.subplots(len(pairs), 3, figsize=(5, 1.7 * len(pairs)), squeeze=False)
    for r, ((a, b), lam) in enumerate(zip(pairs, lams)):
        for ax, x, t in zip(axes[r], (a, b, lam * a + (1 - lam) * b), ("a", "b", f"mixup, lambda={lam:.2f}")):
            ax.imshow(_denorm(x, data.mean, data.std), cmap="gray" if gray else None)
            ax.set_title(t, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    D.save_figure(fig, os.path.join(folder, "mixup.png"), dpi=80)

    if isinstance(data.train, torch.utils.data.ConcatDataset):
        import synth
        syn = data.train.datasets[1]
        k = min(64, len(syn))
        synth.preview_grid(syn.images[:k], [data.classes[int(c)] for c in syn.labels[:k]],
                           os.path.join(folder, "synthetic.png"))


# ----------------------------------------------------------------------------- main

def epoch_seed(args, epoch):
    return args.seed * 100_003 + epoch


RUN_FILES = ("best.pt", "last.pt", "history.csv", "curves.png", "curves_detail.png", "augmentations.png",
             "mixup.png", "synthetic.png")  # what a run writes to --save-dir


def check_save_dir(args):
    """A second run into the folder of an earlier one would replace its checkpoints and mix its files
    with the new ones: refused, unless it continues that run (--resume one of its checkpoints) or
    --overwrite says to replace it (train.py's own files are removed first)."""
    folder = args.save_dir
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise TrainingError(f"cannot create --save-dir {folder}: File exists")
    if args.dry_run:  # writes nothing
        return
    if args.resume and os.path.realpath(os.path.dirname(os.path.abspath(args.resume))) == os.path.realpath(folder):
        return
    found = [f for f in RUN_FILES[:3] if os.path.isfile(os.path.join(folder, f))]
    if found and not getattr(args, "overwrite", False):
        raise TrainingError(f"--save-dir {folder} holds a run ({', '.join(found)}): continue it with --resume "
                            f"{os.path.join(folder, 'last.pt')}, replace it with --overwrite, or choose another --save-dir")
    if found and is_main_process():
        for f in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, f))


def main(args):
    """Train and report; returns the final report's results (None on processes other than rank 0)."""
    args = resolve_defaults(args)
    check_save_dir(args)
    with distributed(args.device) as device, SigintStop(enabled=not is_distributed()) as stop:
        return run(args, device, stop)


def run(args, device, stop):
    """A run in three parts: build everything (or take it back from --resume), the epochs, the
    final report. Returns the report's results (None on processes other than rank 0)."""
    r = setup(args, device)
    dry = train_epochs(r, stop)
    if dry is not None or not r.main_process:
        return dry
    return final_report(r)


class Run:
    """What the parts of a run share: the data, the model and its optimisation state, where the
    epochs start (1, or after a resumed checkpoint's) and the history so far."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.main_process = self.rank == 0  # the one process that prints and writes files
        self.last_pt = os.path.join(self.args.save_dir, "last.pt")
        self.start_epoch, self.history, self.progress = 1, [], None
        self.best = {"acc": -1.0, "epoch": 0, "bad_epochs": 0}
        self.command = command_line(vars(self.args))

    def checkpoint(self, epoch, with_state, progress=None):
        """The checkpoint dict (model.py's format): best.pt without, last.pt with the training state."""
        args = self.args
        ck = {"model": args.model, "model_args": self.model_args, "state_dict": self.model.state_dict(),
              "classes": self.data.classes, "in_channels": self.data.in_channels, "img_size": self.data.img_size,
              "mean": list(self.data.mean), "std": list(self.data.std), "data": self.data.config, "args": vars(args),
              "command": self.command, "amp": args.amp,
              "epoch": epoch, "best_val_acc": self.best["acc"], "history": self.history}
        if with_state:
            ck.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                      scaler=self.scaler.state_dict(), rng={"torch": torch.get_rng_state()},
                      early_stopping=dict(self.best), world_size=self.world)
        if progress:
            ck["progress"] = progress
        return ck


def setup(args, device):
    """Data, model, optimizer and schedule; the run header; the state of --resume."""
    rank, world = rank_and_world()
    t_start = time.perf_counter()
    args.amp = resolve_amp(args.amp, device)  # recorded resolved: "bf16", "fp16" or "off"
    set_threads(args, device)
    torch.manual_seed(args.seed)
    data = D.build_datasets(D.data_config(args), args.augment)
    kwargs = model_kwargs(args.model, img_size=data.img_size, drop_rate=args.drop_rate, head=args.head, width=args.width)
    model = build_model(args.model, len(data.classes), data.in_channels, **kwargs).to(device)
    model.amp = args.amp  # what predict() (validation, the final report) runs in
    channels_last = use_channels_last(device, args.amp, data.img_size)  # where it measured faster
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, args)
    eval_bs = max(256, args.batch_size)
    order = D.train_order(data, args.batch_size, 0, 1, args.seed, rank, world)  # this process's; every epoch as long
    steps_per_epoch = -(-len(order) // args.batch_size)  # the order holds whole batches (and a kept partial one)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps_per_epoch, args))
    r = Run(args=args, device=device, rank=rank, world=world, t_start=t_start, data=data, model=model,
            model_args=kwargs, optimizer=optimizer, scheduler=scheduler,
            scaler=torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, args.amp)),
            eval_bs=eval_bs, steps_per_epoch=steps_per_epoch,
            val_loader=D.make_loader(data.val, eval_bs, workers=args.workers),
            test_loader=D.make_loader(data.test, eval_bs, workers=args.workers) if args.eval_test and data.test else None)
    try:
        os.makedirs(args.save_dir, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"cannot create --save-dir {args.save_dir}: {e.strerror}") from None
    if r.main_process:
        real = len(D.real_part(data.train))
        pool = f" + {len(data.train) - real} synthetic (ratio {args.synthetic_ratio})" if real < len(data.train) else ""
        groups = data.config.get("num_groups")
        print(f"{args.model}: {count_parameters(model):,} parameters | {real} train{pool}, {len(data.val)} val"
              f"{f' ({groups} photo groups)' if groups else ''}"
              f"{f', {len(data.test)} test' if data.test else ''} | {len(data.classes)} classes | device {device}"
              f" | amp {args.amp}{' (fp32)' if args.amp == 'off' else ''}"
              f"{' | channels_last' if channels_last else ''}{' | compile' if args.compile else ''}"
              f"{f' | {torch.get_num_threads()} threads' if device.type == 'cpu' else ''}, {args.workers} loader workers"
              f" | augment {args.augment}{f' | {world} processes' if world > 1 else ''}")
        used = sum(i < real for i in order)  # the real images (photos beside composites) an epoch trains on
        dropped = -(-real // world) - used if used else 0  # (ratio 1 uses no photo, by design)
        print(f"{steps_per_epoch} steps of {args.batch_size} per epoch"
              + (f" (the last partial batch, {dropped} {'photos' if pool else 'images'}, is left out of each epoch; "
                 "a new shuffle every epoch)"
                 if dropped > 0 else ""))
    if args.resume:
        resume(r)
    return r


def resume(r):
    """Take the training state of --resume (a last.pt of the same run) into `r`."""
    args, data = r.args, r.data
    ck = load_checkpoint(args.resume)
    if "optimizer" not in ck:
        raise CheckpointError(f"{args.resume} has no training state to resume (use last.pt)")
    if ck["model"] != args.model:
        raise CheckpointError(f"{args.resume} is a {ck['model']!r} run, not {args.model!r}")
    if ck["model_args"] != r.model_args or ck["args"].get("optimizer", args.optimizer) != args.optimizer:
        raise CheckpointError(f"{args.resume} was trained with --optimizer {ck['args'].get('optimizer')} and model "
                              f"settings {ck['model_args']}, not --optimizer {args.optimizer} and {r.model_args}: "
                              f"resume with the run's own --width / --drop-rate / --head / --optimizer")
    if ck["data"].get("split_hash") != data.config["split_hash"]:
        raise CheckpointError(f"{args.resume} was trained on another data split (data, --val-fraction, "
                              f"--split-seed or --train-fraction differ)")
    changed = [k for k in ("epochs", "seed", "batch_size", "lr", "scheduler", "augment", "synthetic_n",
                           "synthetic_ratio", "amp")
               if ck["args"].get(k) != getattr(args, k)]
    if changed:
        D.warn(f"resuming with other settings than {args.resume} had: "
               + ", ".join(f"--{k.replace('_', '-')} {ck['args'].get(k)} -> {getattr(args, k)}" for k in changed))
    r.model.load_state_dict(ck["state_dict"])
    r.optimizer.load_state_dict(ck["optimizer"])
    r.scheduler.load_state_dict(ck["scheduler"])
    r.scaler.load_state_dict(ck["scaler"])
    torch.set_rng_state(ck["rng"]["torch"])
    r.start_epoch, r.history, r.best = ck["epoch"] + 1, ck["history"], ck["early_stopping"]
    r.progress = ck.get("progress")  # where Ctrl-C stopped an epoch part-way
    if r.progress and r.world > 1:
        raise CheckpointError(f"{args.resume} stopped part-way through epoch {r.progress['epoch']}: "
                              f"resume it in one process (without torchrun)")
    if ck.get("world_size", 1) != r.world:
        D.warn(f"{args.resume} was written by a run of {ck.get('world_size', 1)} process(es), this one has "
               f"{r.world}: steps per epoch (so the lr schedule) and the sample order change")
    if r.main_process:
        at_step = f", step {r.progress['step']}" if r.progress else ""
        print(f"resumed from {args.resume} at epoch {r.start_epoch}{at_step}")


def time_estimate(r, images_per_s, steps_done, resumed):
    """The estimate line's numbers: the time spent so far (setup, data, compiling), the rest of this
    epoch and the later ones at the measured rate, and evaluation (a forward pass only: about a third
    of a training step's work per image) after each epoch and in the final report."""
    args, data = r.args, r.data
    epochs_to_run = args.epochs - r.start_epoch + 1
    epoch_s = r.steps_per_epoch * args.batch_size / images_per_s
    eval_n = len(data.val) + (len(data.test) if r.test_loader else 0)
    final_n = len(D.real_part(data.train)) + len(data.val) + (len(data.test) if data.test else 0)
    first = (r.steps_per_epoch - steps_done - (resumed["step"] if resumed else 0)) * args.batch_size / images_per_s
    total = (time.perf_counter() - r.t_start + first + (epochs_to_run - 1) * epoch_s
             + (epochs_to_run * eval_n + final_n) / (3 * images_per_s))
    if r.main_process:
        print(f"estimate: {images_per_s:.0f} img/s, {epoch_s:.0f} s/epoch, {format_seconds(total)} in all for "
              f"{epochs_to_run} epoch{'s' * (epochs_to_run != 1)} (early stopping aside)", flush=True)
    return {"est_images_per_s": images_per_s, "est_epoch_s": epoch_s, "est_total_s": total}


def train_epochs(r, stop):
    """The epochs: train, validate, keep best.pt / last.pt / history.csv, stop early. Returns the
    one-batch results under --dry-run, else None."""
    args, data, device, model = r.args, r.data, r.device, r.model
    num_classes = len(data.classes)
    if args.device_data:
        batch_augment = D.BatchAugment(args.augment, data.img_size, data.mean, data.std)
        device_loader = D.DeviceLoader(data.train, args.batch_size, device, batch_augment, drop_last=False)
        augment_one = lambda ds, i: batch_augment(ds.images[ds.indices[i:i + 1]])[0]  # noqa: E731
    else:
        augment_one = lambda ds, i: ds[i][0]  # noqa: E731
    if r.main_process and not args.dry_run and not args.resume:
        plot_inputs(data, augment_one, args.save_dir, seed=args.seed)
    net = ddp(model, device)  # what trains; `model` (the same parameters) is what is evaluated and saved
    if args.compile:
        net = torch.compile(net)  # compiles on the first step(s): the time estimate skips those
    estimate = {}  # the time estimate, once measured: printed, and a column of history.csv
    best = r.best
    stop.armed = True
    for epoch in range(r.start_epoch, args.epochs + 1):
        if best["bad_epochs"] >= args.patience:  # early-stopped (also a resumed run that had stopped)
            break
        resumed = r.progress if epoch == r.start_epoch else None  # the rest of an epoch that Ctrl-C stopped
        seed = epoch_seed(args, epoch)
        if not resumed:  # (a resumed epoch goes on with the random state saved when it stopped)
            torch.manual_seed(seed * r.world + r.rank)  # augmentation, dropout, mixup: a stream per process
        order = D.train_order(data, args.batch_size, seed, epoch, args.seed, r.rank, r.world)  # this process's share
        order = order[resumed["step"] * args.batch_size:] if resumed else order
        if args.device_data:
            loader = device_loader
            loader.sampler = order
        else:
            loader = D.make_loader(data.train, args.batch_size, sampler=order, workers=args.workers,
                                   generator=torch.Generator().manual_seed(seed * r.world + r.rank),  # worker seeds
                                   drop_last=False)  # train_order already decided
        on_rate = None if estimate or args.dry_run else (
            lambda rate, steps: estimate.update(time_estimate(r, rate, steps, resumed)))
        try:
            train = train_one_epoch(net, loader, r.optimizer, r.scheduler, r.scaler, device, epoch, args, num_classes,
                                    max_steps=1 if args.dry_run else None, stop=stop, resumed=resumed, on_rate=on_rate)
        except torch.OutOfMemoryError:  # one line that says what to change, not an allocator traceback
            raise TrainingError(f"out of memory on {device} at --batch-size {args.batch_size}"
                                f"{' per process' if r.world > 1 else ''}: lower --batch-size (or --img-size"
                                f"{', or leave out --device-data' if args.device_data else ''})") from None
        if "progress" in train:  # Ctrl-C part-way through: last.pt records the step to go on from
            save_checkpoint(r.checkpoint(epoch - 1, with_state=True, progress=train["progress"]), r.last_pt)
            raise Interrupted(r.last_pt)
        # rank 0 scores the model it saves; the others take its numbers, so all stop early together
        val = None
        if r.main_process:
            val = evaluate(model, [next(iter(r.val_loader))] if args.dry_run else r.val_loader, device, num_classes)
        val = from_main_process(val)
        if args.dry_run:
            if r.main_process:
                print(f"dry run: train loss {train['loss']:.4f}, val loss {val['loss']:.4f}: one batch each, OK")
            return {"train": train, "val": val}
        test = evaluate(model, r.test_loader, device, num_classes) if r.test_loader and r.main_process else None
        lr = r.optimizer.param_groups[0]["lr"]
        r.history.append(dict(history_row(epoch, train, val, lr, data.classes, test), **estimate))
        improved = val["acc"] > best["acc"]
        if improved:
            best.update(acc=val["acc"], epoch=epoch, bad_epochs=0)
        else:
            best["bad_epochs"] += 1
        if r.main_process:
            if improved:
                save_checkpoint(r.checkpoint(epoch, with_state=False), os.path.join(args.save_dir, "best.pt"))
            save_checkpoint(r.checkpoint(epoch, with_state=True), r.last_pt)
            write_history(r.history, os.path.join(args.save_dir, "history.csv"))
            plot_history(r.history, data.classes, args.save_dir)
            print(f"epoch {epoch:3d}/{args.epochs} | train loss {train['loss']:.4f} acc {train['acc']:.4f} | "
                  f"val loss {val['loss']:.4f} acc {val['acc']:.4f}{' *' if improved else '  '} | "
                  f"lr {lr:.2e} | {train['seconds']:.1f}s {train['images_per_s']:.0f} img/s", flush=True)
            if best["bad_epochs"] >= args.patience:
                print(f"early stopping: no better val accuracy for {args.patience} epochs (best {best['acc']:.4f} "
                      f"at epoch {best['epoch']})")
        if stop.requested:  # Ctrl-C during evaluation or saving: stop at this epoch's end
            raise Interrupted(r.last_pt)
    stop.armed = False  # Ctrl-C during the report aborts it as usual: the checkpoints are complete
    return None


def final_report(r):
    """The assignment's Train / Val / Test lines, with the best weights on eval transforms."""
    args, data = r.args, r.data
    r.model.load_state_dict(load_checkpoint(os.path.join(args.save_dir, "best.pt"))["state_dict"])
    results = {}
    train_eval = D.real_part(data.train).with_transform(data.val.transform)
    for name, ds in (("Train", train_eval), ("Val", data.val), ("Test", data.test)):
        if ds is None:
            continue
        m = evaluate(r.model, D.make_loader(ds, r.eval_bs, workers=args.workers), r.device, len(data.classes))
        results[name.lower()] = {k: m[k] for k in ("loss", "correct", "total", "acc")}
        print(summary_line(name, m["loss"], m["correct"], m["total"]))
    return results


def format_seconds(s):
    """1 h 05 min, 12 min 30 s, 45 s"""
    s = round(s)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def command_line(args):
    """`python train.py ...` that repeats a run: the resolved arguments (a dict) that differ from
    the defaults. Stored in every checkpoint (report.py shows it)."""
    parts = ["python", "train.py"]
    for a in get_args_parser()._actions:
        if not a.option_strings or a.dest not in args or args[a.dest] == a.default:
            continue
        value = args[a.dest]
        if isinstance(a, argparse.BooleanOptionalAction):
            parts.append(a.option_strings[0 if value else 1])
        elif a.nargs == 0:  # store_true
            parts.append(a.option_strings[0])
        else:
            parts += [a.option_strings[0], str(value)]
    return shlex.join(parts)


def resume_command(argv, last_pt):
    """The command line `argv` (sys.argv) with `--resume last_pt` in place of any --resume."""
    kept, value_of_resume = [], False
    for a in argv[1:]:
        if not (value_of_resume or a == "--resume" or a.startswith("--resume=")):
            kept.append(a)
        value_of_resume = a == "--resume"
    return shlex.join(["python", argv[0], *kept, "--resume", last_pt])


if __name__ == "__main__":
    D.printable_stdout()
    try:
        main(get_args_parser().parse_args())
    except Interrupted as e:
        print(f"interrupted: resume with: {resume_command(sys.argv, e.last_pt)}", file=sys.stderr)
        sys.exit(130)  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C
    except (D.DataError, CheckpointError, TrainingError, OSError) as e:  # OSError: e.g. a full disk at history.csv
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
