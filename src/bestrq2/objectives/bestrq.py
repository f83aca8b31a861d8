"""BEST-RQ, one step, on the ViT: every patch goes through the encoder, masked ones replaced.

forward: waveform -> frontend -> quantizer codes of the masked raw patches (targets)
         masked normalised patches -> noise N(0, 0.1) (or a learned token) -> encoder(all N patches)
         -> linear head(s) at the masked positions -> cross-entropy on real masked patches.
This is the one-step baseline of the BEST-RQ-2 paper: same frontend, quantizer, masks and encoder,
but the encoder itself must predict (no predictor), and it reads N tokens instead of K.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bestrq2.config import OneStepConfig
from bestrq2.frontend import Frontend
from bestrq2.masking import Masks
from bestrq2.mixing import MixPlan, mixed_feats
from bestrq2.models.ema import WeightEMA
from bestrq2.models.encoder import ViTEncoder
from bestrq2.objectives.bestrq2 import CodeHeads, code_loss, gather_rows, masked_codes, real_rows
from bestrq2.objectives.views import repeat_views
from bestrq2.quantizer import RandomProjectionQuantizer


class MaskFill(nn.Module):
    """Replace the masked rows of an input sequence: [B, N, P] -> [B, N, P].

    'noise' draws N(0, noise_std) per value (BEST-RQ, on normalised features); 'token' writes a learned
    vector. In input space a learned vector is as expressive as a learned embedding: the patch embedding
    is an affine map onto the token space.
    """

    def __init__(self, cfg: OneStepConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        self.mask_token = nn.Parameter(torch.zeros(dim)) if cfg.fill == "token" else None

    def forward(self, x: Tensor, ids_mask: Tensor) -> Tensor:
        B, M = ids_mask.shape
        if self.mask_token is not None:
            fill = self.mask_token.to(x.dtype).expand(B, M, -1)  # [B, M, P]
        else:
            fill = torch.randn(B, M, x.shape[-1], device=x.device, dtype=x.dtype) * self.cfg.noise_std
        return x.scatter(1, ids_mask[..., None].expand(-1, -1, x.shape[-1]), fill)


class BestRQ(nn.Module):
    def __init__(
        self,
        frontend: Frontend,
        encoder: ViTEncoder,
        fill: MaskFill,
        quantizer: RandomProjectionQuantizer,
        heads: CodeHeads,
        ema: WeightEMA | None = None,
    ):
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        self.fill = fill
        self.quantizer = quantizer
        self.heads = heads
        self.ema = ema  # optional average of the encoder's weights (optim.ema_decay)

    def update_target(self, step: int) -> None:
        """After optimiser step ``step``: move the weight average (if any) towards the encoder."""
        if self.ema is not None:
            self.ema.update(self.encoder, step)

    def forward(self, wav: Tensor, lengths: Tensor, masks: Masks, mix: MixPlan | None = None) -> dict[str, Tensor]:
        fe = self.frontend.cfg
        feats = mixed_feats(self.frontend(wav, lengths), mix, fe.norm_mean, fe.norm_std)  # encoder input only
        feats = repeat_views(self.quantizer.with_inputs(feats), masks, wav.shape[0])  # one row per mask
        targets = masked_codes(self.quantizer, feats, masks)  # [n, C]
        patches = self.fill(feats["patches"], masks.ids_mask)  # [B, N, P]
        padding = feats["padding"] if masks.any_padding else None
        tokens = self.encoder(patches, feats["grid"], padding=padding)  # [B, N, D]: all tokens
        logits = self.heads(real_rows(gather_rows(tokens, masks.ids_mask), masks))  # [n, C, V]
        loss, acc = code_loss(logits, targets)
        return {"loss": loss, "acc": acc, "targets": targets.detach()}
