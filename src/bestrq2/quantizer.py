"""Frozen random-projection quantizer (BEST-RQ targets).

code = argmax_k cos(normalise(x) P, c_k): a Xavier-uniform projection P [in, d] and a codebook
of N(0, 1) rows, L2-normalised, both seeded buffers that are saved with the checkpoint and
never trained. The input normalisation matters: raw dB patches are large and negative, so
x P is dominated by the patch mean and few codes are used (see benchmarks/README.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bestrq2.config import FrontendConfig, QuantizerConfig


class RandomProjectionQuantizer(nn.Module):
    def __init__(self, cfg: QuantizerConfig, input_dim: int, frontend: FrontendConfig):
        super().__init__()
        self.cfg = cfg
        self.input_dim = input_dim
        self.global_mean, self.global_std = frontend.norm_mean, frontend.norm_std
        g = torch.Generator().manual_seed(cfg.seed)
        C, d, V = cfg.num_codebooks, cfg.code_dim, cfg.codebook_size
        bound = math.sqrt(6.0 / (input_dim + d))  # Xavier uniform
        proj = (torch.rand(C, input_dim, d, generator=g) * 2 - 1) * bound
        codebook = F.normalize(torch.randn(C, V, d, generator=g), dim=-1)
        self.register_buffer("projection", proj, persistent=True)  # [C, in, d]
        self.register_buffer("codebook", codebook, persistent=True)  # [C, V, d]

    def normalise(self, x: Tensor, norm: str | None = None) -> Tensor:
        norm = norm or self.cfg.norm
        if norm == "patch":
            return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-5)
        if norm == "global":
            return (x - self.global_mean) / self.global_std
        return x

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """[..., input_dim] -> codes [..., num_codebooks] (long); codebook c sees its own normalisation."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            norms = self.cfg.norms
            if len(set(norms)) == 1:
                z = torch.einsum("...i,cid->...cd", self.normalise(x, norms[0]), self.projection)  # [..., C, d]
            else:
                cached: dict[str, Tensor] = {}
                xs = torch.stack([cached.setdefault(n, self.normalise(x, n)) for n in norms], dim=-2)  # [..., C, in]
                z = torch.einsum("...ci,cid->...cd", xs, self.projection)
            z = F.normalize(z, dim=-1)
            sim = torch.einsum("...cd,cvd->...cv", z, self.codebook)  # [..., C, V]
            return sim.argmax(-1)


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
