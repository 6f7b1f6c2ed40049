"""Image folders: scanning both labelled layouts, robust decoding, and the decode cache.

A folder is read once into one uint8 tensor [N, 3, S, S]; every file that is not used is named
in one warning line (unreadable, hidden, not a regular file, outside the class folders).
"""
import contextlib
import errno
import hashlib
import os
import re
import stat
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from cli import UsageError, atomic_write, check_memory, memory_available, warn

# PIL's fixed pixel limit reports a readable 20000x20000 PNG as unreadable; decode_image checks the
# decoded size against the memory this machine has instead, and names the file it cannot take.
Image.MAX_IMAGE_PIXELS = None

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# `x_label7.jpg`; group 2: a copy's suffix (`x_label7 (1).jpg`, `x_label7 copy.jpg`, `x_label7 - Copy (2).jpg`)
LABEL_RE = re.compile(r"_label([^_.\s()]+)(\s*(?:-\s*)?(?:copy(?:\s*\d+)?|\(\d+\))(?:\s*\(\d+\))?)?\.[^.]+$",
                      re.IGNORECASE)
SPLIT_DIRS = {"train", "training", "val", "valid", "validation", "test", "testing"}  # a split, never a class
JUNK_DIRS = ("__MACOSX",)  # macOS zip debris, never a class
CACHE_VERSION = 2  # 2: the key holds ctimes too (a chmod that makes a photo readable changes it)
RESIZE_MODES = ("squash", "pad", "crop")  # how a photo becomes a square (decode_image); squash: the default


def fingerprint(*parts):
    """A short hash that pins a split (the file list and the val indices)."""
    h = hashlib.sha1()
    for p in parts:
        h.update(repr(p).encode() if not torch.is_tensor(p) else p.numpy().tobytes())
    return h.hexdigest()[:16]


def to_channels(images, channels):
    """uint8 [N, C, H, W] -> `channels` channels (RGB <-> grayscale), for classifying
    arbitrary images with a model trained on the other kind."""
    if images.shape[1] == channels:
        return images
    if channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, channels, -1, -1).contiguous()


def _skip_reason(path):
    """None for a regular file (also behind a symlink), else why it is not read: a FIFO or device
    would block or never end, a symlink loop or a dangling link cannot be opened."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        return "dangling link" if os.path.islink(path) else (e.strerror or type(e).__name__).lower()
    return None if stat.S_ISREG(st.st_mode) else "not a regular file"


def _warn_skipped_entries(root, skipped):
    """One warning for the entries of `root` a scan left out: [(path, why)]."""
    if skipped:
        whys = ", ".join(f"{n} {why}" for why, n in sorted(
            {w: sum(1 for _, x in skipped if x == w) for _, w in skipped}.items()))
        names = ", ".join(os.path.basename(p) for p, _ in skipped[:3])
        warn(f"skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} in {root} ({whys}): "
             f"{names}{', ...' if len(skipped) > 3 else ''}")


def _walk_images(top, skipped):
    """Regular image files under `top`, recursively and sorted. What is left out is added to `skipped`
    with why: hidden files and folders, symlinked or unreadable folders, files that are not images
    (hidden ones, OS metadata such as .DS_Store, aside) and what `_skip_reason` refuses."""
    files = []
    for dp, dirs, fs in os.walk(top, onerror=lambda e: skipped.append((e.filename, "unreadable folder"))):
        for d in sorted(dirs):
            if d.startswith(".") or d in JUNK_DIRS:
                skipped.append((os.path.join(dp, d), "hidden folder"))
            elif os.path.islink(os.path.join(dp, d)):  # os.walk does not follow it: a loop would never end
                skipped.append((os.path.join(dp, d), "symlinked folder, not followed"))
        dirs[:] = sorted(d for d in dirs if not (d.startswith(".") or d in JUNK_DIRS))
        for f in sorted(fs):
            p = os.path.join(dp, f)
            if not f.lower().endswith(IMG_EXTENSIONS):
                if not f.startswith("."):
                    skipped.append((p, "not an image file"))
                continue
            why = "hidden file" if f.startswith(".") else _skip_reason(p)
            if why:
                skipped.append((p, why))
            else:
                files.append(p)
    return files


def _is_dir(entry):
    try:
        return entry.is_dir()
    except OSError:
        return False


def scan_folder(root):
    """(paths, label names) of a labelled image folder, in either layout:
    one subfolder per class (`7/x.jpg`, `muffin/y.jpg`) or flat files named `..._label7.jpg`.
    Only regular files are read; hidden files and folders, `__MACOSX/`, FIFOs, symlink loops and
    dangling links are skipped with one warning."""
    if not os.path.isdir(root):
        raise UsageError(f"data folder not found: {root}")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    skipped = [(e.path, "hidden folder") for e in entries if _is_dir(e) and e.name in JUNK_DIRS]
    subdirs = [e for e in entries if _is_dir(e) and not e.name.startswith(".") and e.name not in JUNK_DIRS]
    flat = [e.path for e in entries if not _is_dir(e) and not e.name.startswith(".")
            and e.name.lower().endswith(IMG_EXTENSIONS)]
    labelled = [p for p in flat if LABEL_RE.search(os.path.basename(p))]
    if subdirs and labelled:
        with_images = [d.name for d in subdirs if _walk_images(d.path, [])]
        if with_images:
            raise UsageError(f"{root} mixes both layouts: {len(labelled)} files named like x_label7.jpg and "
                             f"class folders with images ({', '.join(with_images[:3])}); move one kind out")
        skipped += [(d.path, "folder without images") for d in subdirs]
        subdirs = []
    split_dirs = sorted(d.name for d in subdirs if d.name.lower() in SPLIT_DIRS)
    if subdirs and len(split_dirs) == len(subdirs):
        train = next((d for d in split_dirs if d.lower() in ("train", "training")), split_dirs[0])
        test = next((d for d in split_dirs if d.lower() in ("test", "testing")), None)
        raise UsageError(f"{root} holds split folders ({', '.join(split_dirs)}), not class folders: pass "
                         f"--data-dir {os.path.join(root, train)}"
                         + (f" --test-dir {os.path.join(root, test)}" if test else ""))
    if subdirs:
        paths, names = [], []
        for d in subdirs:
            files = _walk_images(d.path, skipped)
            if not files:
                raise UsageError(f"class folder {d.path} has no images ({'/'.join(IMG_EXTENSIONS)})")
            paths += files
            names += [d.name] * len(files)
        skipped += [(p, "image outside the class folders") for p in flat]
        _warn_skipped_entries(root, skipped)
        return paths, names
    paths, names, copies = [], [], []
    for p in flat:
        m = LABEL_RE.search(os.path.basename(p))
        if not m:
            continue
        why = _skip_reason(p)
        if why:
            skipped.append((p, why))
            continue
        paths.append(p)
        names.append(m.group(1))
        if m.group(2):
            copies.append(p)
    if not paths:
        raise UsageError(f"no labelled images in {root} (expected class subfolders or files "
                         f"named like x_label7.jpg; found {len(flat)} image files)")
    if len(labelled) < len(flat):
        warn(f"{len(flat) - len(labelled)} images in {root} have no _label<name> in the file name; skipped")
    if copies:
        warn(f"{len(copies)} files in {root} are named like copies (e.g. {os.path.basename(copies[0])}): "
             f"labelled as their originals; analyze.py lists near-duplicates")
    _warn_skipped_entries(root, skipped)
    return paths, names


def list_images(root):
    """All regular image files under `root` (recursively), sorted: for classifying an unlabelled folder."""
    if not os.path.isdir(root):
        raise UsageError(f"image folder not found: {root}")
    skipped = []
    paths = _walk_images(root, skipped)
    if not paths:
        raise UsageError(f"no images ({'/'.join(IMG_EXTENSIONS)}) in {root}"
                        + (f" ({len(skipped)} skipped: {short_names([p for p, _ in skipped])})" if skipped else ""))
    _warn_skipped_entries(root, skipped)
    return paths


def decode_image(path, size, resize="squash"):
    """One file -> uint8 RGB tensor [3, size, size], or None when it cannot be read (or is too
    large to decode in this machine's memory: `too_large`).

    EXIF orientation is applied; grayscale, palette, RGBA (composited on white), CMYK and
    16-bit images become 8-bit RGB. JPEGs are decoded at reduced scale when much larger.
    `resize` (RESIZE_MODES) makes the square: squash stretches the whole photo to it, pad fits the
    long side and fills the rest with the photo's mean colour, crop fits the short side and cuts
    the centre."""
    _current.path = path  # names the file in the warnings PIL raises while decoding it
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (size, size))  # DCT-domain downscale: much faster decode
            if too_large(img.size):
                return None
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                a = np.asarray(img, dtype=np.float32)
                a = a / 257.0 if a.max() > 255 else a  # 16-bit -> 8-bit
                img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img.alpha_composite(rgba)
            img = to_square(img.convert("RGB"), size, resize)
            return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def to_square(img, size, resize="squash"):
    """An RGB PIL image -> size x size by `resize` (see decode_image)."""
    w, h = img.size
    if resize == "squash" or w == h:
        return img.resize((size, size), Image.BILINEAR)
    scale = size / (max if resize == "pad" else min)(w, h)
    fit = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    if resize == "crop":
        left, top = (fit.width - size) // 2, (fit.height - size) // 2
        return fit.crop((left, top, left + size, top + size))
    # the photo's own mean colour: no black border for the network to learn, no mirrored or smeared strokes
    fill = tuple(int(round(c)) for c in np.asarray(fit).reshape(-1, 3).mean(0))
    square = Image.new("RGB", (size, size), fill)
    square.paste(fit, ((size - fit.width) // 2, (size - fit.height) // 2))
    return square


_current = threading.local()
DECODE_BYTES_PER_PIXEL = 16  # at the peak of a decode: RGBA (4 bytes) and up to three converted copies


def too_large(wh, threads=None):
    """Whether an image of `wh` pixels cannot be decoded here: its peak decode memory, times the
    decoding threads, must fit in half of the memory available."""
    need = wh[0] * wh[1] * DECODE_BYTES_PER_PIXEL
    return need > 2**28 and need * (threads or os.cpu_count() or 1) > memory_available() / 2


def _decode_failure(path):
    """Why decode_image gave None for `path`: 'unreadable', or 'too large ...' with its size."""
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (64, 64))
            if too_large(img.size):
                return f"too large to decode in this machine's memory ({img.size[0]}x{img.size[1]} px)"
    except Exception:  # any failure to open is what 'unreadable' means
        pass
    return "unreadable"


@contextlib.contextmanager
def _named_warnings():
    """Collect the warnings PIL raises while decoding (a corrupt EXIF block, ...) as (file, message),
    instead of raw lines that name no file."""
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *a, **k: notes.append((getattr(_current, "path", "?"), str(msg).strip()))
        yield notes


def _warn_notes(notes):
    if notes:
        files = sorted({p for p, _ in notes})
        first = "; ".join(f"{os.path.basename(p)}: {m}" for p, m in notes[:2])
        warn(f"{len(files)} image file(s) read despite damaged metadata (an EXIF orientation may be lost): "
             f"{first}" + (" ..." if len(notes) > 2 else ""))


def cache_size(img_size):
    """Side of the decoded cache: a little above img_size, so crops and resizes have margin."""
    return img_size + img_size // 8


def decode_folder(paths, size, cache_dir=None, workers=None, warn_skipped=True, resize="squash"):
    """Decode `paths` once into (uint8 [N, 3, size, size], kept index list), skipping unreadable
    files with one warning. With `cache_dir`, the result is stored on disk keyed by the file
    list, sizes, mtimes and the resize mode, so a second run (or evaluate.py) skips decoding entirely."""
    key = None
    if cache_dir:
        stats = [(p, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for p, st in ((p, os.stat(p)) for p in paths)]
        key = fingerprint(CACHE_VERSION, size, resize, stats)
        cache_file = os.path.join(cache_dir, f"images-{size}px-{key}.pt")
        if os.path.isfile(cache_file):
            try:
                c = torch.load(cache_file, weights_only=True)
                if warn_skipped:
                    warn_unreadable([paths[i] for i in c["skipped"]])
                return c["images"], c["kept"]
            except Exception as e:  # a broken cache is rebuilt, never fatal
                warn(f"ignoring unreadable cache {cache_file} ({type(e).__name__})")
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is an error, not a grey image
    with _named_warnings() as notes, ThreadPoolExecutor(workers or os.cpu_count()) as pool:  # PIL releases the GIL
        decoded = list(pool.map(lambda p: decode_image(p, size, resize), paths, chunksize=16))
    _warn_notes(notes)
    kept = [i for i, t in enumerate(decoded) if t is not None]
    skipped = [i for i, t in enumerate(decoded) if t is None]
    if warn_skipped:
        warn_unreadable([paths[i] for i in skipped])
    images = torch.stack([decoded[i] for i in kept]) if kept else torch.empty(0, 3, size, size, dtype=torch.uint8)
    if key:
        os.makedirs(cache_dir, exist_ok=True)
        with atomic_write(cache_file, "wb") as f:  # a temp name of its own: runs may share a cache
            torch.save({"images": images, "kept": kept, "skipped": skipped}, f)
    return images, kept


def warn_unreadable(bad):
    """One line per reason for the files decode_folder could not use."""
    by_reason = {}
    for p in bad:
        by_reason.setdefault(_decode_failure(p), []).append(p)
    for reason, paths in by_reason.items():
        warn(f"skipped {len(paths)} image file(s), {reason}: {short_names(paths)}")


def short_names(paths):
    return ", ".join(os.path.basename(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")


def load_folder(root, img_size, cache_dir=None, resize="squash"):
    """A labelled photo folder -> (uint8 images, labels, class names, kept paths)."""
    all_paths, all_names = scan_folder(root)
    check_memory(len(all_paths) * 3 * cache_size(img_size) ** 2, f"{len(all_paths)} photos decoded at "
                 f"{cache_size(img_size)} px (--img-size {img_size})")
    images, kept = decode_folder(all_paths, cache_size(img_size), cache_dir, warn_skipped=False, resize=resize)
    paths, names = [all_paths[i] for i in kept], [all_names[i] for i in kept]
    classes = sorted(set(names), key=_natural_key)
    bad = [p for i, p in enumerate(all_paths) if i not in set(kept)]
    if not paths:
        raise UsageError(f"none of the images in {root} could be read ({short_names(bad)})")
    lost = sorted(set(all_names) - set(classes))
    if lost:
        raise UsageError(f"class {lost[0]!r} in {root} has no readable images ({short_names(bad)})")
    warn_unreadable(bad)
    index = {c: i for i, c in enumerate(classes)}
    return images, torch.tensor([index[n] for n in names]), classes, paths


def _natural_key(name):
    """Sort '2' before '10', names alphabetically."""
    # the name breaks ties ('3' and '03'), so the order never depends on the hash seed
    return (0, int(name), name) if name.isdigit() else (1, 0, name)
