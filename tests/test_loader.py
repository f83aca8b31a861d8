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


def test_auto_workers_load_in_the_trainer_on_a_cpu_and_use_two_on_a_gpu():
    auto = DataConfig()
    assert auto.num_workers == -1 and auto.workers_on("cpu") == 0 and auto.workers_on("cuda") == 2
    assert DataConfig(num_workers=3).workers_on("cpu") == 3  # an explicit number stays
    assert loader_settings(auto, 0, pin_memory=False)["num_workers"] == 0
    assert loader_settings(auto, 0, pin_memory=True)["num_workers"] == 2  # loaders pin memory for a GPU
    with pytest.raises(ConfigError, match="num_workers"):
        DataConfig(num_workers=-2).validate()


@pytest.mark.integration
def test_a_run_saves_the_worker_count_it_used(real_corpus, tmp_path):
    from bestrq2.config import Config
    from bestrq2.training.checkpoint import load_checkpoint
    from bestrq2.training.loop import pretrain
    from tests.conftest import micro_config

    cfg = micro_config(train__max_steps=1, data__num_workers=-1)
    pretrain(cfg, real_corpus, tmp_path / "run", progress=False, tensorboard=False)
    assert Config.from_dict(load_checkpoint(tmp_path / "run")["config"]).data.num_workers == 0
    assert cfg.data.num_workers == -1  # the caller's config is left as it was
    # resuming with the same (auto) config keeps the saved count and finishes the run
    cfg.train.max_steps = 2
    pretrain(cfg, real_corpus, tmp_path / "run", resume=True, progress=False, tensorboard=False)
    assert load_checkpoint(tmp_path / "run")["step"] == 1  # max_steps comes from the saved config


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


def test_unusable_files_say_why(tmp_path):
    """A missing file and a corrupt one are told apart (libsndfile says only "System error." for the first)."""
    from bestrq2.data.audio import AudioError

    with pytest.raises(AudioError, match="missing"):
        load_audio(tmp_path / "gone.wav", 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(AudioError, match=r"unreadable \(LibsndfileError"):
        load_audio(tmp_path / "bad.wav", 16000)


@pytest.mark.parametrize("fmt,subtype,rate", [("FLAC", "PCM_16", 16000), ("FLAC", "PCM_24", 16000), ("WAV", "PCM_16", 22050)])
def test_decode_cache_gives_the_same_crops(tmp_path, fmt, subtype, rate):
    """With a decode cache the file is decoded once; every crop (and the whole file) is bit-identical to
    decoding it directly, also through resampling and for 2 channels."""
    from bestrq2.data.decode_cache import DecodeCache

    x = (np.random.default_rng(1).standard_normal((3 * rate, 2)) * 0.3).clip(-1, 1)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, x, rate, subtype=subtype, format=fmt)
    cache = DecodeCache(tmp_path / "cache")
    for seed in range(4):
        direct = load_audio(path, 16000, 8000, np.random.default_rng(seed))
        cached = load_audio(path, 16000, 8000, np.random.default_rng(seed), cache=cache)
        np.testing.assert_array_equal(cached, direct)
    np.testing.assert_array_equal(load_audio(path, 16000, cache=cache), load_audio(path, 16000))
    entries = list((tmp_path / "cache").glob("*.npy"))
    assert len(entries) == 1 and entries[0].with_suffix(".rate").read_text() == str(rate)  # at the file's own rate
    assert np.load(entries[0]).dtype == (np.int16 if subtype == "PCM_16" else np.float32)
    # a second cache object (another worker) finds the entry instead of decoding again
    mtime = entries[0].stat().st_mtime_ns
    np.testing.assert_array_equal(load_audio(path, 16000, cache=DecodeCache(tmp_path / "cache")), load_audio(path, 16000))
    assert entries[0].stat().st_mtime_ns == mtime


def test_decode_cache_redecodes_a_changed_file_and_reports_bad_ones(tmp_path):
    from bestrq2.data.audio import AudioError
    from bestrq2.data.decode_cache import DecodeCache

    path = tmp_path / "a.flac"
    sf.write(path, np.full(16000, 0.25), 16000, subtype="PCM_16")
    cache = DecodeCache(tmp_path / "cache")
    assert load_audio(path, 16000, cache=cache)[0] == 0.25
    sf.write(path, np.full(16000, -0.5), 16000, subtype="PCM_16")
    os.utime(path, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    assert load_audio(path, 16000, cache=DecodeCache(tmp_path / "cache"))[0] == -0.5
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="unreadable"):
        load_audio(bad, 16000, cache=cache)
    sf.write(tmp_path / "short.flac", np.full(100, 0.25), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="too short"):
        load_audio(tmp_path / "short.flac", 16000, min_samples=8000, cache=cache)
    with pytest.raises(AudioError, match="silent"):
        sf.write(tmp_path / "zero.flac", np.zeros(16000), 16000, subtype="PCM_16")
        load_audio(tmp_path / "zero.flac", 16000, cache=cache)


def test_crop_dataset_with_a_decode_cache_yields_the_same_clips(tmp_path):
    """data.decode_cache changes where the samples come from, not which: the same (epoch, index) keys give
    the same crops, and the cache holds one entry per file."""
    from bestrq2.data.files import CropDataset

    rng = np.random.default_rng(3)
    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.flac")
        sf.write(files[-1], (rng.standard_normal(16000 * (2 + i)) * 0.2).clip(-1, 1), 16000, subtype="PCM_16")
    plain = CropDataset(files, DataConfig(crop_seconds=1.0), 16000, seed=7)
    cached = CropDataset(files, DataConfig(crop_seconds=1.0, decode_cache=str(tmp_path / "cache")), 16000, seed=7)
    for key in [(0, 0), (0, 1), (0, 2), (1, 2), (3, 1)]:
        np.testing.assert_array_equal(cached[key]["wav"], plain[key]["wav"])
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


def test_crops_do_not_depend_on_which_bad_files_a_worker_already_met(real_corpus, tmp_path):
    """A file with non-finite samples in one stretch fails some crops and not others; a worker's memory of
    unusable files (empty on resume, different per worker) must not change what any key reads."""
    from bestrq2.data import list_audio
    from bestrq2.data.files import CropDataset

    good = list_audio(real_corpus)[:3]
    files = [*good, tmp_path / "nan.wav", tmp_path / "empty.wav", tmp_path / "text.wav"]
    nan = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    nan[4000:4100] = np.nan  # 0.25 s in: about half of the 2.5 s crops hold it
    sf.write(files[3], nan, 16000, subtype="FLOAT")
    files[4].write_bytes(b"")
    files[5].write_text("not audio\n" * 20)
    keys = [(epoch, i) for epoch in range(8) for i in range(len(files))]
    forward = CropDataset(files, DataConfig(crop_seconds=2.5), 16000, seed=3)
    backward = CropDataset(files, DataConfig(crop_seconds=2.5), 16000, seed=3)
    a = {k: forward[k] for k in keys}
    b = {k: backward[k] for k in reversed(keys)}
    for k in keys:
        np.testing.assert_array_equal(a[k]["wav"], b[k]["wav"])
        assert a[k]["skipped"] == b[k]["skipped"]
    reasons = {str(p): why for sample in a.values() for p, why in sample["skipped"]}
    assert reasons[str(files[3])] == "non-finite samples" and reasons[str(files[4])] == "empty (0 bytes)"
    assert str(files[3]) not in forward._bad, "a crop's failure is not remembered as the file's"
    used = [k for k in keys if k[1] == 3 and not a[k]["skipped"]]
    assert used, "some crops of the file with a non-finite stretch are usable"
