"""X-ARES and XARES-LLM adapters: the example loads through X-ARES's own loader and checker, and the
XARES-LLM encoder honours padding and returns the frame mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bestrq2.evaluation.adapters import XaresLLMEncoder, check_xares_llm_encoder

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def _load_example(monkeypatch: pytest.MonkeyPatch) -> type:
    """The way `python -m xares.run examples/xares_encoder.py ...` finds the class."""
    from xares.utils import attr_from_py_path

    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))
    return attr_from_py_path("examples/xares_encoder.py", endswith="Encoder")


def test_x_ares_example_loads_from_env_and_passes_checker(micro_export, monkeypatch):
    from xares.audio_encoder_checker import check_audio_encoder

    cls = _load_example(monkeypatch)
    monkeypatch.delenv("BESTRQ2_MODEL_DIR", raising=False)
    with pytest.raises(ValueError, match="BESTRQ2_MODEL_DIR"):
        cls()
    monkeypatch.setenv("BESTRQ2_MODEL_DIR", str(micro_export))
    enc = cls()
    assert type(enc).__name__.endswith("Encoder") and check_audio_encoder(enc)
    assert (enc.sampling_rate, enc.output_dim, enc.hop_size_in_ms) == (16000, 64, 625.0)
    with torch.inference_mode():
        out = enc(torch.randn(2, 50000))
    assert out.shape == (2, 5, 64)
    monkeypatch.setenv("BESTRQ2_LAYER", "0")
    with torch.inference_mode():
        assert not torch.allclose(cls()(torch.ones(1, 20000) * 0.1), enc(torch.ones(1, 20000) * 0.1))


def test_xares_llm_encoder_contract(micro_export):
    enc = XaresLLMEncoder(micro_export)
    check_xares_llm_encoder(enc)
    assert enc.output_dim == 64 and sum(p.numel() for p in enc.parameters()) > 0
    try:  # the real checker, where xares-llm is installed
        from xares_llm.audio_encoder_checker import check_audio_encoder as check_llm
    except ImportError:
        return
    check_llm(enc)


def test_xares_llm_encoder_model_dir_from_env(micro_export, monkeypatch):
    monkeypatch.delenv("BESTRQ2_MODEL_DIR", raising=False)
    with pytest.raises(ValueError, match="BESTRQ2_MODEL_DIR"):
        XaresLLMEncoder()
    monkeypatch.setenv("BESTRQ2_MODEL_DIR", str(micro_export))
    assert XaresLLMEncoder().output_dim == 64


def test_xares_llm_padding_gives_the_unpadded_frames(micro_export):
    """Clips zero-padded into one batch (with the attention mask) give the frames each gets alone,
    wherever the returned mask keeps a frame; the mask marks exactly each clip's frames."""
    enc = XaresLLMEncoder(micro_export).eval()
    g = torch.Generator().manual_seed(0)
    lengths = [50000, 23456, 10000, 170000]  # the last one spans two 10 s chunks
    clips = [0.1 * torch.randn(n, generator=g) for n in lengths]
    T = max(lengths)
    audio = torch.zeros(len(clips), T)
    mask = torch.zeros(len(clips), T, dtype=torch.long)
    for i, c in enumerate(clips):
        audio[i, : len(c)] = c
        mask[i, : len(c)] = 1
    with torch.inference_mode():
        feats, out_mask = enc(audio, mask)
        assert feats.shape == (4, 17, 64) and out_mask.shape == (4, 17) and out_mask.dtype == torch.long
        assert out_mask.sum(1).tolist() == [5, 3, 1, 17]  # ceil(samples / 10000)
        for i, c in enumerate(clips):
            alone, alone_mask = enc(c[None])
            n = int(out_mask[i].sum())
            assert alone.shape[1] == n and bool(alone_mask.all())
            torch.testing.assert_close(feats[i, :n], alone[0], atol=1e-4, rtol=1e-4)
        # without the mask, the padding is taken for audio and the short clips' frames change
        unmasked, none_mask = enc(audio)
        assert bool(none_mask.all())
        assert not torch.allclose(unmasked[1, :3], feats[1, :3], atol=1e-4)
