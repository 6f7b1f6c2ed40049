"""data.py: MNIST loading, the splits (stratified, subsets, group-aware, cross-validation folds),
build_datasets on a photo folder (split, synthetic digits, --backgrounds, sample weights) and the
epoch orders (one shuffle, the mixed real/synthetic batches of --synthetic-ratio, the last partial
batch).

Folders are tiny photo folders written into tmp_path (helpers.photo_folder); MNIST is the tests'
subset; the group split and the fold runs are checked on conftest's flipped_run."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset

import cli
import data as D
import images as I
import train
from helpers import MIXED, data_config, needs_mnist, one_line, photo_folder, warning_lines

IMG = 16                       # img_size of the folder tests


def folder_cfg(data_dir, *extra):
    """The `data` config train.py builds for a photo folder at IMG px and these arguments."""
    return data_config("--data-dir", data_dir, "--img-size", IMG, *extra)


# ----------------------------------------------------------------------------- MNIST loading

@pytest.fixture(scope="module")
def mnist_labels(mnist_root):
    _, labels = D.load_mnist(str(mnist_root), train=True, download=False)
    return labels


def test_load_mnist_local_files(mnist_root):
    images, labels = D.load_mnist(str(mnist_root), train=True, download=False)
    # the tests' subset (tests/data/make_mnist_subset.py): 200 train and 50 test digits per class
    assert images.shape == (2000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (2000,) and labels.dtype == torch.int64
    assert labels.bincount().tolist() == [200] * 10
    test_images, test_labels = D.load_mnist(str(mnist_root), train=False, download=False)
    assert test_images.shape == (500, 1, 28, 28) and test_labels.bincount().tolist() == [50] * 10


def test_load_mnist_missing_names_folder_and_files(tmp_path):
    with pytest.raises(cli.UsageError) as e:
        D.load_mnist(str(tmp_path), train=True, download=False)
    msg = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in msg
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte"):
        assert f in msg
    assert "\n" not in msg
    assert list(tmp_path.iterdir()) == []  # nothing fetched or created


# ----------------------------------------------------------------------------- the stratified split

def test_stratified_split_is_stratified_disjoint_and_complete(mnist_labels):
    train_idx, val_idx = D.stratified_split(mnist_labels, 0.15, seed=0)
    n_c = torch.bincount(mnist_labels, minlength=10)
    val_c = torch.bincount(mnist_labels[val_idx], minlength=10)
    for c in range(10):
        assert abs(val_c[c].item() - 0.15 * n_c[c].item()) <= 1, (c, val_c[c], n_c[c])
    both = torch.cat([train_idx, val_idx])
    assert torch.equal(both.sort().values, torch.arange(len(mnist_labels)))  # disjoint and covering
    assert torch.equal(train_idx, train_idx.sort().values) and torch.equal(val_idx, val_idx.sort().values)


def test_stratified_split_seeded(mnist_labels):
    a = D.stratified_split(mnist_labels, 0.15, seed=0)
    b = D.stratified_split(mnist_labels, 0.15, seed=0)
    c = D.stratified_split(mnist_labels, 0.15, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_stratified_subset_fractions(mnist_labels):
    train_idx, _ = D.stratified_split(mnist_labels, 0.15, seed=0)
    n_c = torch.bincount(mnist_labels[train_idx], minlength=10)
    assert torch.equal(D.stratified_subset(train_idx, mnist_labels, 1.0, 0), train_idx)
    for k in range(2, 17):
        frac = 1 / k
        sub = D.stratified_subset(train_idx, mnist_labels, frac, seed=0)
        assert len(sub.unique()) == len(sub)
        assert torch.isin(sub, train_idx).all()
        sub_c = torch.bincount(mnist_labels[sub], minlength=10)
        for c in range(10):
            assert abs(sub_c[c].item() - frac * n_c[c].item()) <= 1, (k, c)
        assert torch.equal(sub, D.stratified_subset(train_idx, mnist_labels, frac, seed=0))
    assert not torch.equal(D.stratified_subset(train_idx, mnist_labels, 0.1, 0),
                           D.stratified_subset(train_idx, mnist_labels, 0.1, 1))


# ----------------------------------------------------------------------------- the group-aware split

def test_group_split_with_singletons_is_the_stratified_split():
    labels = torch.arange(200) % 7
    assert all(torch.equal(a, b) for a, b in zip(D.stratified_group_split(labels, torch.arange(200), 0.2, 4),
                                                 D.stratified_split(labels, 0.2, 4)))


def test_groups_never_straddle_and_val_keeps_its_size():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    groups = torch.randint(0, 60, (300,), generator=g)  # groups of about 5 with mixed labels
    train_idx, val_idx = D.stratified_group_split(labels, groups, 0.15, 0)
    assert not set(groups[train_idx].tolist()) & set(groups[val_idx].tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(300))
    assert abs(len(val_idx) - 45) <= 10 and len(set(labels[val_idx].tolist())) == 3


def test_photo_groups_chain_near_duplicates_and_names():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=g)
    images[1] = images[0]
    images[2] = (images[1].int() + 1).clamp(max=255).to(torch.uint8)  # a copy of a copy, a little brighter
    paths = [f"/x/m{k % 2}_{k}_label0.jpg" for k in range(6)]
    groups = D.photo_groups(images, paths, threshold=0.98)
    assert groups.tolist() == [0, 0, 0, 1, 2, 3]
    groups = D.photo_groups(images, paths, threshold=None, regex=re.compile(r"^(m\d)_"))
    assert groups.tolist() == [0, 1, 0, 1, 0, 1]


def test_folder_split_is_grouped_by_default_and_recorded(tmp_path):
    photo_folder(tmp_path, [str(k % 2) for k in range(40)], 1, layout="flat", stem="a{k}", size=24)
    for k in range(10):  # ten photos shot twice
        shutil.copyfile(tmp_path / f"a{k}_label{k % 2}.png", tmp_path / f"b{k}_label{k % 2}.png")
    args = train.get_args_parser().parse_args(["--data-dir", str(tmp_path), "--img-size", "16"])
    data = D.build_datasets(D.data_config(args))
    assert data.config["group_split"] and data.config["num_groups"] == 40
    val = {data.val.path(i).split("/")[-1] for i in range(len(data.val))}
    for k in range(10):
        assert (f"a{k}_label{k % 2}.png" in val) == (f"b{k}_label{k % 2}.png" in val)
    args.img_size = 40  # the photos are grouped at one size: the split is the same at every --img-size
    other = D.build_datasets(D.data_config(args))
    assert {data.val.path(i) for i in range(len(data.val))} == {other.val.path(i) for i in range(len(other.val))}
    args.group_split = False
    assert D.build_datasets(D.data_config(args)).config["num_groups"] is None
    args.group_split, args.group_regex = True, "("
    with pytest.raises(cli.UsageError, match="--group-regex"):
        D.build_datasets(D.data_config(args))


@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_group_split_keeps_the_copy_with_its_original(flipped_run):
    src, dst = flipped_run["dup"]
    cfg = dict(torch.load(flipped_run["ckpt"], weights_only=True)["data"], group_split=True, split_hash=None)
    data = D.build_datasets(cfg)
    val = {data.val.path(i) for i in range(len(data.val))}
    assert (src in val) == (dst in val)
    assert data.config["num_groups"] < data.config["num_samples"]
    assert len(val) == len(flipped_run_val(flipped_run))  # the same val size as the plain split


def flipped_run_val(flipped_run):
    data = D.build_datasets(torch.load(flipped_run["ckpt"], weights_only=True)["data"])
    return [data.val.path(i) for i in range(len(data.val))]


# ----------------------------------------------------------------------------- cross-validation folds

def test_stratified_folds_cover_the_split_once_per_class_balanced():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 2)
    folds = D.stratified_folds(labels, 3, seed=0)
    assert torch.equal(torch.cat(folds).sort().values, torch.arange(len(labels)))
    for c in range(3):
        counts = [int((labels[f] == c).sum()) for f in folds]
        assert max(counts) - min(counts) <= 1, (c, counts)
    assert sorted(len(f) for f in folds) == [6, 6, 7]  # the 2-sample class does not pile onto fold 0
    assert all(torch.equal(a, b) for a, b in zip(folds, D.stratified_folds(labels, 3, seed=0)))


@pytest.mark.slow  # fixture flipped_run: trains a run, then analyze.py --folds 3 (10 epochs a fold), ~35 s
def test_fold_run_validates_on_its_fold(flipped_run, tmp_path):
    n_folds = flipped_run["folds"]
    cfg = dict(torch.load(flipped_run["ckpt"], weights_only=True)["data"], cache_dir=str(tmp_path))  # decode once
    base = D.build_datasets(cfg, check=False)
    train_idx = base.train.indices
    folds = D.stratified_folds(base.train.targets, n_folds, cfg["split_seed"])
    hashes = {base.config["split_hash"]}
    for k in range(n_folds):
        data = D.build_datasets(dict(cfg, folds=n_folds, fold=k), check=False)
        assert torch.equal(data.val.indices, train_idx[folds[k]])
        assert torch.equal(torch.cat([data.train.indices, data.val.indices]).sort().values, train_idx)
        hashes.add(data.config["split_hash"])
    assert len(hashes) == n_folds + 1
    for folds_, fold in ((n_folds, n_folds), (1, 0), (n_folds, None), (0, 1)):
        with pytest.raises(cli.UsageError, match="--folds? must be"):
            D.build_datasets(dict(cfg, folds=folds_, fold=fold), check=False)


@pytest.mark.slow  # builds the MNIST subset's data 5 times, ~8 s
def test_fold_runs_of_a_corrected_run_hold_out_the_folds_analyze_scores(tmp_path):
    """analyze.py --folds scores stratified_folds of the corrected training split: each fold run must
    train on the other folds of that same split, with the corrected labels (a relabel moves a sample's
    stratum; an excluded sample is in no fold)."""
    cfg = data_config("--dataset", "mnist")
    base = D.build_datasets(cfg, check=False)
    picked = base.train.indices[:40].tolist()
    rows = [f"#{i},{(int(base.train.labels[i]) + 1) % 10}," for i in picked[:30]] + [f"#{i},,0" for i in picked[30:]]
    (tmp_path / "fix.csv").write_text("path,label,weight\n" + "\n".join(rows) + "\n")
    fixed = D.build_datasets(dict(cfg, corrections=str(tmp_path / "fix.csv")), check=False)
    assert set(picked[30:]).isdisjoint(fixed.train.indices.tolist()) and len(fixed.train) == len(base.train) - 10
    folds = D.stratified_folds(fixed.train.targets, 3, cfg["split_seed"])
    for k in range(3):
        run = D.build_datasets(dict(cfg, corrections=str(tmp_path / "fix.csv"), folds=3, fold=k), check=False)
        assert torch.equal(run.val.indices, fixed.train.indices[folds[k]])
        assert torch.equal(run.val.targets, fixed.train.targets[folds[k]])  # the corrected labels
        assert sorted(run.train.indices.tolist() + run.val.indices.tolist()) == sorted(fixed.train.indices.tolist())


# ----------------------------------------------------------------------------- build_datasets on a photo folder

@pytest.fixture(scope="module")
def pets_dir(tmp_path_factory):
    """Class folders dog/ (10 photos) and cat/ (6): `<class>/<class><i>.<ext>`, mixed formats and sizes."""
    return photo_folder(tmp_path_factory.mktemp("pets"), ["dog", "cat"], [10, 6], stem="{c}{i:02d}", **MIXED)


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


def test_tiny_classes_never_give_an_empty_val(tmp_path):
    d = photo_folder(tmp_path / "tiny", ["cat", "dog"], 3, stem="{c}{i:02d}", **MIXED)
    try:
        data = D.build_datasets(folder_cfg(d))
    except cli.UsageError:
        return
    assert len(data.val) > 0


# ----------------------------------------------------------------------------- synthetic digits, --backgrounds

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


def test_backgrounds_dir_crops_come_from_that_folder(tmp_path):
    import data
    # 20 flat grey photos `x<k>_label<k % 10>.png`, and 3 flat colour backgrounds bg<i>.png of growing sizes
    photos_dir = photo_folder(tmp_path / "photos", [str(i % 10) for i in range(20)], 1, layout="flat", stem="x{k:02d}",
                              size=(40, 48), colours=[[4 + 8 * i] * 3 for i in range(20)])
    bg_colours = [[250, 20, 20], [20, 250, 20], [20, 20, 250]]
    bg_dir = photo_folder(tmp_path / "clean", ["bg"], 3, layout="plain", stem="{c}{i}",
                          size=[(40 + 13 * i, 48 + 7 * i) for i in range(3)], colours=bg_colours)
    c = data_config("--data-dir", photos_dir, "--img-size", 32, "--val-fraction", 0.5, "--no-group-split",
            "--synthetic-n", 30, "--synthetic-source", "fonts", "--backgrounds", bg_dir)
    assert c["backgrounds"] == str(bg_dir) and c["synthetic_source"] == "fonts"
    d = data.build_datasets(c)
    syn = d.train.datasets[-1]
    used = set()
    for img in syn.images:  # the median of the tile's border (the digit is rarely there)
        ring = torch.cat([img[:, :3].flatten(1), img[:, -3:].flatten(1), img[:, :, :3].flatten(1), img[:, :, -3:].flatten(1)], 1)
        med = ring.median(1).values.float()
        dist = [float((med - torch.tensor(b).float()).abs().max()) for b in bg_colours]
        assert min(dist) < 30, med  # every background is one of the folder's photos, never a training photo
        used.add(int(np.argmin(dist)))
    assert used == {0, 1, 2}
    with pytest.raises(cli.UsageError):
        data.build_datasets(data_config("--data-dir", photos_dir, "--img-size", 32, "--synthetic-n", 5,
                                "--synthetic-source", "fonts", "--backgrounds", tmp_path / "missing"))


# ----------------------------------------------------------------------------- sample weights

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
    assert len(lines) == 2 and "ghost.jpg" in lines[0] and "1 path" in lines[0]
    assert "1 weight(s)" in lines[1] and "of val photos: they change nothing" in lines[1]  # said, not silent


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
    d = photo_folder(tmp_path / "data", ["cat", "dog"], 3, size=(30, 20))  # cat/img0.png ... and dog/img0.png ...
    _, _, _, paths = I.load_folder(str(d), IMG)
    csv_path = tmp_path / "w.csv"
    csv_path.write_text("path,weight\ncat/img0.png,0\n")  # relative to the data folder
    w = D.read_sample_weights(str(csv_path), paths, len(paths))
    dog0 = paths.index(str(d / "dog" / "img0.png"))
    # the cat's image, or a warning that the row is ambiguous / unknown, but never the dog's
    assert w[dog0] == 1.0


# ----------------------------------------------------------------------------- epoch orders, --synthetic-ratio

@pytest.mark.parametrize("ratio,batch", [(0.5, 32), (0.25, 16), (0.9, 10)])
def test_every_batch_holds_the_ratio_and_an_epoch_is_one_pass_over_the_photos(ratio, batch):
    n_real, n_syn = 100, 1000
    order = D.mixed_epoch_order(n_real, n_syn, ratio, batch, seed=3, epoch=1)
    k = round(ratio * batch)
    assert len(order) % batch == 0
    for b in range(0, len(order), batch):
        chunk = order[b:b + batch]
        assert sum(i >= n_real for i in chunk) == k
    real = [i for i in order if i < n_real]
    assert len(real) == len(set(real)) and len(real) > n_real - (batch - k)  # one pass, whole batches


def test_the_pool_is_used_up_before_any_composite_repeats():
    n_real, n_syn, batch = 64, 200, 16
    seen = []
    for epoch in range(1, 8):  # 7 epochs x 4 steps x 8 composites = 224 > 200
        seen += [i for i in D.mixed_epoch_order(n_real, n_syn, 0.5, batch, seed=epoch, epoch=epoch) if i >= n_real]
    assert len(set(seen[:n_syn])) == n_syn  # the first 200 drawn are all different
    assert set(seen) == set(range(n_real, n_real + n_syn))


def test_order_is_deterministic_and_processes_share_one_epoch():
    a = D.mixed_epoch_order(100, 500, 0.5, 16, seed=5, epoch=3, pool_seed=1)
    assert a == D.mixed_epoch_order(100, 500, 0.5, 16, seed=5, epoch=3, pool_seed=1)
    assert a != D.mixed_epoch_order(100, 500, 0.5, 16, seed=5, epoch=4, pool_seed=1)
    shares = [D.mixed_epoch_order(100, 500, 0.5, 16, seed=5, epoch=3, pool_seed=1, rank=r, world=2) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1])
    assert not {i for i in shares[0] if i >= 100} & {i for i in shares[1] if i >= 100}


def test_the_photos_left_after_whole_batches_make_a_last_batch_where_they_count():
    # 1/16 of meter_digits (54 photos), batch 32 at ratio 0.5: 3 batches of 16 + 16, then 6 photos (11%)
    order = D.mixed_epoch_order(54, 900, 0.5, 32, seed=1, epoch=1)
    assert len(order) == 3 * 32 + 6 + 6
    assert sorted(i for i in order if i < 54) == list(range(54))  # every photo, once
    assert sum(i >= 54 for i in order[96:]) == 6
    seen = [i for e in range(1, 80) for i in D.mixed_epoch_order(54, 900, 0.5, 32, seed=e, epoch=e) if i >= 54]
    assert len(set(seen[:900])) == 900  # the pool's stream stays whole with the smaller last batch
    shares = [D.mixed_epoch_order(54, 900, 0.5, 32, seed=1, epoch=2, rank=r, world=2) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) and not {i for i in shares[0] if i >= 54} & {i for i in shares[1] if i >= 54}
    # 856 photos at batch 64: the 24 left (2.8%) are not worth a step, as for a plain folder
    order = D.mixed_epoch_order(856, 9000, 0.5, 64, seed=0, epoch=1)
    assert len(order) == 26 * 64 and sum(i < 856 for i in order) == 832


def test_ratio_one_is_synthetic_only_and_few_photos_repeat():
    order = D.mixed_epoch_order(10, 300, 1.0, 32, seed=0, epoch=1)
    assert min(order) >= 10 and len(order) == 9 * 32
    order = D.mixed_epoch_order(3, 300, 0.5, 16, seed=0, epoch=1)  # 3 photos, 8 real per batch
    real = [i for i in order if i < 3]
    assert len(order) == 16 and len(real) == 8 and all(real.count(i) in (2, 3) for i in range(3))


def test_train_order_uses_the_ratio_of_a_combined_set():
    real = D.TensorImageDataset(torch.zeros(40, 1, 4, 4, dtype=torch.uint8), torch.arange(40) % 2)
    syn = D.TensorImageDataset(torch.zeros(400, 1, 4, 4, dtype=torch.uint8), torch.arange(400) % 2, source=1)
    data = D.Data(torch.utils.data.ConcatDataset([real, syn]), real, None, ["a", "b"], 1, 4, (0.5,), (0.5,),
                  {"synthetic_ratio": 0.25})
    order = D.train_order(data, 8, seed=0, epoch=1)  # 2 composites + 6 photos a batch: 6 batches, then 4 + 1
    assert len(order) == 6 * 8 + 4 + 1 and sum(i >= 40 for i in order) == 6 * 2 + 1
    assert sorted(i for i in order if i < 40) == list(range(40))
    data.config["synthetic_ratio"] = None  # a checkpoint from before --synthetic-ratio: one shuffle of all
    assert sorted(D.train_order(data, 8, seed=0, epoch=1)) == list(range(440))


def test_last_partial_batch_is_kept_when_it_is_more_than_a_few_percent():
    assert D.epoch_length(856, 32) == 832   # 24 of 856 (2.8%): dropped, 26 steps
    assert D.epoch_length(856, 128) == 856  # 88 of 856 (10%): kept, 7 steps
    assert D.epoch_length(54, 32) == 54     # 1/16 of the photos: 22 of 54 (41%) kept, 2 steps
    assert D.epoch_length(51000, 128) == 50944  # MNIST: 56 of 51,000 dropped
    assert D.epoch_length(20, 64) == 20     # less than one batch: one step of all
    assert D.epoch_length(41, 20) == 40     # a partial batch of 1 sample is never a step (BatchNorm)
    data = D.Data(D.TensorImageDataset(torch.zeros(54, 1, 2, 2, dtype=torch.uint8), torch.zeros(54, dtype=torch.long)),
                  None, None, ["0"], 1, 2, (0,), (1,), {})
    order = D.train_order(data, 32, seed=0, epoch=1)
    assert sorted(order) == list(range(54))
