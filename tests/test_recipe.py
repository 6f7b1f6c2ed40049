"""The photo recipe's pieces: the mixed real/synthetic batch order (--synthetic-ratio), the
group-aware split, the size-aware `strong` preset and mixup's per-sample weights."""
import re
from argparse import Namespace

import pytest
import torch
from torchvision.transforms import v2

import augment as AU
import cli
import data as D
import train

# ----------------------------------------------------------------------------- --synthetic-ratio


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
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for k in range(40):
        img = torch.randint(0, 256, (24, 24, 3), dtype=torch.uint8, generator=g)
        Image.fromarray(img.numpy()).save(tmp_path / f"a{k}_label{k % 2}.png")
        if k < 10:  # ten photos shot twice
            Image.fromarray(img.numpy()).save(tmp_path / f"b{k}_label{k % 2}.png")
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


# ----------------------------------------------------------------------------- size-aware strong

def _blur_of(tf):
    return next(t for t in tf.transforms if isinstance(t, v2.GaussianBlur))


@pytest.mark.parametrize("size,kernel,sigma", [(128, 5, (0.1, 2.0)), (64, 3, (0.05, 1.0)), (32, 3, (0.025, 0.5)),
                                               (256, 9, (0.2, 4.0))])
def test_strong_blur_scales_with_the_image_and_is_table_1_at_128(size, kernel, sigma):
    blur = _blur_of(AU.build_transform("strong", size, (0.5,) * 3, (0.5,) * 3))
    assert list(blur.kernel_size) == [kernel, kernel]
    assert blur.sigma == pytest.approx(list(sigma))
    assert AU.strong_blur(size) == (kernel, pytest.approx(sigma))


def test_batched_strong_blurs_as_much_relative_to_the_image_at_every_size():
    """A sharp edge through BatchAugment's strong blur alone: its width in pixels halves with the size."""
    torch.manual_seed(0)
    widths = {}
    for size in (64, 128):
        k, (lo, hi) = AU.strong_blur(size)
        x = torch.zeros(64, 1, size, size)
        x[..., size // 2:] = 1
        sigma = torch.full((64,), hi)
        y = AU._blur(x, sigma, k)[:, 0, size // 2]
        widths[size] = ((y > 0.05) & (y < 0.95)).sum(1).float().mean().item()
    assert widths[128] == pytest.approx(2 * widths[64], rel=0.35)


# ----------------------------------------------------------------------------- mixup and sample weights

def test_mixup_loss_ignores_the_label_of_a_weight_zero_sample():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    weights = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 1.0])
    perm = torch.tensor([2, 0, 1, 5, 3, 4])  # sample 0 is mixed with the weight-0 sample 2
    loss, _ = train.mixup_loss(logits, labels, weights, perm, 0.7, 0.0)
    other = labels.clone()
    other[2] = 0  # a different (wrong) label on the dropped sample changes nothing
    assert train.mixup_loss(logits, other, weights, perm, 0.7, 0.0)[0] == pytest.approx(loss.item())
    # unit weights: the plain mean of the mixed cross-entropy
    ones = torch.ones(6)
    ce = torch.nn.functional.cross_entropy
    plain = 0.7 * ce(logits, labels) + 0.3 * ce(logits, labels[perm])
    assert train.mixup_loss(logits, labels, ones, perm, 0.7, 0.0)[0] == pytest.approx(plain.item())
    # the mean is over the weighted samples: doubling every weight changes nothing
    assert train.mixup_loss(logits, labels, 2 * weights, perm, 0.7, 0.0)[0] == pytest.approx(loss.item())


def test_mixup_returns_the_partner_permutation():
    args = Namespace(mixup_alpha=0.2, mix_prob=1.0)
    x = torch.arange(5.0).view(5, 1)
    mixed, perm, lam = train.mixup(x, args)
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    assert train.mixup(x, Namespace(mixup_alpha=0.2, mix_prob=0.0)) == (x, None, 1.0)
