"""Decoding: any soundfile-readable file -> mono float32 at the target rate, optionally a random crop.

Crops seek inside the file (sample-exact for WAV, FLAC, OGG, MP3 in libsndfile), so a 2 s crop
of a long file costs milliseconds. Unusable audio raises :class:`AudioError` with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from bestrq2.data.decode_cache import INT16_SUBTYPES, DecodeCache

SILENCE_PEAK = 1e-5  # about -100 dBFS


CROP_REASONS = ("silent", "non-finite samples", "unreadable crop")
"""Failures of one window of a file, not of the whole file: another crop of it may be fine."""


class AudioError(Exception):
    """A file that cannot be used: corrupt, empty, too short, silent or non-finite."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    @property
    def of_crop(self) -> bool:
        """Whether the failure belongs to the window read (:data:`CROP_REASONS`) rather than to the file."""
        return self.reason.split(" (", 1)[0] in CROP_REASONS


def load_audio(
    path: str | Path,
    sample_rate: int,
    crop_samples: int | None = None,
    rng: np.random.Generator | None = None,
    min_samples: int = 1,
    check_silence: bool = True,
    cache: DecodeCache | None = None,
) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``.

    With ``crop_samples``, a random window of that length (after resampling) is read when the file
    is longer; shorter files are returned whole (the caller pads). With ``cache``, the window is a
    slice of the file decoded once (:class:`~bestrq2.data.decode_cache.DecodeCache`): the same
    samples for the same ``rng``.
    """
    try:
        if cache is not None:
            audio = cache.load(path)
            sr = audio.sample_rate
            start, count = _window(path, audio.frames, sr, sample_rate, crop_samples, rng, min_samples)
            data, integer = audio.read(start, count), audio.dtype == np.int16
        else:
            with sf.SoundFile(str(path)) as f:
                sr = int(f.samplerate)
                start, count = _window(path, int(f.frames), sr, sample_rate, crop_samples, rng, min_samples)
                # 16-bit and narrower PCM is read as int16 and scaled as libsndfile scales it (x / 32768):
                # the same floats, at less decoding cost, and integers cannot be non-finite
                integer = f.subtype in INT16_SUBTYPES
                try:  # the file opened: a failure now may belong to this window only (a corrupt stretch)
                    if start:
                        f.seek(start)
                    data = f.read(count, dtype="int16" if integer else "float32", always_2d=True)  # [n, channels]
                except Exception as e:
                    raise AudioError(path, f"unreadable crop ({type(e).__name__}: {str(e)[:120]})") from e
    except AudioError:
        raise
    except Exception as e:  # soundfile raises several types for corrupt or unknown files
        if not Path(path).exists():  # libsndfile says only "System error." for a missing file
            raise AudioError(path, "missing (no such file)") from e
        if Path(path).stat().st_size == 0:
            raise AudioError(path, "empty (0 bytes)") from e
        raise AudioError(path, f"unreadable ({type(e).__name__}: {str(e)[:120]})") from e
    if data.shape[0] == 0:
        raise AudioError(path, "empty")
    x = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if integer:
        x = np.multiply(x, np.float32(1 / 32768), dtype=np.float32)  # one pass: convert and scale
    elif not np.isfinite(x).all():
        raise AudioError(path, "non-finite samples")
    if sr != sample_rate:
        x = soxr.resample(x, sr, sample_rate).astype(np.float32, copy=False)
    if crop_samples is not None:
        x = x[:crop_samples]
    if check_silence and float(np.abs(x).max(initial=0.0)) < SILENCE_PEAK:
        raise AudioError(path, "silent")
    return np.ascontiguousarray(x, dtype=np.float32)


def _window(
    path: str | Path, frames: int, sr: int, sample_rate: int, crop_samples: int | None,
    rng: np.random.Generator | None, min_samples: int,
) -> tuple[int, int]:  # fmt: skip
    """(start, count) in the file's own samples: the whole file, or a random window that resamples to
    ``crop_samples``; raises AudioError for an empty or too short file."""
    if frames <= 0 or sr <= 0:
        raise AudioError(path, "empty")
    if frames * sample_rate < min_samples * sr:
        raise AudioError(path, "too short")
    if crop_samples is not None:
        need = math.ceil(crop_samples * sr / sample_rate)
        if frames > need:
            rng = rng or np.random.default_rng()
            return int(rng.integers(0, frames - need + 1)), need
    return 0, frames


def silent_fraction(x: np.ndarray, sample_rate: int, silence_db: float) -> float:
    """Share of the 25 ms frames of ``x`` whose RMS is below ``silence_db`` dBFS (0 for a clip shorter
    than one frame)."""
    frame = max(1, sample_rate // 40)
    n = len(x) // frame
    if n == 0:
        return 0.0
    power = np.square(x[: n * frame].reshape(n, frame), dtype=np.float32).mean(axis=1)
    return float((power < 10.0 ** (silence_db / 10.0)).mean())


def choose_crop(
    draw: Callable[[int], np.ndarray], crop_samples: int, attempts: int, max_silent: float, silence_db: float,
    sample_rate: int,
) -> tuple[np.ndarray, int]:
    """Energy-aware crop choice: ``draw(i)`` returns the i-th random crop; the first of ``attempts`` whose
    silent share is at most ``max_silent`` is kept, else the least silent one. Returns (crop, redraws).
    A clip no longer than one crop has a single choice. ``draw`` may raise AudioError('silent') after the
    first attempt: that crop counts as all silence."""
    best, best_frac, tries = None, 2.0, 0
    for i in range(attempts):
        try:
            x = draw(i)
        except AudioError as e:
            if i == 0 or e.reason != "silent":
                raise
            continue
        tries = i
        frac = silent_fraction(x, sample_rate, silence_db)
        if frac < best_frac:
            best, best_frac = x, frac
        if frac <= max_silent or len(x) < crop_samples:
            break
    return best, tries
