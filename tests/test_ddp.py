"""torchrun: DistributedDataParallel on CPU over gloo with 2 processes, against one process.

With --batch-size 32 on each of 2 processes, every step's global batch is the same 64 samples
as a single process's --batch-size 64 step (DistributedSampler deals one shuffle out
round-robin), and DDP averages the two halves' gradients: so, with the random parts off
(dropout, mixup, augmentation), both runs end with the same weights up to float rounding. The
one-process run feeds its batches with --device-data, so the two loaders are compared too."""
import os
import re
import subprocess
import sys

import pytest
import torch

import augment as AU
import checkpoint as CK
from helpers import REPO, read_csv, run_train
import data as D
import evaluate as E


def test_epoch_order_deals_one_shuffle_out_to_the_processes():
    alone = D.epoch_order(10, seed=7)
    assert sorted(alone) == list(range(10)) and alone == D.epoch_order(10, seed=7) != D.epoch_order(10, seed=8)
    shares = [D.epoch_order(10, seed=7, rank=r, world=3) for r in range(3)]
    assert [len(s) for s in shares] == [4, 4, 4]  # padded to 12 with 2 repeats
    assert set(sum(shares, [])) == set(range(10))
    assert [s[i] for i in range(4) for s in shares][:10] == alone  # round-robin over the same shuffle


def test_device_loader_follows_its_sampler():
    ds = D.TensorImageDataset(torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1), torch.arange(8))
    loader = AU.DeviceLoader(ds, 2, "cpu", lambda x: x)
    loader.sampler = [5, 1, 6, 2, 0]  # e.g. the rest of a resumed epoch, or one process's share
    assert [b[1].tolist() for b in loader] == [[5, 1], [6, 2]]  # drop_last


def ddp_args(mnist_root, save_dir, batch_size, *extra):
    """Two epochs of convnet on 60% of the tests' MNIST subset (1180 training images: 18 steps of 64),
    all randomness in the training steps off, so the two process layouts see the same numbers. fp32
    (--amp off): bf16 rounds each process's half-batch sums differently from the whole batch's."""
    return [*extra, "--dataset", "mnist", "--mnist-root", mnist_root, "--no-download", "--model", "convnet",
            "--train-fraction", 0.6, "--val-fraction", 0.02, "--batch-size", batch_size, "--epochs", 2,
            "--warmup-epochs", 0, "--optimizer", "sgd", "--lr", 0.05, "--drop-rate", 0, "--mix-prob", 0,
            "--augment", "none", "--workers", 0, "--device", "cpu", "--amp", "off", "--quiet", "--save-dir", save_dir]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_root):
    """(torchrun's 2-process run, its folder, the 1-process run's folder)."""
    tmp = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # --standalone: a local rendezvous on a free port, so parallel test runs do not collide
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "train.py", *map(str, ddp_args(mnist_root, tmp / "two", 32))],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_train(ddp_args(mnist_root, tmp / "one", 64, "--device-data"))  # meanwhile, one process here, without figures
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout, stderr, tmp / "two", tmp / "one"


@pytest.mark.slow  # torchrun: 2 processes + a 1-process run (fixture runs), ~40 s
def test_torchrun_writes_one_set_of_outputs_from_rank_0(runs):
    rc, stdout, stderr, two, _ = runs
    assert rc == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    header = [i for i, line in enumerate(stdout.splitlines()) if "| 2 processes" in line]
    assert len(header) == 1 and header[0] < stdout.splitlines().index(
        next(l for l in stdout.splitlines() if l.startswith("epoch"))), stdout  # one header, before epoch 1
    for pattern in (r"^epoch +1/2 \|", r"^epoch +2/2 \|", r"^Train set: ", r"^Val set: ", r"^Test set: "):
        assert len(re.findall(pattern, stdout, re.M)) == 1, (pattern, stdout)
    assert sorted(os.listdir(two)) == ["augmentations.png", "best.pt", "curves.png", "curves_detail.png",
                                       "history.csv", "last.pt", "mixup.png"]
    assert len(read_csv(two / "history.csv")) == 2


@pytest.mark.slow  # torchrun: 2 processes + a 1-process run (fixture runs), ~40 s
def test_torchrun_trains_as_one_process_with_the_whole_batch(runs):
    rc, _, stderr, two, one = runs
    assert rc == 0, stderr[-3000:]
    a, b = (CK.load_checkpoint(str(d / "last.pt")) for d in (one, two))
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert b["state_dict"].keys() == a["state_dict"].keys()  # model.module's: no "module." prefix
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-4, atol=1e-5, msg=k)
    # the training metrics are summed over both processes: all 1152 images of an epoch, not 576
    for ha, hb in zip(read_csv(one / "history.csv"), read_csv(two / "history.csv")):
        assert hb["train_n_real"] == ha["train_n_real"] == "1152"
        assert float(hb["train_loss"]) == pytest.approx(float(ha["train_loss"]), rel=1e-5)
        assert hb["val_acc"] == ha["val_acc"]


@pytest.mark.slow  # torchrun: 2 processes + a 1-process run (fixture runs), ~40 s
def test_torchrun_checkpoint_reproduces_its_accuracy_in_evaluate(runs, tmp_path, capsys):
    rc, stdout, stderr, two, _ = runs
    assert rc == 0, stderr[-3000:]
    capsys.readouterr()
    E.main(E.get_args_parser().parse_args([str(two / "best.pt"), "--split", "val", "--out", str(tmp_path)]))
    val_line = re.search(r"^Val set: .*$", stdout, re.M).group(0)
    assert val_line in capsys.readouterr().out.splitlines()
