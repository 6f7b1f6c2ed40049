"""Unlabelled photos ranked for labelling (analyze.py --unlabeled): which to label first, in a table
that is a train.py --corrections file once its label column is filled.

The order is the usual active-learning pair: uncertain AND unlike what is labelled first.
usefulness = (1 - margin) x distance, where margin is the top probability minus the second and
distance the cosine distance of the penultimate features to the nearest labelled training photo.
A product needs no common scale for the two, and is 0 for a photo the model is certain of or one
that copies a training photo. analyze.py does the predicting; this module scores, orders and writes.
"""
import csv
import os

import torch
import torch.nn.functional as F

import cli
from cli import UsageError

COLUMNS = ["rank", "path", "label", "prediction", "confidence", "margin", "entropy", "distance", "usefulness", "flag"]
ORDER = ("usefulness = (1 - margin) x distance, highest first (uncertain and unlike the labelled training photos "
         "first; ties by path); margin = top-1 minus top-2 probability; distance = 1 - cosine similarity of the "
         "penultimate features to the nearest training photo")
BELOW, COPY = "below threshold", "same pixels as a labelled photo"  # the flags; "ok" when neither


def check_folder(folder, data_dir):
    """One line for a --unlabeled folder that cannot hold new photos: missing, or the training folder
    `data_dir` itself, a folder inside it or one holding it (compared by resolved path)."""
    if not os.path.isdir(folder):
        raise UsageError(f"--unlabeled folder not found: {folder}")
    if data_dir:
        a, b = os.path.realpath(folder), os.path.realpath(data_dir)
        if os.path.commonpath([a, b]) in (a, b):
            where = "is" if a == b else "is inside" if len(a) > len(b) else "holds"
            raise UsageError(f"--unlabeled {folder} {where} the training folder {data_dir}: its photos are labelled "
                             f"already; give a folder of photos the model was not trained on")


def nearest_distance(feats, pool, chunk=1024):
    """For each row of `feats` [N, D], 1 - the cosine similarity of its nearest row of `pool` [M, D]."""
    pool = F.normalize(pool.float(), dim=1)
    return torch.cat([1 - (F.normalize(x.float(), dim=1) @ pool.T).max(1).values.clamp(-1, 1)
                      for x in feats.split(chunk)])


def scores(probs, feats, train_feats):
    """{column: tensor [N]} of the numbers a row holds: confidence, margin, entropy (nats), distance, usefulness."""
    top = probs.topk(min(2, probs.shape[1]), dim=1).values
    margin = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0)
    distance = nearest_distance(feats, train_feats).clamp_min(0)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    return {"confidence": top[:, 0], "margin": margin, "entropy": entropy, "distance": distance,
            "usefulness": (1 - margin) * distance}


def order(usefulness, paths):
    """Row positions, most useful to label first; ties (e.g. several at 0) by path, so the order is fixed."""
    return sorted(range(len(paths)), key=lambda i: (-float(usefulness[i]), paths[i]))


def flags(below, copies):
    """The flag of each row: BELOW and / or COPY joined by `+`, else `ok`. `below`: bools; `copies`: positions."""
    copies = set(copies)
    return ["+".join(f for f, on in ((BELOW, b), (COPY, i in copies)) if on) or "ok" for i, b in enumerate(below)]


def write(out_dir, paths, predictions, s, row_flags, settings):
    """unlabeled.csv (rows in rank order, `path` absolute, `label` empty for the user to fill) and
    unlabeled.json (what produced it: `settings`, the order's definition, the columns). Returns the order."""
    rank = order(s["usefulness"], paths)
    with cli.atomic_write(os.path.join(out_dir, "unlabeled.csv")) as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r, i in enumerate(rank, 1):
            w.writerow([r, os.path.abspath(paths[i]), "", predictions[i]]
                       + [f"{float(s[k][i]):.4f}" for k in COLUMNS[4:9]] + [row_flags[i]])
    cli.write_json(os.path.join(out_dir, "unlabeled.json"),
                   dict(settings, n_images=len(paths), order=ORDER, flags=[BELOW, COPY], columns=COLUMNS))
    return rank
