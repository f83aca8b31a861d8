"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) over an exported encoder.

    from bestrq2 import hear
    model = hear.load_model("exports/tiny")                  # export folder (or run folder / checkpoint)
    emb, ts = hear.get_timestamp_embeddings(audio, model)   # audio [n_sounds, n_samples] at model.sample_rate
    scene = hear.get_scene_embeddings(audio, model)          # [n_sounds, scene_embedding_size]

Timestamp embeddings are the encoder's frames (one per ``hop_size_in_ms``), stamped at the centre of
the stretch of audio each one covers; the scene embedding is their mean over time, which is also the
clip feature of the X-ARES protocol. Every sound in a batch has the same length (the contract), so no
padding mask is needed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from bestrq2.export import load_encoder


class HearModel(nn.Module):
    """The encoder with the attributes HEAR asks for."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder.eval()
        self.sample_rate = int(encoder.sampling_rate)
        self.scene_embedding_size = int(encoder.output_dim)
        self.timestamp_embedding_size = int(encoder.output_dim)
        self.hop_size_in_ms = float(encoder.hop_size_in_ms)

    def forward(self, audio: Tensor) -> Tensor:
        return self.encoder(audio)


def load_model(model_file_path: str = "", device: str | torch.device | None = None) -> HearModel:
    """An exported bestrq2 encoder folder (or run folder / checkpoint) as a HEAR model, on ``device``
    (default: CUDA when available)."""
    if not model_file_path:
        raise ValueError("bestrq2.hear.load_model needs the path of an exported encoder (bestrq2 export RUN --out DIR)")
    if not Path(model_file_path).exists():
        raise FileNotFoundError(f"no bestrq2 model at {model_file_path}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return HearModel(load_encoder(model_file_path, device=device)).to(device)


def _check_audio(audio: Tensor, model: HearModel) -> Tensor:
    if not isinstance(audio, Tensor) or audio.ndim != 2:
        raise ValueError(f"HEAR audio must be a tensor [n_sounds, n_samples], got {getattr(audio, 'shape', type(audio))}")
    if audio.shape[1] == 0:
        raise ValueError("HEAR audio has no samples")
    if not torch.isfinite(audio).all():
        raise ValueError("HEAR audio holds NaN or infinite samples")
    return audio.to(next(model.parameters()).device, torch.float32)


@torch.no_grad()
def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """audio [n_sounds, n_samples] -> (embeddings [n_sounds, n_frames, D], timestamps [n_sounds, n_frames]
    in milliseconds, at the centre of each frame)."""
    audio = _check_audio(audio, model)
    emb = model(audio)  # [B, T', D]
    n = emb.shape[1]
    centres = (torch.arange(n, device=emb.device, dtype=torch.float32) + 0.5) * model.hop_size_in_ms
    return emb, centres.expand(emb.shape[0], n).contiguous()


@torch.no_grad()
def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """audio [n_sounds, n_samples] -> [n_sounds, scene_embedding_size]: the mean of the frames."""
    emb, _ = get_timestamp_embeddings(audio, model)
    return emb.mean(1)
