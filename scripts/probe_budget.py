"""How much does the protocol's 10-epoch probe read of what the features hold? Diagnostic for the recipe work.

    python scripts/probe_budget.py SPEC [SPEC ...] [--epochs 10 50 200] [--out results/recipe/probe-budget]

``bestrq2 evaluate SPEC --probe-epochs N`` once per N, gathered into one table. Every SPEC (an export
folder, ``random:EXPORT[:SEED]``, ``randfeat``, ``logmel``; see ``bestrq2 evaluate``) is scored on
the demo suite with the X-ARES linear probe (LayerNorm + Linear, Adam lr 1e-3, cosine to 0.1 x lr,
best epoch on validation) at each number of epochs. The protocol is 10; at 200 the probe has converged
on these tasks (from 50 to 200 epochs the score moves by 0.01-0.04; 8192-d features not at all), so the gap
at 200 between a pretrained encoder and its random floor is the linear information pretraining added, which
no readout of the mean-pooled features can exceed. kNN (which has no training) is printed once per model.
Writes ``table.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bestrq2.evaluation import evaluate
from bestrq2.evaluation.probe import ProbeConfig
from bestrq2.evaluation.runner import EvalConfig
from bestrq2.evaluation.tasks import load_suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--suite", default="data/suite")
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    suite = load_suite(args.suite)
    results: dict[str, dict] = {}
    for spec in args.specs:
        results[spec] = {}
        for ep in args.epochs:  # the embeddings come from the cache after the first
            cfg = EvalConfig(probe=ProbeConfig(epochs=ep))
            run = evaluate(spec, suite, None, cfg=cfg, progress=False, log=lambda s: None)
            overall = run["overall"]
            results[spec][ep] = {
                "overall": overall["mlp"],
                "tasks": {k: v["mlp"] for k, v in run["tasks"].items()},
            }
            results[spec]["knn"] = overall["knn"]  # the same at every probe length
            print(f"{spec} epochs {ep}: probe {overall['mlp']:.3f} (kNN {overall['knn']:.3f})", flush=True)
    head = "| encoder | " + " | ".join(f"probe, {e} epochs" for e in args.epochs) + " | kNN |"
    rows = [head, "|---" * (len(args.epochs) + 2) + "|"]
    rows += [
        f"| {s} | " + " | ".join(f"{r[e]['overall']:.3f}" for e in args.epochs) + f" | {r['knn']:.3f} |"
        for s, r in results.items()
    ]
    print("\n".join(rows))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text("\n".join(rows) + "\n")
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
