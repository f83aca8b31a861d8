"""BEST-RQ-2: contextualize (encoder on visible patches) then predict (predictor at masked ones).

forward: waveform -> frontend -> quantizer codes of the masked raw patches (targets)
         encoder(visible patches) -> predictor(+ mask tokens) -> one linear head per codebook
         -> cross-entropy on real (non-padding) masked patches only.
Optional extra terms: (``predictor.regress_weight``) a linear head on the predictor also regresses each
masked patch (MAE's target; ``predictor.code_weight=0`` drops the codes); (``predictor.clip_weight``) a clip
head predicts the same codes from the mean of the encoder's visible outputs over its real tokens, with no
position; and (``predictor.contrast_weight``, with ``mask.repeats`` >= 2) that mean, projected, has to pick
out the same clip's other views (InfoNCE).
The frontend, encoder, predictor and quantizer are built outside and passed in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bestrq2.frontend import Frontend
from bestrq2.masking import Masks
from bestrq2.mixing import MixPlan, mixed_feats
from bestrq2.models.ema import WeightEMA
from bestrq2.models.encoder import ViTEncoder
from bestrq2.models.predictor import Predictor
from bestrq2.objectives.views import ViewProjector, mask_repeats, repeat_views, view_contrast_loss
from bestrq2.quantizer import RandomProjectionQuantizer, clip_mean, standardise


def gather_rows(x: Tensor, ids: Tensor) -> Tensor:
    """x [B, N, P], ids [B, M] -> [B, M, P]."""
    return torch.gather(x, 1, ids[..., None].expand(-1, -1, x.shape[-1]))


def real_rows(x: Tensor, masks: Masks) -> Tensor:
    """[B, M, ...] values at the masked slots -> [n, ...] for the slots that hold real audio."""
    rows = x.flatten(0, 1)
    return rows.index_select(0, masks.scored_index()) if masks.any_padding else rows


def masked_codes(quantizer: RandomProjectionQuantizer, feats: dict, masks: Masks) -> Tensor:
    """The targets of any code-predicting method: codes [n, C] of the real masked raw patches (or of the
    teacher's features of them), each with its clip's mean beside it when a codebook uses the 'clip' norm."""
    x = quantizer.inputs(feats)  # [B, N, P]
    patches = real_rows(gather_rows(x, masks.ids_mask), masks)
    if not quantizer.needs_clip_mean:
        return quantizer(patches)
    mean = clip_mean(x, feats["padding"]).expand(-1, masks.ids_mask.shape[1], -1)  # [B, M, P]
    return quantizer(patches, real_rows(mean, masks))


class CodeHeads(nn.Module):
    """One Linear(width -> codebook_size) per codebook: [..., width] -> [..., C, V]."""

    def __init__(self, width: int, num_codebooks: int, codebook_size: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(width, codebook_size) for _ in range(num_codebooks))

    def forward(self, h: Tensor) -> Tensor:
        return torch.stack([head(h) for head in self.heads], dim=-2)


def patch_regression_loss(pred: Tensor, patches: Tensor) -> Tensor:
    """pred, patches [n, P] -> mean squared error against each patch normalised over its own values
    (MAE's normalised-pixel target)."""
    return F.mse_loss(pred.float(), standardise(patches.float()))


def code_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """logits [n, C, V], targets [n, C] -> mean cross-entropy over codebooks, accuracy."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    acc = (logits.argmax(-1) == targets).float().mean()
    return loss, acc.detach()


class BestRQ2(nn.Module):
    def __init__(
        self,
        frontend: Frontend,
        encoder: ViTEncoder,
        predictor: Predictor,
        quantizer: RandomProjectionQuantizer,
        heads: CodeHeads,
        ema: WeightEMA | None = None,
        clip_heads: CodeHeads | None = None,
        clip_weight: float = 0.0,
        projector: ViewProjector | None = None,
        contrast: tuple[float, float] = (0.0, 0.1),
        regress_head: nn.Linear | None = None,
        weights: tuple[float, float] = (1.0, 0.0),
    ):
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        self.predictor = predictor
        self.quantizer = quantizer
        self.heads = heads
        self.ema = ema  # optional average of the encoder's weights (optim.ema_decay)
        self.clip_heads = clip_heads  # optional clip-level prediction (predictor.clip_weight)
        self.clip_weight = clip_weight
        self.projector = projector  # optional contrastive term across a clip's masks (predictor.contrast_weight)
        self.contrast_weight, self.contrast_temperature = contrast
        self.regress_head = regress_head  # optional masked-patch regression (predictor.regress_weight)
        self.code_weight, self.regress_weight = weights

    def update_target(self, step: int) -> None:
        """After optimiser step ``step``: move the weight average (if any) towards the encoder."""
        if self.ema is not None:
            self.ema.update(self.encoder, step)

    def forward(self, wav: Tensor, lengths: Tensor, masks: Masks, mix: MixPlan | None = None) -> dict[str, Tensor]:
        fe = self.frontend.cfg
        feats = mixed_feats(self.frontend(wav, lengths), mix, fe.norm_mean, fe.norm_std)  # encoder input only
        feats = repeat_views(self.quantizer.with_inputs(feats), masks, wav.shape[0])  # one row per mask
        grid = feats["grid"]
        targets = masked_codes(self.quantizer, feats, masks)  # [n, C]
        keep_pad = masks.keep_pad if masks.any_padding else None
        context = self.encoder(feats["patches"], grid, ids=masks.ids_keep, padding=keep_pad)  # [B, K, D]
        hidden = self.predictor(context, masks, grid)  # [B, M, W]
        hidden = real_rows(hidden, masks)  # [n, W]
        code, acc = code_loss(self.heads(hidden), targets)  # heads: [n, C, V]
        out = {"loss": self.code_weight * code, "acc": acc, "targets": targets.detach()}
        if self.code_weight != 1.0:
            out["code_loss"] = code.detach()
        if self.regress_head is not None:
            patches = real_rows(gather_rows(feats["raw"], masks.ids_mask), masks)  # [n, P] dB
            regress = patch_regression_loss(self.regress_head(hidden), patches)
            out["loss"] = out["loss"] + self.regress_weight * regress
            out["regress_loss"] = regress.detach()
        if self.clip_heads is not None:
            logp = self.clip_heads(clip_mean(context, keep_pad)[:, 0]).float().log_softmax(-1)  # [B, C, V]
            B, M = masks.ids_mask.shape
            rows = real_rows(torch.arange(B, device=logp.device)[:, None].expand(B, M), masks)  # [n] clip of each slot
            books = torch.arange(targets.shape[1], device=logp.device)
            clip_loss = -logp[rows[:, None], books, targets].mean()  # one prediction per clip, every masked code
            out["loss"] = out["loss"] + self.clip_weight * clip_loss
            out["clip_loss"] = clip_loss.detach()
        if self.projector is not None:
            z = self.projector(clip_mean(context, keep_pad)[:, 0])  # [R * B, d]: one per view
            contrast = view_contrast_loss(z, mask_repeats(masks, wav.shape[0]), self.contrast_temperature)
            out["loss"] = out["loss"] + self.contrast_weight * contrast
            out["contrast_loss"] = contrast.detach()
        return out
