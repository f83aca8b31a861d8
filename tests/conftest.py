"""Shared fixtures: configs small enough for CPU, and real audio from the demo corpus builder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bestrq2.config import Config, get_preset


def micro_config(**overrides: object) -> Config:
    """The tiny-ref preset (the reference recipe) shrunk further so that a training step takes milliseconds."""
    cfg = get_preset("tiny-ref")
    cfg.encoder.width, cfg.encoder.depth, cfg.encoder.heads = 64, 2, 2
    cfg.predictor.width, cfg.predictor.depth, cfg.predictor.heads = 32, 1, 2
    cfg.quantizer.codebook_size = 256
    cfg.train.batch_size = 4
    cfg.train.log_every = 1
    cfg.data.crop_seconds = 2.5
    cfg.data.num_workers = 0
    for key, value in overrides.items():
        section, field = key.split("__")
        setattr(getattr(cfg, section), field, value)
    return cfg.validate()


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def real_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of real audio: the demo corpus (small build). CI builds it once beforehand and points
    BESTRQ2_TEST_CORPUS at it; otherwise it is built here."""
    env = os.environ.get("BESTRQ2_TEST_CORPUS")
    if env:
        path = Path(env)
        assert path.is_dir(), f"BESTRQ2_TEST_CORPUS={env} does not exist"
        return path
    from bestrq2.corpora import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    manifest = build_corpus(out, small=True)
    return Path(manifest).parent


@pytest.fixture(scope="session")
def micro_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init exported encoder (max_steps=0) of the micro config, on two noise clips."""
    import numpy as np
    import soundfile as sf

    from bestrq2.export import export
    from bestrq2.training.loop import pretrain

    root = tmp_path_factory.mktemp("micro_export")
    (root / "audio").mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        sf.write(root / "audio" / f"n{i}.wav", (0.1 * rng.standard_normal(3 * 16000)).astype(np.float32), 16000)
    pretrain(micro_config(train__max_steps=0), root / "audio", root / "run", progress=False, tensorboard=False)
    return export(root / "run", root / "export")
