"""Pretraining objectives, registered by method name; each is built from shared parts."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from bestrq2.config import Config, ConfigError
from bestrq2.encoder import ViTEncoder
from bestrq2.frontend import Frontend
from bestrq2.objectives.bestrq2 import BestRQ2, CodeHeads
from bestrq2.predictor import Predictor
from bestrq2.quantizer import RandomProjectionQuantizer

BUILDERS: dict[str, Callable[[Config], nn.Module]] = {}


def register(name: str) -> Callable[[Callable[[Config], nn.Module]], Callable[[Config], nn.Module]]:
    def deco(fn: Callable[[Config], nn.Module]) -> Callable[[Config], nn.Module]:
        BUILDERS[name] = fn
        return fn

    return deco


@register("bestrq2")
def build_bestrq2(cfg: Config) -> BestRQ2:
    fe = cfg.frontend
    encoder = ViTEncoder(cfg.encoder, fe.patch_dim)
    predictor = Predictor(cfg.predictor, cfg.encoder.width, cfg.encoder.positions)
    quantizer = RandomProjectionQuantizer(cfg.quantizer, fe.patch_dim, fe)
    heads = CodeHeads(cfg.predictor.width, cfg.quantizer.num_codebooks, cfg.quantizer.codebook_size)
    return BestRQ2(Frontend(fe), encoder, predictor, quantizer, heads)


def build_objective(cfg: Config) -> nn.Module:
    if cfg.method not in BUILDERS:
        raise ConfigError(f"unknown method {cfg.method!r}; choose from {sorted(BUILDERS)}")
    return BUILDERS[cfg.method](cfg)
