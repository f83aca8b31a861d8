"""Training batches from tar shards (:mod:`bestrq2.data.shards`): an endless stream per rank, split over
ranks and loader workers without duplicates, and exactly resumable from a batch index.

Who reads what is a pure function of the shard list, the clip counts, the seed and the epoch:

* N = world x W slots (W = loader workers, at least 1); slot = rank x W + worker.
* Epoch e shuffles the shard list with a seed from (seed, e). With S >= N shards, slot s reads shards
  s, s + N, s + 2N, ... of that order; with fewer, slot s reads shard s mod S and keeps every k-th of
  its samples (k = the number of slots sharing that shard). Each clip is read once per epoch.
* A slot's samples of one epoch pass a shuffle buffer of ``cfg.shuffle_buffer`` raw samples (seeded by
  (seed, rank, worker, epoch), emptied at the end of the epoch). Its output order is computed from the
  clip counts alone, so a resumed stream re-reads only the shards still in the buffer.
* After the buffer, clips are decoded and randomly cropped (seeded by (seed, epoch, key)) and taken
  ``batch_size`` at a time. An unusable clip (too short, silent, undecodable, lost in a damaged shard)
  is reported in "skipped" and replaced by another crop of a good clip of the same batch (or of the
  next ones): batch boundaries never depend on decoding, which is what makes the resume exact.
* The DataLoader takes worker batches round-robin, batch k from worker k mod W. Resuming at batch k
  re-labels the workers so that worker 0 continues the stream that would have produced batch k. The
  position holds only k, so a resume must use the same shards, world size, num_workers, batch size and
  seed; with others it still gives a valid stream, just not the continuation of the old one.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from bestrq2.config import DataConfig
from bestrq2.data.audio import SILENCE_PEAK, AudioError, choose_crop
from bestrq2.data.files import collate, loader_settings, resolve_workers
from bestrq2.data.shards import (
    Shard,
    ShardError,
    clip_frames,
    expand_urls,
    is_shard_source,
    iter_tar,
    read_clip,
    shard_index,
)

__all__ = ["build_shard_loader", "counted_shards", "expand_urls", "is_shard_source", "ShardBatches"]

MAX_ATTEMPTS = 32  # decodes tried to replace an unusable clip before giving up
MAX_LOOKAHEAD = 4096  # clips looked ahead for a replacement (lost ones cost nothing)
_SHARD_ORDER, _BUFFER, _CROP = 1, 2, 3  # keep the seed streams apart

Item = tuple[int, str, "dict[str, bytes] | None", str]  # (epoch, key, members, why it is unusable or "")


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def buffer_order(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The order in which a shuffle buffer of ``size`` emits inputs 0..n-1: once full, each new input
    replaces a random held one, which is emitted; at the end the rest leave in random order."""
    if size <= 1 or n <= 1:
        return np.arange(n)
    size = min(size, n)
    held = list(range(size))
    out = np.empty(n, dtype=np.int64)
    for j, (i, r) in enumerate(zip(range(size, n), rng.integers(0, size, n - size).tolist())):
        out[j] = held[r]
        held[r] = i
    out[n - size :] = rng.permutation(held)
    return out


class _Lookahead:
    """An iterator that can also peek ahead."""

    def __init__(self, it: Iterator[Item]):
        self.it, self.ahead = it, deque()

    def next(self) -> Item:
        return self.ahead.popleft() if self.ahead else next(self.it)

    def peek(self) -> Iterator[Item]:
        for i in itertools.count():
            if i == len(self.ahead):
                self.ahead.append(next(self.it))
            yield self.ahead[i]


class ShardBatches(IterableDataset):
    """One rank's endless stream of collated batches; each loader worker produces its own batches."""

    def __init__(self, shards: list[Shard], cfg: DataConfig, sample_rate: int, batch_size: int,
                 rank: int, world: int, seed: int, start_batch: int):  # fmt: skip
        self.urls = [s.url for s in shards]
        self.clips = [int(s.clips or 0) for s in shards]
        self.sample_rate, self.batch_size, self.rank = sample_rate, batch_size, rank
        self.seed = seed % 2**63  # numpy seeds must not be negative
        self.workers = max(1, cfg.num_workers)
        self.slots = world * self.workers
        self.cfg = cfg
        self.buffer = cfg.shuffle_buffer
        self.crop = int(round(cfg.crop_seconds * sample_rate))
        self.min_samples = max(1, int(round(cfg.min_seconds * sample_rate)))
        self.start_batch = start_batch
        self._warned: set[str] = set()

    # -- who reads what ------------------------------------------------------------------------------

    def parts(self, epoch: int, slot: int) -> list[tuple[int, int, int, int]]:
        """Slot's shards in epoch: [(shard, stride k, offset, samples kept)], keeping samples j % k == offset."""
        S, N = len(self.urls), self.slots
        order = np.random.default_rng([self.seed, _SHARD_ORDER, epoch]).permutation(S).tolist()
        if S >= N:
            return [(i, 1, 0, self.clips[i]) for i in order[slot::N]]
        i, k, offset = order[slot % S], len(range(slot % S, N, S)), slot // S
        return [(i, k, offset, len(range(offset, self.clips[i], k)))]

    def _stream(self, slot: int, worker: int, skip: int) -> Iterator[Item]:
        """The slot's samples, epoch after epoch, from the ``skip``-th on (the skipped ones are not read)."""
        empty = 0
        for epoch in itertools.count():
            parts = self.parts(epoch, slot)
            n = sum(p[3] for p in parts)
            empty = 0 if n else empty + 1
            if empty > 1000:
                raise RuntimeError(
                    f"loader slot {slot} got no clips in 1000 epochs: too few clips for the ranks x workers"
                )
            if skip >= n:
                skip -= n
                continue
            yield from self._epoch(epoch, worker, parts, n, skip)
            skip = 0

    def _epoch(self, epoch: int, worker: int, parts: list, n: int, start: int) -> Iterator[Item]:
        order = buffer_order(
            n, self.buffer, np.random.default_rng([self.seed, _BUFFER, self.rank, worker, epoch])
        )
        out_pos = np.empty(n, dtype=np.int64)
        out_pos[order] = np.arange(n)
        inputs = self._inputs(epoch, parts, int(order[start:].min()))
        held: dict[int, Item] = {}
        try:
            for j in range(start, n):
                want = int(order[j])
                while want not in held:
                    i, item = next(inputs)
                    if out_pos[i] >= start:  # else emitted before the resume point
                        held[i] = item
                yield held.pop(want)
        finally:
            inputs.close()

    def _inputs(self, epoch: int, parts: list, first: int) -> Iterator[tuple[int, Item]]:
        """(input index, item) in reading order, from the shard holding input ``first``; samples a
        damaged shard did not deliver come as lost items."""
        base = 0
        for shard, k, offset, keep in parts:
            if base + keep <= first:
                base += keep
                continue
            url, got, reason = self.urls[shard], 0, ""
            tar = iter_tar(url)
            try:
                for j, (key, members) in enumerate(tar):
                    if j % k == offset:
                        yield base + got, (epoch, key, members, "")
                        got += 1
                        if got == keep:
                            break
            except ShardError as e:
                reason = e.reason
            finally:
                tar.close()
            if got < keep:
                reason = reason or f"{keep - got} samples fewer than its index says"
                self._warn(f"shard {url}: {reason}; skipping its last {keep - got} of {keep} clips")
                for m in range(got, keep):
                    yield base + m, (epoch, f"{url}#{m}", None, f"lost ({reason})")
            base += keep

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    # -- decoding and batches ---------------------------------------------------------------------------

    def crop_clip(
        self, epoch: int, key: str, members: dict[str, bytes], attempt: int = 0
    ) -> tuple[np.ndarray | None, str, int]:
        """A random crop (seeded by seed, epoch, key, attempt) at ``sample_rate`` - or, with
        ``data.crop_attempts`` > 1, the energy-aware choice among that many - as (crop, "", redraws), or
        (None, reason, 0)."""
        try:
            frames, sr = clip_frames(members)
            if frames * self.sample_rate < self.min_samples * sr:
                return None, "too short", 0
            cfg = self.cfg
            if cfg.crop_attempts == 1:
                return self._draw(epoch, key, members, attempt, 0, frames, sr), "", 0
            x, redraws = choose_crop(
                lambda i: self._draw(epoch, key, members, attempt, i, frames, sr),
                self.crop, cfg.crop_attempts, cfg.max_silent_fraction, cfg.silence_db, self.sample_rate,
            )  # fmt: skip
            return x, "", redraws
        except ValueError as e:
            return None, str(e), 0
        except AudioError as e:
            return None, e.reason, 0

    def _draw(self, epoch: int, key: str, members: dict[str, bytes], attempt: int, i: int, frames: int, sr: int):
        """Crop ``i`` of a clip (i > 0: the energy-aware redraws); raises AudioError / ValueError."""
        need = math.ceil(self.crop * sr / self.sample_rate)
        seed = [self.seed, _CROP, epoch, _key_hash(key), attempt] + ([i] if i else [])
        rng = np.random.default_rng(seed)
        x = read_clip(members, int(rng.integers(0, frames - need + 1)) if frames > need else 0, need)
        if not np.isfinite(x).all():
            raise AudioError(key, "non-finite samples")
        if sr != self.sample_rate:
            x = soxr.resample(x, sr, self.sample_rate)
        x = np.ascontiguousarray(x[: self.crop], dtype=np.float32)
        if float(np.abs(x).max(initial=0.0)) < SILENCE_PEAK:
            raise AudioError(key, "silent")
        return x

    def _replacement(self, stream: _Lookahead, good: list[Item], nth: int) -> tuple[Item, np.ndarray]:
        """Another crop of a good clip of the batch (the nth bad one takes good[nth % len]), else of the next ones."""
        pool = good[nth % len(good) :] + good[: nth % len(good)] if good else []
        tries, last = 0, ""
        for seen, item in enumerate(itertools.chain(pool, stream.peek())):
            epoch, key, members, reason = item
            if not reason:
                wav, reason, _ = self.crop_clip(epoch, key, members, attempt=1 + nth)
                if wav is not None:
                    return item, wav
                tries += 1
            last = f"{key}: {reason}"
            if tries >= MAX_ATTEMPTS or seen >= MAX_LOOKAHEAD:
                break
        raise RuntimeError(
            f"no usable clip among {seen + 1} in a row (last: {last}); are the shards damaged or silent?"
        )

    def _batch(self, stream: _Lookahead, k: int) -> dict[str, Any]:
        items = [stream.next() for _ in range(self.batch_size)]
        wavs, skipped, redraws = [], [], 0
        for epoch, key, members, reason in items:
            wav = None
            if not reason:
                wav, reason, n = self.crop_clip(epoch, key, members)
                redraws += n
            if reason:
                skipped.append((key, reason))
            wavs.append(wav)
        good = [it for it, w in zip(items, wavs) if w is not None]
        for nth, i in enumerate([i for i, w in enumerate(wavs) if w is None]):
            items[i], wavs[i] = self._replacement(stream, good, nth)
        batch = collate([{"wav": w, "skipped": []} for w in wavs], self.crop)
        batch.update(
            skipped=skipped, position=(0, k), keys=[it[1] for it in items], epochs=[it[0] for it in items],
            crop_redraws=redraws,
        )  # fmt: skip
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        W = self.workers
        w = ((info.id if info is not None else 0) + self.start_batch) % W  # the stream this worker continues
        first = max(0, -(-(self.start_batch - w) // W))  # its first batch: ceil((start - w) / W)
        stream = _Lookahead(self._stream(self.rank * W + w, w, first * self.batch_size))
        for b in itertools.count(first):
            yield self._batch(stream, b * W + w)


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


def counted_shards(source: str | Path) -> list[Shard]:
    """The source's shards with clip counts; shards no index counts are read once to count them (the
    trainer does this on rank 0 only and hands the list to every rank)."""
    shards = shard_index(source)
    for s in shards:
        if not s.url.startswith("pipe:") and not Path(s.url).is_file():
            raise FileNotFoundError(f"shard {s.url} does not exist")
    unknown = [s for s in shards if s.clips is None]
    if unknown:
        warnings.warn(f"{len(unknown)} of {len(shards)} shards have no clip counts (no shards.json beside them): "
                      "reading them once to count", RuntimeWarning, stacklevel=3)  # fmt: skip
    for s in unknown:
        s.clips = 0
        try:
            for _ in iter_tar(s.url):
                s.clips += 1
        except ShardError as e:
            warnings.warn(
                f"shard {e}; counted the {s.clips} clips before the damage", RuntimeWarning, stacklevel=3
            )
    return shards


def build_shard_loader(
    source: str | list[Shard],
    cfg: DataConfig,
    sample_rate: int,
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    seed: int = 0,
    start: tuple[int, int] = (0, 0),
    pin_memory: bool = False,
) -> Iterable[dict]:
    """An endless loader of this rank's batches from tar shards: dicts like :func:`bestrq2.data.collate`
    ({"wav" [B, S], "lengths" [B], "skipped", "position": (0, k)}) plus "keys" and "epochs". ``start=(0, k)``
    continues an interrupted stream at its batch k (same shards, world, num_workers, batch size, seed).
    ``source``: what :func:`bestrq2.data.shards.expand_urls` takes, or the list :func:`counted_shards` made."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    cfg = resolve_workers(cfg, pin_memory)  # the stream's slots follow the worker count
    shards = source if isinstance(source, list) else counted_shards(source)
    total = sum(s.clips for s in shards)
    slots = world * max(1, cfg.num_workers)
    if total < slots:
        raise ValueError(
            f"{'the shards' if isinstance(source, list) else repr(source)} hold {total} readable clips, "
            f"fewer than ranks x loader workers ({slots})"
        )
    epoch, k = start
    if epoch != 0:
        warnings.warn(f"data position {start} is not a shard stream position (0, k): starting the stream afresh",
                      RuntimeWarning, stacklevel=2)  # fmt: skip
        k = 0
    dataset = ShardBatches(shards, cfg, sample_rate, batch_size, rank, world, seed, k)
    return DataLoader(
        dataset,
        batch_size=None,  # batches are made inside the workers
        collate_fn=_as_is,  # (the default would turn tuples into lists)
        **loader_settings(cfg, seed, pin_memory),
    )
