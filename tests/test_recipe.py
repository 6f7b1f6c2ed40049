"""The photo recipe's pieces: the mixed real/synthetic batch order (--synthetic-ratio), the
group-aware split, the size-aware `strong` preset and mixup's per-sample weights."""
from argparse import Namespace

import pytest
import torch

import train

# ----------------------------------------------------------------------------- --synthetic-ratio


# ----------------------------------------------------------------------------- the group-aware split


# ----------------------------------------------------------------------------- size-aware strong


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
