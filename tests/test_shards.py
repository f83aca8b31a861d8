"""Tar shards: writer round trip, webdataset layout, the loader's split over ranks and workers, epochs,
exact resume, pipe: URLs, damaged shards, unusable clips, and the `bestrq2 data shard` command."""

from __future__ import annotations

import io
import json
import math
import signal
import tarfile
import warnings
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bestrq2.cli import main as cli_main
from bestrq2.config import DataConfig
from bestrq2.data.audio import load_audio
from bestrq2.data.shard_reader import buffer_order, build_shard_loader
from bestrq2.data.shard_writer import write_shards
from bestrq2.data.shards import expand_urls, is_shard_source, iter_tar, read_clip, shard_index

integration = pytest.mark.integration
SR = 16000
MAX_SECONDS = 8.0


@contextmanager
def time_limit(seconds: int):
    """Fail instead of hanging."""

    def fail(*_):
        raise TimeoutError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def take(loader, n: int) -> list[dict]:
    """The first n batches; the loader's workers are shut down even when a test fails."""
    it = iter(loader)
    try:
        with time_limit(120):
            return [next(it) for _ in range(n)]
    finally:
        if hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


def cfg_(workers: int = 2, buffer: int = 6, crop: float = 1.0) -> DataConfig:
    return DataConfig(crop_seconds=crop, num_workers=workers, shuffle_buffer=buffer, prefetch_factor=2)


# ---- data: a few real clips, one corrupt file ----------------------------------------------------------


@pytest.fixture(scope="module")
def audio_dir(real_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = sorted((json.loads(line) for line in (real_corpus / "manifest.jsonl").read_text().splitlines()),
                  key=lambda r: r["path"])  # fmt: skip
    long = [r for r in rows if r["duration"] > 2 * MAX_SECONDS]
    short = [r for r in rows if r["duration"] < MAX_SECONDS]
    picked = long[:: max(1, len(long) // 6)][:6] + short[:: max(1, len(short) // 4)][:4]
    out = tmp_path_factory.mktemp("shard_src")
    for i, r in enumerate(picked):
        (out / f"{i:02d}_{Path(r['path']).name}").symlink_to((real_corpus / r["path"]).resolve())
    (out / "corrupt.wav").write_bytes(b"RIFF" + np.random.default_rng(0).bytes(3000))
    return out


@pytest.fixture(scope="module")
def flac_shards(audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """At least 5 shards: more than world x workers = 4."""
    out = tmp_path_factory.mktemp("flac_shards")
    write_shards(audio_dir, out, "flac", clips_per_shard=5, max_seconds=MAX_SECONDS, progress=False)
    return out


@pytest.fixture(scope="module")
def pcm_shards(audio_dir: Path, flac_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 shards: fewer than world x workers = 4 (the loader splits them by sample)."""
    clips = json.loads((flac_shards / "shards.json").read_text())["clips"]
    out = tmp_path_factory.mktemp("pcm_shards")
    write_shards(audio_dir, out, "pcm16", clips_per_shard=math.ceil(clips / 3), max_seconds=MAX_SECONDS,
                 progress=False)  # fmt: skip
    return out


def all_samples(folder: Path) -> list[tuple[str, dict[str, bytes]]]:
    return [s for url in expand_urls(folder) for s in iter_tar(url)]


# ---- writer -------------------------------------------------------------------------------------------


@integration
@pytest.mark.parametrize("fmt", ["flac", "pcm16"])
def test_writer_round_trip(fmt, audio_dir, flac_shards, pcm_shards):
    folder = flac_shards if fmt == "flac" else pcm_shards
    index = json.loads((folder / "shards.json").read_text())
    assert index["format"] == fmt and index["sample_rate"] == SR
    assert [s["url"] for s in index["shards"]] == [f"shard-{i:06d}.tar" for i in range(len(index["shards"]))]
    assert not list(folder.glob("*.tmp"))
    assert index["skipped"] == [{"path": "corrupt.wav", "reason": index["skipped"][0]["reason"]}]
    assert index["skipped"][0]["reason"].startswith("unreadable")
    assert index["files"] == 10
    samples = all_samples(folder)
    keys = [k for k, _ in samples]
    assert len(set(keys)) == len(keys) == index["clips"] and not any("." in k for k in keys)
    assert sum(s["clips"] for s in index["shards"]) == index["clips"]
    by_source = defaultdict(list)
    for key, members in samples:
        assert set(members) == {fmt, "json"}
        meta = json.loads(members["json"])
        by_source[meta["source"]].append(meta)
        x = read_clip(members)
        assert len(x) == meta["num_samples"] and meta["sample_rate"] == SR
        ref = load_audio(audio_dir / meta["source"], SR)
        start = int(round(meta["offset_s"] * SR))
        err = np.abs(x - np.clip(ref[start : start + len(x)], -1, 32767 / 32768)).max()
        assert err <= 0.5 / 32768 + 1e-7, f"{key}: {err}"  # 16-bit quantisation
    assert len(by_source) == 10
    for source, metas in by_source.items():  # long files: equal consecutive segments covering the file
        total = len(load_audio(audio_dir / source, SR))
        metas.sort(key=lambda m: m["offset_s"])
        assert len(metas) == math.ceil(total / (MAX_SECONDS * SR))
        assert sum(m["num_samples"] for m in metas) == total
        assert all(m["num_samples"] <= MAX_SECONDS * SR for m in metas)
        ends = np.cumsum([0] + [m["num_samples"] for m in metas])[:-1]
        assert [int(round(m["offset_s"] * SR)) for m in metas] == ends.tolist()
    assert max(len(m) for m in by_source.values()) >= 3
    assert abs(index["seconds"] - sum(s["seconds"] for s in index["shards"])) < 0.01


@integration
def test_writer_workers_give_the_same_shards(audio_dir, flac_shards, tmp_path):
    write_shards(
        audio_dir, tmp_path, "flac", clips_per_shard=5, max_seconds=MAX_SECONDS, workers=2, progress=False
    )
    a, b = (json.loads((d / "shards.json").read_text()) for d in (flac_shards, tmp_path))
    assert a["shards"] == b["shards"] and a["skipped"] == b["skipped"]
    assert all_samples(flac_shards) == all_samples(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_shards(audio_dir, tmp_path, progress=False)


@integration
def test_webdataset_reads_our_shards(flac_shards):
    wds = pytest.importorskip("webdataset")
    url = expand_urls(flac_shards)[0]
    ours = list(iter_tar(url))
    theirs = list(wds.WebDataset(url, shardshuffle=False))
    assert [s["__key__"] for s in theirs] == [k for k, _ in ours]
    for sample, (_, members) in zip(theirs, ours):
        assert sample["flac"] == members["flac"]
        meta = json.loads(sample["json"])
        assert set(meta) == {"source", "offset_s", "num_samples", "sample_rate"}
        assert len(sf.read(io.BytesIO(sample["flac"]))[0]) == meta["num_samples"]


@integration
def test_cli_writes_index_with_totals(audio_dir, tmp_path, capsys):
    out = tmp_path / "shards"
    argv = ["data", "shard", str(audio_dir), "--out", str(out), "--max-seconds", "8", "--clips-per-shard", "7",
            "--workers", "1", "--format", "pcm16", "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 0
    index = json.loads((out / "shards.json").read_text())
    samples = all_samples(out)
    assert index["clips"] == len(samples) == sum(s["clips"] for s in index["shards"])
    assert len(index["shards"]) == math.ceil(len(samples) / 7)
    seconds = sum(json.loads(m["json"])["num_samples"] for _, m in samples) / SR
    assert abs(index["seconds"] - seconds) < 0.01 and abs(index["hours"] - seconds / 3600) < 1e-3
    assert index["files"] == 10 and [s["path"] for s in index["skipped"]] == ["corrupt.wav"]
    printed = capsys.readouterr().out
    assert f"{index['clips']} clips" in printed and "1 files skipped" in printed and "corrupt.wav" in printed
    assert cli_main(argv) == 2  # no silent overwrite
    assert cli_main([*argv, "--overwrite"]) == 0


# ---- loader: split, epochs, resume ----------------------------------------------------------------------


def collect(folder: Path, cfg: DataConfig, world: int, until_epoch: int, batch_size: int = 3, seed: int = 3):
    """Every (rank, worker) slot's clips until that slot has started ``until_epoch``."""
    out = []  # (rank, worker, epoch, key, wav)
    workers = max(1, cfg.num_workers)
    for rank in range(world):
        it = iter(build_shard_loader(str(folder), cfg, SR, batch_size, rank=rank, world=world, seed=seed))
        try:
            done: set[int] = set()
            with time_limit(120):
                while len(done) < workers:
                    b = next(it)
                    assert isinstance(b["position"], tuple) and b["wav"].shape == (
                        batch_size,
                        int(cfg.crop_seconds * SR),
                    )
                    w = b["position"][1] % workers
                    for key, epoch, wav in zip(b["keys"], b["epochs"], b["wav"]):
                        out.append((rank, w, epoch, key, wav))
                        if epoch >= until_epoch:
                            done.add(w)
        finally:
            if hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()
    return out


@integration
@pytest.mark.parametrize("shards", ["flac_shards", "pcm_shards"])
def test_every_clip_once_per_epoch_across_ranks_and_workers(shards, request):
    folder = request.getfixturevalue(shards)
    keys = [k for k, _ in all_samples(folder)]
    n_shards = len(expand_urls(folder))
    assert (n_shards > 4) if shards == "flac_shards" else (n_shards < 4)
    seen = collect(folder, cfg_(workers=2, buffer=6), world=2, until_epoch=2)
    for epoch in (0, 1):
        counts = Counter(key for _, _, e, key, _ in seen if e == epoch)
        assert counts == Counter(keys), f"epoch {epoch}: not every clip exactly once"
    order = {e: [(r, w, key) for r, w, ep, key, _ in seen if ep == e] for e in (0, 1)}
    assert order[0] != order[1]  # another shard order and shuffle
    crops = {(key, e): wav for _, _, e, key, wav in seen if e < 2}
    differ = [not torch.equal(crops[(k, 0)], crops[(k, 1)]) for k in keys]
    assert sum(differ) > len(keys) // 2  # another random crop (clips at most the crop long are whole)


@integration
@pytest.mark.parametrize(
    ("shards", "workers", "buffer"), [("flac_shards", 2, 6), ("pcm_shards", 2, 40), ("flac_shards", 0, 12)]
)
def test_resume_gives_the_tail_of_the_uninterrupted_stream(shards, workers, buffer, request):
    folder = request.getfixturevalue(shards)
    cfg = cfg_(workers=workers, buffer=buffer)
    full = take(build_shard_loader(str(folder), cfg, SR, 3, rank=1, world=2, seed=5), 24)
    assert [b["position"] for b in full] == [(0, k) for k in range(24)]
    assert max(full[-1]["epochs"]) >= 1  # the resume points below cross an epoch
    for k in (1, 7, 20):
        resumed = take(
            build_shard_loader(str(folder), cfg, SR, 3, rank=1, world=2, seed=5, start=(0, k)), 24 - k
        )
        for a, b in zip(full[k:], resumed):
            assert a["position"] == b["position"] and a["keys"] == b["keys"] and a["epochs"] == b["epochs"]
            assert torch.equal(a["wav"], b["wav"]) and torch.equal(a["lengths"], b["lengths"])


# ---- URLs, pipes, damage ---------------------------------------------------------------------------------


@integration
def test_pipe_url_gives_the_same_batches_as_local_paths(flac_shards):
    n = len(expand_urls(flac_shards))
    cfg = cfg_(workers=0, buffer=5)
    local = take(build_shard_loader(str(flac_shards), cfg, SR, 4, seed=2), 8)
    pipe = f"pipe:cat {flac_shards}/shard-{{000000..{n - 1:06d}}}.tar"
    assert len(expand_urls(pipe)) == n
    with pytest.warns(RuntimeWarning, match="no clip counts"):  # no index beside a pipe: counted once
        piped = take(build_shard_loader(pipe, cfg, SR, 4, seed=2), 8)
    for a, b in zip(local, piped):
        assert a["keys"] == b["keys"] and torch.equal(a["wav"], b["wav"])


@integration
def test_failing_pipe_and_truncated_shard_are_reported_not_hung(flac_shards, tmp_path):
    cfg = cfg_(workers=0, buffer=5)
    with time_limit(60), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="pipe:exit 3"):
            build_shard_loader("pipe:exit 3", cfg, SR, 2)
    assert any("pipe:exit 3: command exited with status 3" in str(w.message) for w in caught)
    index = json.loads((flac_shards / "shards.json").read_text())
    raw = (flac_shards / "shard-000001.tar").read_bytes()
    (tmp_path / "truncated.tar").write_bytes(raw[: len(raw) // 2])
    index["shards"][1]["url"] = str(tmp_path / "truncated.tar")
    index["shards"][2]["url"] = "pipe:cat /nonexistent/shard.tar"
    for i, s in enumerate(index["shards"]):
        if i not in (1, 2):
            s["url"] = str(flac_shards / s["url"])
    (tmp_path / "shards.json").write_text(json.dumps(index))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = take(build_shard_loader(str(tmp_path / "shards.json"), cfg, SR, 4, seed=1), 12)
    messages = " | ".join(str(w.message) for w in caught)
    assert "truncated.tar: unreadable tar" in messages
    assert "pipe:cat /nonexistent/shard.tar: command exited with status 1" in messages
    lost = [key for b in batches for key, reason in b["skipped"] if reason.startswith("lost")]
    assert any("truncated.tar#" in k for k in lost) and any("nonexistent" in k for k in lost)
    for b in batches:  # full batches of usable audio all the same
        assert b["wav"].shape == (4, SR) and (b["wav"].abs().amax(dim=1) > 1e-5).all()
        assert all(isinstance(s, tuple) for s in b["skipped"])


def _tar(path: Path, samples: dict[str, dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _pcm(x: np.ndarray) -> dict[str, bytes]:
    meta = {"source": "synthetic", "offset_s": 0.0, "num_samples": len(x), "sample_rate": SR}
    return {"pcm16": (x * 32767).astype("<i2").tobytes(), "json": json.dumps(meta).encode()}


@pytest.mark.filterwarnings("ignore:1 of 1 shards have no clip counts")
def test_unusable_clips_are_skipped_reported_and_replaced(tmp_path):
    rng = np.random.default_rng(0)
    good = {f"good{i}": _pcm(0.1 * rng.standard_normal(2 * SR)) for i in range(6)}
    bad = {
        "short": _pcm(0.1 * rng.standard_normal(SR // 10)),
        "silent": _pcm(np.zeros(2 * SR)),
        "corrupt": {"flac": b"fLaC" + rng.bytes(500)},
        "noaudio": {"json": b"{}"},
    }
    _tar(tmp_path / "a.tar", {**good, **bad})
    batches = take(
        build_shard_loader(str(tmp_path / "a.tar"), cfg_(workers=0, buffer=0), SR, 5), 4
    )  # 2 epochs
    reasons = {key: reason for b in batches for key, reason in b["skipped"]}
    assert set(reasons) == set(bad)
    assert reasons["short"] == "too short" and reasons["silent"] == "silent"
    assert reasons["corrupt"].startswith("undecodable flac") and reasons["noaudio"].startswith("no audio")
    for b in batches:
        assert set(b["keys"]) <= set(good) and b["wav"].shape == (5, SR)
        assert (b["wav"].abs().amax(dim=1) > 1e-3).all()
    _tar(tmp_path / "bad.tar", bad)
    with pytest.raises(RuntimeError, match="no usable clip"):
        take(build_shard_loader(str(tmp_path / "bad.tar"), cfg_(workers=0, buffer=0), SR, 2), 1)


@pytest.mark.filterwarnings("ignore:1 of 1 shards have no clip counts")
def test_other_rates_and_foreign_audio_members_are_read(tmp_path):
    """Shards written elsewhere: a .wav member at 44.1 kHz, pcm16 at 8 kHz -> resampled crops."""
    t = np.arange(3 * 44100) / 44100
    wav = io.BytesIO()
    sf.write(wav, 0.5 * np.sin(2 * np.pi * 440 * t), 44100, format="WAV", subtype="PCM_16")
    low = _pcm(0.3 * np.sin(2 * np.pi * 300 * np.arange(2 * 8000) / 8000))
    low["json"] = json.dumps({"sample_rate": 8000}).encode()
    _tar(tmp_path / "x.tar", {"w": {"wav": wav.getvalue(), "cls": b"3"}, "p": low})
    (batch,) = take(build_shard_loader(str(tmp_path / "x.tar"), cfg_(workers=0, buffer=0), SR, 2), 1)
    assert batch["keys"] == ["w", "p"] and not batch["skipped"]
    assert batch["wav"].shape == (2, SR) and batch["lengths"].tolist() == [SR, SR]
    for row, freq, amp in zip(batch["wav"], (440, 300), (0.5, 0.3)):
        spectrum = np.abs(np.fft.rfft(row.numpy()))
        assert (
            abs(int(spectrum.argmax()) - freq) <= 1 and abs(float(row[2000:-2000].abs().max()) - amp) < 0.02
        )  # edges: resampling transients


def test_shard_sources_and_urls(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        _tar(shards / f"shard-{i:06d}.tar", {})
    assert is_shard_source(shards) and is_shard_source(str(shards / "shard-000000.tar"))
    assert expand_urls(shards) == [str(shards / f"shard-{i:06d}.tar") for i in range(3)]
    assert [s.clips for s in shard_index(shards)] == [None] * 3
    index = {"shards": [{"url": "shard-000002.tar", "clips": 7}, {"url": "pipe:cat /x/y.tar", "clips": 2}]}
    (shards / "shards.json").write_text(json.dumps(index))
    for source in (shards, shards / "shards.json", str(shards / "shards.json")):
        assert is_shard_source(source)
        assert [(s.url, s.clips) for s in shard_index(source)] == [(str(shards / "shard-000002.tar"), 7),
                                                                   ("pipe:cat /x/y.tar", 2)]  # fmt: skip
    pattern = f"{shards}/shard-{{000000..000002}}.tar"
    assert is_shard_source(pattern)
    assert [(s.url, s.clips) for s in shard_index(pattern)] == [(str(shards / f"shard-{i:06d}.tar"), 7 if i == 2 else None)
                                                                for i in range(3)]  # fmt: skip
    assert expand_urls("a/s-{08..10}.tar, b/{x,y}.tar") == [
        "a/s-08.tar",
        "a/s-09.tar",
        "a/s-10.tar",
        "b/x.tar",
        "b/y.tar",
    ]
    s3 = "pipe:aws s3 cp s3://b/shard-{000000..000001}.tar -"
    assert is_shard_source(s3)
    assert expand_urls(s3) == [f"pipe:aws s3 cp s3://b/shard-00000{i}.tar -" for i in range(2)]
    assert expand_urls("pipe:cat a.tar pipe:cat b.tar,c.tar d.tar") == [
        "pipe:cat a.tar",
        "pipe:cat b.tar",
        "c.tar",
        "d.tar",
    ]
    assert is_shard_source("c.tar d.tar") and is_shard_source("pipe:cat a.tar,pipe:cat b.tar")
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", np.zeros(100, dtype=np.float32), SR)
    (tmp_path / "list.jsonl").write_text('{"path": "audio/a.wav"}\n')
    (tmp_path / "other.json").write_text('{"path": "x"}')
    for source in (audio, tmp_path / "list.jsonl", tmp_path / "other.json", audio / "a.wav", "a.wav, b.tar"):
        assert not is_shard_source(source), source


def test_buffer_order_is_a_seeded_permutation():
    for n, size in ((0, 5), (1, 5), (10, 0), (10, 4), (50, 100), (300, 16)):
        order = buffer_order(n, size, np.random.default_rng(1))
        assert sorted(order.tolist()) == list(range(n))
    a = buffer_order(300, 16, np.random.default_rng(1))
    assert np.array_equal(a, buffer_order(300, 16, np.random.default_rng(1))) and not np.array_equal(
        a, np.arange(300)
    )
    assert (a[:100] < 116).all()  # causal: output j is one of the first j + size inputs


# ---- the trainer on shards -----------------------------------------------------------------------------


@integration
def test_pretraining_on_shards_resumes_at_the_right_sample(pcm_shards, tmp_path):
    """A run stopped at step 3 and resumed reads the same batches as an uninterrupted one: equal losses."""
    from bestrq2.training.checkpoint import load_checkpoint
    from bestrq2.training.logs import read_log
    from bestrq2.training.loop import pretrain
    from tests.conftest import micro_config

    cfg = micro_config(train__max_steps=6, train__ckpt_every=100, data__crop_seconds=1.0)
    cfg.data.num_workers, cfg.data.shuffle_buffer = 2, 8
    pretrain(cfg, pcm_shards, tmp_path / "straight", progress=False, tensorboard=False)
    pretrain(cfg, pcm_shards, tmp_path / "split", stop_after=3, progress=False, tensorboard=False)
    assert load_checkpoint(tmp_path / "split")["data_position"] == [0, 3]
    pretrain(cfg, pcm_shards, tmp_path / "split", resume=True, progress=False, tensorboard=False)
    a = [r["loss"] for r in read_log(tmp_path / "straight")]
    b = [r["loss"] for r in read_log(tmp_path / "split")]
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(b, a, rtol=1e-5)


@integration
@pytest.mark.slow
def test_two_ranks_train_on_shards(flac_shards, tmp_path):
    """torchrun, 2 gloo ranks reading disjoint shards through 2 loader workers each, from `pipe:` URLs
    without an index: rank 0 alone reads them to count their clips and hands the counts on."""
    import os
    import subprocess
    import sys

    from bestrq2.training.checkpoint import load_checkpoint

    run = tmp_path / "run"
    n = len(expand_urls(flac_shards))
    pipes = f"pipe:cat {flac_shards}/shard-{{000000..{n - 1:06d}}}.tar"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "bestrq2.cli", "pretrain", "--data", pipes, "--out", str(run), "--max-steps", "4",
           "--batch-size", "4", "--no-progress", "--set", "data.num_workers=2", "--set", "data.crop_seconds=1.0",
           "--set", "encoder.depth=1", "--set", "encoder.width=64", "--set", "encoder.heads=2",
           "--set", "predictor.width=32", "--set", "predictor.depth=1", "--set", "predictor.heads=2"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "shards" in proc.stdout and "world=2" in proc.stdout
    assert proc.stderr.count("reading them once to count") == 1  # rank 0 only
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 4 and ckpt["data_position"] == [0, 4]
