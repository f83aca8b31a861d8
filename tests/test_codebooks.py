"""Fitted codebooks (``quantizer.centroids``, ``bestrq2 codebooks``): k-means, nearest-centroid codes, the
file's check against the quantizer that reads it, and a run that trains and resumes on them."""

from __future__ import annotations

import pytest
import torch
from conftest import micro_config

from bestrq2.cli import main
from bestrq2.config import ConfigError, FrontendConfig, QuantizerConfig
from bestrq2.objectives import build_objective
from bestrq2.quantizer import RandomProjectionQuantizer, load_centroids, save_centroids
from bestrq2.training.codebooks import fit_codebooks, kmeans


def test_kmeans_finds_separated_clusters_and_keeps_every_centroid():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 5, generator=g) * 20
    labels = torch.arange(600) % 6
    x = centres[labels] + torch.randn(600, 5, generator=g) * 0.1
    c, msd = kmeans(x, 6, iters=20, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(centres, c).argmin(1)
    assert sorted(nearest.tolist()) == list(range(6)), "one centroid per true cluster"
    assert torch.allclose(c[nearest], centres, atol=0.05) and msd < 0.1
    # duplicated points: more clusters than distinct points would leave some empty; all are reseeded
    c8, _ = kmeans(torch.cat([x, x]), 8, iters=5, generator=torch.Generator().manual_seed(1))
    assert c8.shape == (8, 5) and torch.isfinite(c8).all()
    with pytest.raises(ValueError, match="draw more crops"):
        kmeans(x[:3], 6)


def _fitted_quantizer(tmp_path, cfg: QuantizerConfig, input_dim: int = 512) -> RandomProjectionQuantizer:
    """A quantizer whose centroids are random points of its own prepared-input space, saved and reloaded."""
    plain = RandomProjectionQuantizer(cfg, input_dim, FrontendConfig())
    T, V = cfg.num_targets, cfg.codebook_size
    centroids = torch.randn(T, V, input_dim // cfg.bands)
    path = tmp_path / "c.safetensors"
    save_centroids(path, centroids, cfg, {"crops": 0})
    fitted = QuantizerConfig(**{**cfg.__dict__, "centroids": str(path)})
    return plain, RandomProjectionQuantizer(fitted, input_dim, FrontendConfig()), centroids


def test_centroid_codes_are_the_nearest_centroid_of_each_targets_prepared_input(tmp_path):
    cfg = QuantizerConfig(codebook_size=32, bands=4, num_codebooks=2, codebook_lifters=(0, 12))
    plain, q, centroids = _fitted_quantizer(tmp_path, cfg)
    assert q.projection is None and torch.equal(q.codebook, centroids)
    x = torch.randn(200, 512) * 20 - 30
    xs = plain.prepare(x)  # [200, 8, 128]: the same bands, lifters and norms either way
    assert torch.equal(q.prepare(x), xs)
    by_hand = torch.stack([torch.cdist(xs[:, t], centroids[t]).argmin(1) for t in range(8)], 1)
    assert torch.equal(q(x), by_hand)
    assert not torch.equal(plain(x), q(x))


def test_a_codebook_file_fitted_on_other_inputs_is_refused(tmp_path):
    cfg = QuantizerConfig(codebook_size=32, bands=4)
    _fitted_quantizer(tmp_path, cfg)
    path = str(tmp_path / "c.safetensors")
    with pytest.raises(ConfigError, match="bands differ"):
        load_centroids(path, QuantizerConfig(codebook_size=32, bands=8), (8, 32, 64))
    with pytest.raises(ConfigError, match="lifters differ"):
        load_centroids(path, QuantizerConfig(codebook_size=32, bands=4, lifter=12), (4, 32, 128))
    with pytest.raises(ConfigError, match="codebook_size differ"):
        load_centroids(path, QuantizerConfig(codebook_size=64, bands=4), (4, 64, 128))
    with pytest.raises(ConfigError, match="expected"):
        load_centroids(path, cfg, (4, 32, 64))  # a 256-dim patch: other bands than the file's
    with pytest.raises(ConfigError, match="no codebook file"):
        load_centroids(str(tmp_path / "absent.safetensors"), cfg, (4, 32, 128))


def test_codebooks_fit_on_real_audio_then_train_and_resume(real_corpus, tmp_path):
    """`bestrq2 codebooks` on the real corpus, then a run on its codes: the codes spread over the centroids,
    the centroids are checkpointed, and a resumed run rebuilds the same quantizer."""
    from bestrq2.training.loop import pretrain

    cfg = micro_config(quantizer__codebook_size=16, quantizer__bands=2)
    centroids, info = fit_codebooks(cfg, str(real_corpus), crops=24, iters=10, seed=0)
    assert centroids.shape == (2, 16, cfg.frontend.patch_dim // 2) and info["tokens"] >= 24
    again, _ = fit_codebooks(cfg, str(real_corpus), crops=24, iters=10, seed=0)
    assert torch.equal(centroids, again), "the fit is seeded"
    path = tmp_path / "codes.safetensors"
    sets = ["--set", "quantizer.codebook_size=16", "--set", "quantizer.bands=2"]
    rc = main(["codebooks", "--preset", "tiny-ref", "--data", str(real_corpus), "--out", str(path), "--crops", "24",
               "--iters", "10", "--no-progress", "--device", "cpu", *sets])  # fmt: skip
    assert rc == 0 and path.is_file()
    cfg.quantizer.centroids = str(path)
    model = build_objective(cfg.validate())
    assert model.quantizer.projection is None
    run = tmp_path / "run"
    cfg.train.max_steps, cfg.train.ckpt_every = 4, 2
    pretrain(cfg, real_corpus, run, progress=False, tensorboard=False, stop_after=2)
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert torch.equal(state["quantizer.codebook"], model.quantizer.codebook)
    pretrain(cfg, real_corpus, run, resume=True, progress=False, tensorboard=False)
    with pytest.raises(ConfigError, match="bands differ"):
        cfg.quantizer.bands = 4
        build_objective(cfg.validate())
    jepa = micro_config()
    jepa.method = "audiojepa"
    with pytest.raises(ConfigError, match="no code targets"):
        fit_codebooks(jepa.validate(), str(real_corpus), crops=2)
