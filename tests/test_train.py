"""Pretraining on real audio: learning, frozen targets, exact resume, bad files, random init."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bestrq2.cli import STOPPED
from bestrq2.cli import main as cli_main
from bestrq2.config import Config
from bestrq2.data import list_audio
from bestrq2.quantizer import RandomProjectionQuantizer
from bestrq2.training.checkpoint import load_checkpoint
from bestrq2.training.logs import read_log
from bestrq2.training.loop import pretrain
from tests.conftest import micro_config

pytestmark = pytest.mark.integration


def test_pretraining_on_real_audio_learns(real_corpus, tmp_path):
    cfg = micro_config(train__max_steps=60, train__batch_size=8, optim__lr=2e-3, optim__warmup_fraction=0.05)
    run = tmp_path / "run"
    result = pretrain(cfg, real_corpus, run, progress=False, tensorboard=False)
    assert result.step == 60
    log = read_log(run)
    assert len(log) == 60 and all(np.isfinite(r["loss"]) for r in log)
    first = np.mean([r["loss"] for r in log[:5]])
    last = np.mean([r["loss"] for r in log[-5:]])
    acc = np.mean([r["acc"] for r in log[-5:]])
    assert last < first - 0.3, f"loss did not fall: {first:.3f} -> {last:.3f}"
    chance = 1.0 / cfg.quantizer.codebook_size
    assert acc > 5 * chance, f"code accuracy {acc:.4f} is not above chance {chance:.4f}"
    assert log[-1]["codes_used"] > 10

    # the quantizer is frozen: bit-identical to one rebuilt from its seed
    ckpt = load_checkpoint(run)
    fresh = RandomProjectionQuantizer(cfg.quantizer, cfg.frontend.patch_dim, cfg.frontend)
    assert torch.equal(ckpt["model"]["quantizer.projection"], fresh.projection)
    assert torch.equal(ckpt["model"]["quantizer.codebook"], fresh.codebook)
    saved = Config.from_dict(ckpt["config"])
    assert saved == cfg and (run / "config.json").is_file() and (run / "tensorboard").exists() is False


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_gives_the_same_losses(real_corpus, tmp_path, accum):
    cfg = micro_config(train__max_steps=6, train__ckpt_every=100, encoder__drop_path=0.2, train__accum_steps=accum)
    cfg.data.num_workers = 2  # the data do not depend on the number of loader workers
    pretrain(cfg, real_corpus, tmp_path / "straight", progress=False, tensorboard=False)
    cfg.data.num_workers = 0
    pretrain(cfg, real_corpus, tmp_path / "split", stop_after=3, progress=False, tensorboard=False)
    assert load_checkpoint(tmp_path / "split")["step"] == 3
    with pytest.raises(FileExistsError):
        pretrain(cfg, real_corpus, tmp_path / "split", progress=False, tensorboard=False)
    pretrain(cfg, real_corpus, tmp_path / "split", resume=True, progress=False, tensorboard=False)
    a = [r["loss"] for r in read_log(tmp_path / "straight")]
    b = [r["loss"] for r in read_log(tmp_path / "split")]
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(b, a, rtol=1e-5)
    wa = load_checkpoint(tmp_path / "straight")["model"]
    wb = load_checkpoint(tmp_path / "split")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)


def _bad_folder(real_corpus: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    good = list_audio(real_corpus)[:4]
    for i, f in enumerate(good):
        shutil.copy(f, folder / ("sub" if i % 2 else "") / f"good{i}{f.suffix}")
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(range(256)) * 4)
    (folder / "not_audio.mp3").write_text("this is not an mp3 file\n" * 50)
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(folder / "silent.flac", np.zeros(16000 * 3, dtype=np.float32), 16000)
    nan = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    nan[1000:2000] = np.nan
    sf.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    return folder


def test_bad_files_are_skipped_and_counted(real_corpus, tmp_path, capsys):
    folder = _bad_folder(real_corpus, tmp_path)
    cfg = micro_config(train__max_steps=6, data__crop_seconds=2.5)
    result = pretrain(cfg, folder, tmp_path / "run", progress=False, tensorboard=False)
    assert result.step == 6 and np.isfinite(result.last_loss)
    assert all(np.isfinite(r["loss"]) for r in read_log(tmp_path / "run"))
    lines = (tmp_path / "run" / "skipped_files.txt").read_text().splitlines()
    why = {Path(f).name: reason for f, reason in (line.split("\t") for line in lines)}
    assert sorted(why) == ["corrupt.wav", "empty.wav", "nan.wav", "not_audio.mp3", "silent.flac"]
    assert why["silent.flac"] == "silent" and why["nan.wav"] == "non-finite samples"
    assert why["corrupt.wav"].startswith("unreadable (")
    # the summary counts kinds of failure, without each file's error text
    summary = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("skipped 5 unusable files"))
    assert "unreadable: 2" in summary and "silent: 1" in summary and "corrupt.wav" not in summary


def test_skipped_files_are_written_at_each_checkpoint_and_kept_on_resume(real_corpus, tmp_path):
    folder = _bad_folder(real_corpus, tmp_path)
    cfg = micro_config(train__max_steps=6, train__ckpt_every=2, data__crop_seconds=2.5)
    run = tmp_path / "run"
    pretrain(cfg, folder, run, stop_after=2, progress=False, tensorboard=False)
    listed = (run / "skipped_files.txt").read_text()  # written with the step-2 checkpoint
    assert listed and all("\t" in line for line in listed.splitlines())
    # an earlier part of the run skipped a file that the rest will not meet again: resuming keeps it listed
    (run / "skipped_files.txt").write_text(listed + f"{folder / 'gone.wav'}\tunreadable (removed since)\n")
    pretrain(cfg, folder, run, resume=True, progress=False, tensorboard=False)
    why = dict(line.split("\t") for line in (run / "skipped_files.txt").read_text().splitlines())
    assert why[str(folder / "gone.wav")] == "unreadable (removed since)"
    assert sorted(Path(f).name for f in why) == ["corrupt.wav", "empty.wav", "gone.wav", "nan.wav", "not_audio.mp3",
                                                 "silent.flac"]  # fmt: skip


def test_elapsed_time_counts_the_whole_run_across_a_resume(real_corpus, tmp_path):
    cfg = micro_config(train__max_steps=4, train__log_every=1)
    run = tmp_path / "run"
    pretrain(cfg, real_corpus, run, stop_after=2, progress=False, tensorboard=False)
    before = load_checkpoint(run)["elapsed_s"]
    assert before > 0 and before == pytest.approx(read_log(run)[-1]["elapsed_s"], abs=1.0)
    pretrain(cfg, real_corpus, run, resume=True, progress=False, tensorboard=False)
    times = [r["elapsed_s"] for r in read_log(run)]
    assert times == sorted(times) and times[2] > before, "the resumed rows go on from the first part's time"
    assert json.loads((run / "summary.json").read_text())["elapsed_s"] >= load_checkpoint(run)["elapsed_s"] > before


def test_resume_is_exact_when_files_are_skipped(real_corpus, tmp_path):
    """A resumed run starts with no list of known-bad files in its loader, and still reads the same crops."""
    folder = _bad_folder(real_corpus, tmp_path)
    cfg = micro_config(train__max_steps=6, train__ckpt_every=3, train__log_every=1, data__crop_seconds=2.5)
    pretrain(cfg, folder, tmp_path / "straight", progress=False, tensorboard=False)
    pretrain(cfg, folder, tmp_path / "split", stop_after=3, progress=False, tensorboard=False)
    pretrain(cfg, folder, tmp_path / "split", resume=True, progress=False, tensorboard=False)
    a, b = read_log(tmp_path / "straight"), read_log(tmp_path / "split")
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
    assert [r["skipped_files"] for r in b] == [r["skipped_files"] for r in a]


def test_a_relative_data_path_keys_skipped_files_alike_on_resume(real_corpus, tmp_path, monkeypatch, capsys):
    _bad_folder(real_corpus, tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = micro_config(train__max_steps=4, train__ckpt_every=2, data__crop_seconds=2.5)
    pretrain(cfg, "mixed", "run", stop_after=2, progress=False, tensorboard=False)
    pretrain(cfg, None, "run", resume=True, progress=False, tensorboard=False)
    listed = [line.split("\t")[0] for line in (tmp_path / "run" / "skipped_files.txt").read_text().splitlines()]
    assert len(listed) == len(set(listed)) == 5 and all(Path(f).is_absolute() for f in listed)
    assert "skipped 5 unusable files" in capsys.readouterr().out


def test_missing_or_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["pretrain", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r1")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    assert cli_main(["pretrain", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r2")]) == 2
    assert "no audio files" in capsys.readouterr().err


def test_max_steps_zero_writes_a_random_init_checkpoint(real_corpus, tmp_path):
    rc = cli_main(
        ["pretrain", "--data", str(real_corpus), "--out", str(tmp_path / "rand"), "--max-steps", "0", "--no-progress"]
    )
    assert rc == 0
    ckpt = load_checkpoint(tmp_path / "rand")
    assert ckpt["step"] == 0 and "encoder.patch_embed.weight" in ckpt["model"]


@pytest.mark.slow
def test_two_process_gloo_run(real_corpus, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "bestrq2.cli", "pretrain", "--data", str(real_corpus), "--out", str(run), "--max-steps", "4",
        "--batch-size", "4", "--no-progress", "--set", "data.num_workers=0", "--set", "data.crop_seconds=2.5",
        "--set", "encoder.depth=2", "--set", "train.ckpt_every=2", "--set", "train.log_every=1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world=2" in proc.stdout
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 4 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert len(read_log(run)) == 4


@pytest.mark.slow
def test_sigterm_to_the_whole_job_saves_a_checkpoint(real_corpus, tmp_path):
    """A cluster's pre-emption signal reaches every process (loader workers too): the run saves a
    checkpoint at the current step, exits cleanly, and resumes from there."""
    import os
    import signal
    import time

    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "bestrq2.cli", "pretrain", "--data", str(real_corpus), "--out", str(run),
        "--max-steps", "100000", "--batch-size", "4", "--no-progress", "--set", "data.num_workers=2",
        "--set", "data.crop_seconds=2.5", "--set", "encoder.depth=1", "--set", "train.log_every=1",
        "--set", "train.ckpt_every=100000",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log = run / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 4):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == STOPPED, out[-3000:]  # not 0: a chained `&& bestrq2 export` must not go on
    assert "stop requested" in out and "--resume" in out and "done:" not in out
    step = load_checkpoint(run)["step"]
    assert step >= 3
    assert len(read_log(run)) == step
    assert json.loads((run / "summary.json").read_text())["stopped"] is True


def test_resume_without_data_uses_the_recorded_source(real_corpus, tmp_path, monkeypatch):
    from bestrq2.training.loop import pretrain, recorded_data

    run = tmp_path / "run"
    pretrain(micro_config(train__max_steps=4), real_corpus, run, stop_after=2, progress=False, tensorboard=False)
    assert recorded_data(run) == str(real_corpus.resolve())
    assert load_checkpoint(run)["step"] == 2
    monkeypatch.chdir(tmp_path)  # no demo corpus here: only the recorded source can be used
    monkeypatch.delenv("BESTRQ2_DATA", raising=False)
    assert cli_main(["pretrain", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert load_checkpoint(run)["step"] == 4
    with pytest.raises(FileNotFoundError, match="records no data source"):
        recorded_data(tmp_path)


def test_resume_names_what_it_ignores_and_refuses_a_missing_run(real_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["pretrain", "--data", str(real_corpus), "--no-progress", "--set", "data.crop_seconds=2.5",
            "--set", "encoder.depth=1", "--batch-size", "4"]  # fmt: skip
    assert cli_main([*base, "--out", str(run), "--max-steps", "2"]) == 0
    assert cli_main(["pretrain", "--out", str(run), "--resume", "--no-progress", "--max-steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "ignored: train.max_steps=5 (run: 2)" in out and "done: step 2" in out
    assert cli_main(["pretrain", "--out", str(tmp_path / "typo"), "--resume"]) == 2
    assert "nothing to resume in" in capsys.readouterr().err and not (tmp_path / "typo").exists()
    assert cli_main([*base, "--out", str(tmp_path / "new"), "--resume", "--max-steps", "1"]) == 0
    assert "no checkpoint in" in capsys.readouterr().out
