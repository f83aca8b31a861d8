"""Training-step cost of every pretraining method at one preset, timed interleaved.

    python benchmarks/method_cost.py --preset tiny --steps 15

Each round runs one full optimiser step of every method in turn (frontend, targets, forward,
backward, AdamW, EMA update where there is one) on the same noise batch, so that load from other
processes on a shared machine hits every method alike; the figure is the median over rounds.
Ratios are relative to ``bestrq-vit`` (the one-step ViT: the same encoder reading every token): the
ratio of medians, the median of round-by-round ratios (paired, so less sensitive to load that moves
between rounds), and the analytic model-FLOP ratio (:func:`bestrq2.bench.flops.step_flops` at the
mask ratio each round drew).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bestrq2.bench.flops import step_flops
from bestrq2.bench.throughput import device_name
from bestrq2.config import get_preset
from bestrq2.masking import mask_generator
from bestrq2.models.layers import num_params
from bestrq2.objectives import build_objective, sample_batch_masks
from bestrq2.training.optim import build_optimizer

METHODS = ["bestrq2", "bestrq-vit", "bestrq-conformer", "audiojepa"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch-size", type=int, help="default: the preset's")
    ap.add_argument("--steps", type=int, default=15, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated; must include bestrq-vit")
    ap.add_argument("--optimizer", choices=["library", "loop"], default="library",
                    help="loop: torch's per-parameter AdamW loop (the CPU default before the fused kernel)")  # fmt: skip
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    runs = {}
    for m in args.methods.split(","):
        cfg = get_preset(args.preset)
        cfg.method = m
        if args.batch_size:
            cfg.train.batch_size = args.batch_size
        cfg.validate()
        torch.manual_seed(0)
        model = build_objective(cfg).train()
        opt = build_optimizer(model, cfg.optim, dev)
        if args.optimizer == "loop":
            for group in opt.param_groups:
                group.update(fused=False, foreach=False)
        runs[m] = (cfg, model, opt, [], [])
    cfg0 = next(iter(runs.values()))[0]
    B = cfg0.train.batch_size
    S = int(round(cfg0.data.crop_seconds * cfg0.frontend.sample_rate))
    wav = torch.randn(B, S) * 0.1
    lengths = torch.full((B,), S, dtype=torch.long)
    for i in range(args.warmup + args.steps):
        for cfg, model, opt, times, flops in runs.values():
            masks = sample_batch_masks(cfg, lengths, S, mask_generator(0, 0, i))
            if i >= args.warmup:  # the analytic cost of this very step, at the ratio it drew
                flops.append(step_flops(cfg, B, S, mask_ratio=masks.ratio).model)
            t = time.perf_counter()
            model(wav, lengths, masks)["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if hasattr(model, "update_target"):
                model.update_target(i)
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
    ref = statistics.median(runs["bestrq-vit"][3])
    ref_flops = statistics.mean(runs["bestrq-vit"][4])
    report = {"device": device_name(dev), "torch": torch.__version__, "preset": args.preset, "batch_size": B,
              "crop_seconds": cfg0.data.crop_seconds, "rounds": args.steps, "optimizer": args.optimizer, "methods": {}}  # fmt: skip
    print(
        f"{report['device']}, torch {report['torch']}, preset {args.preset}, batch {B} x {cfg0.data.crop_seconds:g} s, "
        f"AdamW: {args.optimizer}"
    )
    print(
        "| method | trained params | median step (ms) | min (ms) | step / bestrq-vit step | median of per-round ratios | analytic FLOP ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for m, (_, model, _, times, flops) in runs.items():
        med = statistics.median(times)
        paired = statistics.median(t / r for t, r in zip(times, runs["bestrq-vit"][3]))  # round by round
        analytic = statistics.mean(flops) / ref_flops
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
        report["methods"][m] = {"median_s": med, "min_s": min(times), "ratio_to_bestrq_vit": med / ref,
                                "paired_ratio": paired,
                                "analytic_ratio": analytic, "trained_params_m": trained,
                                "params_m": num_params(model) / 1e6}  # fmt: skip
        print(
            f"| {m} | {trained:.2f} M | {med * 1000:.0f} | {min(times) * 1000:.0f} | {med / ref:.3f} | {paired:.3f} | {analytic:.3f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
