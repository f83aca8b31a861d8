"""A decode cache for folders of compressed audio: each file decoded once, its crops memory-mapped after.

A 5 s crop of a 16 kHz FLAC file costs about 2.5 ms of CPU to decode, on every read; on a 2-core machine
that is CPU the trainer needs (``benchmarks/run_throughput.py``). With ``data.decode_cache=DIR`` the first
read of a file decodes all of it, at its own rate and channels, to ``DIR/<key>.<rate>.npy`` (int16 for
16-bit and narrower PCM, else float32: the exact values a seek-and-read would return), written to a
temporary name and renamed, so loader workers that race on one file never see half of it. Later reads
memory-map it: a crop is a slice. The key hashes the file's absolute path, size and modification time,
so an edited file is decoded again. Disk: 2 bytes a sample of 16-bit audio (32 kB a second at 16 kHz).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import soundfile as sf

INT16_SUBTYPES = {"PCM_16", "PCM_S8", "PCM_U8"}
"""Read as int16 and scaled by 1 / 32768 (as libsndfile scales them): the same floats, decoded cheaper."""


class DecodeCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._known: dict[str, Path] = {}  # per process: file -> its cache entry

    def key(self, path: str | Path) -> str:
        p = Path(path).resolve()
        st = p.stat()
        return hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]

    def load(self, path: str | Path) -> tuple[np.ndarray, int]:
        """(samples [frames, channels] int16 or float32, memory-mapped; sample rate). Raises what
        soundfile raises for a file it cannot read."""
        entry = self._known.get(str(path))
        if entry is None or not entry.exists():
            key = self.key(path)
            found = sorted(self.root.glob(f"{key}.*.npy"))
            entry = found[0] if found else self._decode(path, key)
            self._known[str(path)] = entry
        return np.load(entry, mmap_mode="r"), int(entry.name.split(".")[1])

    def _decode(self, path: str | Path, key: str) -> Path:
        with sf.SoundFile(str(path)) as f:
            sr = int(f.samplerate)
            data = f.read(dtype="int16" if f.subtype in INT16_SUBTYPES else "float32", always_2d=True)
        entry = self.root / f"{key}.{sr}.npy"
        tmp = self.root / f".{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, data)
        os.replace(tmp, entry)
        return entry
