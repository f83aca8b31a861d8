"""Inference at bf16 / int8: the export records the dtype, load_encoder applies it, the frames stay close
to fp32, and a missing backend falls back to fp32 with a warning."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import bestrq2
from bestrq2 import precision
from bestrq2.export import export, save_encoder

QLinear = torch.ao.nn.quantized.dynamic.Linear


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten(0, 1), b.flatten(0, 1), dim=-1).mean())


@pytest.fixture(scope="module")
def wav():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 40000, generator=g) * 0.1


@pytest.mark.parametrize("dtype, min_cosine", [("int8", 0.99), ("bf16", 0.995)])
def test_export_dtype_is_recorded_applied_and_close_to_fp32(micro_export, tmp_path, wav, dtype, min_cosine, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)  # emulated where the CPU lacks it: still correct
    out = export(micro_export.parent / "run", tmp_path / dtype, dtype=dtype)
    assert json.loads((out / "config.json").read_text())["inference_dtype"] == dtype
    low, ref = bestrq2.load_encoder(out), bestrq2.load_encoder(out, dtype="fp32")
    assert low.compute_dtype == dtype and ref.compute_dtype == "fp32"
    if dtype == "int8":
        assert any(isinstance(m, QLinear) for m in low.modules())
        assert low.frontend.logmel.mel_fb.dtype == torch.float32  # the frontend is untouched
    with torch.no_grad():
        a, b = low(wav), ref(wav)
    assert a.dtype == torch.float32 and a.shape == b.shape
    assert not torch.equal(a, b)  # really another arithmetic
    assert _cosine(a, b) >= min_cosine


def test_missing_backends_fall_back_to_fp32_with_a_warning(micro_export, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        enc = bestrq2.load_encoder(micro_export, dtype="bf16")
    assert enc.compute_dtype == "fp32"
    monkeypatch.setattr(precision, "int8_engine", lambda: None)
    with pytest.warns(UserWarning, match="no quantized engine"):
        enc = bestrq2.load_encoder(micro_export, dtype="int8")
    assert enc.compute_dtype == "fp32" and not any(isinstance(m, QLinear) for m in enc.modules())
    with pytest.raises(ValueError, match="one of"):
        bestrq2.load_encoder(micro_export, dtype="fp8")


def test_an_int8_encoder_is_not_saved(micro_export, tmp_path):
    enc = bestrq2.load_encoder(micro_export, dtype="int8")
    with pytest.raises(ValueError, match="int8 encoder cannot be saved"):
        save_encoder(enc, tmp_path / "out")
    with pytest.raises(ValueError, match="load it again"):
        precision.set_inference_dtype(enc, "fp32")
