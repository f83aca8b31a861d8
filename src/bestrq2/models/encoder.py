"""ViT context encoder over log-mel patches (16x16 in the reference; any shape, full-band included).

One contract for every use:
  pretraining  ``encoder(patches, grid, ids=ids_keep, padding=keep_pad)`` -> visible tokens only
  inference    ``encoder(patches, grid, padding=padding)``                 -> all tokens
  features     ``encoder.forward_intermediates(..., layers=[...])``        -> also block outputs
Masked tokens are dropped before the first block (as MAE), not replaced.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bestrq2.config import EncoderConfig
from bestrq2.models.layers import Block, BlockStyle, drop_path_rates, init_weights, make_norm, run_blocks
from bestrq2.models.positions import gather_tokens, rope_2d, sincos_2d


def block_style(cfg: EncoderConfig) -> BlockStyle:
    """The block options of an encoder config (the predictor's blocks use the same)."""
    return BlockStyle(cfg.norm, cfg.mlp, cfg.qk_norm, cfg.layer_scale)


class ViTEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, patch_dim: int):
        super().__init__()
        self.cfg = cfg
        self.width = cfg.width
        self.patch_embed = nn.Linear(patch_dim, cfg.width)  # == Conv2d(1, D, 16, stride 16) on (mel, time)
        style = block_style(cfg)
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.qkv_bias, dp, style)
            for dp in drop_path_rates(cfg.drop_path, cfg.depth)
        )
        self.norm = make_norm(cfg.norm, cfg.width)
        init_weights(self)
        self.patch_embed.requires_grad_(not cfg.freeze_patch_embed)  # frozen: left out of the optimiser

    def forward(
        self, patches: Tensor, grid: tuple[int, int], ids: Tensor | None = None, padding: Tensor | None = None
    ) -> Tensor:
        """patches [B, N, P]; ids [B, K] visible token indices (None: all); padding [B, K or N]."""
        return self.forward_intermediates(patches, grid, ids, padding)[0]

    def embed(
        self, patches: Tensor, grid: tuple[int, int], ids: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Patch embedding plus positions: tokens [B, L, D] before the first block, and the rotary
        tables the blocks need (None with additive positions)."""
        B = patches.shape[0]
        if ids is not None:
            patches = torch.gather(patches, 1, ids[..., None].expand(-1, -1, patches.shape[-1]))  # [B, K, P]
        x = self.patch_embed(patches)  # [B, L, D]
        rope = None
        if self.cfg.positions == "sincos":
            x = x + gather_tokens(sincos_2d(grid, self.width, x.device, self.cfg.sincos_layout), ids, B).to(x.dtype)
        else:
            cos, sin = rope_2d(grid, self.width // self.cfg.heads, x.device)  # [N, hd]
            rope = (gather_tokens(cos, ids, B), gather_tokens(sin, ids, B))
        return x, rope

    def forward_intermediates(
        self,
        patches: Tensor,
        grid: tuple[int, int],
        ids: Tensor | None = None,
        padding: Tensor | None = None,
        layers: Sequence[int] | None = None,
        self_only: bool = False,
    ) -> tuple[Tensor, list[Tensor]]:
        """Final normed tokens [B, L, D] and the raw outputs of blocks ``layers`` (0-based; -1 = last).

        ``self_only``: every token attends to itself only (positions unchanged), so each is encoded without
        context; the context diagnosis compares this with the usual pass."""
        x, rope = self.embed(patches, grid, ids)
        wanted = None if layers is None else {i % len(self.blocks) for i in layers}
        x, inter = run_blocks(self.blocks, x, padding, rope, wanted, _self_mask(x) if self_only else None)
        return self.norm(x), inter

    def all_layers(
        self, patches: Tensor, grid: tuple[int, int], padding: Tensor | None = None, self_only: bool = False
    ) -> list[Tensor]:
        """Every representation in one pass: [patch embedding + positions, block 1 .. block L outputs,
        final normed tokens], each [B, N, D]."""
        x, rope = self.embed(patches, grid)
        layers = set(range(len(self.blocks)))
        _, inter = run_blocks(self.blocks, x, padding, rope, layers, _self_mask(x) if self_only else None)
        return [x, *inter, self.norm(inter[-1])]


def _self_mask(x: Tensor) -> Tensor:
    """SDPA boolean mask [1, 1, L, L] letting each of the L tokens of ``x`` [B, L, D] attend to itself only."""
    return torch.eye(x.shape[1], dtype=torch.bool, device=x.device)[None, None]
