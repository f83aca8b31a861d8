"""Utterance mixing (``mix.prob``): the encoder reads a clip with a segment of another clip added to it,
the targets stay the codes of the clean clip.

This is the denoising pretext of WavLM (Chen et al., 2022) on log-mel patches. Without it, a masked
patch's codes can be read off the two visible patches that bracket it (results/recipe/README.md, "The
encoder uses no context"). With a second source over part of the crop, the bracketing patches hold a
mixture; which of the two sources the targets follow can only be told from the rest of the clip, where
the primary source plays alone. The secondary clip therefore covers at most ``mix.max_fraction`` of the
primary's time steps, so the primary is the one heard throughout.

The two sources are added in power: ``10 log10(10^(a/10) + g 10^(b/10))`` for dB values ``a`` and ``b``,
which ignores the phase term of a real mixture (it averages out over a mel band's many STFT bins).
``g`` sets the primary-to-secondary energy ratio, drawn per clip from ``mix.snr_db``, over the two
clips' mean power. The partner of clip b is clip b - 1 of the same micro-batch (clip 0 takes the last),
so with ``mix.prob`` > 0 a step depends on how the global batch is split into micro-batches.

The plan (which clips, where, how loud) is drawn on the host from the per-example generators that also
draw the masks, so it is the same after a resume and on any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bestrq2.config import MixConfig


@dataclass
class MixPlan:
    """Per clip: whether a partner is mixed in, over time steps ``[start, start + length)``, at ``snr_db``."""

    active: Tensor  # [B] bool
    start: Tensor  # [B] long, first mixed time step
    length: Tensor  # [B] long, mixed time steps
    snr_db: Tensor  # [B] float, primary-to-partner energy ratio

    def to(self, device: torch.device | str) -> MixPlan:
        return MixPlan(
            *(t.to(device, non_blocking=True) for t in (self.active, self.start, self.length, self.snr_db))
        )


def sample_mix(cfg: MixConfig, steps: Tensor, rows: list[torch.Generator]) -> MixPlan:
    """A plan for clips with ``steps`` [B] real time steps; one generator per clip (drawn from after the masks)."""
    if len(rows) != steps.shape[0]:
        raise ValueError(f"{len(rows)} generators for {steps.shape[0]} clips")
    draws = torch.stack([torch.rand(4, generator=g, dtype=torch.float64) for g in rows])  # [B, 4]
    steps = steps.cpu().long()
    longest = (steps.double() * cfg.max_fraction).floor().long().clamp(min=1)
    length = 1 + (draws[:, 1] * longest).floor().long()  # 1 .. longest
    start = (draws[:, 2] * (steps - length + 1).clamp(min=1)).floor().long()
    lo, hi = cfg.snr_db
    snr = lo + (hi - lo) * draws[:, 3]
    active = (draws[:, 0] < cfg.prob) & (steps >= 2)
    return MixPlan(active, start, length, snr.float())


def mix_patches(raw: Tensor, padding: Tensor, grid: tuple[int, int], plan: MixPlan) -> Tensor:
    """Mix each clip's dB patches [B, N, P] with its partner's (clip b - 1) where the plan says.

    Tokens are row-major over (frequency block, time step), as the frontend numbers them. A token is
    mixed where its time step lies in the clip's segment and both clips hold audio there."""
    B, N, _ = raw.shape
    if B < 2:
        return raw
    t = torch.arange(N, device=raw.device) % grid[1]  # [N] time step of each token
    inside = (t[None] >= plan.start[:, None]) & (t[None] < (plan.start + plan.length)[:, None])  # [B, N]
    where = inside & plan.active[:, None] & ~padding & ~padding.roll(1, dims=0)  # [B, N]
    with torch.autocast(device_type=raw.device.type, enabled=False):
        power = torch.pow(10.0, raw.float() / 10.0)
        level = _mean_power(power, padding)  # [B]
        ratio = level / level.roll(1, dims=0).clamp(min=1e-12)  # clip over partner
        gain = ratio * torch.pow(10.0, -plan.snr_db / 10.0)
        mixed = 10.0 * torch.log10(power + gain.clamp(1e-4, 1e4)[:, None, None] * power.roll(1, dims=0))
    return torch.where(where[..., None], mixed.to(raw.dtype), raw)


def _mean_power(power: Tensor, padding: Tensor) -> Tensor:
    """[B, N, P] power, [B, N] padding -> [B] mean power over each clip's real tokens."""
    real = (~padding)[..., None].to(power.dtype)
    return (power * real).sum((1, 2)) / (real.sum((1, 2)) * power.shape[-1]).clamp(min=1)


def mixed_feats(feats: dict, plan: MixPlan | None, norm_mean: float, norm_std: float) -> dict:
    """The frontend's output with the encoder's ``patches`` mixed by ``plan``; ``raw`` (the targets) stays clean."""
    if plan is None:
        return feats
    mixed = mix_patches(feats["raw"], feats["padding"], feats["grid"], plan)
    return {**feats, "patches": (mixed - norm_mean) / norm_std}
