"""A copy of the demo corpus small enough to travel to a lent GPU machine (its working tree is limited
to 64 MiB): a seeded random subset of the clips, re-encoded as Ogg Opus at about 16 kbit/s.

Opus at this rate keeps a 16 kHz clip's spectrum to within about 3 dB above 6 kHz (at 6 kbit/s it drops the
band above 4-6 kHz, 12-60 dB down); measured on 6 corpus clips when this was written. Files are added in
a seeded random order until ``--budget-mib`` is reached, so every domain keeps about its share.

    python scripts/carry_corpus.py data/corpus .carry/corpus --budget-mib 46
"""

from __future__ import annotations

import argparse
import io
import json
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

LEVEL = 0.96  # libsndfile's Opus compression level: about 16 kbit/s on 16 kHz mono


def encode(args: tuple[str, str]) -> tuple[str, bytes, float]:
    src, rel = args
    x, sr = sf.read(src, dtype="float32", always_2d=False)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="OGG", subtype="OPUS", compression_level=LEVEL)
    return rel, buf.getvalue(), len(x) / sr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path, help="corpus folder with manifest.jsonl")
    ap.add_argument("out", type=Path)
    ap.add_argument("--budget-mib", type=float, default=46.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rows = [json.loads(line) for line in (args.corpus / "manifest.jsonl").read_text().splitlines() if line.strip()]
    random.Random(args.seed).shuffle(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    budget, used, hours, kept = args.budget_mib * 2**20, 0, 0.0, []
    jobs = [(str(args.corpus / r["path"]), str(Path(r["path"]).with_suffix(".ogg"))) for r in rows]
    step = 8 * args.workers  # files encoded per round; rounds stop once the budget is (nearly) spent
    with ProcessPoolExecutor(args.workers) as pool:
        for start in range(0, len(jobs), step):
            if used > 0.99 * budget:
                break
            for row, (rel, data, seconds) in zip(rows[start:], pool.map(encode, jobs[start : start + step])):
                if used + len(data) > budget:
                    continue  # a smaller file later may still fit
                dst = args.out / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(data)
                used += len(data)
                hours += seconds / 3600
                kept.append({**row, "path": rel})
    (args.out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    by_domain: dict[str, float] = {}
    for r in kept:
        by_domain[r.get("domain", "?")] = by_domain.get(r.get("domain", "?"), 0.0) + r.get("duration", 0.0) / 3600
    print(f"{len(kept)} of {len(rows)} clips, {hours:.2f} h, {used / 2**20:.1f} MiB -> {args.out} "
          f"({', '.join(f'{k} {v:.2f} h' for k, v in sorted(by_domain.items()))})")  # fmt: skip


if __name__ == "__main__":
    main()
