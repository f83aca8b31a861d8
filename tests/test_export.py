"""Export holds the frontend and encoder only, reloads to identical outputs, passes the X-ARES checker."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

import bestrq2
from bestrq2.cli import main as cli_main
from bestrq2.export import build_from_checkpoint, export
from bestrq2.frontend import token_padding
from bestrq2.masking import mask_generator, sample_masks
from bestrq2.objectives import build_objective
from bestrq2.training.checkpoint import load_checkpoint
from bestrq2.training.loop import pretrain
from tests.conftest import micro_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A few steps of training on synthetic tones (enough to move every weight away from init)."""
    root = tmp_path_factory.mktemp("export")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        t = np.arange(int(16000 * (2 + i))) / 16000
        x = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(audio / f"tone{i}.wav", x.astype(np.float32), 16000)
    cfg = micro_config(train__max_steps=3)
    pretrain(cfg, audio, root / "run", progress=False, tensorboard=False)
    return root


def test_export_holds_no_predictor_and_reloads_identically(trained_run, tmp_path):
    out = export(trained_run / "run", tmp_path / "exp")
    keys = set(load_file(str(out / "model.safetensors")))
    assert keys and all(k.startswith(("frontend.", "encoder.")) for k in keys)
    assert not any(w in k for k in keys for w in ("predictor", "heads", "quantizer", "mask_token"))
    meta = json.loads((out / "config.json").read_text())
    assert meta["hop_size_in_ms"] == 625.0 and meta["output_dim"] == 64 and "predictor" not in meta

    loaded = bestrq2.load_encoder(out)
    assert type(loaded).__name__.endswith("Encoder")
    assert loaded.sampling_rate == 16000 and loaded.output_dim == 64 and loaded.hop_size_in_ms == 625.0
    ckpt = load_checkpoint(trained_run / "run")
    reference, cfg = build_from_checkpoint(ckpt)
    wav = torch.randn(2, 37000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(loaded(wav), reference.eval()(wav), rtol=0, atol=0)

    # and the training model's encoder, run on all tokens, gives the same tokens
    model = build_objective(cfg).eval()
    model.load_state_dict(ckpt["model"])
    with torch.no_grad():
        feats = model.frontend(wav)
        tokens = model.encoder(feats["patches"], feats["grid"])  # [B, N, D]
        frames = tokens.reshape(2, *feats["grid"], -1).mean(1)
        torch.testing.assert_close(loaded(wav), frames)


def test_random_init_export_differs_from_trained(trained_run, tmp_path):
    cfg = micro_config(train__max_steps=0)
    pretrain(cfg, trained_run / "audio", tmp_path / "rand", progress=False, tensorboard=False)
    a = bestrq2.load_encoder(export(tmp_path / "rand", tmp_path / "e0"))
    b = bestrq2.load_encoder(export(trained_run / "run", tmp_path / "e1"))
    wav = torch.randn(1, 16000)
    with torch.no_grad():
        assert not torch.allclose(a(wav), b(wav))


def test_xares_checker_accepts_the_export(trained_run, tmp_path):
    checker = pytest.importorskip("xares.audio_encoder_checker")
    enc = bestrq2.load_encoder(export(trained_run / "run", tmp_path / "exp"))
    assert checker.check_audio_encoder(enc)


def test_embed_cli_writes_npz(trained_run, tmp_path):
    out = export(trained_run / "run", tmp_path / "exp")
    files = sorted((trained_run / "audio").glob("*.wav"))[:3]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    npz = tmp_path / "emb.npz"
    assert cli_main(["embed", str(out), *map(str, files), str(bad), "--out", str(npz)]) == 0
    d = np.load(npz)
    assert list(d["paths"]) == [str(f) for f in files]
    assert d["pooled"].shape == (3, 64) and float(d["hop_size_in_ms"]) == 625.0
    n0 = sf.info(str(files[0])).frames
    assert d["emb_0"].shape == (int(np.ceil(n0 / 10000)), 64)
    # a folder stands for its audio files, searched recursively as pretrain --data does
    assert cli_main(["embed", str(out), str(trained_run / "audio"), "--out", str(tmp_path / "all.npz")]) == 0
    assert list(np.load(tmp_path / "all.npz")["paths"]) == [str(f) for f in sorted((trained_run / "audio").rglob("*.wav"))]


def test_pretraining_masks_match_the_inference_grid():
    """The token grid of a training crop is the grid the exported encoder uses at inference."""
    cfg = micro_config()
    S = int(cfg.data.crop_seconds * 16000)
    pad = token_padding(cfg.frontend, torch.tensor([S]), S)
    m = sample_masks(pad, cfg.mask, mask_generator(0, 0, 0))
    assert m.ids_keep.shape[1] + m.ids_mask.shape[1] == cfg.frontend.freq_patches * cfg.frontend.time_patches(S)


def test_concat_pooling_keeps_every_frequency_block(trained_run, tmp_path):
    mean = bestrq2.load_encoder(export(trained_run / "run", tmp_path / "mean"))
    cat = bestrq2.load_encoder(export(trained_run / "run", tmp_path / "cat", pooling="concat"))
    assert json.loads((tmp_path / "cat" / "config.json").read_text())["pooling"] == "concat"
    assert cat.output_dim == 8 * mean.output_dim
    wav = torch.randn(2, 40000) * 0.1
    with torch.no_grad():
        a, b = mean(wav), cat(wav)  # [2, 4, 64], [2, 4, 512]
    assert b.shape == (2, 4, 512)
    torch.testing.assert_close(b.reshape(2, 4, 8, 64).mean(2), a)
    checker = pytest.importorskip("xares.audio_encoder_checker")
    assert checker.check_audio_encoder(cat)


def test_export_blocks_keeps_the_first_blocks_and_the_final_norm(trained_run, tmp_path):
    out = export(trained_run / "run", tmp_path / "exp1", blocks=1)
    meta = json.loads((out / "config.json").read_text())
    assert meta["encoder"]["depth"] == 1 and meta["trained_depth"] == 2
    assert not any(k.startswith("encoder.blocks.1.") for k in load_file(str(out / "model.safetensors")))
    loaded = bestrq2.load_encoder(out)
    # the training model's encoder: raw output of block 1 through the final norm, pooled over frequency
    ckpt = load_checkpoint(trained_run / "run")
    _, cfg = build_from_checkpoint(ckpt)
    model = build_objective(cfg).eval()
    model.load_state_dict(ckpt["model"])
    wav = torch.randn(2, 37000) * 0.1
    with torch.no_grad():
        feats = model.frontend(wav)
        _, (block1,) = model.encoder.forward_intermediates(feats["patches"], feats["grid"], layers=[0])
        frames = model.encoder.norm(block1).reshape(2, *feats["grid"], -1).mean(1)
        full = bestrq2.load_encoder(export(trained_run / "run", tmp_path / "full"))(wav)
        torch.testing.assert_close(loaded(wav), frames)
    assert not torch.allclose(loaded(wav), full)


@pytest.mark.parametrize("blocks", ["0", "3"])
def test_export_blocks_out_of_range_is_a_clear_error(trained_run, tmp_path, capsys, blocks):
    rc = cli_main(["export", str(trained_run / "run"), "--out", str(tmp_path / "e"), "--blocks", blocks])
    assert rc != 0
    assert "between 1 and the encoder's depth 2" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
