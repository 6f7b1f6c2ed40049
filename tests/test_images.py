"""images.py: scanning both folder layouts, decoding odd and broken files (modes, EXIF, truncated
and unreadable files), and the decoded-image cache.

Every folder is a few dozen tiny images written into tmp_path (helpers.photo_folder, cycling
formats and sizes: helpers.MIXED)."""
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cli
import data as D
import images as I
from helpers import MIXED, data_config, one_line, photo_folder, save_image, save_rgba, warning_lines

IMG = 16                       # img_size of the data tests
S = I.cache_size(IMG)          # side of the decoded cache


def jpeg_bytes(w=60, h=40, seed=0):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG",
                                                                                                   quality=90)
    return buf.getvalue()


# ----------------------------------------------------------------------------- layouts

def test_flat_layout_mixed_extensions_and_sizes(tmp_path, capsys):
    d = photo_folder(tmp_path / "flat", ["7", "10", "2"], 4, layout="flat", stem="img{k:03d}", **MIXED)
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
    d = photo_folder(tmp_path / "pets", ["dog", "cat"], [5, 6], stem="{c}{i:02d}", **MIXED)
    save_image(d / "cat" / "nested" / "deep.png", (25, 35), seed=99)  # class folders are searched recursively
    (d / "cat" / "notes.txt").write_text("not an image")       # left out, and named: not an image extension
    save_image(d / ".cache" / "ignored.png")                         # hidden folders are not classes
    paths, names = I.scan_folder(str(d))
    assert len(paths) == 12 and set(names) == {"cat", "dog"}
    assert not any(".cache" in p or p.endswith(".txt") for p in paths)

    images, labels, classes, kept = I.load_folder(str(d), IMG)
    assert classes == ["cat", "dog"]
    assert images.shape == (12, 3, S, S) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [7, 5]
    for i, p in enumerate(kept):
        assert Path(p).relative_to(d).parts[0] == classes[labels[i]]
    lines = warning_lines(capsys.readouterr().err)
    assert len(lines) == 2 and all("(1 not an image file): notes.txt" in line for line in lines)  # scanned twice


def test_cache_size_margin():
    assert I.cache_size(128) == 144 and I.cache_size(32) == 36 and I.cache_size(16) == 18


# ----------------------------------------------------------------------------- bad input

def test_broken_files_are_one_warning_and_good_ones_load(tmp_path, capsys):
    d = photo_folder(tmp_path / "flat", ["1", "2", "3"], 3, layout="flat", stem="img{k:03d}", **MIXED)
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
    d = photo_folder(tmp_path / "flat", ["1", "2"], 3, layout="flat", stem="img{k:03d}", **MIXED)
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
    d = photo_folder(tmp_path / "pets", ["cat"], 3, stem="{c}{i:02d}", **MIXED)
    (d / "dog").mkdir()
    (d / "dog" / "a.jpg").write_bytes(b"")
    with pytest.raises(cli.UsageError) as e:
        I.load_folder(str(d), IMG)
    assert "dog" in one_line(e)


def test_empty_class_folder_is_a_data_error(tmp_path):
    d = photo_folder(tmp_path / "pets", ["cat", "dog"], 3, stem="{c}{i:02d}", **MIXED)
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
    save_image(tmp_path / "a.png")
    save_image(tmp_path / "b.jpg")
    with pytest.raises(cli.UsageError) as e:
        I.scan_folder(str(tmp_path))
    assert "_label" in one_line(e)


def test_missing_folder_is_a_data_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(cli.UsageError) as e:
        I.load_folder(str(missing), IMG)
    assert str(missing) in one_line(e)
    with pytest.raises(cli.UsageError):
        D.build_datasets(data_config("--data-dir", missing, "--img-size", IMG))


def test_unlabelled_flat_files_skipped_with_a_warning(tmp_path, capsys):
    d = photo_folder(tmp_path / "flat", ["1", "2"], 2, layout="flat", stem="img{k:03d}", **MIXED)
    save_image(d / "nolabel.png")
    paths, _ = I.scan_folder(str(d))
    assert len(paths) == 4
    lines = warning_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "1 images" in lines[0]


def test_load_folder_warns_once_about_unlabelled_files(tmp_path, capsys):
    d = photo_folder(tmp_path / "flat", ["1", "2"], 2, layout="flat", stem="img{k:03d}", **MIXED)
    save_image(d / "nolabel.png")
    I.load_folder(str(d), IMG)
    assert len(warning_lines(capsys.readouterr().err)) == 1


# ----------------------------------------------------------------------------- conversions

def _write_cmyk(p):
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(p)          # pure red in CMYK


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
    ("rgba_transparent", "t.png", save_rgba, (2, 8), (255, 255, 255), 0),
    ("rgba_opaque", "t.png", save_rgba, (28, 8), (200, 0, 0), 0),
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
    save_image(tmp_path / "b" / "x.png")
    save_image(tmp_path / "b" / "y.png", seed=1)
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


def test_corrupt_exif_warning_names_the_file(tmp_path, capfd):
    # PIL warns about a damaged EXIF block with a raw line naming no file; one warning names it
    Image.new("RGB", (40, 40), "red").save(tmp_path / "bad_exif.jpg", exif=b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08"
                                                                    b"\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01")
    Image.new("RGB", (40, 40), "blue").save(tmp_path / "fine.jpg")
    images, kept = I.decode_folder([str(tmp_path / "bad_exif.jpg"), str(tmp_path / "fine.jpg")], 8)
    assert kept == [0, 1]
    err = capfd.readouterr().err
    assert "UserWarning" not in err and "TiffImagePlugin" not in err, err
    [line] = err.splitlines()
    assert line.startswith("warning: 1 image file(s) read despite damaged metadata") and "bad_exif.jpg" in line


def test_too_large_image_is_named_not_unreadable(tmp_path, monkeypatch, capsys):
    Image.new("L", (4200, 4200), 128).save(tmp_path / "huge.png")
    Image.new("RGB", (40, 40), "blue").save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_text("text")
    monkeypatch.setattr(I, "memory_available", lambda: 2**30)  # 4200^2 px need more than half of it
    paths = [str(tmp_path / n) for n in ("huge.png", "small.png", "broken.png")]
    _, kept = I.decode_folder(paths, 8)
    assert kept == [1]
    lines = warning_lines(capsys.readouterr().err)
    assert any("too large" in ln and "4200x4200" in ln and "huge.png" in ln for ln in lines), lines
    assert any("unreadable" in ln and "broken.png" in ln and "huge.png" not in ln for ln in lines), lines


@pytest.mark.slow
def test_image_over_pils_pixel_limit_is_read(tmp_path, capsys):
    # 13500^2 = 182M px is over twice PIL's default limit (DecompressionBombError), yet fits in memory
    Image.new("L", (13500, 13500), 200).save(tmp_path / "big.png")
    images, kept = I.decode_folder([str(tmp_path / "big.png")], 8, workers=1)
    assert kept == [0] and int(images[0, 0, 0, 0]) == 200
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- the cache

def test_cache_second_call_skips_decoding(tmp_path, monkeypatch, capsys):
    d = photo_folder(tmp_path / "flat", ["1", "2"], 3, layout="flat", stem="img{k:03d}", **MIXED)
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
    d = photo_folder(tmp_path / "flat", ["1", "2"], 3, layout="flat", stem="img{k:03d}", **MIXED)
    paths, _ = I.scan_folder(str(d))
    cache = tmp_path / "cache"
    before, _ = I.decode_folder(paths, S, cache_dir=str(cache))

    calls = []
    real = I.decode_image
    monkeypatch.setattr(I, "decode_image", lambda p, s, *a: calls.append(p) or real(p, s, *a))
    # same content, new mtime
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    again, _ = I.decode_folder(paths, S, cache_dir=str(cache))
    assert len(calls) == len(paths) and torch.equal(again, before)
    assert len(list(cache.glob(f"images-{S}px-*.pt"))) == 2

    # new content (size changes): the new pixels come back, not the cached ones
    calls.clear()
    save_image(paths[1], (50, 50), seed=1234, lo=250)  # nearly white
    changed, _ = I.decode_folder(paths, S, cache_dir=str(cache))
    assert len(calls) == len(paths)
    assert changed[1].float().mean() > 240 and not torch.equal(changed[1], before[1])

    # a different size is a different cache entry
    calls.clear()
    I.decode_folder(paths, S + 2, cache_dir=str(cache))
    assert len(calls) == len(paths)


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, capsys):
    d = photo_folder(tmp_path / "flat", ["1", "2"], 2, layout="flat", stem="img{k:03d}", **MIXED)
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
