"""bestrq2: BEST-RQ-2 (contextualize-then-predict) self-supervised audio representations."""

__version__ = "0.1.0"
