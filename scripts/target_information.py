"""How much of each downstream task the pretraining targets carry, for several quantizer designs.

The BEST-RQ targets are frozen, so this needs no training: every suite clip goes through the
frontend and the quantizer of a design, and the X-ARES probe and kNN score each clip's normalised
histogram of codes (the bag-of-codes probe of ``bestrq2 diagnose``). A design whose codes say little
about a task cannot teach the encoder much about it through the masked-prediction loss.

    python scripts/target_information.py --out results/recipe/targets \\
        --design full= \\
        --design "bands4=quantizer.bands=4" \\
        --design "bands8=quantizer.bands=8;quantizer.codebook_size=256"

Each design is the preset (``--preset``, default ``tiny``) plus its ``;``-separated overrides.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from bestrq2.config import apply_override, get_preset
from bestrq2.evaluation.diagnose import objective_target_stats
from bestrq2.evaluation.runner import EvalConfig
from bestrq2.evaluation.tasks import load_suite
from bestrq2.objectives import build_objective


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--design", action="append", required=True, metavar="NAME=OVERRIDE;OVERRIDE...")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--suite", default="data/suite")
    ap.add_argument("--out", help="folder for results.json and table.md")
    args = ap.parse_args()
    suite = load_suite(args.suite)
    results = {}
    for spec in args.design:
        name, _, body = spec.partition("=")
        cfg = get_preset(args.preset)
        overrides = [o for o in body.split(";") if o]
        for o in overrides:
            apply_override(cfg, o)
        cfg.validate()
        with torch.random.fork_rng(devices=[]):
            objective = build_objective(cfg)
        stats = objective_target_stats(objective, cfg.frontend.sample_rate, suite, EvalConfig(), progress=False)
        results[name] = {"overrides": overrides} | stats
        bag = stats["bag_of_codes"]
        print(f"{name}: bag-of-codes probe {bag['mlp']:.3f} kNN {bag['knn']:.3f}, "
              f"perplexity {stats['perplexity']:.0f} of {stats['codebook_size']}", flush=True)  # fmt: skip
    table = _table(results, suite)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        info = {"preset": args.preset, "suite": args.suite, "cpu": platform.processor() or platform.machine(),
                "torch": torch.__version__}  # fmt: skip
        (out / "results.json").write_text(json.dumps({"_info": info} | results, indent=1))
        (out / "table.md").write_text(table)


def _table(results: dict, suite) -> str:
    tasks = [t.name for t in suite.tasks if t.kind == "clip"]
    head = ["design", "targets x codes", "perplexity", "probe", "kNN", *tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        bag = r["bag_of_codes"]
        per = [f"{bag['tasks'][t]['mlp']:.2f}" if t in bag["tasks"] else "-" for t in tasks]
        lines.append(
            f"| {name} | {r['codebooks']} x {r['codebook_size']} | {r['perplexity']:.0f} | {bag['mlp']:.3f} "
            f"| {bag['knn']:.3f} | " + " | ".join(per) + " |"
        )
    return "\n".join(lines) + "\n\nprobe / kNN: overall (test-size weighted); task columns: probe.\n"


if __name__ == "__main__":
    main()
