"""How far pretraining moved the encoder from its initial weights, layer by layer.

    python scripts/weight_drift.py runs/compare_methods/tiny/bestrq2-seed0 runs/ablation/tplr1e3/seed0

The initial weights are rebuilt exactly as `pretrain` built them (``torch.manual_seed(train.seed)``,
then the method's model from the run's saved config). For the patch embedding and each block it
prints ||W - W0|| / ||W0|| over the weight matrices (biases, norms and LayerScale gains left out),
and the mean |gamma| of each block's attention LayerScale where the blocks have one.
"""

from __future__ import annotations

import argparse

import torch

from bestrq2.config import Config
from bestrq2.objectives import build_objective
from bestrq2.training.checkpoint import load_checkpoint


def drift(run: str) -> tuple[dict[str, float], list[float]]:
    ck = load_checkpoint(run)
    cfg = Config.from_dict(ck["config"])
    torch.manual_seed(cfg.train.seed)
    init = build_objective(cfg).state_dict()
    sums: dict[str, list[float]] = {}
    for key, w in ck["model"].items():
        parts = key.split(".")
        if parts[0] != "encoder" or w.ndim < 2:
            continue
        group = f"block{parts[2]}" if parts[1] == "blocks" else parts[1]
        acc = sums.setdefault(group, [0.0, 0.0])
        acc[0] += float((w.float() - init[key].float()).norm() ** 2)
        acc[1] += float(init[key].float().norm() ** 2)
    gammas = [
        float(w.abs().mean())
        for k, w in ck["model"].items()
        if k.startswith("encoder.") and k.endswith("gamma1")
    ]
    return {g: (d / n) ** 0.5 for g, (d, n) in sums.items()}, gammas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (or checkpoints)")
    args = ap.parse_args()
    table = {run: drift(run) for run in args.runs}
    groups = list(next(iter(table.values()))[0])
    print("| run | " + " | ".join(groups) + " | mean abs(gamma1) per block |")
    print("|---" * (len(groups) + 2) + "|")
    for run, (rel, gammas) in table.items():
        cells = " | ".join(f"{rel.get(g, float('nan')):.3f}" for g in groups)
        print(f"| {run} | {cells} | {', '.join(f'{x:.3f}' for x in gammas) or '-'} |")


if __name__ == "__main__":
    main()
