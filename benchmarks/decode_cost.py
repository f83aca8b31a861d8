"""CPU cost of one training crop: `load_audio` against the float32 decode it replaced, interleaved.

    python benchmarks/decode_cost.py --list data/corpus/manifest.jsonl --list runs/corpus-wav/files.txt \
        --crop-seconds 5 --files 300 --rounds 5

For each file list (a manifest or a .txt list: FLAC and WAV copies of the same audio, say), every
round reads one random crop of each of ``--files`` files with both decoders in turn and records the
process CPU time per crop (CPU time, not wall time: other tenants of a shared machine slow the wall
clock but not the work). ``float32`` is the previous decoder (sf.info, then a float32 read, a mean
over channels and a finiteness check); ``load_audio`` is the current one. The table gives medians over
rounds. A loader worker on the trainer's cores costs the trainer about this many core-ms per clip.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import soundfile as sf

from bestrq2.data import list_audio, load_audio


def float32_decode(path: str, crop: int, rng: np.random.Generator) -> np.ndarray:
    """The decoder before int16 reads: two opens, a float32 read, mean and finiteness check."""
    info = sf.info(path)
    start = int(rng.integers(0, info.frames - crop + 1)) if info.frames > crop else 0
    with sf.SoundFile(path) as f:
        if start:
            f.seek(start)
        data = f.read(min(crop, info.frames), dtype="float32", always_2d=True)
    x = data.mean(axis=1)
    assert np.isfinite(x).all()
    return np.ascontiguousarray(x[:crop], dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", action="append", required=True, help="audio folder, manifest or .txt list")
    ap.add_argument("--crop-seconds", type=float, default=5.0)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    crop = int(args.crop_seconds * args.sample_rate)
    decoders = {
        "float32 (before)": lambda p, rng: float32_decode(p, crop, rng),
        "load_audio (now)": lambda p, rng: load_audio(p, args.sample_rate, crop, rng),
    }
    print(f"| files | {' | '.join(f'{d}, ms CPU per crop' for d in decoders)} | saving |")
    print("|---|" + "---|" * (len(decoders) + 1))
    for source in args.list:
        paths = [str(p) for p in list_audio(source)[: args.files]]
        times: dict[str, list[float]] = {d: [] for d in decoders}
        for r in range(args.rounds):
            for name, decode in decoders.items():
                rng = np.random.default_rng(r)
                t = time.process_time()
                for p in paths:
                    decode(p, rng)
                times[name].append((time.process_time() - t) / len(paths) * 1000)
        med = [statistics.median(v) for v in times.values()]
        print(f"| {source} ({len(paths)}) | {' | '.join(f'{m:.2f}' for m in med)} | {1 - med[-1] / med[0]:.0%} |")


if __name__ == "__main__":
    main()
