"""Checkpoints load with weights_only: a file whose pickle would run code is refused, not executed."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from bestrq2.cli import main as cli_main
from bestrq2.export import export, load_encoder
from bestrq2.training.checkpoint import (
    UnreadableCheckpointError,
    UnsafeCheckpointError,
    atomic_save,
    checkpoint_path,
    load_checkpoint,
    rng_state,
    set_rng_state,
)


class _Payload:
    """Unpickling this creates a file: what a hostile checkpoint would do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_hostile_checkpoint_is_refused_and_runs_nothing(tmp_path, micro_export):
    run = micro_export.parent / "run"
    ckpt = torch.load(checkpoint_path(run), weights_only=True)
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad" / "checkpoints" / "last.pt"
    atomic_save(dict(ckpt, extra=_Payload(str(marker))), bad)
    for load in (lambda: load_checkpoint(bad), lambda: export(bad.parent.parent, tmp_path / "out"),
                 lambda: load_encoder(bad.parent.parent)):  # fmt: skip
        with pytest.raises(UnsafeCheckpointError, match="refusing to load .*system"):
            load()
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint_is_a_clear_error(tmp_path, micro_export, capsys):
    """Text, a truncated checkpoint and garbage all fail with one message naming the file, not a parser's traceback."""
    good = checkpoint_path(micro_export.parent / "run").read_bytes()
    files = {"notes.wav": b"not a checkpoint\n" * 20, "truncated.pt": good[: len(good) // 2], "garbage.pt": b"x\n"}
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
        with pytest.raises(UnreadableCheckpointError, match=f"{name} is not a readable checkpoint"):
            load_checkpoint(tmp_path / name)
    assert cli_main(["export", str(tmp_path / "truncated.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "truncated.pt is not a readable checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_checkpoints_hold_plain_state_only(micro_export):
    path = checkpoint_path(micro_export.parent / "run")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    torch.load(path, weights_only=True)  # the strict loader, no allow-list


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    state = rng_state()
    atomic_save({"rng": state}, tmp_path / "c.pt")
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def test_legacy_numpy_rng_state_still_loads(tmp_path):
    """Checkpoints written before the plain format kept numpy's state as an array: allowed, nothing else."""
    atomic_save({"rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}},
                tmp_path / "old.pt")  # fmt: skip
    state = load_checkpoint(tmp_path / "old.pt")["rng"]
    set_rng_state(state)
    a = np.random.rand()
    set_rng_state(state)
    assert np.random.rand() == a


def test_checkpoints_and_exports_are_readable_as_the_umask_allows(tmp_path, micro_export):
    """Temporary files and safetensors' writer create 0600 files; a team's shared run folder needs 0644."""
    old = os.umask(0o022)
    try:
        atomic_save({"x": torch.zeros(2)}, tmp_path / "c.pt")
        export(micro_export.parent / "run", tmp_path / "exp")
        for f in (tmp_path / "c.pt", tmp_path / "exp" / "model.safetensors"):
            assert f.stat().st_mode & 0o777 == 0o644, f
    finally:
        os.umask(old)
