"""Loader worker settings shared by the file and shard loaders."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from torch.utils.data import DataLoader, Dataset

from bestrq2.config import ConfigError, DataConfig
from bestrq2.data import load_audio, loader_settings


class _NiceOfWorker(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        return os.nice(0)  # this process' nice value


@pytest.mark.parametrize("nice", [0, 5])
def test_loader_workers_run_at_the_configured_nice_value(nice):
    cfg = DataConfig(num_workers=1, worker_nice=nice)
    loader = DataLoader(_NiceOfWorker(), batch_size=None, **loader_settings(cfg, 0, False))
    assert int(next(iter(loader))) == min(os.nice(0) + nice, 19)


def test_worker_nice_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="worker_nice"):
        DataConfig(worker_nice=20).validate()


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_load_audio_gives_libsndfiles_floats(tmp_path, fmt, channels, subtype):
    """16-bit files are read as int16 and scaled; the result must equal libsndfile's own float decode,
    crop for crop (24-bit files take the float path)."""
    x = (np.random.default_rng(0).standard_normal((24000, channels)) * 0.3).clip(-1, 1)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, x, 16000, subtype=subtype, format=fmt)
    ref = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1, dtype=np.float32)
    np.testing.assert_array_equal(load_audio(path, 16000), ref)
    start = int(np.random.default_rng(5).integers(0, 24000 - 8000 + 1))  # the crop load_audio draws
    np.testing.assert_array_equal(load_audio(path, 16000, 8000, np.random.default_rng(5)), ref[start : start + 8000])
