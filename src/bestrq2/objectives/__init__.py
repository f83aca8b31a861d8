"""Pretraining objectives, registered by method name; each is built from shared parts.

  bestrq2           encoder on visible patches, predictor fills the masked ones, codes (two steps)
  bestrq-vit        one-step BEST-RQ: all patches (masked ones noised) through the ViT, codes
  bestrq-conformer  one-step BEST-RQ on log-mel frames with a Conformer, codes
  audiojepa         encoder on visible patches, predictor regresses an EMA target encoder's features

``sample_batch_masks`` draws the masks of a batch for any method (patches, or spans of frames), with
``mask.repeats`` masks per clip; each objective then repeats its clips' features to match
(:func:`bestrq2.objectives.views.repeat_views`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bestrq2.config import Config, ConfigError
from bestrq2.frontend import Frontend, token_padding
from bestrq2.masking import Masks, sample_masks, sample_span_masks, sample_time_masks
from bestrq2.models.conformer import Conformer, frame_frontend
from bestrq2.models.ema import WeightEMA
from bestrq2.models.encoder import ViTEncoder, block_style
from bestrq2.models.predictor import Predictor
from bestrq2.models.teacher import FrozenTeacher
from bestrq2.objectives.audiojepa import AudioJEPA
from bestrq2.objectives.bestrq import BestRQ, MaskFill
from bestrq2.objectives.bestrq2 import BestRQ2, CodeHeads
from bestrq2.objectives.bestrq_conformer import BestRQConformer
from bestrq2.objectives.views import ViewProjector
from bestrq2.quantizer import RandomProjectionQuantizer

BUILDERS: dict[str, Callable[[Config], nn.Module]] = {}
FRAME_METHODS = {"bestrq-conformer"}
"""Methods whose encoder is frame-based (Conformer) rather than a ViT over patches."""


def register(name: str) -> Callable[[Callable[[Config], nn.Module]], Callable[[Config], nn.Module]]:
    def deco(fn: Callable[[Config], nn.Module]) -> Callable[[Config], nn.Module]:
        BUILDERS[name] = fn
        return fn

    return deco


def _code_heads(cfg: Config, width: int) -> CodeHeads:
    return CodeHeads(width, cfg.quantizer.num_targets, cfg.quantizer.codebook_size)


def _quantizer(cfg: Config) -> RandomProjectionQuantizer:
    """The targets' quantizer of a ViT code method, with its frozen teacher when ``quantizer.teacher`` names one."""
    fe, q = cfg.frontend, cfg.quantizer
    teacher = FrozenTeacher(q.teacher, fe, q.teacher_layer, q.bands) if q.teacher else None
    return RandomProjectionQuantizer(q, fe.patch_dim, fe, teacher)


def _weight_ema(cfg: Config, encoder: nn.Module) -> WeightEMA | None:
    return WeightEMA(encoder, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None


@register("bestrq2")
def build_bestrq2(cfg: Config) -> BestRQ2:
    fe = cfg.frontend
    encoder = ViTEncoder(cfg.encoder, fe.patch_dim)
    predictor = Predictor(cfg.predictor, cfg.encoder.width, cfg.encoder.positions, block_style(cfg.encoder))
    quantizer = _quantizer(cfg)
    clip_heads = _code_heads(cfg, cfg.encoder.width) if cfg.predictor.clip_weight > 0 else None
    heads = _code_heads(cfg, cfg.predictor.width)
    pc = cfg.predictor
    projector = ViewProjector(cfg.encoder.width) if pc.contrast_weight > 0 else None
    regress_head = nn.Linear(pc.width, fe.patch_dim) if pc.regress_weight > 0 else None
    return BestRQ2(
        Frontend(fe), encoder, predictor, quantizer, heads, _weight_ema(cfg, encoder), clip_heads, pc.clip_weight,
        projector, (pc.contrast_weight, pc.contrast_temperature), regress_head, (pc.code_weight, pc.regress_weight),
    )  # fmt: skip


@register("bestrq-vit")
def build_bestrq_vit(cfg: Config) -> BestRQ:
    fe = cfg.frontend
    encoder = ViTEncoder(cfg.encoder, fe.patch_dim)
    quantizer = _quantizer(cfg)
    fill = MaskFill(cfg.onestep, fe.patch_dim)
    return BestRQ(Frontend(fe), encoder, fill, quantizer, _code_heads(cfg, cfg.encoder.width), _weight_ema(cfg, encoder))


@register("bestrq-conformer")
def build_bestrq_conformer(cfg: Config) -> BestRQConformer:
    fe = frame_frontend(cfg.frontend, cfg.conformer)
    encoder = Conformer(cfg.encoder, cfg.conformer, fe.n_mels)
    quantizer = RandomProjectionQuantizer(cfg.quantizer, fe.patch_dim, fe)  # stacked frames: s x n_mels
    fill = MaskFill(cfg.onestep, fe.patch_dim)
    return BestRQConformer(
        Frontend(fe), encoder, fill, quantizer, _code_heads(cfg, cfg.encoder.width), _weight_ema(cfg, encoder)
    )


@register("audiojepa")
def build_audiojepa(cfg: Config) -> AudioJEPA:
    fe = cfg.frontend
    encoder = ViTEncoder(cfg.encoder, fe.patch_dim)
    predictor = Predictor(cfg.predictor, cfg.encoder.width, cfg.encoder.positions, block_style(cfg.encoder))
    head = nn.Linear(cfg.predictor.width, cfg.encoder.width)
    return AudioJEPA(Frontend(fe), encoder, predictor, head, cfg.jepa, cfg.train.max_steps)


def build_objective(cfg: Config) -> nn.Module:
    if cfg.method not in BUILDERS:
        raise ConfigError(f"unknown method {cfg.method!r}; choose from {sorted(BUILDERS)}")
    return BUILDERS[cfg.method](cfg)


def sample_batch_masks(
    cfg: Config,
    lengths: Tensor,
    num_samples: int,
    generator: torch.Generator,
    rows: list[torch.Generator] | None = None,
) -> Masks:
    """Masks for a batch of clips of ``lengths`` samples padded to ``num_samples``: random patches of
    the token grid, or (frame-based methods) random spans of output frames. ``rows``: one generator
    per example (see :func:`bestrq2.masking.slot_generators`).

    With ``mask.repeats`` = R > 1 the masks have R x B rows, repeat-major (row r * B + b masks clip b),
    and ``rows`` needs R x B generators (:func:`bestrq2.masking.repeat_slots` numbers them)."""
    lengths = lengths.repeat(cfg.mask.repeats)
    if cfg.method in FRAME_METHODS:
        padding = token_padding(frame_frontend(cfg.frontend, cfg.conformer), lengths, num_samples)  # [B, T']
        return sample_span_masks(padding, cfg.mask, cfg.conformer.mask_span, generator, rows)
    padding = token_padding(cfg.frontend, lengths, num_samples)  # [B, N]
    if cfg.mask.kind == "time":
        grid = (cfg.frontend.freq_patches, cfg.frontend.time_patches(num_samples))
        return sample_time_masks(padding, grid, cfg.mask, cfg.mask.span, generator, rows)
    return sample_masks(padding, cfg.mask, generator, rows)
