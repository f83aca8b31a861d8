"""Pretraining data in three steps: metadata (file list), decoding (random crops), collation.

* :func:`list_audio` - a folder (recursive) or a JSONL / text manifest -> sorted file list.
* :class:`CropDataset` - key (epoch, index) -> a random crop; the randomness is derived from
  (seed, epoch, index) alone, so the data are identical for any number of workers and after a
  resume. A bad file is skipped (another file is drawn deterministically) and reported.
* :class:`BatchStream` - an endless, resumable batch sampler: one permutation per epoch, split
  across ranks without duplicates, starting at any (epoch, batch).
* :func:`collate` - a dict of padded tensors with lengths.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from bestrq2.config import DataConfig
from bestrq2.data.audio import AudioError, choose_crop, load_audio
from bestrq2.data.decode_cache import DecodeCache

MAX_ATTEMPTS = 32


def list_audio(source: str | Path, extensions: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")) -> list[Path]:
    """Audio files under a folder (recursive), or listed in a manifest (.jsonl with a ``path``
    field, or .txt / .lst with one path per line; relative paths are relative to the manifest)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"data source {source} does not exist")
    exts = {e.lower() for e in extensions}
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in exts and p.is_file())
        if not files:
            raise ValueError(f"no audio files ({', '.join(sorted(exts))}) found under {source}")
        return files
    files = []
    for n, line in enumerate(source.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if source.suffix == ".jsonl":
            try:
                rel = json.loads(line)["path"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{source}:{n}: expected a JSON object with a 'path' field") from e
        else:
            rel = line
        p = Path(rel)
        files.append(p if p.is_absolute() else source.parent / p)
    if not files:
        raise ValueError(f"manifest {source} lists no audio files")
    return files


class PathTable:
    """Many file paths in two numpy arrays (UTF-8 bytes and offsets) instead of a list of str objects.

    Loader workers are forked: touching a Python object writes its reference count, which copies the
    page it lives on into the worker. Millions of path strings would be copied into every worker
    (GBs per node); two numpy buffers are never written, so they stay shared."""

    def __init__(self, paths: list[str | Path]):
        encoded = [str(p).encode() for p in paths]
        self._bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str:
        start = int(self._ends[i - 1]) if i > 0 else 0
        return self._bytes[start : int(self._ends[i])].tobytes().decode()


class CropDataset(Dataset):
    """(epoch, index) -> {"wav": float32 [n], "skipped": [(path, reason), ...]}."""

    def __init__(self, files: list[Path], cfg: DataConfig, sample_rate: int, seed: int = 0):
        self.files = PathTable(files)
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.crop = int(round(cfg.crop_seconds * sample_rate))
        self.min_samples = max(1, int(round(cfg.min_seconds * sample_rate)))
        self.seed = seed
        self._bad: dict[str, str] = {}  # per worker: files known to be unusable
        self.cache = DecodeCache(cfg.decode_cache) if cfg.decode_cache else None

    def __len__(self) -> int:
        return len(self.files)

    def _crop(self, path: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """One random crop, or the energy-aware choice among ``crop_attempts`` (see :func:`choose_crop`)."""
        cfg = self.cfg
        if cfg.crop_attempts == 1:
            return load_audio(path, self.sample_rate, self.crop, rng, self.min_samples, cache=self.cache), 0
        return choose_crop(
            lambda _i: load_audio(path, self.sample_rate, self.crop, rng, self.min_samples, cache=self.cache),
            self.crop, cfg.crop_attempts, cfg.max_silent_fraction, cfg.silence_db, self.sample_rate,
        )  # fmt: skip

    def _attempt_rng(self, epoch: int, index: int, attempt: int) -> np.random.Generator:
        """The crop's generator of one attempt; the first keeps the key it always had, so runs on clean
        data crop as before."""
        return np.random.default_rng([self.seed, epoch, index] + ([attempt] if attempt else []))

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        """The crop of the file at ``index``, or of a seeded replacement when it is unusable. Every attempt
        has its own generator, the replacement is drawn whatever the failure, and only failures of the whole
        file are remembered (not those of one crop, :attr:`AudioError.of_crop`), so the sample depends only on
        (seed, epoch, index): not on how far a failed read got, nor on which files this worker already knows
        to be bad. A resumed run, or one with another number of workers, reads the same."""
        epoch, index = key
        skipped: list[tuple[str, str]] = []
        i = index
        for attempt in range(MAX_ATTEMPTS):
            path = self.files[i]
            if path in self._bad:
                skipped.append((path, self._bad[path]))
            else:
                try:
                    wav, redraws = self._crop(path, self._attempt_rng(epoch, index, attempt))
                    return {"wav": wav, "skipped": skipped, "crop_redraws": redraws}
                except AudioError as e:
                    if not e.of_crop:  # a silent or non-finite crop may come from a file that is fine elsewhere
                        self._bad[path] = e.reason
                    skipped.append((path, e.reason))
            i = int(np.random.default_rng([self.seed, epoch, index, attempt, 1]).integers(len(self.files)))
        raise RuntimeError(
            f"{MAX_ATTEMPTS} unusable files in a row (last: {skipped[-1][0]}: {skipped[-1][1]}); "
            "is the data folder mostly corrupt or silent?"
        )


class BatchStream:
    """Endless batches of dataset keys for one rank, resumable at (epoch, batch).

    Each epoch is a seeded permutation of all files (repeated when the data set is smaller
    than one global batch), cut into global batches; rank r takes every world-th key of each.
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0, start: tuple[int, int] = (0, 0)):
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.global_batch = batch_size * world
        self.batches_per_epoch = max(1, n // self.global_batch)
        self.start = start

    def epoch_order(self, epoch: int) -> torch.Tensor:
        need = self.batches_per_epoch * self.global_batch
        perms, rep = [], 0
        while sum(len(p) for p in perms) < need:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch * 104729 + rep)
            perms.append(torch.randperm(self.n, generator=g))
            rep += 1
        return torch.cat(perms)[:need]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch, batch = self.start
        while True:
            order = self.epoch_order(epoch)
            for b in range(batch, self.batches_per_epoch):
                chunk = order[b * self.global_batch : (b + 1) * self.global_batch]
                mine = chunk[self.rank :: self.world].tolist()
                yield [(epoch, idx, b) for idx in mine]
            epoch, batch = epoch + 1, 0


class KeyedDataset(Dataset):
    """Adapter: the batch stream's (epoch, index, batch) keys -> samples tagged with their position."""

    def __init__(self, inner: CropDataset):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        epoch, index, batch = key
        item = self.inner[(epoch, index)]
        item["position"] = (epoch, batch)
        return item


def _batch_buffer(*shape: int) -> torch.Tensor:
    """An uninitialised float32 tensor; inside a loader worker, in shared memory already, so that
    handing it to the trainer costs no second copy (as torch's default_collate does)."""
    if get_worker_info() is None:
        return torch.empty(*shape)
    numel = 1
    for n in shape:
        numel *= n
    return torch.empty(0).new(torch.UntypedStorage._new_shared(4 * numel)).view(*shape)


def collate(items: list[dict[str, Any]], length: int | None = None) -> dict[str, Any]:
    """Zero-pad to ``length`` (or the longest) -> {"wav" [B, S], "lengths" [B], "skipped", "position"}."""
    lengths = torch.tensor([len(it["wav"]) for it in items], dtype=torch.long)
    S = length or int(lengths.max())
    wav = _batch_buffer(len(items), S)
    for i, it in enumerate(items):
        n = min(len(it["wav"]), S)
        wav[i, :n] = torch.from_numpy(it["wav"][:n])
        wav[i, n:] = 0.0
    return {
        "wav": wav,
        "lengths": lengths.clamp(max=S),
        "skipped": [s for it in items for s in it["skipped"]],
        "position": items[0].get("position", (0, 0)),
        "crop_redraws": sum(it.get("crop_redraws", 0) for it in items),
    }


class _WorkerInit:
    """Loader workers leave SIGINT / SIGTERM to the training process, which saves a checkpoint and
    then shuts them down (a cluster's pre-emption signal reaches every process of the job), and run
    at ``nice`` (data.worker_nice) below the trainer."""

    def __init__(self, nice: int):
        self.nice = nice

    def __call__(self, _worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.nice:
            os.nice(self.nice)


def resolve_workers(cfg: DataConfig, pin_memory: bool) -> DataConfig:
    """``cfg`` with ``num_workers`` auto (-1) resolved: loaders pin memory exactly when they feed a GPU."""
    if cfg.num_workers >= 0:
        return cfg
    return dataclasses.replace(cfg, num_workers=cfg.workers_on("cuda" if pin_memory else "cpu"))


def loader_settings(cfg: DataConfig, seed: int, pin_memory: bool) -> dict[str, Any]:
    """The DataLoader settings every training loader shares (files and tar shards)."""
    workers = resolve_workers(cfg, pin_memory).num_workers
    return {
        "num_workers": workers,
        "pin_memory": pin_memory,
        "persistent_workers": workers > 0,
        "prefetch_factor": cfg.prefetch_factor if workers > 0 else None,
        "generator": torch.Generator().manual_seed(seed),  # keeps the global RNG (drop-path) untouched
        "worker_init_fn": _WorkerInit(cfg.worker_nice),
    }


class _Collate:
    def __init__(self, length: int):
        self.length = length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(items, self.length)


def build_loader(
    files: list[Path],
    cfg: DataConfig,
    sample_rate: int,
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    seed: int = 0,
    start: tuple[int, int] = (0, 0),
    pin_memory: bool = False,
) -> DataLoader:
    """An endless loader of fixed-length batches (``crop_seconds``) for one rank."""
    cfg = resolve_workers(cfg, pin_memory)
    ds = CropDataset(files, cfg, sample_rate, seed)
    stream = BatchStream(len(ds), batch_size, rank, world, seed, start)
    return DataLoader(
        KeyedDataset(ds),
        batch_sampler=stream,
        collate_fn=_Collate(ds.crop),
        **loader_settings(cfg, seed, pin_memory),
    )
