"""The recipe options of the BEST-RQ-2.x family, one config field each: patch shape and 1-D positions,
block style (RMSNorm, SwiGLU, QK-norm, LayerScale), time-span masks, weight EMA, per-codebook quantizer
normalisation, energy-aware crops, inference chunks."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

from bestrq2.config import ConfigError, FrontendConfig, QuantizerConfig
from bestrq2.data.audio import AudioError, choose_crop, silent_fraction
from bestrq2.data.files import CropDataset, collate
from bestrq2.export import export, load_encoder
from bestrq2.frontend import Frontend
from bestrq2.inference import BestRQ2Encoder
from bestrq2.masking import mask_generator
from bestrq2.models.ema import WeightEMA, ema_decay_at
from bestrq2.models.encoder import ViTEncoder
from bestrq2.models.layers import Block, BlockStyle, SwiGLU
from bestrq2.models.positions import _sincos_1d, rope_2d, sincos_2d
from bestrq2.objectives import build_objective, sample_batch_masks
from bestrq2.objectives.bestrq2 import gather_rows, masked_codes, real_rows
from bestrq2.objectives.views import repeat_views, view_contrast_loss
from bestrq2.quantizer import RandomProjectionQuantizer, clip_mean, lifter_matrix
from bestrq2.training.checkpoint import atomic_save
from bestrq2.training.loop import pretrain
from tests.conftest import micro_config

SR = 16000


def full_band(**overrides):
    return micro_config(frontend__patch_freq=128, frontend__patch_time=4, **overrides)


def exported_from(model, cfg, tmp_path, state=None):
    """The encoder an export of ``model``'s state (a step-0 checkpoint) loads back."""
    atomic_save({"config": cfg.to_dict(), "model": state or model.state_dict(), "step": 0}, tmp_path / "ckpt.pt")
    return load_encoder(export(tmp_path / "ckpt.pt", tmp_path / "x"))


def assert_extra_term(model, cfg, attr, term, loss, inputs, tmp_path, weight=0.5):
    """An optional extra loss term held by ``model.<attr>``: the loss is the rest plus ``weight`` x the term,
    its module and the encoder get gradients, and the export leaves the module out."""
    module = getattr(model, attr)
    setattr(model, attr, None)
    torch.testing.assert_close(loss, model(*inputs)["loss"] + weight * term)
    setattr(model, attr, module)
    model.train()
    model(*inputs)["loss"].backward()
    assert next(module.parameters()).grad.abs().sum() > 0 and model.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert not any(attr in k for k in exported_from(model, cfg, tmp_path).state_dict())


# ----------------------------------------------------------------------------- patch shape, positions


def test_full_band_patches_give_one_token_per_156ms():
    cfg = full_band()
    assert cfg.frontend.freq_patches == 1 and cfg.frontend.patch_dim == 512
    assert cfg.frontend.hop_size_in_ms == pytest.approx(156.25)
    enc = BestRQ2Encoder(cfg.frontend, cfg.encoder, "concat").eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 2 * SR) * 0.1)
    assert out.shape == (2, 13, cfg.encoder.width)  # ceil(2 s / 156.25 ms); no frequency axis to pool
    assert enc.output_dim == cfg.encoder.width


def test_positions_are_1d_over_time_for_a_single_frequency_row():
    table = sincos_2d((1, 10), 64)
    torch.testing.assert_close(table, _sincos_1d(torch.arange(10.0), 64))
    assert (table.std(0) > 0).float().mean() > 0.9  # no constant half, as 2-D positions would leave
    cos, sin = rope_2d((1, 10), 32)
    assert (cos.std(0) > 0).all(), "every rotary pair turns with time"
    cos2, _ = rope_2d((2, 10), 32)
    assert (cos2[:10, :16].std(0) == 0).all(), "2-D: the frequency half is constant along one row"


def test_any_patch_shape_trains_and_exports(tmp_path):
    cfg = micro_config(frontend__patch_freq=32, frontend__patch_time=8, encoder__positions="rope")
    model = build_objective(cfg)
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
    masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0))
    model(wav, lengths, masks)["loss"].backward()
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "step": 0}, tmp_path / "ckpt.pt")
    meta = json.loads((export(tmp_path / "ckpt.pt", tmp_path / "x") / "config.json").read_text())
    assert meta["hop_size_in_ms"] == pytest.approx(1000 * 8 * 625 / SR)


# ----------------------------------------------------------------------------- block style


def test_block_style_options_build_what_they_say():
    cfg = micro_config(encoder__norm="rmsnorm", encoder__mlp="swiglu", encoder__qk_norm=True, encoder__layer_scale=0.1)
    model = build_objective(cfg)
    for blocks in (model.encoder.blocks, model.predictor.blocks):  # the predictor follows the encoder
        blk = blocks[0]
        assert isinstance(blk.norm1, nn.RMSNorm) and isinstance(blk.mlp, SwiGLU)
        assert blk.attn.q_norm is not None and torch.allclose(blk.gamma1, torch.full_like(blk.gamma1, 0.1))
    assert isinstance(model.encoder.norm, nn.RMSNorm)
    with pytest.raises(ConfigError):
        micro_config(encoder__mlp="relu")


def test_swiglu_keeps_the_parameter_count():
    gelu = Block(192, 3, 4.0)
    swi = Block(192, 3, 4.0, style=BlockStyle(mlp="swiglu"))
    n = lambda m: sum(p.numel() for p in m.mlp.parameters())  # noqa: E731
    assert abs(n(swi) - n(gelu)) / n(gelu) < 0.02


def test_layer_scale_starts_blocks_near_the_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 64)
    near = Block(64, 2, style=BlockStyle(layer_scale=1e-5))
    plain = Block(64, 2)
    assert (near(x) - x).abs().max() < 1e-3
    assert (plain(x) - x).abs().max() > 0.1


def test_qk_norm_makes_attention_invariant_to_the_scale_of_queries_and_keys():
    torch.manual_seed(0)
    blk = Block(64, 2, style=BlockStyle(qk_norm=True)).eval()
    x = torch.randn(2, 5, 64)
    before = blk.attn(x)
    with torch.no_grad():
        blk.attn.qkv.weight[:128] *= 7.0  # q and k rows; v untouched
        blk.attn.qkv.bias[:128] *= 7.0
    torch.testing.assert_close(blk.attn(x), before, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- masks


def test_time_masks_mask_every_frequency_block_of_a_step_in_spans():
    cfg = micro_config(mask__kind="time", mask__span=2, mask__ratio_min=0.8, mask__ratio_max=0.8)
    S = 5 * SR
    lengths = torch.tensor([S, 3 * SR])
    m = sample_batch_masks(cfg, lengths, S, mask_generator(0, 0, 3))
    fb, tb = cfg.frontend.freq_patches, cfg.frontend.time_patches(S)
    for b in range(2):
        real = (m.ids_mask[b][~m.mask_pad[b]]).tolist()
        steps = {i % tb for i in real}
        assert {f * tb + t for f in range(fb) for t in steps} == set(real), "whole time steps"
        assert len(set(m.ids_mask[b].tolist()) | set(m.ids_keep[b].tolist())) == fb * tb
    n_real = cfg.frontend.time_patches(int(lengths[1]))
    masked_steps = {i % tb for i in m.ids_mask[1][~m.mask_pad[1]].tolist()}
    real_spans = -(-n_real // 2)  # 5 real steps: spans [0, 1] [2, 3] [4, (padding)]
    assert len({s // 2 for s in masked_steps}) == round(0.8 * real_spans)
    assert max(masked_steps) < n_real  # padding never scored


def test_high_mask_ratio_trains():
    cfg = full_band(mask__ratio_min=0.8, mask__ratio_max=0.8)
    model = build_objective(cfg)
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, 2 * SR])
    masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0))
    assert masks.ids_keep.shape[1] == 13 - round(0.8 * 13)
    assert model(wav, lengths, masks)["loss"].isfinite()


# ----------------------------------------------------------------------------- weight EMA


def test_weight_ema_follows_the_online_encoder_and_is_exported(tmp_path):
    cfg = micro_config(optim__ema_decay=0.9)
    model = build_objective(cfg)
    ema = model.ema.encoder
    assert all(not p.requires_grad for p in ema.parameters())
    before = ema.patch_embed.weight.clone()
    with torch.no_grad():
        model.encoder.patch_embed.weight.add_(1.0)
    model.update_target(100)
    m = ema_decay_at(100, 0.9)
    assert m == 0.9 and ema_decay_at(0, 0.9) == pytest.approx(0.1)
    torch.testing.assert_close(ema.patch_embed.weight, m * before + (1 - m) * model.encoder.patch_embed.weight)
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "step": 1}, tmp_path / "ckpt.pt")
    default = load_encoder(export(tmp_path / "ckpt.pt", tmp_path / "ema"))
    online = load_encoder(export(tmp_path / "ckpt.pt", tmp_path / "online", which="online"))
    torch.testing.assert_close(default.encoder.patch_embed.weight, ema.patch_embed.weight)
    torch.testing.assert_close(online.encoder.patch_embed.weight, model.encoder.patch_embed.weight)
    assert json.loads((tmp_path / "ema" / "config.json").read_text())["exported_encoder"] == "ema"


def test_weight_ema_is_refused_for_audiojepa_and_missing_averages_are_named(tmp_path):
    cfg = micro_config(optim__ema_decay=0.9)
    cfg.method = "audiojepa"
    with pytest.raises(ConfigError, match="already is an EMA"):
        cfg.validate()
    plain = micro_config()
    atomic_save({"config": plain.to_dict(), "model": build_objective(plain).state_dict(), "step": 0}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="no weight average"):
        export(tmp_path / "c.pt", tmp_path / "x", which="ema")


def test_weight_ema_module_is_a_frozen_copy():
    enc = ViTEncoder(micro_config().encoder, 256)
    w = WeightEMA(enc, 0.99)
    torch.testing.assert_close(w.encoder.patch_embed.weight, enc.patch_embed.weight)
    assert w.encoder.patch_embed.weight.data_ptr() != enc.patch_embed.weight.data_ptr()


# ----------------------------------------------------------------------------- quantizer


def test_each_codebook_gets_its_own_normalisation():
    fe = FrontendConfig()
    x = torch.randn(200, 256) * 20 - 30
    mixed = RandomProjectionQuantizer(QuantizerConfig(num_codebooks=2, codebook_norms=("patch", "global")), 256, fe)
    patch = RandomProjectionQuantizer(QuantizerConfig(num_codebooks=2, norm="patch"), 256, fe)
    glob = RandomProjectionQuantizer(QuantizerConfig(num_codebooks=2, norm="global"), 256, fe)
    codes = mixed(x)
    assert torch.equal(codes[:, 0], patch(x)[:, 0]) and torch.equal(codes[:, 1], glob(x)[:, 1])
    # a level shift changes nothing for the per-patch codebook and moves the global one
    shifted = mixed(x + 20)
    assert torch.equal(shifted[:, 0], codes[:, 0]) and not torch.equal(shifted[:, 1], codes[:, 1])
    with pytest.raises(ConfigError, match="2 entries for 3 codebooks"):
        QuantizerConfig(num_codebooks=3, codebook_norms=("patch", "global")).validate()


def _codes_by_hand(x: torch.Tensor, proj: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """argmax_k cos(patch-normalised x P, c_k) for one projection [in, d] and codebook [V, d]."""
    x = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-5)
    return (torch.nn.functional.normalize(x @ proj, dim=-1) @ codebook.T).argmax(-1)


def test_one_band_keeps_the_single_codebook_targets():
    q = RandomProjectionQuantizer(QuantizerConfig(codebook_size=64), 512, FrontendConfig())
    assert q.projection.shape == (1, 512, 16) and q.codebook.shape == (1, 64, 16)
    x = torch.randn(300, 512) * 20 - 30
    assert torch.equal(q(x)[:, 0], _codes_by_hand(x, q.projection[0], q.codebook[0]))


def test_bands_quantise_each_mel_band_on_its_own():
    cfg = QuantizerConfig(codebook_size=64, bands=4, num_codebooks=2)
    q = RandomProjectionQuantizer(cfg, 512, FrontendConfig())
    assert cfg.num_targets == 8 and q.projection.shape == (8, 128, 16) and q.codebook.shape == (8, 64, 16)
    x = torch.randn(300, 512) * 20 - 30  # a 128-mel x 4-frame patch, mel-major: band b = x[:, 128b : 128(b+1)]
    codes = q(x)
    assert codes.shape == (300, 8)
    for t in range(8):
        band = x[:, (t // 2) * 128 : (t // 2 + 1) * 128]
        assert torch.equal(codes[:, t], _codes_by_hand(band, q.projection[t], q.codebook[t]))
    # editing the lowest band moves its codes only; a level shift of one band moves nothing (per-band norm)
    edited = x.clone()
    edited[:, :128] = torch.randn(300, 128) * 20
    moved = q(edited)
    assert not torch.equal(moved[:, :2], codes[:, :2]) and torch.equal(moved[:, 2:], codes[:, 2:])
    shifted = x.clone()
    shifted[:, 128:256] += 25.0
    assert torch.equal(q(shifted), codes)
    assert codes.unique().numel() > 32  # the band codebooks are used, not collapsed


def test_bands_must_divide_the_patch_and_train_end_to_end():
    with pytest.raises(ConfigError, match="must divide the patch's 16 mel bands"):
        micro_config(quantizer__bands=3)
    with pytest.raises(ConfigError, match="bands must be >= 1"):
        QuantizerConfig(bands=0).validate()
    for method in ("bestrq2", "bestrq-vit"):
        cfg = micro_config(quantizer__bands=4)
        cfg.method = method
        obj = build_objective(cfg.validate())
        assert len(obj.heads.heads) == 4
        S = int(cfg.data.crop_seconds * cfg.frontend.sample_rate)
        wav, lengths = torch.randn(2, S) * 0.1, torch.tensor([S, S // 2])
        out = obj(wav, lengths, sample_batch_masks(cfg, lengths, S, mask_generator(0, 0, 0)))
        assert torch.isfinite(out["loss"]) and out["loss"].item() == pytest.approx(math.log(256), rel=0.2)


# ----------------------------------------------------------------------------- energy-aware crops


def test_clip_norm_targets_ignore_a_clip_wide_colouration_and_the_padding():
    """quantizer norm 'clip': each clip's mean patch over its real tokens is removed before the patch
    normalisation, so a fixed filter on the whole clip (the same dB shape added to every patch) leaves its
    codes unchanged, and whatever the padding tokens hold does not move the real tokens' codes."""
    fe = full_band().frontend
    qc = QuantizerConfig(norm="clip", bands=8, codebook_size=64)
    q, plain = RandomProjectionQuantizer(qc, 512, fe), RandomProjectionQuantizer(dataclasses.replace(qc, norm="patch"), 512, fe)
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(2, 12, 512, generator=g) * 10 - 40
    padding = torch.zeros(2, 12, dtype=torch.bool)
    padding[1, 8:] = True
    coloured = raw + torch.randn(512, generator=g) * 6  # a colouration in dB, the same for every patch of a clip

    def codes(x: torch.Tensor) -> torch.Tensor:
        return q(x, clip_mean(x, padding).expand_as(x))

    torch.testing.assert_close(codes(coloured), codes(raw), rtol=0, atol=0)
    assert (plain(coloured) != plain(raw)).any(), "without it the codes move"
    junk = raw.clone()
    junk[1, 8:] = 1e3
    torch.testing.assert_close(codes(junk)[~padding], codes(raw)[~padding], rtol=0, atol=0)
    with pytest.raises(ValueError, match="clip mean"):
        q(raw)


def test_clip_norm_per_codebook_trains_every_code_method():
    """``codebook_norms=patch,clip``: the first codebook's codes are the plain ones, the second's the
    clip-centred ones; every code-predicting method builds its targets that way and trains."""
    for method in ("bestrq2", "bestrq-vit", "bestrq-conformer"):
        cfg = full_band(quantizer__num_codebooks=2, quantizer__codebook_norms=("patch", "clip"))
        cfg.method = method
        model = build_objective(cfg)
        wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
        masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0))
        out = model(wav, lengths, masks)
        out["loss"].backward()
        assert out["loss"].isfinite() and out["targets"].shape[1] == 2 * cfg.quantizer.bands
    feats = model.frontend(wav, lengths)  # the Conformer's frames: [B, N, stacked frames]
    codes = masked_codes(model.quantizer, feats, masks)
    rows = []
    for b in range(2):  # by hand: each clip's mean over its real tokens, then every real masked patch
        real = feats["raw"][b][~feats["padding"][b]]
        for m in range(masks.ids_mask.shape[1]):
            if not masks.mask_pad[b, m]:
                rows.append((feats["raw"][b, masks.ids_mask[b, m]], real.mean(0)))
    patches, means = (torch.stack(t) for t in zip(*rows))
    torch.testing.assert_close(codes, model.quantizer(patches, means), rtol=0, atol=0)


def test_silent_fraction():
    x = np.zeros(SR, np.float32)
    x[SR // 2 :] = 0.1 * np.sin(np.arange(SR // 2) * 0.3)
    assert silent_fraction(x, SR, -60.0) == pytest.approx(0.5)
    assert silent_fraction(np.zeros(10, np.float32), SR, -60.0) == 0.0


def test_choose_crop_keeps_the_first_loud_enough_crop_or_the_least_silent():
    loud, half, silent = (np.full(SR, 0.1, np.float32), np.r_[np.zeros(SR // 2), np.full(SR // 2, 0.1)].astype(np.float32),
                          np.zeros(SR, np.float32))  # fmt: skip
    seq = [silent, half, loud]
    x, redraws = choose_crop(lambda i: seq[i], SR, 3, 0.2, -60.0, SR)
    assert x is loud and redraws == 2
    x, redraws = choose_crop(lambda i: [silent, half, silent][i], SR, 3, 0.2, -60.0, SR)
    assert x is half and redraws == 2

    def first_silent(i):
        raise AudioError("f", "silent")

    with pytest.raises(AudioError):
        choose_crop(first_silent, SR, 3, 0.2, -60.0, SR)


def test_energy_aware_crops_avoid_silence_in_real_files(tmp_path):
    # 7 s of near-silence, then 3 s of sound: most plain 1 s crops are silent (P = 6.5 / 9), the
    # first crop at most half silent is drawn with P = 3.5 / 9 per attempt
    x = np.zeros(10 * SR, np.float32)
    x[7 * SR :] = 0.2 * np.sin(np.arange(3 * SR) * 0.05)
    x[: 7 * SR] += 1e-4 * np.random.default_rng(0).standard_normal(7 * SR).astype(np.float32)  # not a 'silent' file
    path = tmp_path / "edge.wav"
    sf.write(path, x, SR)
    plain_cfg = micro_config(data__crop_seconds=1.0).data
    aware_cfg = micro_config(data__crop_seconds=1.0, data__crop_attempts=16, data__max_silent_fraction=0.5).data
    plain, aware = CropDataset([path], plain_cfg, SR), CropDataset([path], aware_cfg, SR)
    frac = lambda item: silent_fraction(item["wav"], SR, -60.0)  # noqa: E731
    plain_items = [plain[(e, 0)] for e in range(20)]
    aware_items = [aware[(e, 0)] for e in range(20)]
    assert np.mean([frac(i) > 0.5 for i in plain_items]) > 0.6
    assert np.mean([frac(i) > 0.5 for i in aware_items]) < 0.2
    assert collate(aware_items)["crop_redraws"] > 0 and collate(plain_items)["crop_redraws"] == 0


# ----------------------------------------------------------------------------- inference chunks


def test_inference_chunks_follow_frontend_chunk_seconds():
    cfg = micro_config(frontend__chunk_seconds=2.5)
    enc = BestRQ2Encoder(cfg.frontend, cfg.encoder).eval()
    wav = torch.randn(1, 5 * SR) * 0.1
    with torch.no_grad():
        whole, first = enc(wav), enc(wav[:, : int(2.5 * SR)])
    torch.testing.assert_close(whole[:, : first.shape[1]], first, atol=1e-5, rtol=1e-4)


def test_export_chunk_seconds_crop_takes_the_training_crop(micro_export, tmp_path):
    run = micro_export.parent / "run"  # the fixture's run: crop 2.5 s, chunks 10 s
    plain = load_encoder(export(run, tmp_path / "plain"))
    cropped = load_encoder(export(run, tmp_path / "crop", chunk_seconds="crop"))
    assert plain.chunk_samples == 10 * SR and cropped.chunk_samples == int(2.5 * SR)
    assert json.loads((tmp_path / "crop" / "config.json").read_text())["frontend"]["chunk_seconds"] == 2.5
    wav = torch.randn(1, 4 * SR) * 0.1
    with torch.no_grad():  # same weights; the cropped encoder's first chunk is the first 2.5 s alone
        a, b, head = plain(wav), cropped(wav), plain(wav[:, : int(2.5 * SR)])
    assert a.shape == b.shape
    torch.testing.assert_close(b[:, : head.shape[1]], head, atol=1e-4, rtol=1e-3)
    assert not torch.allclose(a[:, : head.shape[1]], head, atol=1e-4)  # one 4 s chunk: other context
    with pytest.raises(ConfigError, match="chunk_seconds"):
        export(run, tmp_path / "bad", chunk_seconds=0.1)


# ----------------------------------------------------------------------------- encoder freeze


def test_encoder_freeze_keeps_the_encoder_still_then_ramps_it_in():
    from bestrq2.training.optim import build_optimizer, encoder_lr_scale, set_lr

    cfg = micro_config(optim__encoder_freeze_fraction=0.2, optim__warmup_fraction=0.1)
    assert [encoder_lr_scale(s, 100, cfg.optim) for s in (0, 19, 20, 24, 29, 60)] == [0, 0, 0.1, 0.5, 1.0, 1.0]
    torch.manual_seed(0)
    model = build_objective(cfg)
    opt = build_optimizer(model, cfg.optim, torch.device("cpu"))
    assert sum(len(g["params"]) for g in opt.param_groups if g["encoder"]) == len(list(model.encoder.parameters()))
    enc0 = [p.detach().clone() for p in model.encoder.parameters()]
    pred0 = [p.detach().clone() for p in model.predictor.parameters()]
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, 2 * SR])
    masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0))
    model(wav, lengths, masks)["loss"].backward()
    base = set_lr(opt, 5, 100, cfg.optim)
    assert base > 0 and all(g["lr"] == (0.0 if g["encoder"] else base) for g in opt.param_groups)
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(enc0, model.encoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(pred0, model.predictor.parameters()))


# ----------------------------------------------------------------------------- local predictor, context


def _local_setup(neighbours: int, grid: tuple[int, int], padding: torch.Tensor, seed: int = 0, sides: str = "both"):
    from bestrq2.config import MaskConfig, PredictorConfig
    from bestrq2.masking import sample_masks
    from bestrq2.models.predictor import Predictor

    torch.manual_seed(seed)
    cfg = PredictorConfig(width=32, depth=2, heads=2, neighbours=neighbours, sides=sides)
    pred = Predictor(cfg, 16, "rope").eval()
    masks = sample_masks(padding, MaskConfig(ratio_min=0.7, ratio_max=0.7), torch.Generator().manual_seed(seed))
    return pred, masks


def _bracketing_steps(masks, b: int, j: int, tb: int, n: int, sides: str) -> set[int]:
    """The n nearest visible time steps on either side of masked slot j, or on its left only (the right
    when the left has none): the spec, written out."""
    t = int(masks.ids_mask[b, j]) % tb
    steps = sorted({int(i) % tb for i, pad in zip(masks.ids_keep[b], masks.keep_pad[b]) if not pad})
    left = [s for s in steps if s <= t][-n:]
    right = [s for s in steps if s >= t][:n]
    if sides == "left":
        return set(left or right)
    return set(left) | set(right)


@pytest.mark.parametrize("sides", ["both", "left"])
@pytest.mark.parametrize("grid", [(1, 20), (2, 10)])
def test_local_predictor_reads_only_the_nearest_visible_steps(grid, sides):
    fb, tb = grid
    padding = torch.zeros(2, fb * tb, dtype=torch.bool)
    padding.view(2, fb, tb)[1, :, 8:] = True  # the second clip is shorter: padding never counts as visible
    checked_right_fallback = False
    for n, seed in ((1, 0), (2, 0), (1, 3), (2, 3)):
        pred, masks = _local_setup(n, grid, padding, seed, sides)
        K = masks.ids_keep.shape[1]
        context = torch.randn(2, K, 16)
        with torch.no_grad():
            base = pred(context, masks, grid)
            for b in range(2):
                for k in range(K):
                    moved = context.clone()
                    moved[b, k] += 3.0
                    diff = (pred(moved, masks, grid) - base)[b].abs().amax(-1)  # [M]
                    step = int(masks.ids_keep[b, k]) % tb
                    for j in range(masks.ids_mask.shape[1]):
                        if masks.mask_pad[b, j]:
                            continue
                        reads = not masks.keep_pad[b, k] and step in _bracketing_steps(masks, b, j, tb, n, sides)
                        assert (diff[j] > 1e-4) == reads, (n, b, k, j)
                        checked_right_fallback |= reads and step > int(masks.ids_mask[b, j]) % tb
    assert checked_right_fallback  # some slot in these masks has to look right (both sides, or no left)


def test_local_predictor_is_off_by_default_and_trains():
    assert micro_config().predictor.neighbours == 0
    with pytest.raises(ConfigError, match="neighbours"):
        micro_config(predictor__neighbours=-1).validate()
    with pytest.raises(ConfigError, match="sides"):
        micro_config(predictor__sides="left").validate()
    cfg = full_band(predictor__neighbours=1)
    model = build_objective(cfg)
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
    masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0))
    loss = model(wav, lengths, masks)["loss"]
    loss.backward()
    assert loss.isfinite() and model.encoder.patch_embed.weight.grad.abs().sum() > 0


def test_attention_only_predictor_blocks_have_no_mlp_and_train():
    """predictor.mlp_ratio=0: blocks are x + g * attn(norm(x)) with no MLP, so predictor tokens interact
    only through attention weights; the encoder must not be built that way."""
    block = Block(16, 2, mlp_ratio=0.0, style=BlockStyle(layer_scale=0.1))
    assert block.mlp is None and block.norm2 is None and block.gamma2 is None
    x = torch.randn(2, 5, 16)
    assert torch.allclose(block(x), x + block.attn(block.norm1(x)) * block.gamma1)
    with pytest.raises(ConfigError, match="mlp_ratio"):
        micro_config(predictor__mlp_ratio=-1.0).validate()
    with pytest.raises(ConfigError, match="mlp_ratio"):
        micro_config(encoder__mlp_ratio=0.0).validate()
    cfg = full_band(predictor__mlp_ratio=0.0)
    model = build_objective(cfg)
    with_mlp = build_objective(full_band())
    n = lambda m: sum(p.numel() for p in m.predictor.parameters())  # noqa: E731
    b0 = with_mlp.predictor.blocks[0]
    mlp_part = sum(p.numel() for m in (b0.mlp, b0.norm2) for p in m.parameters())
    mlp_part += 0 if b0.gamma2 is None else b0.gamma2.numel()
    assert n(with_mlp) - n(model) == cfg.predictor.depth * mlp_part
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
    loss = model(wav, lengths, sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0)))["loss"]
    loss.backward()
    assert loss.isfinite() and model.encoder.patch_embed.weight.grad.abs().sum() > 0


def test_clip_head_predicts_every_masked_code_from_the_mean_of_the_real_visible_outputs(tmp_path):
    """predictor.clip_weight: one prediction per clip, from the mean of the encoder's outputs over its
    real (non-padding) visible tokens, scored against the code of every real masked patch; the total is
    the predictor's loss plus the weighted clip term, and the head is left out of the export."""
    assert micro_config().predictor.clip_weight == 0 and build_objective(full_band()).clip_heads is None
    with pytest.raises(ConfigError, match="clip_weight"):
        micro_config(predictor__clip_weight=-1.0).validate()
    cfg = full_band(predictor__clip_weight=0.5)
    model = build_objective(cfg).eval()
    seen = {}
    model.encoder.register_forward_hook(lambda m, i, o: seen.update(context=o.detach()))
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
    masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0))
    assert masks.keep_pad.any() and masks.mask_pad.any(), "the short clip pads both sets of slots"
    out = model(wav, lengths, masks)
    terms, row = [], 0
    for b in range(2):
        pooled = seen["context"][b][~masks.keep_pad[b]].mean(0)
        logp = model.clip_heads(pooled).log_softmax(-1)  # [C, V]
        for m in range(masks.ids_mask.shape[1]):
            if not masks.mask_pad[b, m]:
                terms.append(-logp.gather(-1, out["targets"][row][:, None]).mean())
                row += 1
    assert row == len(out["targets"])
    torch.testing.assert_close(out["clip_loss"], torch.stack(terms).mean())
    assert_extra_term(model, cfg, "clip_heads", out["clip_loss"], out["loss"], (wav, lengths, masks), tmp_path)


def test_patch_regression_scores_each_real_masked_patch_normalised_over_its_own_values(tmp_path):
    """predictor.regress_weight: a linear head on the predictor's output at every real masked slot regresses
    that slot's dB patch, normalised to zero mean and unit variance over its values (MAE's target); the total is
    the code loss plus the weighted term; predictor.code_weight=0 leaves the regression alone; the head is
    left out of the export."""
    assert build_objective(full_band()).regress_head is None
    for bad in ({"predictor__regress_weight": -1.0}, {"predictor__code_weight": -1.0}, {"predictor__code_weight": 0.0}):
        with pytest.raises(ConfigError, match="weight"):
            full_band(**bad).validate()
    cfg = full_band(predictor__regress_weight=0.5).validate()
    model = build_objective(cfg).eval()
    seen = {}
    model.predictor.register_forward_hook(lambda m, i, o: seen.update(hidden=o.detach()))
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
    masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0))
    assert masks.mask_pad.any(), "the short clip pads masked slots, which must not be scored"
    out = model(wav, lengths, masks)
    raw = model.frontend(wav, lengths)["raw"]
    preds, targets = [], []
    for b in range(2):
        for m, slot in enumerate(masks.ids_mask[b].tolist()):
            if not masks.mask_pad[b, m]:
                patch = raw[b, slot]
                targets.append((patch - patch.mean()) / (patch.std() + 1e-5))
                preds.append(model.regress_head(seen["hidden"][b, m]))
    torch.testing.assert_close(out["regress_loss"], F.mse_loss(torch.stack(preds), torch.stack(targets)))
    assert_extra_term(model, cfg, "regress_head", out["regress_loss"], out["loss"], (wav, lengths, masks), tmp_path)
    alone = build_objective(full_band(predictor__regress_weight=1.0, predictor__code_weight=0.0).validate()).eval()
    out = alone(wav, lengths, masks)
    torch.testing.assert_close(out["loss"], out["regress_loss"])
    assert out["code_loss"] > 0, "the code loss is still logged, with no weight"


def test_view_contrast_loss_rewards_views_that_find_their_own_clip():
    z = torch.randn(4, 16)
    same = torch.cat([z, z])  # two identical views of each of 4 clips, repeat-major
    assert view_contrast_loss(same, 2, 0.01) < 1e-3
    swapped = torch.cat([z, z[[1, 0, 3, 2]]])  # every view's partner is another clip's
    assert view_contrast_loss(swapped, 2, 0.01) > 10
    # three views: each row's two positives; the value is the mean over rows of their mean -log p
    z3 = torch.randn(6, 8)
    logits = F.normalize(z3, dim=-1) @ F.normalize(z3, dim=-1).T / 0.5
    expected = []
    for i in range(6):
        others = [j for j in range(6) if j != i]
        logp = logits[i, others].log_softmax(-1)
        expected.append(-torch.stack([logp[others.index(j)] for j in others if j % 2 == i % 2]).mean())
    torch.testing.assert_close(view_contrast_loss(z3, 3, 0.5), torch.stack(expected).mean())
    with pytest.raises(ValueError, match="views"):
        view_contrast_loss(z3, 1, 0.5)


def test_contrast_term_compares_the_pooled_views_of_each_clip(tmp_path):
    """predictor.contrast_weight: the mean of each mask row's real visible outputs, projected, is scored
    by view_contrast_loss; the total is the predictor's loss plus the weighted term; needs mask.repeats;
    the projector is left out of the export."""
    assert build_objective(full_band()).projector is None
    for bad in ({"predictor__contrast_weight": 1.0}, {"predictor__contrast_weight": -1.0, "mask__repeats": 2},
                {"predictor__contrast_weight": 1.0, "mask__repeats": 2, "predictor__contrast_temperature": 0.0}):  # fmt: skip
        with pytest.raises(ConfigError, match="contrast"):
            full_band(**bad).validate()
    cfg = full_band(predictor__contrast_weight=0.5, mask__repeats=2).validate()
    model = build_objective(cfg).eval()
    seen = {}
    model.encoder.register_forward_hook(lambda m, i, o: seen.update(context=o.detach()))
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
    masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0))
    assert masks.ids_keep.shape[0] == 4 and masks.keep_pad.any()
    out = model(wav, lengths, masks)
    pooled = torch.stack([seen["context"][r][~masks.keep_pad[r]].mean(0) for r in range(4)])
    torch.testing.assert_close(out["contrast_loss"], view_contrast_loss(model.projector(pooled), 2, 0.1))
    assert_extra_term(model, cfg, "projector", out["contrast_loss"], out["loss"], (wav, lengths, masks), tmp_path)


def test_teacher_targets_quantise_the_frozen_teachers_features_of_the_clean_clip(micro_export, tmp_path):
    """quantizer.teacher: the codes of each masked token are those of the teacher's feature of it, from
    the clean, unmasked clip; the teacher stays frozen and in eval mode, is checkpointed, never exported."""
    cfg = micro_config(quantizer__teacher=str(micro_export)).validate()
    model = build_objective(cfg).eval()
    teacher = load_encoder(micro_export).encoder
    assert model.quantizer.input_dim == teacher.width != cfg.frontend.patch_dim
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
    masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0))
    feats = model.frontend(wav, lengths)
    with torch.no_grad():
        final, inter = teacher.forward_intermediates(feats["patches"], feats["grid"], padding=feats["padding"], layers=[0])
    expected = model.quantizer(real_rows(gather_rows(final, masks.ids_mask), masks))
    assert torch.equal(masked_codes(model.quantizer, feats, masks), expected)
    mixed = {**feats, "patches": torch.randn_like(feats["patches"])}  # what the encoder reads does not matter
    assert torch.equal(masked_codes(model.quantizer, mixed, masks), expected)
    block0 = build_objective(micro_config(quantizer__teacher=str(micro_export), quantizer__teacher_layer=0)).eval()
    assert torch.equal(masked_codes(block0.quantizer, feats, masks), block0.quantizer(real_rows(gather_rows(inter[0], masks.ids_mask), masks)))
    model.train()
    assert not model.quantizer.teacher.training
    model(wav, lengths, masks)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in model.quantizer.teacher.parameters())
    assert model.encoder.patch_embed.weight.grad.abs().sum() > 0
    state = model.state_dict()
    assert "quantizer.teacher.encoder.patch_embed.weight" in state
    exported = exported_from(model, cfg, tmp_path, state)
    assert not any("teacher" in k for k in exported.state_dict())
    assert exported.encoder.patch_embed.weight.shape == model.encoder.patch_embed.weight.shape
    for over, match in (
        ({"quantizer__teacher": str(tmp_path / "absent")}, "absent"),
        ({"quantizer__teacher": str(micro_export), "quantizer__teacher_layer": 5}, "teacher_layer"),
        ({"quantizer__teacher": str(micro_export), "frontend__patch_freq": 128, "frontend__patch_time": 4}, "another frontend"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            build_objective(micro_config(**over).validate())
    with pytest.raises(ConfigError, match="global"):
        micro_config(quantizer__teacher=str(micro_export), quantizer__norm="global").validate()
    jepa = micro_config(quantizer__teacher=str(micro_export))
    jepa.method = "audiojepa"
    with pytest.raises(ConfigError, match="ViT code methods"):
        jepa.validate()


def test_teacher_runs_once_per_clip_in_fp32_whatever_the_repeats_autocast_or_export_precision(micro_export, tmp_path):
    cfg = micro_config(quantizer__teacher=str(micro_export), mask__repeats=2).validate()
    model = build_objective(cfg).eval()
    rows = []
    model.quantizer.teacher.register_forward_hook(lambda m, i, o: rows.append(o.shape[0]))
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
    masks = sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0))
    out = model(wav, lengths, masks)
    assert rows == [2], "one teacher pass over the 2 clips, not one per mask row"
    feats = repeat_views(model.frontend(wav, lengths), masks, 2)  # the 4 mask rows, teacher run on each
    assert torch.equal(out["targets"], masked_codes(model.quantizer, feats, masks))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model(wav, lengths, masks)["targets"], out["targets"]), "bf16 steps keep fp32 targets"
    # an export meant for int8 inference still teaches in fp32; the one-step ViT method takes a teacher too
    from bestrq2.inference import BestRQ2Encoder

    int8 = export(micro_export.parent / "run", tmp_path / "int8", dtype="int8")
    assert type(load_encoder(int8).encoder.blocks[0].attn.qkv) is not nn.Linear
    vit = micro_config(quantizer__teacher=str(int8))
    vit.method = "bestrq-vit"
    one_step = build_objective(vit.validate())
    assert type(one_step.quantizer.teacher.encoder.blocks[0].attn.qkv) is nn.Linear
    masks1 = sample_batch_masks(vit, lengths, wav.shape[1], mask_generator(0, 0, 0))
    one_step(wav, lengths, masks1)["loss"].backward()
    assert one_step.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert isinstance(load_encoder(micro_export), BestRQ2Encoder)


def test_contrast_term_is_fp32_under_autocast_and_needs_two_clips_per_micro_batch(tmp_path):
    z = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = view_contrast_loss(z, 2, 0.1)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, view_contrast_loss(z, 2, 0.1))
    (tmp_path / "audio").mkdir()
    for i in range(2):
        sf.write(tmp_path / "audio" / f"n{i}.wav", (0.1 * np.random.default_rng(i).standard_normal(3 * SR)).astype(np.float32), SR)
    cfg = micro_config(predictor__contrast_weight=1.0, mask__repeats=2, train__batch_size=2, train__accum_steps=2)
    with pytest.raises(ConfigError, match="2 clips per micro-batch"):
        pretrain(cfg.validate(), tmp_path / "audio", tmp_path / "run", progress=False, tensorboard=False)


def test_window_targets_quantise_each_patch_with_its_time_neighbours_band_by_band():
    """quantizer.window: a token's quantised input is its patch and its neighbours in time, laid out as one
    wider mel-major patch (so mel bands stay bands), padded past the clip's ends, within each mel row."""
    for cfg in (full_band(quantizer__window=3, quantizer__bands=4), micro_config(quantizer__window=3)):
        fe = cfg.validate().frontend
        q = RandomProjectionQuantizer(cfg.quantizer, fe.patch_dim, fe)
        feats = Frontend(fe)(torch.randn(1, 2 * SR) * 0.1)
        (fb, tb), (pf, pt), raw = feats["grid"], q.patch_shape, feats["raw"]
        win = q.inputs(feats).reshape(1, fb, tb, pf, 3 * pt)
        grid = raw.reshape(1, fb, tb, pf, pt)
        torch.testing.assert_close(win[..., pt : 2 * pt], grid)  # the patch itself in the middle
        torch.testing.assert_close(win[:, :, 1:, :, :pt], grid[:, :, :-1])  # its left neighbour in its own row
        torch.testing.assert_close(win[:, :, :-1, :, 2 * pt :], grid[:, :, 1:])  # its right one
        assert bool((win[:, :, 0, :, :pt] == fe.norm_mean).all() and (win[:, :, -1, :, 2 * pt :] == fe.norm_mean).all())
    # band b's code reads band b's mels only, over the whole window
    q = RandomProjectionQuantizer(full_band(quantizer__window=3, quantizer__bands=4).quantizer, 512, full_band().frontend)
    x = q.inputs(Frontend(full_band().frontend)(torch.randn(1, 2 * SR) * 0.1))[0]
    moved = x.clone().reshape(-1, 128, 12)
    moved[:, 32:] += torch.randn_like(moved[:, 32:])  # every mel but band 0's
    codes, codes_moved = q(x), q(moved.reshape(x.shape))
    assert torch.equal(codes[:, 0], codes_moved[:, 0]) and not torch.equal(codes[:, 1:], codes_moved[:, 1:])
    cfg = full_band(quantizer__window=5)
    model = build_objective(cfg.validate())
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
    model(wav, lengths, sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0)))["loss"].backward()
    assert model.quantizer.projection.shape[1] == 5 * 512 // cfg.quantizer.bands
    feats = model.frontend(wav, lengths)
    cached = model.quantizer.with_inputs(feats)  # windows built once per clip, before the mask repeats
    assert torch.equal(model.quantizer.inputs(cached), model.quantizer.windows(feats["raw"], feats["grid"]))
    for bad in (2, 0):
        with pytest.raises(ConfigError, match="window"):
            full_band(quantizer__window=bad).validate()


def test_lifter_codes_follow_the_envelope_and_ignore_the_harmonics():
    """quantizer.lifter / codebook_lifters: a codebook with a lifter codes each frame's mel spectrum rebuilt
    from its first cepstral coefficients, so a ripple across the mels above them (the harmonics of a pitch)
    leaves its codes alone while it moves the raw codebook's; band by band, with any norm."""
    full, twenty = lifter_matrix(128, 128), lifter_matrix(128, 20)
    torch.testing.assert_close(full, torch.eye(128), atol=1e-5, rtol=0)
    torch.testing.assert_close(twenty @ twenty, twenty, atol=1e-5, rtol=0)  # a projection ...
    assert int(torch.linalg.matrix_rank(twenty)) == 20  # ... onto 20 cepstral coefficients
    fe = full_band().frontend
    for norm in ("patch", "global", "clip"):
        qc = QuantizerConfig(codebook_size=64, bands=4, num_codebooks=2, codebook_lifters=(0, 20), norm=norm)
        q = RandomProjectionQuantizer(qc, 512, fe)
        plain = RandomProjectionQuantizer(dataclasses.replace(qc, codebook_lifters=()), 512, fe)  # same buffers
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 40, 128, 4, generator=g).cumsum(-2) * 2 - 40  # [clips, tokens, mels, frames]: smooth-ish spectra
        m = torch.arange(128.0)[:, None]
        ripple = 6 * torch.cos(math.pi * 37 * (m + 0.5) / 128)  # one cepstral coefficient above the lifter's 20
        gain = torch.rand(2, 40, 1, 1, generator=g) * 2  # per token, so the clip mean does not take it away
        raw, rippled = x.flatten(-2), (x + gain * ripple).flatten(-2)
        mean = clip_mean(raw, None).expand_as(raw) if norm == "clip" else None
        mean_r = clip_mean(rippled, None).expand_as(raw) if norm == "clip" else None
        codes, moved = q(raw, mean), q(rippled, mean_r)  # [2, 40, 8], band-major: target 2b + c
        assert torch.equal(codes[..., 0::2], plain(raw, mean)[..., 0::2])  # the raw codebook is unchanged
        assert torch.equal(codes[..., 1::2], moved[..., 1::2])  # the envelope codes ignore the ripple
        assert not torch.equal(codes[..., 0::2], moved[..., 0::2])  # the raw codes follow it
    cfg = full_band(quantizer__lifter=12)
    model = build_objective(cfg.validate())
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, SR])
    out = model(wav, lengths, sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0)))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert "lifter12" not in model.state_dict()  # rebuilt from the config, not stored
    with pytest.raises(ConfigError, match="2 entries for 3 codebooks"):
        QuantizerConfig(num_codebooks=3, codebook_lifters=(0, 12)).validate()
    # one setting for all codebooks beside a per-codebook one would be silently ignored: refused instead
    with pytest.raises(ConfigError, match="quantizer.lifter=12 is ignored"):
        QuantizerConfig(num_codebooks=2, codebook_lifters=(0, 12), lifter=12).validate()
    with pytest.raises(ConfigError, match="quantizer.norm=global is ignored"):
        QuantizerConfig(num_codebooks=2, codebook_norms=("patch", "clip"), norm="global").validate()
    QuantizerConfig(num_codebooks=2, codebook_lifters=(0, 12), codebook_norms=("patch", "clip")).validate()
    with pytest.raises(ConfigError, match="lifters must be >= 0"):
        QuantizerConfig(lifter=-1).validate()
    with pytest.raises(ConfigError, match="not to a teacher"):
        QuantizerConfig(lifter=12, teacher="somewhere").validate()
    with pytest.raises(ValueError, match="exceeds the patch's 128 mels"):
        RandomProjectionQuantizer(QuantizerConfig(lifter=200), 512, fe)
    with pytest.raises(ConfigError, match="at most the patch's 16 mels"):
        micro_config(quantizer__lifter=20)  # 16 x 16 patches


def test_self_only_encoder_pass_reads_no_other_token():
    cfg = micro_config(encoder__positions="rope")
    enc = ViTEncoder(cfg.encoder, cfg.frontend.patch_dim).eval()
    grid = (2, 6)
    patches = torch.randn(1, 12, cfg.frontend.patch_dim)
    moved = patches.clone()
    moved[0, 5] += 1.0
    with torch.no_grad():
        alone = enc.forward_intermediates(moved, grid, self_only=True)[0] - enc.forward_intermediates(patches, grid, self_only=True)[0]
        full = enc.forward_intermediates(moved, grid)[0] - enc.forward_intermediates(patches, grid)[0]
        layers = enc.all_layers(patches, grid, self_only=True)
    others = [i for i in range(12) if i != 5]
    assert alone[0, others].abs().max() < 1e-6 and alone[0, 5].abs().max() > 1e-3
    assert full[0, others].abs().max() > 1e-3
    torch.testing.assert_close(layers[-1], enc.forward_intermediates(patches, grid, self_only=True)[0])


def test_a_frozen_patch_embedding_stays_at_its_init_while_the_blocks_train():
    """encoder.freeze_patch_embed: the embedding is left out of the optimiser; the rest of the encoder learns."""
    from bestrq2.training.optim import build_optimizer

    cfg = full_band(encoder__freeze_patch_embed=True).validate()
    model = build_objective(cfg)
    before = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    optimizer = build_optimizer(model, cfg.optim, torch.device("cpu"))
    assert not any(p is model.encoder.patch_embed.weight for g in optimizer.param_groups for p in g["params"])
    wav, lengths = torch.randn(2, 2 * SR) * 0.1, torch.tensor([2 * SR, 2 * SR])
    model(wav, lengths, sample_batch_masks(cfg, lengths, wav.shape[1], mask_generator(0, 0, 0)))["loss"].backward()
    optimizer.step()
    after = model.encoder.state_dict()
    assert torch.equal(after["patch_embed.weight"], before["patch_embed.weight"])
    assert torch.equal(after["patch_embed.bias"], before["patch_embed.bias"])
    assert not torch.equal(after["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])
    assert build_objective(full_band()).encoder.patch_embed.weight.requires_grad
