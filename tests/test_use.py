"""Using a trained model: --images on labelled folders (right predictions, the evaluation path's
exact logits), --test-dir, test-time augmentation, ensembles, calibration (ECE, --temperature auto),
and real training steps with --clip-grad, --head mlp and --sample-weights. All on the tests' MNIST
subset (tests/data) or small fabricated folders."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import checkpoint as CK
import device as DV
import data as D
import evaluate as E
import model as M
import report
import train
from helpers import fabricate_checkpoint, run_script, tiny_train_args

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


@pytest.mark.slow  # fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
@pytest.mark.parametrize("layout", ["sub", "flat"])
def test_images_predictions_are_right_and_scored(mnist_run, layout, tmp_path, capsys):
    tmp, labels = mnist_run
    E.main(E.get_args_parser().parse_args([str(tmp / "run" / "best.pt"), "--images", str(tmp / layout),
                                           "--out", str(tmp_path)]))
    out, err = capsys.readouterr()
    rows = read_predictions(tmp_path / "predictions.csv")
    digits = [r for r in rows if r["label"] != "cat"]
    assert len(digits) == N_IMAGES
    right = sum(r["prediction"] == r["label"] for r in digits)
    assert right >= 0.8 * N_IMAGES  # a 90% model on its own test digits
    # the label column is what the folder says, and the accuracy printed / stored is over it
    assert sorted(int(r["label"]) for r in digits) == sorted(labels.tolist())
    m = json.loads((tmp_path / "images_metrics.json").read_text())["images"]
    assert m["correct"] == right and m["total"] == N_IMAGES and 0 <= m["ece"] <= 1
    assert f"Accuracy: {right}/{N_IMAGES}" in out and (tmp_path / "images_confusion.png").is_file()
    if layout == "sub":  # a class the model does not know: named, not scored, no crash
        assert "cat (1)" in err and "Traceback" not in err


@pytest.mark.slow  # fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
def test_images_preprocess_exactly_like_evaluation(mnist_run, mnist_root):
    """The PNGs of test digits through --images' path give the logits of the test split itself."""
    tmp, _ = mnist_run
    model, ckpt, data = E.load_run(str(tmp / "run" / "best.pt"), CPU)
    ref = E.collect(model, torch.utils.data.Subset(data.test, range(N_IMAGES)), CPU, 64)
    _, labels, probs, _, _ = E.classify_folder([(model, ckpt)], str(tmp / "flat"), CPU,
                                               str(tmp / "p.csv"), batch_size=64)
    assert torch.equal(labels, ref["labels"])
    assert torch.equal(probs, ref["probs"])  # identical, not merely close


@pytest.mark.slow  # fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
def test_tta_views_are_deterministic_shifts_and_help_or_keep(mnist_run):
    x = torch.zeros(1, 1, 50, 50)
    x[0, 0, 25, 25] = 1.0
    moved = E.tta_view(x, 1, 0, 1.0)
    ys, xs = torch.nonzero(moved[0, 0] == moved[0, 0].max(), as_tuple=True)
    assert ys.tolist() == [25] and xs.item() == 25 + round(E.TTA_SHIFT * 50)  # right by 6% of the side
    assert torch.equal(E.tta_view(x, 0, 0, 1.0), x) and torch.equal(E.tta_view(x, 1, 0, 1.0), moved)
    tmp, _ = mnist_run
    model, ckpt, data = E.load_run(str(tmp / "run" / "best.pt"), CPU)
    plain = E.collect(model, data.test, CPU)
    one = E.collect(model, data.test, CPU, tta=1)
    five = E.collect(model, data.test, CPU, tta=5)
    assert torch.equal(plain["probs"], one["probs"])
    assert not torch.allclose(five["probs"], plain["probs"])
    assert torch.allclose(five["probs"].sum(1), torch.ones(len(data.test)), atol=1e-5)
    acc = lambda o: (o["preds"] == o["labels"]).float().mean().item()  # noqa: E731
    assert acc(five) >= acc(plain) - 0.02  # small shifts of centred digits cost next to nothing


def test_tta_is_the_mean_softmax_of_its_views_in_the_run_layout():
    """predict(views=...) is one loop with predict(): the mean softmax of the views, each view fed in
    the layout the plain path uses (channels_last under bf16 at 28 px and up)."""
    torch.manual_seed(0)
    model = M.build_model("net", 10, 1).eval()
    model.amp = "bf16"
    loader = [(torch.randn(6, 1, 28, 28), torch.arange(6))]
    layouts = []
    model.features[0].register_forward_pre_hook(
        lambda m, inp: layouts.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    views = [lambda x: x, lambda x: x.flip(-1)]
    out = E.predict(model, loader, CPU, views=views, temperature=2.0)
    p = [E.predict(model, [(v(x), y) for x, y in loader], CPU, temperature=2.0)["logits"].softmax(1) for v in views]
    assert torch.allclose(out["logits"].softmax(1), (p[0] + p[1]) / 2, atol=1e-6)
    assert layouts == [DV.use_channels_last(CPU, "bf16", 28)] * 4


@pytest.mark.slow  # evaluate.py as a subprocess; fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
def test_ensemble_is_the_mean_softmax_and_refuses_other_classes(mnist_run, mnist_root, tmp_path, capsys):
    tmp, _ = mnist_run
    a, b = tmp / "run" / "best.pt", fabricate_checkpoint(tmp_path / "best.pt", mnist_root, "net", seed=1)
    res = E.main(E.get_args_parser().parse_args([str(a), str(b), "--split", "test", "--out", str(tmp_path / "ens")]))
    outs = []
    for path in (a, b):
        model, _, data = E.load_run(str(path), CPU)
        outs.append(E.collect(model, data.test, CPU)["probs"])
    mean = (outs[0] + outs[1]) / 2
    assert res["test"]["correct"] == int((mean.argmax(1) == data.test.targets).sum())
    assert "2-model ensemble Test set" in capsys.readouterr().out
    ck = CK.load_checkpoint(str(b))
    ck["classes"] = [f"c{i}" for i in range(10)]
    CK.save_checkpoint(ck, str(tmp_path / "other.pt"))
    r = run_script("evaluate.py", a, tmp_path / "other.pt", "--out", tmp_path / "x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "same class list" in r.stderr


def test_calibration_error_and_temperature_fit():
    probs = torch.full((100, 2), 0.1)
    probs[:, 0] = 0.9
    labels = torch.zeros(100, dtype=torch.long)
    labels[:10] = 1  # 90% right at confidence 0.9: calibrated
    assert E.calibration_bins(probs, labels)[3] == pytest.approx(0.0, abs=1e-6)
    labels[:50] = 1  # 50% right at 0.9: 0.4 over-confident
    assert E.calibration_bins(probs, labels)[3] == pytest.approx(0.4)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 5, generator=g) * 2
    y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)  # labels drawn from softmax(z)
    assert E.fit_temperature(z * 3, y) == pytest.approx(3.0, rel=0.1)  # logits 3x too sharp


@pytest.mark.slow  # fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
def test_temperature_auto_is_stored_and_lowers_ece(mnist_run, tmp_path, capsys):
    tmp, _ = mnist_run
    ck_path = tmp_path / "best.pt"
    ck_path.write_bytes((tmp / "run" / "best.pt").read_bytes())
    before = CK.load_checkpoint(str(ck_path))
    E.main(E.get_args_parser().parse_args([str(ck_path), "--temperature", "auto", "--split", "val"]))
    out = capsys.readouterr().out
    after = CK.load_checkpoint(str(ck_path))
    assert after["temperature"] > 0 and set(after) == set(before) | {"temperature"}
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    ece = [float(v) for v in __import__("re").search(r"val ECE ([\d.]+)% -> ([\d.]+)%", out).groups()]
    assert ece[1] < ece[0]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["val"]["ece"] == pytest.approx(ece[1] / 100, abs=1e-4)  # later evaluations use the stored T
    assert (tmp_path / "calibration.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- --test-dir

def digit_folder(folder, classes, per_class, seed, layout="flat"):
    rng = np.random.default_rng(seed)
    for c in classes:
        for k in range(per_class):
            im = Image.new("RGB", (24, 32), tuple(int(v) for v in rng.integers(0, 120, 3)))
            ImageDraw.Draw(im).text((8, 10), c, fill=tuple(int(v) for v in rng.integers(150, 256, 3)))
            path = folder / (f"{c}/d{k}.png" if layout == "sub" else f"d{k}_label{c}.png")
            path.parent.mkdir(parents=True, exist_ok=True)
            im.save(path)
    return folder


@pytest.mark.slow  # trains two runs and evaluates one, over 1 s
def test_test_dir_is_the_test_split(tmp_path, monkeypatch, capsys):
    photos = digit_folder(tmp_path / "photos", list("0123"), 8, 0)
    test_dir = digit_folder(tmp_path / "test", list("012"), 3, 1, layout="sub")  # a subset of the classes
    res = train_quiet(["--data-dir", photos, "--test-dir", test_dir, "--img-size", 16, "--model", "convnet",
                       "--epochs", 2, "--eval-test", "--augment", "none", "--quiet", "--workers", 0,
                       "--save-dir", tmp_path / "run"], monkeypatch)
    out = capsys.readouterr().out
    assert res["test"]["total"] == 9 and "Test set:" in out and ", 9 test |" in out
    ck = CK.load_checkpoint(str(tmp_path / "run" / "best.pt"))
    assert ck["data"]["test_dir"] == str(test_dir)
    with open(tmp_path / "run" / "history.csv", newline="") as f:
        assert all(r["test_acc"] != "" for r in csv.DictReader(f))
    m = E.main(E.get_args_parser().parse_args([str(tmp_path / "run" / "best.pt"), "--out", str(tmp_path / "ev")]))
    assert m["test"]["correct"] == res["test"]["correct"] and m["test"]["total"] == 9
    # best.pt is picked by val: the same run with a different test folder picks the same epoch
    digit_folder(tmp_path / "test2", list("0123"), 2, 5)
    res2 = train_quiet(["--data-dir", photos, "--test-dir", tmp_path / "test2", "--img-size", 16, "--model", "convnet",
                        "--epochs", 2, "--eval-test", "--augment", "none", "--quiet", "--workers", 0,
                        "--save-dir", tmp_path / "run2"], monkeypatch)
    assert res2["val"] == res["val"]
    assert CK.load_checkpoint(str(tmp_path / "run2" / "best.pt"))["epoch"] == ck["epoch"]


@pytest.mark.slow  # train.py as subprocesses, ~26 s
def test_test_dir_unknown_class_and_bad_use_are_one_line(tmp_path, mnist_root):
    photos = digit_folder(tmp_path / "photos", list("01"), 4, 0)
    odd = digit_folder(tmp_path / "odd", ["0", "cat"], 2, 1)
    for argv, words in (
            (["--data-dir", photos, "--test-dir", odd], "cat"),
            (["--data-dir", photos, "--test-dir", tmp_path / "missing"], "--test-dir folder not found"),
            (["--dataset", "mnist", "--mnist-root", mnist_root, "--test-dir", odd], "--dataset folder")):
        r = run_script("train.py", *argv, "--img-size", 16, "--model", "convnet", "--epochs", 1, "--quiet",
                       "--save-dir", tmp_path / "run")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr, r.stderr


# ----------------------------------------------------------------------------- real training steps

@pytest.mark.slow  # trains 6 MNIST steps, ~1 s
def test_clip_grad_clips_every_real_step(tmp_path, mnist_root, monkeypatch):
    norms, real = [], torch.nn.utils.clip_grad_norm_

    def clip_and_check(params, max_norm, *a, **k):
        params = list(params)
        total = real(params, max_norm, *a, **k)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        norms.append((float(total), float(after), max_norm))
        return total
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_and_check)
    res = train_quiet(tiny_train_args(mnist_root, tmp_path, "--epochs", 1, "--clip-grad", 0.05,
                                      "--train-fraction", 0.2, "--augment", "none"), monkeypatch)
    assert len(norms) == 6  # 340 images: 5 steps of 64 and the partial batch of 20 (5.9% of the epoch, kept)
    assert all(t > m and a <= m * (1 + 1e-4) for t, a, m in norms)  # every step clipped to 0.05
    assert np.isfinite(res["val"]["loss"])


@pytest.mark.slow  # trains MNIST with --head mlp, ~19 s
def test_head_mlp_trains_and_reloads(tmp_path, mnist_root, monkeypatch):
    res = train_quiet(tiny_train_args(mnist_root, tmp_path, "--model", "resnet18", "--head", "mlp", "--epochs", 1,
                                      "--val-fraction", 0.02, "--augment", "none"), monkeypatch)
    ck = CK.load_checkpoint(str(tmp_path / "best.pt"))
    assert ck["model_args"]["head"] == "mlp"
    net = CK.model_from_checkpoint(ck)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules())  # the mlp head, not a Linear
    init = M.build_model("resnet18", 10, 1, **ck["model_args"]).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in ck["state_dict"].items() if ".bias" in k and "fc" in k)
    m = E.main(E.get_args_parser().parse_args([str(tmp_path / "best.pt"), "--split", "val", "--out", str(tmp_path / "e")]))
    assert m["val"]["correct"] == res["val"]["correct"]


@pytest.mark.slow  # trains two MNIST runs (1 epoch on all 2,000 digits), ~5 s
def test_sample_weights_steer_a_real_run(tmp_path, mnist_root, monkeypatch):
    """Weight 0 on every training digit but the 3s: the trained model calls most val digits 3."""
    _, labels = D.load_mnist(str(mnist_root), train=True, download=False)
    csv_path = tmp_path / "w.csv"
    csv_path.write_text("path,weight\n" + "".join(f"#{i},0\n" for i in range(len(labels)) if labels[i] != 3))
    common = ["--epochs", 1, "--train-fraction", 1.0, "--augment", "none", "--warmup-epochs", 0, "--mix-prob", 0]
    train_quiet(tiny_train_args(mnist_root, tmp_path / "w", *common, "--sample-weights", csv_path), monkeypatch)
    train_quiet(tiny_train_args(mnist_root, tmp_path / "u", *common), monkeypatch)
    share3 = []
    for run in ("w", "u"):
        model, _, data = E.load_run(str(tmp_path / run / "best.pt"), CPU)
        share3.append((E.collect(model, data.val, CPU)["preds"] == 3).float().mean().item())
    assert share3[0] > 0.5 and share3[1] < 0.3, share3


# ----------------------------------------------------------------------------- export

@pytest.mark.slow  # export.py as a subprocess; fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is marked deprecated (torch >= 2.9)
def test_export_torchscript_metadata_and_parity(mnist_run, tmp_path):
    import export
    tmp, _ = mnist_run
    r = run_script("export.py", tmp / "run" / "best.pt", "--out", tmp_path / "new" / "m.pt", "--parity-images", 200)
    assert r.returncode == 0, r.stderr
    assert "parity on 200 test images: max |logit difference|" in r.stdout and "same top-1 on 200/200" in r.stdout
    files = {"metadata.json": ""}
    loaded = torch.jit.load(str(tmp_path / "new" / "m.pt"), _extra_files=files)
    meta = json.loads(files["metadata.json"])
    assert meta["classes"] == [str(i) for i in range(10)] and meta["img_size"] == 28
    assert meta["mean"] == list(D.MNIST_MEAN) and meta["std"] == list(D.MNIST_STD)
    # the deployed file alone, with the metadata's preprocessing, classifies like evaluate.py in fp32
    # (the exported model is fp32; the checkpoint evaluates under its training --amp by default)
    model, _, data = E.load_run(str(tmp / "run" / "best.pt"), CPU, amp="off")
    raw = data.test.images[:50].float() / 255
    x = (raw - torch.tensor(meta["mean"]).view(1, -1, 1, 1)) / torch.tensor(meta["std"]).view(1, -1, 1, 1)
    ref = E.collect(model, torch.utils.data.Subset(data.test, range(50)), CPU)["logits"]
    assert torch.allclose(loaded(x), ref, atol=1e-4)
    # the check can fail: a model that is off reports a difference and fewer agreeing top-1
    diff, same, total = export.parity(model, lambda t: model(t).flip(1), x)
    assert diff > 0.1 and same < total


@pytest.mark.slow  # export.py as a subprocess; fixture mnist_run: net trained 3 epochs on MNIST, ~11 s
def test_export_onnx_exports_or_says_how_to_install(mnist_run, tmp_path):
    tmp, _ = mnist_run
    r = run_script("export.py", tmp / "run" / "best.pt", "--format", "onnx", "--out", tmp_path / "m.onnx",
                   "--parity-images", 50)
    assert r.returncode == 0, r.stderr
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        assert "same top-1 on 50/50" in r.stdout and (tmp_path / "m.onnx").is_file()
    except ImportError:
        assert "pip install onnx onnxruntime" in r.stdout and not (tmp_path / "m.onnx").exists()


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


def test_a_mixed_run_says_which_photos_it_leaves_out(tmp_path, mnist_root, monkeypatch, capsys):
    """Photos + composites: the photos left after whole batches are a step of their own when they
    count (train_order), and the first lines name the photos left out when they do not."""
    from test_report import make_digit_folder
    photos = make_digit_folder(tmp_path / "photos", per_class=8)  # 80 photos: 70 train, 10 val
    base = ["--data-dir", photos, "--mnist-root", mnist_root, "--no-download", "--img-size", 16, "--model", "convnet",
            "--synthetic-n", 40, "--augment", "none", "--workers", 0, "--dry-run", "--quiet"]
    train_quiet(base + ["--batch-size", 32, "--save-dir", tmp_path / "a"], monkeypatch)
    out = capsys.readouterr().out  # 16 photos a batch: 4 batches, then 6 photos (8.6%) + 6 composites
    assert "70 train + 40 synthetic" in out and "5 steps of 32 per epoch\n" in out
    train_quiet(base + ["--batch-size", 24, "--save-dir", tmp_path / "b"], monkeypatch)
    out = capsys.readouterr().out  # 12 photos a batch: 5 batches, and 10 photos (14%) kept
    assert "6 steps of 24 per epoch\n" in out
    train_quiet(base + ["--batch-size", 34, "--save-dir", tmp_path / "c"], monkeypatch)
    out = capsys.readouterr().out  # 17 photos a batch: 4 batches, and 2 photos (2.9%) left out
    assert "4 steps of 34 per epoch (the last partial batch, 2 photos, is left out" in out


@pytest.mark.slow  # trains two MNIST runs, over 1 s
def test_train_prints_the_steps_and_what_it_leaves_out(tmp_path, mnist_root, monkeypatch, capsys):
    train_quiet(tiny_train_args(mnist_root, tmp_path, "--epochs", 1, "--train-fraction", 0.25, "--augment", "none"),
                monkeypatch)
    out = capsys.readouterr().out  # 420 training digits: 6 steps of 64 and 36 (8.6%) kept
    assert "7 steps of 64 per epoch\n" in out
    train_quiet(tiny_train_args(mnist_root, tmp_path / "b", "--epochs", 1, "--train-fraction", 0.25, "--batch-size", 100,
                                "--augment", "none"), monkeypatch)
    assert "4 steps of 100 per epoch (the last partial batch, 20 images, is left out" in capsys.readouterr().out  # 4.8%
