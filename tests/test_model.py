"""Unit tests of the model parts, parametrised over every registered preset."""

import pytest
import torch

from bestrq2.config import PRESETS, get_preset
from bestrq2.frontend import token_padding
from bestrq2.inference import BestRQ2Encoder
from bestrq2.masking import mask_generator, sample_masks
from bestrq2.models.positions import sincos_2d
from bestrq2.objectives import build_objective
from bestrq2.quantizer import RandomProjectionQuantizer, code_usage
from tests.conftest import micro_config


def _batch(cfg, B=2, seconds=None):
    S = int((seconds or cfg.data.crop_seconds) * cfg.frontend.sample_rate)
    wav = torch.randn(B, S) * 0.1
    lengths = torch.full((B,), S)
    masks = sample_masks(token_padding(cfg.frontend, lengths, S), cfg.mask, mask_generator(0, 0, 0))
    return wav, lengths, masks


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_one_step(preset):
    cfg = get_preset(preset)
    cfg.data.crop_seconds = 2.5  # keep the base preset fast on CPU
    cfg.validate()
    torch.manual_seed(0)
    model = build_objective(cfg)
    wav, lengths, masks = _batch(cfg)
    out = model(wav, lengths, masks)
    assert out["loss"].isfinite()
    n_real = int((~masks.mask_pad).sum())
    assert out["targets"].shape == (n_real, cfg.quantizer.num_targets)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad), "every trained parameter gets a gradient"


@pytest.mark.parametrize("positions", ["sincos", "rope"])
def test_encoder_sees_exactly_the_visible_tokens(positions):
    cfg = micro_config(encoder__positions=positions)
    model = build_objective(cfg).eval()
    wav, lengths, masks = _batch(cfg, B=3)
    seen = {}
    model.encoder.blocks[0].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    model(wav, lengths, masks)
    feats = model.frontend(wav, lengths)
    K = masks.ids_keep.shape[1]
    assert seen["x"].shape == (3, K, cfg.encoder.width)
    visible = torch.gather(feats["patches"], 1, masks.ids_keep[..., None].expand(-1, -1, feats["patches"].shape[-1]))
    expected = model.encoder.patch_embed(visible)
    if positions == "sincos":
        expected = expected + sincos_2d(feats["grid"], cfg.encoder.width)[masks.ids_keep]
    torch.testing.assert_close(seen["x"], expected)


def test_positions_do_not_depend_on_clip_length():
    short, long = sincos_2d((8, 8), 64), sincos_2d((8, 16), 64)
    torch.testing.assert_close(short.reshape(8, 8, 64), long.reshape(8, 16, 64)[:, :8])


@pytest.mark.parametrize("positions", ["sincos", "rope"])
def test_padded_clip_gives_the_same_tokens_as_the_short_clip(positions):
    """A 5 s clip alone and the same clip zero-padded to 10 s (with its length) give the same
    frames: positions are per absolute index and padding tokens are masked out of attention."""
    cfg = micro_config(encoder__positions=positions)
    enc = BestRQ2Encoder(cfg.frontend, cfg.encoder).eval()
    sr = cfg.frontend.sample_rate
    clip = torch.randn(1, 5 * sr) * 0.1
    padded = torch.nn.functional.pad(clip, (0, 5 * sr))
    with torch.no_grad():
        alone = enc(clip)
        both = enc(torch.cat([padded, torch.randn(1, 10 * sr) * 0.1]), lengths=torch.tensor([5 * sr, 10 * sr]))
    assert alone.shape == (1, 8, cfg.encoder.width) and both.shape == (2, 16, cfg.encoder.width)
    torch.testing.assert_close(both[0, :8], alone[0], atol=1e-5, rtol=1e-4)


def test_long_audio_is_chunked_into_10s_pieces():
    cfg = micro_config()
    enc = BestRQ2Encoder(cfg.frontend, cfg.encoder).eval()
    sr = cfg.frontend.sample_rate
    wav = torch.randn(2, 25 * sr) * 0.1
    with torch.no_grad():
        out = enc(wav)
        first = enc(wav[:, : 10 * sr])
    assert out.shape == (2, 40, cfg.encoder.width)  # 25 s / 0.625 s
    torch.testing.assert_close(out[:, :16], first, atol=1e-5, rtol=1e-4)


def test_intermediate_layers():
    cfg = micro_config()
    enc = BestRQ2Encoder(cfg.frontend, cfg.encoder).eval()
    wav = torch.randn(1, 3 * cfg.frontend.sample_rate)
    with torch.no_grad():
        last, inter = enc.encoder.forward_intermediates(*_patches(enc, wav), layers=[0, -1])
    assert len(inter) == 2 and inter[0].shape == last.shape
    torch.testing.assert_close(enc.encoder.norm(inter[1]), last)
    assert enc(wav, layer=0).shape == enc(wav).shape


def _patches(enc, wav):
    f = enc.frontend(wav)
    return f["patches"], f["grid"]


def test_quantizer_deterministic_from_seed_and_uses_codes():
    cfg = micro_config()
    q1 = RandomProjectionQuantizer(cfg.quantizer, 256, cfg.frontend)
    q2 = RandomProjectionQuantizer(cfg.quantizer, 256, cfg.frontend)
    torch.testing.assert_close(q1.projection, q2.projection, rtol=0, atol=0)
    torch.testing.assert_close(q1.codebook, q2.codebook, rtol=0, atol=0)
    cfg.quantizer.seed = 1
    q3 = RandomProjectionQuantizer(cfg.quantizer, 256, cfg.frontend)
    assert not torch.equal(q1.projection, q3.projection)
    assert not any(p.requires_grad for p in q1.buffers()) and not list(q1.parameters())
    x = torch.randn(1000, 256) * 10 - 40
    codes = q1(x)
    assert codes.shape == (1000, 1) and codes.dtype == torch.long
    usage = code_usage(codes, cfg.quantizer.codebook_size)
    assert 1 < usage["perplexity"] <= usage["codes_used"] <= cfg.quantizer.codebook_size
    assert {"projection", "codebook"} <= set(q1.state_dict())


def test_several_codebooks():
    cfg = micro_config(quantizer__num_codebooks=3)
    model = build_objective(cfg)
    wav, lengths, masks = _batch(cfg)
    out = model(wav, lengths, masks)
    assert out["targets"].shape[1] == 3
    out["loss"].backward()


def test_no_weight_decay_on_norms_biases_tokens():
    from bestrq2.training.optim import param_groups

    model = build_objective(micro_config())
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "predictor.mask_token" in no_decay_names
    assert all(p.ndim >= 2 for p in decay["params"])
    assert any(n.endswith("norm1.weight") for n in no_decay_names) and any(n.endswith(".bias") for n in no_decay_names)
