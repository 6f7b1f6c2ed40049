"""What a training epoch measures: loss and accuracy per class and per source (`EpochSums`), the
steady training rate (`RateMeter`), and the time estimate made from it; before training, the
device's convolution throughput (`conv_flops_per_s`)."""
import time

import torch

from device import all_reduce_sum, sync

SOURCES = ("real", "synthetic")  # TensorImageDataset.source 0 / 1
RATE_WARMUP_STEPS = 2  # left out of the measured rate: the first steps allocate, and compile under --compile


class EpochSums:
    """Per (source, class) sums of loss, hits and samples, kept on the device: no host sync per step.
    `state` is what a Ctrl-C'd epoch stores in last.pt and hands back to go on from."""

    def __init__(self, num_classes, device, state=None):
        self.num_classes = num_classes
        self.sums = state.to(device) if state is not None else torch.zeros(3, len(SOURCES) * num_classes, device=device)

    def add(self, sources, labels, logits, per_sample_loss):
        loss, correct, count = self.sums  # views: adding to them adds to `sums`
        key = sources * self.num_classes + labels
        hit = (logits.argmax(1) == labels).float()
        loss.index_add_(0, key, per_sample_loss.detach().float())
        correct.index_add_(0, key, hit)
        count.index_add_(0, key, torch.ones_like(hit))

    def running(self):
        """(loss, accuracy) so far, for the progress bar."""
        loss, correct, count = self.sums.sum(1)
        return (loss / count).item(), (correct / count).item()

    def count(self):
        return self.sums[2].sum().item()

    def state(self):
        return self.sums.cpu()

    def result(self):
        """Loss and accuracy overall, per class and per source, over the samples of every process."""
        all_reduce_sum(self.sums)  # torchrun: every process's samples, so all log the same numbers
        loss, correct, count = self.sums.double().cpu().view(3, len(SOURCES), self.num_classes)
        div = lambda a, b: (a / b.clamp_min(1)).tolist()  # noqa: E731
        return {"loss": (loss.sum() / count.sum()).item(), "acc": (correct.sum() / count.sum()).item(),
                "loss_per_class": div(loss.sum(0), count.sum(0)), "acc_per_class": div(correct.sum(0), count.sum(0)),
                "acc_per_source": div(correct.sum(1), count.sum(1)), "count_per_source": count.sum(1).tolist()}


class RateMeter:
    """The steady images/s of this process in one epoch (steps `first`..`last`): RATE_WARMUP_STEPS left
    out, measured over >= 5 steps and >= 5 s, or 50 steps, or to the epoch's end (all of a very short
    one). `on_rate(images_per_s, steps_done)` is called once, when the rate is known."""

    def __init__(self, device, first, last, on_rate):
        self.device, self.first, self.last, self.on_rate = device, first, last, on_rate
        self.t0, self.seen = time.perf_counter(), 0
        self.t_rate = self.seen_rate = None

    def step(self, step, batch_size):
        self.seen += batch_size
        if self.on_rate is None:
            return
        done = step - self.first + 1
        if done == RATE_WARMUP_STEPS and step < self.last:
            sync(self.device)
            self.t_rate, self.seen_rate = time.perf_counter(), self.seen
        elif done > RATE_WARMUP_STEPS or step == self.last:
            sync(self.device)
            now = time.perf_counter()
            if self.t_rate is None:  # a very short epoch: all of it
                self.t_rate, self.seen_rate = self.t0, 0
            measured = done - RATE_WARMUP_STEPS
            if (measured >= 5 and now - self.t_rate >= 5) or measured >= 50 or step == self.last:
                self.on_rate((self.seen - self.seen_rate) / (now - self.t_rate), done)
                self.on_rate = None

    def images_per_s(self):
        return self.seen / (time.perf_counter() - self.t0)


def format_seconds(s):
    """1 h 05 min, 12 min 30 s, 45 s"""
    s = round(s)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def conv_flops_per_s(device):
    """FLOP/s of a 3x3 convolution's forward and backward on `device` (fp32, one timed run after a
    warm one): what a step of a convolutional net costs here, before any step has run. The probe is
    sized to the device (~1 GFLOP on a CPU, a few hundred on a GPU, which a small one would not fill)."""
    n, c, side = (64, 128, 64) if device.type == "cuda" else (4, 32, 64)
    x = torch.randn(n, c, side, side, device=device, requires_grad=True)
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device)
    flops = 3 * 2 * x.numel() * c * 9  # forward, and backward's two convolutions
    for _ in range(2):
        sync(device)
        t0 = time.perf_counter()
        conv(x).sum().backward()
        sync(device)
        seconds = time.perf_counter() - t0
    return flops / seconds
