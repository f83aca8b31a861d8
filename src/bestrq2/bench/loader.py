"""Throughput of the training data loader alone (no model): clips/s and audio seconds/s.

The loader is the one ``bestrq2.training.loop`` builds for rank 0 of 1: ``bestrq2.data.build_loader`` for a
folder or manifest, ``bestrq2.data.shard_reader.build_shard_loader`` for tar shards. Time to the first batch
(worker start-up, shuffle buffers) is reported apart; the rate is measured after the first
``warmup`` batches (by default one per worker: the batches the workers prepared in parallel while
starting) over ``batches`` more, consumed as fast as they come.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from bestrq2.config import Config
from bestrq2.data.files import build_loader, list_audio, resolve_workers
from bestrq2.data.shard_reader import build_shard_loader
from bestrq2.data.shards import is_shard_source


def build_training_loader(source: str, cfg: Config, batch_size: int, pin_memory: bool = False):  # noqa: ANN201
    """The loader ``bestrq2.training.loop`` would read on rank 0 of 1, and whether it reads shards."""
    where = (cfg.data, cfg.frontend.sample_rate, batch_size, 0, 1, cfg.train.seed, (0, 0))
    if is_shard_source(source):
        return build_shard_loader(source, *where, pin_memory=pin_memory), True
    return build_loader(list_audio(source, cfg.data.extensions), *where, pin_memory=pin_memory), False


def bench_loader(
    source: str,
    cfg: Config,
    batch_size: int,
    workers: int | None = None,
    batches: int = 50,
    warmup: int | None = None,
    pin_memory: bool = False,
) -> dict[str, object]:
    if workers is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_workers=workers))
    workers = resolve_workers(cfg.data, pin_memory).num_workers
    warmup = max(1, workers) if warmup is None else warmup
    t0 = time.perf_counter()
    loader, sharded = build_training_loader(source, cfg, batch_size, pin_memory)
    it = iter(loader)
    first, t_start = None, t0
    real_samples = total_samples = 0
    for i in range(warmup + batches):
        batch = next(it)
        if i == 0:
            first = time.perf_counter() - t0
        if i == warmup - 1:
            t_start = time.perf_counter()
        if i >= warmup:
            real_samples += int(batch["lengths"].sum())
            total_samples += batch["wav"].numel()
    elapsed = time.perf_counter() - t_start
    del it, loader
    clips = batches * batch_size
    return {
        "source": source,
        "kind": "shards" if sharded else "files",
        "workers": workers,
        "batch_size": batch_size,
        "crop_seconds": cfg.data.crop_seconds,
        "batches": batches,
        "warmup_batches": warmup,
        "first_batch_s": first,
        "clips_per_s": clips / elapsed,
        "audio_s_per_s": clips * cfg.data.crop_seconds / elapsed,
        "real_audio_fraction": real_samples / max(total_samples, 1),
        "threads": torch.get_num_threads(),
    }


def format_loader(r: dict, model_rows: list[dict] | None = None) -> str:
    lines = [
        f"loader   : {r['kind']} {r['source']}  {r['workers']} workers, batch {r['batch_size']} x {r['crop_seconds']:g} s, "
        f"{r['batches']} batches after {r['warmup_batches']} warm-up",
        f"           first batch after {r['first_batch_s']:.2f} s; then {r['clips_per_s']:.1f} clips/s = "
        f"{r['audio_s_per_s']:.0f} audio s/s ({100 * r['real_audio_fraction']:.0f} % real audio, rest zero padding)",
    ]
    for m in model_rows or []:
        t = m.get("train", {})
        if "clips_per_s" not in t:
            continue
        ratio = r["clips_per_s"] / t["clips_per_s"]
        verdict = (
            "faster than the model: not the bottleneck"
            if ratio > 1
            else "SLOWER than the model: the bottleneck"
        )
        lines.append(
            f"           vs {m['method']} {m['preset']} (batch {m['batch_size']}, {m['device']}): "
            f"{t['clips_per_s']:.1f} clips/s -> loader / model = {ratio:.2f}, {verdict}"
        )
    return "\n".join(lines)
