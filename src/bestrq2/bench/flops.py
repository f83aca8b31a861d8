"""Analytic FLOPs of one training step of any method, from the config and the batch shape.

Only matrix products are counted, 2 * m * n * k for [m, k] x [k, n] (the convention of model FLOPs
utilisation, and of ``torch.utils.flop_counter``): the patch embedding, q/k/v, the attention scores
Q K^T and the weighted sum A V, the output projection, the MLPs, the predictor (its input projection
too), the code heads over the masked rows, the quantizer's projection and codebook similarities, the
mel filterbank, and the Conformer's convolutions. Not counted: the FFT of the STFT, norms, softmax,
activations, the loss, the optimiser, masking and gathers (elementwise or memory-bound work, which
model FLOPs leave out by convention).

Passes: a trained part costs 3 x its forward (forward, gradient of the input, gradient of the weights);
a trained layer whose input needs no gradient (the patch embedding on frontend features, the first
Conformer convolution) 2 x; a frozen part 1 x (the frontend, the quantizer, the EMA target encoder of
``audiojepa``). Token counts follow the objectives exactly: with N tokens per clip and M = round(r * N)
masked (the mean mask ratio r unless told), the ``bestrq2`` / ``audiojepa`` encoder reads K = N - M
tokens and the predictor all N; the one-step methods run the encoder on all N; heads and quantizer see
the B * M masked rows. Model FLOPs exclude activation-checkpointing recompute (that is what MFU
divides); :attr:`StepFlops.recompute` is what checkpointing adds (hardware FLOPs), as torch recomputes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bestrq2.config import Config, ConfigError
from bestrq2.frontend import num_frames
from bestrq2.models.conformer import frame_frontend
from bestrq2.models.layers import drop_path_rates, swiglu_hidden


@dataclass(frozen=True)
class Term:
    name: str
    forward: float
    """FLOPs of the forward pass."""
    passes: int
    """3: trained; 2: trained, its input needs no gradient; 1: frozen or run without gradient."""
    block: bool = False
    """Inside a transformer block (recomputed under activation checkpointing when trained)."""
    recomputed: float | None = None
    """Forward FLOPs recomputed under activation checkpointing, if not all of ``forward``."""


@dataclass
class StepFlops:
    terms: list[Term] = field(default_factory=list)
    tokens_per_clip: int = 0
    """N: patches (ViT methods) or output frames (Conformer) of one clip."""
    visible: int = 0
    """Tokens per clip the encoder reads (K for bestrq2 / audiojepa, N for one-step methods)."""
    masked: int = 0
    """M: masked slots per clip (rows of the heads and the quantizer)."""

    def add(
        self, name: str, forward: float, passes: int, block: bool = False, recomputed: float | None = None
    ) -> None:
        self.terms.append(Term(name, float(forward), passes, block, recomputed))

    @property
    def forward(self) -> float:
        """FLOPs of the forward pass of the step (frozen parts included)."""
        return sum(t.forward for t in self.terms)

    @property
    def model(self) -> float:
        """Model FLOPs of one training step (forward + backward, no recompute)."""
        return sum(t.forward * t.passes for t in self.terms)

    @property
    def recompute(self) -> float:
        """Forward FLOPs that activation checkpointing recomputes in the backward pass."""
        return sum(
            t.forward if t.recomputed is None else t.recomputed
            for t in self.terms
            if t.block and t.passes > 1
        )

    def hardware(self, activation_checkpointing: bool) -> float:
        return self.model + (self.recompute if activation_checkpointing else 0.0)

    def by_part(self) -> dict[str, float]:
        """Model FLOPs per part (first word of each term's name)."""
        out: dict[str, float] = {}
        for t in self.terms:
            key = t.name.split(".")[0]
            out[key] = out.get(key, 0.0) + t.forward * t.passes
        return out


# ----------------------------------------------------------------------------- building blocks


def linear(rows: float, d_in: int, d_out: int) -> float:
    return 2.0 * rows * d_in * d_out


def attention_core(batch: int, length: int, width: int) -> float:
    """Q K^T and A V over all heads: 2 x 2 * B * L * L * width."""
    return 4.0 * batch * length * length * width


def vit_block_recomputed(
    batch: int, length: int, width: int, mlp_ratio: float, drop_path: float = 0.0, mlp: str = "gelu"
) -> float:
    """What activation checkpointing recomputes of a ViT block: torch's non-reentrant checkpoint stops
    once the tensors saved for backward are back. Without drop-path nothing saves the MLP's last product
    (fc2's backward needs its input only), so fc2 is not recomputed; with drop-path, its mask multiply
    saves fc2's output, so all of it is. (A Conformer block ends in a LayerNorm, which saves its input:
    all of it is recomputed.)"""
    full = vit_block(batch, length, width, mlp_ratio, mlp)
    return full if drop_path > 0 else full - linear(batch * length, mlp_hidden(width, mlp_ratio, mlp), width)


def mlp_hidden(width: int, mlp_ratio: float, mlp: str = "gelu") -> int:
    return swiglu_hidden(width, mlp_ratio) if mlp == "swiglu" else int(width * mlp_ratio)


def vit_block(batch: int, length: int, width: int, mlp_ratio: float, mlp: str = "gelu") -> float:
    """Matrix products of one block; SwiGLU's fc1 computes gate and value (2 x hidden outputs)."""
    rows, hidden = batch * length, mlp_hidden(width, mlp_ratio, mlp)
    fc1_out = 2 * hidden if mlp == "swiglu" else hidden
    return (
        linear(rows, width, 3 * width)
        + attention_core(batch, length, width)
        + linear(rows, width, width)
        + linear(rows, width, fc1_out)
        + linear(rows, hidden, width)
    )


def conformer_block(batch: int, length: int, width: int, mlp_ratio: float, kernel: int) -> float:
    rows, hidden = batch * length, int(width * mlp_ratio)
    feed_forward = 2 * (2 * linear(rows, width, hidden))  # two half-step FFNs
    attention = (
        linear(rows, width, 3 * width) + attention_core(batch, length, width) + linear(rows, width, width)
    )
    depthwise = 2.0 * rows * width * kernel
    conv = linear(rows, width, 2 * width) + depthwise + linear(rows, width, width)
    return feed_forward + attention + conv


def _mask_count(n: int, ratio: float) -> int:
    """Masked slots of a clip of n units (``bestrq2.masking.sample_masks``, no padding)."""
    return min(n - 1, max(1, round(ratio * n)))


def _add_vit(
    sf: StepFlops, name: str, cfg: Config, batch: int, length: int, passes: int, input_grad: bool
) -> None:
    enc = cfg.encoder
    sf.add(
        f"{name}.patch_embed",
        linear(batch * length, cfg.frontend.patch_dim, enc.width),
        passes if input_grad else min(passes, 2),
    )
    block = vit_block(batch, length, enc.width, enc.mlp_ratio, enc.mlp)
    for i, rate in enumerate(drop_path_rates(enc.drop_path, enc.depth)):
        again = vit_block_recomputed(batch, length, enc.width, enc.mlp_ratio, rate, enc.mlp)
        sf.add(f"{name}.block{i}", block, passes, block=True, recomputed=again)


def _add_predictor(sf: StepFlops, cfg: Config, batch: int, visible: int, total: int) -> None:
    p = cfg.predictor
    sf.add("predictor.input_proj", linear(batch * visible, cfg.encoder.width, p.width), 3)
    block = vit_block(batch, total, p.width, p.mlp_ratio, cfg.encoder.mlp)  # the predictor follows the encoder's style
    for i, rate in enumerate(drop_path_rates(p.drop_path, p.depth)):
        again = vit_block_recomputed(batch, total, p.width, p.mlp_ratio, rate, cfg.encoder.mlp)
        sf.add(f"predictor.block{i}", block, 3, block=True, recomputed=again)


def _add_targets(sf: StepFlops, cfg: Config, rows: int, input_dim: int) -> None:
    q = cfg.quantizer
    mels = cfg.frontend.n_mels if cfg.method == "bestrq-conformer" else cfg.frontend.patch_freq
    lifters = len(set(q.lifters) - {0})  # each distinct lifter smooths every frame of the patch once
    if q.centroids:  # fitted codebooks: every band's input against every centroid, no projection
        codes = linear(rows, input_dim // q.bands, q.codebook_size) * q.num_targets
    else:
        codes = linear(rows, input_dim // q.bands, q.code_dim) * q.num_targets
        codes += linear(rows, q.code_dim, q.codebook_size) * q.num_targets
    sf.add("quantizer", codes + linear(rows * (input_dim // mels), mels, mels) * lifters, 1)


def _add_heads(sf: StepFlops, cfg: Config, rows: int, width: int) -> None:
    q = cfg.quantizer
    sf.add("heads", linear(rows, width, q.codebook_size) * q.num_targets, 3)


def _add_frontend(sf: StepFlops, cfg: Config, batch: int, num_samples: int) -> None:
    fe = cfg.frontend
    sf.add("frontend.mel", linear(batch * num_frames(fe, num_samples), fe.n_fft // 2 + 1, fe.n_mels), 1)


# ----------------------------------------------------------------------------- per method


def step_flops(cfg: Config, batch: int, num_samples: int, mask_ratio: float | None = None) -> StepFlops:
    """Matmul FLOPs of one training step of ``cfg.method`` on ``batch`` clips of ``num_samples`` samples
    (no padding), with mask ratio ``mask_ratio`` (default: the mean of ``mask.ratio_min/max``)."""
    ratio = (cfg.mask.ratio_min + cfg.mask.ratio_max) / 2 if mask_ratio is None else mask_ratio
    if cfg.method == "bestrq-conformer":
        return _conformer_step(cfg, batch, num_samples, ratio)
    fe = cfg.frontend
    N = fe.freq_patches * fe.time_patches(num_samples)
    M = _mask_count(N, ratio)
    K = N - M
    sf = StepFlops(tokens_per_clip=N, masked=M)
    _add_frontend(sf, cfg, batch, num_samples)
    if cfg.method == "bestrq2":
        sf.visible = K
        _add_targets(sf, cfg, batch * M, fe.patch_dim)
        _add_vit(sf, "encoder", cfg, batch, K, 3, input_grad=False)
        _add_predictor(sf, cfg, batch, K, N)
        _add_heads(sf, cfg, batch * M, cfg.predictor.width)
    elif cfg.method == "bestrq-vit":
        sf.visible = N
        _add_targets(sf, cfg, batch * M, fe.patch_dim)
        _add_vit(sf, "encoder", cfg, batch, N, 3, input_grad=cfg.onestep.fill == "token")
        _add_heads(sf, cfg, batch * M, cfg.encoder.width)
    elif cfg.method == "audiojepa":
        sf.visible = K
        _add_vit(sf, "target_encoder", cfg, batch, N, 1, input_grad=False)
        _add_vit(sf, "encoder", cfg, batch, K, 3, input_grad=False)
        _add_predictor(sf, cfg, batch, K, N)
        sf.add("heads", linear(batch * M, cfg.predictor.width, cfg.encoder.width), 3)
    else:
        raise ConfigError(f"no FLOP count for method {cfg.method!r}")
    return sf


def _conformer_step(cfg: Config, batch: int, num_samples: int, ratio: float) -> StepFlops:
    """Frames: T' output frames of ``subsample`` mel frames; masks are spans of ``mask_span`` frames."""
    fe = frame_frontend(cfg.frontend, cfg.conformer)
    cc, enc = cfg.conformer, cfg.encoder
    T = fe.time_patches(num_samples)
    span = cc.mask_span
    blocks = -(-T // span)
    # masked frame slots (a span reaching past the last frame is flagged as padding, not scored: rare)
    M = _mask_count(blocks, ratio) * span
    rows = batch * min(M, T)
    sf = StepFlops(tokens_per_clip=T, visible=T, masked=M)
    _add_frontend(sf, cfg, batch, num_samples)
    _add_targets(sf, cfg, rows, fe.patch_dim)
    token_fill = cfg.onestep.fill == "token"
    # convolutional subsampling over (mel, time) of [B, 1, n_mels, T * subsample]
    f, t, c_in = fe.n_mels, T * cc.subsample, 1
    for i in range(int(math.log2(cc.subsample))):
        f, t = (f + 1) // 2, (t + 1) // 2
        conv = 2.0 * batch * f * t * cc.subsample_channels * c_in * 9
        sf.add(f"encoder.subsample{i}", conv, 3 if (i > 0 or token_fill) else 2)
        c_in = cc.subsample_channels
    sf.add("encoder.subsample_out", linear(batch * T, cc.subsample_channels * f, enc.width), 3)
    block = conformer_block(batch, T, enc.width, enc.mlp_ratio, cc.conv_kernel)
    for i in range(enc.depth):
        sf.add(f"encoder.block{i}", block, 3, block=True)
    _add_heads(sf, cfg, rows, enc.width)
    return sf


def inference_flops(cfg: Config, batch: int, num_samples: int) -> float | None:
    """Matmul FLOPs of the exported ViT encoder on ``batch`` clips (frontend + every patch through the
    encoder, forward only); None for the Conformer."""
    if cfg.method == "bestrq-conformer":
        return None
    fe = cfg.frontend
    sf = StepFlops(tokens_per_clip=fe.freq_patches * fe.time_patches(num_samples))
    _add_frontend(sf, cfg, batch, num_samples)
    _add_vit(sf, "encoder", cfg, batch, sf.tokens_per_clip, 1, input_grad=False)
    return sf.forward
