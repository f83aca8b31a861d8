"""export --onnx: model.onnx (frontend included) gives the torch encoder's frames under onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch

from bestrq2.export import export, load_encoder

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_export(micro_export, tmp_path_factory):
    """The micro run exported with 2.5 s inference chunks (its training crop) and model.onnx."""
    out = tmp_path_factory.mktemp("onnx") / "export"
    return export(micro_export.parent / "run", out, chunk_seconds="crop", onnx=True)


@pytest.mark.slow
def test_onnx_matches_torch_on_two_lengths_and_a_padded_batch(onnx_export):
    meta = json.loads((onnx_export / "config.json").read_text())
    assert meta["onnx"]["file"] == "model.onnx" and (onnx_export / "model.onnx").stat().st_size > 0
    enc = load_encoder(onnx_export)
    chunk = enc.chunk_samples
    sess = ort.InferenceSession(str(onnx_export / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["wav", "lengths"]
    rng = np.random.default_rng(0)
    short, long = int(0.6 * chunk), int(2.4 * chunk)  # one piece; three pieces, the last partly padding
    for lens in ([short], [long], [long, short], [700]):  # a batch padded to its longest clip; 44 ms
        T = max(lens)
        wav = np.zeros((len(lens), T), np.float32)
        for i, n in enumerate(lens):
            wav[i, :n] = 0.1 * rng.standard_normal(n)
        lengths = np.array(lens, dtype=np.int64)
        with torch.no_grad():
            ref = enc(torch.from_numpy(wav), torch.from_numpy(lengths)).numpy()
        (got,) = sess.run(None, {"wav": wav, "lengths": lengths})
        assert got.shape == ref.shape == (len(lens), -(-T // enc.frontend_cfg.samples_per_token), enc.output_dim)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_onnx_model_runs_without_torch(onnx_export, tmp_path):
    """The README's example, in a process where importing torch fails."""
    clip = tmp_path / "clip.wav"
    sf.write(clip, (0.1 * np.random.default_rng(1).standard_normal(24000)).astype(np.float32), 16000)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises
        import numpy as np, onnxruntime as ort, soundfile as sf
        wav, sr = sf.read({str(clip)!r}, dtype="float32")
        sess = ort.InferenceSession({str(onnx_export / "model.onnx")!r})
        frames, = sess.run(None, {{"wav": wav[None], "lengths": np.array([len(wav)], dtype=np.int64)}})
        print(frames.shape)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    enc = load_encoder(onnx_export)
    assert done.stdout.strip() == str((1, -(-24000 // enc.frontend_cfg.samples_per_token), enc.output_dim))


def test_onnx_export_without_its_packages_says_what_to_install(micro_export, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(RuntimeError, match=r"pip install 'bestrq2\[onnx\]'"):
        export(micro_export.parent / "run", tmp_path / "export", onnx=True)
