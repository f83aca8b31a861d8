"""Waveform -> log-mel (dB) -> 16x16 patches, in plain torch, batched, on any device.

The reference frontend is a power mel spectrogram (n_fft 2048, hop 625, 128 HTK mels,
0-8 kHz, centred frames, no filter normalisation) followed by 10*log10.
Patches are numbered row-major over (mel block, time block), as ``F.unfold`` numbers them,
and each patch vector is flattened (mel, time) like a Conv2d(1, D, 16, stride=16) kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bestrq2.config import FrontendConfig


def hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    """Triangular HTK mel filters without area normalisation: [n_fft // 2 + 1, n_mels] (float64)."""
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    m_lo, m_hi = hz_to_mel(torch.tensor(f_min, dtype=torch.float64)), hz_to_mel(torch.tensor(f_max, dtype=torch.float64))
    edges = mel_to_hz(torch.linspace(float(m_lo), float(m_hi), n_mels + 2, dtype=torch.float64))  # [n_mels + 2]
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower[None]) / (centre - lower)[None]  # [n_freqs, n_mels]
    falling = (upper[None] - freqs[:, None]) / (upper - centre)[None]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class LogMel(nn.Module):
    """[B, S] float waveform -> [B, n_mels, frames] dB, plus frames that hold real audio."""

    def __init__(self, cfg: FrontendConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=True)
        fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
        self.register_buffer("mel_fb", fb.float(), persistent=True)  # [n_freqs, n_mels]

    def forward(self, wav: Tensor) -> Tensor:
        cfg = self.cfg
        with torch.autocast(device_type=wav.device.type, enabled=False):
            wav = wav.float()
            if wav.shape[-1] <= cfg.n_fft // 2:  # reflect padding needs more than n_fft / 2 samples
                wav = F.pad(wav, (0, cfg.n_fft // 2 + 1 - wav.shape[-1]))
            spec = torch.stft(
                wav,
                n_fft=cfg.n_fft,
                hop_length=cfg.hop_length,
                win_length=cfg.n_fft,
                window=self.window,
                center=True,
                pad_mode=cfg.pad_mode,
                return_complex=True,
            )  # [B, n_freqs, frames]
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(power.transpose(1, 2), self.mel_fb).transpose(1, 2)  # [B, n_mels, frames]
            floor = 10.0 ** (cfg.db_floor / 10.0)
            return 10.0 * torch.log10(torch.clamp(mel, min=floor))


def token_lengths(cfg: FrontendConfig, lengths: Tensor) -> Tensor:
    """Number of time steps of the token grid that hold real audio, per example: [B]."""
    return torch.clamp(torch.div(lengths + cfg.samples_per_token - 1, cfg.samples_per_token, rounding_mode="floor"), min=1)


def token_padding(cfg: FrontendConfig, lengths: Tensor, num_samples: int) -> Tensor:
    """[B] clip lengths in a batch padded to ``num_samples`` -> [B, N] bool, True = padding token."""
    t_tok = cfg.time_patches(num_samples)
    n_tok = token_lengths(cfg, lengths)  # [B]
    padding = torch.arange(t_tok, device=lengths.device)[None, :] >= n_tok[:, None]  # [B, T_tok]
    return padding[:, None, :].expand(-1, cfg.freq_patches, t_tok).reshape(lengths.shape[0], -1)


class Frontend(nn.Module):
    """Waveform batch -> normalised patches for the encoder, raw dB patches for targets, padding.

    Returns a dict:
      ``patches``  [B, N, P] normalised ((dB - mean) / std) patches, N = n_freq_blocks * T_tok
      ``raw``      [B, N, P] dB patches (what the quantizer sees, as in the reference)
      ``padding``  [B, N] bool, True where a token holds no audio
      ``grid``     (n_freq_blocks, T_tok)
    Frames past a clip's end are set to the normalised mean (0), so zero padding never
    becomes -100 dB "signal".
    """

    def __init__(self, cfg: FrontendConfig):
        super().__init__()
        self.cfg = cfg
        self.logmel = LogMel(cfg)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor | tuple[int, int]]:
        cfg = self.cfg
        B, S = wav.shape
        if lengths is None:
            lengths = torch.full((B,), S, dtype=torch.long, device=wav.device)
        mel = self.logmel(wav)  # [B, F, frames]
        t_tok = cfg.time_patches(S)
        n_frames = t_tok * cfg.patch_time
        # crop or pad to whole patches, without a branch on the length (traceable for ONNX)
        mel = F.pad(mel, (0, torch.sym_max(0, n_frames - mel.shape[-1])), value=cfg.norm_mean)[..., :n_frames]
        # frames whose centre lies past the clip's end are padding
        frame_valid = (
            torch.arange(n_frames, device=wav.device)[None] * cfg.hop_length < lengths[:, None]
        )  # [B, frames]
        mel = torch.where(frame_valid[:, None, :], mel, torch.full_like(mel, cfg.norm_mean))
        raw = patchify(mel, cfg.patch_freq, cfg.patch_time)  # [B, N, P]
        padding = token_padding(cfg, lengths, S)  # [B, N]
        patches = (raw - cfg.norm_mean) / cfg.norm_std
        return {"patches": patches, "raw": raw, "padding": padding, "grid": (cfg.freq_patches, t_tok)}


def patchify(mel: Tensor, pf: int, pt: int) -> Tensor:
    """[B, F, T] -> [B, (F/pf) * (T/pt), pf * pt], row-major over (mel block, time block)."""
    B, Fq, T = mel.shape
    x = mel.reshape(B, Fq // pf, pf, T // pt, pt)  # [B, Fb, pf, Tb, pt]
    x = x.permute(0, 1, 3, 2, 4)  # [B, Fb, Tb, pf, pt]
    return x.reshape(B, (Fq // pf) * (T // pt), pf * pt)


def unpatchify(x: Tensor, grid: tuple[int, int], pf: int, pt: int) -> Tensor:
    """Inverse of :func:`patchify`: [B, N, pf * pt] -> [B, F, T]."""
    B = x.shape[0]
    fb, tb = grid
    x = x.reshape(B, fb, tb, pf, pt).permute(0, 1, 3, 2, 4)  # [B, Fb, pf, Tb, pt]
    return x.reshape(B, fb * pf, tb * pt)


def num_frames(cfg: FrontendConfig, num_samples: int) -> int:
    """Frames produced by the centred STFT for ``num_samples`` samples."""
    return 1 + num_samples // cfg.hop_length


def seconds_to_samples(cfg: FrontendConfig, seconds: float) -> int:
    return int(math.floor(seconds * cfg.sample_rate))
