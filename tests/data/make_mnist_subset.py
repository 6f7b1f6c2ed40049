"""Write the tests' MNIST subset: tests/data/MNIST/raw/ with 2,000 training and 500 test digits
(200 and 50 of each class) as the four IDX files, so the suite needs no ../shared and no download.

    python tests/data/make_mnist_subset.py [--source ../shared/data/MNIST/raw]

The pick is deterministic (a seeded permutation per class, kept in the original order), so running
it again writes the same bytes. MNIST: Yann LeCun, Corinna Cortes, Christopher J.C. Burges, CC BY-SA 3.0.
"""
import argparse
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PER_CLASS = {"train": 200, "t10k": 50}


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())
    os.replace(tmp, path)


def stratified_pick(labels, per_class, seed=0):
    """`per_class` indices of every class, drawn by a seeded permutation, in ascending order."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(10)]
    return np.sort(np.concatenate(picked))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=os.path.join(HERE, "..", "..", "..", "shared", "data", "MNIST", "raw"))
    p.add_argument("--out", default=os.path.join(HERE, "MNIST", "raw"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for split, n in PER_CLASS.items():
        images = read_idx(os.path.join(args.source, f"{split}-images-idx3-ubyte"))
        labels = read_idx(os.path.join(args.source, f"{split}-labels-idx1-ubyte"))
        keep = stratified_pick(labels, n)
        write_idx(os.path.join(args.out, f"{split}-images-idx3-ubyte"), images[keep])
        write_idx(os.path.join(args.out, f"{split}-labels-idx1-ubyte"), labels[keep])
        print(f"{split}: {len(keep)} digits ({n} per class) -> {args.out}")


if __name__ == "__main__":
    main()
