"""Frozen random-projection quantizer (BEST-RQ targets).

code = argmax_k cos(normalise(x) P, c_k): a Xavier-uniform projection P [in, d] and a codebook
of N(0, 1) rows, L2-normalised, both seeded buffers that are saved with the checkpoint and
never trained. The input normalisation matters: raw dB patches are large and negative, so
x P is dominated by the patch mean and few codes are used (see benchmarks/README.md).

The 'clip' normalisation needs each patch's clip mean (:func:`clip_mean`), passed beside the patches.

With a teacher (``quantizer.teacher``, :class:`bestrq2.models.teacher.FrozenTeacher`) the quantised input
of each token is the teacher's feature of it instead of its raw patch (:meth:`inputs`).

With ``lifter`` > 0 every frame of the patch is smoothed along the mel axis first (its first cepstral
coefficients kept): the codes then follow the spectral envelope, not the harmonics of the pitch.

With ``bands`` > 1 each patch (mel-major, [patch_freq, patch_time]) is cut into equal mel bands and
every band is normalised and quantised on its own: target ``b * num_codebooks + c`` is codebook ``c``
of band ``b``, with its own projection [in / bands, d] and codebook.

With ``centroids`` (a file from ``bestrq2 codebooks``, :mod:`bestrq2.training.codebooks`) the random projection and codes
give way to k-means centroids of the same prepared inputs, fitted on the pretraining audio: a token's code is its
nearest centroid, so codes follow where the inputs lie (HuBERT's targets) rather than random hyperplanes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bestrq2.config import ConfigError, FrontendConfig, QuantizerConfig


class RandomProjectionQuantizer(nn.Module):
    def __init__(self, cfg: QuantizerConfig, input_dim: int, frontend: FrontendConfig, teacher: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.teacher = teacher  # frozen; None: the raw patches are quantised
        self.patch_shape = (input_dim // frontend.patch_time, frontend.patch_time)  # (mels, frames) of one patch
        input_dim = teacher.width if teacher is not None else input_dim * cfg.window
        self.input_dim = input_dim
        self.global_mean, self.global_std = frontend.norm_mean, frontend.norm_std
        if input_dim % cfg.bands:
            raise ValueError(f"quantizer.bands={cfg.bands} does not divide the quantised input's size {input_dim}")
        g = torch.Generator().manual_seed(cfg.seed)
        T, d, V = cfg.num_targets, cfg.code_dim, cfg.codebook_size
        band_dim = input_dim // cfg.bands
        if cfg.centroids:  # fitted codebooks: nearest centroid of the prepared input, no projection
            self.register_buffer("projection", None)
            self.register_buffer("codebook", load_centroids(cfg.centroids, cfg, (T, V, band_dim)), persistent=True)
        else:
            bound = math.sqrt(6.0 / (band_dim + d))  # Xavier uniform
            proj = (torch.rand(T, band_dim, d, generator=g) * 2 - 1) * bound
            codebook = F.normalize(torch.randn(T, V, d, generator=g), dim=-1)
            self.register_buffer("projection", proj, persistent=True)  # [T, in / bands, d]
            self.register_buffer("codebook", codebook, persistent=True)  # [T, V, d]
        for keep in sorted(set(cfg.lifters) - {0}):
            if keep > self.patch_shape[0]:
                raise ValueError(f"quantizer lifter {keep} exceeds the patch's {self.patch_shape[0]} mels")
            self.register_buffer(f"lifter{keep}", lifter_matrix(self.patch_shape[0], keep), persistent=False)

    @property
    def needs_clip_mean(self) -> bool:
        return "clip" in self.cfg.norms

    def normalise(self, x: Tensor, norm: str | None = None, mean: Tensor | None = None) -> Tensor:
        norm = norm or self.cfg.norm
        if norm == "clip":
            if mean is None:
                raise ValueError("quantizer norm 'clip' needs each patch's clip mean (bestrq2.quantizer.clip_mean)")
            return self.normalise(x - mean, "patch")
        if norm == "patch":
            return standardise(x)
        if norm == "global":
            return (x - self.global_mean) / self.global_std
        return x

    def inputs(self, feats: dict) -> Tensor:
        """What is quantised at every token of a frontend output [B, N, input_dim]: the raw dB patches, their
        time windows, or the teacher's features of the clean normalised patches (the encoder's input may be
        mixed); those computed once per clip by :meth:`with_inputs` when ``feats`` holds them."""
        if "quantizer_inputs" in feats:
            return feats["quantizer_inputs"]
        if self.teacher is None:
            return feats["raw"] if self.cfg.window == 1 else self.windows(feats["raw"], feats["grid"])
        clean = (feats["raw"] - self.global_mean) / self.global_std
        return self.teacher(clean, feats["grid"], feats["padding"])

    def smooth(self, x: Tensor, keep: int) -> Tensor:
        """Patches or windows [..., P] (mel-major) with every frame's mel spectrum rebuilt from its first ``keep``
        cepstral coefficients (``quantizer.lifter``); 0: unchanged."""
        if not keep:
            return x
        x = x.unflatten(-1, (self.patch_shape[0], -1))  # [..., mels, frames]
        return torch.einsum("mn,...nt->...mt", getattr(self, f"lifter{keep}"), x).flatten(-2)

    def windows(self, raw: Tensor, grid: tuple[int, int]) -> Tensor:
        """Raw patches [B, N, P] (row-major over (mel block, time block)) -> [B, N, window * P]: each patch
        with its time neighbours, as one patch of ``window`` x the frames, mel-major. Past either end of
        the clip the neighbours read the frontend's padding value (the normalisation mean, in dB)."""
        w, (fb, tb), (pf, pt) = self.cfg.window, grid, self.patch_shape
        B = raw.shape[0]
        x = raw.reshape(B, fb, tb, pf, pt).permute(0, 1, 3, 2, 4).reshape(B, fb, pf, tb * pt)  # [B, Fb, pf, frames]
        half = (w - 1) // 2 * pt
        x = F.pad(x, (half, half), value=self.global_mean)
        x = x.unfold(-1, w * pt, pt)  # [B, Fb, pf, tb, w * pt]: step one patch, width w patches
        return x.permute(0, 1, 3, 2, 4).reshape(B, fb * tb, pf * w * pt)

    def with_inputs(self, feats: dict) -> dict:
        """``feats`` with the quantised inputs added when they are more than the raw patches (a teacher's
        features, windows), so that they are computed once per clip and tiled with the rest by ``mask.repeats``."""
        if self.teacher is None and self.cfg.window == 1:
            return feats
        return {**feats, "quantizer_inputs": self.inputs(feats)}

    def frontend_inputs(self, feats: dict) -> Tensor:
        """What every target of every token of a frontend output sees, [B, N, T, input_dim / bands] (each
        token with its clip's mean for the 'clip' norm): what ``bestrq2 codebooks`` clusters."""
        x = self.inputs(feats)
        return self.prepare(x, clip_mean(x, feats["padding"]).expand_as(x) if self.needs_clip_mean else None)

    def frontend_codes(self, feats: dict) -> Tensor:
        """Codes [B, N, C] of every token of a frontend output."""
        return self.assign(self.frontend_inputs(feats))

    @torch.no_grad()
    def prepare(self, x: Tensor, mean: Tensor | None = None) -> Tensor:
        """[..., input_dim] -> [..., T, input_dim / bands] float32: each target's band of the input with its
        codebook's lifter and normalisation. ``mean`` [..., input_dim]: each patch's clip mean ('clip' norm only)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            bands, inputs = self.cfg.bands, list(zip(self.cfg.lifters, self.cfg.norms))  # per codebook
            x, mean = x.float(), None if mean is None else mean.float()

            def prepared(keep: int, norm: str) -> Tensor:  # [..., bands, in / bands]
                split = (bands, self.input_dim // bands)
                m = None if mean is None else self.smooth(mean, keep).unflatten(-1, split)
                return self.normalise(self.smooth(x, keep).unflatten(-1, split), norm, m)

            cached: dict[tuple[int, str], Tensor] = {}
            for i in inputs:  # each distinct (lifter, norm) once
                if i not in cached:
                    cached[i] = prepared(*i)
            return torch.stack([cached[i] for i in inputs], dim=-2).flatten(-3, -2)  # [..., bands * C, in / bands], band-major

    @torch.no_grad()
    def assign(self, xs: Tensor) -> Tensor:
        """Prepared inputs [..., T, in / bands] -> codes [..., T]: the nearest random code (cosine) of the
        projected input, or with fitted centroids (``quantizer.centroids``) the nearest centroid (Euclidean)."""
        with torch.autocast(device_type=xs.device.type, enabled=False):
            if self.projection is None:
                sq = (self.codebook**2).sum(-1)  # [T, V]
                return (torch.einsum("...ti,tvi->...tv", xs, self.codebook) - 0.5 * sq).argmax(-1)
            z = F.normalize(torch.einsum("...ti,tid->...td", xs, self.projection), dim=-1)  # [..., T, d]
            return torch.einsum("...td,tvd->...tv", z, self.codebook).argmax(-1)  # [..., T, V] -> [..., T]

    def forward(self, x: Tensor, mean: Tensor | None = None) -> Tensor:
        """[..., input_dim] -> codes [..., bands * num_codebooks] (long); codebook c sees its own
        lifter and normalisation, of its band only. ``mean`` [..., input_dim]: each patch's clip mean (the 'clip'
        norm only)."""
        return self.assign(self.prepare(x, mean))


def standardise(x: Tensor) -> Tensor:
    """Each vector of the last axis to zero mean and unit variance over its own values (the 'patch' norm)."""
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-5)


def lifter_matrix(mels: int, keep: int) -> Tensor:
    """[mels, mels]: the projection of a mel spectrum onto its first ``keep`` orthonormal DCT-II bases (the
    spectrum rebuilt from its first ``keep`` cepstral coefficients, c0 included, so the level stays)."""
    m = torch.arange(mels, dtype=torch.float64)
    k = torch.arange(keep, dtype=torch.float64)[:, None]
    dct = torch.cos(math.pi * k * (m + 0.5) / mels) * math.sqrt(2.0 / mels)  # [keep, mels]
    dct[0] /= math.sqrt(2.0)
    return (dct.T @ dct).float()


def clip_mean(x: Tensor, padding: Tensor | None) -> Tensor:
    """x [B, N, P] tokens (patches or features), padding [B, N] (None: none) -> [B, 1, P] each clip's mean
    over its real tokens."""
    if padding is None:
        return x.mean(1, keepdim=True)
    real = (~padding).to(x.dtype)[..., None]  # [B, N, 1]
    return (x * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp_min(1.0)


def code_usage(codes: Tensor, codebook_size: int, valid: Tensor | None = None) -> dict[str, float]:
    """Codes used and perplexity (exp of the entropy of the code histogram), averaged over codebooks.

    Args:
      codes: [..., C] long; valid: [...] bool selecting which entries count.
    """
    flat = codes.reshape(-1, codes.shape[-1])
    if valid is not None:
        flat = flat[valid.reshape(-1)]
    if flat.numel() == 0:
        return {"codes_used": 0.0, "perplexity": 0.0}
    used, ppl = [], []
    for c in range(flat.shape[1]):
        hist = torch.bincount(flat[:, c], minlength=codebook_size).double()
        p = hist / hist.sum()
        used.append(float((hist > 0).sum()))
        ent = -(p[p > 0] * p[p > 0].log()).sum()
        ppl.append(float(ent.exp()))
    return {"codes_used": sum(used) / len(used), "perplexity": sum(ppl) / len(ppl)}


# --------------------------------------------------------------------------- fitted codebooks (quantizer.centroids)


INPUT_FIELDS = ("bands", "num_codebooks", "codebook_size", "lifters", "norms", "window", "teacher_layer")
"""The quantizer fields that define what a fitted codebook's centroids live in."""


def input_signature(q: QuantizerConfig) -> dict:
    """What a codebook's inputs are: the fields of :data:`INPUT_FIELDS` and whether a teacher's features are
    quantised (the teacher's path is recorded for reference, not compared: folders move)."""
    sig = {f: list(v) if isinstance(v := getattr(q, f), tuple) else v for f in INPUT_FIELDS}
    return sig | {"teacher": bool(q.teacher)}


def save_centroids(path: str | Path, centroids: Tensor, q: QuantizerConfig, info: dict) -> None:
    from safetensors.torch import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    meta = {"input": json.dumps(input_signature(q)), "teacher": q.teacher, "fit": json.dumps(info)}
    save_file({"centroids": centroids.contiguous()}, str(path), metadata=meta)


def load_centroids(path: str | Path, q: QuantizerConfig, shape: tuple[int, int, int]) -> Tensor:
    """The centroids of a ``bestrq2 codebooks`` file, checked against the quantizer that reads them."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise ConfigError(f"quantizer.centroids: no codebook file at {path} (fit one with `bestrq2 codebooks`)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        centroids = f.get_tensor("centroids")
    fitted = json.loads(meta.get("input", "{}"))
    differ = sorted(k for k, v in input_signature(q).items() if fitted.get(k) != v)
    if differ:
        raise ConfigError(
            f"quantizer.centroids: {path} was fitted on other inputs ({', '.join(differ)} differ: "
            + ", ".join(f"{k}={fitted.get(k)!r}" for k in differ)
            + ")"
        )
    if tuple(centroids.shape) != shape:
        raise ConfigError(f"quantizer.centroids: {path} holds {tuple(centroids.shape)} centroids, expected {shape}")
    return centroids.float()
