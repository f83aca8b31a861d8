"""BEST-RQ, one step, on a frame-based Conformer (as in the BEST-RQ paper).

forward: waveform -> frontend as frames: stacked frames [B, T', subsample * n_mels] (normalised and dB)
         -> quantizer codes of the masked raw stacks (targets)
         masked stacks (spans of output frames) -> noise N(0, 0.1) -> back to log-mel [B, F, T]
         -> Conformer (4x convolutional subsampling, blocks) [B, T', D]
         -> linear head(s) at the masked frames -> cross-entropy on real masked frames.
Masks are data as for the ViT: index tensors over the output frame axis (``sample_span_masks``).
"""

from __future__ import annotations

from torch import Tensor, nn

from bestrq2.frontend import Frontend, unpatchify
from bestrq2.masking import Masks
from bestrq2.models.conformer import Conformer
from bestrq2.models.ema import WeightEMA
from bestrq2.objectives.bestrq import MaskFill
from bestrq2.objectives.bestrq2 import CodeHeads, code_loss, gather_rows, masked_codes, real_rows
from bestrq2.objectives.views import repeat_views
from bestrq2.quantizer import RandomProjectionQuantizer


class BestRQConformer(nn.Module):
    def __init__(
        self,
        frontend: Frontend,
        encoder: Conformer,
        fill: MaskFill,
        quantizer: RandomProjectionQuantizer,
        heads: CodeHeads,
        ema: WeightEMA | None = None,
    ):
        super().__init__()
        self.frontend = frontend  # a frame frontend (``conformer.frame_frontend``)
        self.encoder = encoder
        self.fill = fill
        self.quantizer = quantizer
        self.heads = heads
        self.ema = ema  # optional average of the encoder's weights (optim.ema_decay)

    def update_target(self, step: int) -> None:
        """After optimiser step ``step``: move the weight average (if any) towards the encoder."""
        if self.ema is not None:
            self.ema.update(self.encoder, step)

    def forward(self, wav: Tensor, lengths: Tensor, masks: Masks) -> dict[str, Tensor]:
        fe = self.frontend.cfg
        feats = repeat_views(self.frontend(wav, lengths), masks, wav.shape[0])  # one row per mask
        targets = masked_codes(self.quantizer, feats, masks)  # [n, C]
        stacks = self.fill(feats["patches"], masks.ids_mask)  # [B, T', s * F]
        mel = unpatchify(stacks, feats["grid"], fe.patch_freq, fe.patch_time)  # [B, F, T]
        padding = feats["padding"] if masks.any_padding else None
        frames = self.encoder(mel, padding)  # [B, T', D]
        logits = self.heads(real_rows(gather_rows(frames, masks.ids_mask), masks))  # [n, C, V]
        loss, acc = code_loss(logits, targets)
        return {"loss": loss, "acc": acc, "targets": targets.detach()}
