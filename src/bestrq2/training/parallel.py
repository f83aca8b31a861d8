"""Parallelism and speed, applied from outside the model (the objectives know nothing of it).

    prepare_model(model, cfg.parallel, info)   in this order, as usual for transformers:
      1. activation checkpointing: each transformer block recomputes its activations in backward
      2. torch.compile: each block compiled in place (state-dict keys unchanged)
      3. several ranks: DDP (replicas) or FSDP2 (``fully_shard`` per block, then the root)

Every transformer block (ViT, predictor, Conformer, and an EMA target encoder) is a unit, except a
frozen quantizer teacher's, which FSDP2 leaves to the root (fp32); frozen buffers (the quantizer) stay
replicated. Checkpoints always hold the full, unsharded state under the
plain module's names (:func:`full_state`), so a run can resume under another strategy or world size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel as DDP

from bestrq2.config import ParallelConfig
from bestrq2.models.conformer import ConformerBlock
from bestrq2.models.layers import Block
from bestrq2.models.teacher import FrozenTeacher
from bestrq2.training.distributed import DistInfo

BLOCK_TYPES: tuple[type[nn.Module], ...] = (Block, ConformerBlock)


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of ``model`` (outermost first-seen order), the units of every wrapper."""
    return [m for m in model.modules() if isinstance(m, BLOCK_TYPES)]


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Wrap every block so that its activations are recomputed in the backward pass (non-reentrant;
    the RNG state is replayed, so drop-path draws the same masks twice). Keys of the state dict are
    unchanged (the wrapper strips its own prefix)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing as wrap,
    )
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    wrap(model, checkpoint_wrapper_fn=checkpoint_wrapper, check_fn=lambda m: isinstance(m, BLOCK_TYPES))


def compile_blocks(model: nn.Module) -> None:
    """``torch.compile`` each block in place (one graph per block type and shape, small and reused);
    with activation checkpointing, each checkpoint wrapper (and not also the block inside it)."""
    for m in _units(model):
        m.compile()


def _units(model: nn.Module) -> list[nn.Module]:
    """The modules compiled and sharded one by one: each block, or its checkpoint wrapper."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    return [m for m in model.modules() if isinstance(m, CheckpointWrapper)] or blocks_of(model)


def prepare_model(model: nn.Module, cfg: ParallelConfig, info: DistInfo, bf16: bool = False) -> nn.Module:
    """Apply checkpointing, compilation and the data-parallel wrapper; returns the module to call.

    ``model`` itself is modified in place and stays the handle for parameters, EMA updates and
    checkpoints (with FSDP2 its parameters become sharded DTensors). ``bf16`` (the step runs under bf16
    autocast): FSDP2 gathers each block's parameters in bf16 and reduces gradients in fp32, half the
    traffic; the master weights stay fp32, and the root (frontend, quantizer, patch embedding, heads)
    is left alone, so the waveform and features are never cast."""
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    if cfg.compile:
        compile_blocks(model)
    if not info.enabled:
        return model
    if cfg.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        reduce = torch.bfloat16 if cfg.reduce_dtype == "bf16" else torch.float32
        block_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=reduce)
        teacher = {id(m) for t in model.modules() if isinstance(t, FrozenTeacher) for m in t.modules()}
        for unit in _units(model):
            if id(unit) not in teacher:  # a frozen teacher's blocks stay fp32, with the root: its targets keep fp32
                fully_shard(unit, mp_policy=block_policy)
        fully_shard(model, mp_policy=MixedPrecisionPolicy(reduce_dtype=reduce))
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    ddp = DDP(model, device_ids=device_ids, broadcast_buffers=False)
    if cfg.reduce_dtype == "bf16":
        ddp.register_comm_hook(None, _bf16_mean_hook)
    return ddp


def _bf16_mean_hook(state, bucket):  # noqa: ANN001, ANN202 (DDP checks real annotations; ours are strings)
    """DDP communication hook: average a gradient bucket (a ``dist.GradBucket``) over ranks in bf16 (half
    the bytes), then write it back in the gradients' dtype. Any backend with bf16 all-reduce (NCCL, gloo)."""
    grads = bucket.buffer()
    low = grads.to(torch.bfloat16).div_(dist.get_world_size())
    future = dist.all_reduce(low, async_op=True).get_future()

    def write_back(f: torch.futures.Future) -> torch.Tensor:
        grads.copy_(f.value()[0])
        return grads

    return future.then(write_back)


@contextlib.contextmanager
def no_gradient_sync(wrapped: nn.Module, cfg: ParallelConfig, info: DistInfo, skip: bool) -> Iterator[None]:
    """While ``skip``: accumulate gradients locally (no all-reduce / reduce-scatter) on this micro-step."""
    if not (skip and info.enabled):
        yield
        return
    if isinstance(wrapped, DDP):
        with wrapped.no_sync():
            yield
        return
    wrapped.set_requires_gradient_sync(False)  # FSDP2
    try:
        yield
    finally:
        wrapped.set_requires_gradient_sync(True)


def _full_options() -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The unsharded model and optimiser state (parameter names as keys), on the CPU. A collective
    with FSDP2: every rank must call it; rank 0 receives the tensors."""
    return get_model_state_dict(model, options=_full_options()), get_optimizer_state_dict(
        model, optimizer, options=_full_options()
    )


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full optimiser state (from :func:`full_state`) into any strategy's optimiser."""
    fused = [g.get("fused") for g in optimizer.param_groups]
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    for g, f in zip(optimizer.param_groups, fused):  # a CPU run resumed on a GPU keeps fused AdamW
        g["fused"] = f


def grad_norm_value(norm: torch.Tensor) -> float:
    """``clip_grad_norm_``'s result as a float (a DTensor under FSDP2)."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def params_checksum(model: nn.Module, info: DistInfo) -> list[float]:
    """Per-rank sums of the local parameters; replicas (DDP) must agree. Under FSDP2 each rank holds
    its own shard: nothing to compare, an empty list."""
    if any(hasattr(p, "full_tensor") for p in model.parameters()):
        return []
    local = sum(float(p.detach().double().sum()) for p in model.parameters())
    if not info.enabled:
        return [local]
    out: list[float] = [0.0] * info.world
    dist.all_gather_object(out, local)
    return out
