"""Readout check: the probe on centred / z-scored features and with 50 epochs, beside the protocol's.

    python scripts/readout_check.py EXPORT random:EXPORT logmel

Diagnostic only: it asks whether the readout or the features hold the gap between a pretrained encoder
and its random floor (results/recipe/README.md). ``center`` and ``z`` use the suite's own mean (a
transductive readout, not something an export could do); ``corpus`` subtracts the mean frame of 256
pretraining-corpus crops (seeded), which an export could store, and also prints how well that mean
points along the suite's (cosine) and the shared component left after it.
"""

import sys

import numpy as np
import torch

from bestrq2.data.audio import load_audio
from bestrq2.data.files import list_audio
from bestrq2.evaluation.embeddings import default_cache_dir, embed_clips
from bestrq2.evaluation.models import resolve_model
from bestrq2.evaluation.probe import ProbeConfig
from bestrq2.evaluation.report import aggregate
from bestrq2.evaluation.runner import EvalConfig, score_task
from bestrq2.evaluation.tasks import load_suite

suite = load_suite("data/suite")
paths = [suite.root / p for p in suite.clip_paths()]
torch.set_num_threads(1)


def frames_of(spec):
    m = resolve_model(spec)
    fr, _ = embed_clips(m.build, m.key, paths, default_cache_dir(), "cpu", None, 120.0, 2, False)
    return fr, m


def overall(frames, hop, cfg):
    res = {t.name: score_task(t, frames, suite.root, hop, cfg) for t in suite.tasks}
    _, o = aggregate(res)
    return o["mlp"], o["knn"], {k: round(v["mlp"], 3) for k, v in res.items()}


@torch.inference_mode()
def corpus_mean(encoder, corpus="data/corpus/manifest.jsonl", clips=256, seconds=5.0, seed=0):
    """Mean output frame of ``clips`` random ``seconds`` crops of the pretraining corpus."""
    files = list_audio(corpus)
    pick = np.random.default_rng(seed).choice(len(files), min(clips, len(files)), replace=False)
    total, n = 0.0, 0
    for i in pick:
        sr = encoder.sampling_rate
        x = load_audio(files[i], sr, int(seconds * sr), np.random.default_rng(int(i)))
        f = encoder(torch.from_numpy(x)[None])[0].double()  # [T', D]
        total, n = total + f.sum(0), n + f.shape[0]
    return (total / n).float().numpy()


def transform(frames, kind, mu_corpus=None):
    if kind == "id":
        return frames
    if kind == "corpus":
        return {p: f - mu_corpus for p, f in frames.items()}
    X = np.stack([f.mean(0) for f in frames.values()])
    mu, sd = X.mean(0), X.std(0) + 1e-6
    if kind == "center":
        return {p: f - mu for p, f in frames.items()}
    if kind == "z":
        return {p: (f - mu) / sd for p, f in frames.items()}


def geom(frames):
    X = np.stack([f.mean(0) for f in frames.values()]).astype(np.float64)
    Xn = (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)  # probe's LayerNorm
    mu = Xn.mean(0)
    shared = (mu**2).sum() / ((Xn - mu) ** 2).sum(1).mean()
    s = np.linalg.svd(Xn - mu, compute_uv=False) ** 2
    top = s[:5] / s.sum()
    return dict(shared_over_varying=round(float(shared), 2), top5_var=[round(float(t), 3) for t in top])


for spec in sys.argv[1:]:
    fr, m = frames_of(spec)
    hop = 156.25
    print(spec, geom(fr))
    mu = corpus_mean(m.build()) if spec != "logmel" else None
    if mu is not None:
        suite_mu = np.stack([f.mean(0) for f in fr.values()]).mean(0)
        cos = float(mu @ suite_mu / np.linalg.norm(mu) / np.linalg.norm(suite_mu))
        print(f"  corpus mean vs suite mean: cosine {cos:.3f}; after corpus centring {geom(transform(fr, 'corpus', mu))}")
    for kind in ["id", "center", "z"] + (["corpus"] if mu is not None else []):
        for ep in [10, 50]:
            cfg = EvalConfig(probe=ProbeConfig(epochs=ep))
            mlp, knn, per = overall(transform(fr, kind, mu), hop, cfg)
            print(f"  {kind:6s} ep{ep:3d} probe {mlp:.3f} knn {knn:.3f} {per}", flush=True)
