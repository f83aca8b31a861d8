"""The ``bestrq2`` command: pretrain, export, embed, benchmark, data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bestrq2.config import PRESETS, Config, ConfigError, apply_override, get_preset
from bestrq2.evaluation.cli import add_commands as add_eval_commands

STOPPED = 75
"""Exit status of a pretraining stopped by SIGTERM / SIGINT after saving its checkpoint (EX_TEMPFAIL: run it
again with --resume)."""


def _config_from_args(args: argparse.Namespace, start: Config | None = None) -> Config:
    """The preset (or ``--config``, or ``start``: a resumed run's own config) with the command line's settings."""
    cfg = start or get_preset(args.preset)
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
    from bestrq2.evaluation.online import OnlineProbe
    from bestrq2.training.loop import DATA_FILE, pretrain

    saved = Path(args.out) / "config.json"  # on resume, the settings given are compared with the run's own
    start = Config.from_dict(json.loads(saved.read_text())) if args.resume and saved.is_file() else None
    cfg = _config_from_args(args, start)
    resumable = args.resume and (Path(args.out) / DATA_FILE).is_file()
    if args.resume and not args.data and not resumable:
        raise FileNotFoundError(f"nothing to resume in {args.out}: it holds no run (no {DATA_FILE}); check --out, or pass --data to start one")
    data = args.data or (None if resumable else _default_data())  # None: the source the run recorded
    result = pretrain(
        cfg, data, args.out, resume=args.resume, stop_after=args.stop_after, device=args.device,
        progress=not args.no_progress, probe_factory=OnlineProbe.from_config,
    )
    if result.stopped:  # a chained `pretrain && export` must not go on with a half-trained model
        print(f"stopped at step {result.step}: continue with `bestrq2 pretrain --out {args.out} --resume`")
        return STOPPED
    print(f"done: step {result.step}, checkpoint in {Path(result.run_dir) / 'checkpoints'}")
    return 0


def cmd_codebooks(args: argparse.Namespace) -> int:
    import torch

    from bestrq2.bench.devices import resolve_device
    from bestrq2.quantizer import save_centroids
    from bestrq2.training.codebooks import fit_codebooks

    cfg = _config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = args.data or _default_data()
    centroids, info = fit_codebooks(cfg, data, args.crops, args.iters, args.seed or 0, device, not args.no_progress)
    save_centroids(args.out, centroids, cfg.quantizer, info)
    print(f"codebooks: {tuple(centroids.shape)} centroids from {info['tokens']} tokens of {info['crops']} crops "
          f"({info['skipped_files']} files skipped) -> {args.out}")  # fmt: skip
    print(f"use them with: --set quantizer.centroids={args.out} (and the same --preset / --set as here)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bestrq2.export import export

    chunk = args.chunk_seconds
    if chunk not in (None, "crop"):
        try:
            chunk = float(chunk)
        except ValueError:
            raise SystemExit(f"--chunk-seconds: expected seconds or 'crop', got {chunk!r}") from None
    out = export(args.run, args.out, args.pooling, args.encoder, chunk, onnx=args.onnx, dtype=args.dtype, blocks=args.blocks)
    print(f"exported encoder to {out}" + (" (and model.onnx)" if args.onnx else ""))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from bestrq2.convert import ConversionError, convert

    try:
        out = convert(
            args.src, args.out, method=args.method, encoder=args.encoder, heads=args.heads, pooling=args.pooling,
            sample_rate=args.sample_rate, hop_length=args.hop_length, f_min=args.f_min, f_max=args.f_max,
        )  # fmt: skip
    except ConversionError as e:
        raise SystemExit(f"bestrq2 convert: {e}") from None
    print(f"converted {args.src} to {out}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from bestrq2.hub import write_card

    print(f"wrote {write_card(args.export, args.results, args.name)}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from bestrq2.hub import push_to_hub

    url = push_to_hub(args.export, args.repo, args.results, private=args.private or None)
    print(f"pushed {args.export} to {args.repo}: {url}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from bestrq2.data import list_audio
    from bestrq2.embed import embed_files

    paths = [f for a in args.audio for f in (list_audio(a) if Path(a).is_dir() else [a])]  # folders: their audio files
    stats = embed_files(args.model, paths, args.out, args.device, args.layer)
    print(f"wrote {args.out}: {stats['embedded']} files embedded, {stats['skipped']} skipped")
    return 0


def _benchmark_configs(args: argparse.Namespace) -> list[Config]:
    """One config per preset x method (x activation checkpointing off/on with --both-checkpointing)."""
    presets = args.presets.split(",") if args.presets else [args.preset]
    methods = args.methods.split(",") if args.methods else [args.method]
    if args.config and len(presets) > 1:
        raise ValueError("--config and several --presets do not mix")
    configs = []
    for preset in presets:
        for method in methods:
            for ac in ((False, True) if args.both_checkpointing else (None,)):
                cfg = _config_from_args(argparse.Namespace(**{**vars(args), "preset": preset, "method": method}))
                if ac is not None:
                    cfg.parallel.activation_checkpointing = ac
                configs.append(cfg)
    return configs


def _model_rows(path: str) -> list[dict]:
    d = json.loads(Path(path).read_text())
    return d.get("runs", []) if "runs" in d else [d]


def cmd_benchmark(args: argparse.Namespace) -> int:
    import torch

    from bestrq2.bench.devices import device_name, resolve_device
    from bestrq2.bench.throughput import format_report, format_table, run_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(resolve_device(args.device))
    configs = _benchmark_configs(args)
    out: dict[str, object] = {"device": device_name(dev), "torch": torch.__version__}
    runs: list[dict] = []
    model = args.loader is None or args.with_model
    if args.find_max_batch:
        from bestrq2.bench.maxbatch import find_max_batch, format_max_batch

        rows = []
        for cfg in configs:
            rows.append(find_max_batch(cfg, dev, args.max_batch_start, args.max_batch_limit, args.max_batch_step, args.memory_limit_gib))
            print(format_max_batch(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
        print(f"device: {out['device']}  memory: {rows[0]['memory_kind']}\n{format_max_batch(rows)}")
        out["max_batch"] = rows
    elif model:
        for cfg in configs:
            batch = args.batch_size or cfg.train.batch_size
            infer = None if args.no_inference else args.infer_seconds
            runs.append(run_benchmark(cfg, batch, args.steps, args.warmup, str(dev), infer, args.peak_tflops))
            if len(configs) > 1:
                print(format_table(runs[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
        print(format_report(runs[0]) if len(runs) == 1 else f"device: {out['device']}\n{format_table(runs)}")
        out["runs"] = runs
    if args.loader:
        from bestrq2.bench.loader import bench_loader, format_loader

        cfg = configs[0]
        batch = args.batch_size or cfg.train.batch_size
        loader = bench_loader(args.loader, cfg, batch, args.workers, args.batches, args.loader_warmup, dev.type == "cuda")
        compare = runs + [row for path in args.compare_json or [] for row in _model_rows(path)]
        print(format_loader(loader, compare))
        out["loader"] = loader
    if args.json:
        single = len(runs) == 1 and set(out) == {"device", "torch", "runs"}
        Path(args.json).write_text(json.dumps(runs[0] if single else out, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bestrq2", description="BEST-RQ-2 self-supervised audio representations")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain an encoder on a folder (or manifest) of audio")
    p.add_argument("--data", help="audio folder (recursive) or manifest (.jsonl / .txt); default: the demo corpus, "
                   "or with --resume the data the run was started on")
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
        "--encoder", choices=["target", "context", "ema", "online"],
        help="audiojepa: the EMA target encoder (default) or the context encoder; other methods: the weight "
        "average (default when the run kept one, optim.ema_decay > 0) or the online weights",
    )
    p.add_argument(
        "--chunk-seconds", metavar="S|crop",
        help="inference chunk length in seconds, or 'crop' for the training crop (default: the run's "
        "frontend.chunk_seconds)",
    )
    p.add_argument(
        "--onnx", action="store_true",
        help="also write model.onnx: wav [B, T] float32 + lengths [B] int64 -> frames [B, T', D], frontend "
        "included, dynamic batch and length (needs onnx + onnxscript: pip install 'bestrq2[onnx]')",
    )
    p.add_argument(
        "--dtype", default="fp32", choices=["fp32", "bf16", "int8"],
        help="inference arithmetic load_encoder applies (weights stay fp32): bf16 autocast or dynamic int8 linear "
        "layers in the encoder, the frontend in fp32; falls back to fp32 with a warning where unsupported",
    )
    p.add_argument(
        "--blocks", type=int, metavar="N",
        help="keep only the first N encoder blocks (then the final norm): a smaller ViT whose output is block N's "
        "(`bestrq2 diagnose` scores every block; in a two-step model the top blocks work for the predictor)",
    )
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser(
        "codebooks", help="fit k-means codebooks of the quantizer's inputs on audio (for quantizer.centroids)"
    )
    p.add_argument("--data", help="audio folder or manifest to fit on (default: the demo corpus)")
    p.add_argument("--out", required=True, help="codebook file to write (.safetensors)")
    p.add_argument("--crops", type=int, default=512, help="random training crops to draw (default: 512)")
    p.add_argument("--iters", type=int, default=30, help="Lloyd iterations (default: 30)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="where the frontend and a teacher run: auto (cuda if available), cpu, cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_args(p)
    p.set_defaults(fn=cmd_codebooks)

    p = sub.add_parser("convert", help="convert the authors' BEST-RQ-2 / BEST-RQ ViT / Audio-JEPA checkpoint to an export")
    p.add_argument("src", help="their Lightning .ckpt or the tensor-only .safetensors beside it")
    p.add_argument("--out", required=True, help="export folder")
    p.add_argument("--method", choices=["bestrq2", "bestrq-vit", "audiojepa"], help="default: detected from the keys")
    p.add_argument("--encoder", choices=["encoder", "student", "teacher"],
                   help="audiojepa: student (default, as their X-ARES wrapper) or teacher (EMA)")  # fmt: skip
    p.add_argument("--heads", type=int, help="attention heads (default: width / 64, as every published size)")
    p.add_argument("--pooling", default="mean", choices=["mean", "concat"])
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--hop-length", type=int, default=625)
    p.add_argument("--f-min", type=float, default=0.0)
    p.add_argument("--f-max", type=float, default=8000.0)
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("card", help="(re)write an export's model card README.md, with an evaluation table")
    p.add_argument("export", help="export folder")
    p.add_argument("--results", help="results folder or results.json from `bestrq2 evaluate`")
    p.add_argument("--name", help="title (e.g. the hub id)")
    p.set_defaults(fn=cmd_card)

    p = sub.add_parser("push", help="upload an export folder to the Hugging Face hub (needs huggingface_hub)")
    p.add_argument("export", help="export folder")
    p.add_argument("--repo", required=True, help="hub id, org/name")
    p.add_argument("--results", help="results folder or results.json from `bestrq2 evaluate`, for the model card")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.set_defaults(fn=cmd_push)

    p = sub.add_parser("embed", help="embed audio files with an exported encoder")
    p.add_argument("model", help="export folder")
    p.add_argument("audio", nargs="+", help="audio files or folders (searched recursively, as pretrain --data)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--device", default="cpu")
    p.add_argument("--layer", type=int, help="take this block's output (0-based, -1 last) instead of the final one")
    p.set_defaults(fn=cmd_embed)

    p = sub.add_parser(
        "benchmark", help="training throughput, memory, MFU, largest batch, data-loader speed on this device",
        description="Training clips/s, tokens/s, peak memory and MFU, inference real-time factor (default); "
        "--find-max-batch: the largest batch that fits; --loader DATA: the data loader alone.",
    )
    p.add_argument("--method", help="method (default: bestrq2)")
    p.add_argument("--methods", help="several methods, comma-separated (one run each), e.g. bestrq2,bestrq-vit")
    p.add_argument("--presets", help="several presets, comma-separated, e.g. tiny,small (instead of --preset)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (more with parallel.compile=true)")
    p.add_argument("--infer-seconds", type=float, default=60.0, help="length of each clip for the inference timing")
    p.add_argument("--no-inference", action="store_true", help="training figures only")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: the dense bf16 datasheet figure of a known GPU)")
    p.add_argument("--both-checkpointing", action="store_true", help="every run with parallel.activation_checkpointing off, then on")
    p.add_argument("--find-max-batch", action="store_true", help="find the largest batch whose training step fits in memory")
    p.add_argument("--max-batch-start", type=int, default=16, help="first batch tried (then doubled, then bisected)")
    p.add_argument("--max-batch-limit", type=int, default=65536, help="largest batch tried")
    p.add_argument("--max-batch-step", type=int, default=8, help="precision of the bisection (batches are multiples of it)")
    p.add_argument("--memory-limit-gib", type=float,
                   help="cap memory: CUDA allocator fraction (e.g. 79.1 on a bigger card); CPU: required, emulated by peak RSS")  # fmt: skip
    p.add_argument("--loader", metavar="DATA", help="time the training data loader alone on DATA (folder, manifest or tar shards)")
    p.add_argument("--workers", type=int, help="loader worker processes (default: data.num_workers)")
    p.add_argument("--batches", type=int, default=50, help="timed loader batches")
    p.add_argument("--loader-warmup", type=int, help="untimed loader batches first (default: one per worker)")
    p.add_argument("--with-model", action="store_true", help="with --loader: also run the model benchmark and compare")
    p.add_argument("--compare-json", action="append", help="with --loader: compare with the model runs of an earlier --json output (repeatable)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    _add_config_args(p)
    p.set_defaults(fn=cmd_benchmark)

    add_eval_commands(sub)  # evaluate, compare, diagnose

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
