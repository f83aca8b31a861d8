"""The largest training batch that fits in device memory: grow by doubling, then bisect.

A try is two full training steps (the second one holds the optimiser state, the gradients' buffers
and the activations at once) of a model prepared as in training (``bestrq2.bench.throughput.TrainStep``).
On CUDA a try fails with ``torch.cuda.OutOfMemoryError``, after which memory is freed; ``limit_gib`` caps
the caching allocator (``torch.cuda.set_per_process_memory_fraction``), e.g. to emulate an 80 GB
card on a larger one. On the CPU an out-of-memory error kills the process instead of raising, so a
limit is required and only emulated: a try fails when the process's peak RSS exceeds it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bestrq2.bench.devices import PeakMemory
from bestrq2.bench.throughput import TrainStep, release
from bestrq2.config import Config


def search_max_batch(
    fits: Callable[[int], bool], start: int = 16, limit: int = 1 << 16, step: int = 8
) -> tuple[int, bool]:
    """Largest b <= limit with fits(b), assuming fits is monotone: double from ``start``, then bisect to a
    multiple of ``step`` (exact below ``step``). Returns (batch, hit_limit); batch 0 if not even 1 fits."""
    lo, hi, b = 0, None, max(1, start)
    while hi is None:  # grow
        b = min(b, limit)
        if not fits(b):
            hi = b
        elif b == limit:
            return limit, True
        else:
            lo, b = b, b * 2
    while True:
        mid = (lo + hi) // 2
        if mid >= step:
            mid = mid // step * step
        if mid <= lo:
            return lo, False
        if fits(mid):
            lo = mid
        else:
            hi = mid


class BatchProbe:
    """``probe(b)`` -> True if a training step at batch b fits; keeps the last fitting try's figures."""

    def __init__(self, cfg: Config, device: torch.device, limit_gib: float | None = None):
        if device.type != "cuda" and not limit_gib:
            raise ValueError(
                "--find-max-batch on the CPU needs --memory-limit-gib: an out-of-memory error there kills the "
                "process instead of raising, so a limit can only be emulated (by the process's peak RSS)"
            )
        self.cfg, self.device, self.limit = cfg, device, limit_gib
        self.memory = PeakMemory(device)
        self.tries: list[dict] = []
        if device.type == "cuda" and limit_gib:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gib * 2**30 / total), device)
        release(device)
        self.runner = TrainStep(cfg, device)

    def __call__(self, batch: int) -> bool:
        self.memory.reset()
        oom, step_s = False, None
        try:
            self.runner.run(batch)
            step_s = self.runner.run(batch)
        except torch.cuda.OutOfMemoryError:
            oom = True
        if oom:  # outside the except block: the traceback (and the activations it holds) is gone
            self.runner.optimizer.zero_grad(set_to_none=True)
        peak = self.memory.read()
        release(self.device)
        fits = not oom and (self.device.type == "cuda" or peak <= self.limit * 2**30)
        self.tries.append({"batch": batch, "fits": fits, "peak_memory_bytes": peak, "step_s": step_s})
        return fits

    def close(self) -> None:
        del self.runner
        release(self.device)
        if self.device.type == "cuda" and self.limit:
            torch.cuda.set_per_process_memory_fraction(1.0, self.device)


def find_max_batch(
    cfg: Config,
    device: torch.device,
    start: int = 16,
    limit: int = 1 << 16,
    step: int = 8,
    limit_gib: float | None = None,
) -> dict[str, object]:
    probe = BatchProbe(cfg, device, limit_gib)
    try:
        batch, at_limit = search_max_batch(probe, start, limit, step)
    finally:
        probe.close()
    best = next((t for t in reversed(probe.tries) if t["fits"] and t["batch"] == batch), None)
    return {
        "method": cfg.method,
        "preset": cfg.preset,
        "activation_checkpointing": cfg.parallel.activation_checkpointing,
        "compile": cfg.parallel.compile,
        "crop_seconds": cfg.data.crop_seconds,
        "max_batch": batch,
        "hit_search_limit": at_limit,
        "granularity": step,
        "memory_limit_gib": limit_gib,
        "memory_kind": probe.memory.kind if device.type == "cuda" else f"{probe.memory.kind}, emulated limit",
        "peak_memory_bytes": best["peak_memory_bytes"] if best else None,
        "step_s": best["step_s"] if best else None,
        "tries": probe.tries,
    }


def format_max_batch(rows: list[dict]) -> str:
    lines = ["| method | preset | activation checkpointing | max batch | peak memory at it | one step at it | clips/s (1 step) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        b = f"{'>= ' if r['hit_search_limit'] else ''}{r['max_batch']} x {r['crop_seconds']:g} s"
        mem = f"{r['peak_memory_bytes'] / 2**30:.2f} GiB" if r["peak_memory_bytes"] else "-"
        step = f"{r['step_s'] * 1000:.0f} ms" if r["step_s"] else "-"
        rate = f"{r['max_batch'] / r['step_s']:.1f}" if r["step_s"] else "-"
        ac = "on" if r["activation_checkpointing"] else "off"
        lines.append(f"| {r['method']} | {r['preset']} | {ac} | {b} | {mem} | {step} | {rate} |")
    return "\n".join(lines)
