"""torch.distributed set-up: a plain process is world size 1; torchrun gives ranks (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Read torchrun's environment; initialise the process group when there are several ranks."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device is None or device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:  # "cuda": this process's GPU
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local_rank, dev)


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t / info.world
    return t


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: object, info: DistInfo) -> list[object]:
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T], info: DistInfo) -> T:
    """Run ``fn`` on rank 0 only and hand its result - or its exception, raised everywhere - to every
    rank (e.g. one listing of a folder of millions of files instead of one per GPU)."""
    if not info.enabled:
        return fn()
    box: list[object] = [None]
    if info.is_main:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]  # type: ignore[misc]
    if kind == "error":
        raise value
    return value


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo, finished: bool = True) -> None:
    """Tear the process group down. After a normal end (``finished``), first wait for every rank and
    collect garbage, so that no collective is in flight and no tensor of one is left for the
    interpreter's exit to free: a gloo worker thread freeing one then aborts the process (seen once
    in CI after a successful run). After an error, no barrier: the other ranks may never arrive."""
    if info.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
            gc.collect()
        dist.destroy_process_group()
