"""Is a latent regression target predictable without context? A check for Audio-JEPA runs.

A low regression loss only means the predictor matches the target encoder. If the targets of masked
patches are (nearly) the same for every clip, or depend only on where the patch sits, a predictor that
reads mask tokens and positions, and ignores the context encoder, reaches that loss too. This module
measures that on training crops of a run's own data:

- ``const``: mean squared error (per element, as the loss) of predicting every masked target by the
  mean target of held-out crops;
- ``position``: the same with one mean per token position (time x frequency index);
- ``clip``: the mean of the same crop's *visible* targets (a context-only guess without a predictor);
- ``predictor``: the run's own predictor on the same masks;

plus the share of target variance that position explains, the per-dimension spread of the targets
across crops, and their effective rank. Means are fitted on one half of the crops, scored on the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bestrq2.config import Config
from bestrq2.evaluation.diagnose import effective_rank
from bestrq2.masking import mask_generator
from bestrq2.objectives import build_objective, sample_batch_masks
from bestrq2.objectives.bestrq2 import gather_rows, real_rows
from bestrq2.quantizer import clip_mean


def position_baselines(
    targets: Tensor, positions: Tensor, fit: Tensor, num_positions: int
) -> dict[str, float]:
    """targets [n, D], positions [n] long, fit [n] bool (rows the means are fitted on): the per-element
    MSE of the constant and the per-position mean on the other rows, and the share of their variance
    that position explains (1 - MSE(position) / MSE(const))."""
    test = ~fit
    if not bool(fit.any()) or not bool(test.any()):
        raise ValueError("position_baselines needs rows to fit on and rows to score")
    mu = targets[fit].mean(0)
    sums = torch.zeros(num_positions, targets.shape[1], dtype=targets.dtype).index_add_(0, positions[fit], targets[fit])
    counts = torch.bincount(positions[fit], minlength=num_positions).to(targets.dtype)[:, None]
    mu_pos = torch.where(counts > 0, sums / counts.clamp(min=1), mu)  # unseen positions: the global mean
    const = F.mse_loss(mu.expand_as(targets[test]), targets[test]).item()
    pos = F.mse_loss(mu_pos[positions[test]], targets[test]).item()
    return {"const": const, "position": pos, "position_r2": 1.0 - pos / const if const > 0 else float("nan")}


@torch.no_grad()
def latent_predictability(checkpoint: str | Path, data: str | Path, batches: int = 8, seed: int = 1234) -> dict[str, Any]:
    """The report of the module docstring for an audiojepa run folder or checkpoint, on ``batches``
    training-size batches of crops from ``data`` (a folder or manifest), masked as in training."""
    from bestrq2.data.files import build_loader, list_audio
    from bestrq2.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    cfg = Config.from_dict(ckpt["config"])
    if cfg.method != "audiojepa":
        raise ValueError(f"{checkpoint}: method {cfg.method!r} has no latent targets (this check is for audiojepa)")
    with torch.random.fork_rng(devices=[]):
        objective = build_objective(cfg)
    objective.load_state_dict(ckpt["model"])
    objective.eval()
    cfg.data.num_workers = 0
    loader = iter(build_loader(list_audio(data, cfg.data.extensions), cfg.data, cfg.frontend.sample_rate,
                               cfg.train.batch_size, seed=seed))  # fmt: skip
    rows: dict[str, list[Tensor]] = {"target": [], "pred": [], "clip": [], "pos": [], "half": [], "all": []}
    num_positions = 0
    for b in range(batches):
        batch = next(loader)
        wav, lengths = batch["wav"], batch["lengths"]
        masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(seed, 1, b))
        feats = objective.frontend(wav, lengths)
        grid = feats["grid"]
        padding = feats["padding"] if masks.any_padding else None
        target = objective.target_encoder(feats["patches"], grid, padding=padding)
        target = F.layer_norm(target.float(), target.shape[-1:])  # [B, N, D], as the loss sees it
        B, N, _ = target.shape
        num_positions = max(num_positions, N)
        keep_pad = masks.keep_pad if masks.any_padding else None
        context = objective.encoder(feats["patches"], grid, ids=masks.ids_keep, padding=keep_pad)
        pred = objective.head(real_rows(objective.predictor(context, masks, grid), masks)).float()
        visible = gather_rows(target, masks.ids_keep)  # [B, K, D]
        visible_mean = clip_mean(visible, masks.keep_pad)  # [B, 1, D]
        idx = torch.arange(N).expand(B, N)
        real = (~feats["padding"]).flatten() if padding is not None else torch.ones(B * N, dtype=torch.bool)
        rows["all"].append(target.flatten(0, 1)[real])
        rows["target"].append(real_rows(gather_rows(target, masks.ids_mask), masks))
        rows["pred"].append(pred)
        rows["clip"].append(real_rows(visible_mean.expand(-1, masks.ids_mask.shape[1], -1), masks))
        rows["pos"].append(real_rows(torch.gather(idx, 1, masks.ids_mask)[..., None], masks)[:, 0])
        rows["half"].append(torch.full((len(pred),), b % 2 == 0))
    t, pred, clip = torch.cat(rows["target"]), torch.cat(rows["pred"]), torch.cat(rows["clip"])
    pos, fit = torch.cat(rows["pos"]), torch.cat(rows["half"])
    base = position_baselines(t, pos, fit, num_positions)
    test = ~fit
    all_targets = torch.cat(rows["all"])
    return {
        "run": str(checkpoint), "step": int(ckpt["step"]), "masked_rows": int(len(t)), "scored_rows": int(test.sum()),
        "mse": {"const": base["const"], "position": base["position"],
                "clip": F.mse_loss(clip[test], t[test]).item(),
                "predictor": F.mse_loss(pred[test], t[test]).item()},
        "position_r2": base["position_r2"],
        "target_std": float(all_targets.std(0).mean()),
        "target_effective_rank": effective_rank(all_targets),
        "positions": cfg.encoder.positions, "patch": [cfg.frontend.patch_freq, cfg.frontend.patch_time],
    }  # fmt: skip
