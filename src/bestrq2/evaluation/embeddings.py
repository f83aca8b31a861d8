"""Run the encoder once over every clip; keep the frames on disk, keyed by model and clip.

Cache layout: ``CACHE/<model key[:24]>/shard-*.npz``, each shard holding ``keys`` [N] (clip path
+ size + mtime), ``offsets`` [N + 1] and ``frames`` [sum T'_i, D] float32. A changed model has a
new key (a new folder); a changed clip a new clip key (a miss). Shards are written every
``SHARD_CLIPS`` clips, so an interrupted run keeps most of its work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn
from tqdm import tqdm

from bestrq2.data.audio import AudioError, load_audio

SHARD_CLIPS = 2000


def default_cache_dir() -> Path:
    """$BESTRQ2_EMBED_CACHE, else ~/.cache/bestrq2/embeddings (or under $XDG_CACHE_HOME)."""
    if os.environ.get("BESTRQ2_EMBED_CACHE"):
        return Path(os.environ["BESTRQ2_EMBED_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bestrq2" / "embeddings"


def clip_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


class EmbeddingCache:
    """Frames of one model's clips: a folder of npz shards."""

    def __init__(self, root: str | Path, model_key: str):
        self.dir = Path(root) / model_key[:24]

    def load(self, keys: set[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if not self.dir.is_dir():
            return out
        for shard in sorted(self.dir.glob("shard-*.npz")):
            with np.load(shard, allow_pickle=False) as z:
                shard_keys = z["keys"].tolist()
                if not keys.intersection(shard_keys):
                    continue
                offsets, frames = z["offsets"], z["frames"]
                for i, k in enumerate(shard_keys):
                    if k in keys:
                        out[k] = frames[offsets[i] : offsets[i + 1]]
        return out

    def save(self, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        keys = list(items)
        lengths = [items[k].shape[0] for k in keys]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        frames = np.concatenate([items[k] for k in keys]).astype(np.float32, copy=False)  # [sum T', D]
        name = f"shard-{time.time_ns()}-{os.getpid()}"
        tmp = self.dir / f".{name}.tmp.npz"
        np.savez(tmp, keys=np.array(keys), offsets=offsets, frames=frames)
        os.replace(tmp, self.dir / f"{name}.npz")


def length_batches(lengths: list[int], batch_samples: int, max_batch: int = 256) -> list[list[int]]:
    """Indices grouped by similar length, each batch's padded size (count x longest) <= batch_samples."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:  # ascending, so the newest clip is the longest of its batch
        if cur and ((len(cur) + 1) * lengths[i] > batch_samples or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _num_samples(path: Path, sample_rate: int) -> int:
    info = sf.info(str(path))
    return max(1, int(info.frames * sample_rate / info.samplerate))


@torch.inference_mode()
def _run(
    model: nn.Module,
    paths: list[Path],
    batches: list[list[int]],
    device: torch.device,
    layer: int | None,
    workers: int,
) -> Iterator[tuple[list[int], list[np.ndarray | AudioError]]]:
    """Decode the next batches in threads while the encoder runs on the current one."""
    sr = int(model.sampling_rate)

    def load(i: int) -> np.ndarray | AudioError:
        try:
            return load_audio(paths[i], sr, check_silence=False)
        except AudioError as e:
            return e

    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = [pool.map(load, b) for b in batches[:2]]
        for n, batch in enumerate(batches):
            wavs = list(pending.pop(0))
            if n + 2 < len(batches):
                pending.append(pool.map(load, batches[n + 2]))
            ok = [j for j, w in enumerate(wavs) if isinstance(w, np.ndarray)]
            outs: list[np.ndarray | AudioError] = list(wavs)
            if ok:
                lens = torch.tensor([len(wavs[j]) for j in ok], dtype=torch.long)
                x = torch.zeros(len(ok), int(lens.max()))  # [B, T] zero-padded
                for r, j in enumerate(ok):
                    x[r, : lens[r]] = torch.from_numpy(wavs[j])
                kwargs = {} if layer is None else {"layer": layer}
                y = model(x.to(device), lens.to(device), **kwargs).float().cpu()  # [B, T'max, D]
                n_out = model.output_lengths(lens).tolist()
                for r, j in enumerate(ok):
                    outs[j] = y[r, : n_out[r]].numpy().copy()  # [T'_j, D]
            yield batch, outs


def embed_clips(
    build: Callable[[], nn.Module],
    model_key: str,
    paths: list[Path],
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    layer: int | None = None,
    batch_seconds: float = 120.0,
    workers: int = 2,
    progress: bool = True,
) -> tuple[dict[Path, np.ndarray], dict[str, object]]:
    """Frames [T'_i, D] of every clip, from the cache where possible, else from the encoder.

    ``build()`` gives the encoder; it is called only when some clip is not cached.
    Returns the frames by path, and stats: clips, cached, computed, failed (path: reason), seconds.
    Unreadable clips are left out of the result and listed in ``failed``.
    """
    t0 = time.perf_counter()
    keys = {p: clip_key(p) for p in paths}
    cache = EmbeddingCache(cache_dir, model_key) if cache_dir is not None else None
    stored = cache.load(set(keys.values())) if cache else {}
    result = {p: stored[keys[p]] for p in paths if keys[p] in stored}
    missing = [p for p in paths if keys[p] not in stored]
    failed: dict[str, str] = {}
    if missing:
        device = torch.device(device)
        model = build().to(device).eval()
        sr = int(model.sampling_rate)
        lengths = [_num_samples(p, sr) for p in missing]
        batches = length_batches(lengths, int(batch_seconds * sr))
        bar = tqdm(total=len(missing), desc="embed", unit="clip", dynamic_ncols=True, disable=not progress)
        fresh: dict[str, np.ndarray] = {}
        for batch, outs in _run(model, missing, batches, device, layer, workers):
            for i, out in zip(batch, outs):
                if isinstance(out, AudioError):
                    failed[str(missing[i])] = out.reason
                else:
                    result[missing[i]] = out
                    fresh[keys[missing[i]]] = out
            bar.update(len(batch))
            if cache and len(fresh) >= SHARD_CLIPS:
                cache.save(fresh)
                fresh = {}
        bar.close()
        if cache:
            cache.save(fresh)
    stats = {
        "clips": len(paths),
        "cached": len(paths) - len(missing),
        "computed": len(missing) - len(failed),
        "failed": failed,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return result, stats
