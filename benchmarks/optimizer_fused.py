"""Before / after for the fused AdamW on the CPU: whole training steps with the per-parameter loop
(torch's CPU default before) and with the fused kernel, interleaved.

    python benchmarks/optimizer_fused.py --presets tiny,small --rounds 5

Each round takes one full training step (``bestrq2 benchmark``'s TrainStep) with each optimiser in
turn on the same model, then times each optimiser's ``step()`` alone on fresh random gradients;
figures are medians over rounds, after one warm-up round.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bestrq2.bench.throughput import TrainStep, device_name
from bestrq2.config import get_preset
from bestrq2.training.optim import param_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device: {device_name(torch.device('cpu'))}, torch {torch.__version__}")
    print("| preset | batch | step, per-parameter loop | step, fused | saving | optimiser alone, loop -> fused |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        cfg = get_preset(preset)
        step = TrainStep(cfg, torch.device("cpu"))
        opts = {}
        for kind in ("loop", "fused"):
            kw = {"foreach": False} if kind == "loop" else {"fused": True}
            groups = param_groups(step.core, cfg.optim.weight_decay, cfg.optim.encoder_freeze_fraction > 0)
            opts[kind] = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, **kw)
        times = {k: [] for k in opts}
        alone = {k: [] for k in opts}
        params = [p for p in step.core.parameters() if p.requires_grad]
        for r in range(args.rounds + 1):
            for kind, opt in opts.items():
                step.optimizer = opt
                t = step.run(args.batch_size)
                for p in params:
                    p.grad = torch.randn_like(p) * 1e-3
                t0 = time.perf_counter()
                opt.step()
                t1 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                if r:
                    times[kind].append(t)
                    alone[kind].append(t1 - t0)
        loop, fused = statistics.median(times["loop"]), statistics.median(times["fused"])
        a_loop, a_fused = statistics.median(alone["loop"]), statistics.median(alone["fused"])
        print(f"| {preset} | {args.batch_size} x {cfg.data.crop_seconds:g} s | {loop * 1000:.0f} ms | {fused * 1000:.0f} ms "
              f"| {100 * (1 - fused / loop):.1f} % | {a_loop * 1000:.1f} -> {a_fused * 1000:.1f} ms |")  # fmt: skip


if __name__ == "__main__":
    main()
