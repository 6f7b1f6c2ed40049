"""Throughput benchmarks: prints a table and writes JSON. Never a timed unit test.

    python bench.py --data-dir ../shared/data/meter_digits --mnist-root ../shared/data

Measured in one process, side by side, so ratios are comparable on a noisy machine:
  pipeline  images/s of each augmentation preset at --img-size from the decoded cache:
            torchvision v2 per sample through a DataLoader (--workers), and batched (--device-data)
  model     resnet18 training images/s on random tensors (forward, backward, AdamW step)
  synth     synth.py composites/s
  cache     decode time of the photo folder into the uint8 cache, and peak resident memory
"""
import argparse
import json
import os
import platform
import resource
import time

import torch

import data as D
import synth
from model import build_model, get_device


def get_args_parser():
    p = argparse.ArgumentParser(description="Throughput benchmarks (prints a table, writes JSON).")
    p.add_argument("--data-dir", default="../shared/data/meter_digits")
    p.add_argument("--mnist-root", default="../shared/data")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--seconds", type=float, default=8.0, help="time budget per measurement")
    p.add_argument("--only", default="cache,pipeline,model,synth")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="bench.json")
    return p


def rate(fn, items_per_call, seconds):
    """items/s of fn() after one warm-up call, over at least `seconds`."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += items_per_call
    return n / (time.perf_counter() - t0)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(args):
    device = get_device(args.device)
    only = set(args.only.split(","))
    rows, result = [], {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
                        f"{os.cpu_count()} cores, torch {torch.__version__}, device {device}", "figures": {}}

    t0 = time.perf_counter()
    images, labels, classes, _ = D.load_folder(args.data_dir, args.img_size)
    build_s = time.perf_counter() - t0
    if "cache" in only:
        rows.append(("cache", f"decode {len(images)} photos -> uint8 {tuple(images.shape[1:])}", build_s, "s"))
    mean, std = D.IMAGENET_MEAN, D.IMAGENET_STD

    if "pipeline" in only:
        for preset in D.AUGMENT_PRESETS:
            ds = D.TensorImageDataset(images, labels, None, D.build_transform(preset, args.img_size, mean, std))
            loader = D.make_loader(ds, args.batch_size, shuffle=True, workers=args.workers)

            def one_epoch():
                for _ in loader:
                    pass
            r = rate(one_epoch, len(ds), args.seconds)
            rows.append(("pipeline", f"{preset}: v2 per sample, DataLoader {args.workers} workers", r, "img/s"))
            aug = D.BatchAugment(preset, args.img_size, mean, std)
            x = images[:args.batch_size].to(device)

            def one_batch():
                aug(x)
                sync(device)
            r = rate(one_batch, args.batch_size, args.seconds)
            rows.append(("pipeline", f"{preset}: batched on {device} (--device-data)", r, "img/s"))

    if "model" in only:
        model = build_model("resnet18", 10, 3, img_size=args.img_size).to(device).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters())
        x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device).to(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (args.batch_size,), device=device)

        def step():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sync(device)
        rows.append(("model", f"resnet18 @{args.img_size} train step, random tensors, batch {args.batch_size}",
                     rate(step, args.batch_size, args.seconds), "img/s"))

    if "synth" in only:
        digits, digit_labels = D.load_mnist(args.mnist_root, train=True, download=False)
        r = rate(lambda: synth.make_synthetic(images, digits[:, 0], digit_labels, 1024, args.img_size), 1024, args.seconds)
        rows.append(("synth", f"composites @{args.img_size}", r, "/s"))

    rows.append(("memory", "peak resident memory of this process", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB"))
    print(f"{result['date']} | {result['machine']}")
    print(f"| what | measurement | value |\n|---|---|---|")
    for kind, what, value, unit in rows:
        print(f"| {kind} | {what} | {value:,.1f} {unit} |")
        result["figures"][f"{kind}: {what}"] = {"value": value, "unit": unit}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
