"""Models, the model registry and the checkpoint format.

Every script builds models with `build_model` and reads / writes checkpoints with
`save_checkpoint` / `load_checkpoint` / `model_from_checkpoint`, so the format lives here only.

Every model exposes `forward_features(x)` (the penultimate, pre-logits feature vector, used by
analyze.py for t-SNE and neighbours) and `forward_head(features)` (the classifier), as in timm.

    python model.py resnet18 --in-channels 3 --num-classes 10
"""
import argparse
import contextlib
import functools
import inspect
import os
import pickle
import re
import warnings

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class CheckpointError(Exception):
    """A checkpoint that is missing, corrupt, not ours or does not fit the model."""


# ----------------------------------------------------------------------------- models

class ConvNet(nn.Module):
    """The classic assignment's ConvNet: 14,178 parameters for 1x28x28 input."""

    def __init__(self, num_classes=10, in_channels=1, img_size=28, drop_rate=0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(drop_rate),
            nn.Conv2d(8, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(drop_rate),
            nn.Flatten(),
        )
        side = ((img_size - 2) // 2 - 2) // 2  # two unpadded 3x3 convs, two 2x2 pools
        self.fc1 = nn.Linear(8 * side * side, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward_features(self, x):
        return F.relu(self.fc1(self.features(x)))

    def forward_head(self, x):
        return self.fc2(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Net(nn.Module):
    """The project's small MNIST CNN (see README, "Models").

    Three stages of 3x3 conv + BatchNorm + ReLU, widening 16 -> 32 -> 64 (default width) while max-pooling
    28 -> 14 -> 7 -> 3, then global average pooling, dropout and one linear layer. The first
    stage is a single conv at full resolution (cheap: one input channel); the wide convs run at
    14x14 and 7x7: ~5.5 MMACs per image and 70k parameters, so it trains fast on a CPU.
    """

    def __init__(self, num_classes=10, in_channels=1, drop_rate=0.2, width=16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(in_channels, w), nn.MaxPool2d(2),
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w), _conv_bn(4 * w, 4 * w), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.fc(self.dropout(x))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class MnistExample(nn.Module):
    """The net of pytorch/examples mnist/main.py, the peer recipe bench.py compares against."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward_features(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))

    def forward_head(self, x):
        return self.fc2(self.dropout2(x))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def mlp_head(in_features, num_classes, drop_rate=0.3):
    """512 -> 256 -> 128 -> C with BatchNorm, ReLU and dropout (for non-digit problems)."""
    return nn.Sequential(
        nn.Linear(in_features, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
        nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
        nn.Linear(128, num_classes),
    )


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (He et al.), trained from scratch.

    The 7x7 stem is kept (so 3 channels / 10 classes give torchvision's 11,181,642 parameters);
    it takes `in_channels` inputs, and for small images (<= 32 px) it runs at stride 1 without
    the max-pool, as is usual for CIFAR/MNIST sizes, so layer4 does not see a 1x1 map.
    `head="mlp"` swaps the linear classifier for `mlp_head`.
    """

    def __init__(self, num_classes=10, in_channels=3, img_size=128, drop_rate=0.0, head="linear"):
        super().__init__()
        from torchvision.models import resnet18
        net = resnet18(weights=None, num_classes=num_classes)
        small = img_size <= 32
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=1 if small else 2, padding=3, bias=False)
        if small:
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.backbone = net
        self.dropout = nn.Dropout(drop_rate)
        if head == "linear":
            self.fc = nn.Linear(512, num_classes)
        elif head == "mlp":
            self.fc = mlp_head(512, num_classes)
        else:
            raise ValueError(f"unknown head {head!r} (choose linear or mlp)")

    def forward_features(self, x):
        return self.backbone(x)

    def forward_head(self, x):
        return self.fc(self.dropout(x))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


MODELS = {
    "convnet": ConvNet,
    "net": Net,
    "resnet18": ResNet18,
    "mnist_example": MnistExample,
}


def list_models():
    return sorted(MODELS)


def model_kwargs(name, **kwargs):
    """The subset of kwargs that model `name` takes (stored in checkpoints as model_args), so
    callers can pass the full set (e.g. `img_size`, which `net` does not use)."""
    accepted = inspect.signature(MODELS[name].__init__).parameters
    return {k: v for k, v in kwargs.items() if k in accepted and v is not None}


def build_model(name, num_classes, in_channels, **kwargs):
    """The one way every script builds a model."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, **model_kwargs(name, **kwargs))


@functools.lru_cache(maxsize=None)
def _fits(name, img_size, in_channels=1):
    """Whether model `name` takes img_size x img_size inputs: a forward pass on the meta device
    (shapes only, no memory, no arithmetic)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = build_model(name, 2, in_channels, img_size=img_size).eval()
        try:
            model(torch.zeros(2, in_channels, img_size, img_size))
            return True
        except (RuntimeError, ValueError):
            return False


def img_size_error(name, img_size):
    """None when model `name` works at `img_size`, else a line that names the sizes it takes
    (found by trying: convnet >= 10, net >= 8, mnist_example 28 or 29, resnet18 any)."""
    if img_size >= 1 and _fits(name, img_size):
        return None
    ok = [s for s in range(1, 65) if _fits(name, s)]
    need = (f">= {ok[0]}" if ok and ok == list(range(ok[0], 65)) else
            " or ".join(map(str, ok)) if ok else "none up to 64")
    return f"--img-size {img_size} does not fit model {name!r} (it takes --img-size {need})"


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def first_conv(model):
    """The first Conv2d layer (analyze.py draws its kernels)."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


# ----------------------------------------------------------------------------- checkpoints
#
# One format, plain types only, readable with torch.load(weights_only=True):
#   model, model_args, state_dict, classes, in_channels, img_size, mean, std,
#   data (what rebuilds the same split), args, epoch, best_val_acc
# and from train.py also amp (the resolved --amp: "bf16", "fp16" or "off"),
# and in last.pt also: optimizer, scheduler, scaler, rng, early_stopping. Optional: temperature (the
# softmax temperature fitted on val by evaluate.py --temperature auto; logits are divided by it).

CHECKPOINT_KEYS = ("model", "model_args", "state_dict", "classes", "in_channels", "img_size",
                   "mean", "std", "data", "args", "epoch", "best_val_acc")


def save_checkpoint(ckpt, path):
    """Write atomically: a temp file in the same folder, fsync, then rename over `path`,
    so a crash or a full disk never leaves a half-written checkpoint behind. A write that
    fails (full disk, unwritable folder) is a one-line CheckpointError; `path` is untouched."""
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    assert not missing, f"checkpoint lacks {missing}"
    import data  # atomic_write: temp file, fsync, rename; the usual file mode (umask), not mkstemp's 0600
    try:
        with data.atomic_write(path, "wb", fsync=True) as f:
            torch.save(ckpt, f)
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}; any previous "
                              f"{os.path.basename(path)} there is unchanged") from None


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint dict (weights_only=True) or raise CheckpointError with one line."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's weights-only unpickler names the class it refused; anything else is a bad file
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:
            raise CheckpointError(f"{path} needs pickled objects to load ({refused.group(1)}); refused: "
                                  f"checkpoints are loaded with weights_only=True") from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or not a torch file)") from None
    except Exception as e:  # a text file, a CSV, a JSON: the unpickler fails in many ways (IndexError...)
        raise CheckpointError(f"{path} is not a readable checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        raise CheckpointError(f"{path} is not a checkpoint of this toolkit (missing keys)")
    return ckpt


def update_checkpoint(path, **keys):
    """Set `keys` in the checkpoint at `path`, written atomically (save_checkpoint): a failure
    leaves the original file as it was; nothing else in it changes."""
    ckpt = load_checkpoint(path)
    ckpt.update(keys)
    save_checkpoint(ckpt, path)
    return ckpt


def model_from_checkpoint(ckpt, device="cpu", expect=None, amp=None):
    """Build the checkpoint's model and load its weights. `expect` (a model name) turns a
    checkpoint of another architecture into a clear error instead of a key mismatch.
    `model.amp` is the precision predict() runs it in: `amp` (an --amp choice) if given, else
    the checkpoint's (what training evaluated with, so the numbers repeat), fp32 for older ones."""
    name = ckpt["model"]
    if expect is not None and name != expect:
        raise CheckpointError(f"checkpoint is a {name!r} model, not {expect!r}")
    if name not in MODELS:
        raise CheckpointError(f"checkpoint has unknown model {name!r}")
    model = build_model(name, len(ckpt["classes"]), ckpt["in_channels"], **ckpt["model_args"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit model {name!r}: "
                              f"{str(e).splitlines()[0]}") from None
    device = torch.device(device)
    model.amp = resolve_amp(amp or ckpt.get("amp") or "off", device)
    model = model.to(device)
    if use_channels_last(device, model.amp, ckpt["img_size"]):
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


# ----------------------------------------------------------------------------- devices

def get_device(name=None):
    """cuda > mps > cpu, unless `name` forces one."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


AMP_CHOICES = ("auto", "bf16", "fp16", "off")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def cpu_has_native_bf16():
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), as torch detects it
    (cpuinfo), not guessed from the CPU's name. Without it CPU bf16 is emulated and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(f() for f in checks if f is not None)


def resolve_amp(amp, device):
    """The one --amp policy every script calls: `auto` / `bf16` / `fp16` / `off` -> the concrete
    choice ("bf16", "fp16" or "off") for `device`. auto: bf16 on a CPU with native bf16, else fp32;
    bf16 on CUDA where supported, else fp16 (with a GradScaler); fp16 on MPS (with a GradScaler)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"unknown --amp {amp!r}; choose from {', '.join(AMP_CHOICES)}")
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "off"


def amp_dtype(device, amp="auto"):
    """Autocast dtype of `amp` (see resolve_amp) on `device`; None means fp32."""
    return AMP_DTYPES[resolve_amp(amp, device)]


def needs_grad_scaler(device, amp="auto"):
    """fp16 gradients underflow without loss scaling (bf16 has fp32's range)."""
    return amp_dtype(device, amp) == torch.float16 and device.type in ("cuda", "mps")


def autocast(device, amp="auto"):
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(device, amp, img_size):
    """Whether convs take channels_last inputs and weights on `device` for this precision and
    input size: where it measured faster. CPU (Intel Xeon, AVX512-BF16 + AMX, oneDNN): faster in
    bf16 for resnet18 @64 and @128 and `net` @28, and in fp32 for resnet18 @128 and `net` @28
    (bench.py --only layout; README "Speed on a CPU"), so on; fp32 resnet18 @64 measured 0.86x, a
    non-default precision here, not encoded (this function sees no model). CUDA: on; MPS: off
    (slower there). An AMD CPU measured bf16 @64 faster without it (issue 10): rerun the layout
    rows before adding a rule per CPU."""
    return device.type in ("cpu", "cuda")


# ----------------------------------------------------------------------------- processes (torchrun)
#
# `torchrun --nproc_per_node=N train.py ...` starts N processes with RANK, LOCAL_RANK and
# WORLD_SIZE set. In a plain run (or N = 1) every helper here is a no-op.

def is_distributed():
    return dist.is_available() and dist.is_initialized()


def rank_and_world():
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def is_main_process():
    """Rank 0: the one process that prints, shows progress bars and writes files."""
    return rank_and_world()[0] == 0


@contextlib.contextmanager
def distributed(device_name=None):
    """Yields this process's device. Under torchrun it joins the process group on entry (nccl
    on CUDA with the GPU of LOCAL_RANK, gloo otherwise) and leaves it on exit."""
    device = get_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def ddp(model, device):
    """`model` in DistributedDataParallel (gradients averaged over the processes during
    backward) under torchrun; `model` itself otherwise."""
    if not is_distributed():
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def all_reduce_sum(t):
    """`t` summed over all processes, in place: every process gets the total."""
    if is_distributed():
        dist.all_reduce(t)
    return t


def all_finite(t):
    """Whether `t` is finite on every process, so that all of them stop together."""
    return all_reduce_sum((~torch.isfinite(t)).sum().float()).item() == 0


def from_main_process(obj):
    """Rank 0's `obj` on every process (pickled: small things only)."""
    if is_distributed():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        obj = box[0]
    return obj


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


# ----------------------------------------------------------------------------- CLI

def get_args_parser():
    p = argparse.ArgumentParser(description="Print a model, its parameters per top-level module, and the total.")
    p.add_argument("model", choices=list_models())
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--img-size", type=int, default=28)
    return p


def main(args):
    import data  # its DataError: a bad value is one line (data.run_main)
    data.check_args(args, ("in_channels", args.in_channels >= 1, ">= 1"), ("num_classes", args.num_classes >= 1, ">= 1"))
    if img_size_error(args.model, args.img_size):
        raise data.DataError(img_size_error(args.model, args.img_size))
    model = build_model(args.model, args.num_classes, args.in_channels, img_size=args.img_size)
    print(model)
    print(f"\n{'module':<20}{'parameters':>14}")
    for name, child in model.named_children():
        print(f"{name:<20}{count_parameters(child):>14,}")
    print(f"parameters: {count_parameters(model)}")


if __name__ == "__main__":
    import data
    data.run_main(main, get_args_parser())
