"""Whole-run throughput: a real pretraining run's clips/s against the model-only benchmark, interleaved.

    python benchmarks/run_throughput.py --preset tiny --steps 200 --rounds 3 \
        --data data/corpus/manifest.jsonl --shards runs/shards-pcm16

Each round runs every variant once, in turn, each in a fresh process: ``model`` is ``bestrq2
benchmark``'s training step on a noise batch (no loader); the others are ``pretrain`` on real audio
for ``--steps`` steps (the loop's own ``clips_per_s``, median over its log rows after the first, which
holds the start-up). A variant is ``SOURCE[-wN][-niceK]``: SOURCE ``folder`` (``--data``), ``wav`` (``--wav``: the
same audio as PCM16 WAV files) or ``pcm16`` (``--shards``, written by ``bestrq2 data shard --format pcm16``), N loader workers (without ``-wN``: the
default, ``data.num_workers=-1``, which is none on a CPU), at ``data.worker_nice`` K; ``-cache``: with
``data.decode_cache=--cache`` (filled once before the first round, the time printed). The table gives
medians over rounds and each variant's median ratio to the model-only figure of the same round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def measure(variant: str, args: argparse.Namespace) -> float:
    """clips/s of one variant, in this process."""
    from bestrq2.bench.throughput import bench_train
    from bestrq2.config import get_preset
    from bestrq2.training.logs import read_log
    from bestrq2.training.loop import pretrain

    cfg = get_preset(args.preset)
    cfg.train.batch_size = args.batch_size
    if variant == "model":
        return bench_train(cfg, args.batch_size, args.steps, 10, torch.device("cpu"))["clips_per_s"]
    source, *opts = variant.split("-")  # SOURCE[-wN][-niceK][-cache]
    option = {"folder": "data", "wav": "wav", "pcm16": "shards"}[source]
    data = getattr(args, option)
    if data is None:
        raise SystemExit(f"{variant} needs --{option}")
    for opt in opts:
        if opt == "cache":
            cfg.data.decode_cache = args.cache
        elif opt.startswith("nice"):
            cfg.data.worker_nice = int(opt[4:])
        else:
            cfg.data.num_workers = int(opt.removeprefix("w"))
    cfg.train.max_steps = args.steps
    cfg.train.ckpt_every = args.steps * 10  # one checkpoint, at the end
    cfg.train.log_every = 25
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(cfg.validate(), Path(data), Path(tmp) / "run", progress=False, tensorboard=False)
        rows = [r for r in read_log(Path(tmp) / "run") if "clips_per_s" in r and r["step"] < args.steps]
    return statistics.median(float(r["clips_per_s"]) for r in rows[1:])


def fill_cache(args: argparse.Namespace) -> None:
    """Decode every file of ``--data`` into ``--cache`` once (what the first epoch of a run does)."""
    import time

    from bestrq2.data import AudioError, list_audio, load_audio
    from bestrq2.data.decode_cache import DecodeCache

    if not args.cache or not args.data:
        raise SystemExit("the -cache variants need --cache and --data")
    cache, files, t = DecodeCache(args.cache), list_audio(args.data), time.perf_counter()
    for f in files:
        try:
            load_audio(f, 16000, 16000, cache=cache, check_silence=False)
        except AudioError:  # skipped by the runs too
            pass
    print(f"decode cache: {len(files)} files ready in {time.perf_counter() - t:.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", help="audio folder or manifest (the folder variants)")
    ap.add_argument("--wav", help="the same audio as PCM16 WAV files: folder or list (the wav variants)")
    ap.add_argument("--shards", help="PCM16 shard folder (the pcm16 variants)")
    ap.add_argument("--cache", help="decode-cache folder (the -cache variants)")
    ap.add_argument("--variants", default="model,folder-w2,folder-w1,pcm16-w2,pcm16-w1")
    ap.add_argument("--out", help="write the raw figures here (JSON)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one variant and print it
    args = ap.parse_args()
    if args.one:
        print(json.dumps({"clips_per_s": measure(args.one, args)}))
        return
    variants = args.variants.split(",")
    fig: dict[str, list[float]] = {v: [] for v in variants}
    passthrough = ["--preset", args.preset, "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    passthrough += [
        a for opt in ("data", "wav", "shards", "cache") if getattr(args, opt) for a in (f"--{opt}", getattr(args, opt))
    ]
    if any(v.endswith("-cache") for v in variants):
        fill_cache(args)
    for r in range(args.rounds):
        for v in variants:
            out = subprocess.run([sys.executable, __file__, *passthrough, "--one", v], check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
            fig[v].append(json.loads(out.strip().splitlines()[-1])["clips_per_s"])
            print(f"round {r + 1} {v}: {fig[v][-1]:.1f} clips/s", flush=True)
    cpu = (
        open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip("\t: ")
        if Path("/proc/cpuinfo").exists()
        else "?"
    )
    print(f"\n{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}; preset {args.preset}, batch "
          f"{args.batch_size}, {args.steps} steps, {args.rounds} rounds")  # fmt: skip
    print("| variant | clips/s, median (range) | share of model-only, median (range) |")
    print("|---|---|---|")
    for v in variants:
        ratios = [a / b for a, b in zip(fig[v], fig["model"])] if "model" in fig else []
        share = f"{statistics.median(ratios):.0%} ({min(ratios):.0%}-{max(ratios):.0%})" if ratios else "-"
        print(f"| {v} | {statistics.median(fig[v]):.1f} ({min(fig[v]):.1f}-{max(fig[v]):.1f}) | {share} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "clips_per_s": fig}, indent=1))


if __name__ == "__main__":
    main()
