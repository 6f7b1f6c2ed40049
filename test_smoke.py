"""Smoke test: one training step of every model in model.MODELS.

    python test_smoke.py        # prints one line per model and a summary (< 1 min on a CPU)
    python -m pytest test_smoke.py

For each (model, input shape): build, forward a small random batch, cross-entropy backward, one
AdamW step; the loss must be finite, every parameter must get a gradient, and every parameter
with a non-zero gradient must change. forward_head(forward_features(x)) must equal forward(x).
"""
import sys

import torch
import torch.nn.functional as F

import model as M

# Tiny batches: intra-op threads only add overhead (and spin badly on a shared machine); one
# thread also makes the numbers independent of the core count.
torch.set_num_threads(1)

NUM_CLASSES = 10
BATCH = 4
# (model, in_channels, img_size): the MNIST nets at 1x28x28; resnet18 as for photos and for MNIST
# (<= 32 px it runs at stride 1 without the max-pool).
CASES = [
    ("convnet", 1, 28),
    ("mnist_example", 1, 28),
    ("net", 1, 28),
    ("resnet18", 3, 64),
    ("resnet18", 1, 28),
]


def one_step(name, in_channels, img_size, seed=0):
    """One AdamW step of `name` on a random batch; returns a dict for the printed line."""
    torch.manual_seed(seed)
    net = M.build_model(name, NUM_CLASSES, in_channels, img_size=img_size)
    x = torch.randn(BATCH, in_channels, img_size, img_size)
    y = torch.arange(BATCH) % NUM_CLASSES

    net.eval()
    with torch.no_grad():
        feats = net.forward_features(x)
        assert feats.dim() == 2 and feats.shape[0] == BATCH, (name, tuple(feats.shape))
        assert torch.allclose(net.forward_head(feats), net(x), atol=1e-5), name

    net.train()
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    logits = net(x)
    assert logits.shape == (BATCH, NUM_CLASSES), (name, tuple(logits.shape))
    loss = F.cross_entropy(logits, y)
    assert torch.isfinite(loss), (name, loss.item())
    opt.zero_grad()
    loss.backward()
    no_grad = [k for k, p in net.named_parameters() if p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:5]}"
    opt.step()
    moved = {k: not torch.equal(before[k], p.detach()) for k, p in net.named_parameters()}
    stuck = [k for k, p in net.named_parameters() if p.grad.abs().sum() > 0 and not moved[k]]
    assert not stuck, f"{name}: parameters with a gradient did not change: {stuck[:5]}"
    assert sum(moved.values()) >= 0.9 * len(moved), f"{name}: only {sum(moved.values())}/{len(moved)} changed"
    return {"model": name, "params": M.count_parameters(net), "shape": (BATCH, in_channels, img_size, img_size),
            "loss": loss.item()}


def test_cases_cover_every_registered_model():
    assert sorted({c[0] for c in CASES}) == M.list_models() == sorted(M.MODELS)


def _make_step_test(case):
    def test():
        one_step(*case)
    test.__name__ = f"test_one_step_{case[0]}_{case[1]}x{case[2]}x{case[2]}"
    return test


for _case in CASES:  # one pytest test per case, named after it
    _t = _make_step_test(_case)
    globals()[_t.__name__] = _t
del _case, _t


def main():
    test_cases_cover_every_registered_model()
    print(f"registry: {', '.join(M.list_models())}")
    failed = 0
    for case in CASES:
        try:
            r = one_step(*case)
            print(f"ok   {r['model']:<14} {r['params']:>12,} params  input {'x'.join(map(str, r['shape']))}"
                  f"  loss {r['loss']:.4f}")
        except Exception as e:  # report every model, then fail
            failed += 1
            print(f"FAIL {case[0]:<14} {type(e).__name__}: {e}")
    print(f"{len(CASES) - failed}/{len(CASES)} models: forward, backward, AdamW step, finite loss, "
          f"parameters changed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
