"""device.py: the mixed-precision policy that --amp auto follows per device (CPU, CUDA, MPS) and
the thread default, shared with the other runs on the machine."""
import fcntl
import os

import pytest
import torch

import device as DV


def set_cpu_bf16(monkeypatch, native):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: native, raising=False)


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bf16_on_cpu_only_where_detected(monkeypatch, native):
    set_cpu_bf16(monkeypatch, native)
    cpu = torch.device("cpu")
    assert DV.cpu_has_native_bf16() is native
    assert DV.resolve_amp("auto", cpu) == ("bf16" if native else "off")
    assert DV.amp_dtype(cpu, "auto") == (torch.bfloat16 if native else None)
    assert not DV.needs_grad_scaler(cpu, "auto")
    # an explicit choice is taken as given (bf16 is emulated without native support: slow, but works)
    for amp in ("bf16", "fp16", "off"):
        assert DV.resolve_amp(amp, cpu) == amp


def test_auto_on_cuda_and_mps(monkeypatch):
    cuda, mps = torch.device("cuda"), torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert DV.resolve_amp("auto", cuda) == "bf16" and not DV.needs_grad_scaler(cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert DV.resolve_amp("auto", cuda) == "fp16" and DV.needs_grad_scaler(cuda)
    assert DV.resolve_amp("auto", mps) == "fp16" and DV.needs_grad_scaler(mps)
    assert DV.needs_grad_scaler(mps, "bf16") is False
    with pytest.raises(ValueError, match="--amp"):
        DV.resolve_amp("fp8", cuda)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A registry of runs of its own: what other runs on this machine hold does not reach the test."""
    monkeypatch.setattr(DV, "RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(DV, "_claim", None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield tmp_path / "runs"
    if DV._claim:
        DV._claim.close()
    torch.set_num_threads(before)


def test_threads_default_to_every_core_unless_told(runs_dir, monkeypatch):
    cpu = torch.device("cpu")
    assert DV.set_threads(None, cpu) == (DV.cpu_cores(), 0) and torch.get_num_threads() == DV.cpu_cores()
    assert DV.set_threads(1, cpu) == (1, 0) and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice is kept
    torch.set_num_threads(1)
    assert DV.set_threads(None, cpu)[0] == 1


def test_runs_side_by_side_share_the_cores(runs_dir, monkeypatch):
    monkeypatch.setattr(DV, "cpu_cores", lambda: 4)
    cpu = torch.device("cpu")
    runs_dir.mkdir()
    other = open(runs_dir / "999999.threads", "w")  # another live run: its file is locked while it lives
    other.write("3")
    other.flush()
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert DV.set_threads(None, cpu) == (1, 3)  # 4 cores, 3 taken
    assert (runs_dir / f"{os.getpid()}.threads").read_text() == "1"  # and this run is seen by the next
    assert DV.set_threads(2, cpu) == (2, 3)  # --threads wins
    other.close()  # that run ended: its lock is gone with it
    assert DV.set_threads(None, cpu) == (4, 0)
