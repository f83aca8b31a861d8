"""Floors for every result table: log-mel statistics, random features of the patches, the principal
components of the patches, a random-init encoder.

All three follow the encoder contract of ``bestrq2.inference.BestRQ2Encoder``:
``forward(wav[B, T], lengths=None) -> [B, T', D]``, ``output_lengths``, ``sampling_rate``,
``output_dim`` and ``hop_size_in_ms``, so the evaluator (and X-ARES) treat them like any model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bestrq2.config import ConformerConfig, EncoderConfig, FrontendConfig
from bestrq2.frontend import Frontend, LogMel, token_lengths


class LogMelStatsEncoder(nn.Module):
    """Mean and standard deviation of each (normalised) log-mel band over every token window.

    One output frame per ``samples_per_token`` (the encoders' hop, 625 ms by default): D = 2 * n_mels.
    Mel frames whose centre lies past a clip's end are left out, so padding changes nothing.
    """

    def __init__(self, frontend: FrontendConfig | None = None):
        super().__init__()
        self.cfg = frontend or FrontendConfig()
        self.logmel = LogMel(self.cfg)
        self.sampling_rate = self.cfg.sample_rate
        self.output_dim = 2 * self.cfg.n_mels
        self.hop_size_in_ms = self.cfg.hop_size_in_ms

    def output_lengths(self, lengths: Tensor) -> Tensor:
        spt = self.cfg.samples_per_token
        return torch.div(lengths + spt - 1, spt, rounding_mode="floor").clamp(min=1)

    def forward(self, wav: Tensor, lengths: Tensor | None = None, layer: int | None = None) -> Tensor:
        cfg = self.cfg
        if wav.dim() == 1:
            wav = wav[None]
        B, T = wav.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=wav.device)
        n_out = cfg.time_patches(T)
        n_frames = n_out * cfg.patch_time
        mel = (self.logmel(wav) - cfg.norm_mean) / cfg.norm_std  # [B, F, frames]
        mel = mel[..., :n_frames]
        mel = F.pad(mel, (0, n_frames - mel.shape[-1]))
        valid = (
            torch.arange(n_frames, device=wav.device)[None] * cfg.hop_length < lengths[:, None]
        )  # [B, frames]
        mel = mel.reshape(B, cfg.n_mels, n_out, cfg.patch_time)  # [B, F, T', pt]
        w = valid.reshape(B, 1, n_out, cfg.patch_time).to(mel.dtype)  # [B, 1, T', pt]
        count = w.sum(-1).clamp(min=1.0)  # [B, 1, T']
        mean = (mel * w).sum(-1) / count  # [B, F, T']
        var = ((mel - mean[..., None]).square() * w).sum(-1) / count
        feats = torch.cat([mean, var.sqrt()], dim=1)  # [B, 2F, T']
        return feats.transpose(1, 2).contiguous()  # [B, T', 2F]


class _PatchMapEncoder(nn.Module):
    """A fixed map of each token's normalised full-band log-mel patch (one output frame per token):
    subclasses set ``output_dim`` and define :meth:`map_patches`."""

    def __init__(self, frontend: FrontendConfig | None, what: str):
        super().__init__()
        self.cfg = frontend or FrontendConfig(patch_freq=128, patch_time=4)
        if self.cfg.freq_patches != 1:
            raise ValueError(f"{what} need full-band patches (patch_freq = n_mels)")
        self.frontend = Frontend(self.cfg)
        self.sampling_rate = self.cfg.sample_rate
        self.hop_size_in_ms = self.cfg.hop_size_in_ms

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return token_lengths(self.cfg, lengths)

    def map_patches(self, patches: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, wav: Tensor, lengths: Tensor | None = None, layer: int | None = None) -> Tensor:
        if wav.dim() == 1:
            wav = wav[None]
        return self.map_patches(self.frontend(wav, lengths)["patches"])  # [B, T', P] -> [B, T', output_dim]


class RandomPatchFeaturesEncoder(_PatchMapEncoder):
    """Random features of each token's log-mel patch: ReLU(W p + b), nothing trained.

    ``p`` is the encoder's normalised patch (full-band 128 mels x 4 frames by default, one output frame
    per 156.25 ms), or ``window`` consecutive patches side by side (steps past the clip's end read as
    the normalised mean, 0). W [window * patch, dim] ~ N(0, 1 / fan_in) and b ~ N(0, 1/4) come from
    ``seed`` (the global RNG is left alone). A one-hidden-layer random network sees no context beyond
    its window, so an encoder that does not beat it has learned no more than a nonlinear map of the
    patch (results/recipe/README.md, stop 25). The probe reads wide features faster, so compare at the
    same ``dim`` when the protocol's short probe is the measure.
    """

    def __init__(
        self, frontend: FrontendConfig | None = None, dim: int = 2048, seed: int = 0, window: int = 1
    ):
        if dim < 1 or window < 1:
            raise ValueError(f"random features need dim >= 1 and window >= 1, got dim={dim}, window={window}")
        super().__init__(frontend, "random patch features")
        self.window = window
        fan_in = window * self.cfg.patch_freq * self.cfg.patch_time
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(fan_in, dim, generator=g) / fan_in**0.5)
        self.register_buffer("bias", torch.randn(dim, generator=g) * 0.5)
        self.output_dim = dim

    def map_patches(self, patches: Tensor) -> Tensor:
        if self.window > 1:  # past the end the patches read 0
            ahead = F.pad(patches, (0, 0, 0, self.window - 1))  # [B, T' + w - 1, P]
            T = patches.shape[1]
            patches = torch.cat([ahead[:, i : i + T] for i in range(self.window)], dim=-1)  # [B, T', w * P]
        return torch.relu(patches @ self.weight + self.bias)  # [B, T', dim]


class PatchPCAEncoder(_PatchMapEncoder):
    """The top ``dim`` principal components of each token's normalised log-mel patch: a linear map, fitted
    without labels on ``crops`` seeded 5 s crops of a pretraining corpus (a folder or manifest).

    The best ``dim``-dimensional linear map of the patch in the least-squares sense, so it measures
    how much of a pretrained encoder's gain a linear patch map alone can give: an encoder whose gain
    over random init is no larger than this one's learned the patch's principal subspace and no more
    (results/recipe/README.md, stop 29). Full-band patches only, as for the random features.
    """

    def __init__(self, data: str | Path, frontend: FrontendConfig | None = None, dim: int = 192, crops: int = 256):
        from bestrq2.data.audio import AudioError, load_audio
        from bestrq2.data.files import list_audio

        super().__init__(frontend, "patch principal components")
        if not 1 <= dim <= self.cfg.patch_dim:
            raise ValueError(f"patch PCA: dim must be between 1 and the patch size {self.cfg.patch_dim}, got {dim}")
        files = list_audio(data)
        if not files:
            raise ValueError(f"patch PCA: no audio under {data}")
        sr, crop = self.cfg.sample_rate, 5 * self.cfg.sample_rate
        rng = np.random.default_rng(0)
        rows, self.skipped = [], 0
        for i in rng.choice(len(files), crops, replace=len(files) < crops):
            try:
                wav = torch.from_numpy(load_audio(files[i], sr, crop, rng))[None]
            except AudioError:  # unreadable or silent: skipped and counted, as the training loader does
                self.skipped += 1
                continue
            feats = self.frontend(wav, torch.tensor([wav.shape[1]]))
            rows.append(feats["patches"][0][~feats["padding"][0]])  # the crop's real tokens
        if not rows:
            raise ValueError(f"patch PCA: none of the {crops} crops drawn from {data} could be read")
        x = torch.cat(rows).double()  # [n, P]
        mean = x.mean(0)
        _, vectors = torch.linalg.eigh(torch.cov((x - mean).T))  # ascending eigenvalues
        self.register_buffer("mean", mean.float())
        self.register_buffer("components", vectors[:, -dim:].flip(-1).float())  # [P, dim], largest first
        self.output_dim = dim

    def map_patches(self, patches: Tensor) -> Tensor:
        return (patches - self.mean) @ self.components


def random_encoder(
    frontend: FrontendConfig,
    encoder: EncoderConfig,
    seed: int = 0,
    pooling: str = "mean",
    arch: str = "vit",
    conformer: ConformerConfig | None = None,
) -> nn.Module:
    """A freshly initialised encoder (the same for the same configs and seed); global RNG untouched.
    ``arch`` 'vit' (a :class:`BestRQ2Encoder`) or 'conformer' (a ConformerEncoder, no pooling)."""
    from bestrq2.export import inference_encoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return inference_encoder(arch, frontend, encoder, conformer, pooling).eval()
