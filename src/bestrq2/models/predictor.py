"""Lightweight predictor: fills mask tokens in beside the encoder's visible tokens.

Encoder outputs are projected to the predictor width and keep their positions; every masked
position gets the learned mask token plus its own position. The sequence is simply
[visible; masked] (order is irrelevant to attention; positions say where each token is),
and the predictor returns its hidden states at the masked slots. The predictor is
dropped after pretraining.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bestrq2.config import PositionKind, PredictorConfig
from bestrq2.masking import Masks
from bestrq2.models.layers import (
    PLAIN,
    Block,
    BlockStyle,
    drop_path_rates,
    init_weights,
    make_norm,
    run_blocks,
)
from bestrq2.models.positions import gather_tokens, rope_2d, sincos_2d


class Predictor(nn.Module):
    def __init__(
        self, cfg: PredictorConfig, input_dim: int, positions: PositionKind = "sincos", style: BlockStyle = PLAIN
    ):
        super().__init__()
        self.cfg = cfg
        self.positions = positions
        self.input_proj = nn.Linear(input_dim, cfg.width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio, True, dp, style) for dp in drop_path_rates(cfg.drop_path, cfg.depth)
        )
        self.norm = make_norm(style.norm, cfg.width)
        init_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, context: Tensor, masks: Masks, grid: tuple[int, int]) -> Tensor:
        """context [B, K, D_enc] -> hidden states at the masked slots [B, M, width]."""
        B, K, _ = context.shape
        M = masks.ids_mask.shape[1]
        visible = self.input_proj(context)  # [B, K, W]
        queries = self.mask_token.expand(B, M, -1).to(visible.dtype)  # [B, M, W]
        ids = torch.cat([masks.ids_keep, masks.ids_mask], dim=1)  # [B, K + M]
        x = torch.cat([visible, queries], dim=1)  # [B, K + M, W]
        rope = None
        if self.positions == "sincos":
            x = x + gather_tokens(sincos_2d(grid, self.cfg.width, x.device), ids, B).to(x.dtype)
        else:
            cos, sin = rope_2d(grid, self.cfg.width // self.cfg.heads, x.device)
            rope = (gather_tokens(cos, ids, B), gather_tokens(sin, ids, B))
        padding = torch.cat([masks.keep_pad, masks.mask_pad], dim=1) if masks.any_padding else None  # [B, K + M]
        local = (
            local_attention_mask(masks, grid, self.cfg.neighbours, left_only=self.cfg.sides == "left")
            if self.cfg.neighbours
            else None
        )
        x, _ = run_blocks(self.blocks, x, padding, rope, attn_mask=local)
        return self.norm(x[:, K:])  # [B, M, W]


def local_attention_mask(masks: Masks, grid: tuple[int, int], n: int, left_only: bool = False) -> Tensor:
    """SDPA boolean mask [B, 1, K + M, K + M] (True = attend) of a local predictor over [visible; masked].

    A masked slot at time step t attends to itself and to the real visible tokens at the n nearest time
    steps before or at t that hold a visible token, and likewise at or after t; a visible slot attends to
    itself only, so that no layer can carry a visible token's content farther. Time steps are the token
    grid's columns (token id % time blocks), so 2-D grids work as full-band ones do. With ``left_only`` a
    masked slot reads only the steps at or before it, or, when none is, those after it. Every example keeps
    at least one real visible token (:func:`bestrq2.masking.sample_masks`), so every masked slot sees one."""
    ids_keep, ids_mask = masks.ids_keep, masks.ids_mask
    B, K = ids_keep.shape
    M = ids_mask.shape[1]
    tb = grid[1]
    device = ids_keep.device
    tk, tm = ids_keep % tb, ids_mask % tb  # [B, K], [B, M]
    real_k = ~masks.keep_pad  # [B, K]
    # which time steps hold a real visible token, and how many such steps lie at or before each step
    vis = torch.zeros(B, tb, dtype=torch.long, device=device).scatter_add_(1, tk, real_k.long()).clamp_(max=1)
    upto = vis.cumsum(1)  # [B, tb]: visible steps in [0, t]
    c_m = torch.gather(upto, 1, tm)[:, :, None]  # [B, M, 1]
    v_m = torch.gather(vis, 1, tm)[:, :, None]
    c_k = torch.gather(upto, 1, tk)[:, None, :]  # [B, 1, K]
    tm3, tk3 = tm[:, :, None], tk[:, None, :]
    left = (tk3 <= tm3) & (c_m - c_k < n)  # visible steps in (tk, tm] fewer than n
    right = (tk3 >= tm3) & (c_k - 1 - (c_m - v_m) < n)  # visible steps in [tm, tk) fewer than n
    if left_only:
        right = right & (c_m == 0)  # only slots with no visible step at or before them look right
    m2k = (left | right) & real_k[:, None, :]  # [B, M, K]
    eye = torch.eye(K + M, dtype=torch.bool, device=device).expand(B, -1, -1)
    allowed = eye.clone()
    allowed[:, K:, :K] = m2k
    return allowed[:, None]
