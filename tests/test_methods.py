"""Every pretraining method: trains on real audio, exports to the one encoder contract, and does what
its name says (one-step ViT reads all N tokens, two-step encoders only the K visible ones, the EMA
teacher follows its schedule without gradients)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bestrq2
from bestrq2.config import Config
from bestrq2.export import export
from bestrq2.masking import mask_generator, sample_span_masks
from bestrq2.models.ema import momentum_at
from bestrq2.objectives import BUILDERS, build_objective, sample_batch_masks
from bestrq2.training.logs import read_log
from bestrq2.training.loop import pretrain
from bestrq2.training.optim import build_optimizer
from tests.conftest import micro_config

METHODS = ["bestrq2", "bestrq-vit", "bestrq-conformer", "audiojepa"]


def method_config(method: str, **overrides: object) -> Config:
    cfg = micro_config(**overrides)
    cfg.method = method
    return cfg.validate()


def test_every_method_is_registered():
    assert set(METHODS) <= set(BUILDERS)


def _one_batch(cfg: Config, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, object]:
    S = int(cfg.data.crop_seconds * cfg.frontend.sample_rate)
    g = torch.Generator().manual_seed(seed)
    wav = torch.randn(3, S, generator=g) * 0.1
    lengths = torch.tensor([S, S, S // 2])
    return wav, lengths, sample_batch_masks(cfg, lengths, S, mask_generator(0, 0, seed))


@pytest.mark.integration
@pytest.mark.parametrize("method", METHODS)
def test_method_learns_on_real_audio(method, real_corpus, tmp_path):
    cfg = method_config(method, train__max_steps=40, train__batch_size=8, optim__lr=2e-3)
    result = pretrain(cfg, real_corpus, tmp_path / "run", progress=False, tensorboard=False)
    assert result.step == 40
    log = read_log(tmp_path / "run")
    assert all(np.isfinite(r["loss"]) for r in log)
    first = np.mean([r["loss"] for r in log[:5]])
    last = np.mean([r["loss"] for r in log[-5:]])
    print(f"{method}: loss {first:.3f} -> {last:.3f}")
    # cross-entropy over codes (ln 256 = 5.5 at chance) must drop clearly; the latent regression by 10 %
    assert last < (0.9 * first if method == "audiojepa" else first - 0.3), f"{method}: loss {first:.3f} -> {last:.3f}"
    if method != "audiojepa":  # code targets: monitored codebook usage
        assert log[-1]["codes_used"] > 5
    # every method exports to the one encoder contract, loadable and accepted by X-ARES
    enc = bestrq2.load_encoder(export(tmp_path / "run", tmp_path / "exp"))
    wav = torch.randn(2, 37000) * 0.1
    with torch.no_grad():
        out = enc(wav)
    assert out.shape == (2, int(np.ceil(37000 / (enc.hop_size_in_ms * 16))), enc.output_dim)
    checker = pytest.importorskip("xares.audio_encoder_checker")
    assert checker.check_audio_encoder(enc)


@pytest.mark.parametrize("method", METHODS)
def test_export_of_every_method_loads_and_matches(method, tmp_path):
    cfg = method_config(method, train__max_steps=0)
    model = build_objective(cfg)
    from bestrq2.training.checkpoint import atomic_save

    run = tmp_path / "run"
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "step": 0}, run / "checkpoints" / "last.pt")
    ckpt_path = next((run / "checkpoints").glob("*.pt"))
    out = export(ckpt_path, tmp_path / "exp")
    meta = json.loads((out / "config.json").read_text())
    assert meta["arch"] == ("conformer" if method == "bestrq-conformer" else "vit")
    enc = bestrq2.load_encoder(out)
    assert type(enc).__name__.endswith("Encoder")
    expected_hop = 156.25 if method == "bestrq-conformer" else 625.0
    assert enc.hop_size_in_ms == expected_hop == meta["hop_size_in_ms"] and enc.sampling_rate == 16000
    # the exported encoder computes what the training model's encoder computes on unmasked audio
    wav = torch.randn(2, 30000) * 0.1
    model.eval()
    with torch.no_grad():
        feats = model.frontend(wav)
        if method == "bestrq-conformer":
            from bestrq2.frontend import unpatchify

            fe = model.frontend.cfg
            ref = model.encoder(unpatchify(feats["patches"], feats["grid"], fe.patch_freq, fe.patch_time))
        else:
            encoder = model.target_encoder if method == "audiojepa" else model.encoder
            ref = encoder(feats["patches"], feats["grid"]).reshape(2, *feats["grid"], -1).mean(1)
        torch.testing.assert_close(enc(wav), ref)
    checker = pytest.importorskip("xares.audio_encoder_checker")
    assert checker.check_audio_encoder(enc)


def test_conformer_output_does_not_depend_on_batch_padding():
    cfg = method_config("bestrq-conformer")
    from bestrq2.inference import ConformerEncoder

    enc = ConformerEncoder(cfg.frontend, cfg.encoder, cfg.conformer).eval()
    a = torch.randn(1, 23000) * 0.1
    batch = torch.cat([torch.nn.functional.pad(a, (0, 17000)), torch.randn(1, 40000) * 0.1])
    with torch.no_grad():
        alone = enc(a)  # [1, T', D]
        padded = enc(batch, torch.tensor([23000, 40000]))[:1, : alone.shape[1]]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-4)


def _block0_tokens(model: torch.nn.Module, cfg: Config) -> int:
    seen: list[int] = []
    hook = model.encoder.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    wav, lengths, masks = _one_batch(cfg)
    model(wav, lengths, masks)
    hook.remove()
    return seen[0], masks


@pytest.mark.parametrize("method", ["bestrq-vit", "bestrq2", "audiojepa"])
def test_one_step_encoder_sees_all_tokens_two_step_only_visible(method):
    cfg = method_config(method)
    model = build_objective(cfg)
    n_tokens, masks = _block0_tokens(model, cfg)
    N = masks.ids_keep.shape[1] + masks.ids_mask.shape[1]
    K = masks.ids_keep.shape[1]
    assert n_tokens == (N if method == "bestrq-vit" else K) and K < N


def test_one_step_fills_masked_patches_with_noise_or_token():
    for fill in ("noise", "token"):
        cfg = method_config("bestrq-vit", onestep__fill=fill)
        model = build_objective(cfg)
        wav, lengths, masks = _one_batch(cfg)
        x = model.frontend(wav, lengths)["patches"]
        filled = model.fill(x, masks.ids_mask)
        rows = torch.gather(filled, 1, masks.ids_mask[..., None].expand(-1, -1, x.shape[-1]))
        kept = torch.gather(filled, 1, masks.ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        torch.testing.assert_close(kept, torch.gather(x, 1, masks.ids_keep[..., None].expand(-1, -1, x.shape[-1])))
        if fill == "noise":
            assert abs(float(rows.std()) - 0.1) < 0.02 and abs(float(rows.mean())) < 0.02
        else:
            torch.testing.assert_close(rows, model.fill.mask_token.expand_as(rows))


def test_ema_teacher_gets_no_gradient_and_follows_the_schedule():
    cfg = method_config("audiojepa", train__max_steps=10)
    model = build_objective(cfg)
    opt = build_optimizer(model, cfg.optim, torch.device("cpu"))
    teacher = dict(model.target_encoder.named_parameters())
    assert all(not p.requires_grad for p in teacher.values())
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in teacher.values())
    torch.testing.assert_close(teacher["patch_embed.weight"], model.encoder.patch_embed.weight)

    old = {k: v.detach().clone() for k, v in teacher.items()}
    wav, lengths, masks = _one_batch(cfg)
    model(wav, lengths, masks)["loss"].backward()
    assert all(p.grad is None for p in teacher.values())
    opt.step()
    step = 3
    m = model.update_target(step)
    assert m == pytest.approx(0.996 + 0.004 * step / 10)
    online = dict(model.encoder.named_parameters())
    moved = 0
    for k, p in teacher.items():
        expected = m * old[k] + (1 - m) * online[k].detach()
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-7)
        moved += int(not torch.equal(p, old[k]))
    assert moved > 0


def test_momentum_schedules_run_from_start_to_end():
    cfg = method_config("audiojepa").jepa
    assert momentum_at(0, 100, cfg) == pytest.approx(0.996) and momentum_at(100, 100, cfg) == pytest.approx(1.0)
    cfg.momentum_schedule = "cosine"
    assert momentum_at(50, 100, cfg) == pytest.approx(0.998)
    assert momentum_at(10, 100, cfg) < 0.996 + 0.004 * 0.1


def test_jepa_exports_target_by_default_and_context_on_request(tmp_path):
    cfg = method_config("audiojepa", train__max_steps=0)
    model = build_objective(cfg)
    with torch.no_grad():
        for p in model.target_encoder.parameters():
            p.add_(1.0)  # make the teacher differ from the student
    from bestrq2.training.checkpoint import atomic_save

    ckpt = tmp_path / "ckpt.pt"
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "step": 0}, ckpt)
    target = bestrq2.load_encoder(export(ckpt, tmp_path / "t"))
    context = bestrq2.load_encoder(export(ckpt, tmp_path / "c", which="context"))
    torch.testing.assert_close(target.encoder.patch_embed.weight, model.target_encoder.patch_embed.weight)
    torch.testing.assert_close(context.encoder.patch_embed.weight, model.encoder.patch_embed.weight)
    assert json.loads((tmp_path / "c" / "config.json").read_text())["exported_encoder"] == "context"


def test_span_masks_cover_whole_spans_and_respect_padding():
    T, span = 13, 2
    padding = torch.zeros(3, T, dtype=torch.bool)
    padding[2, 7:] = True
    cfg = method_config("bestrq-conformer").mask
    m = sample_span_masks(padding, cfg, span, mask_generator(0, 0, 1))
    for b in range(3):
        masked = set(m.ids_mask[b][~m.mask_pad[b]].tolist())
        kept = set(m.ids_keep[b][~m.keep_pad[b]].tolist())
        real = set(range(T)) if b < 2 else set(range(7))
        assert masked | kept == real and not masked & kept and masked
        for f in masked:  # spans: the partner frame of a masked frame is masked too (when it exists)
            partner = f ^ 1
            if partner in real:
                assert partner in masked
    again = sample_span_masks(padding, cfg, span, mask_generator(0, 0, 1))
    assert torch.equal(m.ids_mask, again.ids_mask)


def test_random_init_floor_of_a_conformer_export_is_a_conformer(tmp_path):
    from bestrq2.evaluation.models import resolve_model
    from bestrq2.training.checkpoint import atomic_save

    cfg = method_config("bestrq-conformer", train__max_steps=0)
    ckpt = tmp_path / "ckpt.pt"
    atomic_save({"config": cfg.to_dict(), "model": build_objective(cfg).state_dict(), "step": 0}, ckpt)
    enc = resolve_model(f"random:{export(ckpt, tmp_path / 'exp')}").build()
    assert type(enc).__name__ == "ConformerEncoder" and enc.hop_size_in_ms == 156.25


def _rows(masks, sl: slice):
    from bestrq2.masking import Masks

    return Masks(masks.ids_keep[sl], masks.keep_pad[sl], masks.ids_mask[sl], masks.mask_pad[sl], masks.ratio, masks.any_padding)


@pytest.mark.parametrize("method", METHODS)
def test_mask_repeats_score_each_clip_under_every_mask(method):
    """mask.repeats = 2: one forward over 2 x B mask rows gives the scored-count-weighted mean of the
    losses of the two mask sets taken one at a time, so the clip is seen twice and nothing else changes."""
    cfg = method_config(method, mask__repeats=2, onestep__fill="token")
    torch.manual_seed(0)
    model = build_objective(cfg).eval()
    wav, lengths, masks = _one_batch(cfg)  # 3 clips, one of them padded
    B = wav.shape[0]
    assert masks.ids_keep.shape[0] == 2 * B
    first, second = _rows(masks, slice(0, B)), _rows(masks, slice(B, 2 * B))
    assert not torch.equal(first.ids_mask, second.ids_mask)  # independent masks
    with torch.no_grad():
        both = float(model(wav, lengths, masks)["loss"])
        parts = [(float(model(wav, lengths, m)["loss"]), m.num_scored) for m in (first, second)]
    expected = sum(loss * n for loss, n in parts) / sum(n for _, n in parts)
    assert both == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="whole number of masks"):
        model(torch.cat([wav, wav[:1]]), torch.cat([lengths, lengths[:1]]), masks)  # 6 rows, 4 clips


def test_mask_repeats_keep_one_mask_slots_and_split_over_ranks():
    from bestrq2.masking import repeat_slots

    assert repeat_slots([0, 1, 2], 1, 3) == [0, 1, 2]
    one_rank = repeat_slots([0, 1, 2, 3], 2, 4)
    ranks = [repeat_slots([r, r + 2], 2, 4) for r in (0, 1)]  # 2 ranks x 2 examples
    assert sorted(one_rank) == sorted(ranks[0] + ranks[1]) == list(range(8))
