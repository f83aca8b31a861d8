"""Typed configuration: one dataclass per component, named presets, JSON round-trip.

Every artifact (run folder, checkpoint, export) stores the full resolved config, and
loading rebuilds the model from that alone. Presets are functions built from one another
and registered by name (``PRESETS``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

PositionKind = Literal["sincos", "rope"]
SincosLayout = Literal["axes", "timm"]
NormKind = Literal["layernorm", "rmsnorm"]
MlpKind = Literal["gelu", "swiglu"]
QuantizerNorm = Literal["none", "patch", "global", "clip"]
MaskFill = Literal["noise", "token"]
MaskKind = Literal["patch", "time"]
PredictorSides = Literal["both", "left"]


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(kw_only=True)
class FrontendConfig:
    """Waveform -> power mel spectrogram (dB) -> 16x16 patches. Audio constants live here only."""

    sample_rate: int = 16000
    """Input sample rate in Hz; audio is resampled to it when loaded."""
    n_fft: int = 2048
    """FFT size (and window length) in samples. The reference's 128 ms; 64 ms and 256 ms windows give no larger
    gain over random init at demo scale, and 64 ms loses keywords (results/recipe/README.md, stop 33)."""
    hop_length: int = 625
    """Hop between frames in samples (39.0625 ms at 16 kHz)."""
    n_mels: int = 128
    """Number of mel bands (HTK mel scale, no filter normalisation)."""
    f_min: float = 0.0
    """Lowest mel filter edge in Hz."""
    f_max: float = 8000.0
    """Highest mel filter edge in Hz."""
    patch_freq: int = 16
    """Patch height in mel bands."""
    patch_time: int = 16
    """Patch width in frames."""
    pad_mode: Literal["constant", "reflect"] = "constant"
    """Padding of the centred STFT at the clip edges. 'constant' (zeros) makes a clip's features
    identical whether it stands alone or is zero-padded in a batch (X-ARES pads batches);
    'reflect' is the reference code's (torchaudio's default), for converted checkpoints."""
    db_floor: float = -100.0
    """Power is clamped to 10**(db_floor/10) before 10*log10."""
    norm_mean: float = -14.0
    """Encoder input is (dB - norm_mean) / norm_std (measured on the demo corpus)."""
    norm_std: float = 35.0
    """See norm_mean."""
    chunk_seconds: float = 10.0
    """Inference splits long audio into chunks of this length (the pretraining crop)."""

    @property
    def samples_per_token(self) -> int:
        """Audio samples covered by one time step of the token grid."""
        return self.hop_length * self.patch_time

    @property
    def hop_size_in_ms(self) -> float:
        """Time step of the encoder's output frames in milliseconds."""
        return 1000.0 * self.samples_per_token / self.sample_rate

    @property
    def freq_patches(self) -> int:
        return self.n_mels // self.patch_freq

    @property
    def patch_dim(self) -> int:
        return self.patch_freq * self.patch_time

    def time_patches(self, num_samples: int) -> int:
        """Time steps of the token grid for ``num_samples`` of audio (ceil: nothing dropped)."""
        return max(1, (num_samples + self.samples_per_token - 1) // self.samples_per_token)  # integer ceil

    def validate(self) -> None:
        _check(self.sample_rate > 0, "frontend.sample_rate must be positive")
        _check(0 < self.hop_length <= self.n_fft, "frontend.hop_length must be in (0, n_fft]")
        _check(self.n_mels % self.patch_freq == 0, "frontend.n_mels must be a multiple of patch_freq")
        _check(0 <= self.f_min < self.f_max <= self.sample_rate / 2, "frontend: need 0 <= f_min < f_max <= sr/2")
        _check(self.norm_std > 0, "frontend.norm_std must be positive")
        chunk = self.chunk_seconds * self.sample_rate
        _check(
            chunk >= self.samples_per_token and chunk % self.samples_per_token == 0,
            f"frontend.chunk_seconds must be a positive multiple of one token ({self.hop_size_in_ms} ms)",
        )


@dataclass(kw_only=True)
class EncoderConfig:
    """ViT context encoder."""

    width: int = 768
    """Token width."""
    depth: int = 12
    """Number of transformer blocks."""
    heads: int = 12
    """Attention heads."""
    mlp_ratio: float = 4.0
    """MLP hidden width / token width."""
    qkv_bias: bool = True
    """Bias on the fused q, k, v projection."""
    drop_path: float = 0.1
    """Stochastic depth rate at the last block (linear from 0)."""
    positions: PositionKind = "sincos"
    """'sincos': fixed sin-cos added to tokens; 'rope': rotary on q and k. Both are 2-D over (mel block,
    time block), or 1-D over time when the patches are full-band (frontend.patch_freq == n_mels).
    The predictor uses the same kind."""
    sincos_layout: SincosLayout = "axes"
    """Channel order of the 2-D sin-cos table: 'axes' = [sin f, cos f, sin t, cos t]; 'timm' = [sin f,
    sin t, cos f, cos t], the order of timm's build_sincos2d_pos_embed, which the authors' checkpoints
    use (``bestrq2 convert`` sets it). Same frequencies either way."""
    norm: NormKind = "layernorm"
    """Normalisation in the blocks and at the output: 'layernorm' or 'rmsnorm' (the predictor follows)."""
    mlp: MlpKind = "gelu"
    """Block MLP: 'gelu' or 'swiglu' (2/3 of the hidden width, same parameters; the predictor follows)."""
    qk_norm: bool = False
    """RMS-normalise queries and keys per head (the predictor follows)."""
    layer_scale: float = 0.0
    """LayerScale: each residual branch is multiplied by a learned per-channel scale starting at this
    value, so blocks start near the identity (e.g. 1e-4); 0 = off. The predictor follows."""
    freeze_patch_embed: bool = False
    """Keep the patch embedding at its random init during pretraining (a diagnosis): the whole gain of `tiny` over
    random init is already in its learned linear patch embedding (results/recipe/README.md, stop 35); frozen, any
    gain has to come from the blocks."""

    def validate(self) -> None:
        _check(self.layer_scale >= 0, "encoder.layer_scale must be >= 0")
        _check(self.width % self.heads == 0, "encoder.width must be divisible by encoder.heads")
        _check(self.depth >= 1, "encoder.depth must be >= 1")
        _check(self.mlp_ratio > 0, "encoder.mlp_ratio must be > 0")
        _check(0.0 <= self.drop_path < 1.0, "encoder.drop_path must be in [0, 1)")
        _check(self.width % 4 == 0, "encoder.width must be a multiple of 4 (2-D positions)")
        if self.positions == "rope":
            _check((self.width // self.heads) % 4 == 0, "rope needs a head dim divisible by 4")


@dataclass(kw_only=True)
class PredictorConfig:
    """Lightweight transformer that fills mask tokens in and predicts codes (dropped after pretraining)."""

    width: int = 768
    depth: int = 4
    heads: int = 12
    mlp_ratio: float = 4.0
    """MLP hidden width / width; 0 builds attention-only blocks. A masked slot's state is then its query
    plus an attention-weighted sum of per-token projections of the encoder's outputs: tokens interact only
    through the attention weights, so a prediction that needs a nonlinear combination of several visible
    patches has to find it already computed by the encoder."""
    drop_path: float = 0.0
    neighbours: int = 0
    """0: every predictor token attends to every other (the paper). n >= 1: a *local* predictor: each
    masked slot attends only to itself and to the visible tokens of the n nearest visible time steps on
    either side, and visible tokens attend only to themselves. Whatever a prediction needs from farther
    away must then already be in the encoder's outputs, so the encoder, not the predictor, has to
    contextualise (results/recipe/README.md, "The encoder uses no context"). The mask is a boolean
    attention mask, so on a GPU attention leaves the flash kernel."""
    sides: PredictorSides = "both"
    """With ``neighbours >= 1``: "both" reads the nearest visible steps on either side of a masked slot;
    "left" reads them on the left only (slots before the first visible step read the right instead).
    A masked slot's right bracketing patch is then reachable only through the encoder's output at its
    left one, so the encoder has to carry its neighbours' content (a one-sided pretext, like
    autoregressive predictive coding, kept inside the two-step method)."""

    clip_weight: float = 0.0
    """Weight of a second, clip-level prediction beside the predictor's (0: off, the paper). A linear
    head reads the mean of the encoder's outputs over the visible tokens, the same mean a frozen-feature
    probe reads, and predicts from it the codes of every masked patch of the clip: the bag of masked
    codes, with no position. The predictor can solve its own task from the patches that bracket a
    masked slot (results/recipe/README.md, "The encoder uses no context"); this one it can only solve
    from what the encoder gathers over the whole visible clip. The head is dropped with the predictor."""
    contrast_weight: float = 0.0
    """Weight of a clip-level contrastive term beside the predictor's loss (0: off, the paper); needs
    ``mask.repeats >= 2``. The mean of the encoder's visible outputs under one mask, through a small
    projector, has to pick out the means of the same clip under its other masks among every mask row of
    the (micro-)batch (InfoNCE). The code targets ask for a per-patch map (results/recipe/README.md);
    this term asks the pooled features, the ones a probe reads, to tell clips apart and to agree across
    views of one clip (independent masks, so their visible tokens may overlap). The other clips of the
    rank's micro-batch are the negatives, so the term depends on how the batch is split over ranks and
    accumulation steps, and needs at least 2 clips per micro-batch. The projector is dropped with the predictor."""
    contrast_temperature: float = 0.1
    """Softmax temperature of the contrastive term."""
    regress_weight: float = 0.0
    """Weight of a masked-patch regression beside the codes (0: off, the paper): a linear head on the
    predictor's output regresses each masked patch, normalised to zero mean and unit variance over its own
    values (MAE's normalised-pixel target, as Audio-MAE and MSM-MAE regress log-mel patches). With
    ``code_weight=0`` it replaces the codes: a diagnosis of whether the codes or masked prediction itself
    limit what the encoder learns (results/recipe/README.md). The head is dropped with the predictor."""
    code_weight: float = 1.0
    """Weight of the code prediction (BEST-RQ's loss); 0 only beside a regression (``regress_weight > 0``)."""

    def validate(self) -> None:
        _check(self.clip_weight >= 0, "predictor.clip_weight must be >= 0 (0 = off)")
        _check(self.contrast_weight >= 0, "predictor.contrast_weight must be >= 0 (0 = off)")
        _check(self.contrast_temperature > 0, "predictor.contrast_temperature must be > 0")
        _check(self.regress_weight >= 0, "predictor.regress_weight must be >= 0 (0 = off)")
        _check(self.code_weight >= 0, "predictor.code_weight must be >= 0")
        _check(
            self.code_weight > 0 or self.regress_weight > 0,
            "predictor.code_weight=0 leaves no loss: set predictor.regress_weight > 0 beside it",
        )
        _check(self.width % self.heads == 0, "predictor.width must be divisible by predictor.heads")
        _check(self.width % 4 == 0, "predictor.width must be a multiple of 4")
        _check(self.depth >= 1, "predictor.depth must be >= 1")
        _check(self.mlp_ratio >= 0, "predictor.mlp_ratio must be >= 0 (0 = attention-only blocks)")
        _check(self.neighbours >= 0, "predictor.neighbours must be >= 0 (0 = full attention)")
        _check(
            self.sides == "both" or self.neighbours >= 1,
            "predictor.sides='left' needs a local predictor (predictor.neighbours >= 1)",
        )


@dataclass(kw_only=True)
class QuantizerConfig:
    """Frozen random-projection quantizer (BEST-RQ targets)."""

    codebook_size: int = 8192
    """Codes per codebook."""
    code_dim: int = 16
    """Dimension of the projected space."""
    num_codebooks: int = 1
    """Independent codebooks (one prediction head each)."""
    bands: int = 1
    """Split each patch's mel axis into this many equal bands, each quantised on its own by
    ``num_codebooks`` codebooks of its own (``bands x num_codebooks`` targets per patch). With
    full-band patches one code of the whole 128-mel patch keeps little of where the energy sits in
    frequency; band codes keep it, as the reference's 16-mel patches did (results/recipe/README.md)."""
    norm: QuantizerNorm = "patch"
    """Input normalisation before projection: 'none' (reference code), 'patch' (each patch to zero
    mean, unit variance), 'global' (the frontend's fixed norm_mean/norm_std) or 'clip' (the patch
    minus its clip's mean patch over the clip's real tokens, then as 'patch': cepstral mean
    normalisation of the targets, whose codes then say how a patch departs from its clip's average
    sound rather than what the clip sounds like). 'patch' was chosen by measured codebook usage on real
    audio (benchmarks/README.md); 'clip' is studied in results/recipe/README.md (stop 28)."""
    codebook_norms: tuple[QuantizerNorm, ...] = ()
    """One input normalisation per codebook (e.g. ``patch,global`` with num_codebooks=2: one codebook
    codes the patch's shape, the other also its level; ``patch,clip``: one codes the patch, the other
    its departure from the clip's mean); empty: ``norm`` for every codebook."""
    seed: int = 0
    """Seed of the projection and codebook (independent of the training seed)."""
    teacher: str = ""
    """An export folder of an earlier ViT run with the same frontend (empty: none, the paper). Its
    features of each token, from the clean and unmasked clip, are quantised instead of the raw patch:
    targets that carry what the earlier run learned, as HuBERT's second iteration clusters the first
    one's features (``bestrq2.models.teacher``). The folder must exist whenever the objective is built
    (training, resuming, ``diagnose``); its weights are kept in checkpoints and never exported."""
    teacher_layer: int = -1
    """The teacher's features: -1 its final normed output (what its export gives), k >= 0 block k's raw output."""
    lifter: int = 0
    """Smooth each frame of the patch along the mel axis before it is quantised, keeping the first ``lifter``
    coefficients of its cosine transform over the patch's mels (a liftered log-mel: the spectral envelope,
    as MFCCs keep it, without the harmonics of the pitch); 0: the patch as it is (the paper). The codes of
    raw 16-mel bands are pitch detectors (their bag-of-codes probe scores pitch class 0.90 and keywords 0.15;
    results/recipe/README.md, stop 30). Works with ``bands``, ``window`` and every norm."""
    codebook_lifters: tuple[int, ...] = ()
    """One ``lifter`` per codebook (e.g. ``0,12`` with num_codebooks=2: one codebook codes the patch as it is,
    pitch included, the other its envelope); empty: ``lifter`` for every codebook."""
    window: int = 1
    """Quantise each token's patch together with its ``(window - 1) / 2`` neighbours on either side in time
    (odd; 1: the patch alone, the paper). The window is laid out as one wider patch, mel-major, so
    ``bands`` still cut it into mel bands. Random features of 2-4 neighbouring patches hold more of the
    suite's tasks than those of one patch (results/recipe/README.md, stop 25): codes of a window ask the
    model for that much context in its predictions."""

    centroids: str = ""
    """A codebook file from ``bestrq2 codebooks`` (empty: random codebooks, the paper): k-means centroids of
    this quantizer's own prepared inputs (the same patches or teacher features, bands, lifters and norms; the
    file records them and is checked), fitted on the pretraining audio. A token's code is then its nearest
    centroid, so codes group the inputs where they cluster, as HuBERT's k-means targets do, instead of cutting
    them with random hyperplanes (``bestrq2.training.codebooks``). The file must exist whenever the objective is built;
    the centroids are also kept in checkpoints."""

    @property
    def norms(self) -> tuple[str, ...]:
        """The input normalisation of each codebook."""
        return self.codebook_norms or (self.norm,) * self.num_codebooks

    @property
    def lifters(self) -> tuple[int, ...]:
        """The lifter of each codebook (0: none)."""
        return self.codebook_lifters or (self.lifter,) * self.num_codebooks

    @property
    def num_targets(self) -> int:
        """Codes per patch: ``bands x num_codebooks``, band-major (target ``b * num_codebooks + c``)."""
        return self.bands * self.num_codebooks

    def validate(self) -> None:
        _check(self.codebook_size >= 2, "quantizer.codebook_size must be >= 2")
        _check(self.code_dim >= 1 and self.num_codebooks >= 1, "quantizer dims must be positive")
        _check(self.bands >= 1, "quantizer.bands must be >= 1")
        _check(self.teacher_layer >= -1, "quantizer.teacher_layer must be -1 (the final output) or a block index >= 0")
        _check(self.window >= 1 and self.window % 2 == 1, "quantizer.window must be odd and >= 1")
        _check(self.window == 1 or not self.teacher, "quantizer.window applies to patches, not to a teacher's features")
        # a single setting beside a per-codebook one would be ignored without a word
        _check(
            not (self.codebook_lifters and self.lifter),
            f"quantizer.lifter={self.lifter} is ignored while quantizer.codebook_lifters={list(self.codebook_lifters)} "
            "is set: give one lifter per codebook there, or clear it (quantizer.codebook_lifters=)",
        )
        _check(
            not (self.codebook_norms and self.norm != "patch"),
            f"quantizer.norm={self.norm} is ignored while quantizer.codebook_norms={list(self.codebook_norms)} "
            "is set: give one norm per codebook there, or clear it (quantizer.codebook_norms=)",
        )
        _check(
            not self.codebook_lifters or len(self.codebook_lifters) == self.num_codebooks,
            f"quantizer.codebook_lifters has {len(self.codebook_lifters)} entries for {self.num_codebooks} codebooks "
            "(one lifter per codebook, e.g. quantizer.codebook_lifters=0,0,12,12 for 4)",
        )
        _check(min(self.lifters) >= 0, "quantizer lifters must be >= 0 (0: off)")
        _check(
            max(self.lifters) == 0 or not self.teacher,
            "quantizer lifters apply to log-mel patches, not to a teacher's features: with quantizer.teacher, "
            "set quantizer.codebook_lifters= (empty) and quantizer.lifter=0",
        )
        _check(
            not self.codebook_norms or len(self.codebook_norms) == self.num_codebooks,
            f"quantizer.codebook_norms has {len(self.codebook_norms)} entries for {self.num_codebooks} codebooks",
        )
        for n in self.codebook_norms:
            _check(n in typing.get_args(QuantizerNorm), f"quantizer.codebook_norms: unknown norm {n!r}")


@dataclass(kw_only=True)
class MaskConfig:
    """Random masking of the token grid; the ratio is drawn once per batch."""

    ratio_min: float = 0.4
    ratio_max: float = 0.6
    kind: MaskKind = "patch"
    """'patch': random patches of the (mel block, time block) grid; 'time': whole time steps (every
    frequency block of a step) in spans of ``span`` steps, so a masked step cannot be read off its
    neighbours in frequency. With full-band patches and span 1 the two are the same."""
    span: int = 1
    """Time steps per masked span (kind 'time')."""
    repeats: int = 1
    """Masks drawn per clip and step (multi-mask training, as in data2vec 2.0): the clip is read,
    transformed and quantised once, and the model sees it ``repeats`` times under independent masks.
    More targets per step for the cost of the encoder and predictor only; the loader's work per step
    does not change. The loss stays a mean over every scored patch of every repeat."""

    def validate(self) -> None:
        _check(0.0 < self.ratio_min <= self.ratio_max < 1.0, "mask: need 0 < ratio_min <= ratio_max < 1")
        _check(self.span >= 1, "mask.span must be >= 1")
        _check(self.repeats >= 1, "mask.repeats must be >= 1")


@dataclass(kw_only=True)
class MixConfig:
    """Utterance mixing (``bestrq2.mixing``, as in WavLM): the encoder reads a clip with a segment of
    another clip of the batch added in power, while the targets stay the clean clip's codes. Methods
    bestrq2 and bestrq-vit."""

    prob: float = 0.0
    """Share of clips that get a partner mixed in (0: off)."""
    max_fraction: float = 0.5
    """Longest mixed segment, as a share of the clip's time steps (below 1, so the clean clip is the one
    heard throughout)."""
    snr_db: tuple[float, ...] = (-5.0, 5.0)
    """Range of the clean-to-partner energy ratio in dB, drawn uniformly per clip."""

    def validate(self) -> None:
        _check(0.0 <= self.prob <= 1.0, "mix.prob must be in [0, 1]")
        _check(0.0 < self.max_fraction < 1.0, "mix.max_fraction must be in (0, 1)")
        _check(len(self.snr_db) == 2 and self.snr_db[0] <= self.snr_db[1], "mix.snr_db must be LOW,HIGH")


@dataclass(kw_only=True)
class OneStepConfig:
    """One-step BEST-RQ (methods ``bestrq-vit`` and ``bestrq-conformer``): how masked inputs are replaced."""

    fill: MaskFill = "noise"
    """'noise': masked (normalised) inputs become N(0, noise_std) noise, as in BEST-RQ; 'token': a learned
    vector in input space (a patch, or a stack of frames), the same as a learned embedding after the linear
    patch embedding."""
    noise_std: float = 0.1
    """Standard deviation of the fill noise."""

    def validate(self) -> None:
        _check(self.noise_std >= 0, "onestep.noise_std must be >= 0")


@dataclass(kw_only=True)
class ConformerConfig:
    """Frame-based Conformer of ``bestrq-conformer``. Width, depth, heads, feed-forward ratio and drop-path
    come from ``encoder`` (same size as the ViT); the frames are the frontend's log-mel frames."""

    subsample: int = 4
    """Mel frames per output frame (stride-2 convolutions; a power of 2). The quantizer reads the
    ``subsample`` frames of an output frame stacked (4 x 128 = 512 values)."""
    subsample_channels: int = 128
    """Channels of the convolutional subsampling."""
    conv_kernel: int = 15
    """Kernel of the depthwise convolution in each block (odd)."""
    mask_span: int = 2
    """Masked spans, in output frames (2 x 156.25 ms at the default frontend)."""

    def validate(self) -> None:
        _check(self.subsample >= 2 and self.subsample & (self.subsample - 1) == 0, "conformer.subsample must be 2, 4, 8 ...")
        _check(self.subsample_channels >= 1, "conformer.subsample_channels must be >= 1")
        _check(self.conv_kernel % 2 == 1, "conformer.conv_kernel must be odd")
        _check(self.mask_span >= 1, "conformer.mask_span must be >= 1")


@dataclass(kw_only=True)
class JEPAConfig:
    """Audio-JEPA: EMA target encoder and latent regression."""

    momentum_start: float = 0.996
    """EMA momentum of the target encoder at the first step."""
    momentum_end: float = 1.0
    """EMA momentum at the last step (train.max_steps)."""
    momentum_schedule: Literal["linear", "cosine"] = "linear"
    """Ramp from momentum_start to momentum_end: linear (I-JEPA) or cosine (BYOL)."""
    loss: Literal["l2", "smooth_l1"] = "l2"
    """Regression loss against the layer-normalised target features: L2 (Audio-JEPA) or smooth-L1 (I-JEPA)."""
    export_encoder: Literal["target", "context"] = "target"
    """Which encoder ``bestrq2 export`` writes (the paper evaluates the target encoder)."""

    def validate(self) -> None:
        _check(0.0 <= self.momentum_start <= self.momentum_end <= 1.0, "jepa: need 0 <= momentum_start <= momentum_end <= 1")


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = 1e-4
    """Peak learning rate (per global batch as configured)."""
    weight_decay: float = 0.05
    """Decoupled weight decay on matrices only (not norms, biases, tokens, positions)."""
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_fraction: float = 0.05
    """Linear warm-up over this fraction of the schedule."""
    min_lr_ratio: float = 0.001
    """Cosine decays to lr * min_lr_ratio."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 disables clipping."""
    ema_decay: float = 0.0
    """Keep an exponential moving average of the encoder's weights with this decay (e.g. 0.999; ramped
    in as min(decay, (1 + step) / (10 + step))); exports take the average. 0: none. Not for audiojepa,
    whose target encoder already is an average."""

    encoder_freeze_fraction: float = 0.0
    """The encoder's learning rate is 0 for this fraction of the steps, then ramps up over a warm-up's
    length: the predictor and heads first learn to read the random encoder (as linear probing before
    fine-tuning), so their random gradients do not overwrite its features. 0: trained from the start."""

    def validate(self) -> None:
        _check(0 <= self.ema_decay < 1, "optim.ema_decay must be in [0, 1)")
        _check(0 <= self.encoder_freeze_fraction < 1, "optim.encoder_freeze_fraction must be in [0, 1)")
        _check(self.lr > 0, "optim.lr must be positive")
        _check(0 <= self.warmup_fraction < 1, "optim.warmup_fraction must be in [0, 1)")
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio must be in [0, 1]")
        _check(self.grad_clip >= 0, "optim.grad_clip must be >= 0")


@dataclass(kw_only=True)
class DataConfig:
    crop_seconds: float = 10.0
    """Random crop length; shorter files are zero-padded and masked out."""
    min_seconds: float = 0.5
    """Files shorter than this are skipped (counted)."""
    num_workers: int = -1
    """DataLoader worker processes per rank. -1 (auto): 0 on a CPU device, 2 on a GPU.

    On a CPU the trainer's compute threads already use every core. A worker process then competes with
    them and costs more than its own CPU time. Without workers the loader runs in the trainer's process
    between steps: on 2 cores `tiny` ran at 96 % of the model-only speed with a decode cache, against 83 %
    with two workers (``benchmarks/README.md``). A run saves the number it used."""
    extensions: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
    shuffle_buffer: int = 256
    """Tar shards only: clips held in each loader worker's shuffle buffer (0: shard order). Memory per
    worker is about shuffle_buffer x one clip's bytes (10 s of 16 kHz PCM16: 320 kB)."""
    prefetch_factor: int = 4
    """Batches each loader worker prepares ahead."""
    worker_nice: int = 0
    """Loader workers raise their nice value by this much (0-19): on a CPU they share with the trainer's
    compute threads, they then take the cores when the trainer does not need them."""
    crop_attempts: int = 1
    """Energy-aware crops: draw up to this many random crops of a clip and keep the first whose share of
    silent 25 ms frames is at most ``max_silent_fraction`` (else the least silent one); the redraws are
    logged (``crop_redraws``). 1: one plain random crop, as the reference."""
    max_silent_fraction: float = 0.5
    """See crop_attempts."""
    silence_db: float = -60.0
    """A 25 ms frame is silent below this RMS level in dBFS."""
    decode_cache: str = ""
    """Folders of files only: a directory where each file is decoded once (to .npy at its own rate) and
    each crop is then a raw read of its bytes, the same samples as decoding every crop; worth it for
    FLAC, OGG and MP3 on machines with few cores. Disk: 32 kB per second of 16 kHz 16-bit audio. "": off."""

    def workers_on(self, device_type: str) -> int:
        """``num_workers``, with auto (-1) resolved for a device of ``device_type`` ("cpu", "cuda", ...)."""
        if self.num_workers >= 0:
            return self.num_workers
        return 0 if device_type == "cpu" else 2

    def validate(self) -> None:
        _check(self.crop_seconds > 0, "data.crop_seconds must be positive")
        _check(self.crop_attempts >= 1, "data.crop_attempts must be >= 1")
        _check(0 <= self.max_silent_fraction <= 1, "data.max_silent_fraction must be in [0, 1]")
        _check(self.num_workers >= -1, "data.num_workers must be >= 0, or -1 (auto)")
        _check(self.shuffle_buffer >= 0, "data.shuffle_buffer must be >= 0")
        _check(self.prefetch_factor >= 1, "data.prefetch_factor must be >= 1")
        _check(0 <= self.worker_nice <= 19, "data.worker_nice must be in [0, 19]")


@dataclass(kw_only=True)
class TrainConfig:
    batch_size: int = 256
    """Global batch size (split evenly over ranks and accumulation steps)."""
    accum_steps: int = 1
    """Gradient accumulation micro-steps per optimiser step."""
    max_steps: int = 200_000
    """Optimiser steps; also the length of the LR schedule."""
    seed: int = 0
    ckpt_every: int = 1000
    log_every: int = 10
    bf16: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    max_bad_steps: int = 10
    """Abort after this many consecutive non-finite losses (each is skipped)."""
    probe_every: int = 0
    """Online probe: every this many steps (and at the end), embed a held-out suite with the current
    encoder and log its kNN accuracy (log.csv and TensorBoard, ``probe/*``); 0 disables it."""
    probe_suite: str = ""
    """Suite folder (the evaluation's manifest format) the online probe reads; empty disables it."""
    probe_tasks: tuple[str, ...] = ()
    """Clip tasks of ``probe_suite`` the online probe scores (empty: every clip task)."""
    probe_clips: int = 300
    """At most this many train and this many test clips per task (a fixed, seeded subset)."""

    def validate(self) -> None:
        _check(self.batch_size >= 1 and self.accum_steps >= 1, "train: batch_size, accum_steps >= 1")
        _check(self.probe_every >= 0 and self.probe_clips >= 1, "train: probe_every >= 0, probe_clips >= 1")
        _check(self.max_steps >= 0, "train.max_steps must be >= 0")
        _check(self.ckpt_every >= 1 and self.log_every >= 1, "train: ckpt_every, log_every >= 1")


@dataclass(kw_only=True)
class ParallelConfig:
    """How the model is spread over devices and made fast; none of it changes the maths of a step,
    so a resumed run may change these settings (all other settings come from the run's checkpoint)."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    """With several ranks: 'ddp' replicates the model; 'fsdp' shards parameters, gradients and optimiser
    state per transformer block (FSDP2 ``fully_shard``). One rank: plain module either way."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass (less memory, ~1/3 more compute)."""
    compile: bool = False
    """``torch.compile`` each transformer block (long first steps; pays off on GPU)."""
    reduce_dtype: Literal["fp32", "bf16"] = "fp32"
    """Gradients between ranks: 'bf16' halves the traffic (DDP: bf16 compression hook; FSDP2: bf16
    reduce-scatter) at some precision; worth it on many GPUs with a small batch per GPU."""

    def validate(self) -> None:
        pass


@dataclass(kw_only=True)
class Config:
    """Everything a run needs; saved as config.json in the run folder and in every checkpoint."""

    preset: str = "base"
    method: str = "bestrq2"
    """Pretraining method, a name in ``bestrq2.objectives.BUILDERS`` (bestrq2, bestrq-vit, bestrq-conformer,
    audiojepa)."""
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    onestep: OneStepConfig = field(default_factory=OneStepConfig)
    conformer: ConformerConfig = field(default_factory=ConformerConfig)
    jepa: JEPAConfig = field(default_factory=JEPAConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def validate(self) -> Config:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "validate"):
                _check_literals(value, f.name)
                value.validate()
        _check(self.train.batch_size % self.train.accum_steps == 0, "train.batch_size must divide by accum_steps")
        _check(
            not (self.method == "audiojepa" and self.optim.ema_decay > 0),
            "optim.ema_decay: audiojepa's target encoder already is an EMA (set jepa.momentum_*)",
        )
        _check(
            self.mix.prob == 0 or self.method in ("bestrq2", "bestrq-vit"),
            f"mix.prob: utterance mixing is for methods bestrq2 and bestrq-vit, not {self.method}",
        )
        q = self.quantizer
        if q.teacher:
            _check(self.method in ("bestrq2", "bestrq-vit"), f"quantizer.teacher is for the ViT code methods, not {self.method}")
            _check("global" not in q.norms, "quantizer.teacher: the 'global' norm is the log-mel's; use 'patch' or 'clip'")
        patch_freq = self.frontend.n_mels if self.method == "bestrq-conformer" else self.frontend.patch_freq
        _check(
            self.method == "audiojepa" or bool(q.teacher) or patch_freq % self.quantizer.bands == 0,
            f"quantizer.bands={self.quantizer.bands} must divide the patch's {patch_freq} mel bands",
        )
        _check(
            self.method == "audiojepa" or max(q.lifters) <= patch_freq,
            f"quantizer lifters keep at most the patch's {patch_freq} mels' coefficients, got {max(q.lifters)}",
        )
        _check(
            self.predictor.contrast_weight == 0 or (self.method == "bestrq2" and self.mask.repeats >= 2),
            "predictor.contrast_weight needs method bestrq2 and mask.repeats >= 2 (the views it compares)",
        )
        if self.method == "bestrq-conformer":  # rotary positions over frames
            _check((self.encoder.width // self.encoder.heads) % 4 == 0, "bestrq-conformer needs a head dim divisible by 4")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return _from_dict(cls, d)


def _check_literals(section: Any, name: str) -> None:
    """Every field typed as a Literal holds one of its values (however it was set)."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        tp = hints[f.name]
        if typing.get_origin(tp) is typing.Literal:
            _check(getattr(section, f.name) in typing.get_args(tp),
                   f"{name}.{f.name} must be one of {typing.get_args(tp)}, got {getattr(section, f.name)!r}")  # fmt: skip


# ----------------------------------------------------------------------------- (de)serialisation


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    for name, value in d.items():
        kwargs[name] = _coerce(hints[name], value, name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value) if isinstance(value, dict) else value
    if origin is tuple:
        return tuple(value)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{name} must be one of {typing.get_args(tp)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def _parse_scalar(tp: Any, text: str, name: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return _coerce(tp, text, name)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        return tuple(_parse_scalar(inner, t, name) for t in text.split(",") if t)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected a boolean, got {text!r}")
    try:
        return tp(text)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: cannot parse {text!r} as {getattr(tp, '__name__', tp)}") from e


def apply_override(cfg: Config, assignment: str) -> None:
    """Apply one ``section.field=value`` override (e.g. ``encoder.depth=6``) in place."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.field=value")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    obj: Any = cfg
    for p in parts[:-1]:
        if not hasattr(obj, p):
            raise ConfigError(f"unknown config section {p!r} in {key!r}")
        obj = getattr(obj, p)
    leaf = parts[-1]
    if not dataclasses.is_dataclass(obj) or leaf not in {f.name for f in dataclasses.fields(obj)}:
        raise ConfigError(f"unknown config field {key!r}")
    hint = typing.get_type_hints(type(obj))[leaf]
    setattr(obj, leaf, _parse_scalar(hint, text.strip(), key))


# ----------------------------------------------------------------------------- presets

PRESETS: dict[str, typing.Callable[[], Config]] = {}


def register(fn: typing.Callable[[], Config]) -> typing.Callable[[], Config]:
    PRESETS[fn.__name__.replace("_", "-")] = fn
    return fn


@register
def base() -> Config:
    """The reference configuration: ViT-B encoder, 4-block 768-wide predictor, 8192x16 codebook."""
    return Config(preset="base")


@register
def small() -> Config:
    """ViT-S width encoder and a narrower predictor."""
    c = base()
    c.preset = "small"
    c.encoder.width, c.encoder.heads = 384, 6
    c.predictor.width, c.predictor.heads = 384, 6
    return c


@register
def tiny_ref() -> Config:
    """The reference recipe (16x16 patches, 2-D positions, mask 0.4-0.6) at a size that trains on a laptop
    CPU: the tests' starting point and the ablation's baseline."""
    c = small()
    c.preset = "tiny-ref"
    c.encoder.width, c.encoder.depth, c.encoder.heads, c.encoder.drop_path = 192, 4, 3, 0.0
    c.predictor.width, c.predictor.depth, c.predictor.heads = 128, 2, 2
    c.quantizer.codebook_size = 1024
    c.conformer.subsample_channels = 64
    c.optim.lr = 5e-4
    c.train.batch_size = 16
    c.train.max_steps = 300
    c.train.ckpt_every = 100
    c.data.crop_seconds = 5.0
    return c


def _recipe(c: Config) -> Config:
    """The changes that made pretraining beat its random-init floor at demo scale (results/recipe/):
    full-band 128 x 4 patches (one token per 156 ms, no frequency axis to pool) with rotary positions over
    time, blocks that start near the identity (LayerScale 0.1), 80 % masking, RMSNorm + SwiGLU +
    QK-norm blocks (the predictor follows), and sub-band targets: 8 mel bands of 16 mels, each with
    its own 256-code codebooks, so that a full-band token's targets keep where its energy sits. Each band
    has two codebooks: one codes the band as it is (pitch included), the other its spectral envelope
    (``quantizer.codebook_lifters=0,12``), whose codes carry what the raw ones miss about timbre and words."""
    c.frontend.patch_freq, c.frontend.patch_time = c.frontend.n_mels, 4
    c.encoder.positions = "rope"
    c.encoder.layer_scale = 0.1
    c.encoder.norm, c.encoder.mlp, c.encoder.qk_norm = "rmsnorm", "swiglu", True
    c.mask.ratio_min, c.mask.ratio_max = 0.75, 0.85
    c.quantizer.bands, c.quantizer.codebook_size = 8, 256
    c.quantizer.num_codebooks, c.quantizer.codebook_lifters = 2, (0, 12)
    return c


@register
def tiny() -> Config:
    """The demo recipe on a laptop CPU: ``tiny-ref``'s size with :func:`_recipe`; 4000 steps (about the
    CPU time of 5000 steps with LayerNorm + GELU blocks: 12-13 min on 2 cores)."""
    c = _recipe(tiny_ref())
    c.preset = "tiny"
    c.train.max_steps = 4000
    c.train.ckpt_every = 500
    return c


@register
def small_2x() -> Config:
    """The ``small`` encoder (384 wide, 12 blocks) with the recipe of ``tiny``: a GPU run of minutes."""
    c = _recipe(small())
    c.preset = "small-2x"
    return c


@register
def base_2x() -> Config:
    """The ``base`` encoder (ViT-B: 768 wide, 12 blocks) with the recipe of ``tiny``, for GPU users; ``base``
    stays the paper's reference configuration."""
    c = _recipe(base())
    c.preset = "base-2x"
    return c


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()
