"""How predictable are a run's targets, and from what? Diagnostic for the recipe work.

    python scripts/target_predictability.py RUN [RUN ...] [--crops 256]

On ``--crops`` seeded training-length crops of the corpus, per codebook (mean over codebooks, nats;
with ``quantizer.codebook_norms`` mixing normalisations, also per normalisation):

- ``marginal``: cross-entropy of the code histogram (fitted on half of the crops, scored on the last
  quarter, add-0.5 smoothing): what a predictor that ignores its input reaches;
- ``clip``: each token scored by the histogram of the *other* tokens of its own crop, blended with the
  marginal (blend weight chosen on the third quarter): what knowing the clip, not the position, is worth;
- ``neighbour``: the code given the previous time step's code (a bigram table fitted on half, blended
  with the marginal the same way): what reading one neighbour's code is worth;
- ``model``: the run's own cross-entropy on masked tokens of the same crops, masked as in training
  (eval mode, one mask per crop).

If ``model`` sits close to ``marginal``, the targets teach little: the pretext is nearly unpredictable.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bestrq2.config import Config
from bestrq2.data.audio import load_audio
from bestrq2.data.files import list_audio
from bestrq2.masking import mask_generator
from bestrq2.objectives import build_objective, sample_batch_masks
from bestrq2.training.checkpoint import load_checkpoint


def ce(p: np.ndarray, codes: np.ndarray) -> float:
    return float(-np.log(p[codes]).mean())


def clip_cross_entropy(k: np.ndarray, p: np.ndarray, alpha: float) -> float:
    """Codes k [B, N]: each token scored by its crop's other tokens, blended with the marginal p [V]."""
    N = k.shape[1]
    lp = []
    for row in k:
        counts = np.bincount(row, minlength=len(p)).astype(float)
        others = counts[row] - 1  # how often each token's code occurs elsewhere in the crop
        lp.append(-np.log((others + alpha * p[row]) / (N - 1 + alpha)))
    return float(np.concatenate(lp).mean())


def bigram_cross_entropy(
    table: np.ndarray, p: np.ndarray, prev: np.ndarray, cur: np.ndarray, alpha: float
) -> float:
    """The code given the previous time step's: a bigram count table [V, V] blended with the marginal p."""
    cond = (table + alpha * p[None]) / (table.sum(1, keepdims=True) + alpha)
    return float(-np.log(cond[prev.ravel(), cur.ravel()]).mean())


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--data", default="data/corpus/manifest.jsonl")
    ap.add_argument("--crops", type=int, default=256)
    args = ap.parse_args()
    files = list_audio(args.data)
    for run in args.runs:
        ckpt = load_checkpoint(run)
        cfg = Config.from_dict(ckpt["config"])
        model = build_objective(cfg)
        model.load_state_dict(ckpt["model"])
        model.eval()
        sr, S = cfg.frontend.sample_rate, int(cfg.data.crop_seconds * cfg.frontend.sample_rate)
        rng = np.random.default_rng(0)
        wavs = []
        for i in rng.choice(len(files), args.crops, replace=len(files) < args.crops):
            x = load_audio(files[i], sr, S, rng)
            if len(x) == S:
                wavs.append(torch.from_numpy(x))
        wav = torch.stack(wavs)
        lengths = torch.full((len(wav),), S)
        feats = model.frontend(wav, lengths)
        B, N, _ = feats["raw"].shape
        codes = model.quantizer.frontend_codes(feats).numpy()  # [B, N, C]
        V, C = cfg.quantizer.codebook_size, codes.shape[-1]
        fb, tb = feats["grid"]
        idx = np.arange(B)
        fit, tune, test = idx < B // 2, (idx >= B // 2) & (idx < 3 * B // 4), idx >= 3 * B // 4
        res = {"marginal": [], "clip": [], "neighbour": []}
        alphas = [1.0, 4.0, 16.0, 64.0, 256.0]
        for c in range(C):
            k = codes[..., c]  # [B, N]
            p = np.bincount(k[fit].ravel(), minlength=V) + 0.5
            p /= p.sum()
            res["marginal"].append(ce(p, k[test].ravel()))

            g = k.reshape(B, fb, tb)
            prev, cur = g[:, :, :-1], g[:, :, 1:]
            table = np.zeros((V, V))
            np.add.at(table, (prev[fit].ravel(), cur[fit].ravel()), 1.0)
            # histograms are fitted on the first half of the crops, blend weights chosen on the third
            # quarter, and every score read on the last quarter
            a = min(alphas, key=lambda a: clip_cross_entropy(k[tune], p, a))  # noqa: B023 (called at once)
            res["clip"].append(clip_cross_entropy(k[test], p, a))
            args_tune, args_test = (prev[tune], cur[tune]), (prev[test], cur[test])
            a = min(alphas, key=lambda a: bigram_cross_entropy(table, p, *args_tune, a))  # noqa: B023
            res["neighbour"].append(bigram_cross_entropy(table, p, *args_test, a))
        masks = sample_batch_masks(cfg, lengths, S, mask_generator(cfg.train.seed, 0, 10**6))
        out = model(wav, lengths, masks)
        line = " ".join(f"{k} {np.mean(v):.3f}" for k, v in res.items())
        norms = cfg.quantizer.norms
        if len(set(norms)) > 1:  # target b * num_codebooks + c is codebook c of band b
            for c, norm in enumerate(norms):
                part = " ".join(f"{k} {np.mean(v[c :: len(norms)]):.3f}" for k, v in res.items())
                print(f"{run}: codebook {c} ({norm} normalisation): {part}", flush=True)
        print(f"{run}: {line} model {float(out['loss']):.3f} (acc {float(out['acc']):.3f}; "
              f"{C} codebooks x {V} codes, {B} crops, mask ratio {masks.ratio:.2f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
