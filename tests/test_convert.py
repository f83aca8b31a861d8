"""bestrq2 convert: a state dict with the authors' names and shapes (random weights) becomes an export
whose frames equal an independent plain-torch forward of their documented layout."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import bestrq2
from bestrq2.convert import ConversionError, convert

librosa = pytest.importorskip("librosa")

SR, N_FFT, HOP, N_MELS = 16000, 2048, 625, 128
WIDTH, DEPTH, HEADS = 128, 2, 2  # head dim 64, as the published sizes: the converter's default


def timm_sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """[1, h*w, dim], written from timm's documented recipe: bands 10000^(-k/(dim/4)), an 'ij' grid
    flattened row-major, channels [sin(h), sin(w), cos(h), cos(w)]."""
    bands = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    hh, ww = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ph, pw = hh.reshape(-1, 1) * bands, ww.reshape(-1, 1) * bands
    return torch.cat([ph.sin(), pw.sin(), ph.cos(), pw.cos()], dim=1)[None]


def vit_state(prefix: str, g: torch.Generator, depth: int = DEPTH) -> dict[str, torch.Tensor]:
    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    s = {prefix + "pos_embed": timm_sincos_2d(8, 16, WIDTH)}
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        s |= {b + "norm1.weight": 1 + r(WIDTH), b + "norm1.bias": r(WIDTH), b + "norm2.weight": 1 + r(WIDTH),
              b + "norm2.bias": r(WIDTH), b + "attn.qkv.weight": r(3 * WIDTH, WIDTH), b + "attn.qkv.bias": r(3 * WIDTH),
              b + "attn.proj.weight": r(WIDTH, WIDTH), b + "attn.proj.bias": r(WIDTH),
              b + "mlp.fc1.weight": r(4 * WIDTH, WIDTH), b + "mlp.fc1.bias": r(4 * WIDTH),
              b + "mlp.fc2.weight": r(WIDTH, 4 * WIDTH), b + "mlp.fc2.bias": r(WIDTH)}  # fmt: skip
    return s | {prefix + "norm.weight": 1 + r(WIDTH), prefix + "norm.bias": r(WIDTH)}


def their_state(method: str = "bestrq2", seed: int = 0) -> dict[str, torch.Tensor]:
    """Names and shapes of the authors' LightningModule state dict (a small ViT), random weights."""
    g = torch.Generator().manual_seed(seed)
    fb = torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=0, fmax=8000, htk=True, norm=None)).T
    s = {
        "spectrogram.mel_spec.spectrogram.window": torch.hann_window(N_FFT),
        "spectrogram.mel_spec.mel_scale.fb": fb.float().contiguous(),
        "patch_embed.patch_embed.proj.weight": torch.randn(WIDTH, 1, 16, 16, generator=g) * 0.02,
        "patch_embed.patch_embed.proj.bias": torch.randn(WIDTH, generator=g) * 0.02,
        "mask_token": torch.zeros(1, 1, WIDTH),
        "quantizer.P": torch.randn(256, 16, generator=g),
        "quantizer.CB": torch.randn(64, 16, generator=g),
    }
    if method == "bestrq2":
        s |= vit_state("encoder.", g) | vit_state("predictor.", g, depth=1)
        s |= {"predictor_input_proj.weight": torch.eye(WIDTH), "predictor_input_proj.bias": torch.zeros(WIDTH),
              "rq_proj.weight": torch.zeros(64, WIDTH), "rq_proj.bias": torch.zeros(64)}  # fmt: skip
    elif method == "bestrq-vit":
        s |= vit_state("encoder.", g) | {"output_proj.weight": torch.zeros(64, WIDTH), "output_proj.bias": torch.zeros(64)}
    else:
        s |= vit_state("student.", g) | vit_state("teacher.", g) | vit_state("predictor.", g, depth=1)
    return s


def their_frames(s: dict[str, torch.Tensor], wav: torch.Tensor, prefix: str = "encoder.") -> torch.Tensor:
    """The authors' documented forward on 10 s chunks, in plain torch: normalised power mel -> dB ->
    Conv2d patches (+ sin-cos table) -> pre-norm ViT -> final LayerNorm -> mean over the 8 mel blocks."""
    window = s["spectrogram.mel_spec.spectrogram.window"]
    spec = torch.stft(wav, N_FFT, HOP, N_FFT, window, center=True, pad_mode="reflect", return_complex=True)
    spec = spec / window.square().sum().sqrt()  # torchaudio normalized=True
    mel = torch.einsum("bft,fm->bmt", spec.abs() ** 2, s["spectrogram.mel_spec.mel_scale.fb"])
    db = 10 * torch.log10(mel.clamp(min=1e-10))[..., :256]  # 257 frames truncated to a multiple of 16
    x = F.conv2d(db[:, None], s["patch_embed.patch_embed.proj.weight"], s["patch_embed.patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2) + s[prefix + "pos_embed"]  # [B, 128, D], row-major over (mel block, time)
    B, N, D = x.shape
    for i in range(DEPTH):
        p = f"{prefix}blocks.{i}."
        h = F.layer_norm(x, (D,), s[p + "norm1.weight"], s[p + "norm1.bias"], eps=1e-5)
        q, k, v = F.linear(h, s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"]).reshape(B, N, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1) / math.sqrt(D // HEADS)).softmax(-1)
        x = x + F.linear((att @ v).transpose(1, 2).reshape(B, N, D), s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])
        h = F.layer_norm(x, (D,), s[p + "norm2.weight"], s[p + "norm2.bias"], eps=1e-5)
        h = F.linear(F.gelu(F.linear(h, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"])), s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"])
        x = x + h
    x = F.layer_norm(x, (D,), s[prefix + "norm.weight"], s[prefix + "norm.bias"], eps=1e-5)
    return x.reshape(B, 8, 16, D).mean(1)  # [B, 16, D]: one frame per 625 ms


def _wav(seconds: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    tone = 0.3 * torch.sin(2 * math.pi * 440 * t * (1 + 0.5 * t / seconds))
    return torch.stack([tone + 0.05 * torch.randn(t.shape, generator=g) for _ in range(batch)])


@pytest.mark.parametrize("method, prefix", [("bestrq2", "encoder."), ("bestrq-vit", "encoder."), ("audiojepa", "student.")])
def test_converted_safetensors_gives_their_frames(tmp_path, method, prefix):
    s = their_state(method)
    save_file(s, str(tmp_path / "last.safetensors"))
    out = convert(tmp_path / "last.safetensors", tmp_path / "export")
    meta = json.loads((out / "config.json").read_text())
    assert meta["method"] == method and meta["exported_encoder"] == prefix.rstrip(".") and meta["hop_size_in_ms"] == 625
    enc = bestrq2.load_encoder(out)
    wav = _wav(20.0)  # two 10 s chunks: their wrapper runs each chunk alone and joins the frames
    with torch.no_grad():
        ours = enc(wav)
        ref = torch.cat([their_frames(s, wav[:, :160000], prefix), their_frames(s, wav[:, 160000:], prefix)], dim=1)
    assert ours.shape == ref.shape == (2, 32, WIDTH)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_lightning_ckpt_and_the_teacher(tmp_path):
    s = their_state("audiojepa", seed=1)
    torch.save({"state_dict": s, "global_step": 1234, "hyper_parameters": {"lr": 1e-4, "name": "jepa"}}, tmp_path / "last.ckpt")
    out = convert(tmp_path / "last.ckpt", tmp_path / "export", encoder="teacher")
    meta = json.loads((out / "config.json").read_text())
    assert meta["step"] == 1234 and meta["exported_encoder"] == "teacher"
    wav = _wav(10.0, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(bestrq2.load_encoder(out)(wav), their_frames(s, wav, "teacher."), atol=1e-4, rtol=0)


class Foreign:  # a class a hostile or merely old checkpoint might pickle
    pass


def test_ckpt_with_python_objects_is_refused_and_points_to_the_safetensors(tmp_path):
    torch.save({"state_dict": their_state(), "hyper_parameters": Foreign()}, tmp_path / "last.ckpt")
    with pytest.raises(ConversionError, match=r"does not unpickle.*last\.safetensors"):
        convert(tmp_path / "last.ckpt", tmp_path / "export")
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("encoder.blocks.1.mlp.fc2.bias"), "'encoder.blocks.1.mlp.fc2.bias'"),
        (lambda s: s.__setitem__("encoder.blocks.0.attn.proj.weight", torch.zeros(WIDTH, WIDTH + 1)), "'encoder.blocks.0.attn.proj.weight' has shape"),
        (lambda s: s.__setitem__("encoder.pos_embed", torch.randn(1, 128, WIDTH)), "'encoder.pos_embed' is not the 2-D sin-cos table"),
        (lambda s: s.__setitem__("encoder.blocks.0.ls1.gamma", torch.ones(WIDTH)), r"does not know.*encoder\.blocks\.0\.ls1\.gamma"),
        (lambda s: s.__setitem__("spectrogram.mel_spec.mel_scale.fb", s["spectrogram.mel_spec.mel_scale.fb"].roll(3, 0)), "not an HTK mel filterbank"),
        (lambda s: s.pop("rq_proj.weight"), "not a checkpoint of the authors'"),
    ],
)  # fmt: skip
def test_bad_checkpoints_name_the_key(tmp_path, edit, message):
    s = their_state()
    edit(s)
    save_file(s, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConversionError, match=message):
        convert(tmp_path / "bad.safetensors", tmp_path / "export")


def test_another_models_checkpoint_is_refused(micro_export, tmp_path):
    run_ckpt = micro_export.parent / "run" / "checkpoints" / "last.pt"  # a bestrq2 training checkpoint
    with pytest.raises(ConversionError, match="bestrq2 training checkpoint.*bestrq2 export"):
        convert(run_ckpt, tmp_path / "export")


def test_cli_convert(tmp_path, capsys):
    from bestrq2.cli import main

    save_file(their_state("bestrq-vit"), str(tmp_path / "vit.safetensors"))
    assert main(["convert", str(tmp_path / "vit.safetensors"), "--out", str(tmp_path / "export")]) == 0
    assert "converted" in capsys.readouterr().out
    assert (tmp_path / "export" / "README.md").read_text().count("bestrq-vit") >= 1
    with pytest.raises(SystemExit, match="bestrq2 convert: .*not a checkpoint"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        main(["convert", str(tmp_path / "other.safetensors"), "--out", str(tmp_path / "e2")])
