"""The latent-target predictability check (Audio-JEPA collapse)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import micro_config

from bestrq2.evaluation.collapse import latent_predictability, position_baselines
from bestrq2.training.loop import pretrain


def _rows(n: int, positions: int, dim: int, position_share: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(positions, dim, generator=g)
    pos = torch.randint(0, positions, (n,), generator=g)
    noise = torch.randn(n, dim, generator=g)
    t = math.sqrt(position_share) * table[pos] + math.sqrt(1 - position_share) * noise
    return t, pos, torch.arange(n) % 2 == 0


@pytest.mark.parametrize("share", [0.0, 0.5, 0.95])
def test_position_share_is_recovered(share):
    t, pos, fit = _rows(20000, 16, 8, share)
    r = position_baselines(t, pos, fit, 16)
    assert r["position_r2"] == pytest.approx(share, abs=0.03)
    assert r["const"] == pytest.approx(1.0, abs=0.05)  # unit variance around the mean
    assert r["position"] <= r["const"] + 0.01


def test_position_baselines_need_both_halves():
    t, pos, _ = _rows(10, 4, 2, 0.5)
    with pytest.raises(ValueError, match="fit on"):
        position_baselines(t, pos, torch.ones(10, dtype=torch.bool), 4)


def test_latent_predictability_on_a_jepa_run(real_corpus, tmp_path):
    cfg = micro_config(train__max_steps=2)
    cfg.method = "audiojepa"
    pretrain(cfg.validate(), real_corpus, tmp_path / "run", progress=False, tensorboard=False)
    r = latent_predictability(tmp_path / "run", real_corpus, batches=2)
    assert r["step"] == 2 and r["masked_rows"] > r["scored_rows"] > 0
    assert all(math.isfinite(v) and v >= 0 for v in r["mse"].values())
    # layer-normed targets: unit variance per row, so predicting the mean costs about the spread
    assert 0 < r["mse"]["const"] < 1.5 and r["target_std"] > 0 and r["target_effective_rank"] >= 1
    assert r["position_r2"] <= 1


def test_latent_predictability_refuses_code_targets(real_corpus, tmp_path):
    pretrain(micro_config(train__max_steps=0), real_corpus, tmp_path / "run", progress=False, tensorboard=False)
    with pytest.raises(ValueError, match="no latent targets"):
        latent_predictability(tmp_path / "run", real_corpus, batches=1)
