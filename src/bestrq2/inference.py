"""The inference encoder: waveform -> one frame per token time step, as X-ARES expects.

``BestRQ2Encoder(wav[B, T]) -> [B, T', D]``: audio is split into ``chunk_seconds`` pieces (the
pretraining crop, 10 s in the reference), all pieces of all clips run through the encoder in
one batch on all their patches (no masking), the tokens of each time step are pooled over
frequency (``pooling='mean'``, the reference and X-ARES recipe: D features; or ``'concat'``:
n_freq_blocks x D features, which keeps where in frequency each token sits) and the pieces are
joined again. T' = ceil(T / samples_per_token): every output frame covers
``hop_size_in_ms`` of input, the last one possibly partly padding.

``ConformerEncoder`` is the same contract for the frame-based one-step baseline (``bestrq-conformer``):
one output frame per ``subsample`` mel frames (156.25 ms by default), no frequency axis to pool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bestrq2.config import ConformerConfig, EncoderConfig, FrontendConfig
from bestrq2.frontend import Frontend, unpatchify
from bestrq2.hub import HubMixin
from bestrq2.models.conformer import Conformer, frame_frontend
from bestrq2.models.encoder import ViTEncoder

POOLINGS = ("mean", "concat")


def split_chunks(wav: Tensor, lengths: Tensor, chunk: int) -> tuple[Tensor, Tensor, int]:
    """[B, T] audio -> [B * nc, S] pieces of at most ``chunk`` samples, their real lengths [B * nc], nc."""
    B, T = wav.shape
    n_chunks = torch.sym_max(1, (T + chunk - 1) // chunk)
    S = torch.sym_min(T, chunk)  # one piece: the clip itself, unpadded; several: chunk-sized pieces
    wav = F.pad(wav, (0, n_chunks * S - T))  # no branch on T: traceable with a symbolic length (ONNX)
    pieces = wav.reshape(B * n_chunks, S)  # [B * nc, S]
    starts = torch.arange(n_chunks, device=wav.device) * S
    piece_len = (lengths[:, None] - starts[None]).clamp(min=0, max=S).reshape(-1)  # [B * nc]
    return pieces, piece_len, n_chunks


def batch_with_lengths(wav: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """[T] or [B, T] audio -> [B, T] and per-clip lengths (all T when none are given)."""
    if wav.dim() == 1:
        wav = wav[None]
    if lengths is None:
        lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=wav.device)
    return wav, lengths


def _autocast(compute_dtype: str, device: torch.device) -> torch.autocast:
    """bf16 autocast for the transformer when asked (the log-mel frontend turns it off for itself)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=compute_dtype == "bf16")


def _frames_for(num_samples: int, samples_per_token: int) -> int:
    """Output frames for a [B, num_samples] batch, in plain integers (traceable with symbolic shapes;
    non-negative operands only: ONNX's integer division truncates)."""
    return torch.sym_max(1, (num_samples + samples_per_token - 1) // samples_per_token)


class BestRQ2Encoder(nn.Module, HubMixin):
    compute_dtype = "fp32"
    """'fp32', 'bf16' (autocast around the transformer) or 'int8' (dynamic int8 linear layers); the
    frontend is always fp32. Set by :func:`bestrq2.precision.set_inference_dtype`."""
    always_mask = False
    """Pass the padding mask to attention even when no chunk is padded (no data-dependent branch: the
    ONNX export sets it; the frames are the same)."""
    tokens_alone = False
    """Encode every token on its own (attention to itself only, positions unchanged): the context
    diagnosis (``bestrq2 diagnose``) compares these frames with the usual ones."""

    def __init__(self, frontend: FrontendConfig, encoder: EncoderConfig, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.frontend_cfg, self.encoder_cfg = frontend, encoder
        self.frontend = Frontend(frontend)
        self.encoder = ViTEncoder(encoder, frontend.patch_dim)
        self.sampling_rate = frontend.sample_rate
        self.output_dim = encoder.width * (frontend.freq_patches if pooling == "concat" else 1)
        self.hop_size_in_ms = frontend.hop_size_in_ms
        self.chunk_samples = int(round(frontend.chunk_seconds * frontend.sample_rate))

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames of output for clips of ``lengths`` samples."""
        spt = self.frontend_cfg.samples_per_token
        return torch.div(lengths + spt - 1, spt, rounding_mode="floor").clamp(min=1)

    def forward(self, wav: Tensor, lengths: Tensor | None = None, layer: int | None = None) -> Tensor:
        """wav [B, T] float at ``sampling_rate``; lengths [B] samples (None: all T real).

        ``layer`` picks a block's output (0-based, -1 = last block before the final norm)
        instead of the final normed tokens.
        """
        return self._run(wav, lengths, layer, all_layers=False)[0]

    def forward_all(self, wav: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        """Every layer in one pass, pooled like ``forward``: [patch embedding, block 1 .. L, final],
        each [B, T', output_dim] (the layer-wise diagnosis reads these)."""
        return self._run(wav, lengths, None, all_layers=True)

    @property
    def num_layers(self) -> int:
        """Entries of :meth:`forward_all`: the patch embedding, every block and the final norm."""
        return len(self.encoder.blocks) + 2

    def _run(self, wav: Tensor, lengths: Tensor | None, layer: int | None, all_layers: bool) -> list[Tensor]:
        wav, lengths = batch_with_lengths(wav, lengths)
        B, T = wav.shape
        n_out = _frames_for(T, self.frontend_cfg.samples_per_token)
        pieces, piece_len, n_chunks = split_chunks(wav, lengths, self.chunk_samples)
        feats = self.frontend(pieces, piece_len)
        fb, tb = feats["grid"]
        padding = feats["padding"]
        if not self.always_mask and not bool(padding.any()):
            padding = None  # full chunks: unmasked attention (fused kernels)
        with _autocast(self.compute_dtype, wav.device):
            alone = self.tokens_alone
            if all_layers:
                outputs = self.encoder.all_layers(feats["patches"], feats["grid"], padding=padding, self_only=alone)
            elif layer is None:
                final, _ = self.encoder.forward_intermediates(feats["patches"], feats["grid"], padding=padding, self_only=alone)
                outputs = [final]  # [B*nc, fb*tb, D]
            else:
                _, outputs = self.encoder.forward_intermediates(
                    feats["patches"], feats["grid"], padding=padding, layers=[layer], self_only=alone
                )
        return [self._pool(tokens.float(), B, n_chunks, fb, tb)[:, :n_out] for tokens in outputs]

    def _pool(self, tokens: Tensor, B: int, n_chunks: int, fb: int, tb: int) -> Tensor:
        """Tokens [B*nc, fb*tb, D] -> frames [B, nc*tb, output_dim] (mean or concat over frequency)."""
        tokens = tokens.reshape(B * n_chunks, fb, tb, -1)  # [B*nc, fb, tb, D]
        if self.pooling == "mean":
            tokens = tokens.mean(1)  # [B*nc, tb, D]
        else:
            tokens = tokens.permute(0, 2, 1, 3).reshape(B * n_chunks, tb, -1)  # [B*nc, tb, fb*D]
        return tokens.reshape(B, n_chunks * tb, -1)  # [B, nc*tb, output_dim]


class ConformerEncoder(nn.Module, HubMixin):
    """Frame-based Conformer (``bestrq-conformer``): wav [B, T] -> [B, T', D], one frame per
    ``subsample`` mel frames; the same chunking and padding rules as :class:`BestRQ2Encoder`."""

    compute_dtype = "fp32"  # see BestRQ2Encoder.compute_dtype

    def __init__(self, frontend: FrontendConfig, encoder: EncoderConfig, conformer: ConformerConfig):
        super().__init__()
        self.pooling = "none"
        self.frontend_cfg, self.encoder_cfg, self.conformer_cfg = frontend, encoder, conformer
        self.frame_cfg = frame_frontend(frontend, conformer)
        self.frontend = Frontend(self.frame_cfg)
        self.encoder = Conformer(encoder, conformer, frontend.n_mels)
        self.sampling_rate = frontend.sample_rate
        self.output_dim = encoder.width
        self.hop_size_in_ms = self.frame_cfg.hop_size_in_ms
        self.chunk_samples = int(round(frontend.chunk_seconds * frontend.sample_rate))

    def output_lengths(self, lengths: Tensor) -> Tensor:
        spt = self.frame_cfg.samples_per_token
        return torch.div(lengths + spt - 1, spt, rounding_mode="floor").clamp(min=1)

    def forward(self, wav: Tensor, lengths: Tensor | None = None, layer: int | None = None) -> Tensor:
        """wav [B, T] float at ``sampling_rate``; lengths [B] samples (None: all T real)."""
        if layer is not None:
            raise ValueError("ConformerEncoder returns the final layer only")
        wav, lengths = batch_with_lengths(wav, lengths)
        B, T = wav.shape
        n_out = _frames_for(T, self.frame_cfg.samples_per_token)
        pieces, piece_len, n_chunks = split_chunks(wav, lengths, self.chunk_samples)
        feats = self.frontend(pieces, piece_len)
        fe = self.frame_cfg
        mel = unpatchify(feats["patches"], feats["grid"], fe.patch_freq, fe.patch_time)  # [B*nc, F, T]
        with _autocast(self.compute_dtype, wav.device):
            frames = self.encoder(mel, feats["padding"]).float()  # [B*nc, T', D]
        return frames.reshape(B, n_chunks * frames.shape[1], -1)[:, :n_out]  # [B, T', D]
