"""Export a run to a self-describing encoder folder, and load it back.

An export folder holds ``config.json`` (frontend + encoder config and provenance) and
``model.safetensors`` with the frontend buffers and encoder weights only: no predictor,
heads or quantizer. ``load_encoder`` rebuilds the module from that folder alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bestrq2 import __version__
from bestrq2.config import Config, ConformerConfig, EncoderConfig, FrontendConfig, _from_dict
from bestrq2.hub import write_card
from bestrq2.inference import BestRQ2Encoder, ConformerEncoder
from bestrq2.training.checkpoint import checkpoint_path, load_checkpoint, readable_as_umask

FORMAT = "bestrq2-encoder"
ARCHS = ("vit", "conformer")


def arch_of(cfg: Config) -> str:
    """'conformer' for frame-based methods, 'vit' otherwise."""
    from bestrq2.objectives import FRAME_METHODS

    return "conformer" if cfg.method in FRAME_METHODS else "vit"


def inference_encoder(
    arch: str, frontend: FrontendConfig, encoder: EncoderConfig, conformer: ConformerConfig | None, pooling: str
) -> BestRQ2Encoder | ConformerEncoder:
    """The inference module of an architecture (pooling applies to the ViT only)."""
    if arch == "conformer":
        return ConformerEncoder(frontend, encoder, conformer or ConformerConfig())
    if arch != "vit":
        raise ValueError(f"unknown encoder arch {arch!r}; expected one of {ARCHS}")
    return BestRQ2Encoder(frontend, encoder, pooling)


def encoder_state_from_training(
    model_state: dict[str, torch.Tensor], cfg: Config, which: str | None = None
) -> dict[str, torch.Tensor]:
    """Pick the inference encoder's tensors out of a training objective's state dict.

    ``which``: for audiojepa 'target' or 'context' (default ``cfg.jepa.export_encoder``); for the other
    methods 'ema' (the weight average, default when the run kept one) or 'online'."""
    if cfg.method == "audiojepa":
        which = which or cfg.jepa.export_encoder
        if which not in ("target", "context"):
            raise ValueError(f"audiojepa exports its 'target' or 'context' encoder, not {which!r}")
        source = "target_encoder." if which == "target" else "encoder."
    else:
        has_ema = any(k.startswith("ema.encoder.") for k in model_state)
        which = which or ("ema" if has_ema else "online")
        if which not in ("ema", "online"):
            raise ValueError(f"{cfg.method} exports its 'ema' or 'online' encoder, not {which!r}")
        if which == "ema" and not has_ema:
            raise ValueError("this run kept no weight average (optim.ema_decay was 0): export 'online'")
        source = "ema.encoder." if which == "ema" else "encoder."
    out = {k: v for k, v in model_state.items() if k.startswith("frontend.")}
    out.update({"encoder." + k[len(source) :]: v for k, v in model_state.items() if k.startswith(source)})
    return out


def exported_weights(model_state: dict[str, torch.Tensor], cfg: Config, which: str | None) -> str:
    """Which encoder an export of this state takes (see :func:`encoder_state_from_training`)."""
    if cfg.method == "audiojepa":
        return which or cfg.jepa.export_encoder
    return which or ("ema" if any(k.startswith("ema.encoder.") for k in model_state) else "online")


def build_from_checkpoint(
    ckpt: dict[str, Any], pooling: str = "mean", which: str | None = None
) -> tuple[BestRQ2Encoder | ConformerEncoder, Config]:
    cfg = Config.from_dict(ckpt["config"])
    enc = inference_encoder(arch_of(cfg), cfg.frontend, cfg.encoder, cfg.conformer, pooling)
    enc.load_state_dict(encoder_state_from_training(ckpt["model"], cfg, which), strict=True)
    return enc, cfg


def export(
    run: str | Path, out: str | Path, pooling: str = "mean", which: str | None = None,
    chunk_seconds: float | str | None = None, onnx: bool = False, dtype: str = "fp32", blocks: int | None = None,
) -> Path:  # fmt: skip
    """Write ``out/config.json`` and ``out/model.safetensors`` from a run folder or checkpoint file.

    ``pooling`` says how the exported ViT pools the tokens of a time step over frequency (a Conformer
    has no frequency axis); ``which`` picks audiojepa's target (default) or context encoder;
    ``chunk_seconds`` sets the inference chunk (default: the run's ``frontend.chunk_seconds``; 'crop':
    the training crop, so the encoder never sees a longer sequence than in pretraining); ``onnx`` also
    writes ``out/model.onnx`` (waveform [B, T] + lengths [B] -> frames [B, T', D], frontend included;
    see :mod:`bestrq2.onnx_export`); ``dtype`` ('fp32', 'bf16', 'int8') is recorded as the export's
    ``inference_dtype``, which :func:`load_encoder` applies (weights stay fp32; see :mod:`bestrq2.precision`);
    ``blocks`` keeps the ViT's first ``blocks`` blocks and its final norm (see :func:`truncate_blocks`)."""
    from bestrq2.precision import DTYPES

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if onnx:
        from bestrq2.onnx_export import require_onnx

        require_onnx()  # before anything is written
    ckpt = load_checkpoint(run)
    if chunk_seconds is not None:
        ckpt = dict(ckpt, config=_with_chunk(ckpt["config"], chunk_seconds))
    enc, cfg = build_from_checkpoint(ckpt, pooling, which)
    meta = {  # provenance; encoder_meta adds what rebuilds the module
        "method": cfg.method,
        "preset": cfg.preset,
        "step": int(ckpt["step"]),
        "exported_encoder": exported_weights(ckpt["model"], cfg, which),
        "inference_dtype": dtype,
    }
    if blocks is not None:
        meta["trained_depth"] = cfg.encoder.depth
        enc = truncate_blocks(enc, blocks)
    out = save_encoder(enc, out, meta, onnx=onnx)
    write_card(out)  # README.md: the hub layout's model card
    return out


def truncate_blocks(enc: BestRQ2Encoder | ConformerEncoder, blocks: int) -> BestRQ2Encoder:
    """Keep the first ``blocks`` transformer blocks of a ViT encoder, then its final norm: a smaller plain
    ViT whose output is block ``blocks``'s, normed. In a two-step model the last blocks work for the predictor
    and the best features often sit lower (``bestrq2 diagnose`` scores every block)."""
    if not isinstance(enc, BestRQ2Encoder):
        raise ValueError("--blocks applies to ViT encoders only")
    depth = len(enc.encoder.blocks)
    if not 1 <= blocks <= depth:
        raise ValueError(f"blocks must be between 1 and the encoder's depth {depth}, got {blocks}")
    cfg = replace(enc.encoder_cfg, depth=blocks)
    enc.encoder_cfg = enc.encoder.cfg = cfg
    enc.encoder.blocks = enc.encoder.blocks[:blocks]
    return enc


def encoder_meta(enc: BestRQ2Encoder | ConformerEncoder, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """config.json of an export: everything :func:`load_encoder` needs to rebuild ``enc``, plus provenance
    (method, preset, step, ...) kept from ``provenance``."""
    meta = {"format": FORMAT, "bestrq2_version": __version__} | dict(provenance or {})
    meta |= {
        "arch": "conformer" if isinstance(enc, ConformerEncoder) else "vit",
        "sampling_rate": enc.sampling_rate,
        "output_dim": enc.output_dim,
        "pooling": enc.pooling,
        "hop_size_in_ms": enc.hop_size_in_ms,
        "frontend": asdict(enc.frontend_cfg),
        "encoder": asdict(enc.encoder_cfg),
    }
    if isinstance(enc, ConformerEncoder):
        meta["conformer"] = asdict(enc.conformer_cfg)
    meta.pop("onnx", None)  # a copied export's entry: save_encoder writes it again with model.onnx
    return meta


def save_encoder(
    enc: BestRQ2Encoder | ConformerEncoder, out: str | Path, provenance: dict[str, Any] | None = None, onnx: bool = False
) -> Path:
    """Write ``enc`` as an export folder: ``config.json`` + ``model.safetensors`` (+ ``model.onnx``)."""
    if getattr(enc, "compute_dtype", "fp32") == "int8":
        raise ValueError("an int8 encoder cannot be saved: save the fp32 one with inference_dtype='int8' in its provenance")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = encoder_meta(enc, provenance)
    state = {k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": FORMAT})
    readable_as_umask(out / "model.safetensors")
    if onnx:
        from bestrq2.onnx_export import OPSET, export_onnx

        export_onnx(enc, out / "model.onnx")
        meta["onnx"] = {
            "file": "model.onnx", "opset": OPSET, "inputs": {"wav": "float32 [B, T]", "lengths": "int64 [B]"},
            "outputs": {"frames": f"float32 [B, ceil(T / {enc.frontend_cfg.samples_per_token}), {enc.output_dim}]"},
        }  # fmt: skip
    (out / "config.json").write_text(json.dumps(meta, indent=2))
    enc.export_meta = meta
    return out


def _with_chunk(config: dict[str, Any], chunk_seconds: float | str) -> dict[str, Any]:
    cfg = Config.from_dict(config)
    cfg.frontend.chunk_seconds = cfg.data.crop_seconds if chunk_seconds == "crop" else float(chunk_seconds)
    return cfg.validate().to_dict()


def load_encoder(
    path: str | Path, device: str | torch.device = "cpu", pooling: str | None = None, revision: str | None = None,
    dtype: str | None = None,
) -> BestRQ2Encoder | ConformerEncoder:
    """Load an exported encoder folder, a Hugging Face hub id (``"org/name"``, through the HF cache; see
    :mod:`bestrq2.hub`), or, for convenience, a run folder / checkpoint file.

    ``pooling`` overrides the export's frequency pooling ('mean' or 'concat'); ``revision`` picks a hub
    branch, tag or commit; ``dtype`` ('fp32', 'bf16', 'int8') overrides the export's ``inference_dtype``."""
    from bestrq2.hub import resolve
    from bestrq2.precision import set_inference_dtype

    path = resolve(path, revision=revision)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        meta = json.loads((path / "config.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path / 'config.json'} is not a {FORMAT} export (format={meta.get('format')!r})")
        frontend = _from_dict(FrontendConfig, meta["frontend"])
        encoder_cfg = _from_dict(EncoderConfig, meta["encoder"])
        conformer = _from_dict(ConformerConfig, meta["conformer"]) if "conformer" in meta else None
        arch = meta.get("arch", "vit")
        enc = inference_encoder(arch, frontend, encoder_cfg, conformer, pooling or meta.get("pooling", "mean"))
        enc.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
        enc.export_meta = meta
    elif path.is_file() or checkpoint_path(path).is_file():
        enc, _ = build_from_checkpoint(load_checkpoint(path), pooling or "mean")
    else:
        raise FileNotFoundError(f"{path} is neither an export folder (config.json + model.safetensors) nor a run")
    enc = enc.to(device).eval()
    return set_inference_dtype(enc, dtype or getattr(enc, "export_meta", {}).get("inference_dtype", "fp32"))
