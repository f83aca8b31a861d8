"""A bestrq2 export as an X-ARES encoder: one file that X-ARES's runner loads.

X-ARES imports this file by path and builds the one class whose name ends in ``Encoder`` with no
arguments, so the model folder comes from an environment variable:

    export BESTRQ2_MODEL_DIR=/path/to/export        # config.json + model.safetensors
    python -m xares.run examples/xares_encoder.py src/tasks/*.py   # from a checkout of X-ARES

(run it from a folder where ``examples/xares_encoder.py`` is importable as ``examples.xares_encoder``,
e.g. copy this file next to X-ARES's own ``example/`` folder). Optional: BESTRQ2_LAYER=N takes
block N's output instead of the final one.

The encoder takes a zero-padded float batch [B, T] at 16 kHz and returns [B, T', D] frames every
``hop_size_in_ms``; long audio is chunked inside. Only ``bestrq2`` is imported as a module, so this
file defines exactly one name ending in ``Encoder``, as X-ARES requires.
"""

from __future__ import annotations

import os

import torch

import bestrq2


class BestRQ2XaresEncoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        model_dir = os.environ.get("BESTRQ2_MODEL_DIR")
        if not model_dir:
            raise ValueError(
                "set BESTRQ2_MODEL_DIR to a bestrq2 export folder (config.json + model.safetensors)"
            )
        layer = os.environ.get("BESTRQ2_LAYER")
        self.layer = None if layer in (None, "") else int(layer)
        self.model = bestrq2.load_encoder(model_dir)
        self.sampling_rate = self.model.sampling_rate
        self.output_dim = self.model.output_dim
        self.hop_size_in_ms = self.model.hop_size_in_ms

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, T] float at 16 kHz -> [B, T', output_dim]."""
        return self.model(audio, layer=self.layer)
