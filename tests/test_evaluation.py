"""Evaluation with the X-ARES protocol: probe, kNN, cache, frame tasks, reports and the commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from bestrq2.cli import main as cli_main
from bestrq2.evaluation import EvalConfig, evaluate
from bestrq2.evaluation.baselines import LogMelStatsEncoder, random_encoder
from bestrq2.evaluation.embeddings import embed_clips, length_batches
from bestrq2.evaluation.knn import knn_accuracy, knn_scores
from bestrq2.evaluation.models import resolve_model
from bestrq2.evaluation.probe import ProbeConfig, epoch_lr, train_probe
from bestrq2.evaluation.report import aggregate, compare_markdown
from bestrq2.evaluation.tasks import IGNORE, align_frame_labels, load_suite
from tests.conftest import micro_config

SR = 16000
HOP = 0.625  # seconds per encoder frame


def _tone(freq: float, seconds: float, rng: np.random.Generator, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def write_suite(root: Path, frame_task: bool = True) -> Path:
    """64 / 16 / 16 clips of a clip task (low vs high tone, 1-3 s) and of a frame task (a tone switching on and off every
    625 ms frame, 8 frames), 16 kHz WAV, with a manifest in the suite format."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for split, n in (("train", 64), ("valid", 16), ("test", 16)):
        for i in range(n):
            label = ("low", "high")[i % 2]
            freq = (300.0 if label == "low" else 2500.0) * (1 + 0.05 * rng.standard_normal())
            path = f"audio/pitch_{split}_{i}.wav"
            sf.write(root / path, _tone(freq, 1 + 2 * rng.random(), rng), SR)
            rows.append({"path": path, "task": "pitch", "label": label, "split": split, "domain": "music",
                         "duration": 0.0, "source": "synthetic", "group": f"{split}{i}"})  # fmt: skip
            if not frame_task:
                continue
            on = rng.random(8) < 0.5
            wav = np.concatenate(
                [_tone(1000.0, HOP, rng) if o else _tone(1000.0, HOP, rng, amp=0.0) for o in on]
            )
            path = f"audio/onoff_{split}_{i}.wav"
            sf.write(root / path, wav, SR)
            rows.append({"path": path, "task": "onoff", "frame_labels": ["on" if o else "off" for o in on],
                         "split": split, "domain": "environment", "duration": 5.0, "source": "synthetic",
                         "group": f"{split}{i}"})  # fmt: skip
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite"))


def blobs(
    n: int, classes: int, dim: int, seed: int, spread: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, dim, generator=g), y


# --- probe and kNN -------------------------------------------------------------------------------


def test_probe_learns_separable_data_and_is_deterministic():
    train, valid, test = blobs(400, 5, 32, 0), blobs(100, 5, 32, 1), blobs(100, 5, 32, 2)
    r1 = train_probe(train, valid, test, 5)
    assert r1.test_accuracy >= 0.98 and len(r1.valid_history) == 10 and 1 <= r1.best_epoch <= 10
    assert r1.valid_accuracy == max(r1.valid_history)
    assert r1.best_epoch == r1.valid_history.index(max(r1.valid_history)) + 1  # first best epoch
    r2 = train_probe(train, valid, test, 5)
    assert r1 == r2
    r3 = train_probe(train, valid, test, 5, ProbeConfig(seed=7, epochs=1))
    assert r3.valid_history != r1.valid_history[:1] or r3.test_accuracy != r1.test_accuracy


def test_probe_on_noise_is_near_chance():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 16, generator=g), torch.randint(0, 4, (600,), generator=g)
    r = train_probe((x[:400], y[:400]), (x[400:500], y[400:500]), (x[500:], y[500:]), 4)
    assert r.test_accuracy < 0.45


def test_cosine_schedule_matches_x_ares():
    cfg = ProbeConfig()
    lrs = [epoch_lr(cfg, e) for e in range(cfg.epochs)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[5] == pytest.approx(0.55e-3)
    assert epoch_lr(cfg, cfg.epochs) == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def brute_force_knn(train_x, train_y, test_x, classes, k=10, t=0.07) -> np.ndarray:
    a = train_x.double().numpy()
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    out = np.zeros((len(test_x), classes))
    for i, q in enumerate(test_x.double().numpy()):
        sims = a @ (q / np.linalg.norm(q))
        top = sorted(range(len(a)), key=lambda j: -sims[j])[:k]
        w = np.exp(np.array([sims[j] for j in top]) / t)
        w /= w.sum()
        for j, wj in zip(top, w):
            out[i, int(train_y[j])] += wj
    return out


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    train_x, train_y = torch.randn(200, 12, generator=g), torch.randint(0, 6, (200,), generator=g)
    test_x = torch.randn(50, 12, generator=g)
    votes = knn_scores(train_x, train_y, test_x, 6, chunk=16)
    ref = brute_force_knn(train_x, train_y, test_x, 6)
    np.testing.assert_allclose(votes.double().numpy(), ref, atol=1e-5)
    assert (votes.argmax(1).numpy() == ref.argmax(1)).all()
    # fewer training clips than k: all of them vote
    few = knn_scores(train_x[:4], train_y[:4], test_x, 6)
    np.testing.assert_allclose(
        few.numpy(), brute_force_knn(train_x[:4], train_y[:4], test_x, 6, k=4), atol=1e-5
    )


def test_knn_on_separable_data():
    (tx, ty), (ex, ey) = blobs(300, 4, 16, 0), blobs(80, 4, 16, 1)
    assert knn_accuracy(tx, ty, ex, ey, 4) == 1.0


def test_aggregate_weights_by_test_size():
    tasks = {
        "a": {"domain": "speech", "test": 10, "mlp": 1.0, "knn": 0.5},
        "b": {"domain": "speech", "test": 30, "mlp": 0.0, "knn": 0.5},
        "c": {"domain": "music", "test": 60, "mlp": 0.5, "knn": None},
    }
    domains, overall = aggregate(tasks)
    assert list(domains) == ["speech", "music"]
    assert domains["speech"]["mlp"] == pytest.approx(0.25) and domains["music"]["knn"] is None
    assert overall["mlp"] == pytest.approx((10 * 1.0 + 30 * 0.0 + 60 * 0.5) / 100) and overall["test"] == 100
    assert overall["knn"] == pytest.approx(0.5)  # frame tasks (no kNN) are left out of the kNN mean


# --- suite, frames, baselines --------------------------------------------------------------------


def test_load_suite_kinds_classes_and_domains(suite, tmp_path):
    s = load_suite(suite)
    by = {t.name: t for t in s.tasks}
    assert (
        by["pitch"].kind == "clip"
        and by["pitch"].classes == ["high", "low"]
        and by["pitch"].domain == "music"
    )
    assert by["onoff"].kind == "frame" and by["onoff"].classes == ["off", "on"]
    assert by["pitch"].size("train") == 64 and by["onoff"].size("test") == 16
    # domain falls back to tasks.json, then to the known task names, then "other"
    rows = [{"path": "a.wav", "task": t, "label": "x", "split": "train"} for t in ("mine", "keywords", "odd")]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks.json").write_text(json.dumps({"mine": {"domain": "music"}}))
    assert {t.name: t.domain for t in load_suite(tmp_path).tasks} == {
        "mine": "music", "keywords": "speech", "odd": "other",
    }  # fmt: skip
    (tmp_path / "manifest.jsonl").write_text(
        json.dumps({"path": "a.wav", "task": "t", "split": "dev"}) + "\n"
    )
    with pytest.raises(ValueError, match="split"):
        load_suite(tmp_path)


def test_frame_labels_files_and_alignment(tmp_path):
    np.save(tmp_path / "a.npy", np.array([0, 1, 1]))
    (tmp_path / "b.json").write_text(json.dumps(["1", "0"]))
    rows = [
        {"path": "a.wav", "task": "f", "frame_labels": "a.npy", "split": "train", "frame_hop_ms": 312.5},
        {"path": "b.wav", "task": "f", "frame_labels": "b.json", "split": "test"},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (task,) = load_suite(tmp_path).tasks
    assert task.kind == "frame" and task.classes == ["0", "1"]
    assert (
        task.splits["train"][0].frame_labels == ["0", "1", "1"]
        and task.splits["train"][0].frame_hop_ms == 312.5
    )
    # same hop: one to one, padded with IGNORE; finer labels: the one under each frame's centre
    assert align_frame_labels([3, 4], 625, 625, 3).tolist() == [3, 4, IGNORE]
    assert align_frame_labels([0, 1, 2, 3], 312.5, 625, 2).tolist() == [1, 3]
    assert align_frame_labels([5, 6], 1250, 625, 4).tolist() == [5, 5, 6, 6]


def test_logmel_baseline_ignores_padding_and_passes_x_ares_checker():
    from xares.audio_encoder_checker import check_audio_encoder

    enc = LogMelStatsEncoder().eval()
    assert check_audio_encoder(enc)
    assert enc.output_dim == 256 and enc.hop_size_in_ms == 625.0
    wav = torch.randn(30000) * 0.1
    padded = torch.cat([wav, torch.zeros(20000)])[None]
    alone = enc(wav[None])  # [1, 3, 256]
    batch = enc(padded, torch.tensor([30000]))  # [1, 5, 256]
    n = int(enc.output_lengths(torch.tensor([30000]))[0])
    assert alone.shape == (1, n, 256)
    torch.testing.assert_close(batch[:, :n], alone)


def test_random_spec_is_reproducible_and_keys_differ(micro_export):
    a, b = resolve_model("random:tiny"), resolve_model("random:tiny")
    assert a.key == b.key and a.name == "random-tiny"
    sa, sb = a.build().state_dict(), b.build().state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert resolve_model("random:tiny:1").key != a.key
    rnd = resolve_model(f"random:{micro_export}")
    assert rnd.build().output_dim == 64 and rnd.key != resolve_model(str(micro_export)).key
    assert resolve_model("logmel").key != a.key
    assert resolve_model(str(micro_export), layer=0).key != resolve_model(str(micro_export)).key
    assert resolve_model(str(micro_export), layer=0).name == "export-layer0"
    with pytest.raises(ValueError):
        resolve_model("random:nonesuch")
    with pytest.raises(FileNotFoundError):
        resolve_model("no/such/model")
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    random_encoder(*_tiny_cfgs())
    assert torch.equal(torch.rand(1), before)  # the global RNG is untouched


def _tiny_cfgs():
    cfg = micro_config()
    return cfg.frontend, cfg.encoder


def test_length_batches_respect_budget():
    lengths = [5, 100, 7, 50, 60, 3, 100]
    batches = length_batches(lengths, 120)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 120


# --- the evaluator -------------------------------------------------------------------------------


def test_logmel_solves_both_synthetic_tasks_deterministically(suite, tmp_path):
    cfg = EvalConfig()
    r1 = evaluate(
        "logmel", suite, tmp_path / "out", cache_dir=None, cfg=cfg, progress=False, log=lambda s: None
    )
    t = r1["tasks"]
    # 10 epochs of X-ARES's probe on 64 clips are only 20 Adam steps at lr 1e-3: well above chance (0.5)
    assert t["pitch"]["kind"] == "clip" and t["pitch"]["mlp"] >= 0.85 and t["pitch"]["knn"] == 1.0
    assert t["onoff"]["kind"] == "frame" and t["onoff"]["knn"] is None and t["onoff"]["mlp"] >= 0.8
    assert (t["pitch"]["train"], t["pitch"]["valid"], t["pitch"]["test"]) == (64, 16, 16)
    assert set(r1["domains"]) == {"music", "environment"}
    assert r1["overall"]["mlp"] == pytest.approx(
        (t["pitch"]["mlp"] + t["onoff"]["mlp"]) / 2
    )  # 16 test clips each
    for name in ("results.json", "results.md", "results.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    r2 = evaluate("logmel", suite, None, cache_dir=None, cfg=cfg, progress=False, log=lambda s: None)
    assert r1["tasks"] == r2["tasks"] and r1["overall"] == r2["overall"]


def test_cache_hits_and_is_invalidated_by_model_and_clip_changes(micro_export, tmp_path):
    suite = write_suite(tmp_path / "suite", frame_task=False)
    model = tmp_path / "model"
    model.mkdir()
    for f in ("config.json", "model.safetensors"):
        (model / f).write_bytes((micro_export / f).read_bytes())
    cache = tmp_path / "cache"
    kw = dict(cache_dir=cache, progress=False, log=lambda s: None)
    n = len(load_suite(suite).clip_paths())
    first = evaluate(str(model), suite, **kw)
    assert (first["timing"]["clips_computed"], first["timing"]["clips_cached"]) == (n, 0)
    second = evaluate(str(model), suite, **kw)
    assert (second["timing"]["clips_computed"], second["timing"]["clips_cached"]) == (0, n)
    assert second["tasks"] == first["tasks"]  # cached frames give the same scores

    state = load_file(str(model / "model.safetensors"))  # the model changes: everything is recomputed
    name = next(k for k in state if k.startswith("encoder.") and state[k].dim() == 2)
    state[name] = state[name] + 0.5
    save_file(state, str(model / "model.safetensors"), metadata={"format": "bestrq2-encoder"})
    third = evaluate(str(model), suite, **kw)
    assert (third["timing"]["clips_computed"], third["timing"]["clips_cached"]) == (n, 0)

    clip = suite / "audio" / "pitch_test_0.wav"  # one clip changes: only it is recomputed
    wav, sr = sf.read(clip, dtype="float32")
    sf.write(clip, np.concatenate([wav, wav[: SR // 2]]), sr)
    fourth = evaluate(str(model), suite, **kw)
    assert (fourth["timing"]["clips_computed"], fourth["timing"]["clips_cached"]) == (1, n - 1)


def test_frames_match_the_encoder_on_each_clip_alone(suite, micro_export):
    """Batched, padded embedding gives each clip the frames it gets alone."""
    spec = resolve_model(str(micro_export))
    enc = spec.build()
    paths = [suite / p for p in load_suite(suite).clip_paths()][:12]
    frames, stats = embed_clips(spec.build, spec.key, paths, None, batch_seconds=20.0, progress=False)
    assert stats["computed"] == 12
    for p in paths[:4]:
        wav, _ = sf.read(p, dtype="float32")
        with torch.inference_mode():
            alone = enc(torch.from_numpy(wav)[None])[0].numpy()
        assert frames[p].shape == (math.ceil(len(wav) / (SR * HOP)), 64)
        np.testing.assert_allclose(frames[p], alone, atol=1e-4)


def test_frame_task_on_the_encoder(suite, micro_export):
    r = evaluate(
        str(micro_export), suite, cache_dir=None, progress=False, log=lambda s: None, tasks=["onoff"]
    )
    assert list(r["tasks"]) == ["onoff"] and 0.0 <= r["tasks"]["onoff"]["mlp"] <= 1.0
    assert r["model"]["output_dim"] == 64 and r["model"]["hop_size_in_ms"] == 625.0


def test_evaluate_and_compare_commands(suite, micro_export, tmp_path, capsys):
    out = tmp_path / "res"
    common = ["--suite", str(suite), "--cache", str(tmp_path / "cache"), "--no-progress", "--threads", "1"]
    assert cli_main(["evaluate", str(micro_export), "--out", str(out / "model"), *common]) == 0
    assert "| **overall** |" in capsys.readouterr().out
    assert cli_main(["evaluate", "logmel", "--out", str(out / "logmel"), "--tasks", "pitch", *common]) == 0
    assert json.loads((out / "logmel" / "results.json").read_text())["tasks"].keys() == {"pitch"}
    assert json.loads((out / "model" / "results.json").read_text())["protocol"]["probe"]["epochs"] == 10
    assert cli_main(["evaluate", "logmel", "--out", str(out / "long"), "--tasks", "pitch", "--probe-epochs", "3", *common]) == 0
    assert json.loads((out / "long" / "results.json").read_text())["protocol"]["probe"]["epochs"] == 3
    capsys.readouterr()
    assert (
        cli_main(["compare", str(out / "model"), str(out / "logmel" / "results.json"), "--out", str(out)])
        == 0
    )
    table = capsys.readouterr().out
    assert "export MLP" in table and "logmel kNN" in table and "| **overall** |" in table
    assert (out / "comparison.png").stat().st_size > 0 and (out / "comparison.md").read_text() in table


def test_baselines_flag_compares_three_models(suite, micro_export, tmp_path, capsys):
    out = tmp_path / "b"
    args = ["evaluate", str(micro_export), "--baselines", "--suite", str(suite), "--out", str(out)]
    assert cli_main([*args, "--no-cache", "--no-progress", "--threads", "1", "--tasks", "pitch"]) == 0
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"export", "random-export", "logmel"}
    assert all(f"{n} MLP" in printed for n in ("export", "random-export", "logmel"))
    runs = [json.loads((out / n / "results.json").read_text()) for n in ("export", "random-export", "logmel")]
    assert compare_markdown(runs) == (out / "comparison.md").read_text()


def test_missing_suite_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["evaluate", "logmel", "--suite", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "manifest" in capsys.readouterr().err


def test_random_patch_features_are_fixed_windowed_and_ignore_padding():
    from xares.audio_encoder_checker import check_audio_encoder

    enc = resolve_model("randfeat:64").build()
    assert check_audio_encoder(enc)
    assert enc.output_dim == 64 and enc.hop_size_in_ms == 156.25
    wav = torch.randn(30000) * 0.1
    alone = enc(wav[None])
    n = int(enc.output_lengths(torch.tensor([30000]))[0])
    batch = enc(torch.cat([wav, torch.zeros(20000)])[None], torch.tensor([30000]))
    assert alone.shape == (1, n, 64) and bool((alone >= 0).all())
    torch.testing.assert_close(batch[:, :n], alone)
    # the same spec builds the same map, another seed another one; the global RNG is left alone
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    again = resolve_model("randfeat:64").build()
    assert torch.equal(torch.rand(1), before)
    assert torch.equal(again.weight, enc.weight) and not torch.equal(resolve_model("randfeat:64:1").build().weight, enc.weight)
    # a window of 2 reads each step's patch and the next one's (0 past the end), through the same kind of map
    w2 = resolve_model("randfeat:64:0:2").build()
    p = w2.frontend(wav[None])["patches"][0]  # [T', P]
    nxt = torch.cat([p[1:], torch.zeros_like(p[:1])])
    expect = torch.relu(torch.cat([p, nxt], -1) @ w2.weight + w2.bias)
    torch.testing.assert_close(w2(wav[None])[0], expect)
    keys = {resolve_model(s).key for s in ("randfeat", "randfeat:2048:0:1", "randfeat:64", "randfeat:64:1", "randfeat:64:0:2")}
    assert len(keys) == 4  # the default spelled out is the same model
    assert resolve_model("randfeat").name == "randfeat-2048" and resolve_model("randfeat:64:1:2").name == "randfeat-64-1-w2"
    with pytest.raises(ValueError, match="randfeat"):
        resolve_model("randfeat:big")


def test_patch_pca_keeps_the_patches_principal_subspace(tmp_path):
    from xares.audio_encoder_checker import check_audio_encoder

    rng = np.random.default_rng(0)
    for i in range(6):  # tones at different pitches over a little noise: a few strong directions
        wav = _tone(200.0 * (i + 1), 3.0, rng) + 0.01 * rng.standard_normal(48000).astype(np.float32)
        sf.write(tmp_path / f"c{i}.wav", wav, SR)
    sf.write(tmp_path / "silent.wav", np.zeros(48000, dtype=np.float32), SR)  # skipped and counted, not fatal
    spec = f"pca:16:{tmp_path}"
    enc = resolve_model(spec).build()
    assert enc.skipped > 0
    assert check_audio_encoder(enc)
    assert enc.output_dim == 16 and enc.hop_size_in_ms == 156.25
    torch.testing.assert_close(enc.components.T @ enc.components, torch.eye(16), atol=1e-4, rtol=0)
    # on the fitting audio the components come out in order of variance, and they keep more of it than a
    # random orthonormal projection of the same size
    feats = enc.frontend(torch.from_numpy(np.stack([_tone(200.0 * (i + 1), 3.0, rng) for i in range(6)])))
    x = feats["patches"].flatten(0, 1) - enc.mean
    var = (x @ enc.components).var(0)
    assert var[0] >= var[-1] and var[0] > 0
    q, _ = torch.linalg.qr(torch.randn(x.shape[1], 16, generator=torch.Generator().manual_seed(0)))
    assert var.sum() > 2 * (x @ q).var(0).sum()
    wav = torch.randn(30000) * 0.1
    n = int(enc.output_lengths(torch.tensor([30000]))[0])
    padded = enc(torch.cat([wav, torch.zeros(20000)])[None], torch.tensor([30000]))
    torch.testing.assert_close(padded[:, :n], enc(wav[None]))
    key = resolve_model(spec).key
    assert key == resolve_model(spec).key != resolve_model(f"pca:8:{tmp_path}").key
    sf.write(tmp_path / "more.wav", _tone(900.0, 3.0, rng), SR)
    assert resolve_model(spec).key != key, "other audio, another fit: the cache must not reuse the old one"
    with pytest.raises(ValueError, match="pca:DIM:DATA"):
        resolve_model("pca:16")
    with pytest.raises(FileNotFoundError, match="no such"):
        resolve_model(f"pca:16:{tmp_path / 'absent'}")
    with pytest.raises(ValueError, match="dim must be"):
        resolve_model(f"pca:600:{tmp_path}").build()
