"""Multi-mask training (``mask.repeats``): one clip's features, seen under several masks.

The masks of a batch of B clips hold R x B rows, repeat-major (row r * B + b belongs to clip b). The
frontend and the targets' quantizer run once per clip; ``repeat_views`` tiles their per-clip tensors to
the masks' rows, so every objective indexes features and masks row for row as with one mask per clip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


class ViewProjector(nn.Module):
    """The contrastive term's projector (``predictor.contrast_weight``): Linear-GELU-Linear on a clip's
    pooled features, as in SimCLR, so the term shapes the features without pinning them to its own space."""

    def __init__(self, width: int, dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def view_contrast_loss(z: Tensor, repeats: int, temperature: float) -> Tensor:
    """z [R * B, d]: one embedding per mask row, repeat-major (row r * B + b belongs to clip b). Each row
    has to pick out the other rows of its own clip among all rows but itself (InfoNCE with several
    positives: the mean log-probability of the positives, averaged over rows)."""
    n = z.shape[0]
    if repeats < 2 or n % repeats:
        raise ValueError(f"the contrastive term needs >= 2 views of each clip, got {n} rows for {repeats} repeats")
    with torch.autocast(device_type=z.device.type, enabled=False):  # logits up to 1 / temperature: fp32
        z = F.normalize(z.float(), dim=-1)
        self_pair = torch.eye(n, dtype=torch.bool, device=z.device)
        logp = (z @ z.T / temperature).masked_fill(self_pair, float("-inf")).log_softmax(-1)
        clip = torch.arange(n, device=z.device) % (n // repeats)
        positive = (clip[:, None] == clip[None, :]) & ~self_pair
        return -(logp.masked_fill(~positive, 0.0).sum(-1) / (repeats - 1)).mean()
