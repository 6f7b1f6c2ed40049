"""Throughput benchmarks: prints a table and writes JSON. Never a timed unit test.

    python bench.py --data-dir ../shared/data/meter_digits --mnist-root ../shared/data

Measured in one process, side by side, so ratios are comparable on a noisy machine:
  pipeline  images/s of each augmentation preset at --img-size from the decoded cache:
            torchvision v2 per sample through a DataLoader (--workers), and batched (--device-data)
  model     resnet18 @64 and @128 training images/s on random tensors (forward, backward, AdamW
            step): fp32 (the old CPU path) vs --amp auto vs auto + torch.compile (compile time apart)
  layout    contiguous vs channels_last training images/s per model, size and precision (what
            model.use_channels_last encodes); --layout-rounds interleaved rounds, best of each
  infer     evaluate.py's inference images/s (its loader and predict) on the photos, fp32 vs auto
  gpu       (CUDA only) resnet18 @--img-size training images/s, bf16 + channels_last + compile: the
            per-sample CPU pipeline vs --device-data vs model only (random tensors on the GPU)
  synth     synth.py composites/s
  cache     decode time of the photo folder into the uint8 cache, and peak resident memory
  augcompare  the batched presets against torchvision's per sample on the same photos: pixel
            statistics and how far augmentation moves an image, plus augment_compare.png
  time-to-accuracy
            MNIST: training seconds until the test accuracy first reaches
            --target, and the final accuracy, for this project's fastest recipe with the defaults
            (--amp auto), the same in fp32 (--amp off), and the pytorch/examples mnist recipe,
            all run through train.py (one subprocess each)
  folder10k a 10,000-photo folder resampled from --data-dir: cache build time, and the peak
            resident memory of a resnet18 @--img-size train.py run on it (--dry-run)

    python bench.py --only time-to-accuracy,folder10k --out bench_slow.json     # the slow ones (~15 min)
"""
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import torch

import cli
import composite
import data as D
from augment import AUGMENT_PRESETS, BatchAugment, build_transform
from device import autocast, check_device, get_device, needs_grad_scaler, resolve_amp, sync, use_channels_last
from images import cache_size, decode_folder, load_folder, scan_folder
from model import build_model


# every name --only accepts; main() runs the ones named
BENCHMARKS = ("cache", "pipeline", "model", "layout", "infer", "gpu", "synth", "augcompare", "time-to-accuracy", "folder10k")


def get_args_parser():
    p = cli.ArgumentParser(description="Throughput benchmarks (prints a table, writes JSON).")
    p.add_argument("--data-dir", default="../shared/data/meter_digits")
    p.add_argument("--mnist-root", default="../shared/data")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--seconds", type=float, default=8.0, help="time budget per measurement")
    p.add_argument("--only", default="cache,pipeline,model,infer,synth",
                   help=f"comma-separated: {','.join(BENCHMARKS)}")
    p.add_argument("--model-sizes", default="64,128", help="model: resnet18 input sizes")
    p.add_argument("--layout-rounds", type=int, default=2, help="layout: interleaved rounds (best one counts)")
    p.add_argument("--target", type=float, default=0.99, help="time-to-accuracy: the test accuracy to reach")
    p.add_argument("--peer-epochs", type=int, default=14,
                   help="time-to-accuracy: epochs of the examples recipe (its own default, 14; ~50 s each on 2 cores)")
    p.add_argument("--with-best", action="store_true", help="time-to-accuracy: also run the 20-epoch best recipe")
    p.add_argument("--folder-n", type=int, default=10_000, help="folder10k: photos in the resampled folder")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=os.path.join("runs", "bench.json"))
    return p


def rate(fn, items_per_call, seconds):
    """items/s of fn() after one warm-up call, over at least `seconds`."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += items_per_call
    return n / (time.perf_counter() - t0)


def train_step(model_name, img_size, in_channels, batch_size, device, amp="off", channels_last=None, compile=False,
               batches=None):
    """(step function, seconds the first step took): one training step of a fresh model_name on
    random tensors (or on `batches()`, a callable returning (x, y) on the device), under autocast
    of `amp`, channels_last as model.use_channels_last decides unless given, optionally compiled
    (the first step then includes compiling)."""
    torch.manual_seed(0)
    model = build_model(model_name, 10, in_channels, img_size=img_size).to(device)
    if channels_last is None:
        channels_last = use_channels_last(device, amp, img_size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, amp))
    net = torch.compile(model) if compile else model
    fixed = (torch.randn(batch_size, in_channels, img_size, img_size, device=device),
             torch.randint(0, 10, (batch_size,), device=device))

    def step():
        x, y = batches() if batches else fixed
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sync(device)
    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0


# MNIST recipes for time-to-accuracy, as train.py arguments. "peer" is pytorch/examples
# mnist/main.py (its net, Adadelta lr 1.0, StepLR gamma 0.7 per epoch, batch 64, no augmentation);
# it gets the same batched data path (--device-data) as ours, so the recipes alone differ.
RECIPES_TO_ACCURACY = {
    "fast": "--model net --epochs 1 --batch-size 128 --lr 3e-3 --weight-decay 5e-4 --warmup-epochs 0.2 --mix-prob 0 "
            "--device-data",
    "peer": "--model mnist_example --optimizer adadelta --lr 1.0 --scheduler step --gamma 0.7 --warmup-epochs 0 "
            "--batch-size 64 --augment none --label-smoothing 0 --mix-prob 0 --weight-decay 0 --device-data",
    "fast-fp32": "--model net --epochs 1 --batch-size 128 --lr 3e-3 --weight-decay 5e-4 --warmup-epochs 0.2 "
                 "--mix-prob 0 --device-data --amp off",
    "best": "--model net --epochs 20 --batch-size 128 --lr 3e-3 --weight-decay 5e-4 --warmup-epochs 1 --mix-prob 0 "
            "--device-data",
}
# run a script and report its own peak RSS and its children's (loader workers)
RSS_WRAPPER = ("import resource, runpy, sys\n"
               "sys.argv = sys.argv[1:]\n"
               "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
               "finally:\n    r = lambda who: resource.getrusage(who).ru_maxrss / 1024\n"
               "    print(f'peak_rss_mib {r(resource.RUSAGE_SELF):.0f} {r(resource.RUSAGE_CHILDREN):.0f}', flush=True)\n")


def run_train(argv, save_dir):
    """python train.py argv in a subprocess -> (wall seconds, stdout, history rows)."""
    import csv
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", RSS_WRAPPER, "train.py", *argv, "--save-dir", save_dir, "--quiet"],
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"error: train.py {' '.join(argv)} failed:\n{p.stderr[-2000:]}")
    hist = os.path.join(save_dir, "history.csv")
    rows = list(csv.DictReader(open(hist))) if os.path.isfile(hist) else []
    return wall, p.stdout, rows


def time_to_accuracy(args, name, tmp):
    """Training seconds (sum over epochs, per-epoch evaluation excluded) until the test accuracy
    logged after an epoch first reaches args.target; None when it never does."""
    epochs = ["--epochs", str(args.peer_epochs)] if name == "peer" else []
    argv = ["--dataset", "mnist", "--mnist-root", args.mnist_root, *RECIPES_TO_ACCURACY[name].split(), *epochs, "--eval-test"]
    print(f"time-to-accuracy: python train.py {' '.join(argv)}", flush=True)
    wall, out, rows = run_train(argv, os.path.join(tmp, name))
    seconds, reached = 0.0, None
    for r in rows:
        seconds += float(r["seconds"])
        if reached is None and float(r["test_acc"]) >= args.target:
            reached = (seconds, int(r["epoch"]))
    final = re.search(r"Test set: .*\((\d+\.\d+)%\)", out).group(1)
    return {"recipe": name, "epochs": len(rows), "train_seconds": seconds, "wall_seconds": wall,
            "seconds_to_target": reached and reached[0], "epoch_reached": reached and reached[1],
            "final_test_acc": float(final), "test_acc_per_epoch": [float(r["test_acc"]) for r in rows]}


def resample_folder(src, dst, n, seed=0):
    """n photos drawn with replacement from the labelled folder src, copied into class subfolders."""
    paths, names = scan_folder(src)
    g = torch.Generator().manual_seed(seed)
    for k, i in enumerate(torch.randint(len(paths), (n,), generator=g).tolist()):
        os.makedirs(os.path.join(dst, names[i]), exist_ok=True)
        shutil.copyfile(paths[i], os.path.join(dst, names[i], f"{k:05d}_{os.path.basename(paths[i])}"))


def augment_stats(x, plain):
    """Of augmented images in [0, 1]: channel mean and std, and the mean absolute change from
    the un-augmented image (how strongly the preset moves a sample)."""
    return {"mean": x.mean().item(), "std": x.std().item(), "change": (x - plain).abs().mean().item()}


def compare_presets(images, img_size, mean, std, n, path, copies=3, shown=5):
    """Per-sample torchvision presets vs BatchAugment on the same n photos: stats and a figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    to01 = lambda x: (x * s + m).clamp(0, 1)  # noqa: E731
    x = images[:n]
    plain = to01(BatchAugment("none", img_size, mean, std)(x))
    ways = {}
    for preset in ("light", "strong"):
        tf, batched = build_transform(preset, img_size, mean, std), BatchAugment(preset, img_size, mean, std)
        ways[preset, "torchvision per sample"] = lambda x, tf=tf: to01(torch.stack([tf(img) for img in x]))
        ways[preset, "batched"] = lambda x, batched=batched: to01(batched(x))
    stats = {key: augment_stats(fn(x), plain) for key, fn in ways.items()}

    fig, axes = plt.subplots(shown, 1 + len(ways) * copies, figsize=(1.1 * (1 + len(ways) * copies), 1.2 * shown),
                             squeeze=False)
    for r in range(shown):
        axes[r, 0].imshow(plain[r].permute(1, 2, 0))
    axes[0, 0].set_title("original", fontsize=7)
    for j, ((preset, way), fn) in enumerate(ways.items()):
        for k in range(copies):  # a fresh random draw per column
            out = fn(x[:shown])
            col = 1 + j * copies + k
            for r in range(shown):
                axes[r, col].imshow(out[r].permute(1, 2, 0))
            axes[0, col].set_title(f"{preset}\n{way.split()[0]}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    cli.save_figure(fig, path, dpi=80)
    return stats


def check_args(args):
    """Bad option values: one line before any measurement."""
    cli.check_args(args, ("img_size", args.img_size >= 1, ">= 1"), ("batch_size", args.batch_size >= 1, ">= 1"),
                 ("workers", args.workers >= 0, ">= 0"), ("seconds", 0 < args.seconds < 3600, "in (0, 3600)"),
                 ("target", 0 < args.target <= 1, "in (0, 1]"), ("peer_epochs", args.peer_epochs >= 1, ">= 1"),
                 ("folder_n", args.folder_n >= 1, ">= 1"),
                 ("only", set(args.only.split(",")) <= set(BENCHMARKS), f"a comma-separated subset of {','.join(BENCHMARKS)}"))
    check_device(args.device)
    if os.path.isdir(args.out):
        raise cli.UsageError(f"--out {args.out} is a folder; it names the JSON file")
    cli.check_writable(args.out, "--out")  # before, not after, the benchmarks
    if not os.path.isdir(args.data_dir):
        raise cli.UsageError(f"data folder not found: {args.data_dir}")


def main(args):
    check_args(args)
    device = get_device(args.device)
    only = set(args.only.split(","))
    rows, result = [], {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
                        f"{os.cpu_count()} cores, torch {torch.__version__}, device {device}", "figures": {}}

    t0 = time.perf_counter()
    images, labels, classes, _ = load_folder(args.data_dir, args.img_size)
    build_s = time.perf_counter() - t0
    if "cache" in only:
        rows.append(("cache", f"decode {len(images)} photos -> uint8 {tuple(images.shape[1:])}", build_s, "s"))
    mean, std = D.IMAGENET_MEAN, D.IMAGENET_STD

    if "pipeline" in only:
        for preset in AUGMENT_PRESETS:
            ds = D.TensorImageDataset(images, labels, None, build_transform(preset, args.img_size, mean, std))
            loader = D.make_loader(ds, args.batch_size, shuffle=True, workers=args.workers)

            def one_epoch():
                for _ in loader:
                    pass
            r = rate(one_epoch, len(ds), args.seconds)
            rows.append(("pipeline", f"{preset}: v2 per sample, DataLoader {args.workers} workers", r, "img/s"))
            aug = BatchAugment(preset, args.img_size, mean, std)
            x = images[:args.batch_size].to(device)

            def one_batch():
                aug(x)
                sync(device)
            r = rate(one_batch, args.batch_size, args.seconds)
            rows.append(("pipeline", f"{preset}: batched on {device} (--device-data)", r, "img/s"))

    if "model" in only:
        auto = resolve_amp("auto", device)
        for size in map(int, args.model_sizes.split(",")):
            what = f"resnet18 @{size} train step, random tensors, batch {args.batch_size}"
            fp32 = rate(train_step("resnet18", size, 3, args.batch_size, device, "off", channels_last=True)[0],
                        args.batch_size, args.seconds)
            rows.append(("model", f"{what}: fp32 + channels_last (the old path)", fp32, "img/s"))
            r = rate(train_step("resnet18", size, 3, args.batch_size, device, auto)[0], args.batch_size, args.seconds)
            rows.append(("model", f"{what}: --amp auto ({auto}, channels_last "
                                  f"{'on' if use_channels_last(device, auto, size) else 'off'})", r, "img/s"))
            rows.append(("model", f"{what}: --amp auto vs fp32", r / fp32, "x"))
            step, first_s = train_step("resnet18", size, 3, args.batch_size, device, auto, compile=True)
            r = rate(step, args.batch_size, args.seconds)
            rows.append(("model", f"{what}: --amp auto + --compile (first step, compiling: {first_s:.0f} s)", r, "img/s"))
            rows.append(("model", f"{what}: --amp auto + --compile vs fp32", r / fp32, "x"))

    if "layout" in only:
        # interleaved rounds, best of each: another process on the machine slows one round, not the ratio
        cases = [("resnet18", 64, 3, 64), ("resnet18", 128, 3, 64), ("net", 28, 1, 128)]
        best = {}
        for _ in range(args.layout_rounds):
            for name, size, ch, bs in cases:
                for amp in ("off", resolve_amp("auto", device)):
                    for cl in (False, True):
                        step, _ = train_step(name, size, ch, bs, device, amp, channels_last=cl)
                        key = (name, size, bs, amp, cl)
                        best[key] = max(best.get(key, 0.0), rate(step, bs, args.seconds / 2))
        for (name, size, bs, amp, cl), r in best.items():
            rows.append(("layout", f"{name} @{size} batch {bs}, amp {amp}, {'channels_last' if cl else 'contiguous'}",
                         r, "img/s"))
            if cl:
                rows.append(("layout", f"{name} @{size}, amp {amp}: channels_last vs contiguous",
                             r / best[name, size, bs, amp, False], "x"))

    if "infer" in only:
        import evaluate as E
        ds = D.TensorImageDataset(images, labels, None, build_transform("none", args.img_size, mean, std, train=False))
        for amp in ("off", resolve_amp("auto", device)):
            model = build_model("resnet18", len(classes), 3, img_size=args.img_size).to(device)
            model.amp = amp
            if use_channels_last(device, amp, args.img_size):
                model = model.to(memory_format=torch.channels_last)
            r = rate(lambda: E.collect(model, ds, device, 256), len(ds), args.seconds)
            rows.append(("infer", f"evaluate.py resnet18 @{args.img_size}, {len(ds)} photos, batch 256, amp {amp}",
                         r, "img/s"))

    if "gpu" in only:
        if device.type != "cuda":
            rows.append(("gpu", "not run: no CUDA device", "-", ""))
        else:
            auto, size, bs = resolve_amp("auto", device), args.img_size, args.batch_size
            ds = D.TensorImageDataset(images, labels, None, build_transform("strong", size, mean, std))
            loader = D.make_loader(ds, bs, shuffle=True, workers=args.workers, drop_last=True)
            it = iter(loader)

            def per_sample():
                nonlocal it
                try:
                    x, y, *_ = next(it)
                except StopIteration:
                    it = iter(loader)
                    x, y, *_ = next(it)
                return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            gpu_images, gpu_labels = images.to(device), labels.to(device)
            aug = BatchAugment("strong", size, mean, std)

            def on_device():
                idx = torch.randint(len(gpu_images), (bs,), device=device)
                return aug(gpu_images[idx]), gpu_labels[idx]
            rates = {}
            for name, batches in (("model only (random tensors)", None), ("--device-data", on_device),
                                  (f"per-sample CPU pipeline ({args.workers} workers)", per_sample)):
                step, first_s = train_step("resnet18", size, 3, bs, device, auto, compile=True, batches=batches)
                rates[name] = rate(step, bs, args.seconds)
                rows.append(("gpu", f"resnet18 @{size} batch {bs}, {auto} + channels_last + compile: {name}",
                             rates[name], "img/s"))
            model_only = rates["model only (random tensors)"]
            for name, r in rates.items():
                if not name.startswith("model only"):
                    rows.append(("gpu", f"{name} / model only", 100 * r / model_only, "%"))

    if "synth" in only:
        digits, digit_labels = D.load_mnist(args.mnist_root, train=True, download=False)
        bank = composite.digit_bank("both", (digits, digit_labels))  # fonts and MNIST, on the default `field`
        r = rate(lambda: composite.make_synthetic(images, bank, 1024, args.img_size), 1024, args.seconds)
        rows.append(("synth", f"composites @{args.img_size} (fonts + MNIST on field)", r, "/s"))

    if "augcompare" in only:
        path = os.path.join(os.path.dirname(os.path.abspath(args.out)), "augment_compare.png")
        stats = compare_presets(images, args.img_size, mean, std, 256, path)
        for (preset, way), st in stats.items():
            rows.append(("augcompare", f"{preset}, {way}: "
                                       f"pixel mean / std / mean change from the original (256 photos)",
                         f"{st['mean']:.3f} / {st['std']:.3f} / {st['change']:.3f}", ""))
        print(f"wrote {path}")

    if "time-to-accuracy" in only:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [time_to_accuracy(args, name, tmp)
                    for name in ("fast", "peer", "fast-fp32") + (("best",) if args.with_best else ())]
        result["time-to-accuracy"] = runs
        for r in runs:
            when = (f"{r['seconds_to_target']:.0f} s (epoch {r['epoch_reached']})" if r["seconds_to_target"]
                    else f"not reached in {r['epochs']} epochs ({r['train_seconds']:.0f} s)")
            rows.append(("time-to-accuracy", f"MNIST {r['recipe']}: training time to test {args.target:.1%}", when, ""))
            rows.append(("time-to-accuracy", f"MNIST {r['recipe']}: final test accuracy after {r['epochs']} epochs "
                                f"(command wall {r['wall_seconds']:.0f} s)", f"{r['final_test_acc']:.2f}", "%"))
        fast, peer, fp32 = runs[0]["seconds_to_target"], runs[1], runs[2]["seconds_to_target"]
        if fast and fp32:
            rows.append(("time-to-accuracy", f"speed-up to {args.target:.1%}, fast (--amp auto) vs fast in fp32", fp32 / fast, "x"))
        if fast:
            # peer never reaching the target bounds the ratio from below by its whole training time
            ratio = (peer["seconds_to_target"] or peer["train_seconds"]) / fast
            rows.append(("time-to-accuracy", f"speed-up to {args.target:.1%}, fast vs peer", ratio,
                         "x" if peer["seconds_to_target"] else "x (at least)"))

    if "folder10k" in only:
        with tempfile.TemporaryDirectory() as tmp:
            folder, cache = os.path.join(tmp, "photos"), os.path.join(tmp, "cache")
            resample_folder(args.data_dir, folder, args.folder_n)
            paths, _ = scan_folder(folder)
            t0 = time.perf_counter()
            imgs, _ = decode_folder(paths, cache_size(args.img_size), cache)
            rows.append(("folder10k", f"cache build: decode {len(paths)} photos -> uint8 {tuple(imgs.shape[1:])} "
                                      f"({imgs.numel() / 2**20:.0f} MiB)", time.perf_counter() - t0, "s"))
            del imgs
            for extra in ([], ["--device-data"]):
                argv = ["--data-dir", folder, "--mnist-root", args.mnist_root, "--model", "resnet18", "--img-size",
                        str(args.img_size), "--cache-dir", cache, "--dry-run", *extra]
                wall, out, _ = run_train(argv, os.path.join(tmp, "run"))
                main_mib, child_mib = map(float, re.search(r"peak_rss_mib (\S+) (\S+)", out).groups())
                rows.append(("folder10k", f"peak RSS, train.py resnet18 --dry-run{''.join(' ' + e for e in extra)} (from the cache; "
                                          f"largest loader worker {child_mib:,.0f} MiB)", main_mib, "MiB"))

    rows.append(("memory", "peak resident memory of this process", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB"))
    print(f"{result['date']} | {result['machine']}")
    print("| what | measurement | value |\n|---|---|---|")
    for kind, what, value, unit in rows:
        print(f"| {kind} | {what} | {value if isinstance(value, str) else f'{value:,.1f}'} {unit} |")
        result["figures"][f"{kind}: {what}"] = {"value": value, "unit": unit}
    cli.write_json(args.out, result)


if __name__ == "__main__":
    cli.run_main(main, get_args_parser().parse_args)
