"""Adapters for the XARES-LLM benchmark, whose encoder contract differs from X-ARES's.

XARES-LLM calls ``encoder(audio[B, T], audio_attention_mask[B, T] | None)`` and expects
``(features[B, T', D], mask[B, T'] | None)`` with 1 = keep, plus an ``output_dim`` attribute.
:class:`XaresLLMEncoder` passes the real lengths (from the mask) to the encoder, so a clip gives
the same frames alone or zero-padded in a batch, and returns the frame mask. Run it with

    python -m xares_llm.run bestrq2.evaluation.adapters.XaresLLMEncoder TRAIN_CONFIG EVAL_CONFIGS \\
        --model_args '{"model_dir": "path/to/export"}'

(or set BESTRQ2_MODEL_DIR and leave out --model_args). For X-ARES itself see examples/xares_encoder.py.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from bestrq2.export import load_encoder

MODEL_DIR_ENV = "BESTRQ2_MODEL_DIR"


def model_dir_from_env(model_dir: str | Path | None = None) -> Path:
    """``model_dir`` if given, else $BESTRQ2_MODEL_DIR; fails with a clear message when neither is set."""
    model_dir = model_dir or os.environ.get(MODEL_DIR_ENV)
    if not model_dir:
        raise ValueError(f"set {MODEL_DIR_ENV} to a bestrq2 export folder (config.json + model.safetensors)")
    return Path(model_dir)


class XaresLLMEncoder(nn.Module):
    """A bestrq2 export as an XARES-LLM audio encoder (16 kHz mono float input)."""

    def __init__(self, model_dir: str | Path | None = None, layer: int | None = None, device: str = "cpu"):
        super().__init__()
        self.encoder = load_encoder(model_dir_from_env(model_dir), device)
        self.layer = layer
        self.sampling_rate = self.encoder.sampling_rate
        self.output_dim = self.encoder.output_dim
        self.hop_size_in_ms = self.encoder.hop_size_in_ms

    def forward(self, audio: Tensor, audio_attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """audio [B, T], audio_attention_mask [B, T] (1 = real sample) -> features [B, T', D], mask [B, T'] long."""
        if audio.dim() == 1:
            audio = audio[None]
        B, T = audio.shape
        if audio_attention_mask is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=audio.device)
        else:
            lengths = audio_attention_mask.to(audio.device).long().sum(-1)  # [B]
        feats = self.encoder(audio.float(), lengths, layer=self.layer)  # [B, T', D]
        n_out = self.encoder.output_lengths(lengths)  # [B]
        mask = torch.arange(feats.shape[1], device=audio.device)[None] < n_out[:, None]  # [B, T']
        return feats, mask.long()


def check_xares_llm_encoder(encoder: nn.Module) -> None:
    """The XARES-LLM contract, checked the way its runner does; raises ValueError on a violation."""
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"expected an nn.Module, got {type(encoder).__name__}")
    if not hasattr(encoder, "output_dim"):
        raise ValueError("the encoder needs an output_dim attribute")
    if next(encoder.parameters(), None) is None:
        raise ValueError("the encoder needs at least one parameter")
    positional = [
        p
        for p in inspect.signature(encoder.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if len(positional) < 2:
        raise ValueError("forward must accept (audio, audio_attention_mask)")
    audio = torch.randn(3, 50000)
    with torch.inference_mode():
        out = encoder(audio, None)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError("forward must return (features, mask)")
    feats, mask = out
    if not isinstance(feats, Tensor) or feats.dim() != 3 or feats.shape[0] != 3:
        raise ValueError(f"features must be [B, T', D], got {getattr(feats, 'shape', type(feats))}")
    if feats.shape[2] != encoder.output_dim:
        raise ValueError(f"features have D={feats.shape[2]}, output_dim says {encoder.output_dim}")
    if mask is not None and (not isinstance(mask, Tensor) or mask.shape != feats.shape[:2]):
        raise ValueError(f"mask must be [B, T'] like the features, got {getattr(mask, 'shape', type(mask))}")
