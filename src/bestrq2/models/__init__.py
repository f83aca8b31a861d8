"""Model parts: the ViT encoder, the Conformer, the BEST-RQ-2 predictor, their blocks and positions,
and the EMA copy Audio-JEPA's target uses. No training, data or benchmark code lives here."""

from bestrq2.models.conformer import Conformer
from bestrq2.models.encoder import ViTEncoder
from bestrq2.models.predictor import Predictor

__all__ = ["Conformer", "Predictor", "ViTEncoder"]
