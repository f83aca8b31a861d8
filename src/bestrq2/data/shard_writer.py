"""Write tar shards (``bestrq2 data shard``): audio folder or manifest -> ``DIR/shard-NNNNNN.tar`` and
``DIR/shards.json`` in the layout of :mod:`bestrq2.data.shards`.

Each file is decoded to mono at the target rate (:func:`bestrq2.data.audio.load_audio`), quantised to 16 bits,
cut into equal consecutive segments of at most ``max_seconds`` if longer, and each segment becomes one
sample. Files are shuffled (seeded) so that shards mix sources; a file's segments stay together. Shards
are written under a temporary name and renamed when complete; the index is written last.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tarfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from bestrq2.data.audio import AudioError, load_audio
from bestrq2.data.files import list_audio
from bestrq2.data.shards import FORMATS, INDEX_NAME


def _encode(pcm: np.ndarray, fmt: str, sample_rate: int) -> bytes:
    if fmt == "pcm16":
        return pcm.astype("<i2").tobytes()
    buf = io.BytesIO()
    sf.write(buf, pcm, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _encode_file(
    job: tuple[int, str, str, str, int, int],
) -> tuple[int, str, list[tuple[str, bytes, dict]], str]:
    """One source file -> its samples [(key, audio bytes, meta)], or a reason it was skipped."""
    index, path, rel, fmt, sample_rate, max_samples = job
    try:
        x = load_audio(path, sample_rate)
    except AudioError as e:
        return index, rel, [], e.reason
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    pieces = max(1, math.ceil(len(pcm) / max_samples))  # equal segments: no short tail
    bounds = [len(pcm) * i // pieces for i in range(pieces + 1)]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(rel).stem)[:40]
    samples = []
    for seg, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        meta = {"source": rel, "offset_s": a / sample_rate, "num_samples": b - a, "sample_rate": sample_rate}
        samples.append((f"{index:07d}_{stem}_{seg:04d}", _encode(pcm[a:b], fmt, sample_rate), meta))
    return index, rel, samples, ""


class _TarWriter:
    """Fills shard-NNNNNN.tar files in turn; each is written under a temporary name, then renamed."""

    def __init__(self, out: Path, fmt: str, clips_per_shard: int):
        self.out, self.fmt, self.clips_per_shard = out, fmt, clips_per_shard
        self.shards: list[dict[str, Any]] = []
        self.tar: tarfile.TarFile | None = None
        self.mtime = int(time.time())

    def add(self, key: str, audio: bytes, meta: dict) -> None:
        if self.tar is None:
            self.name = f"shard-{len(self.shards):06d}.tar"
            self.tar = tarfile.open(self.out / (self.name + ".tmp"), "w", format=tarfile.PAX_FORMAT)
            self.clips, self.seconds = 0, 0.0
        for name, data in ((f"{key}.{self.fmt}", audio), (f"{key}.json", json.dumps(meta).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), self.mtime, 0o644
            self.tar.addfile(info, io.BytesIO(data))
        self.clips += 1
        self.seconds += meta["num_samples"] / meta["sample_rate"]
        if self.clips >= self.clips_per_shard:
            self.close()

    def close(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        os.replace(self.out / (self.name + ".tmp"), self.out / self.name)
        self.shards.append({"url": self.name, "clips": self.clips, "seconds": round(self.seconds, 3)})
        self.tar = None


def write_shards(
    source: str | Path,
    out: str | Path,
    fmt: str = "flac",
    clips_per_shard: int = 1000,
    max_seconds: float = 20.0,
    sample_rate: int = 16000,
    workers: int = 1,
    shuffle_seed: int | None = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode every file of ``source`` (folder or manifest, as :func:`bestrq2.data.list_audio`) to mono
    ``sample_rate``, cut files longer than ``max_seconds`` into equal consecutive segments, and pack
    them into tar shards of ``clips_per_shard`` samples under ``out``. Files are taken in a seeded
    random order (``shuffle_seed=None``: listing order) so that shards mix sources; a file's segments
    stay together. Unusable files are skipped and listed. Returns the index written to shards.json."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    if clips_per_shard < 1 or max_seconds <= 0 or sample_rate <= 0:
        raise ValueError("clips_per_shard, max_seconds and sample_rate must be positive")
    t0 = time.time()
    source, out = Path(source), Path(out)
    files = list_audio(source)
    base = source if source.is_dir() else source.parent
    out.mkdir(parents=True, exist_ok=True)
    old = [
        p for p in out.iterdir() if re.fullmatch(r"shard-\d+\.tar(\.tmp)?", p.name) or p.name == INDEX_NAME
    ]
    if old and not overwrite:
        raise FileExistsError(
            f"{out} already holds shards ({old[0].name}, ...); pass --overwrite to replace them"
        )
    for p in old:
        p.unlink()
    order = list(range(len(files)))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(files)).tolist()
    max_samples = max(1, int(round(max_seconds * sample_rate)))
    jobs = []
    for i in order:
        p = Path(files[i])
        try:  # relative to the folder or manifest (links not followed), else absolute
            rel = Path(os.path.abspath(p)).relative_to(os.path.abspath(base)).as_posix()
        except ValueError:
            rel = os.path.abspath(p)
        jobs.append((i, str(p), rel, fmt, sample_rate, max_samples))
    writer = _TarWriter(out, fmt, clips_per_shard)
    skipped: list[dict[str, str]] = []
    used = 0
    try:
        for _, rel, samples, reason in tqdm(
            _run(jobs, workers), total=len(jobs), unit="file", disable=not progress
        ):
            if reason:
                skipped.append({"path": rel, "reason": reason})
                continue
            used += 1
            for key, audio, meta in samples:
                writer.add(key, audio, meta)
        writer.close()
    finally:
        if writer.tar is not None:  # interrupted: leave no partial shard behind
            writer.tar.close()
            (out / (writer.name + ".tmp")).unlink(missing_ok=True)
    clips = sum(s["clips"] for s in writer.shards)
    seconds = round(sum(s["seconds"] for s in writer.shards), 3)
    index = {
        "format": fmt,
        "sample_rate": sample_rate,
        "max_seconds": max_seconds,
        "clips_per_shard": clips_per_shard,
        "source": str(source),
        "files": used,
        "clips": clips,
        "seconds": seconds,
        "hours": round(seconds / 3600, 4),
        "shards": writer.shards,
        "skipped": skipped,
        "build_seconds": round(time.time() - t0, 1),
    }
    tmp = out / (INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, out / INDEX_NAME)
    return index


def _run(jobs: list[tuple], workers: int) -> Iterator[tuple[int, str, list, str]]:
    """Results of :func:`_encode_file` in job order; at most 4 files per worker in flight."""
    if workers <= 1:
        yield from map(_encode_file, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.submit(_encode_file, job))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
