"""Peak memory of a CPU pretraining run: the whole process tree (trainer + data-loader workers).

    python benchmarks/peak_rss.py --data data/test/corpus --steps 100
    python benchmarks/peak_rss.py --data DATA --steps 50 -- --preset small --batch-size 8   # more pretrain args

Runs ``python -m bestrq2.cli pretrain --preset tiny --data DATA --out TMP --max-steps N --no-progress``
as a subprocess and samples, every ``--interval`` seconds from /proc, the resident set (RSS) and the
proportional set (PSS: shared pages split among the processes sharing them, so the sum over the tree
is what the tree really occupies; forked loader workers share most of the trainer's pages) of the
trainer and all its descendants. Prints the peak of the sums, the trainer's own peak (its VmHWM, exact
between samples too), and training speed from the run's summary.json and log.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the (command name)
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(root: int) -> list[int]:
    kids, out, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def memory_of(pid: int, pss: bool) -> dict[str, int]:
    """Bytes: rss, hwm (VmHWM) and, if asked, pss (0 if unreadable); empty if the process is gone.
    PSS comes from smaps_rollup, which walks the page tables: ~10 ms of CPU per 0.5 GiB process."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, IndexError, ValueError):
        return {}
    hwm = next(
        (int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), rss
    )
    out = {"rss": rss, "hwm": hwm}
    if pss:
        out["pss"] = 0
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    out["pss"] = int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return out


def sample_run(cmd: list[str], interval: float, pss_interval: float) -> dict[str, float]:
    t0 = time.time()
    cpu0 = time.process_time()
    proc = subprocess.Popen(cmd)
    peak = {"tree_rss": 0, "tree_pss": 0, "main_rss": 0, "main_hwm": 0, "processes": 0}
    next_pss = 0.0
    while proc.poll() is None:
        pss = time.time() >= next_pss
        if pss:
            next_pss = time.time() + pss_interval
        mems = {pid: memory_of(pid, pss) for pid in tree(proc.pid)}
        mems = {pid: m for pid, m in mems.items() if m}
        if mems:
            peak["tree_rss"] = max(peak["tree_rss"], sum(m["rss"] for m in mems.values()))
            if pss:
                peak["tree_pss"] = max(peak["tree_pss"], sum(m["pss"] for m in mems.values()))
            peak["processes"] = max(peak["processes"], len(mems))
            main = mems.get(proc.pid, {})
            peak["main_rss"] = max(peak["main_rss"], main.get("rss", 0))
            peak["main_hwm"] = max(peak["main_hwm"], main.get("hwm", 0))
        time.sleep(interval)
    if proc.returncode:
        raise SystemExit(f"pretrain failed with exit code {proc.returncode}")
    return {**peak, "wall_s": time.time() - t0, "sampler_cpu_s": time.process_time() - cpu0}


def speed(run: Path) -> dict[str, float]:
    summary = json.loads((run / "summary.json").read_text())
    out = {
        "steps": summary["step"],
        "loop_s": summary["elapsed_s"],
        "steps_per_s": summary["step"] / summary["elapsed_s"],
    }
    with open(run / "log.csv") as f:
        rates = [float(r["clips_per_s"]) for r in csv.DictReader(f)][1:]  # the first window holds start-up
    if rates:
        out["median_logged_clips_per_s"] = statistics.median(rates)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="audio folder, manifest or shards for pretrain --data")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--interval", type=float, default=0.05, help="sampling period of RSS in seconds")
    ap.add_argument(
        "--pss-interval", type=float, default=1.0, help="sampling period of PSS (costly to read) in seconds"
    )
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("extra", nargs="*", help="more pretrain arguments, after --")
    args = ap.parse_args()
    gib = 2**30
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "bestrq2.cli", "pretrain", "--preset", args.preset, "--data", args.data,
               "--out", str(run), "--max-steps", str(args.steps), "--no-progress", "--device", "cpu", *args.extra]  # fmt: skip
        peak = sample_run(cmd, args.interval, args.pss_interval)
        rate = speed(run)
    report = {"command": "python " + " ".join(cmd[1:]), **peak, **rate}
    print(f"\n{report['command']}")
    print(f"peak of the process tree ({peak['processes']} processes at most): RSS sum {peak['tree_rss'] / gib:.2f} GiB "
          f"(every {args.interval:g} s), PSS sum {peak['tree_pss'] / gib:.2f} GiB (every {args.pss_interval:g} s)")  # fmt: skip
    print(
        f"trainer process alone: peak RSS {peak['main_hwm'] / gib:.2f} GiB (VmHWM; sampled max {peak['main_rss'] / gib:.2f})"
    )
    logged = (
        f", median logged {rate['median_logged_clips_per_s']:.1f} clips/s"
        if "median_logged_clips_per_s" in rate
        else ""
    )
    print(f"{rate['steps']} steps in {rate['loop_s']:.1f} s of training loop: {rate['steps_per_s']:.2f} steps/s{logged}; "
          f"wall {peak['wall_s']:.1f} s with start-up; the sampler used {peak['sampler_cpu_s']:.1f} s of CPU")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
