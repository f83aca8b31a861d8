"""Multi-mask training (``mask.repeats``): one clip's features, seen under several masks.

The masks of a batch of B clips hold R x B rows, repeat-major (row r * B + b belongs to clip b). The
frontend and the targets' quantizer run once per clip; ``repeat_views`` tiles their per-clip tensors to
the masks' rows, so every objective indexes features and masks row for row as with one mask per clip.
"""

from __future__ import annotations

from torch import Tensor

from bestrq2.masking import Masks


def mask_repeats(masks: Masks, batch: int) -> int:
    """How many masks each of ``batch`` clips has."""
    rows = masks.ids_keep.shape[0]
    if rows % batch:
        raise ValueError(f"{rows} mask rows for a batch of {batch} clips: not a whole number of masks per clip")
    return rows // batch


def repeat_views(feats: dict, masks: Masks, batch: int) -> dict:
    """Tile every per-clip tensor of ``feats`` (leading dimension ``batch``) to one row per mask."""
    r = mask_repeats(masks, batch)
    if r == 1:
        return feats
    return {k: tile(v, r) if isinstance(v, Tensor) and v.dim() and v.shape[0] == batch else v for k, v in feats.items()}


def tile(x: Tensor, repeats: int) -> Tensor:
    """[B, ...] -> [repeats * B, ...], repeat-major (the order of the masks' rows)."""
    return x.repeat(repeats, *([1] * (x.dim() - 1))) if repeats > 1 else x
