"""device.py: the mixed-precision policy that --amp auto follows per device (CPU, CUDA, MPS) and
the thread default."""
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


def test_threads_default_to_every_core_unless_told(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert DV.set_threads(None, torch.device("cpu")) == DV.cpu_cores() == torch.get_num_threads()
        assert DV.set_threads(1, torch.device("cpu")) == 1 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice is kept
        torch.set_num_threads(1)
        assert DV.set_threads(None, torch.device("cpu")) == 1
    finally:
        torch.set_num_threads(before)
