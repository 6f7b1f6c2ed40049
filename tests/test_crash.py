"""Crash safety: kill -9 and Ctrl-C in the middle of an epoch (real subprocesses), a NaN loss, a
full disk or an unwritable --save-dir, out of device memory.

A run killed with SIGKILL and one sent SIGINT are real subprocesses, started together; the
uninterrupted reference run and the two resumes run in this process (torch's import costs
seconds per process). A stop is sent when the tqdm bar of epoch 2 appears on stderr, which
train.py draws after it has written epoch 1's last.pt and before the first step of epoch 2: so
it lands in epoch 2 whatever the machine's speed, and a run that got past epoch 2 anyway fails
the test (return code, last.pt's epoch), never passes it silently."""
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import checkpoint as CK
from helpers import REPO, fabricate_checkpoint, run_script, run_train, tiny_train_args
import model as M
import train


def crash_args(mnist_root, save_dir):
    """Two epochs of convnet on the tests' MNIST subset (1960 training images: 30 steps an epoch) with dropout and mixup, so the
    random state matters, and progress bars on (the signal to stop is epoch 2's bar)."""
    return ["--dataset", "mnist", "--mnist-root", mnist_root, "--no-download", "--model", "convnet",
            "--train-fraction", 1.0, "--val-fraction", 0.02, "--batch-size", 64, "--epochs", 2,
            "--warmup-epochs", 1, "--augment", "none", "--mix-prob", 0.5, "--workers", 0, "--save-dir", save_dir]


def start(argv, log):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "train.py", *map(str, argv)], cwd=REPO, env=env,
                            stdout=open(log, "w"), stderr=subprocess.PIPE)


def stop_in_epoch_2(proc, sig):
    """Send `sig` once epoch 2's progress bar is on stderr; returns (return code, all of stderr)."""
    seen = b""
    while b"epoch 2:" not in seen:
        chunk = os.read(proc.stderr.fileno(), 65536)
        assert chunk, f"the run ended before epoch 2 (rc {proc.wait()}): {seen[-2000:]!r}"
        seen += chunk
    proc.send_signal(sig)
    rest = proc.communicate(timeout=300)[1]
    return proc.returncode, (seen + rest).decode(errors="replace").replace("\r", "\n")  # tqdm's redraws


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_root):
    tmp = tmp_path_factory.mktemp("crash")
    dirs = {k: tmp / k for k in ("whole", "killed", "interrupted")}
    with ThreadPoolExecutor(2) as pool:
        stopped = {k: pool.submit(stop_in_epoch_2, start(crash_args(mnist_root, dirs[k]), tmp / f"{k}.log"), sig)
                   for k, sig in (("killed", signal.SIGKILL), ("interrupted", signal.SIGINT))}
        run_train(crash_args(mnist_root, dirs["whole"]))  # meanwhile, the reference (without figures)
        out = {k: f.result() for k, f in stopped.items()}
    # what the killed and interrupted runs left behind, before they are resumed
    out["after_kill"] = torch.load(dirs["killed"] / "last.pt", weights_only=True)
    out["after_interrupt"] = CK.load_checkpoint(str(dirs["interrupted"] / "last.pt"))
    resume_line = re.search(r"^interrupted: resume with: (.*)$", out["interrupted"][1], re.M)
    out["resume_line"] = resume_line and resume_line.group(1)
    out["resumed"] = {"killed": run_train([*crash_args(mnist_root, dirs["killed"]),
                                           "--resume", dirs["killed"] / "last.pt"])[1]}
    if out["resume_line"]:  # the printed command, as a user would paste it
        out["resumed"]["interrupted"] = run_train(shlex.split(out["resume_line"])[2:])[1]
    out["dirs"] = dirs
    return out


def assert_same_run(a_dir, b_dir):
    """Same weights (bitwise) in best.pt and last.pt, same optimizer state and the same history."""
    for name in ("best.pt", "last.pt"):
        a, b = (torch.load(d / name, weights_only=True) for d in (a_dir, b_dir))
        assert a["epoch"] == b["epoch"] == 2
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for k in a["state_dict"]:
            assert torch.equal(a["state_dict"][k], b["state_dict"][k]), (name, k)
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (a_dir, b_dir))
    for p, q in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(p[k], q[k]) for k in p)
    assert "progress" not in b
    for ra, rb in zip(a["history"], b["history"], strict=True):  # train loss/acc of the stopped epoch too
        timing = lambda k: k in ("seconds", "images_per_s") or k.startswith("est_")  # noqa: E731 (time estimate)
        assert {k: v for k, v in ra.items() if not timing(k)} == {k: v for k, v in rb.items() if not timing(k)}


@pytest.mark.slow  # train.py subprocesses stopped in epoch 2 and resumed (fixture runs), ~30 s
def test_kill_9_in_an_epoch_then_resume_equals_uninterrupted_run(runs):
    rc, stderr = runs["killed"]
    assert rc == -signal.SIGKILL, stderr[-2000:]
    left = runs["after_kill"]  # epoch 1's last.pt, whole
    assert left["epoch"] == 1 and "progress" not in left
    assert not [p for p in os.listdir(runs["dirs"]["killed"]) if p.startswith(".tmp-")]
    assert "at epoch 2\n" in runs["resumed"]["killed"]
    assert_same_run(runs["dirs"]["whole"], runs["dirs"]["killed"])


@pytest.mark.slow  # train.py subprocesses stopped in epoch 2 and resumed (fixture runs), ~30 s
def test_ctrl_c_saves_last_pt_exits_130_and_resumes_exactly(runs):
    rc, stderr = runs["interrupted"]
    assert rc == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "Ctrl-C: stopping after this step" in stderr
    last = runs["dirs"]["interrupted"] / "last.pt"
    assert runs["resume_line"] is not None, stderr[-2000:]
    argv = shlex.split(runs["resume_line"])
    assert argv[:2] == ["python", "train.py"] and argv[-2:] == ["--resume", str(last)]
    assert argv.count("--resume") == 1
    # last.pt holds the finished epoch 1 and the position in epoch 2 (loadable with weights_only)
    left = runs["after_interrupt"]
    assert left["epoch"] == 1
    assert left["progress"]["epoch"] == 2 and 1 <= left["progress"]["step"] < 45
    assert f"at epoch 2, step {left['progress']['step']}\n" in runs["resumed"]["interrupted"]
    # the rest of epoch 2 in the same order with the same random state: no sample repeated or skipped
    assert_same_run(runs["dirs"]["whole"], runs["dirs"]["interrupted"])


def test_resume_command_replaces_any_resume():
    argv = ["train.py", "--model", "net", "--resume", "old/last.pt", "--resume=x.pt", "--save-dir", "my runs"]
    assert train.resume_command(argv, "my runs/last.pt") == \
        "python train.py --model net --save-dir 'my runs' --resume 'my runs/last.pt'"


# ----------------------------------------------------------------------------- NaN, disk, memory

def test_nan_loss_stops_with_a_clear_message_and_keeps_checkpoints(tmp_path, mnist_root, monkeypatch):
    real, before = train.train_one_epoch, {}

    def nan_in_epoch_2(model, loader, optimizer, scheduler, scaler, device, epoch, *rest, **kw):
        if epoch == 2:
            before.update({f: (tmp_path / f).read_bytes() for f in ("best.pt", "last.pt", "history.csv")})
            model.register_forward_hook(lambda module, inputs, logits: logits * float("nan"))
        return real(model, loader, optimizer, scheduler, scaler, device, epoch, *rest, **kw)

    monkeypatch.setattr(train, "train_one_epoch", nan_in_epoch_2)
    sigint_handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(train.TrainingError) as e:
        run_train(tiny_train_args(mnist_root, tmp_path, "--epochs", 3, "--augment", "none"))
    assert signal.getsignal(signal.SIGINT) is sigint_handler  # main() put Ctrl-C's handler back
    msg = str(e.value)
    assert "loss is not finite (nan) at epoch 2, step 0" in msg and "best.pt and last.pt" in msg
    assert "--lr" in msg and "\n" not in msg
    assert {f: (tmp_path / f).read_bytes() for f in before} == before


def full_disk(monkeypatch):
    """Checkpoint temp files that take writes from /dev/full: the kernel's own ENOSPC."""
    real = tempfile.mkstemp

    def mkstemp(*a, **kw):
        fd, path = real(*a, **kw)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return fd, path
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)  # cli.atomic_write, which save_checkpoint uses


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_keeps_the_previous_checkpoint(tmp_path, mnist_root, monkeypatch):
    path = fabricate_checkpoint(tmp_path / "last.pt", mnist_root, with_state=True)
    ck, good = CK.load_checkpoint(str(path)), path.read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(CK.CheckpointError) as e:
        CK.save_checkpoint(dict(ck, epoch=2), str(path))
    assert str(e.value) == f"cannot write {path}: No space left on device; any previous last.pt there is unchanged"
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["last.pt"]  # the temp file is gone


def test_unwritable_target_is_a_checkpoint_error(tmp_path, mnist_root):
    ck = CK.load_checkpoint(str(fabricate_checkpoint(tmp_path / "x.pt", mnist_root)))
    (tmp_path / "best.pt").mkdir()  # a folder where the checkpoint should go
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CK.CheckpointError, match=r"cannot write .*best\.pt: Is a directory"):
        CK.save_checkpoint(ck, str(tmp_path / "best.pt"))
    with pytest.raises(CK.CheckpointError, match=r"cannot write .*last\.pt: Not a directory"):
        CK.save_checkpoint(ck, str(tmp_path / "file" / "last.pt"))
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "file", "x.pt"]  # no temp file left


def test_a_folder_in_the_way_of_best_pt_stops_training_with_one_line(tmp_path, mnist_root):
    (tmp_path / "best.pt").mkdir()
    with pytest.raises(CK.CheckpointError) as e:
        run_train(tiny_train_args(mnist_root, tmp_path, "--epochs", 1, "--augment", "none"))
    assert str(e.value) == (f"cannot write {tmp_path / 'best.pt'}: Is a directory; "
                            f"any previous best.pt there is unchanged")


@pytest.mark.slow  # train.py as a subprocess
def test_cli_save_dir_that_is_a_file_is_one_line(tmp_path, mnist_root):
    (tmp_path / "file").write_text("not a folder")
    proc = run_script("train.py", *tiny_train_args(mnist_root, tmp_path / "file", "--epochs", 1))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [f"error: cannot create --save-dir {tmp_path / 'file'}: File exists"]


def test_out_of_memory_names_the_batch_size_and_the_fix(tmp_path, mnist_root, monkeypatch):
    forward = M.ConvNet.forward

    def oom(self, x):
        if x.is_meta:  # train.py's memory estimate, before the run: shapes only
            return forward(self, x)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(M.ConvNet, "forward", oom)
    with pytest.raises(train.TrainingError) as e:
        run_train(tiny_train_args(mnist_root, tmp_path, "--dry-run", "--batch-size", 48))
    assert str(e.value) == "out of memory on cpu at --batch-size 48: lower --batch-size (or --img-size)"
