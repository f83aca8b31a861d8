"""The HEAR 2021 API contract (hear-validator is not installable here: its checks, as tests)."""

from __future__ import annotations

import pytest
import torch

from bestrq2 import hear


@pytest.fixture(scope="module")
def model(micro_export):
    return hear.load_model(str(micro_export), device="cpu")


def test_model_attributes(model, micro_export):
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == model.timestamp_embedding_size == model.encoder.output_dim
    with pytest.raises(ValueError, match="needs the path"):
        hear.load_model("")
    with pytest.raises(FileNotFoundError):
        hear.load_model(str(micro_export / "missing"))


@pytest.mark.parametrize("seconds", [0.3, 2.0, 3.7])
def test_timestamp_embeddings_shapes_and_centres(model, seconds):
    n = int(seconds * model.sample_rate)
    audio = torch.randn(3, n) * 0.1
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    hop = model.hop_size_in_ms
    frames = emb.shape[1]
    assert emb.shape == (3, frames, model.timestamp_embedding_size) and emb.dtype == torch.float32
    assert ts.shape == (3, frames) and ts.dtype == torch.float32
    assert frames == max(1, -(-n // int(round(hop * model.sample_rate / 1000))))  # ceil: every sample covered
    assert ts[0, 0] == pytest.approx(hop / 2)
    if frames > 1:
        torch.testing.assert_close(ts.diff(dim=1), torch.full((3, frames - 1), hop))  # evenly spaced
    assert float(ts[0, -1]) < n / model.sample_rate * 1000 + hop / 2
    assert torch.isfinite(emb).all()


def test_scene_embedding_is_the_mean_and_sounds_are_independent(model):
    audio = torch.randn(2, 32000) * 0.1
    scene = hear.get_scene_embeddings(audio, model)
    emb, _ = hear.get_timestamp_embeddings(audio, model)
    assert scene.shape == (2, model.scene_embedding_size)
    torch.testing.assert_close(scene, emb.mean(1))
    alone = hear.get_scene_embeddings(audio[1:], model)
    torch.testing.assert_close(scene[1:], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(scene[0], scene[1])


def test_bad_audio_is_a_clear_error(model):
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
    with pytest.raises(ValueError, match="no samples"):
        hear.get_scene_embeddings(torch.zeros(1, 0), model)
    bad = torch.zeros(1, 16000)
    bad[0, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        hear.get_timestamp_embeddings(bad, model)
