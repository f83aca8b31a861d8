"""Layer-wise diagnosis (``bestrq2 diagnose``) and the online kNN probe during pretraining."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bestrq2.cli import main as cli_main
from bestrq2.config import ConfigError
from bestrq2.evaluation.baselines import random_encoder
from bestrq2.evaluation.diagnose import (
    CodeCounts,
    LayerStack,
    _layer_frames,
    diagnose,
    effective_rank,
    layer_names,
)
from bestrq2.evaluation.online import OnlineProbe
from bestrq2.evaluation.tasks import load_suite
from bestrq2.export import export
from bestrq2.inference import BestRQ2Encoder
from bestrq2.objectives import build_objective
from bestrq2.training.logs import read_log
from bestrq2.training.loop import pretrain
from tests.conftest import micro_config
from tests.test_evaluation import write_suite

SR = 16000


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic suite of test_evaluation: a clip task (low / high tone) and a frame task (on / off)."""
    return write_suite(tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(1)
    for i in range(4):
        sf.write(root / f"n{i}.wav", (0.1 * rng.standard_normal(3 * SR)).astype(np.float32), SR)
    return root


@pytest.fixture(scope="module")
def run_and_export(noise: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A micro run of 2 steps (its checkpoint holds the quantizer) and its export."""
    root = tmp_path_factory.mktemp("run")
    pretrain(micro_config(train__max_steps=2), noise, root / "run", progress=False, tensorboard=False)
    return root / "run", export(root / "run", root / "export")


def _wavs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two clips in one batch: 12 s (two 10 s chunks) and 3.1 s (zero-padded)."""
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, 12 * SR, generator=g)
    lengths = torch.tensor([12 * SR, int(3.1 * SR)])
    wav[1, lengths[1] :] = 0
    return wav, lengths


# --- forward_all and the layer stack ----------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "concat"])
def test_forward_all_matches_forward_and_its_layers(pooling):
    cfg = micro_config(encoder__drop_path=0.0)
    enc = random_encoder(cfg.frontend, cfg.encoder, 3, pooling)
    wav, lengths = _wavs()
    with torch.no_grad():
        outs = enc.forward_all(wav, lengths)
        assert len(outs) == enc.num_layers == cfg.encoder.depth + 2
        final = enc(wav, lengths)
        assert all(o.shape == final.shape for o in outs)
        torch.testing.assert_close(outs[-1], final, rtol=1e-5, atol=1e-5)
        for k in range(cfg.encoder.depth):  # forward_all entry k + 1 is block k (0-based) of forward
            torch.testing.assert_close(outs[k + 1], enc(wav, lengths, layer=k), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(outs[-2], enc(wav, lengths, layer=-1), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(outs[0], outs[1])  # the entries are different layers


def test_layer_stack_clip_means_and_mean_pooling_from_concat():
    cfg = micro_config()
    concat = random_encoder(cfg.frontend, cfg.encoder, 1, "concat")
    mean = random_encoder(cfg.frontend, cfg.encoder, 1, "mean")  # the same weights
    wav, lengths = _wavs()
    stack = LayerStack(concat, clip_mean=True)
    with torch.no_grad():
        x = stack(wav, lengths)  # [B, 1, L * D]
        ref = mean.forward_all(wav, lengths)
    assert x.shape == (2, 1, concat.num_layers * concat.output_dim)
    assert stack.output_lengths(lengths).tolist() == [1, 1]
    n = mean.output_lengths(lengths).tolist()
    for b in range(2):
        frames = {Path("c"): x[b].numpy()}
        for layer in range(concat.num_layers):
            got = _layer_frames(frames, layer, concat.output_dim, "mean", cfg.encoder.width)[Path("c")][0]
            want = ref[layer][b, : n[b]].mean(0).numpy()  # the mean-pooling encoder's clip mean
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    frames_stack = LayerStack(concat, clip_mean=False)
    with torch.no_grad():
        y = frames_stack(wav, lengths)
    assert y.shape[1] == n[0] and frames_stack.output_lengths(lengths).tolist() == n


def test_effective_rank_bounds():
    g = torch.Generator().manual_seed(0)
    line = torch.randn(50, 1, generator=g) * torch.randn(1, 16, generator=g)  # one direction
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-4)
    full = torch.randn(2000, 16, generator=g)  # isotropic: close to D
    assert 14.5 < effective_rank(full) <= 16.0
    some = torch.randn(300, 4, generator=g) @ torch.randn(4, 32, generator=g)  # rank 4
    assert 1.0 <= effective_rank(some) <= 4.0 + 1e-6
    assert layer_names(5) == ["embed", "block 1", "block 2", "block 3", "final"]


# --- the whole diagnosis --------------------------------------------------------------------------


def test_diagnose_run_and_export(suite, run_and_export, tmp_path, capsys):
    run, exported = run_and_export
    cfg = micro_config()
    n_layers = cfg.encoder.depth + 2
    out, cache = tmp_path / "diag", tmp_path / "cache"
    results = diagnose(
        [str(run), str(exported)], suite, out, cache_dir=cache, progress=False, log=lambda s: None
    )
    for name in ("diagnose.json", "diagnose.md", "diagnose.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert json.loads((out / "diagnose.json").read_text())["format"] == "bestrq2-diagnose"
    assert len(results["models"]) == 2
    for m in results["models"]:
        pre = m["pretrained"]
        assert pre["num_layers"] == n_layers and pre["layer_names"] == layer_names(n_layers)
        assert [r["seed"] for r in m["random"]] == [0, 1]
        assert m["random"][0]["key"] != m["random"][1]["key"] != pre["key"]
        for enc in [pre, *m["random"]]:
            for pooling, dim in (
                ("mean", cfg.encoder.width),
                ("concat", cfg.encoder.width * cfg.frontend.freq_patches),
            ):
                rows = enc["poolings"][pooling]
                assert [r["layer"] for r in rows] == list(range(n_layers))
                for r in rows:
                    assert r["dim"] == dim and 1.0 <= r["effective_rank"] <= dim
                    assert 0.0 <= r["mlp"] <= 1.0 and 0.0 <= r["knn"] <= 1.0
                    assert set(r["tasks"]) == {"pitch", "onoff"}  # the frame task is probed too
                    assert r["tasks"]["onoff"]["knn"] is None and r["tasks"]["pitch"]["knn"] is not None
            g = enc["patch_embedding"]
            assert g["position_norm"] == pytest.approx(math.sqrt(cfg.encoder.width / 2), rel=1e-4)  # sin-cos
            assert g["ratio"] == pytest.approx(g["patch_norm"] / g["position_norm"])
        # low vs high tone: some layer of the concat features separates them
        assert max(r["mlp"] for r in pre["poolings"]["concat"]) >= 0.8
        band = m["random_band"]["concat"]["mlp"]
        assert len(band) == n_layers and all(b["min"] <= b["mean"] <= b["max"] for b in band)
    # the export holds the run's encoder: the same scores; but no quantizer
    run_m, exp_m = results["models"]
    assert run_m["pretrained"]["poolings"] == exp_m["pretrained"]["poolings"]
    assert "note" in exp_m["targets"] and "note" not in run_m["targets"]
    t = run_m["targets"]
    assert (
        1 <= t["codes_used"] <= cfg.quantizer.codebook_size and 1 <= t["perplexity"] <= t["codes_used"] + 1e-6
    )
    assert 0 < t["top_code_share"] <= 1
    b = t["bag_of_codes"]
    assert set(b["tasks"]) == {"pitch"} and 0.0 <= b["mlp"] <= 1.0 and 0.0 <= b["knn"] <= 1.0
    md = (out / "diagnose.md").read_text()
    assert md.count("| block 1 |") == 6  # 2 models x (scores, effective ranks, context)
    # the context pass: every layer again with each token alone; the patch embedding has no attention,
    # so it cannot change, while the blocks of a 2-D grid (frequency tokens of one step) do
    for m in results["models"]:
        for enc in [m["pretrained"], *m["random"]]:
            ctx, alone = enc["poolings"]["concat"], enc["alone"]["concat"]
            assert [r["layer"] for r in alone] == list(range(n_layers))
            assert alone[0]["mlp"] == ctx[0]["mlp"] and alone[0]["knn"] == ctx[0]["knn"]
        assert len(m["random_band_alone"]["mean"]["knn"]) == n_layers
    assert "every token encoded alone" in md

    # the command: same cache (every layer of the export cached), prints the table
    assert cli_main(["diagnose", str(exported), "--suite", str(suite), "--out", str(tmp_path / "cli"),
                     "--cache", str(cache), "--no-progress", "--threads", "1"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| layer | mean probe |" in printed and "| final |" in printed
    again = json.loads((tmp_path / "cli" / "diagnose.json").read_text())["models"][0]
    assert again["pretrained"]["timing"]["clips_computed"] == 0
    assert again["pretrained"]["poolings"] == exp_m["pretrained"]["poolings"]


def test_bag_of_codes_counts_every_real_token(run_and_export):
    from bestrq2.config import Config
    from bestrq2.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_and_export[0])
    cfg = Config.from_dict(ckpt["config"])
    objective = build_objective(cfg)
    objective.load_state_dict(ckpt["model"])
    counter = CodeCounts(objective, cfg.frontend.sample_rate, 1)
    wav, lengths = _wavs()
    with torch.no_grad():
        counts = counter(wav, lengths)  # [B, 1, V]
    tokens = cfg.frontend.freq_patches * torch.div(lengths + cfg.frontend.samples_per_token - 1,
                                                    cfg.frontend.samples_per_token, rounding_mode="floor")  # fmt: skip
    assert counts.shape == (2, 1, cfg.quantizer.codebook_size)
    assert counts.sum(-1).flatten().tolist() == tokens.tolist()
    assert float(counter.totals.sum()) == float(tokens.sum())


def test_diagnose_rejects_other_models(suite):
    with pytest.raises(ValueError, match="export or run folders"):
        diagnose(["logmel"], suite, None, progress=False)


# --- the online probe -----------------------------------------------------------------------------


def test_online_probe_is_finite_restores_modes_and_rng(suite):
    cfg = micro_config(encoder__drop_path=0.1, train__probe_suite=str(suite), train__probe_clips=10)
    torch.manual_seed(0)
    core = build_objective(cfg)
    core.train()
    core.predictor.eval()  # a mixed state must come back as it was
    modes = {name: m.training for name, m in core.named_modules()}
    probe = OnlineProbe.from_config(cfg)
    assert set(probe.tasks) == {"pitch"}  # the frame task is left out
    assert len(probe.tasks["pitch"]["train_idx"]) == 10 and len(probe.tasks["pitch"]["test_idx"]) == 10
    rng = torch.get_rng_state()
    scores = probe(core.encoder, core.frontend)
    assert torch.equal(rng, torch.get_rng_state())
    assert {n: m.training for n, m in core.named_modules()} == modes
    assert list(scores) == probe.columns
    for k, v in scores.items():
        assert math.isfinite(v) and (k == "probe_s" or 0.0 <= v <= 1.0), (k, v)
    assert scores["probe_knn"] == scores["probe_knn/pitch"]
    assert probe(core.encoder, core.frontend) | {"probe_s": 0} == scores | {"probe_s": 0}  # deterministic

    # the features are the inference encoder's clip means, on the training weights (no copy)
    enc = BestRQ2Encoder(cfg.frontend, cfg.encoder, "concat").eval()
    enc.encoder.load_state_dict(core.encoder.state_dict())
    feats = probe.embed(core.encoder)
    for x, lens, idx in probe.batches[:2]:
        with torch.no_grad():
            y = enc(x, lens)
        n = enc.output_lengths(lens).tolist()
        want = torch.stack([y[r, : n[r]].mean(0) for r in range(len(n))])
        torch.testing.assert_close(feats[idx], want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        core.encoder.patch_embed.weight.mul_(-1.0)
    assert not torch.allclose(probe.embed(core.encoder), feats)


def test_pretrain_with_online_probe_logs_probe_rows(suite, noise, tmp_path, capsys):
    over = {"train__max_steps": 4, "encoder__drop_path": 0.2, "train__log_every": 3}
    cfg = micro_config(**over, train__probe_every=2, train__probe_suite=str(suite), train__probe_clips=8)
    pretrain(cfg, noise, tmp_path / "probed", progress=False, tensorboard=False,
             probe_factory=OnlineProbe.from_config)  # fmt: skip
    log = read_log(tmp_path / "probed")
    assert [r["step"] for r in log] == [0, 2, 3, 4]  # probes at 0, 2 and the end; log rows at 3 and 4
    assert ["probe_knn" in r for r in log] == [True, True, False, True]
    assert ["loss" in r for r in log] == [False, False, True, True]
    for r in log:
        if "probe_knn" in r:
            assert 0.0 <= r["probe_knn"] <= 1.0 and r["probe_knn/pitch"] == r["probe_knn"]
            assert 0.0 <= r["probe_knn_meanpool"] <= 1.0
    assert "probe step 0: kNN" in capsys.readouterr().out

    # probing changes nothing in the training: the same losses and weights as an unprobed run
    pretrain(micro_config(**over), noise, tmp_path / "plain", progress=False, tensorboard=False)
    plain = read_log(tmp_path / "plain")
    assert [r["loss"] for r in plain] == [r["loss"] for r in log if "loss" in r]
    from bestrq2.training.checkpoint import load_checkpoint

    wa, wb = load_checkpoint(tmp_path / "plain")["model"], load_checkpoint(tmp_path / "probed")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # without a probe factory a configured probe is an error, not silently skipped
    with pytest.raises(ConfigError, match="probe"):
        pretrain(cfg, noise, tmp_path / "no_factory", progress=False, tensorboard=False)

    # the command passes the factory
    assert cli_main(["pretrain", "--data", str(noise), "--out", str(tmp_path / "cli"), "--max-steps", "1",
                     "--batch-size", "4", "--no-progress", "--set", "encoder.depth=1", "--set", "encoder.width=64",
                     "--set", "encoder.heads=2", "--set", "predictor.width=32", "--set", "predictor.depth=1",
                     "--set", "data.num_workers=0", "--set", "data.crop_seconds=2.5",
                     "--set", "train.probe_every=1", "--set", f"train.probe_suite={suite}",
                     "--set", "train.probe_clips=4"]) == 0  # fmt: skip
    assert [r["step"] for r in read_log(tmp_path / "cli") if "probe_knn" in r] == [0, 1]


def test_online_probe_rejects_frame_tasks_and_empty_suites(suite, tmp_path):
    cfg = micro_config()
    with pytest.raises(ValueError, match="frame tasks"):
        OnlineProbe(suite, cfg.frontend, cfg.encoder, tasks=("onoff",))
    only_frames = tmp_path / "frames"
    only_frames.mkdir()
    rows = [r for r in (suite / "manifest.jsonl").read_text().splitlines() if '"onoff"' in r]
    (only_frames / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    assert load_suite(only_frames).tasks[0].kind == "frame"
    with pytest.raises(ValueError, match="no clip task"):
        OnlineProbe(only_frames, cfg.frontend, cfg.encoder)
