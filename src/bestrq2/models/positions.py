"""Positions over the (mel block, time block) token grid, computed for any grid (1-D over time when
the grid has a single frequency row, as with full-band patches).

Positions depend on the absolute (freq, time) index only, so a 5 s clip's tokens get the
same positions as the first half of a 10 s clip (the reference takes them from a fixed
10 s table, which is wrong for any other length).
"""

from __future__ import annotations

import torch
from torch import Tensor


def grid_coords(grid: tuple[int, int], device: torch.device | str | None = None) -> Tensor:
    """[N, 2] float (freq index, time index) for tokens numbered row-major over (freq, time)."""
    fb, tb = grid
    f = torch.arange(fb, device=device, dtype=torch.float32)
    t = torch.arange(tb, device=device, dtype=torch.float32)
    ff, tt = torch.meshgrid(f, t, indexing="ij")  # [fb, tb]
    return torch.stack([ff.reshape(-1), tt.reshape(-1)], dim=-1)


def _sincos_1d(pos: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """[...] positions -> [..., dim]: half sines, half cosines."""
    omega = 1.0 / base ** (torch.arange(dim // 2, device=pos.device, dtype=torch.float32) / (dim / 2))
    angles = pos[..., None].float() * omega  # [..., dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d(grid: tuple[int, int], dim: int, device: torch.device | str | None = None, layout: str = "axes") -> Tensor:
    """Fixed sin-cos embedding [N, dim]: first half encodes frequency, second half time ('axes':
    [sin f, cos f, sin t, cos t]; 'timm': [sin f, sin t, cos f, cos t], timm's order, as in the authors'
    checkpoints); with one frequency row (full-band patches) all of ``dim`` encodes time (1-D)."""
    coords = grid_coords(grid, device)  # [N, 2]
    if grid[0] == 1:
        return _sincos_1d(coords[:, 1], dim)
    f, t = _sincos_1d(coords[:, 0], dim // 2), _sincos_1d(coords[:, 1], dim // 2)  # [N, dim / 2] each: sin | cos
    if layout == "timm":
        q = dim // 4
        return torch.cat([f[:, :q], t[:, :q], f[:, q:], t[:, q:]], dim=-1)
    return torch.cat([f, t], dim=-1)


def rope_2d(grid: tuple[int, int], head_dim: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Rotary tables (cos, sin), each [N, head_dim]: the first half of each head rotates with the
    frequency index, the second half with the time index. With one frequency row (full-band patches)
    both halves rotate with time, at head_dim / 2 distinct rates (1-D RoPE)."""
    coords = grid_coords(grid, device)  # [N, 2]
    quarter = head_dim // 4
    if grid[0] == 1:
        theta = 1.0 / 100.0 ** (torch.arange(2 * quarter, device=coords.device, dtype=torch.float32) / (2 * quarter))
        thetas, axes = (theta[:quarter], theta[quarter:]), (1, 1)
    else:
        theta = 1.0 / 100.0 ** (torch.arange(quarter, device=coords.device, dtype=torch.float32) / quarter)
        thetas, axes = (theta, theta), (0, 1)
    parts = []
    for axis, th in zip(axes, thetas):
        ang = coords[:, axis, None] * th  # [N, quarter]
        parts.append(torch.cat([ang, ang], dim=-1))  # [N, head_dim / 2] (rotate_half layout)
    angles = torch.cat(parts, dim=-1)  # [N, head_dim]
    return angles.cos(), angles.sin()


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate [B, H, L, hd] by per-token tables [B, L, hd] (two independent halves)."""
    cos, sin = cos[:, None], sin[:, None]  # [B, 1, L, hd]
    h = x.shape[-1] // 2
    xf, xt = x[..., :h], x[..., h:]
    cf, ct, sf, st = cos[..., :h], cos[..., h:], sin[..., :h], sin[..., h:]
    return torch.cat([xf * cf + _rotate_half(xf) * sf, xt * ct + _rotate_half(xt) * st], dim=-1)


def gather_tokens(table: Tensor, ids: Tensor | None, batch: int) -> Tensor:
    """Select per-example rows of a [N, D] table: ids [B, K] -> [B, K, D] (all rows if ids is None)."""
    if ids is None:
        return table[None].expand(batch, *table.shape)
    return table[ids]
