"""Frozen-embedding evaluation with the X-ARES protocol, baselines, and X-ARES / XARES-LLM adapters.

    bestrq2 evaluate EXPORT_DIR --suite data/suite --out results/tiny             # one model
    bestrq2 evaluate EXPORT_DIR --baselines --suite data/suite --out results      # + random-init + log-mel
    bestrq2 compare results/a results/b --out results/ab                          # side by side

See runner.py for the steps, tasks.py for the suite format, models.py for what MODEL may be.
"""

from __future__ import annotations

from bestrq2.evaluation.runner import EvalConfig, compare_with_baselines, evaluate, evaluate_many

__all__ = ["EvalConfig", "compare_with_baselines", "evaluate", "evaluate_many"]
