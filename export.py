"""Export a checkpoint as a deployable model, then check it against PyTorch on real images.

    python export.py checkpoints/best.pt                      # -> checkpoints/best.torchscript.pt
    python export.py checkpoints/best.pt --format onnx        # -> checkpoints/best.onnx (pip install onnx onnxruntime)
    python export.py checkpoints/best.pt --out deploy/        # -> deploy/best.torchscript.pt (deploy/ made if missing)

The exported model takes float32 images [N, C, S, S], already resized to S = img_size (in two steps,
as evaluate.py does: see the metadata's "input") and normalised ((pixel / 255 - mean) / std), and
returns logits [N, classes]. Its metadata
(TorchScript: the extra file metadata.json; ONNX: metadata_props) holds the class names and that
preprocessing, so a deployment needs nothing else. The parity check runs both models on the
checkpoint's own held-out images (test, else val) and prints the largest logit difference and
whether the top-1 class agrees on every image.
"""
import json
import os
import warnings

import torch

import cli
import data as D
import evaluate as E
from checkpoint import CheckpointError, checkpoint_path

FORMATS = ("torchscript", "onnx")
MODEL_SUFFIXES = (".pt", ".pth", ".onnx")  # an --out that ends in one names a file


def get_args_parser():
    p = cli.ArgumentParser(description="Export a checkpoint (TorchScript or ONNX) and check its parity.")
    p.add_argument("checkpoint", help="a checkpoint, or a run folder (its best.pt)")
    p.add_argument("--format", default="torchscript", choices=FORMATS)
    p.add_argument("--out", default=None, help="output file (.pt, .pth, .onnx), or a folder, made if missing "
                   "(default: beside the checkpoint)")
    p.add_argument("--parity-images", type=int, default=512, help="held-out images of the parity check")
    p.add_argument("--data-dir", default=None, help="the photo folder, if it moved since training")
    p.add_argument("--mnist-root", default=None, help="the MNIST root, if it moved since training")
    return p


def metadata(ckpt):
    """What a deployment needs besides the weights: classes and preprocessing."""
    return {"classes": list(ckpt["classes"]), "img_size": ckpt["img_size"], "in_channels": ckpt["in_channels"],
            "mean": list(ckpt["mean"]), "std": list(ckpt["std"]), "model": ckpt["model"],
            "temperature": ckpt["temperature"],
            "decode_size": D.decode_size(ckpt["data"]), "resize": D.resize_mode(ckpt["data"]),
            "input": "float32 [N, in_channels, img_size, img_size], made as evaluate.py makes it: the image "
                     "(EXIF-rotated, RGB; grey for 1 channel) made a decode_size x decode_size square by `resize` "
                     "(PIL, bilinear; squash: stretched; pad: long side fitted, centred on the image's mean "
                     "colour; crop: short side fitted, centre cut), then resized to img_size (bilinear, "
                     "antialiased), scaled to [0, 1], then (x - mean) / std",
            "output": "logits [N, len(classes)]; probabilities = softmax(logits / temperature)"}


def export_torchscript(model, example, meta, path):
    # torch >= 2.9 marks torch.jit deprecated in favour of torch.export, but TorchScript is still the
    # format that loads with nothing but libtorch / torch.jit.load: the warnings are not the user's to act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    traced = torch.jit.trace(model, example)
    with cli.atomic_write(path, "wb") as f:
        torch.jit.save(traced, f, _extra_files={"metadata.json": json.dumps(meta)})
    files = {"metadata.json": ""}
    loaded = torch.jit.load(path, map_location="cpu", _extra_files=files)
    assert json.loads(files["metadata.json"]) == meta  # read back: the file carries its metadata
    return lambda x: loaded(x)


def export_onnx(model, example, meta, path):
    """A UsageError saying how to install them when onnx / onnxruntime are missing."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:  # nothing was exported: an error, not a success that wrote nothing
        raise cli.UsageError(f"--format onnx needs the onnx and onnxruntime packages ({e.name} is missing); "
                             f"install them with: pip install onnx onnxruntime") from None
    tmp = path + ".export.tmp"
    torch.onnx.export(model, (example,), tmp, input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(tmp)
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=json.dumps(v))
    os.remove(tmp)
    with cli.atomic_write(path, "wb") as f:
        f.write(m.SerializeToString())
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


def output_path(checkpoint, fmt, out):
    """The exported file: beside the checkpoint, or `out`, which names a folder (the default name goes
    inside it) when it is one, ends in a slash, or is new and lacks a model suffix."""
    default = os.path.splitext(os.path.abspath(checkpoint))[0] + (".torchscript.pt" if fmt == "torchscript" else ".onnx")
    if not out:
        return default
    # `--out DIR/` for a DIR not made yet must not be opened as a file (errno 20, ENOTDIR)
    folder = (out.endswith(("/", os.sep)) or os.path.isdir(out)
              or not os.path.exists(out) and not out.lower().endswith(MODEL_SUFFIXES))
    return os.path.join(out, os.path.basename(default)) if folder else out


def parity(model, exported, images):
    """(max |logit difference|, images with the same top-1, images) of `exported` against `model`."""
    with torch.no_grad():
        ref, got = model(images).float(), exported(images).float()
    return (ref - got).abs().max().item(), int((ref.argmax(1) == got.argmax(1)).sum()), len(images)


def main(args):
    cli.check_args(args, ("parity_images", args.parity_images >= 1, ">= 1"))
    args.checkpoint = checkpoint_path(args.checkpoint)
    path = output_path(args.checkpoint, args.format, args.out)
    cli.check_folder_arg(os.path.dirname(os.path.abspath(path)), "--out's folder")
    if not os.path.isfile(args.checkpoint):
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    device = torch.device("cpu")  # a deployable file: traced and checked on the CPU
    model, ckpt, data = E.load_run(args.checkpoint, device, args.data_dir, args.mnist_root)
    held = data.test if data.test is not None else data.val
    n = min(args.parity_images, len(held))
    images = torch.stack([held[i][0] for i in range(n)])  # the evaluation path's tensors
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # (a bare file name: the current folder)
    except OSError as e:
        raise cli.UsageError(f"cannot create the folder of {path}: {e.strerror}") from None
    meta = metadata(ckpt)
    export = export_torchscript if args.format == "torchscript" else export_onnx
    exported = export(model, images[:2], meta, path)
    diff, same, total = parity(model, exported, images)
    print(f"wrote {path} ({args.format}, {os.path.getsize(path) / 1e6:.2f} MB; metadata: {len(meta['classes'])} "
          f"classes, img_size {meta['img_size']}, resize {meta['resize']}, mean {meta['mean']}, std {meta['std']})")
    print(f"parity on {total} {'test' if data.test is not None else 'val'} images: max |logit difference| "
          f"{diff:.2e}, same top-1 on {same}/{total}")
    if same != total:
        cli.warn(f"the exported model's top-1 differs from PyTorch's on {total - same} image(s)")
    return {"path": path, "max_abs_diff": diff, "same_top1": same, "total": total}


if __name__ == "__main__":
    cli.run_main(main, get_args_parser().parse_args)
