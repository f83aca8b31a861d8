"""Export a run to a self-describing encoder folder, and load it back.

An export folder holds ``config.json`` (frontend + encoder config and provenance) and
``model.safetensors`` with the frontend buffers and encoder weights only: no predictor,
heads or quantizer. ``load_encoder`` rebuilds the module from that folder alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bestrq2 import __version__
from bestrq2.checkpoint import checkpoint_path, load_checkpoint
from bestrq2.config import Config, EncoderConfig, FrontendConfig, _from_dict
from bestrq2.inference import BestRQ2Encoder

FORMAT = "bestrq2-encoder"


def encoder_state_from_training(model_state: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Pick the inference encoder's tensors out of a training objective's state dict."""
    keep = ("frontend.", "encoder.")
    return {k: v for k, v in model_state.items() if k.startswith(keep)}


def build_from_checkpoint(ckpt: dict[str, Any], pooling: str = "mean") -> tuple[BestRQ2Encoder, Config]:
    cfg = Config.from_dict(ckpt["config"])
    enc = BestRQ2Encoder(cfg.frontend, cfg.encoder, pooling)
    enc.load_state_dict(encoder_state_from_training(ckpt["model"], cfg), strict=True)
    return enc, cfg


def export(run: str | Path, out: str | Path, pooling: str = "mean") -> Path:
    """Write ``out/config.json`` and ``out/model.safetensors`` from a run folder or checkpoint file.

    ``pooling`` says how the exported encoder pools the tokens of a time step over frequency."""
    ckpt = load_checkpoint(run)
    enc, cfg = build_from_checkpoint(ckpt, pooling)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "arch": "vit",
        "bestrq2_version": __version__,
        "method": cfg.method,
        "preset": cfg.preset,
        "step": int(ckpt["step"]),
        "sampling_rate": enc.sampling_rate,
        "output_dim": enc.output_dim,
        "pooling": enc.pooling,
        "hop_size_in_ms": enc.hop_size_in_ms,
        "frontend": cfg.to_dict()["frontend"],
        "encoder": cfg.to_dict()["encoder"],
    }
    state = {k: v.detach().contiguous() for k, v in enc.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": FORMAT})
    (out / "config.json").write_text(json.dumps(meta, indent=2))
    return out


def load_encoder(path: str | Path, device: str | torch.device = "cpu", pooling: str | None = None) -> BestRQ2Encoder:
    """Load an exported encoder folder (or, for convenience, a run folder / checkpoint file).

    ``pooling`` overrides the export's frequency pooling ('mean' or 'concat')."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        meta = json.loads((path / "config.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path / 'config.json'} is not a {FORMAT} export (format={meta.get('format')!r})")
        frontend = _from_dict(FrontendConfig, meta["frontend"])
        encoder_cfg = _from_dict(EncoderConfig, meta["encoder"])
        enc = BestRQ2Encoder(frontend, encoder_cfg, pooling or meta.get("pooling", "mean"))
        enc.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    elif path.is_file() or checkpoint_path(path).is_file():
        enc, _ = build_from_checkpoint(load_checkpoint(path), pooling or "mean")
    else:
        raise FileNotFoundError(f"{path} is neither an export folder (config.json + model.safetensors) nor a run")
    return enc.to(device).eval()
