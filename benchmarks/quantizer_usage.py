"""Codebook usage of the random-projection quantizer on real audio, per input normalisation.

Also prints the dB statistics of the log-mel patches (what the frontend's norm_mean / norm_std
are set from). Usage:

    python benchmarks/quantizer_usage.py --data data/corpus [--clips 400] [--codebook-size 8192]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bestrq2.config import FrontendConfig, QuantizerConfig
from bestrq2.data import list_audio
from bestrq2.data.audio import AudioError, load_audio
from bestrq2.frontend import Frontend
from bestrq2.quantizer import RandomProjectionQuantizer, code_usage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="audio folder or manifest")
    ap.add_argument("--clips", type=int, default=400, help="random 10 s crops to analyse")
    ap.add_argument("--codebook-size", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    fe_cfg = FrontendConfig()
    fe = Frontend(fe_cfg)
    files = list_audio(args.data)
    rng = np.random.default_rng(args.seed)
    crop = int(10 * fe_cfg.sample_rate)
    raws, skipped = [], 0
    t0 = time.time()
    for i in rng.choice(len(files), size=min(args.clips, len(files)), replace=False):
        try:
            wav = load_audio(files[i], fe_cfg.sample_rate, crop, rng)
        except AudioError:
            skipped += 1
            continue
        with torch.no_grad():
            out = fe(torch.from_numpy(wav)[None])
        raws.append(out["raw"][0][~out["padding"][0]])  # real patches only [n, 256]
    x = torch.cat(raws)
    print(f"{len(raws)} crops from {args.data} ({skipped} unusable), {x.shape[0]} patches, {time.time() - t0:.1f} s")
    print(f"dB of real patches: mean {x.mean():.2f}  std {x.std():.2f}  min {x.min():.1f}  max {x.max():.1f}")
    print(f"\n| input normalisation | codes used (of {args.codebook_size}) | perplexity |")
    print("|---|---|---|")
    for norm in ("none", "global", "patch"):
        q = RandomProjectionQuantizer(
            QuantizerConfig(codebook_size=args.codebook_size, norm=norm, seed=args.seed), fe_cfg.patch_dim, fe_cfg
        )
        u = code_usage(q(x), args.codebook_size)
        print(f"| {norm} | {u['codes_used']:.0f} | {u['perplexity']:.0f} |")


if __name__ == "__main__":
    main()
