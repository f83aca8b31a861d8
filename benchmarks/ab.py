"""Before/after of one option: `bestrq2 benchmark` runs of several variants, interleaved round by round.

    python benchmarks/ab.py --rounds 5 --common "--preset small --batch-size 8 --steps 6 --no-inference" \
        --variant eager= --variant compiled="--set parallel.compile=true --warmup 4"

Each round runs every variant once, in turn, each in a fresh process (so one variant's caches,
compiled graphs or allocator state never help another), and reads the median training step from
the benchmark's JSON. The table gives the median over rounds and, for every variant, the median of
its round-by-round ratio to the first variant (paired: load that moves between rounds cancels out).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run_once(args: list[str]) -> float:
    """The median training step (s) of one `bestrq2 benchmark` run with ``args``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "bestrq2.cli", "benchmark", *args, "--json", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        report = json.loads(out.read_text())
    return float(report["train"]["step_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--common", default="", help="benchmark options every variant gets")
    ap.add_argument(
        "--variant", action="append", required=True, help="NAME=OPTIONS (the first is the reference)"
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", help="write the raw figures here (JSON)")
    args = ap.parse_args()
    variants = dict(v.partition("=")[::2] for v in args.variant)
    common = shlex.split(args.common)
    steps: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, opts in variants.items():
            steps[name].append(run_once(common + shlex.split(opts)))
            print(f"round {r + 1} {name}: {steps[name][-1] * 1000:.1f} ms", file=sys.stderr, flush=True)
    ref = next(iter(steps.values()))
    print(f"{args.common}; {args.rounds} rounds")
    print("| variant | median step (range) | step / first variant, median of rounds (range) |")
    print("|---|---|---|")
    for name, times in steps.items():
        ratios = [t / b for t, b in zip(times, ref)]
        print(f"| {name} | {statistics.median(times) * 1000:.0f} ms ({min(times) * 1000:.0f}-{max(times) * 1000:.0f}) | "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(
            json.dumps({"common": args.common, "variants": variants, "step_s": steps}, indent=1)
        )


if __name__ == "__main__":
    main()
