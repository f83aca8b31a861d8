"""AdamW with decay on matrices only, and a warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from bestrq2.config import OptimConfig
from bestrq2.models.layers import no_weight_decay


def param_groups(model: nn.Module, weight_decay: float, split_encoder: bool = False) -> list[dict]:
    """[decay, no decay] parameter groups; with ``split_encoder`` the encoder's parameters get groups of
    their own (tagged ``encoder: True``) so that their learning rate can follow its own schedule."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        enc = split_encoder and name.startswith("encoder.")
        groups.setdefault((enc, no_weight_decay(name, p)), []).append(p)
    out = []
    for enc in ([False, True] if split_encoder else [False]):
        for nd in (False, True):
            g = {"params": groups.get((enc, nd), []), "weight_decay": 0.0 if nd else weight_decay}
            if split_encoder:
                g["encoder"] = enc
            out.append(g)
    return out


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused kernel wherever it runs: CUDA, and the CPU for plain tensors (there about 4x
    faster than torch's per-parameter loop, see benchmarks/optimizer_fused.py; FSDP2's DTensor
    parameters on the CPU keep the loop)."""
    groups = param_groups(model, cfg.weight_decay, cfg.encoder_freeze_fraction > 0)
    fused = device.type == "cuda" or (device.type == "cpu" and not _has_dtensors(model))
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


def _has_dtensors(model: nn.Module) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return any(isinstance(p, DTensor) for p in model.parameters())


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warm-up over warmup_fraction of ``total`` steps, then cosine to lr * min_lr_ratio."""
    warmup = max(1, round(cfg.warmup_fraction * total))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def encoder_lr_scale(step: int, total: int, cfg: OptimConfig) -> float:
    """Factor on the encoder's learning rate: 0 for the first ``encoder_freeze_fraction`` of the steps
    (the predictor and heads first learn to read the random encoder, whose features are not yet
    disturbed by their random gradients), then a linear ramp to 1 over a warm-up's length."""
    frozen = round(cfg.encoder_freeze_fraction * total)
    if step < frozen:
        return 0.0
    ramp = max(1, round(cfg.warmup_fraction * total))
    return min(1.0, (step - frozen + 1) / ramp)


def set_lr(optimizer: torch.optim.Optimizer, step: int, total: int, cfg: OptimConfig) -> float:
    """Set every group's learning rate for ``step``; returns the base rate."""
    lr = lr_at(step, total, cfg)
    scale = encoder_lr_scale(step, total, cfg) if cfg.encoder_freeze_fraction > 0 else 1.0
    for group in optimizer.param_groups:
        group["lr"] = lr * scale if group.get("encoder") else lr
    return lr
