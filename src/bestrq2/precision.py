"""Cheaper arithmetic for inference: bf16 autocast or dynamic int8 linear layers in the encoder, the
log-mel frontend always in fp32.

``set_inference_dtype(encoder, "bf16" | "int8" | "fp32")`` changes a loaded encoder in place;
``bestrq2 export --dtype D`` records ``inference_dtype`` in config.json (the weights stay fp32) and
:func:`bestrq2.load_encoder` applies it. Where a backend is missing (no bf16 instructions on this CPU,
no quantized engine, int8 on a GPU) the encoder stays fp32 and a warning says why.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path

import torch
from torch import nn

DTYPES = ("fp32", "bf16", "int8")


def cpu_has_bf16() -> bool:
    """Native bf16 dot products on this CPU (AVX512-BF16 or AMX): otherwise bf16 is emulated, and slower."""
    if platform.system() != "Linux":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def int8_engine() -> str | None:
    """The quantized engine dynamic int8 linear layers run on, or None."""
    engines = torch.backends.quantized.supported_engines
    for e in ("x86", "fbgemm", "onednn", "qnnpack"):
        if e in engines:
            return e
    return None


def set_inference_dtype(encoder: nn.Module, dtype: str) -> nn.Module:
    """Run ``encoder`` (a BestRQ2Encoder or ConformerEncoder) at ``dtype``; returns it. fp32 after int8
    needs a fresh load (quantisation replaces the layers)."""
    if dtype not in DTYPES:
        raise ValueError(f"inference dtype must be one of {DTYPES}, got {dtype!r}")
    current = getattr(encoder, "compute_dtype", "fp32")
    if current == "int8" and dtype != "int8":
        raise ValueError("this encoder was quantised to int8: load it again for another dtype")
    device = next(encoder.parameters(), torch.empty(0)).device
    if dtype == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("bf16: this CPU has no native bf16 (AVX512-BF16 / AMX); staying in fp32", stacklevel=2)
        dtype = "fp32"
    if dtype == "int8":
        engine = int8_engine()
        if device.type != "cpu" or engine is None:
            why = "int8 dynamic quantisation runs on the CPU only" if device.type != "cpu" else "no quantized engine"
            warnings.warn(f"int8: {why}; staying in fp32", stacklevel=2)
            dtype = "fp32"
        elif current != "int8":
            torch.backends.quantized.engine = engine
            with warnings.catch_warnings():  # torch.ao's deprecation notices, once per layer
                warnings.simplefilter("ignore")
                from torch.ao.quantization import quantize_dynamic

                encoder.encoder = quantize_dynamic(encoder.encoder, {nn.Linear}, dtype=torch.qint8)
    if dtype == "bf16":
        # autocast leaves rms_norm alone, so it sees bf16 tokens with fp32 weights (or the reverse after
        # LayerScale) and takes its unfused path, correctly; torch warns about that on every call
        warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight", category=UserWarning)
    encoder.compute_dtype = dtype
    return encoder
