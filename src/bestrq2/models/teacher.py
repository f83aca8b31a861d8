"""A frozen encoder whose token features replace the log-mel patches as the quantizer's input
(``quantizer.teacher``).

BEST-RQ quantises the input itself; HuBERT's later iterations instead cluster the features of the
previous iteration's model, which already encode more than the spectrum. A teacher here is an export
folder of an earlier run (same frontend, ViT encoder). It reads each clip's clean, normalised patches,
all of them and unmasked, and its output at every token (the final normed features, or one block's raw
output) goes through the same frozen random projection and codebooks. Its weights are frozen, kept in
checkpoints (under ``quantizer.teacher.``) and never exported.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from bestrq2.config import ConfigError, FrontendConfig


class FrozenTeacher(nn.Module):
    def __init__(self, path: str, frontend: FrontendConfig, layer: int = -1, bands: int = 1):
        super().__init__()
        from bestrq2.export import load_encoder
        from bestrq2.inference import BestRQ2Encoder

        try:
            enc = load_encoder(path, dtype="fp32")  # whatever precision the export asks for inference
        except FileNotFoundError as e:
            raise ConfigError(f"quantizer.teacher: {e}") from e
        if not isinstance(enc, BestRQ2Encoder):
            raise ConfigError(f"quantizer.teacher: {path} is not a ViT encoder export")
        mine, theirs = dataclasses.asdict(frontend), dataclasses.asdict(enc.frontend_cfg)
        differ = sorted(k for k in mine if k != "chunk_seconds" and mine[k] != theirs.get(k))
        if differ:
            raise ConfigError(f"quantizer.teacher: {path} has another frontend ({', '.join(differ)} differ)")
        depth = len(enc.encoder.blocks)
        if not -1 <= layer < depth:
            raise ConfigError(f"quantizer.teacher_layer must be -1 (final output) or a block in 0..{depth - 1}")
        if enc.encoder_cfg.width % bands:
            raise ConfigError(f"quantizer.bands={bands} does not divide the teacher's width {enc.encoder_cfg.width}")
        self.encoder = enc.encoder.requires_grad_(False)
        self.layer = layer
        self.width = enc.encoder_cfg.width
        self.train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        return super().train(False)  # always in eval mode: no dropout or drop-path in the targets

    @torch.no_grad()
    def forward(self, patches: Tensor, grid: tuple[int, int], padding: Tensor) -> Tensor:
        """Normalised patches [B, N, P] of whole clips -> features [B, N, width], in float32 whatever the
        step's autocast: the targets must not depend on the training precision."""
        with torch.autocast(device_type=patches.device.type, enabled=False):
            final, inter = self.encoder.forward_intermediates(
                patches.float(), grid, padding=padding, layers=None if self.layer < 0 else [self.layer]
            )
        return (final if self.layer < 0 else inter[0]).float()
