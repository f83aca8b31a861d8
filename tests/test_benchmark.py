"""`bestrq2 benchmark` on the CPU with a micro model: throughput table, largest batch, data loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bestrq2.cli import main

MICRO = [
    "--preset", "tiny-ref", "--set", "encoder.depth=1", "--set", "encoder.width=64", "--set", "encoder.heads=2",
    "--set", "predictor.width=32", "--set", "predictor.depth=1", "--set", "predictor.heads=2",
    "--set", "quantizer.codebook_size=256", "--set", "data.crop_seconds=2.5",
]  # fmt: skip


def test_single_run_keeps_its_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "b.json"
    rc = main(["benchmark", *MICRO, "--batch-size", "2", "--steps", "1", "--warmup", "1", "--infer-seconds", "2.5",
               "--json", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "clips/s" in text and "real-time factor" in text and "tokens/s" in text
    assert "measured fp32 1536^3 matmul" in text and "of peak" in text  # the CPU's own matmul rate is the peak
    r = json.loads(out.read_text())
    t = r["train"]
    assert r["method"] == "bestrq2" and r["batch_size"] == 2 and "inference" in r
    assert t["clips_per_s"] > 0 and t["peak_memory_bytes"] > 0
    assert r["peak_tflops"] > 0 and t["mfu"] == pytest.approx(t["model_tflops"] / r["peak_tflops"])
    assert r["inference"]["model_tflops"] > 0
    assert t["tokens_per_s"] == pytest.approx(t["clips_per_s"] * 32)  # 2.5 s: 8 mel blocks x 4 time steps
    assert t["model_flops_per_step"] > 0 and t["model_tflops"] > 0


def test_table_of_methods_with_checkpointing_and_peak(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "t.json"
    rc = main(["benchmark", *MICRO, "--methods", "bestrq2,audiojepa", "--both-checkpointing", "--batch-size", "2",
               "--steps", "1", "--warmup", "0", "--no-inference", "--peak-tflops", "1.0", "--json", str(out)])  # fmt: skip
    assert rc == 0
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| bestrq2") or line.startswith("| audiojepa")
    ]
    assert len(rows) == 4
    runs = json.loads(out.read_text())["runs"]
    assert [(r["method"], r["activation_checkpointing"]) for r in runs] == [
        ("bestrq2", False), ("bestrq2", True), ("audiojepa", False), ("audiojepa", True)
    ]  # fmt: skip
    for r in runs:
        t = r["train"]
        assert "inference" not in r and t["mfu"] == pytest.approx(t["model_tflops"] / 1.0)
        if r["activation_checkpointing"]:
            assert t["hardware_flops_per_step"] > t["model_flops_per_step"]


def test_find_max_batch_cpu_needs_a_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["benchmark", *MICRO, "--find-max-batch"]) == 2
    assert "--memory-limit-gib" in capsys.readouterr().err
    out = tmp_path / "m.json"
    rc = main(["benchmark", *MICRO, "--find-max-batch", "--memory-limit-gib", "64", "--max-batch-start", "2",
               "--max-batch-limit", "4", "--json", str(out)])  # fmt: skip
    assert rc == 0
    (row,) = json.loads(out.read_text())["max_batch"]
    assert row["max_batch"] == 4 and row["hit_search_limit"] and [t["batch"] for t in row["tries"]] == [2, 4]
    assert ">= 4 x 2.5 s" in capsys.readouterr().out


@pytest.mark.integration
def test_loader_alone_and_compared(real_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    model_json = tmp_path / "model.json"
    assert main(["benchmark", *MICRO, "--batch-size", "2", "--steps", "1", "--warmup", "0", "--no-inference",
                 "--json", str(model_json)]) == 0  # fmt: skip
    out = tmp_path / "l.json"
    rc = main(["benchmark", *MICRO, "--batch-size", "4", "--loader", str(real_corpus), "--workers", "1",
               "--batches", "2", "--compare-json", str(model_json), "--json", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "loader / model =" in text
    r = json.loads(out.read_text())["loader"]
    assert r["kind"] == "files" and r["workers"] == 1 and r["batch_size"] == 4 and r["warmup_batches"] == 1
    assert r["clips_per_s"] > 0 and r["audio_s_per_s"] == pytest.approx(r["clips_per_s"] * 2.5)
    assert 0 < r["real_audio_fraction"] <= 1


@pytest.mark.integration
def test_loader_reads_shards_as_shards(real_corpus: Path, tmp_path: Path):
    """A shard folder is timed through the shard reader (it once fell back to listing audio files and failed)."""
    from bestrq2.data.shard_writer import write_shards

    shards = tmp_path / "shards"
    write_shards(real_corpus, shards, "pcm16", clips_per_shard=8, progress=False)
    out = tmp_path / "l.json"
    rc = main(["benchmark", *MICRO, "--batch-size", "4", "--loader", str(shards), "--workers", "1",
               "--batches", "2", "--json", str(out)])  # fmt: skip
    assert rc == 0
    r = json.loads(out.read_text())["loader"]
    assert r["kind"] == "shards" and r["clips_per_s"] > 0


def test_resolve_device_auto_picks_the_gpu_only_when_there_is_one():
    from bestrq2.bench.devices import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == resolve_device(None) == expected
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"
