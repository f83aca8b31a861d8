"""An exponential-moving-average teacher: a frozen copy of a module that trails the online one.

    target <- m * target + (1 - m) * online        after every optimiser step

with m ramped from ``momentum_start`` to ``momentum_end`` over training (linear as I-JEPA, or cosine as
BYOL). The target's parameters have ``requires_grad=False``, so the optimiser never sees them; they are
saved with the checkpoint like any weights, so a resumed run continues the same teacher.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from bestrq2.config import JEPAConfig


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with every parameter frozen (no gradients, not in the optimiser)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def momentum_at(step: int, total: int, cfg: JEPAConfig) -> float:
    """EMA momentum for the update after optimiser step ``step`` (0-based) of ``total``."""
    progress = min(1.0, step / max(1, total))
    if cfg.momentum_schedule == "cosine":
        progress = 0.5 * (1.0 - math.cos(math.pi * progress))
    return cfg.momentum_start + (cfg.momentum_end - cfg.momentum_start) * progress


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target = momentum * target + (1 - momentum) * online, parameter by parameter (buffers copied)."""
    t_params = list(target.parameters())
    o_params = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)


def ema_decay_at(step: int, decay: float) -> float:
    """Decay of the weight EMA after optimiser step ``step``: min(decay, (1 + step) / (10 + step)), so the
    average forgets its random start within the first steps instead of over 1 / (1 - decay) of them."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightEMA(nn.Module):
    """An exponential moving average of an encoder's weights (Polyak averaging), kept beside the online
    encoder as frozen parameters: saved and resumed with the checkpoint, exportable instead of the online
    weights. ``encoder`` holds the averaged copy; nothing reads it during training."""

    def __init__(self, encoder: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.encoder = frozen_copy(encoder)

    @torch.no_grad()
    def update(self, online: nn.Module, step: int) -> float:
        m = ema_decay_at(step, self.decay)
        ema_update(self.encoder, online, m)
        return m
