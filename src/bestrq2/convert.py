"""Convert the authors' checkpoints (their Lightning ``.ckpt`` or the tensor-only ``.safetensors`` their
callback writes beside it) to a bestrq2 export folder that :func:`bestrq2.load_encoder` reads.

Their layout (no prefix on the LightningModule's attributes): ``patch_embed.patch_embed.proj`` is a
Conv2d(1, D, (pf, pt), stride (pf, pt)) on the [B, 1, n_mels, frames] dB spectrogram, tokens
row-major over (mel block, time block); the ViT (``encoder.`` for BEST-RQ-2 and BEST-RQ ViT;
``student.`` / ``teacher.`` for Audio-JEPA) holds ``pos_embed`` (timm's 2-D sin-cos table, channels
[sin f, sin t, cos f, cos t]), pre-norm blocks ``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2,
mlp.fc1, mlp.fc2}`` (LayerNorm eps 1e-5, exact GELU) and a final ``norm``. Their frontend is torchaudio
``MelSpectrogram(normalized=True)`` (HTK mels, no filter normalisation, centred reflect-padded frames)
and ``AmplitudeToDB``: 10 log10(max(P / sum(window^2), 1e-10)), with no mean/std normalisation. A
converted export reproduces it with ``norm_mean = 10 log10(sum(window^2))`` (28.85 dB for a 2048 Hann
window), ``norm_std = 1`` and the floor moved by the same offset, and takes the checkpoint's own
mel filterbank and window.

Where the converted encoder departs from theirs, on purpose: their ViT adds ``pos_embed[:, :N]`` for
N < 128 tokens (the positions of the first rows of a 10 s grid, wrong for any shorter input) and no
positions at all for N > 128; ours computes the table for the real grid, so 10 s chunks give their
frames and shorter inputs get the right positions.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from bestrq2.config import EncoderConfig, FrontendConfig
from bestrq2.frontend import mel_filterbank
from bestrq2.inference import BestRQ2Encoder
from bestrq2.models.positions import sincos_2d

PATCH_EMBED = "patch_embed.patch_embed.proj"
FB = "spectrogram.mel_spec.mel_scale.fb"
WINDOW = "spectrogram.mel_spec.spectrogram.window"
# the key that tells each of the authors' methods apart, and where its encoders live
SIGNATURES = {"bestrq2": "rq_proj.weight", "bestrq-vit": "output_proj.weight", "audiojepa": "student.norm.weight"}
ENCODERS = {"bestrq2": {"encoder": "encoder."}, "bestrq-vit": {"encoder": "encoder."},
            "audiojepa": {"student": "student.", "teacher": "teacher."}}  # fmt: skip
DEFAULT_ENCODER = {"bestrq2": "encoder", "bestrq-vit": "encoder", "audiojepa": "student"}  # as their X-ARES wrapper


class ConversionError(ValueError):
    """The source is not a checkpoint this converter understands; the message names the key."""


def read_state(src: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors of a ``.safetensors`` file or of a Lightning ``.ckpt``'s ``state_dict`` (loaded with
    ``weights_only=True``: nothing but tensors and plain containers is unpickled), and extras (step)."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such checkpoint file")
    if src.suffix == ".safetensors":
        return load_file(str(src)), {}
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(
            f"{src}: the checkpoint holds Python objects besides tensors ({first}); bestrq2 does not unpickle "
            f"them. Convert the tensor-only {src.with_suffix('.safetensors').name} the authors' training writes "
            "beside each .ckpt instead"
        ) from e
    if not isinstance(ckpt, dict):
        raise ConversionError(f"{src}: expected a dict (a Lightning checkpoint or a state dict), got {type(ckpt).__name__}")
    if {"config", "model", "step"} <= set(ckpt) and "state_dict" not in ckpt:
        raise ConversionError(f"{src} is a bestrq2 training checkpoint, not one of the authors': use `bestrq2 export`")
    state = ckpt.get("state_dict", ckpt)
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ConversionError(f"{src}: no tensors found (keys: {sorted(state)[:8]})")
    return tensors, {"step": ckpt.get("global_step")}


def detect_method(state: dict[str, Tensor]) -> str:
    found = [m for m, key in SIGNATURES.items() if key in state]
    if PATCH_EMBED + ".weight" not in state or len(found) != 1:
        raise ConversionError(
            "not a checkpoint of the authors' BEST-RQ-2, BEST-RQ ViT or Audio-JEPA: expected "
            f"'{PATCH_EMBED}.weight' and one of {sorted(SIGNATURES.values())}; found keys such as "
            f"{sorted(state)[:6]}"
        )
    return found[0]


def _get(state: dict[str, Tensor], key: str, shape: tuple[int, ...] | None = None) -> Tensor:
    if key not in state:
        raise ConversionError(f"missing key {key!r}")
    t = state[key]
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ConversionError(f"key {key!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    return t


def infer_configs(
    state: dict[str, Tensor], prefix: str, *, heads: int | None = None, sample_rate: int = 16000,
    hop_length: int = 625, f_min: float = 0.0, f_max: float = 8000.0, chunk_seconds: float = 10.0,
) -> tuple[FrontendConfig, EncoderConfig]:  # fmt: skip
    """The frontend and encoder configs of a checkpoint, from its tensors' shapes (what the shapes cannot
    tell, the sample rate, hop and band edges, comes from the arguments: the authors' defaults)."""
    if any("rope.inv_freq" in k for k in state if k.startswith(prefix)):
        raise ConversionError(f"{prefix}rope.inv_freq_*: rotary-position checkpoints are not supported (their "
                              "rotation rates differ from bestrq2's); sin-cos ones are")  # fmt: skip
    pe = _get(state, PATCH_EMBED + ".weight")
    if pe.dim() != 4 or pe.shape[1] != 1:
        raise ConversionError(f"key {PATCH_EMBED + '.weight'!r} has shape {tuple(pe.shape)}, expected [D, 1, pf, pt]")
    width, _, pf, pt = pe.shape
    fb = state.get(FB)
    n_fft, n_mels = (2 * (fb.shape[0] - 1), fb.shape[1]) if fb is not None else (2048, 128)
    depth = 0
    while f"{prefix}blocks.{depth}.norm1.weight" in state:
        depth += 1
    if depth == 0:
        raise ConversionError(f"missing key {prefix + 'blocks.0.norm1.weight'!r} (no transformer blocks under {prefix!r})")
    fc1 = _get(state, f"{prefix}blocks.0.mlp.fc1.weight")
    heads = heads or max(1, width // 64)  # head dim 64 in every published size (ViT-B 768/12, ViT-L 1024/16)
    if width % heads:
        raise ConversionError(f"width {width} is not divisible by heads={heads}: pass --heads")
    frontend = FrontendConfig(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max,
        patch_freq=pf, patch_time=pt, pad_mode="reflect", chunk_seconds=chunk_seconds,
        norm_mean=db_offset(n_fft), norm_std=1.0, db_floor=-100.0 + db_offset(n_fft),
    )  # fmt: skip
    encoder = EncoderConfig(
        width=width, depth=depth, heads=heads, mlp_ratio=fc1.shape[0] / width, drop_path=0.0,
        qkv_bias=f"{prefix}blocks.0.attn.qkv.bias" in state, positions="sincos", sincos_layout="timm",
    )  # fmt: skip
    frontend.validate()
    encoder.validate()
    return frontend, encoder


def db_offset(n_fft: int) -> float:
    """dB between an un-normalised power spectrum and torchaudio's ``normalized=True`` one (Hann window)."""
    return 10.0 * math.log10(float(torch.hann_window(n_fft, periodic=True, dtype=torch.float64).square().sum()))


def _check_frontend(state: dict[str, Tensor], frontend: FrontendConfig) -> None:
    if FB in state:
        ours = mel_filterbank(frontend.sample_rate, frontend.n_fft, frontend.n_mels, frontend.f_min, frontend.f_max)
        diff = float((state[FB].double() - ours).abs().max())
        if diff > 1e-4:
            raise ConversionError(
                f"key {FB!r} is not an HTK mel filterbank for {frontend.sample_rate} Hz, {frontend.f_min:g}-"
                f"{frontend.f_max:g} Hz (max difference {diff:.2g}): pass the checkpoint's --sample-rate / --f-min / --f-max"
            )


def _check_positions(state: dict[str, Tensor], prefix: str, frontend: FrontendConfig, width: int) -> None:
    key = prefix + "pos_embed"
    stored = _get(state, key)
    if stored.dim() != 3 or stored.shape[0] != 1 or stored.shape[2] != width or stored.shape[1] % frontend.freq_patches:
        raise ConversionError(f"key {key!r} has shape {tuple(stored.shape)}, expected [1, N, {width}] over "
                              f"{frontend.freq_patches} mel blocks")  # fmt: skip
    grid = (frontend.freq_patches, stored.shape[1] // frontend.freq_patches)
    diff = float((stored[0].float() - sincos_2d(grid, width, layout="timm")).abs().max())
    if diff > 1e-4:
        raise ConversionError(f"key {key!r} is not the 2-D sin-cos table of a {grid[0]} x {grid[1]} grid "
                              f"(max difference {diff:.2g}; learned positions are not supported)")  # fmt: skip


def convert(
    src: str | Path, out: str | Path, *, method: str | None = None, encoder: str | None = None,
    heads: int | None = None, pooling: str = "mean", sample_rate: int = 16000, hop_length: int = 625,
    f_min: float = 0.0, f_max: float = 8000.0, chunk_seconds: float = 10.0,
) -> Path:  # fmt: skip
    """Write a bestrq2 export of the authors' checkpoint ``src`` to ``out``.

    ``method`` is detected from the keys (``bestrq2``, ``bestrq-vit``, ``audiojepa``); ``encoder`` picks
    Audio-JEPA's ``student`` (default, what their X-ARES wrapper embeds with) or ``teacher``."""
    from bestrq2.export import save_encoder
    from bestrq2.hub import write_card

    state, extra = read_state(src)
    method = method or detect_method(state)
    if method not in ENCODERS:
        raise ConversionError(f"method must be one of {sorted(ENCODERS)}, got {method!r}")
    which = encoder or DEFAULT_ENCODER[method]
    if which not in ENCODERS[method]:
        raise ConversionError(f"{method} checkpoints hold the encoders {sorted(ENCODERS[method])}, not {which!r}")
    prefix = ENCODERS[method][which]
    frontend, enc_cfg = infer_configs(state, prefix, heads=heads, sample_rate=sample_rate, hop_length=hop_length,
                                      f_min=f_min, f_max=f_max, chunk_seconds=chunk_seconds)  # fmt: skip
    _check_frontend(state, frontend)
    _check_positions(state, prefix, frontend, enc_cfg.width)

    model = BestRQ2Encoder(frontend, enc_cfg, pooling)
    target = model.state_dict()
    new: dict[str, Tensor] = {}
    used = {prefix + "pos_embed"}
    for key, like in target.items():
        if key == "encoder.patch_embed.weight":
            src_key, value = PATCH_EMBED + ".weight", _get(state, PATCH_EMBED + ".weight").reshape(like.shape[0], -1)
        elif key == "encoder.patch_embed.bias":
            src_key = PATCH_EMBED + ".bias"
            value = _get(state, src_key)
        elif key == "frontend.logmel.mel_fb":
            src_key, value = FB, state.get(FB, like)
        elif key == "frontend.logmel.window":
            src_key, value = WINDOW, state.get(WINDOW, like)
        else:
            src_key = prefix + key[len("encoder.") :]
            value = _get(state, src_key)
        if tuple(value.shape) != tuple(like.shape):
            raise ConversionError(f"key {src_key!r} has shape {tuple(value.shape)}, expected {tuple(like.shape)}")
        new[key] = value.to(like.dtype).clone()
        used.add(src_key)
    left = sorted(k for k in state if k.startswith(prefix) and k not in used)
    if left:  # e.g. LayerScale or QK-norm weights: converting without them would give other frames
        raise ConversionError(f"keys this converter does not know under {prefix!r}: {left[:6]}")
    model.load_state_dict(new, strict=True)
    provenance = {"method": method, "preset": "converted", "step": extra.get("step"),
                  "exported_encoder": which, "converted_from": Path(src).name}  # fmt: skip
    out = save_encoder(model.eval(), out, provenance)
    write_card(out)
    return out
