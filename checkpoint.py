"""The checkpoint format: one plain dict, written atomically and read with weights_only=True.

Every script reads and writes checkpoints through this module, so the format lives here only.
"""
import contextlib
import os
import pickle
import re
import zipfile

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


def checkpoint_path(path):
    """The checkpoint a script was given: a run folder stands for its best.pt (said in one line), a
    file for itself. A folder without best.pt is refused here, as a missing file would be."""
    if not os.path.isdir(path):
        return path
    best = os.path.join(path, "best.pt")
    if not os.path.isfile(best):
        raise CheckpointError(f"checkpoint not found: {path} is a folder without a best.pt")
    print(f"{path} is a run folder: using {best}")
    return best


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint dict (weights_only=True) or raise CheckpointError with one line; any file
    that is not one (a CSV, a text, an empty file, a zip, a torch file of a tensor) is `not a readable
    checkpoint`, with what it looks like instead."""
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
        raise CheckpointError(f"{path} is not a readable checkpoint ({file_kind(path)})") from None
    except OSError as e:  # (an unreadable file: no permission, an I/O error)
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except Exception:  # the unpickler fails on other files in many ways (IndexError, KeyError, EOFError...)
        raise CheckpointError(f"{path} is not a readable checkpoint ({file_kind(path)})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a readable checkpoint (a torch file holding a {type(ckpt).__name__}, "
                              f"not a checkpoint dict)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a readable checkpoint (a dict without {', '.join(missing[:3])}"
                              f"{', ...' if len(missing) > 3 else ''}: not a checkpoint of this toolkit)")
    return {**CHECKPOINT_DEFAULTS, **ckpt}


def file_kind(path):
    """What a file torch.load refused looks like, for the error line (the unpickler's own error, e.g.
    `IndexError: pop from empty list` for a CSV, says nothing to the user)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file"
    if zipfile.is_zipfile(path):
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as z:
            if any(n.endswith("/data.pkl") for n in z.namelist()):
                return "a damaged torch file"
        return "a zip archive, not a torch file"
    if head.startswith(b"PK"):
        return "a damaged (truncated?) torch file or zip archive"
    if b"\0" not in head and head.decode("utf-8", errors="replace").count("\ufffd") <= 1:  # (a cut last character)
        return "a text file, not a torch file"
    return "corrupt, or not a torch file"


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
