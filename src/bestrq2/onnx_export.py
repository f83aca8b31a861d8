"""ONNX export of an inference encoder: waveform in, frames out, the log-mel frontend included.

``model.onnx`` takes ``wav`` [B, T] float32 at the export's sampling rate and ``lengths`` [B] int64
(real samples per clip; padding past them is ignored) and returns ``frames`` [B, T', D] with
T' = ceil(T / samples_per_token), exactly what :class:`bestrq2.inference.BestRQ2Encoder` returns.
Batch and length are dynamic; clips longer than the inference chunk are split into chunks inside
the graph as they are in torch. It runs with onnxruntime alone (no torch)::

    import numpy as np, onnxruntime as ort, soundfile as sf
    wav, sr = sf.read("clip.wav", dtype="float32")          # mono, at the export's sampling rate
    sess = ort.InferenceSession("export/model.onnx")
    frames, = sess.run(None, {"wav": wav[None], "lengths": np.array([len(wav)], dtype=np.int64)})

The export needs the ``onnx`` and ``onnxscript`` packages (``pip install bestrq2[onnx]``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from bestrq2.inference import BestRQ2Encoder, ConformerEncoder

OPSET = 18


class _Frames(nn.Module):
    """(wav [B, T], lengths [B]) -> frames [B, T', D]: the encoder's forward with explicit lengths."""

    def __init__(self, encoder: BestRQ2Encoder | ConformerEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, wav: Tensor, lengths: Tensor) -> Tensor:
        return self.encoder(wav, lengths)


@contextlib.contextmanager
def _always_masked(encoder: nn.Module) -> Iterator[None]:
    """Trace the padded-attention path in every module that has one (the unpadded path is a branch on the data)."""
    modules = [m for m in encoder.modules() if hasattr(m, "always_mask")]
    for m in modules:
        m.always_mask = True
    try:
        yield
    finally:
        for m in modules:
            del m.always_mask  # back to the class default


def min_samples(encoder: BestRQ2Encoder | ConformerEncoder) -> int:
    """Shortest input the graph accepts: the STFT's reflect padding needs more than n_fft / 2 samples."""
    cfg = encoder.frontend.cfg
    return cfg.n_fft // 2 + 1


def require_onnx() -> None:
    """Raise a clear error when torch.onnx's exporter lacks its packages."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"ONNX export needs the onnx and onnxscript packages: pip install 'bestrq2[onnx]' ({e})") from e


def export_onnx(encoder: BestRQ2Encoder | ConformerEncoder, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``path`` (model.onnx) for ``encoder``; dynamic batch and length."""
    require_onnx()
    path = Path(path)
    encoder = encoder.eval().cpu()
    wrapper = _Frames(encoder).eval()
    T = 3 * encoder.chunk_samples // 2 + 123  # two chunks, the second partly padding: the general path
    wav = torch.randn(2, T) * 0.1
    lengths = torch.tensor([T, T // 2])
    batch = torch.export.Dim("batch", min=1)
    samples = torch.export.Dim("samples", min=min_samples(encoder))
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with _always_masked(encoder), torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                (wav, lengths),
                dynamo=True,
                opset_version=opset,
                input_names=["wav", "lengths"],
                output_names=["frames"],
                dynamic_shapes={"wav": {0: batch, 1: samples}, "lengths": {0: batch}},
                verbose=False,
            )
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    program.save(str(path))
    return path
