"""Utterance mixing (``mix.*``): the plan, the power-domain mix of dB patches, clean targets, config checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bestrq2.config import ConfigError, MixConfig, apply_override
from bestrq2.masking import mask_generator
from bestrq2.mixing import MixPlan, mix_patches, sample_mix
from bestrq2.objectives import build_objective, sample_batch_masks
from bestrq2.training.logs import read_log
from bestrq2.training.loop import pretrain
from tests.conftest import micro_config

SR = 16000


def _gens(n: int, step: int = 0) -> list[torch.Generator]:
    return [mask_generator(0, 1 + i, step) for i in range(n)]


def test_plan_stays_inside_each_clip_and_is_reproducible():
    cfg = MixConfig(prob=0.5, max_fraction=0.5, snr_db=(-5.0, 5.0))
    steps = torch.tensor([32, 32, 9, 2, 1] * 40)
    plan = sample_mix(cfg, steps, _gens(len(steps)))
    again = sample_mix(cfg, steps, _gens(len(steps)))
    for a, b in zip(vars(plan).values(), vars(again).values(), strict=True):
        assert torch.equal(a, b)
    assert (plan.length >= 1).all() and (plan.length <= (steps * 0.5).floor().clamp(min=1)).all()
    assert (plan.start >= 0).all() and (plan.start + plan.length <= steps).all()
    assert ((plan.snr_db >= -5) & (plan.snr_db <= 5)).all()
    assert not plan.active[steps < 2].any()  # a one-step clip has no clean part to tell the source by
    share = plan.active[steps >= 2].float().mean()
    assert 0.35 < share < 0.65, share
    assert not sample_mix(MixConfig(prob=0.0), steps, _gens(len(steps))).active.any()
    assert sample_mix(MixConfig(prob=1.0), steps, _gens(len(steps))).active[steps >= 2].all()


def _plan(active, start, length, snr):
    return MixPlan(
        torch.tensor(active),
        torch.tensor(start),
        torch.tensor(length),
        torch.tensor(snr, dtype=torch.float32),
    )


def test_mix_adds_power_at_the_drawn_ratio_inside_the_segment_only():
    # 2 frequency blocks x 6 time steps, rows of constant level: clip 0 at 60 dB, clip 1 at 40 dB
    grid, P = (2, 6), 4
    raw = torch.stack([torch.full((12, P), 60.0), torch.full((12, P), 40.0)])
    padding = torch.zeros(2, 12, dtype=torch.bool)
    padding[1, 5] = padding[1, 11] = True  # clip 1's last step is padding
    plan = _plan([True, True], [4, 1], [2, 3], [3.0, -2.0])
    out = mix_patches(raw, padding, grid, plan)
    t = torch.arange(12) % 6
    # clip 0 mixes clip 1 (its partner is clip b - 1 = 1) over steps 4-5, except where clip 1 is padding (step 5)
    changed0 = (out[0] != raw[0]).any(-1)
    assert torch.equal(changed0, (t == 4))
    # equal-length rows: the partner is scaled so that clean / partner energy = 3 dB over the clips' real tokens
    expect = 10 * math.log10(10**6.0 * (1 + 10 ** (-0.3)))
    torch.testing.assert_close(out[0, t == 4], torch.full((2, P), expect), rtol=0, atol=1e-3)
    # clip 1 mixes clip 0 over steps 1-3 at -2 dB (the partner louder than the clip)
    changed1 = (out[1] != raw[1]).any(-1)
    assert torch.equal(changed1, (t >= 1) & (t <= 3))
    expect1 = 10 * math.log10(10**4.0 * (1 + 10**0.2))
    torch.testing.assert_close(out[1, changed1], torch.full((6, P), expect1), rtol=0, atol=1e-3)
    assert torch.equal(out[1, padding[1]], raw[1, padding[1]])
    # an inactive clip is untouched, and a batch of one has no partner
    off = mix_patches(raw, padding, grid, _plan([False, False], [0, 0], [3, 3], [0.0, 0.0]))
    assert torch.equal(off, raw)
    assert torch.equal(mix_patches(raw[:1], padding[:1], grid, plan), raw[:1])


def test_encoder_input_is_mixed_and_targets_stay_clean():
    cfg = micro_config(frontend__patch_freq=128, frontend__patch_time=4, mix__prob=1.0)
    model = build_objective(cfg.validate())
    gen = torch.Generator().manual_seed(0)
    wav = torch.randn(3, 2 * SR, generator=gen) * torch.tensor([[0.3], [0.01], [0.1]])
    lengths = torch.tensor([2 * SR, 2 * SR, SR])
    rows = _gens(3)
    masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0), rows)
    plan = sample_mix(cfg.mix, torch.tensor([13, 13, 7]), rows)
    seen = {}

    def keep_input(module, args, out):
        seen["x"] = args[0].clone()

    model.encoder.register_forward_hook(keep_input)
    torch.manual_seed(0)
    clean = model(wav, lengths, masks)
    x_clean = seen["x"]
    torch.manual_seed(0)
    mixed = model(wav, lengths, masks, mix=plan)
    assert torch.equal(clean["targets"], mixed["targets"])
    assert not torch.equal(seen["x"], x_clean) and torch.isfinite(mixed["loss"])
    mixed["loss"].backward()
    assert model.encoder.patch_embed.weight.grad.abs().sum() > 0


def test_mix_config_is_checked_and_parsed():
    cfg = micro_config()
    assert cfg.mix.prob == 0.0  # off unless asked for
    apply_override(cfg, "mix.snr_db=-10,0")
    assert cfg.mix.snr_db == (-10.0, 0.0)
    for bad in ("mix.prob=1.5", "mix.max_fraction=1", "mix.snr_db=5,-5"):
        c = micro_config()
        apply_override(c, bad)
        with pytest.raises(ConfigError, match="mix"):
            c.validate()
    c = micro_config()
    c.method, c.mix.prob = "audiojepa", 0.2
    with pytest.raises(ConfigError, match="audiojepa"):
        c.validate()


@pytest.mark.integration
def test_mixing_pretrains_and_resumes_exactly(real_corpus, tmp_path):
    cfg = micro_config(train__max_steps=4, train__ckpt_every=100, mix__prob=0.5, train__batch_size=4)
    pretrain(cfg, real_corpus, tmp_path / "straight", progress=False, tensorboard=False)
    pretrain(cfg, real_corpus, tmp_path / "split", stop_after=2, progress=False, tensorboard=False)
    pretrain(cfg, real_corpus, tmp_path / "split", resume=True, progress=False, tensorboard=False)
    a = [r["loss"] for r in read_log(tmp_path / "straight")]
    b = [r["loss"] for r in read_log(tmp_path / "split")]
    assert len(a) == 4 and np.isfinite(a).all()
    np.testing.assert_allclose(b, a, rtol=1e-5)
