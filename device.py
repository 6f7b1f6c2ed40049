"""Where a model runs: the device, the mixed-precision policy, the memory layout, CPU threads,
and the torchrun helpers. Every script asks this module, so one policy holds everywhere."""
import contextlib
import fcntl
import glob
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.nn as nn

from cli import UsageError


def get_device(name=None):
    """cuda > mps > cpu, unless `name` forces one."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(name):
    """--device: a device torch knows and this machine has (else one line, not a CUDA traceback)."""
    if name is None:
        return
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device (cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name}: MPS is not available here (use --device cpu)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name!r}: choose cpu, cuda, cuda:N or mps")


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
    input size: on where it measured faster (CPU with oneDNN, CUDA), off on MPS where it is slower
    (bench.py --only layout; the figures are in RESULTS.md)."""
    return device.type in ("cpu", "cuda")

def sync(device):
    """Wait for queued GPU work, so that a time measured on the host is the device's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads, device):
    """Intra-op threads of this process: `threads`, else on a CPU the cores that other runs of this
    toolkit on this machine have not taken (every core when there are none; 2 threads measured faster
    than 1 thread + 1 loader worker: RESULTS.md, "Speed on a CPU"), so runs side by side share the
    cores instead of each taking them all. OMP_NUM_THREADS, where set, is the user's choice and is
    kept. Returns (the count in use, the threads other runs hold)."""
    others = threads_of_other_runs() if device.type == "cpu" else 0
    if threads is None and device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, cpu_cores() - others)
    if threads is not None:
        torch.set_num_threads(threads)
    if device.type == "cpu":
        _claim_threads(torch.get_num_threads())
    return torch.get_num_threads(), others


# Each CPU run holds a file in RUNS_DIR, locked (flock) for the life of its process and holding its
# thread count: the kernel drops the lock when the process ends, however it ends.
RUNS_DIR = os.path.join(tempfile.gettempdir(), f"imgclf-runs-{os.getuid()}")
_claim = None  # this process's open, locked file


def _claim_threads(count):
    global _claim
    try:
        if _claim is None:
            os.makedirs(RUNS_DIR, exist_ok=True)
            _claim = open(os.path.join(RUNS_DIR, f"{os.getpid()}.threads"), "w")
            fcntl.flock(_claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _claim.seek(0)
        _claim.truncate()
        _claim.write(str(count))
        _claim.flush()
    except OSError:  # no shared temp folder: this run is simply not seen by others
        _claim = None


def threads_of_other_runs():
    """Threads held by the other live processes of this toolkit on this machine (their RUNS_DIR files)."""
    total = 0
    for path in glob.glob(os.path.join(RUNS_DIR, "*.threads")):
        if _claim is not None and path == _claim.name:
            continue
        try:
            with open(path) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # locked: its process is alive
                    total += int(f.read().strip() or 0)
                    continue
                if time.time() - os.path.getmtime(path) > 10:  # (not one being created this instant)
                    os.unlink(path)  # its process has ended
        except (OSError, ValueError):
            continue
    return total


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
