"""Corrections that training reads: one CSV of `path,label,weight` rows that relabel, exclude
(weight 0), reweight or add images, while the image files themselves are never touched.

This is the one reader of such files; a `--sample-weights` file is read here too, as a
corrections file without a label column (header optional, names matched the older, looser way).
What the rows do to a data set is data.py's (build_datasets); this module only reads and checks.
"""
import csv
import hashlib
import io
import math
import os
import re
from dataclasses import dataclass, field

from cli import UsageError, atomic_write, warn
from images import IMG_EXTENSIONS

RUN_COPY = "trained_corrections.csv"  # train.py's copy of the file a run trained with (not the page's download)


@dataclass
class Row:
    line: int
    path: str
    label: str | None  # None: unchanged
    weight: float | None  # None: unchanged


@dataclass
class Corrections:
    """What a corrections file asks for, by sample index of the data set it was read against."""
    sha256: str
    labels: dict = field(default_factory=dict)   # index -> class name
    weights: dict = field(default_factory=dict)  # index -> weight (0: excluded)
    added: list = field(default_factory=list)    # (absolute path, class name, weight) of images outside the folder


def row_path(path):
    """A sample's name in a corrections file: its absolute path (MNIST's `#i` as it is)."""
    return path if path.startswith("#") else os.path.abspath(path)


def file_hash(path):
    """The sha256 of a file's bytes (hex): what a checkpoint records of its corrections file."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_rows(csv_path, option="--corrections", legacy=False):
    """The rows of a corrections file: a header naming `path` (or `file`) and `label` and/or `weight`
    (other columns are ignored, so analyze.py's suspects.csv reads as it is); empty cells leave
    that part unchanged. `legacy` (a --sample-weights file): the header is optional (then the
    columns are path,weight) and a label column is ignored. Every bad row is one UsageError."""
    if not os.path.isfile(csv_path):
        raise UsageError(f"{option} file not found: {csv_path}")
    try:
        with open(csv_path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {option} {csv_path}: {e.strerror}") from None
    expected = "path,weight" if legacy else "path,label,weight"
    if b"\0" in raw:  # no text CSV holds a NUL byte (UTF-16 text does: Excel's "Unicode text")
        raise UsageError(f"{option} {csv_path} is a binary or UTF-16 file, not a UTF-8 CSV of {expected} rows")
    try:  # Excel writes a BOM; older tools Latin-1
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    first = next((line for line in text.splitlines() if line.strip()), "")
    # Excel in a comma-decimal locale separates with ';' (and writes 0,5): read it as such
    sep = ";" if ";" in first and "," not in first else ","
    try:
        reader = csv.reader(io.StringIO(text), delimiter=sep)
        rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r) and not r[0].startswith("#!")]
    except csv.Error as e:
        raise UsageError(f"{option} {csv_path} is not a CSV file ({e})") from None
    names = [c.strip().lower() for c in rows[0][1]] if rows else []
    if "path" in names or names[:1] == ["file"]:
        columns, rows = names, rows[1:]
    elif legacy:
        columns = ["path", "weight"]
    else:
        raise UsageError(f"{option} {csv_path} has no header: its first line must name the columns, "
                         f"{expected} (got {first[:60]!r})")
    path_col = columns.index("path") if "path" in columns else columns.index("file")
    label_col = columns.index("label") if "label" in columns and not legacy else None
    weight_col = columns.index("weight") if "weight" in columns else None
    if label_col is None and weight_col is None:
        raise UsageError(f"{option} {csv_path}: the header names no label or weight column "
                         f"(got {','.join(columns)}; expected {expected})")
    out = []
    for line, r in rows:
        if legacy and len(r) < 2:
            raise UsageError(f"{csv_path} line {line}: rows must be path,weight; got {r}")
        cell = lambda k: r[k].strip() if k is not None and k < len(r) else ""  # noqa: E731
        path = cell(path_col)
        if not path:
            raise UsageError(f"{csv_path} line {line}: no path (got {sep.join(r)!r})")
        out.append(Row(line, path, cell(label_col) or None, _weight(cell(weight_col), sep, csv_path, line, path)))
    return out


def _weight(text, sep, csv_path, line, path):
    """A row's weight cell as a float (None when empty); negative, NaN and infinite are refused."""
    if not text:
        return None
    try:
        w = float(text.replace(",", ".") if sep == ";" else text)
    except ValueError:
        raise UsageError(f"{csv_path} line {line}: weight {text!r} of {path} is not a number") from None
    if not (math.isfinite(w) and w >= 0):
        raise UsageError(f"{csv_path} line {line}: weight {text!r} of {path} must be a finite number >= 0")
    return w


def read_corrections(csv_path, paths, classes, n=None, base=None):
    """The corrections of `csv_path` against a data set's sample `paths` (absolute; None for MNIST,
    whose samples are named `#i`) and `classes`. A row's path is absolute or relative to `base`
    (default: the CSV file's folder; a run's copy of the file reads with its original's) and
    matches a sample by resolved path; a path that is not a sample but an image
    file adds that image (with its label). A class name that is new is allowed (a label the folder
    lacks), unless it looks like an existing one (`07` for `7`, `Cat` for `cat`): then it is a typo."""
    rows = read_rows(csv_path)
    base = os.path.abspath(base or os.path.dirname(os.path.abspath(csv_path)))
    index = {os.path.abspath(p): i for i, p in enumerate(paths or [])}
    for i, p in enumerate(paths or []):  # a file reached through a symlink is the same file
        index.setdefault(os.path.realpath(p), i)
    known = {_norm(c): c for c in classes}
    fix, seen = Corrections(file_hash(csv_path)), {}
    for row in rows:
        if row.label is None and row.weight is None:
            continue  # asks nothing: an analyze.py unlabeled.csv with only some labels filled in is a corrections file
        where = f"{csv_path} line {row.line}"
        full = os.path.normpath(os.path.join(base, os.path.expanduser(row.path)))  # join keeps an absolute path
        i = index.get(full, index.get(os.path.realpath(full)))
        if paths is None and re.fullmatch(r"#?\d+", row.path) and int(row.path.lstrip("#")) < n:
            i = int(row.path.lstrip("#"))
        key = i if i is not None else os.path.realpath(full)
        if key in seen:
            raise UsageError(f"{where}: {row.path} is listed twice (also on line {seen[key]}): one row per image")
        seen[key] = row.line
        if row.label is not None and row.label not in classes and _norm(row.label) in known:
            raise UsageError(f"{where}: label {row.label!r} of {row.path} is not a class; did you mean "
                             f"{known[_norm(row.label)]!r}? (classes: {', '.join(classes)})")
        if i is not None:
            if row.label is not None:
                fix.labels[i] = row.label
            if row.weight is not None:
                fix.weights[i] = row.weight
            continue
        if not (full.lower().endswith(IMG_EXTENSIONS) and os.path.isfile(full)):
            raise UsageError(f"{where}: {row.path} is neither an image of the data set nor an image file "
                             f"(looked for {full}; relative paths start at the CSV file's folder)")
        if paths is None:
            raise UsageError(f"{where}: {row.path} is not an MNIST sample (#i); adding images needs a photo folder")
        if row.label is None:
            raise UsageError(f"{where}: {row.path} is not in the data folder, so the row adds it: give its label")
        if row.weight == 0:
            raise UsageError(f"{where}: the row adds {row.path} with weight 0, which trains nothing: leave it out")
        fix.added.append((full, row.label, 1.0 if row.weight is None else row.weight))
    return fix


def propose(paths, labels, probs, suspect, suggested, classes, relabel_above=0.5):
    """The corrections a label review proposes, {path: (label or None, weight or None)}: a suspect
    (confident learning's flag, with its `suggested` class) is relabelled when the reviewer gives
    that class at least `relabel_above`, and excluded (weight 0) when it is less sure, so an
    ambiguous image is left out of training rather than given a guessed label."""
    out = {}
    for i in suspect.nonzero().flatten().tolist():
        c = int(suggested[i])
        out[paths[i]] = (classes[c], None) if float(probs[i, c]) >= relabel_above else (None, 0.0)
    return out


def read_table(csv_path):
    """A corrections file as {path: (label or None, weight or None)}, the form propose() returns; a
    relative path made absolute from the file's folder (as read_corrections reads it), so the rows
    mean the same images when written to another folder."""
    base = os.path.dirname(os.path.abspath(csv_path))
    where = lambda p: p if p.startswith("#") else os.path.normpath(os.path.join(base, os.path.expanduser(p)))  # noqa: E731
    return {where(r.path): (r.label, r.weight) for r in read_rows(csv_path)}


def merged(old, new):
    """Corrections `new` applied on top of `old` (both {path: (label, weight)}): a later round's row
    for an image replaces the earlier one's parts it sets, and keeps the rest."""
    out = dict(old)
    for path, (label, weight) in new.items():
        was_label, was_weight = out.get(path, (None, None))
        out[path] = (label if label is not None else was_label, weight if weight is not None else was_weight)
    return out


def write_table(csv_path, table, comment=None):
    """{path: (label, weight)} as a corrections file (atomically), rows in path order; `comment`: a
    first line `#! ...` that readers skip, saying what made the file."""
    with atomic_write(csv_path) as f:
        if comment:
            f.write(f"#! {comment}\n")
        w = csv.writer(f)
        w.writerow(["path", "label", "weight"])
        for path in sorted(table):
            label, weight = table[path]
            w.writerow([path, "" if label is None else label, "" if weight is None else f"{weight:g}"])


def _norm(name):
    """A class name as a typo would miss it: case, spaces and a number's leading zeros aside."""
    name = name.strip().lower()
    return name.lstrip("0") or "0" if name.isdigit() else name


def read_sample_weights(csv_path, paths, n):
    """A weight per sample (a float tensor) from a --sample-weights file: rows `path,weight`
    (header optional). Paths match by full path or by their last one or two components (`x.jpg`,
    `cat/x.jpg`; a short name that several files share matches none); MNIST samples by index
    (`#123` or `123`). Unlisted samples weigh 1; a path not in the data set is one warning."""
    import torch
    weights = torch.ones(n)
    keys, ambiguous = {}, set()
    for i, p in enumerate(paths or []):
        keys[os.path.abspath(p)] = i
        parts = os.path.abspath(p).split(os.sep)
        for k in (parts[-1], "/".join(parts[-2:])):
            if k in keys and keys[k] != i:
                ambiguous.add(k)
            keys[k] = i
    for k in ambiguous:
        del keys[k]
    unknown, given = [], {}  # given: sample -> the row's path, to refuse a sample listed twice
    for row in read_rows(csv_path, "--sample-weights", legacy=True):
        tail = row.path.replace(os.sep, "/").split("/")
        i = keys.get(os.path.abspath(row.path), keys.get("/".join(tail[-2:]), keys.get(tail[-1])))
        if i is None and paths is None and row.path.lstrip("#").isdigit():
            i = int(row.path.lstrip("#"))
        if i is None or i >= n:
            unknown.append(row.path)
        elif i in given:
            raise UsageError(f"{csv_path}: {row.path} is listed twice (as {given[i]!r} and {row.path!r}): "
                             f"one row per image")
        else:
            given[i] = row.path
            weights[i] = weights[i] if row.weight is None else row.weight
    if unknown:
        warn(f"{len(unknown)} path(s) in {csv_path} are not in the dataset, e.g. {unknown[0]}")
    return weights


def summary_line(path, sha256, s):
    """One line of what a corrections file changed (a checkpoint's corrections_summary `s`)."""
    parts = [f"{s['relabelled']} relabelled ({s['relabelled_val']} of them val)", f"{s['excluded']} excluded",
             f"{s['reweighted']} reweighted", f"{s['added']} added to train"]
    if s["new_classes"]:
        parts.append(f"new class(es): {', '.join(s['new_classes'])}")
    if s["ignored"]:
        parts.append(f"{s['ignored']} weight(s) of images outside training change nothing (val keeps its images)")
    return f"corrections {os.path.basename(path)} (sha256 {sha256[:12]}): " + ", ".join(parts)
