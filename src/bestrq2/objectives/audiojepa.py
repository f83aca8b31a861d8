"""Audio-JEPA: predict, in latent space, what an EMA target encoder says about the masked patches.

forward: waveform -> frontend
         context encoder(visible patches) -> predictor(+ mask tokens) -> Linear(width -> D)   [B, M, D]
         target encoder(all patches), no gradient -> layer norm -> rows at the masked patches  [B, M, D]
         -> L2 (or smooth-L1) on real masked patches.
The target encoder is a frozen copy of the context encoder, moved towards it after every optimiser
step by ``update_target`` (one visible call in the training loop). After pretraining the predictor
is dropped and the target encoder is exported (or the context encoder, ``jepa.export_encoder``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bestrq2.config import JEPAConfig
from bestrq2.frontend import Frontend
from bestrq2.masking import Masks
from bestrq2.models.ema import ema_update, frozen_copy, momentum_at
from bestrq2.models.encoder import ViTEncoder
from bestrq2.models.predictor import Predictor
from bestrq2.objectives.bestrq2 import gather_rows, real_rows
from bestrq2.objectives.views import mask_repeats, repeat_views, tile


class AudioJEPA(nn.Module):
    def __init__(
        self,
        frontend: Frontend,
        encoder: ViTEncoder,
        predictor: Predictor,
        head: nn.Linear,
        cfg: JEPAConfig,
        total_steps: int,
    ):
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        self.target_encoder = frozen_copy(encoder)
        self.predictor = predictor
        self.head = head
        self.cfg = cfg
        self.total_steps = total_steps

    @torch.no_grad()
    def update_target(self, step: int) -> float:
        """EMA update after optimiser step ``step`` (0-based); returns the momentum used."""
        m = momentum_at(step, self.total_steps, self.cfg)
        ema_update(self.target_encoder, self.encoder, m)
        return m

    def forward(self, wav: Tensor, lengths: Tensor, masks: Masks) -> dict[str, Tensor]:
        feats = self.frontend(wav, lengths)
        grid, repeats = feats["grid"], mask_repeats(masks, wav.shape[0])
        with torch.no_grad():  # the teacher reads each clip once, whatever the number of masks
            padding = feats["padding"] if masks.any_padding else None
            self.target_encoder.eval()  # no drop-path in the teacher
            target = self.target_encoder(feats["patches"], grid, padding=padding)  # [B, N, D]
            target = F.layer_norm(target.float(), target.shape[-1:])
            target = real_rows(gather_rows(tile(target, repeats), masks.ids_mask), masks)  # [n, D]
        feats = repeat_views(feats, masks, wav.shape[0])  # one row per mask
        keep_pad = masks.keep_pad if masks.any_padding else None
        context = self.encoder(feats["patches"], grid, ids=masks.ids_keep, padding=keep_pad)  # [B, K, D]
        pred = self.head(real_rows(self.predictor(context, masks, grid), masks)).float()  # [n, D]
        if self.cfg.loss == "l2":
            loss = F.mse_loss(pred, target)
        else:
            loss = F.smooth_l1_loss(pred, target)
        cos = F.cosine_similarity(pred.detach(), target, dim=-1).mean()  # logged as "acc"
        return {"loss": loss, "acc": cos}
