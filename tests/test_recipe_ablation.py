"""scripts/recipe_ablation.py: the results table, whose bracketed figures are per seed in seed order."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "recipe_ablation.py"
spec = importlib.util.spec_from_file_location("recipe_ablation", SCRIPT)
ra = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ra)


def run(seed: int, probe: float, knn: float, rnd: float) -> dict:
    return {"variant": "t+bands8", "seed": seed, "steps": 1000, "train_s": 120.0,
            "pretrained": {"mlp": probe, "knn": knn}, "random": {"mlp": rnd, "knn": rnd}}  # fmt: skip


def test_table_lists_seeds_in_seed_order_whatever_order_the_runs_finished():
    # seed 1 finished first, so it comes first in the results file (several processes share it)
    results = {"logmel": {"mlp": 0.5, "knn": 0.4}, "t+bands8/seed1": run(1, 0.60, 0.55, 0.50), "t+bands8/seed0": run(0, 0.52, 0.51, 0.48)}
    row = next(line for line in ra.table(results).splitlines() if line.startswith("| t+bands8 "))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[3] == "0.560 (0.520, 0.600)" and cells[4] == "0.490 (0.480, 0.500)"
    assert cells[5] == "+0.070" and cells[6] == "0.530 (0.510, 0.550)"
