"""The ``bestrq2`` command: pretrain, export, embed, benchmark, data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bestrq2.config import PRESETS, Config, ConfigError, apply_override, get_preset
from bestrq2.evaluation.cli import add_commands as add_eval_commands


def _config_from_args(args: argparse.Namespace) -> Config:
    cfg = get_preset(args.preset)
    if getattr(args, "config", None):
        cfg = Config.from_dict(json.loads(Path(args.config).read_text()))
    if getattr(args, "method", None):
        cfg.method = args.method
    for attr, key in (("max_steps", "train.max_steps"), ("batch_size", "train.batch_size"), ("seed", "train.seed")):
        value = getattr(args, attr, None)
        if value is not None:
            apply_override(cfg, f"{key}={value}")
    for assignment in getattr(args, "set", None) or []:
        apply_override(cfg, assignment)
    return cfg.validate()


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model preset (default: tiny)")
    p.add_argument("--config", help="a config.json to start from instead of the preset")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--set", action="append", metavar="SECTION.FIELD=VALUE", help="override any config field, e.g. encoder.depth=6"
    )


def _default_data() -> str:
    """The demo corpus (``bestrq2 data corpus``): its manifest, or a clear error if it is not built."""
    from bestrq2.corpora import default_corpus_dir

    manifest = default_corpus_dir() / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"no --data given and no demo corpus at {manifest}: run `bestrq2 data corpus` first")
    return str(manifest)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from bestrq2.train import pretrain

    cfg = _config_from_args(args)
    data = args.data or _default_data()
    result = pretrain(
        cfg, data, args.out, resume=args.resume, stop_after=args.stop_after, device=args.device,
        progress=not args.no_progress,
    )
    print(f"done: step {result.step}, checkpoint in {Path(result.run_dir) / 'checkpoints'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bestrq2.export import export

    out = export(args.run, args.out, args.pooling, args.encoder)
    print(f"exported encoder to {out}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from bestrq2.embed import embed_files

    stats = embed_files(args.model, args.audio, args.out, args.device, args.layer)
    print(f"wrote {args.out}: {stats['embedded']} files embedded, {stats['skipped']} skipped")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    import torch

    from bestrq2.benchmark import format_report, run_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _config_from_args(args)
    report = run_benchmark(cfg, cfg.train.batch_size, args.steps, args.warmup, args.device, args.infer_seconds)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bestrq2", description="BEST-RQ-2 self-supervised audio representations")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain an encoder on a folder (or manifest) of audio")
    p.add_argument("--data", help="audio folder (recursive) or manifest (.jsonl / .txt); default: the demo corpus")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, config.json)")
    p.add_argument("--method", help="bestrq2 (default), bestrq-vit, bestrq-conformer or audiojepa")
    p.add_argument("--max-steps", type=int, help="optimiser steps; 0 writes a random-init checkpoint")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--stop-after", type=int, help="stop (with a checkpoint) at this step; resume later")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_args(p)
    p.set_defaults(fn=cmd_pretrain)

    p = sub.add_parser("export", help="export a run's encoder (config.json + model.safetensors)")
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("--out", required=True, help="export folder")
    p.add_argument(
        "--pooling", default="mean", choices=["mean", "concat"],
        help="pool each time step's tokens over frequency: mean (reference, D features) or concat (8 x D)",
    )
    p.add_argument(
        "--encoder", choices=["target", "context"],
        help="audiojepa only: export the EMA target encoder (default) or the context encoder",
    )
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("embed", help="embed audio files with an exported encoder")
    p.add_argument("model", help="export folder")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--device", default="cpu")
    p.add_argument("--layer", type=int, help="take this block's output (0-based, -1 last) instead of the final one")
    p.set_defaults(fn=cmd_embed)

    p = sub.add_parser("benchmark", help="training clips/s and inference real-time factor on this device")
    p.add_argument("--method", help="method (default: bestrq2)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--infer-seconds", type=float, default=60.0, help="length of each clip for the inference timing")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", help="also write the figures to this JSON file")
    _add_config_args(p)
    p.set_defaults(fn=cmd_benchmark)

    add_eval_commands(sub)  # evaluate, compare

    sub.add_parser("data", help="build the demo corpus and downstream suite (see `bestrq2 data --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "data":
        from bestrq2.corpora.cli import main as data_main

        return data_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"bestrq2 {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
