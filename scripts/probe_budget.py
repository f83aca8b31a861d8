"""How much does the protocol's 10-epoch probe read of what the features hold? Diagnostic for the recipe work.

    python scripts/probe_budget.py SPEC [SPEC ...] [--epochs 10 50 200] [--out results/recipe/probe-budget]

Every SPEC (an export folder, ``random:EXPORT[:SEED]``, ``logmel``; see ``bestrq2 evaluate``) is scored on
the demo suite with the X-ARES linear probe (LayerNorm + Linear, Adam lr 1e-3, cosine to 0.1 x lr,
best epoch on validation) at each number of epochs. The protocol is 10; at 200 the probe has converged
on these tasks (the score moves by less than the seed spread between 50 and 200), so the 200-epoch gap
between a pretrained encoder and its random floor is the linear information pretraining added, which
no readout of the mean-pooled features can exceed. kNN (which has no training) is printed once per model.
Writes ``table.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bestrq2.evaluation.embeddings import default_cache_dir, embed_clips
from bestrq2.evaluation.models import resolve_model
from bestrq2.evaluation.probe import ProbeConfig
from bestrq2.evaluation.report import aggregate
from bestrq2.evaluation.runner import EvalConfig, score_task
from bestrq2.evaluation.tasks import load_suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--suite", default="data/suite")
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    paths = [suite.root / p for p in suite.clip_paths()]
    results: dict[str, dict] = {}
    for spec in args.specs:
        m = resolve_model(spec)
        frames, _ = embed_clips(m.build, m.key, paths, default_cache_dir(), "cpu", None, 120.0, 2, False)
        hop = m.build().hop_size_in_ms
        results[spec] = {}
        for ep in args.epochs:
            cfg = EvalConfig(probe=ProbeConfig(epochs=ep))
            per = {t.name: score_task(t, frames, suite.root, hop, cfg) for t in suite.tasks}
            _, overall = aggregate(per)
            results[spec][ep] = {"overall": overall["mlp"], "tasks": {k: v["mlp"] for k, v in per.items()}}
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
