"""Turn render jobs (plain dicts from the planners) into 16 kHz FLAC files, in parallel and cached.

A job's output that already exists is reused (files are written atomically, so an existing file is
complete). A job whose audio comes out unusable (too short, silent) yields no file and is dropped.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from bestrq2.corpora import audio, synth, tts
from bestrq2.corpora.items import resolve

_ROOTS: dict[str, Path] = {}


def _init(roots: dict[str, Path]) -> None:
    global _ROOTS
    _ROOTS = roots
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _soundfont(name: str) -> str:
    sfont = next(s for s in synth.SOUNDFONTS if s.name == name)
    return str(_ROOTS[sfont.package] / sfont.path)


def _read(ref: str, offset_s: float = 0.0, max_s: float | None = None) -> np.ndarray:
    path = resolve(ref, _ROOTS)
    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        if offset_s:
            f.seek(min(int(offset_s * sr), f.frames))
        frames = -1 if max_s is None else int(max_s * sr)
        x = f.read(frames, dtype="float32", always_2d=True)  # [T, C]
    return audio.to_mono_16k(x, sr)


def _read_or_none(ref: str, max_s: float | None) -> np.ndarray | None:
    """A file of a multi-file clip that libsndfile cannot decode (a few are malformed) is skipped."""
    try:
        return _read(ref, 0.0, max_s)
    except (sf.LibsndfileError, RuntimeError):
        return None


def _pad(x: np.ndarray, length_s: float, noise_db: float, seed: int) -> np.ndarray:
    """Place x at a random offset in a window of at least length_s, over faint white noise."""
    rng = np.random.default_rng(seed)
    n = max(int(length_s * audio.SAMPLE_RATE), len(x) + int(0.1 * audio.SAMPLE_RATE))
    out = (rng.standard_normal(n) * 10 ** (noise_db / 20)).astype(np.float32)
    start = int(rng.integers(0, n - len(x) + 1))
    out[start : start + len(x)] += audio.normalize(x)
    return out


def _scene(srcs: list[str], length_s: float, seed: int) -> np.ndarray:
    """A coloured-noise bed (random slope and level) with the source sounds dropped in at random times and gains."""
    rng = np.random.default_rng(seed)
    n = int(length_s * audio.SAMPLE_RATE)
    beta = rng.uniform(0.0, 2.0)  # spectral slope: 0 white, 1 pink, 2 brown
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)  # [F]
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / audio.SAMPLE_RATE), 20.0)  # [F]
    bed = np.fft.irfft(spec * freqs ** (-beta / 2), n).astype(np.float32)  # [T]
    out = audio.normalize(bed, 10 ** (rng.uniform(-45, -25) / 20))
    for ref in srcs:
        x = audio.trim(_read(ref, 0.0, 10.0))
        if x.size == 0:
            continue
        x = audio.normalize(x, 10 ** (rng.uniform(-14, -2) / 20))[: n // 2]
        start = int(rng.integers(0, n - len(x) + 1))
        out[start : start + len(x)] += x
    return audio.normalize(out, 0.9) if np.abs(out).max() > 0.9 else out


def make_audio(job: dict[str, Any]) -> np.ndarray:
    kind = job["kind"]
    if kind == "tts":
        x = tts.speak(
            tts.voice_by_name(job["voice"]), job["text"], job["speed"], job["pitch"], job["stretch"]
        )
        return _pad(x, job["pad_to"], job["noise_db"], job["seed"])
    if kind == "tts_concat":
        v = tts.voice_by_name(job["voice"])
        parts = [tts.speak(v, t, job["speed"], job["pitch"], job["stretch"]) for t in job["texts"]]
        return audio.normalize(audio.concat(parts, gap_s=0.45))
    if kind == "note":
        x = synth.render_note(
            _soundfont(job["soundfont"]),
            job["program"],
            job["pitch"],
            job["velocity"],
            job["hold_s"],
            job["tail_s"],
        )
        return audio.normalize(x)
    if kind == "mma":
        midi = synth.mma_song(_ROOTS["mma"], job["style"], job["groove"], job["chords"], job["tempo"])
        return audio.normalize(synth.render_midi(_soundfont(job["soundfont"]), midi, max_s=job["max_s"]))
    if kind == "file":
        x = _read(job["src"], job.get("offset_s", 0.0), job.get("max_s"))
        return audio.normalize(audio.trim(x) if job.get("trim", True) else x)
    if kind == "concat":
        parts = [
            audio.trim(x)
            for x in (_read_or_none(s, job.get("max_each_s")) for s in job["srcs"])
            if x is not None
        ]
        parts = [audio.normalize(p) for p in parts if audio.is_usable(p, 0.1)]
        return audio.concat(parts, gap_s=job["gap_s"])
    if kind == "scene":
        return _scene(job["srcs"], job["length_s"], job["seed"])
    raise ValueError(f"unknown job kind {kind!r}")


def _run_one(arg: tuple[str, str, dict[str, Any]]) -> tuple[str, float | None, str | None]:
    out_dir, rel, job = arg
    path = Path(out_dir) / rel
    if path.exists():
        return rel, audio.duration(path), None
    try:
        x = make_audio(job)
    except Exception as e:  # one broken source must not stop a build of thousands of clips
        return rel, None, f"{type(e).__name__}: {e}"
    if not audio.is_usable(x):
        return rel, None, "unusable audio (too short or silent)"
    return rel, audio.write(path, x), None


def run_jobs(
    jobs: dict[str, dict[str, Any]], out_dir: Path, roots: dict[str, Path], workers: int, desc: str
) -> dict[str, float]:
    """Render every job (keyed by output path relative to out_dir) -> {path: duration} of those that worked."""
    args = [(str(out_dir), rel, job) for rel, job in jobs.items()]
    done: dict[str, float] = {}
    errors: list[str] = []
    bar = tqdm(total=len(args), desc=desc, unit="clip", dynamic_ncols=True)
    if workers <= 1:
        _init(roots)
        results = map(_run_one, args)
        pool = None
    else:
        pool = mp.get_context("fork").Pool(workers, initializer=_init, initargs=(roots,))
        results = pool.imap_unordered(_run_one, args, chunksize=4)
    try:
        for rel, dur, err in results:
            bar.update(1)
            if dur is not None:
                done[rel] = dur
            else:
                errors.append(f"{rel}: {err}")
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    if errors:
        reasons = Counter(e.split(": ", 1)[1][:70] for e in errors)
        print(f"[bestrq2 data] {desc}: dropped {len(errors)} of {len(args)} clips:", file=sys.stderr)
        for reason, n in reasons.most_common(5):
            print(f"    {n:5d} x {reason}", file=sys.stderr)
    return done
