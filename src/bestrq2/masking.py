"""Masks are data: per-example random patch masks carried as index tensors.

A batch draws one ratio r ~ U(ratio_min, ratio_max) and every example gets the same number
of visible (K) and masked (M = round(r * N)) slots, so the encoder batches its visible tokens
without padding. With padded audio, only real tokens are masked or kept: example i masks
m_i = round(r * n_i) of its n_i real tokens, and the padding tokens fill the remaining
slots, flagged invalid (the encoder ignores them as keys; the loss ignores them).

Masks come from explicit ``torch.Generator`` objects, so they are reproducible and resume exactly.
In training, the batch's ratio comes from a generator seeded by (seed, step) and each example's mask
from one seeded by (seed, its slot in the global batch, step): every example differs, and the masks
of a step do not depend on how the global batch is split over ranks (1 rank x 16 == 2 ranks x 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bestrq2.config import MaskConfig


@dataclass
class Masks:
    ids_keep: Tensor  # [B, K] long, token indices given to the encoder
    keep_pad: Tensor  # [B, K] bool, True where the slot holds a padding token
    ids_mask: Tensor  # [B, M] long, token indices to predict
    mask_pad: Tensor  # [B, M] bool, True where the slot holds a padding token
    ratio: float
    any_padding: bool  # known on the host, so full batches skip padding logic without a device sync
    scored: Tensor | None = None  # [n] long: flat indices (into B x M) of the masked slots holding audio

    @property
    def num_scored(self) -> int:
        """Masked slots that hold real audio: the rows every objective averages its loss over."""
        return int((~self.mask_pad).sum())

    def scored_index(self) -> Tensor:
        """``scored``, computed from ``mask_pad`` if not yet known (a device sync if that is on a GPU)."""
        if self.scored is not None:
            return self.scored
        return (~self.mask_pad).flatten().nonzero().squeeze(1)

    def to(self, device: torch.device | str) -> Masks:
        """On ``device``; the scored index is computed here, on the host, so that selecting the scored
        rows of a padded batch costs no device sync (boolean indexing would)."""
        return Masks(
            self.ids_keep.to(device, non_blocking=True),
            self.keep_pad.to(device, non_blocking=True),
            self.ids_mask.to(device, non_blocking=True),
            self.mask_pad.to(device, non_blocking=True),
            self.ratio,
            self.any_padding,
            self.scored_index().to(device, non_blocking=True) if self.any_padding else None,
        )


def mask_generator(seed: int, stream: int, step: int) -> torch.Generator:
    """A CPU generator unique to (seed, stream, step)."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + stream) * 1_000_000_007 + step)
    return g


def slot_generators(seed: int, slots: list[int], step: int) -> list[torch.Generator]:
    """One generator per example, keyed by its slot in the global batch (stream 0 is the ratio's)."""
    return [mask_generator(seed, 1 + s, step) for s in slots]


def repeat_slots(slots: list[int], repeats: int, slots_per_step: int) -> list[int]:
    """Slots of ``repeats`` masks per example: repeat r of the example in slot s takes slot
    s + r * slots_per_step (the global micro-batch size), so repeat 0 keeps the slots of one mask per
    clip and the numbering stays independent of the split over ranks."""
    return [s + r * slots_per_step for r in range(repeats) for s in slots]


def _scores(B: int, N: int, generator: torch.Generator, rows: list[torch.Generator] | None) -> Tensor:
    if rows is None:
        return torch.rand(B, N, generator=generator, dtype=torch.float64)
    if len(rows) != B:
        raise ValueError(f"{len(rows)} row generators for a batch of {B}")
    return torch.stack([torch.rand(N, generator=g, dtype=torch.float64) for g in rows])


def sample_masks(
    padding: Tensor, cfg: MaskConfig, generator: torch.Generator, rows: list[torch.Generator] | None = None
) -> Masks:
    """Sample masks for a batch.

    Args:
      padding: [B, N] bool, True for tokens that hold no audio.
      generator: draws the batch's mask ratio (and, without ``rows``, every example's mask).
      rows: one generator per example for its mask (see :func:`slot_generators`).
    """
    padding = padding.cpu()
    B, N = padding.shape
    ratio = cfg.ratio_min + (cfg.ratio_max - cfg.ratio_min) * float(torch.rand((), generator=generator))
    M = min(N - 1, max(1, round(ratio * N)))
    K = N - M
    valid = ~padding
    n_valid = valid.sum(1)  # [B]
    # masked real tokens per example: as close to ratio * n_valid as the slots allow, with at
    # least one real token left visible; lo <= hi always holds because K >= 1 and n_valid <= N
    lo = (n_valid - K).clamp(min=0)
    hi = torch.minimum(torch.full_like(n_valid, M), (n_valid - 1).clamp(min=0))
    m = torch.round(ratio * n_valid.double()).long().clamp(min=0)
    m = torch.maximum(torch.minimum(m, hi), lo)  # [B]

    # random order of tokens: real tokens first (shuffled), padding after
    scores = _scores(B, N, generator, rows) + padding.double()  # padding sorts last
    order = scores.argsort(dim=1)  # [B, N] token ids, rank-ordered
    rank = torch.arange(N)[None].expand(B, N)  # rank of each entry of `order`
    is_real = rank < n_valid[:, None]
    to_mask_real = rank < m[:, None]
    pad_rank = rank - n_valid[:, None]  # rank among padding tokens
    n_pad_in_mask = M - m  # padding slots in the masked set
    to_mask = to_mask_real | (~is_real & (pad_rank < n_pad_in_mask[:, None]))
    # slot index inside the masked set / the visible set
    slot_mask = torch.where(is_real, rank, m[:, None] + pad_rank)
    slot_keep = torch.where(is_real, rank - m[:, None], (n_valid - m)[:, None] + pad_rank - n_pad_in_mask[:, None])

    ids_mask = torch.empty(B, M, dtype=torch.long)
    ids_keep = torch.empty(B, K, dtype=torch.long)
    bm, bk = to_mask.nonzero(as_tuple=True), (~to_mask).nonzero(as_tuple=True)
    ids_mask[bm[0], slot_mask[bm]] = order[bm]
    ids_keep[bk[0], slot_keep[bk]] = order[bk]
    mask_pad = torch.gather(padding, 1, ids_mask)
    keep_pad = torch.gather(padding, 1, ids_keep)
    return Masks(ids_keep, keep_pad, ids_mask, mask_pad, ratio, bool(padding.any()))


def sample_span_masks(
    padding: Tensor, cfg: MaskConfig, span: int, generator: torch.Generator, rows: list[torch.Generator] | None = None
) -> Masks:
    """Masks of whole spans of ``span`` consecutive frames over a 1-D frame axis (BEST-RQ style).

    The frames are grouped into blocks of ``span`` (the last one possibly shorter); blocks are masked
    exactly as patches are (:func:`sample_masks`), then each block stands for its frames.

    Args:
      padding: [B, T] bool, True for frames that hold no audio.
    """
    padding = padding.cpu()
    B, T = padding.shape
    nb = -(-T // span)
    block_pad = torch.ones(B, nb * span, dtype=torch.bool)
    block_pad[:, :T] = padding
    block_pad = block_pad.reshape(B, nb, span).all(-1)  # [B, nb]: a block is padding if all its frames are
    blocks = sample_masks(block_pad, cfg, generator, rows)

    def frames(ids: Tensor) -> tuple[Tensor, Tensor]:
        f = (ids[..., None] * span + torch.arange(span)).reshape(B, -1)  # [B, n * span] frame ids
        out = f >= T  # frames past the end of the last, short block
        f = f.clamp(max=T - 1)
        return f, out

    ids_mask, out_m = frames(blocks.ids_mask)
    ids_keep, out_k = frames(blocks.ids_keep)
    # a frame past T duplicates frame T-1: flag it as padding so that it is neither seen twice nor scored
    mask_pad = torch.gather(padding, 1, ids_mask) | out_m
    keep_pad = torch.gather(padding, 1, ids_keep) | out_k
    return Masks(ids_keep, keep_pad, ids_mask, mask_pad, blocks.ratio, bool(mask_pad.any() or keep_pad.any()))


def sample_time_masks(
    padding: Tensor,
    grid: tuple[int, int],
    cfg: MaskConfig,
    span: int,
    generator: torch.Generator,
    rows: list[torch.Generator] | None = None,
) -> Masks:
    """Masks of whole time steps of a (freq block, time block) token grid, in spans of ``span`` steps:
    every frequency block of a masked step is masked, so it cannot be read off its neighbours in frequency.

    Args:
      padding: [B, fb * tb] bool over tokens numbered row-major over (freq, time); padding is per time step.
    """
    fb, tb = grid
    B = padding.shape[0]
    steps = sample_span_masks(padding.cpu().reshape(B, fb, tb)[:, 0], cfg, span, generator, rows)  # over [B, tb]
    rows_f = torch.arange(fb)[None, :, None] * tb  # [1, fb, 1]

    def tokens(ids: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
        # each step id t stands for tokens f * tb + t of every frequency row f
        return (rows_f + ids[:, None]).reshape(B, -1), pad[:, None].expand(-1, fb, -1).reshape(B, -1)

    ids_keep, keep_pad = tokens(steps.ids_keep, steps.keep_pad)
    ids_mask, mask_pad = tokens(steps.ids_mask, steps.mask_pad)
    return Masks(ids_keep, keep_pad, ids_mask, mask_pad, steps.ratio, steps.any_padding)
