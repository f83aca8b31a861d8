"""bestrq2: BEST-RQ-2 (contextualize-then-predict) self-supervised audio representations."""

__version__ = "0.1.0"

from bestrq2.export import export as export_encoder  # noqa: E402
from bestrq2.export import load_encoder  # noqa: E402
from bestrq2.inference import BestRQ2Encoder  # noqa: E402

__all__ = ["BestRQ2Encoder", "export_encoder", "load_encoder", "__version__"]
