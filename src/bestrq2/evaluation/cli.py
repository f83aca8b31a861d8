"""``bestrq2 evaluate``, ``bestrq2 compare`` and ``bestrq2 diagnose``, registered into the main parser by :func:`add_commands`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

MODEL_HELP = (
    "export folder (or run folder / checkpoint), 'logmel' (log-mel statistics), 'randfeat[:DIM[:SEED[:WINDOW]]]' "
    "(random ReLU features of each patch), 'pca:DIM:DATA' (principal components of each patch, fitted on the audio "
    "under DATA), 'random:PRESET[:SEED]' or 'random:DIR[:SEED]' (random-init encoder of a preset or of an export's "
    "architecture)"
)


def _default_suite() -> str:
    try:
        from bestrq2.corpora import default_suite_dir

        return str(default_suite_dir())
    except ImportError:
        return "data/suite"


def _eval_config(args: argparse.Namespace, layer: int | None = None):
    """Threads, device and the evaluation settings shared by ``evaluate`` and ``diagnose``."""
    import torch

    from bestrq2.bench.devices import resolve_device
    from bestrq2.evaluation.probe import ProbeConfig
    from bestrq2.evaluation.runner import EvalConfig

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    return EvalConfig(
        probe=ProbeConfig(seed=args.seed, epochs=args.probe_epochs), device=resolve_device(args.device), layer=layer, batch_seconds=args.batch_seconds,
        workers=args.workers,
    )  # fmt: skip


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """How to run the encoder and the probes: the options ``evaluate`` and ``diagnose`` share."""
    p.add_argument("--device", default="cpu", help="encoder device: cpu, cuda, auto ...")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    p.add_argument("--workers", type=int, default=2, help="audio decoding threads")
    p.add_argument("--batch-seconds", type=float, default=120.0, help="padded audio per encoder batch (s)")
    p.add_argument("--seed", type=int, default=42, help="probe seed (X-ARES: 42)")
    p.add_argument(
        "--probe-epochs", type=_positive_int, default=10,
        help="linear-probe epochs (X-ARES: 10). More reads what the protocol's short training leaves unread "
        "on small tasks: a diagnostic beside the protocol, recorded in results.json, not a replacement",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from bestrq2.evaluation.report import markdown
    from bestrq2.evaluation.runner import baselines_for, evaluate, evaluate_many

    cfg = _eval_config(args, layer=args.layer)
    cache = None if args.no_cache else (args.cache or "default")
    tasks = args.tasks.split(",") if args.tasks else None
    models = list(args.model)
    if args.baselines:
        if len(models) != 1:
            raise ValueError("--baselines takes exactly one model")
        models = baselines_for(models[0])
    progress = not args.no_progress
    if len(models) == 1:
        results = evaluate(
            models[0], args.suite, args.out, cache_dir=cache, cfg=cfg, tasks=tasks, progress=progress
        )
        print(markdown(results))
        t = results["timing"]
        print(f"embedding {t['embed_s']} s ({t['clips_computed']} computed, {t['clips_cached']} cached), "
              f"probes {t['probe_s']} s; results in {args.out}")  # fmt: skip
        return 0
    _, table = evaluate_many(
        models, args.suite, args.out, cache_dir=cache, cfg=cfg, tasks=tasks, progress=progress
    )
    print(table)
    print(f"results in {args.out}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from bestrq2.evaluation.diagnose import diagnose, markdown_report

    cfg = _eval_config(args)
    cache = None if args.no_cache else (args.cache or "default")
    tasks = args.tasks.split(",") if args.tasks else None
    seeds = tuple(range(args.random_seeds))
    results = diagnose(
        list(args.model), args.suite, args.out, cache_dir=cache, cfg=cfg, seeds=seeds, tasks=tasks,
        progress=not args.no_progress, context=not args.no_context,
    )  # fmt: skip
    print(markdown_report(results))
    print(
        f"{results['timing']['total_s']} s; wrote diagnose.json, diagnose.md and diagnose.png to {args.out}"
    )
    return 0


def cmd_collapse(args: argparse.Namespace) -> int:
    import json

    from bestrq2.evaluation.collapse import latent_predictability

    reports = [latent_predictability(r, args.data, batches=args.batches) for r in args.run]
    lines = [
        "| run | step | positions | MSE: constant | position | clip mean | predictor | position R2 | target std | eff. rank |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        m = r["mse"]
        lines.append(
            f"| {r['run']} | {r['step']} | {r['positions']} | {m['const']:.3f} | {m['position']:.3f} | {m['clip']:.3f} "
            f"| {m['predictor']:.3f} | {r['position_r2']:.3f} | {r['target_std']:.3f} | {r['target_effective_rank']:.1f} |"
        )
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(reports, indent=1))
        print(f"wrote {args.out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bestrq2.evaluation.report import compare_markdown, load_results, write_comparison

    runs = [load_results(p) for p in args.results]
    table = write_comparison(runs, args.out) if args.out else compare_markdown(runs)
    print(table)
    if args.out:
        print(f"wrote {Path(args.out) / 'comparison.md'} and comparison.png")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score encoders on a labelled suite with the X-ARES protocol (linear probe + kNN)",
        description="Embeds every clip once (cached), then fits the X-ARES linear probe and kNN per task; "
        "writes results.json, results.md and results.png to --out (several models: one folder each plus "
        "comparison.md / comparison.png).",
    )
    p.add_argument("model", nargs="+", help=MODEL_HELP)
    p.add_argument(
        "--suite", default=_default_suite(), help="suite folder with manifest.jsonl (default: data/suite)"
    )
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument(
        "--baselines", action="store_true", help="also evaluate random:MODEL and logmel, side by side"
    )
    p.add_argument("--tasks", help="comma-separated task names (default: all)")
    p.add_argument(
        "--cache",
        help="embedding cache folder (default: $BESTRQ2_EMBED_CACHE or ~/.cache/bestrq2/embeddings)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    p.add_argument(
        "--layer",
        type=int,
        help="use this encoder block's output (0-based, -1 last) instead of the final one",
    )
    _add_run_args(p)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser(
        "diagnose",
        help="layer-wise diagnosis: probe + kNN of every layer, both poolings, against random-init encoders",
        description="Runs each encoder once over the suite keeping every layer (cached), then scores every "
        "layer with the X-ARES linear probe and kNN for mean and concat pooling, beside random-init encoders "
        "of the same architecture; adds effective ranks, the patch-embedding / position norm ratio and (run "
        "folders) quantizer target statistics with a bag-of-codes probe; then every layer again with each "
        "token encoded alone, which tells learned context from per-patch gains. Writes diagnose.json, "
        "diagnose.md and diagnose.png to --out and prints the table.",
    )
    p.add_argument("model", nargs="+", help="export folder, run folder or checkpoint (ViT encoders)")
    p.add_argument(
        "--suite", default=_default_suite(), help="suite folder with manifest.jsonl (default: data/suite)"
    )
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument(
        "--random-seeds", type=int, default=2, help="random-init encoders per model (seeds 0..N-1)"
    )
    p.add_argument("--tasks", help="comma-separated task names (default: all)")
    p.add_argument(
        "--cache",
        help="embedding cache folder (default: $BESTRQ2_EMBED_CACHE or ~/.cache/bestrq2/embeddings)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    p.add_argument(
        "--no-context",
        action="store_true",
        help="skip the second pass with every token encoded alone (which tells context from per-patch gains)",
    )
    _add_run_args(p)
    p.set_defaults(fn=cmd_diagnose)

    p = sub.add_parser(
        "collapse",
        help="Audio-JEPA: can the latent targets be predicted without context (constant / position / clip mean)?",
        description="On training crops of DATA, masked as in training: the loss (per-element MSE) of predicting "
        "each masked target by the mean target, by one mean per position, by the mean of the crop's visible "
        "targets, and by the run's predictor; the share of target variance position explains; target spread "
        "and effective rank. Means are fitted on half the crops and scored on the other half.",
    )
    p.add_argument("run", nargs="+", help="audiojepa run folder or checkpoint")
    p.add_argument("--data", required=True, help="audio folder or manifest (the run's training data)")
    p.add_argument("--batches", type=int, default=8, help="training-size batches of crops (default 8)")
    p.add_argument("--out", help="also write the reports to this JSON file")
    p.set_defaults(fn=cmd_collapse)

    p = sub.add_parser("compare", help="one table and chart across several evaluation results")
    p.add_argument(
        "results", nargs="+", help="results folders (or results.json files) from `bestrq2 evaluate`"
    )
    p.add_argument("--out", help="also write comparison.md and comparison.png here")
    p.set_defaults(fn=cmd_compare)
