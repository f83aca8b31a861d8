import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bestrq2.config import FrontendConfig
from bestrq2.frontend import Frontend, LogMel, mel_filterbank, patchify, token_padding, unpatchify

librosa = pytest.importorskip("librosa")


def test_mel_filterbank_matches_librosa():
    cfg = FrontendConfig()
    ours = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max).numpy().T
    ref = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.f_max, htk=True, norm=None
    )
    assert ours.shape == ref.shape == (128, 1025)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_logmel_matches_librosa_power_db(pad_mode):
    cfg = FrontendConfig(pad_mode=pad_mode)
    rng = np.random.default_rng(0)
    t = np.arange(3 * cfg.sample_rate) / cfg.sample_rate
    wav = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    ours = LogMel(cfg)(torch.from_numpy(wav)[None].double().float())[0].numpy()
    mel = librosa.feature.melspectrogram(
        y=wav.astype(np.float64), sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
        fmin=cfg.f_min, fmax=cfg.f_max, htk=True, norm=None, power=2.0, center=True, pad_mode=pad_mode,
    )
    ref = 10 * np.log10(np.maximum(mel, 1e-10))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3)  # dB; float32 STFT vs float64


def test_patchify_is_row_major_like_unfold():
    x = torch.randn(2, 128, 64)
    ours = patchify(x, 16, 16)  # [B, N, 256]
    ref = F.unfold(x[:, None], kernel_size=16, stride=16).transpose(1, 2)  # [B, N, 256]
    assert ours.shape == (2, 8 * 4, 256)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(unpatchify(ours, (8, 4), 16, 16), x)


def test_frontend_shapes_and_padding():
    cfg = FrontendConfig()
    fe = Frontend(cfg)
    S = 10 * cfg.sample_rate
    wav = torch.randn(3, S) * 0.1
    lengths = torch.tensor([S, 5 * cfg.sample_rate, 1234])
    wav[1, lengths[1]:] = 0
    wav[2, lengths[2]:] = 0
    out = fe(wav, lengths)
    assert out["grid"] == (8, 16)
    assert out["patches"].shape == out["raw"].shape == (3, 128, 256)
    pad = out["padding"].reshape(3, 8, 16)
    assert not pad[0].any()
    assert (~pad[1]).sum() == 8 * 8 and not pad[1, :, :8].any()
    assert (~pad[2]).sum() == 8  # one token column for 77 ms of audio
    # padded frames carry the normalised mean (0), never -100 dB
    assert out["patches"][1][out["padding"][1]].abs().max() == 0
    torch.testing.assert_close(token_padding(cfg, lengths, S), out["padding"])


def test_token_count_rounds_up():
    cfg = FrontendConfig()
    assert cfg.hop_size_in_ms == 625.0
    assert cfg.time_patches(160000) == 16
    assert cfg.time_patches(50000) == 5
    assert cfg.time_patches(50001) == 6
    out = Frontend(cfg)(torch.randn(1, 500))  # shorter than half a window still works
    assert out["grid"] == (8, 1)
