"""Using a trained model: --images on labelled folders (right predictions, the evaluation path's
exact logits), --test-dir, test-time augmentation, ensembles, calibration (ECE, --temperature auto),
and real training steps with --clip-grad, --head mlp and --sample-weights. All on the tests' MNIST
subset (tests/data) or small fabricated folders."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

import data as D
import model as M
import report
import train

N_IMAGES = 100  # test digits written out as image files
CPU = torch.device("cpu")


def train_quiet(argv, mp):
    mp.setattr(report, "plot_inputs", lambda *a, **k: None)
    mp.setattr(report, "plot_history", lambda *a, **k: None)
    return train.main(train.get_args_parser().parse_args(list(map(str, argv))))


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, mnist_root):
    """`net` trained 3 epochs on the MNIST subset (~90% test); its first N_IMAGES test digits as PNG
    files in both layouts, plus a folder of a class the model does not know."""
    tmp = tmp_path_factory.mktemp("use")
    with pytest.MonkeyPatch.context() as mp:
        train_quiet(["--dataset", "mnist", "--mnist-root", mnist_root, "--no-download", "--model", "net",
                     "--epochs", 3, "--warmup-epochs", 0, "--device-data", "--quiet", "--workers", 0,
                     "--save-dir", tmp / "run"], mp)
    images, labels = D.load_mnist(str(mnist_root), train=False, download=False)
    for i in range(N_IMAGES):
        c = int(labels[i])
        for path in (tmp / "sub" / str(c) / f"t{i:03d}.png", tmp / "flat" / f"t{i:03d}_label{c}.png"):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i, 0].numpy()).save(path)
    (tmp / "sub" / "cat").mkdir()
    Image.fromarray(images[0, 0].numpy()).save(tmp / "sub" / "cat" / "c.png")
    return tmp, labels[:N_IMAGES]


def read_predictions(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- --test-dir


# ----------------------------------------------------------------------------- real training steps


# ----------------------------------------------------------------------------- export


# ----------------------------------------------------------------------------- the dashboard's map

def test_dashboard_map_fills_its_box_keeping_the_aspect_ratio():
    import report
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * torch.tensor([30.0, 10.0]) + 5  # a wide cloud, 3:1
    flat, (w, h) = report.fit_box(xy.numpy())
    pts = np.array(flat).reshape(-1, 2)
    assert w == 1000 and 300 <= h <= 345  # the box is the points' own: about 3:1
    assert pts[:, 0].min() == 0 and pts[:, 0].max() == w and pts[:, 1].min() == 0 and pts[:, 1].max() == h
    ratio = (xy.max(0).values - xy.min(0).values)
    assert w / h == pytest.approx(float(ratio[0] / ratio[1]), rel=0.01)  # one scale for both axes


# ----------------------------------------------------------------------------- Grad-CAM

@pytest.mark.slow  # trains net on 3,000 synthetic composites, ~40 s
def test_grad_cam_lands_on_the_digit_of_synthetic_composites(mnist_root):
    """A `net` trained a little on composites (MNIST digits pasted with their own alpha, in a random
    colour, at a random place, on textured colour backgrounds): its Grad-CAM correlates with each
    image's digit region, known exactly because the test pastes the digit itself."""
    import analyze
    g = torch.Generator().manual_seed(0)
    digits, digit_labels = D.load_mnist(str(mnist_root), train=True, download=False)
    size, n_train, n_test = 32, 3000, 400
    n = n_train + n_test
    pick = torch.randint(0, len(digits), (n,), generator=g)
    y = digit_labels[pick]
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=size, mode="bilinear")
    bg = smooth * 200 + torch.rand(n, 3, size, size, generator=g) * 55
    alpha = torch.nn.functional.interpolate(digits[pick].float() / 255, size=20, mode="bilinear")  # [n, 1, 20, 20]
    canvas = torch.zeros(n, 1, size, size)
    canvas[:, :, 6:26, 6:26] = alpha
    # shift every digit (and its region) by up to 6 px, so that where the digit is differs from
    # image to image and the control below is another place
    shifts = torch.randint(-6, 7, (n, 2), generator=g).tolist()
    canvas = torch.stack([c.roll(s, (1, 2)) for c, s in zip(canvas, shifts)])
    colour = torch.rand(n, 3, 1, 1, generator=g) * 255
    x = bg * (1 - canvas) + colour * canvas
    digit = (canvas[n_train:, 0] > 0.5).float()  # [n_test, size, size]: 1 on the pasted digit
    assert 0.05 < digit.mean() < 0.5
    x = (x.float() / 255 - 0.5) / 0.25
    torch.manual_seed(0)
    net = M.build_model("net", 10, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    net.train()
    for epoch in range(5):
        for idx in torch.randperm(n_train, generator=g).split(64):
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    cams, logits = analyze.grad_cam(net, x[n_train:])
    right = logits.argmax(1) == y[n_train:]
    assert right.float().mean() > 0.3 and cams.shape == digit.shape  # chance: 0.1

    def corr(a, b):
        a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    on_digit = corr(cams, digit)[right].mean().item()
    other = corr(cams, digit.roll(1, 0))[right].mean().item()  # another image's digit region: the control
    assert on_digit > 0.2 and on_digit > other + 0.1, (on_digit, other)
    inside = (cams * digit).sum((1, 2)) / digit.sum((1, 2))
    outside = (cams * (1 - digit)).sum((1, 2)) / (1 - digit).sum((1, 2))
    assert (inside > outside)[right].float().mean() > 0.7


# ----------------------------------------------------------------------------- the last partial batch


