"""scripts/weights_transport.py: int8-row packing of an export through a size-limited channel, and back."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "weights_transport.py"
spec = importlib.util.spec_from_file_location("weights_transport", SCRIPT)
wt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wt)


def test_rows_round_trip_within_half_a_step():
    w = torch.randn(48, 3, 7) * torch.logspace(-3, 1, 48)[:, None, None]  # rows of very different scales
    q, scale = wt.quantize_rows(w)
    assert q.dtype == torch.int8 and scale.shape == (48,)
    err = (wt.dequantize_rows(q, scale) - w).abs()
    assert (err <= scale[:, None, None] / 2 + 1e-7).all()  # rounding error of one row's own step


def test_pack_split_unpack_and_check(micro_export: Path, tmp_path: Path):
    packed = tmp_path / "packed"
    wt.pack(micro_export, packed, max_file_mib=0.05)  # small parts: the split is exercised
    parts = sorted(packed.glob("weights-*.safetensors"))
    assert len(parts) >= 2
    original = load_file(str(micro_export / "model.safetensors"))
    quantized = [k for p in parts for k in load_file(str(p)) if k.endswith("::q")]
    assert quantized and all(k[: -len("::q")] in original for k in quantized)
    out = tmp_path / "rebuilt"
    wt.unpack(packed, out)
    rebuilt = load_file(str(out / "model.safetensors"))
    assert rebuilt.keys() == original.keys()
    for k, v in original.items():
        assert rebuilt[k].shape == v.shape and rebuilt[k].dtype == v.dtype
        rel = (rebuilt[k] - v).norm() / v.norm().clamp_min(1e-12)
        assert rel < 0.01, k
    assert "weights_transport" in json.loads((out / "config.json").read_text())
    res = wt.check(micro_export, packed, seconds=2.0)
    assert res["min_clip_cosine"] > 0.999 and res["relative_error"] < 0.02


def test_unpack_of_an_empty_folder_is_an_error(tmp_path: Path):
    with pytest.raises(SystemExit, match="no weights"):
        wt.unpack(tmp_path, tmp_path / "out")
