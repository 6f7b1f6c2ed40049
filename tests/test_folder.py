"""Photo folders: scanning both layouts, decoding odd and broken files, the decoded-image cache,
build_datasets on a folder (split, synthetic digits, sample weights), the batched device
augmentation / loader, and a tiny end-to-end train.py -> evaluate.py run.

Every fixture is a few dozen tiny images written with PIL into tmp_path; only the synthetic-digit
tests read MNIST from ../shared/data (skipped when it is not there)."""
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import ConcatDataset

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import augment as AU  # noqa: E402
import images as I  # noqa: E402
import cli  # noqa: E402
import data as D  # noqa: E402
import evaluate as E  # noqa: E402
import train  # noqa: E402

from helpers import MNIST_ROOT as SHARED, have_mnist  # noqa: E402  (the tests' MNIST subset)

MNIST_RAW = SHARED / "MNIST" / "raw"
needs_mnist = pytest.mark.skipif(not have_mnist(), reason=f"MNIST not in {MNIST_RAW}")

IMG = 16                       # img_size of the data tests
S = I.cache_size(IMG)          # side of the decoded cache
SIZES = [(20, 30), (60, 40), (33, 21), (45, 45), (24, 52), (40, 20)]  # (width, height)
EXTS = ["jpg", "jpeg", "png", "bmp", "webp", "PNG"]


# ----------------------------------------------------------------------------- helpers

def random_rgb(w, h, seed, lo=0, hi=256):
    return np.random.default_rng(seed).integers(lo, hi, (h, w, 3), dtype=np.uint8)


def save(path, w=30, h=20, seed=0, lo=0, hi=256, mode="RGB"):
    """A random-content image at `path` (format from the extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_rgb(w, h, seed, lo, hi)).convert(mode).save(path)
    return path


def jpeg_bytes(w=60, h=40, seed=0):
    buf = io.BytesIO()
    Image.fromarray(random_rgb(w, h, seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_flat(folder, labels, per_class, seed=0):
    """`folder/img{k}_label{c}.{ext}` with cycling extensions and sizes."""
    k = 0
    for c in labels:
        for _ in range(per_class):
            w, h = SIZES[k % len(SIZES)]
            save(Path(folder) / f"img{k:03d}_label{c}.{EXTS[k % len(EXTS)]}", w, h, seed + k)
            k += 1
    return Path(folder)


def make_subfolders(folder, counts, seed=0, lo=0, hi=256):
    """`folder/<class>/<class>{i}.<ext>` for {class: n}."""
    k = 0
    for c, n in counts.items():
        for i in range(n):
            w, h = SIZES[k % len(SIZES)]
            save(Path(folder) / c / f"{c}{i:02d}.{EXTS[k % len(EXTS)]}", w, h, seed + k, lo, hi)
            k += 1
    return Path(folder)


def warning_lines(err):
    return [ln for ln in err.splitlines() if ln.startswith("warning:")]


def folder_cfg(data_dir, *extra, img_size=IMG):
    """The `data` config train.py would build for these command-line arguments."""
    args = train.get_args_parser().parse_args(
        ["--data-dir", str(data_dir), "--img-size", str(img_size), "--mnist-root", str(SHARED),
         "--no-download", *map(str, extra)])
    return D.data_config(args)


def one_line(exc):
    msg = str(exc.value)
    assert msg and "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- 1. layouts

def test_flat_layout_mixed_extensions_and_sizes(tmp_path, capsys):
    d = make_flat(tmp_path / "flat", ["7", "10", "2"], per_class=4)
    paths, names = I.scan_folder(str(d))
    assert len(paths) == 12 and sorted(set(names)) == ["10", "2", "7"]
    assert {Path(p).suffix.lower() for p in paths} == {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    for p, n in zip(paths, names):
        assert Path(p).name.endswith(f"_label{n}{Path(p).suffix}")

    images, labels, classes, kept = I.load_folder(str(d), IMG)
    assert classes == ["2", "7", "10"]  # natural order, not "10" < "2"
    assert images.dtype == torch.uint8 and images.shape == (12, 3, S, S)
    assert labels.dtype == torch.int64 and labels.shape == (12,)
    assert sorted(kept) == sorted(paths)
    for i, p in enumerate(kept):
        assert classes[labels[i]] == I.LABEL_RE.search(Path(p).name).group(1)
        assert torch.equal(images[i], I.decode_image(p, S)), p  # images line up with paths
    assert warning_lines(capsys.readouterr().err) == []


def test_subfolder_layout_sorted_classes(tmp_path, capsys):
    d = make_subfolders(tmp_path / "pets", {"dog": 5, "cat": 6})
    save(d / "cat" / "nested" / "deep.png", 25, 35, seed=99)   # class folders are searched recursively
    (d / "cat" / "notes.txt").write_text("not an image")       # ignored: not an image extension
    save(d / ".cache" / "ignored.png")                          # hidden folders are not classes
    paths, names = I.scan_folder(str(d))
    assert len(paths) == 12 and set(names) == {"cat", "dog"}
    assert not any(".cache" in p or p.endswith(".txt") for p in paths)

    images, labels, classes, kept = I.load_folder(str(d), IMG)
    assert classes == ["cat", "dog"]
    assert images.shape == (12, 3, S, S) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [7, 5]
    for i, p in enumerate(kept):
        assert Path(p).relative_to(d).parts[0] == classes[labels[i]]
    assert warning_lines(capsys.readouterr().err) == []


def test_cache_size_margin():
    assert I.cache_size(128) == 144 and I.cache_size(32) == 36 and I.cache_size(16) == 18


# ----------------------------------------------------------------------------- 2. bad input

def test_broken_files_are_one_warning_and_good_ones_load(tmp_path, capsys):
    d = make_flat(tmp_path / "flat", ["1", "2", "3"], per_class=3)
    b = jpeg_bytes()
    (d / "trunc_label1.jpg").write_bytes(b[:len(b) // 2])   # a valid JPEG cut in half
    (d / "empty_label2.jpg").write_bytes(b"")                # zero bytes
    (d / "x_label3.jpg").write_text("this is not a JPEG\n")  # text with an image name
    images, labels, classes, paths = I.load_folder(str(d), IMG)
    assert images.shape == (9, 3, S, S) and classes == ["1", "2", "3"]
    assert not any(Path(p).name in ("trunc_label1.jpg", "empty_label2.jpg", "x_label3.jpg") for p in paths)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = warning_lines(err)
    assert len(lines) == 1, err
    assert "skipped 3 " in lines[0]
    for name in ("trunc_label1.jpg", "empty_label2.jpg", "x_label3.jpg"):
        assert name in lines[0]


def test_many_broken_files_name_only_the_first_few(tmp_path, capsys):
    d = make_flat(tmp_path / "flat", ["1", "2"], per_class=3)
    for i in range(5):
        (d / f"bad{i}_label1.png").write_bytes(b"\x89PNG garbage")
    images, *_ = I.load_folder(str(d), IMG)
    assert len(images) == 6
    lines = warning_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "skipped 5 " in lines[0]
    assert "bad0_label1.png" in lines[0] and "bad4_label1.png" not in lines[0] and "..." in lines[0]


def test_truncated_jpeg_is_not_decoded_as_grey(tmp_path):
    b = jpeg_bytes(seed=3)
    (tmp_path / "t.jpg").write_bytes(b[:len(b) // 2])
    images, kept = I.decode_folder([str(tmp_path / "t.jpg")], S)
    assert kept == [] and images.shape == (0, 3, S, S) and images.dtype == torch.uint8


def test_class_with_only_unreadable_files_is_a_data_error(tmp_path, capsys):
    d = make_subfolders(tmp_path / "pets", {"cat": 3})
    (d / "dog").mkdir()
    (d / "dog" / "a.jpg").write_bytes(b"")
    with pytest.raises(cli.UsageError) as e:
        I.load_folder(str(d), IMG)
    assert "dog" in one_line(e)


def test_empty_class_folder_is_a_data_error(tmp_path):
    d = make_subfolders(tmp_path / "pets", {"cat": 3, "dog": 3})
    (d / "emu").mkdir()
    (d / "emu" / "readme.txt").write_text("no images here")
    with pytest.raises(cli.UsageError) as e:
        I.scan_folder(str(d))
    assert "emu" in one_line(e)
    with pytest.raises(cli.UsageError):
        I.load_folder(str(d), IMG)


def test_folder_without_images_is_a_data_error(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(cli.UsageError) as e:
        I.load_folder(str(tmp_path), IMG)
    assert str(tmp_path) in one_line(e)


def test_flat_images_without_labels_are_a_data_error(tmp_path):
    save(tmp_path / "a.png")
    save(tmp_path / "b.jpg")
    with pytest.raises(cli.UsageError) as e:
        I.scan_folder(str(tmp_path))
    assert "_label" in one_line(e)


def test_missing_folder_is_a_data_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(cli.UsageError) as e:
        I.load_folder(str(missing), IMG)
    assert str(missing) in one_line(e)
    with pytest.raises(cli.UsageError):
        D.build_datasets(folder_cfg(missing))


def test_unlabelled_flat_files_skipped_with_a_warning(tmp_path, capsys):
    d = make_flat(tmp_path / "flat", ["1", "2"], per_class=2)
    save(d / "nolabel.png")
    paths, _ = I.scan_folder(str(d))
    assert len(paths) == 4
    lines = warning_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "1 images" in lines[0]


def test_load_folder_warns_once_about_unlabelled_files(tmp_path, capsys):
    d = make_flat(tmp_path / "flat", ["1", "2"], per_class=2)
    save(d / "nolabel.png")
    I.load_folder(str(d), IMG)
    assert len(warning_lines(capsys.readouterr().err)) == 1


# ----------------------------------------------------------------------------- 3. conversions

def _write_cmyk(p):
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(p)          # pure red in CMYK


def _write_rgba(p):
    a = np.zeros((20, 30, 4), np.uint8)
    a[..., 0] = 200
    a[:, 15:, 3] = 255     # right half opaque dark red, left half fully transparent
    Image.fromarray(a, "RGBA").save(p)


def _write_l(p):
    Image.new("L", (30, 20), 77).save(p)


def _write_i16(p, value=65535):
    im = Image.fromarray(np.full((20, 30), value, np.uint16))
    assert im.mode.startswith("I")
    im.save(p)
    with Image.open(p) as check:
        assert check.mode in ("I;16", "I")


def _write_i16_mid(p):
    _write_i16(p, 128 * 257)   # mid grey in 16 bits -> 128, not clipped to 255


def _write_palette(p):
    Image.new("RGB", (30, 20), (10, 200, 30)).convert("P", palette=Image.ADAPTIVE).save(p)


def _write_palette_transparent(p):
    im = Image.new("P", (30, 20), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.save(p, transparency=0)   # index 0 (red) is transparent -> white


def _write_la(p):
    a = np.zeros((20, 30, 2), np.uint8)
    a[..., 0] = 50   # dark grey, alpha 0 everywhere
    Image.fromarray(a, "LA").save(p)


CONVERSIONS = [  # name, file, writer, (x, y) probed in the decoded image, expected RGB, tolerance
    ("cmyk", "c.jpg", _write_cmyk, (8, 8), (255, 0, 0), 8),
    ("rgba_transparent", "t.png", _write_rgba, (2, 8), (255, 255, 255), 0),
    ("rgba_opaque", "t.png", _write_rgba, (28, 8), (200, 0, 0), 0),
    ("grayscale", "g.jpg", _write_l, (8, 8), (77, 77, 77), 2),
    ("gray16", "g16.png", _write_i16, (8, 8), (255, 255, 255), 1),
    ("gray16_mid", "g16m.png", _write_i16_mid, (8, 8), (128, 128, 128), 1),
    ("palette", "p.png", _write_palette, (8, 8), (10, 200, 30), 0),
    ("palette_bmp", "p.bmp", _write_palette, (8, 8), (10, 200, 30), 0),
    ("palette_transparent", "pt.png", _write_palette_transparent, (8, 8), (255, 255, 255), 0),
    ("gray_alpha", "la.png", _write_la, (8, 8), (255, 255, 255), 0),
]


@pytest.mark.parametrize("name,fname,writer,xy,rgb,tol", CONVERSIONS, ids=[c[0] for c in CONVERSIONS])
def test_modes_become_rgb_uint8(tmp_path, name, fname, writer, xy, rgb, tol):
    p = tmp_path / fname
    writer(p)
    t = I.decode_image(str(p), 30)
    assert t is not None and t.dtype == torch.uint8 and t.shape == (3, 30, 30)
    got = t[:, xy[1], xy[0]].int()
    assert (got - torch.tensor(rgb)).abs().max() <= tol, (name, got.tolist())


def test_all_modes_through_load_folder(tmp_path):
    for i, (_, fname, writer, *_r) in enumerate(CONVERSIONS):
        (tmp_path / "a").mkdir(exist_ok=True)
        writer(tmp_path / "a" / f"{i}_{fname}")
    save(tmp_path / "b" / "x.png")
    save(tmp_path / "b" / "y.png", seed=1)
    images, labels, classes, paths = I.load_folder(str(tmp_path), IMG)
    assert images.shape == (len(CONVERSIONS) + 2, 3, S, S) and images.dtype == torch.uint8
    assert classes == ["a", "b"]


def test_exif_orientation_is_applied(tmp_path):
    # 20 wide x 40 tall, left half black, right half white, tagged "rotate 90 CW to display"
    a = np.zeros((40, 20, 3), np.uint8)
    a[:, 10:] = 255
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "r.jpg") as check:
        assert check.getexif().get(0x0112) == 6 and check.size == (20, 40)
    t = I.decode_image(str(tmp_path / "r.jpg"), 16).float()
    # displayed upright it is 40 wide x 20 tall with the black half on top; unrotated, a square
    # resize would keep black on the left and top == bottom
    top, bottom = t[:, :8].mean(), t[:, 8:].mean()
    left, right = t[:, :, :8].mean(), t[:, :, 8:].mean()
    assert top < 30 and bottom > 225, (top, bottom)
    assert abs(left - right) < 10


def test_unreadable_decode_returns_none(tmp_path):
    (tmp_path / "z.jpg").write_bytes(b"")
    (tmp_path / "x.png").write_text("text")
    assert I.decode_image(str(tmp_path / "z.jpg"), 8) is None
    assert I.decode_image(str(tmp_path / "x.png"), 8) is None
    assert I.decode_image(str(tmp_path / "missing.png"), 8) is None


# ----------------------------------------------------------------------------- 4. the cache

def test_cache_second_call_skips_decoding(tmp_path, monkeypatch, capsys):
    d = make_flat(tmp_path / "flat", ["1", "2"], per_class=3)
    (d / "bad_label1.jpg").write_bytes(b"")
    paths, _ = I.scan_folder(str(d))
    cache = tmp_path / "cache"
    first, kept1 = I.decode_folder(paths, S, cache_dir=str(cache))
    files = sorted(cache.glob(f"images-{S}px-*.pt"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))
    assert len(warning_lines(capsys.readouterr().err)) == 1

    def boom(*a, **k):
        raise AssertionError("decode_image called although the cache is valid")
    monkeypatch.setattr(I, "decode_image", boom)
    second, kept2 = I.decode_folder(paths, S, cache_dir=str(cache))
    assert torch.equal(first, second) and list(kept1) == list(kept2) and len(kept2) == 6
    lines = warning_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "bad_label1.jpg" in lines[0]  # a cache hit still reports the skips

    # load_folder goes through the same cache
    images, labels, classes, kept_paths = I.load_folder(str(d), IMG, cache_dir=str(cache))
    assert torch.equal(images, first) and classes == ["1", "2"]


def test_cache_key_changes_when_a_file_changes(tmp_path, monkeypatch):
    d = make_flat(tmp_path / "flat", ["1", "2"], per_class=3)
    paths, _ = I.scan_folder(str(d))
    cache = tmp_path / "cache"
    before, _ = I.decode_folder(paths, S, cache_dir=str(cache))

    calls = []
    real = I.decode_image
    monkeypatch.setattr(I, "decode_image", lambda p, s: calls.append(p) or real(p, s))
    # same content, new mtime
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    again, _ = I.decode_folder(paths, S, cache_dir=str(cache))
    assert len(calls) == len(paths) and torch.equal(again, before)
    assert len(list(cache.glob(f"images-{S}px-*.pt"))) == 2

    # new content (size changes): the new pixels come back, not the cached ones
    calls.clear()
    save(paths[1], 50, 50, seed=1234, lo=250)  # nearly white
    changed, _ = I.decode_folder(paths, S, cache_dir=str(cache))
    assert len(calls) == len(paths)
    assert changed[1].float().mean() > 240 and not torch.equal(changed[1], before[1])

    # a different size is a different cache entry
    calls.clear()
    I.decode_folder(paths, S + 2, cache_dir=str(cache))
    assert len(calls) == len(paths)


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, capsys):
    d = make_flat(tmp_path / "flat", ["1", "2"], per_class=2)
    paths, _ = I.scan_folder(str(d))
    cache = tmp_path / "cache"
    first, _ = I.decode_folder(paths, S, cache_dir=str(cache))
    (f,) = cache.glob("*.pt")
    f.write_bytes(b"garbage")
    capsys.readouterr()
    again, kept = I.decode_folder(paths, S, cache_dir=str(cache))
    assert torch.equal(first, again) and len(kept) == 4
    lines = warning_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "cache" in lines[0]
    assert torch.load(f, weights_only=True)["images"].shape == first.shape  # rewritten


# ----------------------------------------------------------------------------- 5. build_datasets

@pytest.fixture(scope="module")
def pets_dir(tmp_path_factory):
    return make_subfolders(tmp_path_factory.mktemp("pets"), {"dog": 10, "cat": 6})


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return make_flat(tmp_path_factory.mktemp("digits"), [str(c) for c in range(10)], per_class=3)


def test_build_datasets_stratified_split(pets_dir):
    data = D.build_datasets(folder_cfg(pets_dir, "--val-fraction", "0.3"))
    assert data.classes == ["cat", "dog"] and data.in_channels == 3 and data.img_size == IMG
    assert data.test is None and data.mean == D.IMAGENET_MEAN
    assert isinstance(data.train, D.TensorImageDataset) and isinstance(data.val, D.TensorImageDataset)
    tr, va = set(data.train.indices.tolist()), set(data.val.indices.tolist())
    assert not tr & va and tr | va == set(range(16))
    assert torch.bincount(data.val.targets, minlength=2).tolist() == [round(0.3 * 6), round(0.3 * 10)]
    assert torch.bincount(data.train.targets, minlength=2).tolist() == [6 - 2, 10 - 3]
    for ds in (data.train, data.val):
        for i in range(len(ds)):
            assert Path(ds.path(i)).parent.name == data.classes[int(ds.targets[i])]
    x, y, src, w = data.val[0]
    assert x.shape == (3, IMG, IMG) and x.dtype == torch.float32 and src == 0 and w == 1.0
    assert data.config["num_samples"] == 16 and data.config["split_hash"]

    again = D.build_datasets(folder_cfg(pets_dir, "--val-fraction", "0.3"))
    assert torch.equal(again.val.indices, data.val.indices)
    assert again.config["split_hash"] == data.config["split_hash"]
    other = D.build_datasets(folder_cfg(pets_dir, "--val-fraction", "0.3", "--split-seed", "5"))
    assert not torch.equal(other.val.indices, data.val.indices)


def test_synthetic_needs_digit_classes(pets_dir):
    with pytest.raises(cli.UsageError) as e:
        D.build_datasets(folder_cfg(pets_dir, "--synthetic-n", "20"))
    assert "digit" in one_line(e)


@needs_mnist
def test_synthetic_digits_join_train_only(digits_dir):
    base = D.build_datasets(folder_cfg(digits_dir, "--val-fraction", "0.34"))
    data = D.build_datasets(folder_cfg(digits_dir, "--val-fraction", "0.34", "--synthetic-n", "20"))
    assert data.classes == [str(c) for c in range(10)]
    assert isinstance(data.train, ConcatDataset) and len(data.train.datasets) == 2
    real, syn = data.train.datasets
    assert len(data.train) == len(base.train) + 20 == 20 + 20
    assert torch.equal(real.indices, base.train.indices)       # the split is made on real photos only
    assert D.real_part(data.train) is real and real.source == 0
    assert len(syn) == 20 and syn.source == 1
    assert syn.images.shape == (20, 3, IMG, IMG) and syn.images.dtype == torch.uint8
    assert int(syn.labels.min()) >= 0 and int(syn.labels.max()) < 10
    # val: unchanged, real only
    assert len(data.val) == len(base.val) == 10
    assert torch.equal(data.val.indices, base.val.indices)
    assert all(data.val[i][2] == 0 for i in range(len(data.val)))
    assert not isinstance(data.val, ConcatDataset)
    x, y, src, w = data.train[len(data.train) - 1]
    assert x.shape == (3, IMG, IMG) and src == 1 and 0 <= y < 10


# ----------------------------------------------------------------------------- 6. sample weights

def test_sample_weights_land_on_the_right_samples(pets_dir, tmp_path, capsys):
    base = D.build_datasets(folder_cfg(pets_dir))
    train_paths = [base.train.path(i) for i in range(len(base.train))]
    zero = next(p for p in train_paths if "/cat/" in p)
    heavy = next(p for p in train_paths if "/dog/" in p)
    val_path = base.val.path(0)
    csv_path = tmp_path / "w.csv"
    csv_path.write_text(f"path,weight\n{Path(zero).name},0\n{heavy},2.5\n{val_path},7\nghost.jpg,3\n")
    capsys.readouterr()
    data = D.build_datasets(folder_cfg(pets_dir, "--sample-weights", csv_path))
    assert torch.equal(data.train.indices, base.train.indices)  # weights never change the split
    expect = {zero: 0.0, heavy: 2.5}
    for i in range(len(data.train)):
        assert data.train[i][3] == expect.get(data.train.path(i), 1.0), data.train.path(i)
    assert all(data.val[i][3] == 1.0 for i in range(len(data.val)))  # val is never weighted
    lines = warning_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "ghost.jpg" in lines[0] and "1 path" in lines[0]


def test_sample_weights_errors(tmp_path):
    paths = [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    with pytest.raises(cli.UsageError):
        D.read_sample_weights(str(tmp_path / "missing.csv"), paths, 2)
    (tmp_path / "bad.csv").write_text("a.jpg,heavy\n")
    with pytest.raises(cli.UsageError) as e:
        D.read_sample_weights(str(tmp_path / "bad.csv"), paths, 2)
    assert "heavy" in one_line(e)
    (tmp_path / "ok.csv").write_text("b.jpg,0.5\n")  # header optional
    assert D.read_sample_weights(str(tmp_path / "ok.csv"), paths, 2).tolist() == [1.0, 0.5]


def test_sample_weights_same_name_in_two_classes(tmp_path, capsys):
    d = tmp_path / "data"
    for c in ("cat", "dog"):
        for i in range(3):
            save(d / c / f"img{i}.png", seed=i + 10 * (c == "dog"))
    _, _, _, paths = I.load_folder(str(d), IMG)
    csv_path = tmp_path / "w.csv"
    csv_path.write_text("path,weight\ncat/img0.png,0\n")  # relative to the data folder
    w = D.read_sample_weights(str(csv_path), paths, len(paths))
    dog0 = paths.index(str(d / "dog" / "img0.png"))
    # the cat's image, or a warning that the row is ambiguous / unknown, but never the dog's
    assert w[dog0] == 1.0


# ----------------------------------------------------------------------------- 7. BatchAugment, DeviceLoader

def _batch(side, n=4, seed=0):
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("preset", AU.AUGMENT_PRESETS)
def test_batch_augment_shape_dtype(preset):
    aug = AU.BatchAugment(preset, IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)
    out = aug(_batch(S, n=5))
    assert out.shape == (5, 3, IMG, IMG) and out.dtype == torch.float32 and torch.isfinite(out).all()
    lo = min((0 - m) / s for m, s in zip(D.IMAGENET_MEAN, D.IMAGENET_STD))
    hi = max((1 - m) / s for m, s in zip(D.IMAGENET_MEAN, D.IMAGENET_STD))
    assert out.min() >= lo - 1e-4 and out.max() <= hi + 1e-4  # normalised pixels in [0, 1]


def test_batch_augment_none_matches_build_transform():
    tf = AU.build_transform("none", IMG, D.IMAGENET_MEAN, D.IMAGENET_STD, train=True)
    aug = AU.BatchAugment("none", IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)
    # at S == img_size neither resizes: identical up to float error
    x = _batch(IMG)
    ref = torch.stack([tf(i) for i in x])
    assert (aug(x) - ref).abs().max() < 1e-2
    mean, std = torch.tensor(D.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(D.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(aug(x), (x.float() / 255 - mean) / std, atol=1e-5)
    # from the cache size: both resize bilinearly with antialiasing; torchvision rounds its uint8
    # result, BatchAugment stays in float, so they differ by at most one grey level
    x = _batch(S, seed=1)
    diff = (aug(x) - torch.stack([tf(i) for i in x])).abs()
    assert diff.max() <= 1.01 / (255 * min(D.IMAGENET_STD)) and diff.mean() < 1e-2


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_batch_augment_deterministic_under_seed(preset):
    aug = AU.BatchAugment(preset, IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)
    x = _batch(S, n=6)
    torch.manual_seed(123)
    a = aug(x)
    torch.manual_seed(123)
    b = aug(x)
    torch.manual_seed(124)
    c = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batch_augment_strong_changes_the_image():
    x = _batch(S, n=6, seed=2)
    none = AU.BatchAugment("none", IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)(x)
    torch.manual_seed(0)
    strong = AU.BatchAugment("strong", IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)(x)
    assert ((strong - none).abs().flatten(1).mean(1) > 0.1).all()
    with pytest.raises(ValueError):
        AU.BatchAugment("wild", IMG, D.IMAGENET_MEAN, D.IMAGENET_STD)


@pytest.mark.slow  # torchvision on 384 images one by one, ~1 s
@pytest.mark.parametrize("preset", ["light"])
def test_batch_augment_same_statistics_as_torchvision(preset):
    """On a uniform grey image every black pixel is geometric fill (a rotated crop's corners,
    the perspective's margins): the batched preset must fill as much as torchvision's does,
    and move the pixels as much, on average over many draws."""
    size = 48  # large enough that border interpolation (nearest in torchvision) does not matter
    x = torch.full((384, 3, I.cache_size(size), I.cache_size(size)), 128, dtype=torch.uint8)
    torch.manual_seed(0)
    tf = AU.build_transform(preset, size, (0, 0, 0), (1, 1, 1))
    ref = torch.stack([tf(img) for img in x])
    out = AU.BatchAugment(preset, size, (0, 0, 0), (1, 1, 1))(x)
    dark = lambda t: (t < 0.1).float().mean().item()  # noqa: E731
    assert dark(ref) > 0.03  # the fill is there to compare
    assert dark(out) == pytest.approx(dark(ref), abs=0.03)  # without the masks, strong: 0.09 vs 0.17
    assert out.mean().item() == pytest.approx(ref.mean().item(), abs=0.025)


def _strong_stats(t):
    """Statistics of augmented images [N, 3, H, W] (normalised with mean 0.5, std 1), each moved by
    one step of `strong`: geometric fill (rotation, perspective, affine: black corners and margins),
    the share of images with a RandomErasing patch (exact zeros after Normalize, never produced
    otherwise), the spread of per-image brightness and saturation (ColorJitter), the bright blob's
    area (RandomResizedCrop zooms in) and the neighbour difference (GaussianNoise; GaussianBlur
    in the photometric test, where nothing else smooths)."""
    zero = (t == 0).all(1, keepdim=True).float()
    erased = (F.avg_pool2d(zero, 3, 1) == 1).flatten(1).any(1).float().mean().item()
    u = t + 0.5
    sat = u.max(1).values - u.min(1).values
    return {"fill": (u < 0.1).all(1).float().mean().item(), "erased": erased,
            "bright_sd": u.mean((1, 2, 3)).std().item(), "sat_sd": sat.mean((1, 2)).std().item(),
            "blob": (u.mean(1) > 0.75).float().mean().item(), "hf": (u[..., 1:] - u[..., :-1]).abs().mean().item()}


def _differs(a, b, tol):
    return [k for k in tol if abs(a[k] - b[k]) > tol[k]]


@pytest.mark.slow  # torchvision per image, every step, ~21 s
def test_batch_augment_strong_each_step_matches_torchvision():
    """Every step of `strong` leaves its mark on a statistic, and the batched preset matches
    torchvision's on each of them; the tolerances are checked to be tight enough that torchvision's
    preset without any one step fails the comparison (so a step lost in either would be caught)."""
    from torchvision.transforms import v2
    size, n, mean, std = 80, 256, (0.5,) * 3, (1.0,) * 3
    side = I.cache_size(size)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    img = torch.tensor([0.45, 0.30, 0.20]).view(3, 1, 1) + 0.15 * ((xx + yy) % 2)  # saturated, textured
    img[:, (xx - 0.6 * side) ** 2 + (yy - 0.4 * side) ** 2 < (0.18 * side) ** 2] = 1.0  # a white blob
    x = (img * 255).round().to(torch.uint8).expand(n, 3, side, side).contiguous()
    steps = AU.build_transform("strong", size, mean, std).transforms

    def tv(parts, images):
        torch.manual_seed(0)
        return _strong_stats(torch.stack([v2.Compose(parts)(i) for i in images]))

    # tolerances: ~2-3x the gap between two seeds / between the two implementations
    tol = {"fill": 0.02, "erased": 0.08, "bright_sd": 0.015, "sat_sd": 0.015, "blob": 0.008, "hf": 0.01}
    ref = tv(steps, x)
    torch.manual_seed(0)
    out = _strong_stats(AU.BatchAugment("strong", size, mean, std)(x))
    assert ref["fill"] > 0.05 and ref["erased"] > 0.1  # the marks are there to compare
    assert not _differs(out, ref, tol), (out, ref)
    for i, step in enumerate(steps):
        if not isinstance(step, (v2.ToDtype, v2.Normalize, v2.GaussianBlur)):
            assert _differs(tv(steps[:i] + steps[i + 1:], x), ref, tol), f"without {type(step).__name__}"

    # the blur: only photometric steps (BatchAugment's geometry the identity), a 1-px checkerboard
    board = ((0.3 + 0.4 * ((xx + yy) % 2))[:size, :size] * 255).round().to(torch.uint8).expand(n, 3, size, size)
    photo = [s for s in steps if not isinstance(s, (v2.RandomResizedCrop, v2.RandomRotation, v2.RandomPerspective,
                                                     v2.RandomAffine))]
    aug = AU.BatchAugment("strong", size, mean, std)
    aug.geometry = lambda b, device: [torch.eye(3, device=device).expand(b, 3, 3)]
    ref = tv(photo, board)
    torch.manual_seed(0)
    out = _strong_stats(aug(board.contiguous()))
    hf_tol = {"hf": 0.01}
    assert not _differs(out, ref, hf_tol), (out["hf"], ref["hf"])
    blur = next(i for i, s in enumerate(photo) if isinstance(s, v2.GaussianBlur))
    assert _differs(tv(photo[:blur] + photo[blur + 1:], board), ref, hf_tol), "without GaussianBlur"


def test_device_loader_covers_concat_once_per_epoch():
    # every sample a constant image of its own grey value: 7 real (of 10, size 12) + 5 synthetic (size 10)
    real_imgs = torch.arange(10, dtype=torch.uint8).mul(10).view(10, 1, 1, 1).expand(10, 3, 12, 12).clone()
    real = D.TensorImageDataset(real_imgs, torch.arange(10) % 3, indices=[0, 2, 3, 5, 6, 8, 9],
                                weights=torch.arange(10, dtype=torch.float32) / 10)
    syn_imgs = torch.arange(5, dtype=torch.uint8).add(200).view(5, 1, 1, 1).expand(5, 3, 10, 10).clone()
    syn = D.TensorImageDataset(syn_imgs, torch.tensor([0, 1, 2, 0, 1]), source=1)
    loader = AU.DeviceLoader(ConcatDataset([real, syn]), 5, "cpu", lambda x: x, drop_last=False)
    assert len(loader) == 3
    for seed in (0, 1):
        loader.generator = torch.Generator().manual_seed(seed)
        values, sources, weights, labels = [], [], [], []
        for imgs, y, src, w in loader:
            assert imgs.shape[1:] == (3, 12, 12) and imgs.dtype == torch.uint8
            assert (imgs == imgs[:, :1, :1, :1]).all()   # still constant after resizing
            values += imgs[:, 0, 0, 0].tolist()
            sources += src.tolist()
            weights += w.tolist()
            labels += y.tolist()
        assert sorted(values) == [0, 20, 30, 50, 60, 80, 90, 200, 201, 202, 203, 204]
        for v, s, w, y in zip(values, sources, weights, labels):
            if v >= 200:
                assert (s, w, y) == (1, 1.0, [0, 1, 2, 0, 1][v - 200])
            else:
                assert s == 0 and w == pytest.approx(v / 100) and y == (v // 10) % 3
    # same generator seed -> same order
    orders = []
    for _ in range(2):
        loader.generator = torch.Generator().manual_seed(7)
        orders.append(torch.cat([b[0][:, 0, 0, 0] for b in loader]))
    assert torch.equal(*orders)


@needs_mnist
def test_device_loader_on_synthetic_build(digits_dir):
    data = D.build_datasets(folder_cfg(digits_dir, "--val-fraction", "0.34", "--synthetic-n", "20"))
    aug = AU.BatchAugment("none", data.img_size, data.mean, data.std)
    loader = AU.DeviceLoader(data.train, 16, "cpu", aug, drop_last=False)
    n, n_syn = 0, 0
    for imgs, y, src, w in loader:
        assert imgs.shape[1:] == (3, IMG, IMG) and imgs.dtype == torch.float32
        n += len(y)
        n_syn += int(src.sum())
    assert n == len(data.train) == 40 and n_syn == 20
    assert len(AU.DeviceLoader(data.train, 16, "cpu", aug)) == 2  # drop_last default


# ----------------------------------------------------------------------------- edge cases of the split

def test_tiny_classes_never_give_an_empty_val(tmp_path):
    d = make_subfolders(tmp_path / "tiny", {"cat": 3, "dog": 3})
    try:
        data = D.build_datasets(folder_cfg(d))
    except cli.UsageError:
        return
    assert len(data.val) > 0


# ----------------------------------------------------------------------------- 8. end to end

@pytest.mark.slow  # trains and evaluates a folder run, ~8 s
def test_train_then_evaluate_on_a_folder(tmp_path, capsys):
    d = tmp_path / "data"
    make_subfolders(d, {"dark": 20}, seed=0, lo=0, hi=60)
    make_subfolders(d, {"bright": 20}, seed=100, lo=190, hi=256)
    save_dir, out = tmp_path / "run", tmp_path / "eval"
    args = train.get_args_parser().parse_args([
        "--data-dir", str(d), "--img-size", "32", "--model", "convnet", "--epochs", "2",
        "--augment", "none", "--quiet", "--save-dir", str(save_dir), "--batch-size", "16",
        "--workers", "0", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")])
    results = train.main(args)
    assert set(results) == {"train", "val"}
    assert results["train"]["total"] == 34 and results["val"]["total"] == 6
    for f in ("best.pt", "last.pt", "history.csv", "curves.png"):
        assert (save_dir / f).is_file(), f
    with open(save_dir / "history.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    ck = torch.load(save_dir / "best.pt", map_location="cpu", weights_only=True)
    assert ck["classes"] == ["bright", "dark"] and ck["img_size"] == 32 and ck["in_channels"] == 3
    assert list((tmp_path / "cache").glob("images-36px-*.pt"))

    E.main(E.get_args_parser().parse_args([str(save_dir / "best.pt"), "--out", str(out), "--device", "cpu"]))
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"train", "val"}
    assert list(m["val"]["per_class"]) == ["bright", "dark"]
    assert m["val"]["total"] == 6 and m["train"]["total"] == 34
    assert m["val"]["correct"] == results["val"]["correct"]  # the same split and weights
    assert (out / "confusion.png").is_file()

    imgs = tmp_path / "unlabelled"
    save(imgs / "a.jpg", 40, 30, seed=1, hi=50)
    save(imgs / "b.png", 22, 60, seed=2, lo=200)
    save(imgs / "c.bmp", 30, 30, seed=3, mode="L")
    save(imgs / "sub" / "d.webp", 25, 25, seed=4)
    _write_rgba(imgs / "e.png")
    (imgs / "notes.txt").write_text("not an image")
    capsys.readouterr()
    E.main(E.get_args_parser().parse_args([str(save_dir / "best.pt"), "--images", str(imgs),
                                           "--out", str(out), "--device", "cpu"]))
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    assert sorted(Path(r["path"]).name for r in rows) == ["a.jpg", "b.png", "c.bmp", "d.webp", "e.png"]
    for r in rows:
        assert r["prediction"] in ("bright", "dark") and 0.0 <= float(r["confidence"]) <= 1.0
    assert "Traceback" not in capsys.readouterr().err
