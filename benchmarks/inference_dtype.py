"""Encoder inference at fp32, bf16 and int8 on this machine, timed interleaved.

    python benchmarks/inference_dtype.py --presets tiny,small --batch-size 8 --rounds 7

Each round embeds the same batch of 10 s noise clips at every dtype in turn, so that load from other
processes hits each dtype alike; figures are medians over rounds. Two timings per dtype: the whole
exported module (log-mel frontend in fp32 + transformer) and the transformer alone on the frontend's
patches. Ratios are to fp32. With ``--export DIR`` the weights of that export are used instead of a
random init (the speed does not depend on the weights; the agreement with fp32 does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from bestrq2.bench.throughput import device_name
from bestrq2.config import get_preset
from bestrq2.export import inference_encoder, load_encoder
from bestrq2.inference import _autocast
from bestrq2.precision import DTYPES, cpu_has_bf16, int8_engine, set_inference_dtype


def build(preset: str | None, export: str | None, dtype: str):
    if export:
        return load_encoder(export, dtype=dtype)
    cfg = get_preset(preset)
    torch.manual_seed(0)
    enc = inference_encoder("vit", cfg.frontend, cfg.encoder, None, "mean").eval()
    return set_inference_dtype(enc, dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--export", help="an export folder instead of the presets")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device: {device_name(torch.device('cpu'))}, threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"native bf16: {cpu_has_bf16()}, int8 engine: {int8_engine()}")  # fmt: skip
    report = []
    for preset in [None] if args.export else args.presets.split(","):
        encs = {d: build(preset, args.export, d) for d in DTYPES}
        sr = encs["fp32"].sampling_rate
        wav = torch.randn(args.batch_size, int(args.seconds * sr), generator=torch.Generator().manual_seed(0)) * 0.1
        with torch.no_grad():
            feats = encs["fp32"].frontend(wav)
            ref = encs["fp32"](wav)
            agree = {d: float(F.cosine_similarity(e(wav).flatten(0, 1), ref.flatten(0, 1), dim=-1).mean()) for d, e in encs.items()}
            whole = {d: [] for d in DTYPES}
            core = {d: [] for d in DTYPES}
            for r in range(args.rounds + 1):
                for d, e in encs.items():
                    t = time.perf_counter()
                    e(wav)
                    t1 = time.perf_counter()
                    with _autocast(e.compute_dtype, wav.device):
                        e.encoder(feats["patches"], feats["grid"])
                    t2 = time.perf_counter()
                    if r:  # round 0 warms up
                        whole[d].append(t1 - t)
                        core[d].append(t2 - t1)
        row = {"model": args.export or preset, "batch": args.batch_size, "seconds": args.seconds}
        for d in DTYPES:
            w, c = statistics.median(whole[d]), statistics.median(core[d])
            row[d] = {"clips_per_s": args.batch_size / w, "encoder_only_clips_per_s": args.batch_size / c,
                      "cosine_to_fp32": agree[d], "effective": encs[d].compute_dtype}  # fmt: skip
        report.append(row)
        base = row["fp32"]
        for d in DTYPES:
            x = row[d]
            print(f"{row['model']:>8} {d:>5} ({x['effective']}): {x['clips_per_s']:7.1f} clips/s "
                  f"(x{x['clips_per_s'] / base['clips_per_s']:.2f}), transformer alone {x['encoder_only_clips_per_s']:7.1f} "
                  f"(x{x['encoder_only_clips_per_s'] / base['encoder_only_clips_per_s']:.2f}), "
                  f"cosine to fp32 {x['cosine_to_fp32']:.4f}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name(torch.device("cpu")), "threads": torch.get_num_threads(),
                       "torch": torch.__version__, "rounds": args.rounds, "rows": report}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
