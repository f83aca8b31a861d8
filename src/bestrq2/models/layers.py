"""Transformer building blocks shared by the encoder and the predictor (pre-norm, SDPA)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
        self.active = p > 0  # the forward reads this bool, never the float
        # torch.compile guards on a module's float attributes, so a float rate would give one graph per
        # block (each block has its own rate) and hit the recompile limit (8) in a 12-block encoder,
        # leaving the later blocks uncompiled; the rate as a tensor is data, one graph serves them all
        self.register_buffer("keep", torch.tensor(1.0 - p), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.active and self.training):
            return x
        mask = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) < self.keep
        return x * mask.to(x.dtype) / self.keep.to(x.dtype)


NORMS = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}


def make_norm(kind: str, dim: int) -> nn.Module:
    """'layernorm' (centre and scale, with bias) or 'rmsnorm' (scale only)."""
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose from {sorted(NORMS)}")
    return NORMS[kind](dim)


class Attention(nn.Module):
    """Multi-head self-attention (SDPA); ``qk_norm`` RMS-normalises each head's queries and keys
    (learned scale) before the dot product, which bounds the attention logits."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, qk_norm: bool = False):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(dim // heads) if qk_norm else None
        self.k_norm = nn.RMSNorm(dim // heads) if qk_norm else None

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, rope: Rope = None) -> Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, H, L, hd]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
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


def swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    """SwiGLU hidden width with the parameters of a GELU MLP of ``mlp_ratio``: 2/3 of its hidden width,
    rounded up to a multiple of 8."""
    return -(-int(2 * dim * mlp_ratio / 3) // 8) * 8


class SwiGLU(nn.Module):
    """fc2(silu(fc1_gate(x)) * fc1_value(x)), the gate and value computed by one fused Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * value)


@dataclass(frozen=True)
class BlockStyle:
    """How a transformer block is built (shared by the encoder and the predictor)."""

    norm: str = "layernorm"
    """'layernorm' or 'rmsnorm'."""
    mlp: str = "gelu"
    """'gelu' (Linear-GELU-Linear) or 'swiglu' (same parameter count)."""
    qk_norm: bool = False
    layer_scale: float = 0.0
    """Initial value of a learned per-channel scale on each residual branch (LayerScale); small values
    start every block near the identity. 0: no scale."""


PLAIN = BlockStyle()
"""The reference block: LayerNorm, GELU MLP, no QK-norm, no LayerScale."""


class Block(nn.Module):
    """Pre-norm transformer block: x + g1 * attn(norm(x)), then x + g2 * mlp(norm(x)); ``mlp_ratio=0``
    leaves the MLP out (an attention-only block)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        style: BlockStyle = PLAIN,
    ):
        super().__init__()
        self.norm1 = make_norm(style.norm, dim)
        self.attn = Attention(dim, heads, qkv_bias, style.qk_norm)
        self.norm2 = make_norm(style.norm, dim) if mlp_ratio > 0 else None
        if mlp_ratio <= 0:
            self.mlp = None  # an attention-only block
        elif style.mlp == "swiglu":
            self.mlp = SwiGLU(dim, swiglu_hidden(dim, mlp_ratio))
        elif style.mlp == "gelu":
            self.mlp = Mlp(dim, int(dim * mlp_ratio))
        else:
            raise ValueError(f"unknown mlp {style.mlp!r}; choose 'gelu' or 'swiglu'")
        self.drop_path = DropPath(drop_path)
        scale = style.layer_scale
        self.gamma1 = nn.Parameter(torch.full((dim,), scale)) if scale > 0 else None
        self.gamma2 = nn.Parameter(torch.full((dim,), scale)) if scale > 0 and self.mlp is not None else None

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, rope: Rope = None) -> Tensor:
        a = self.attn(self.norm1(x), attn_mask, rope)
        x = x + self.drop_path(a if self.gamma1 is None else a * self.gamma1)
        if self.mlp is None:
            return x
        m = self.mlp(self.norm2(x))
        return x + self.drop_path(m if self.gamma2 is None else m * self.gamma2)


def key_padding_mask(padding: Tensor | None) -> Tensor | None:
    """[B, L] bool (True = padding) -> SDPA boolean mask [B, 1, 1, L] (True = attend), or None.

    Callers pass None for a batch without padding, which they know on the host (``Masks.any_padding``):
    checking here would cost a device sync."""
    if padding is None:
        return None
    return (~padding)[:, None, None, :]


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform linears with zero bias, unit norms (as MAE / I-JEPA); LayerScale keeps its value."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.RMSNorm):
            nn.init.ones_(m.weight)


def no_weight_decay(name: str, param: Tensor) -> bool:
    """True for parameters that must not be decayed: norms, biases, tokens, positions."""
    return param.ndim <= 1 or name.endswith("token") or "pos" in name.split(".")[-1]


def drop_path_rates(rate: float, depth: int) -> list[float]:
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def run_blocks(
    blocks: nn.ModuleList,
    x: Tensor,
    padding: Tensor | None,
    rope: Rope,
    layers: set[int] | None = None,
    attn_mask: Tensor | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """Run blocks in order; collect the outputs of the block indices in ``layers``.

    ``attn_mask`` (SDPA boolean, True = attend) replaces the key-padding mask built from ``padding``;
    the caller folds padding into it."""
    if attn_mask is None:
        attn_mask = key_padding_mask(padding)
    out: list[Tensor] = []
    for i, blk in enumerate(blocks):
        x = blk(x, attn_mask, rope)
        if layers is not None and i in layers:
            out.append(x)
    return x, out

