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
import hashlib
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

import cli
import corrections as C
import data as D
import report
from augment import AUGMENT_PRESETS, BatchAugment, DeviceLoader
from checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from device import (AMP_CHOICES, all_finite, autocast, check_device, cpu_cores, ddp, distributed, from_main_process,
                    get_device, is_distributed, is_main_process, needs_grad_scaler, rank_and_world, resolve_amp,
                    set_threads, use_channels_last)
from evaluate import found_line, metrics, predict, summary_line
from meters import RATE_WARMUP_STEPS, EpochSums, RateMeter, conv_flops_per_s, format_seconds
from model import build_model, count_parameters, forward_cost, img_size_error, list_models, model_kwargs


class TrainingError(cli.UsageError):
    """A run that cannot start (bad settings) or go on (a non-finite loss): one line, checkpoints kept."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, handled: training stopped after a step and `last_pt` records where."""

    def __init__(self, last_pt):
        super().__init__(last_pt)
        self.last_pt = last_pt


def get_args_parser(add_help=True):
    p = cli.ArgumentParser(description="Train an image classifier from scratch.", add_help=add_help)
    D.add_data_args(p)
    p.add_argument("--augment", default=None, choices=AUGMENT_PRESETS,
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
                   help="CSV of path,weight for training samples (weight 0 drops one from the loss); "
                        "--corrections reads the same files and more")
    g.add_argument("--corrections", default=None, metavar="CSV",
                   help="CSV of path,label,weight rows (header required): relabel, exclude (weight 0), reweight, "
                        "or add an image from elsewhere; applied after the split (val keeps its images, "
                        "its labels are corrected); docs/data.md")
    g = p.add_argument_group("run")
    g.add_argument("--patience", type=int, default=50, help="early stopping: epochs without a better val accuracy")
    g.add_argument("--save-dir", default="checkpoints")
    g.add_argument("--resume", default=None, help="continue from a last.pt")
    g.add_argument("--keep-last", action=argparse.BooleanOptionalAction, default=True,
                   help="keep last.pt (the weights with the optimizer state, 2-3x best.pt's size: what --resume "
                        "needs) when the run ends; --no-keep-last removes it then (an interrupted run keeps it)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run in --save-dir (its checkpoints, history and figures); without it, "
                        "a --save-dir that holds a run is refused")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None, help="force cuda / mps / cpu (default: the best available)")
    g.add_argument("--workers", type=int, default=None, help="data-loader processes (default: auto)")
    g.add_argument("--threads", type=int, default=None,
                   help="intra-op CPU threads of the training process (default: $OMP_NUM_THREADS if set, else "
                        "the cores that other runs of this toolkit on the machine have not taken)")
    g.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                   help="mixed precision: auto = bf16 on a CPU with native bf16 (AVX512-BF16/AMX) and on CUDA "
                        "where supported, else fp16 with a GradScaler on CUDA/MPS, else fp32 (off)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the training model (default: off: RESULTS.md, \"Speed on a CPU\")")
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
# What an option left out becomes, from the other options (a dict of them): resolve_defaults fills
# these in, and command_line leaves them out again, so the stored command holds only real choices.
IMPLIED = {"augment": lambda a: "light" if a["dataset"] == "mnist" else "strong",
           "lr": lambda a: DEFAULT_LR[a["optimizer"]],
           "drop_rate": lambda a: 0.2 if a["model"] == "resnet18" else None}


def resolve_defaults(args):
    """Fill the defaults that depend on other arguments (recorded resolved in the checkpoint)."""
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be >= 1")
    for name, implied in IMPLIED.items():
        if getattr(args, name) is None:
            setattr(args, name, implied(vars(args)))
    if not (args.lr > 0 and math.isfinite(args.lr)) or not args.min_lr >= 0:
        raise TrainingError(f"--lr must be > 0 and --min-lr >= 0 (got {args.lr}, {args.min_lr})")
    check_args(args)
    if args.workers is None:
        # CPU: the model needs the cores (set_threads), so loader processes only take the
        # per-sample augmentation off it, half the cores at most;
        # CUDA: decode/augment in parallel with the GPU.
        args.workers = min(8, os.cpu_count() or 1) if torch.cuda.is_available() else (
            0 if args.augment == "none" else max(1, cpu_cores() // 2))
    return args


def check_args(args):
    """Every option's range, checked before any data is read (a harmful value is one line, never
    a silent wrong run, a hang or a traceback later)."""
    D.check_data_args(args)
    cli.check_args(
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
    check_device(args.device)
    img_size = args.img_size or (28 if args.dataset == "mnist" else 128)
    too_small = img_size_error(args.model, img_size)
    if too_small:
        raise cli.UsageError(too_small)
    check_step_memory(args, img_size)
    for option in ("sample_weights", "corrections"):
        path = getattr(args, option)
        if path and not os.path.isfile(path):
            raise cli.UsageError(f"--{option.replace('_', '-')} file not found: {path}")
    if args.resume and not os.path.isfile(args.resume):
        raise CheckpointError(f"checkpoint not found: {args.resume}")


def step_cost(args, img_size):
    """(FLOPs, bytes) of one training step: 3x the forward FLOPs of the batch (model.forward_cost), and
    the batch, its augmented copy and twice the activations backward keeps (gradients, workspace)."""
    channels = 1 if args.dataset == "mnist" else 3
    flops, acts = forward_cost(args.model, channels, img_size, **model_kwargs(
        args.model, drop_rate=args.drop_rate, head=args.head, width=args.width))
    return 3 * flops * args.batch_size, args.batch_size * (2 * channels * img_size ** 2 * 4 + 2 * acts)


def check_step_memory(args, img_size):
    """A training step that cannot fit in the memory of the device it runs on: one line now, not an
    out-of-memory error (or a machine swapping) after the data are loaded."""
    try:
        _, nbytes = step_cost(args, img_size)
    except (RuntimeError, ValueError, TypeError, OverflowError) as e:  # a layer past int64 (a huge --width)
        raise cli.UsageError(f"{args.model} cannot be built at --img-size {img_size}"
                             f"{f' with --width {args.width}' if args.width else ''}: {str(e).splitlines()[0]}") from None
    what = f"training {args.model} on batches of {args.batch_size} at --img-size {img_size}"
    device = get_device(args.device)
    if device.type == "cuda":
        cli.check_memory(nbytes, what, torch.cuda.get_device_properties(device).total_memory, f"GPU {device}")
    else:
        cli.check_memory(nbytes, what)


SLOW_STEP_FLOPS = 1e11  # below this a step takes under a few seconds even on one CPU core: no probe


def announce_step_time(r):
    """Before the first step: when the measured estimate (after RATE_WARMUP_STEPS + 5 steps) is more than
    half a minute away, an estimate from the device's measured convolution throughput; a warning past a
    minute a step."""
    flops, _ = step_cost(r.args, r.data.img_size)
    if flops < SLOW_STEP_FLOPS:
        return
    rate = conv_flops_per_s(r.device)
    step_s = flops / rate
    if step_s * (RATE_WARMUP_STEPS + 5) < 30:
        return
    line = (f"about {format_seconds(step_s)} per step, {format_seconds(step_s * r.steps_per_epoch)} per epoch "
            f"({flops / 1e12:.2f} TFLOP a step; {r.device} ran {rate / 1e9:.0f} GFLOP/s in a convolution probe)")
    if step_s > 60:
        cli.warn(f"slow steps ahead: {line}; a smaller --img-size or --batch-size, or a GPU, is faster")
    else:
        print(f"estimate before training: {line}", flush=True)


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


# ----------------------------------------------------------------------------- one epoch

class EpochInterrupted(Exception):
    """Ctrl-C part-way through an epoch: `progress` is where it stopped, stored in last.pt."""

    def __init__(self, progress):
        super().__init__(f"stopped at epoch {progress['epoch']}, step {progress['step']}")
        self.progress = progress


def train_one_epoch(model, loader, optimizer, scheduler, scaler, device, epoch, args, num_classes,
                    max_steps=None, stop=None, resumed=None, on_rate=None):
    """One pass over `loader` (the rest of it when `resumed`, the progress of an epoch Ctrl-C stopped).
    Returns loss and accuracy overall, per class and per source over the samples of all processes
    (against the un-mixed labels), the seconds and images/s. `on_rate` gets the steady rate once
    (meters.RateMeter). Raises EpochInterrupted when `stop.requested` before the last step."""
    model.train()
    sums = EpochSums(num_classes, device, resumed and resumed["sums"])
    first = resumed["step"] if resumed else 0
    last, counted_before = first + len(loader) - 1, sums.count()
    meter = RateMeter(device, first, last, on_rate)
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

        sums.add(sources.to(device), labels, logits, per_sample)
        meter.step(step, images.size(0))
        if step % 10 == 0 or step == last:
            loss_so_far, acc_so_far = sums.running()
            bar.set_postfix(loss=f"{loss_so_far:.4f}", acc=f"{100 * acc_so_far:.2f}%", img_s=f"{meter.images_per_s():.0f}")
        if max_steps and step + 1 >= max_steps:
            break
        if stop is not None and stop.requested and step < last:
            bar.close()
            raise EpochInterrupted({"epoch": epoch, "step": step + 1, "sums": sums.state()})
    seconds = time.perf_counter() - meter.t0
    result = sums.result()
    return dict(result, seconds=seconds, images_per_s=(sum(result["count_per_source"]) - counted_before) / seconds)


def evaluate(model, loader, device, num_classes):
    """Loss (plain cross-entropy), accuracy and per-class accuracy of `model` on `loader`."""
    out = predict(model, loader, device)
    m = metrics(out["logits"], out["labels"], [str(c) for c in range(num_classes)])
    return {"loss": m["loss"], "correct": m["correct"], "total": m["total"], "acc": m["accuracy"],
            "acc_per_class": [r["recall"] for r in m["per_class"].values()], "logits": out["logits"]}


# ----------------------------------------------------------------------------- the run

RUN_FILES = ("best.pt", "last.pt", "history.csv", "curves.png", "curves_detail.png", "augmentations.png",
             "mixup.png", "synthetic.png", C.RUN_COPY)  # what a run writes to --save-dir


def check_save_dir(args):
    """A second run into the folder of an earlier one would replace its checkpoints and mix its files
    with the new ones: refused, unless it continues that run (--resume one of its checkpoints) or
    --overwrite says to replace it. Returns whether an earlier run's files are to be replaced."""
    folder = args.save_dir
    if args.resume and os.path.realpath(os.path.dirname(os.path.abspath(args.resume))) == os.path.realpath(folder):
        return False
    found = [f for f in RUN_FILES[:3] if os.path.isfile(os.path.join(folder, f))]
    if found and not getattr(args, "overwrite", False):
        raise TrainingError(f"--save-dir {folder} holds a run ({', '.join(found)}): continue it with --resume "
                            f"{os.path.join(folder, 'last.pt')}, replace it with --overwrite, or choose another --save-dir")
    return bool(found)


def main(args):
    """Train and report; returns the final report's results (None on processes other than rank 0)."""
    given = dict(vars(args))  # before any default is resolved: what the stored command repeats
    args = resolve_defaults(args)
    if os.path.exists(args.save_dir) and not os.path.isdir(args.save_dir):
        raise TrainingError(f"cannot create --save-dir {args.save_dir}: File exists")
    writes = not args.dry_run and int(os.environ.get("RANK", "0")) == 0  # rank 0 writes the run's files
    with cli.folder_lock(args.save_dir, "--save-dir", "train.py run") if writes else contextlib.nullcontext():
        replace = writes and check_save_dir(args)
        with distributed(args.device) as device, cli.SigintStop(enabled=not is_distributed()) as stop:
            r = setup(args, device, command_line(given))
            if replace:  # only now: a new run that cannot start leaves the earlier one whole
                for f in RUN_FILES:
                    if not same_file(os.path.join(args.save_dir, f), args.corrections):  # never its own input
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(args.save_dir, f))
            if writes and args.corrections:
                keep_corrections(args, r.data)
            dry = train_epochs(r, stop)
            if dry is not None or not r.main_process:
                return dry
            results = final_report(r)
            finish(r)
            return results


def same_file(a, b):
    """Whether paths a and b (b may be None) name the same file (symlinks resolved)."""
    return b is not None and os.path.realpath(a) == os.path.realpath(b)


def keep_corrections(args, data):
    """<save-dir>/trained_corrections.csv: the exact bytes of the --corrections file this run trains with (the
    checkpoint's corrections_sha256), written atomically, so the run folder tells its corrections after the
    file is edited, renamed or gone, and evaluate.py / analyze.py rebuild the data from it then."""
    copy = os.path.join(args.save_dir, C.RUN_COPY)
    if same_file(copy, args.corrections):
        return  # trained with this folder's own copy (a --resume, an --overwrite): it is that file already
    with open(args.corrections, "rb") as f:
        raw = f.read()
    if hashlib.sha256(raw).hexdigest() != data.config["corrections_sha256"]:
        raise TrainingError(f"--corrections {args.corrections} changed while the run started (sha256 "
                            f"{data.config['corrections_sha256'][:12]} when read): start it again")
    with cli.atomic_write(copy, "wb") as f:
        f.write(raw)


@dataclass
class Run:
    """What the parts of a run share. The training state (model, optimizer, scheduler, scaler, the
    history, early stopping's best and where the epochs start) is what last.pt holds (`checkpoint`)."""
    args: argparse.Namespace
    device: torch.device
    data: D.Data
    model: torch.nn.Module
    model_args: dict
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    eval_bs: int
    val_loader: torch.utils.data.DataLoader
    test_loader: torch.utils.data.DataLoader | None
    t_start: float  # when setup began: the time estimate counts from here
    command: str  # `python train.py ...` that repeats the run (command_line)
    rank: int = 0
    world: int = 1
    start_epoch: int = 1
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"acc": -1.0, "epoch": 0, "bad_epochs": 0})
    progress: dict | None = None  # where Ctrl-C stopped epoch start_epoch (from --resume)

    @property
    def main_process(self):
        return self.rank == 0  # the one process that prints and writes files

    @property
    def last_pt(self):
        return os.path.join(self.args.save_dir, "last.pt")

    def checkpoint(self, epoch, with_state, progress=None):
        """The checkpoint dict (checkpoint.py's format): best.pt without, last.pt with the training state."""
        args, data = self.args, self.data
        ck = {"model": args.model, "model_args": self.model_args, "state_dict": self.model.state_dict(),
              "classes": data.classes, "in_channels": data.in_channels, "img_size": data.img_size,
              "mean": list(data.mean), "std": list(data.std), "data": data.config, "args": vars(args),
              "command": self.command, "amp": args.amp,
              "epoch": epoch, "best_val_acc": self.best["acc"], "history": self.history}
        if with_state:
            ck.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                      scaler=self.scaler.state_dict(), rng={"torch": torch.get_rng_state()},
                      early_stopping=dict(self.best), world_size=self.world)
        if progress:
            ck["progress"] = progress
        return ck


def setup(args, device, command):
    """Data, model, optimizer and schedule; the run header; the state of --resume. `command`: the
    `python train.py ...` the checkpoints store (command_line of the arguments as given)."""
    rank, world = rank_and_world()
    t_start = time.perf_counter()
    args.amp = resolve_amp(args.amp, device)  # recorded resolved: "bf16", "fp16" or "off"
    chosen = args.threads is not None
    args.threads, others = set_threads(args.threads, device)  # recorded resolved
    if others and not chosen and rank == 0:  # (a chosen --threads needs no advice)
        print(f"other runs of this toolkit hold {others} thread(s) on this machine's {cpu_cores()} cores: this one "
              f"takes {args.threads} (--threads N to choose)")
    torch.manual_seed(args.seed)
    data = D.build_datasets(D.data_config(args), args.augment)
    model_args = model_kwargs(args.model, img_size=data.img_size, drop_rate=args.drop_rate, head=args.head,
                              width=args.width)
    model = build_model(args.model, len(data.classes), data.in_channels, **model_args).to(device)
    model.amp = args.amp  # what predict() (validation, the final report) runs in
    if use_channels_last(device, args.amp, data.img_size):
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, args)
    order = D.train_order(data, args.batch_size, 0, 1, args.seed, rank, world)  # this process's; every epoch as long
    steps_per_epoch = -(-len(order) // args.batch_size)  # the order holds whole batches (and a kept partial one)
    eval_bs = max(256, args.batch_size)
    r = Run(args=args, device=device, data=data, model=model, model_args=model_args, optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps_per_epoch, args)),
            scaler=torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, args.amp)),
            steps_per_epoch=steps_per_epoch, eval_bs=eval_bs,
            val_loader=D.make_loader(data.val, eval_bs, workers=args.workers),
            test_loader=D.make_loader(data.test, eval_bs, workers=args.workers) if args.eval_test and data.test else None,
            t_start=t_start, command=command, rank=rank, world=world)
    try:
        os.makedirs(args.save_dir, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"cannot create --save-dir {args.save_dir}: {e.strerror}") from None
    if r.main_process:
        print_header(r, order)
        announce_step_time(r)
    if args.resume:
        resume(r)
    return r


def print_header(r, order):
    """The run's first lines: the model, the data, the device and precision; the steps per epoch."""
    args, data, device = r.args, r.data, r.device
    print(found_line(data))
    real = len(D.real_part(data.train))
    pool = f" + {len(data.train) - real} synthetic (ratio {args.synthetic_ratio})" if real < len(data.train) else ""
    groups = data.config.get("num_groups")
    # what feeds the training batches: loader processes, or (--device-data) the tensors on the device,
    # where the workers only load val / test
    workers = cli.plural(args.workers, "loader worker")
    feed = f"data on the device{f' ({workers} for evaluation)' if args.workers else ''}" if args.device_data else workers
    threads = cli.plural(torch.get_num_threads(), "thread") + ", " if device.type == "cpu" else ""
    print(f"{args.model}: {count_parameters(r.model):,} parameters | {real} train{pool}, {len(data.val)} val"
          f"{f' ({groups} photo groups)' if groups else ''}"
          f"{f', {len(data.test)} test' if data.test else ''} | {len(data.classes)} classes | device {device}"
          f" | amp {args.amp}{' (fp32)' if args.amp == 'off' else ''}"
          f"{' | channels_last' if use_channels_last(device, args.amp, data.img_size) else ''}"
          f"{' | compile' if args.compile else ''}"
          f" | {threads}{feed}"
          f" | augment {args.augment}{f' | resize {args.resize}' if args.dataset == 'folder' else ''}"
          f"{f' | {r.world} processes' if r.world > 1 else ''}")
    if data.config.get("corrections_summary"):
        print(C.summary_line(data.config["corrections"], data.config["corrections_sha256"],
                             data.config["corrections_summary"]))
    used = sum(i < real for i in order)  # the real images (photos beside composites) an epoch trains on
    dropped = -(-real // r.world) - used if used else 0  # (ratio 1 uses no photo, by design)
    print(f"{cli.plural(r.steps_per_epoch, 'step')} of {args.batch_size} per epoch"
          + (f" (the last partial batch, {dropped} {'photos' if pool else 'images'}, is left out of each epoch; "
             "a new shuffle every epoch)" if dropped > 0 else ""))


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
    if ck["data"].get("corrections_sha256") != data.config.get("corrections_sha256"):
        raise CheckpointError(f"{args.resume} was trained with other --corrections (another file, or the file "
                              f"changed since): resume with the file as it was, or start a new run")
    if ck["data"].get("split_hash") != data.config["split_hash"]:
        raise CheckpointError(f"{args.resume} was trained on another data split (data, --val-fraction, "
                              f"--split-seed or --train-fraction differ)")
    changed = [k for k in ("epochs", "seed", "batch_size", "lr", "scheduler", "augment", "synthetic_n",
                           "synthetic_ratio", "amp")
               if ck["args"].get(k) != getattr(args, k)]
    if changed:
        cli.warn(f"resuming with other settings than {args.resume} had: "
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
        cli.warn(f"{args.resume} was written by a run of {ck.get('world_size', 1)} process(es), this one has "
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
        # tqdm.write: the epoch's bar is on screen; it is cleared and redrawn below this line, not glued to it
        tqdm.write(f"estimate: {images_per_s:.0f} img/s, {epoch_s:.0f} s/epoch, {format_seconds(total)} in all for "
                   f"{cli.plural(epochs_to_run, 'epoch')} (early stopping aside)")
        sys.stdout.flush()
    return {"est_images_per_s": images_per_s, "est_epoch_s": epoch_s, "est_total_s": total}


def train_epochs(r, stop):
    """The epochs: train, validate, keep best.pt / last.pt / history.csv, stop early. Returns the
    one-batch results under --dry-run, else None."""
    args, data, device = r.args, r.data, r.device
    device_loader, augment_one = input_pipeline(r)
    if r.main_process and not args.dry_run and not args.resume:
        report.plot_inputs(data, augment_one, args.save_dir, seed=args.seed, augment=args.augment)
    net = ddp(r.model, device)  # what trains; r.model (the same parameters) is what is evaluated and saved
    if args.compile:
        net = torch.compile(net)  # compiles on the first step(s): the time estimate skips those
    estimate = {}  # the time estimate, once measured: printed, and a column of history.csv
    stop.armed = True
    for epoch in range(r.start_epoch, args.epochs + 1):
        if r.best["bad_epochs"] >= args.patience:  # early-stopped (also a resumed run that had stopped)
            break
        resumed = r.progress if epoch == r.start_epoch else None  # the rest of an epoch that Ctrl-C stopped
        loader = epoch_loader(r, epoch, resumed, device_loader)
        on_rate = None if estimate or args.dry_run else (
            lambda rate, steps: estimate.update(time_estimate(r, rate, steps, resumed)))
        try:
            train = train_one_epoch(net, loader, r.optimizer, r.scheduler, r.scaler, device, epoch, args,
                                    len(data.classes), max_steps=1 if args.dry_run else None, stop=stop,
                                    resumed=resumed, on_rate=on_rate)
        except EpochInterrupted as e:  # last.pt records the step to go on from
            save_checkpoint(r.checkpoint(epoch - 1, with_state=True, progress=e.progress), r.last_pt)
            raise Interrupted(r.last_pt) from None
        except torch.OutOfMemoryError:  # one line that says what to change, not an allocator traceback
            raise TrainingError(f"out of memory on {device} at --batch-size {args.batch_size}"
                                f"{' per process' if r.world > 1 else ''}: lower --batch-size (or --img-size"
                                f"{', or leave out --device-data' if args.device_data else ''})") from None
        val = validate(r)
        if args.dry_run:
            if r.main_process:
                print(f"dry run: train loss {train['loss']:.4f}, val loss {val['loss']:.4f}: one batch each, OK")
            return {"train": train, "val": val}
        end_of_epoch(r, epoch, train, val, estimate)
        if stop.requested:  # Ctrl-C during evaluation or saving: stop at this epoch's end
            raise Interrupted(r.last_pt)
    stop.armed = False  # Ctrl-C during the report aborts it as usual: the checkpoints are complete
    return None


def input_pipeline(r):
    """(the DeviceLoader of --device-data or None, a function that gives one augmented training image
    the way the run augments it, for augmentations.png)."""
    args, data = r.args, r.data
    if not args.device_data:
        return None, lambda ds, i: ds[i][0]
    batch_augment = BatchAugment(args.augment, data.img_size, data.mean, data.std)
    loader = DeviceLoader(data.train, args.batch_size, r.device, batch_augment, drop_last=False)
    return loader, lambda ds, i: batch_augment(ds.images[ds.indices[i:i + 1]])[0]


def epoch_seed(args, epoch):
    return args.seed * 100_003 + epoch


def epoch_loader(r, epoch, resumed, device_loader):
    """This process's training batches of `epoch` (the rest of them after `resumed`), and the epoch's
    random streams: augmentation, dropout and mixup are seeded from (--seed, epoch), so a resumed run
    goes on exactly as one that was never stopped."""
    args = r.args
    seed = epoch_seed(args, epoch)
    if not resumed:  # (a resumed epoch goes on with the random state saved when it stopped)
        torch.manual_seed(seed * r.world + r.rank)  # a stream per process
    order = D.train_order(r.data, args.batch_size, seed, epoch, args.seed, r.rank, r.world)  # this process's share
    order = order[resumed["step"] * args.batch_size:] if resumed else order
    if device_loader is not None:
        device_loader.sampler = order
        return device_loader
    return D.make_loader(r.data.train, args.batch_size, sampler=order, workers=args.workers,
                         generator=torch.Generator().manual_seed(seed * r.world + r.rank),  # worker seeds
                         drop_last=False)  # train_order already decided


def validate(r):
    """Rank 0 scores the model it saves; the others take its numbers, so all stop early together.
    Under --dry-run, one batch."""
    val = None
    if r.main_process:
        loader = [next(iter(r.val_loader))] if r.args.dry_run else r.val_loader
        val = evaluate(r.model, loader, r.device, len(r.data.classes))
    return from_main_process(val)


def end_of_epoch(r, epoch, train, val, estimate):
    """The history row (with --eval-test's test scores), early stopping's count, best.pt when val
    improved, last.pt, history.csv and the curves, and the epoch's line."""
    args, data, best = r.args, r.data, r.best
    test = evaluate(r.model, r.test_loader, r.device, len(data.classes)) if r.test_loader and r.main_process else None
    lr = r.optimizer.param_groups[0]["lr"]
    r.history.append(dict(report.history_row(epoch, train, val, lr, data.classes, test), **estimate))
    improved = val["acc"] > best["acc"]
    if improved:
        best.update(acc=val["acc"], epoch=epoch, bad_epochs=0)
    else:
        best["bad_epochs"] += 1
    if not r.main_process:
        return
    if improved:
        save_checkpoint(r.checkpoint(epoch, with_state=False), os.path.join(args.save_dir, "best.pt"))
    save_checkpoint(r.checkpoint(epoch, with_state=True), r.last_pt)
    report.write_history(r.history, os.path.join(args.save_dir, "history.csv"))
    report.plot_history(r.history, data.classes, args.save_dir)
    print(f"epoch {epoch:3d}/{args.epochs} | train loss {train['loss']:.4f} acc {100 * train['acc']:6.2f}% | "
          f"val loss {val['loss']:.4f} acc {100 * val['acc']:6.2f}%{' *' if improved else '  '} | "
          f"lr {lr:.2e} | {train['seconds']:.1f}s {train['images_per_s']:.0f} img/s", flush=True)
    if best["bad_epochs"] >= args.patience:
        print(f"early stopping: no better val accuracy for {args.patience} epochs (best {100 * best['acc']:.2f}% "
              f"at epoch {best['epoch']})")


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


def finish(r):
    """Where the run's files are, how large, and what to run next; last.pt removed under --no-keep-last."""
    args, folder = r.args, r.args.save_dir
    mb = lambda name: os.path.getsize(os.path.join(folder, name)) / 1e6  # noqa: E731
    if not args.keep_last:
        os.unlink(r.last_pt)
    last = (f"last.pt {mb('last.pt'):.1f} MB (what --resume needs; --no-keep-last removes it at the end)"
            if args.keep_last else "last.pt removed (--no-keep-last)")
    best = os.path.join(folder, "best.pt")
    print(f"saved {best} (epoch {r.best['epoch']}, val {100 * r.best['acc']:.2f}%, {mb('best.pt'):.1f} MB); {last}")
    if args.corrections:  # which corrections this run used, and where its folder keeps them
        print(f"corrections {os.path.basename(args.corrections)} (sha256 {r.data.config['corrections_sha256'][:12]}): "
              f"the run's copy is {os.path.join(folder, C.RUN_COPY)}")
    test = " --split test" if r.data.test is not None else ""
    print(f"next: python evaluate.py {shlex.quote(best)}{test}   |   python analyze.py {shlex.quote(best)}   |   "
          f"python report.py {shlex.quote(folder)}")


def command_line(args):
    """`python train.py ...` that repeats a run: the arguments (a dict, as given: before resolve_defaults
    and the device's --amp / --threads) that differ from their defaults, or from what leaving them out
    implies (IMPLIED). Stored in every checkpoint (report.py shows it). Given the resolved arguments
    instead, it would pin this machine's choices (an --amp bf16 resolved here is emulated, slower
    than fp32, on a CPU without native bf16; --threads, --workers fit this machine's cores)."""
    parts = ["python", "train.py"]
    for a in get_args_parser()._actions:
        if not a.option_strings or a.dest not in args or args[a.dest] == a.default:
            continue
        if a.dest in IMPLIED and args[a.dest] == IMPLIED[a.dest](args):
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
    cli.run_main(main, get_args_parser().parse_args,
                 interrupted=lambda e: f"resume with: {resume_command(sys.argv, e.last_pt)}"
                 if isinstance(e, Interrupted) else None)
