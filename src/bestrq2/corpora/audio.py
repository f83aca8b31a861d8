"""Audio helpers shared by every builder: decode, resample to 16 kHz mono, normalise, write atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
"""Every clip the builders write is mono at this rate."""

AUDIO_EXT = ".flac"
SILENCE_RMS = 1e-4
"""A clip whose RMS is below this counts as silent (about -80 dBFS)."""


def to_mono_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """[T] or [T, C] float audio at `sr` -> [T'] float32 mono at SAMPLE_RATE."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)  # [T, C] -> [T]
    if sr != SAMPLE_RATE:
        x = soxr.resample(x, sr, SAMPLE_RATE).astype(np.float32)
    return x


def to_mono_16k_from(x: np.ndarray, sr: int) -> np.ndarray:
    """Reinterpret [T] 16 kHz audio as if sampled at `sr` and resample back (sr > 16k: slower, lower)."""
    return soxr.resample(np.asarray(x, dtype=np.float32), sr, SAMPLE_RATE).astype(np.float32)


def load(path: str | Path) -> np.ndarray:
    """Decode any file soundfile reads (wav, flac, ogg, mp3) -> [T] float32 mono at 16 kHz."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    return to_mono_16k(x, sr)


def trim(x: np.ndarray, threshold_db: float = -50.0, pad_s: float = 0.05) -> np.ndarray:
    """Cut leading and trailing near-silence (relative to the clip's peak), keeping a short pad."""
    if x.size == 0:
        return x
    peak = float(np.abs(x).max())
    if peak <= 0:
        return x[:0]
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (threshold_db / 20))
    pad = int(pad_s * SAMPLE_RATE)
    return x[max(0, loud[0] - pad) : loud[-1] + 1 + pad]


def normalize(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale so that max |x| == peak (silent input is returned unchanged)."""
    m = float(np.abs(x).max()) if x.size else 0.0
    return x if m <= 0 else (x * (peak / m)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def is_usable(x: np.ndarray, min_seconds: float = 0.2) -> bool:
    """Long enough, finite and not silent."""
    return x.size >= min_seconds * SAMPLE_RATE and bool(np.isfinite(x).all()) and rms(x) > SILENCE_RMS


def write(path: str | Path, x: np.ndarray) -> float:
    """Write [T] float audio as 16-bit FLAC at 16 kHz via tmp + rename; returns the duration in seconds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    y = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float32)), -1.0, 1.0)
    sf.write(str(tmp), y, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
    return len(y) / SAMPLE_RATE


def duration(path: str | Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def concat(parts: list[np.ndarray], gap_s: float = 0.3) -> np.ndarray:
    """Join clips with `gap_s` seconds of silence between them."""
    if not parts:
        return np.zeros(0, dtype=np.float32)
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    out: list[np.ndarray] = []
    for i, p in enumerate(parts):
        if i:
            out.append(gap)
        out.append(np.asarray(p, dtype=np.float32))
    return np.concatenate(out)
