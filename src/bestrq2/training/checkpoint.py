"""Training checkpoints: atomic writes, full state (model, optimiser, schedule, RNG, data position).

A checkpoint holds only tensors and plain containers (dict, list, tuple, str, int, float, bool, None),
and is loaded with ``torch.load(weights_only=True)``: loading a checkpoint never runs code from it. One
holding any other object is refused with :class:`UnsafeCheckpointError`, which names the objects.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_NAME = "last.pt"


class UnsafeCheckpointError(ValueError):
    """The file holds objects that only a full unpickler can build (and that could run code)."""


class UnreadableCheckpointError(ValueError):
    """The file is not a PyTorch checkpoint at all, or a truncated one."""


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / CKPT_NAME


def readable_as_umask(path: str | Path) -> None:
    """Give ``path`` the mode an ordinary new file gets (0666 less the umask, e.g. 0644): temporary files and
    safetensors' writer create 0600 files, which the rest of a team or a cluster's other jobs cannot read."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: a crash never
    leaves a half-written checkpoint, and the previous one survives until the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        readable_as_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),  # (version, tuple of ints, gauss or None): plain containers
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):
        n = (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    np.random.set_state(n)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    # checkpoints written before this format kept numpy's RNG state as an array: allow exactly the numpy
    # array types (data, no code), nothing else
    multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray
    legacy = [np.dtype, np.ndarray, type(np.dtype(np.uint32)), multiarray._reconstruct]
    try:
        with torch.serialization.safe_globals(legacy):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a zip checkpoint at all
            found = []
        if not found and "global" not in str(e).lower():  # no object to refuse: the pickle itself is garbage
            raise UnreadableCheckpointError(f"{path} is not a readable checkpoint (not written by torch.save)") from None
        what = f" ({', '.join(found)})" if found else ""
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers{what}, and "
            "unpickling them could run code. bestrq2 checkpoints never do; if you wrote this file yourself "
            f"and trust it, convert it with torch.load(weights_only=False) and save plain state. ({e.__class__.__name__})"
        ) from None
    except Exception as e:  # torch.load's parsers raise RuntimeError, KeyError, EOFError ... for a file that is not one
        raise UnreadableCheckpointError(
            f"{path} is not a readable checkpoint (truncated, or not written by torch.save): {type(e).__name__}: {str(e)[:120]}"
        ) from None
