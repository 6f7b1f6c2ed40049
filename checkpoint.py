"""The checkpoint format: one plain dict, written atomically and read with weights_only=True.

Every script reads and writes checkpoints through this module, so the format lives here only.
"""
import os
import pickle
import re

import torch

from cli import UsageError, atomic_write
from device import resolve_amp, use_channels_last
from model import MODELS, build_model


class CheckpointError(UsageError):
    """A checkpoint that is missing, corrupt, not ours or does not fit the model."""


# One format, plain types only, readable with torch.load(weights_only=True):
#   model, model_args, state_dict, classes, in_channels, img_size, mean, std,
#   data (what rebuilds the same split; a --corrections run adds the file's corrections_sha256 and
#   corrections_summary, what it changed), args, epoch, best_val_acc
# and from train.py also amp (the resolved --amp: "bf16", "fp16" or "off"),
# and in last.pt also: optimizer, scheduler, scaler, rng, early_stopping. Optional: temperature (the
# softmax temperature fitted on val by evaluate.py --temperature auto; logits are divided by it) and
# calibrated_from (the checkpoint it was copied from; evaluate.py never rewrites its input).

CHECKPOINT_KEYS = ("model", "model_args", "state_dict", "classes", "in_channels", "img_size",
                   "mean", "std", "data", "args", "epoch", "best_val_acc")
# the keys the format gained later: what a checkpoint without one means (fp32, no temperature fitted);
# the `data` dict's own are data.DATA_DEFAULTS, applied where the data are rebuilt
CHECKPOINT_DEFAULTS = {"amp": "off", "temperature": 1.0, "history": []}


def save_checkpoint(ckpt, path):
    """Write atomically: a temp file in the same folder, fsync, then rename over `path`,
    so a crash or a full disk never leaves a half-written checkpoint behind. A write that
    fails (full disk, unwritable folder) is a one-line CheckpointError; `path` is untouched."""
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    assert not missing, f"checkpoint lacks {missing}"
    try:
        with atomic_write(path, "wb", fsync=True) as f:
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
    return {**CHECKPOINT_DEFAULTS, **ckpt}


def model_from_checkpoint(ckpt, device="cpu", expect=None, amp=None):
    """Build the checkpoint's model and load its weights. `expect` (a model name) turns a
    checkpoint of another architecture into a clear error instead of a key mismatch.
    `model.amp` is the precision predict() runs it in: `amp` (an --amp choice) if given, else
    the checkpoint's (what training evaluated with, so the numbers repeat)."""
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
    model.amp = resolve_amp(amp or ckpt.get("amp", CHECKPOINT_DEFAULTS["amp"]), device)  # (a dict not from load_checkpoint)
    model = model.to(device)
    if use_channels_last(device, model.amp, ckpt["img_size"]):
        model = model.to(memory_format=torch.channels_last)
    return model.eval()
