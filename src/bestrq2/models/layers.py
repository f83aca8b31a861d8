"""Transformer building blocks shared by the encoder and the predictor (pre-norm, SDPA)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bestrq2.models.positions import apply_rope

Rope = tuple[Tensor, Tensor] | None


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per example."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        # a comparison, not bernoulli_(keep): torch.compile would specialise on the float and make one
        # graph per drop rate (every block of the encoder has its own)
        mask = (torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) < keep).to(x.dtype)
        return x * mask / keep


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, rope: Rope = None) -> Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, H, L, hd]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, H, L, hd]
        return self.proj(x.transpose(1, 2).reshape(B, L, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: Callable[[], nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, rope: Rope = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask, rope))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def key_padding_mask(padding: Tensor | None) -> Tensor | None:
    """[B, L] bool (True = padding) -> SDPA boolean mask [B, 1, 1, L] (True = attend), or None.

    Callers pass None for a batch without padding, which they know on the host (``Masks.any_padding``):
    checking here would cost a device sync."""
    if padding is None:
        return None
    return (~padding)[:, None, None, :]


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform linears with zero bias, unit LayerNorms (as MAE / I-JEPA)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def no_weight_decay(name: str, param: Tensor) -> bool:
    """True for parameters that must not be decayed: norms, biases, tokens, positions."""
    return param.ndim <= 1 or name.endswith("token") or "pos" in name.split(".")[-1]


def drop_path_rates(rate: float, depth: int) -> list[float]:
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def run_blocks(
    blocks: nn.ModuleList, x: Tensor, padding: Tensor | None, rope: Rope, layers: set[int] | None = None
) -> tuple[Tensor, list[Tensor]]:
    """Run blocks in order; collect the outputs of the block indices in ``layers``."""
    attn_mask = key_padding_mask(padding)
    out: list[Tensor] = []
    for i, blk in enumerate(blocks):
        x = blk(x, attn_mask, rope)
        if layers is not None and i in layers:
            out.append(x)
    return x, out

