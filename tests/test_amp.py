"""Mixed precision (--amp), the time estimate and the checkpoint's precision: the policy that
`auto` follows per device, and a tiny bf16 CPU run that evaluate.py repeats line for line.

Exact resume under bf16 is test_core.py::test_resume_equals_uninterrupted_run[bf16]."""
import contextlib
import csv
import io
import re

import pytest
import torch

from helpers import tiny_train_args
import evaluate as E
import train


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, mnist_root):
    """One epoch of convnet on 1% of MNIST with --amp bf16: (save dir, stdout, results)."""
    d = tmp_path_factory.mktemp("bf16_run")
    buf = io.StringIO()
    argv = tiny_train_args(mnist_root, d, "--epochs", 1, "--warmup-epochs", 0, "--augment", "none",
                           "--val-fraction", 0.05, "--amp", "bf16")
    with contextlib.redirect_stdout(buf):
        results = train.main(train.get_args_parser().parse_args(argv))
    return d, buf.getvalue(), results


def summary_lines(text):
    return re.findall(r"^(?:Train|Val|Test) set: .*$", text, re.M)


def test_checkpoint_stores_amp_and_history_the_estimate(bf16_run):
    d, out, _ = bf16_run
    assert re.search(r"^convnet: .*\| amp bf16 \|", out, re.M), out
    for name in ("best.pt", "last.pt"):
        ck = torch.load(d / name, map_location="cpu", weights_only=True)
        assert ck["amp"] == "bf16" and ck["args"]["amp"] == "bf16"
        assert "--amp bf16" in ck["command"]
    m = re.search(r"^estimate: (\d+) img/s, (\d+) s/epoch, .* in all for 1 epoch \(early stopping aside\)$", out, re.M)
    assert m, out
    with open(d / "history.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert float(row["est_images_per_s"]) == pytest.approx(float(m.group(1)), abs=0.5)
    assert float(row["est_total_s"]) > 0


def test_evaluate_repeats_train_lines_under_bf16(bf16_run, tmp_path, capsys):
    d, train_out, _ = bf16_run
    model, ckpt, _ = E.load_run(str(d / "best.pt"), torch.device("cpu"), with_data=False)
    assert model.amp == "bf16"  # the checkpoint's precision is the default
    E.main(E.get_args_parser().parse_args([str(d / "best.pt"), "--out", str(tmp_path)]))
    lines = summary_lines(capsys.readouterr().out)
    assert len(lines) == 3 and lines == summary_lines(train_out)
    # --amp overrides it, and fp32 scores the same weights differently (logits, so the loss)
    model, _, _ = E.load_run(str(d / "best.pt"), torch.device("cpu"), with_data=False, amp="off")
    assert model.amp == "off"
    E.main(E.get_args_parser().parse_args([str(d / "best.pt"), "--out", str(tmp_path), "--amp", "off"]))
    fp32 = summary_lines(capsys.readouterr().out)
    assert len(fp32) == 3 and fp32 != lines


