"""Frame-based Conformer encoder (the BEST-RQ paper's encoder), for the one-step baseline.

    normalised log-mel [B, F, T] -> convolutional subsampling (stride-2 Conv2d + ReLU, x log2(subsample))
    -> Linear(channels * F / subsample -> D)                                         [B, T / subsample, D]
    -> Conformer blocks: x + 1/2 FF(x); x + MHSA(x); x + Conv(x); x + 1/2 FF(x); LayerNorm
    -> LayerNorm                                                                      [B, T', D]

Self-attention uses rotary positions over the frame index (relative, like the Conformer's relative
positional encoding, and valid for any length). The convolution module is pointwise conv + GLU,
depthwise conv, LayerNorm (instead of BatchNorm: no batch statistics, padding-safe), SiLU, pointwise
conv. Padding frames are ignored as attention keys and zeroed before the depthwise convolution, so a
clip gives the same output alone or zero-padded in a batch.
"""

from __future__ import annotations

import dataclasses
import math

from torch import Tensor, nn

from bestrq2.config import ConformerConfig, EncoderConfig, FrontendConfig
from bestrq2.models.layers import Attention, DropPath, Mlp, drop_path_rates, init_weights, key_padding_mask
from bestrq2.models.positions import rope_2d


def frame_frontend(fe: FrontendConfig, conformer: ConformerConfig) -> FrontendConfig:
    """The frontend seen as frames: one "patch" = all mel bands x ``subsample`` frames (4 x 128 = 512
    values, mel-major), so the shared Frontend yields the stacked frames of every output frame, their
    padding, and ``hop_size_in_ms`` = subsample x hop (156.25 ms by default)."""
    return dataclasses.replace(fe, patch_freq=fe.n_mels, patch_time=conformer.subsample)


class ConvSubsampling(nn.Module):
    """[B, F, T] -> [B, T / s, D] with log2(s) stride-2 3x3 convolutions over (mel, time)."""

    def __init__(self, n_mels: int, subsample: int, channels: int, width: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, f = 1, n_mels
        for _ in range(int(math.log2(subsample))):
            layers += [nn.Conv2d(c_in, channels, 3, stride=2, padding=1), nn.ReLU()]
            c_in, f = channels, (f + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(channels * f, width)

    def forward(self, mel: Tensor) -> Tensor:
        x = self.conv(mel[:, None])  # [B, C, F', T']
        B, C, Fq, T = x.shape
        return self.out(x.permute(0, 3, 1, 2).reshape(B, T, C * Fq))  # [B, T', D]


class ConvModule(nn.Module):
    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pointwise1 = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.conv_norm = nn.LayerNorm(dim)
        self.act = nn.SiLU()
        self.pointwise2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor, padding: Tensor | None) -> Tensor:
        h = nn.functional.glu(self.pointwise1(self.norm(x)), dim=-1)  # [B, T, D]
        if padding is not None:
            h = h.masked_fill(padding[..., None], 0.0)
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)  # [B, T, D]
        return self.pointwise2(self.act(self.conv_norm(h)))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, nn.SiLU)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.norm(x))


class ConformerBlock(nn.Module):
    """Macaron block: half-step FF, self-attention, convolution, half-step FF, final LayerNorm."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, kernel: int, qkv_bias: bool, drop_path: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.ff1 = FeedForward(dim, hidden)
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias)
        self.conv = ConvModule(dim, kernel)
        self.ff2 = FeedForward(dim, hidden)
        self.norm = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: Tensor, attn_mask: Tensor | None, rope: tuple[Tensor, Tensor], padding: Tensor | None
    ) -> Tensor:
        x = x + 0.5 * self.drop_path(self.ff1(x))
        x = x + self.drop_path(self.attn(self.norm_attn(x), attn_mask, rope))
        x = x + self.drop_path(self.conv(x, padding))
        x = x + 0.5 * self.drop_path(self.ff2(x))
        return self.norm(x)


class Conformer(nn.Module):
    always_mask = False
    """Pass the padding mask even when nothing is padded (no data-dependent branch: set for ONNX export)."""

    def __init__(self, cfg: EncoderConfig, conformer: ConformerConfig, n_mels: int):
        super().__init__()
        self.cfg, self.conformer_cfg = cfg, conformer
        self.width = cfg.width
        self.subsampling = ConvSubsampling(n_mels, conformer.subsample, conformer.subsample_channels, cfg.width)
        self.blocks = nn.ModuleList(
            ConformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio, conformer.conv_kernel, cfg.qkv_bias, dp)
            for dp in drop_path_rates(cfg.drop_path, cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        init_weights(self)

    def forward(self, mel: Tensor, padding: Tensor | None = None) -> Tensor:
        """mel [B, F, T] normalised log-mel, T a multiple of ``subsample``; padding [B, T'] -> [B, T', D]."""
        x = self.subsampling(mel)  # [B, T', D]
        B, T, _ = x.shape
        cos, sin = rope_2d((1, T), self.width // self.cfg.heads, x.device)  # [T', hd]: rotates with time
        rope = (cos[None].expand(B, -1, -1), sin[None].expand(B, -1, -1))
        if padding is not None and not self.always_mask and not bool(padding.any()):
            padding = None
        attn_mask = key_padding_mask(padding)
        for blk in self.blocks:
            x = blk(x, attn_mask, rope, padding)
        return self.norm(x)
