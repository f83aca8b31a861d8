"""Layer readouts: the final layer, block 1, and averages of per-token normalised layers, plain and centred.

python scripts/layer_readouts.py EXPORT random:EXPORT
"""
# ruff: noqa: B023, E731  (a diagnostic script: the readouts are lambdas over the loop's model)

import sys

import numpy as np
import torch

from bestrq2.evaluation.diagnose import LayerStack
from bestrq2.evaluation.embeddings import default_cache_dir, embed_clips
from bestrq2.evaluation.models import _digest, resolve_model
from bestrq2.evaluation.report import aggregate
from bestrq2.evaluation.runner import EvalConfig, score_task
from bestrq2.evaluation.tasks import load_suite

suite = load_suite("data/suite")
paths = [suite.root / p for p in suite.clip_paths()]
torch.set_num_threads(1)


def ln(x):
    return (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-5)


def overall(frames):
    res = {t.name: score_task(t, frames, suite.root, 156.25, EvalConfig()) for t in suite.tasks}
    _, o = aggregate(res)
    return o["mlp"], o["knn"]


def center(frames):
    mu = np.stack([f.mean(0) for f in frames.values()]).mean(0)
    return {p: f - mu for p, f in frames.items()}


for spec in sys.argv[1:]:
    m = resolve_model(spec)
    fr, _ = embed_clips(
        lambda: LayerStack(m.build(), False),
        _digest(m.key, "layerstack-frames"),
        paths,
        default_cache_dir(),
        "cpu",
        None,
        120.0,
        2,
        False,
    )
    D = 192
    L = next(iter(fr.values())).shape[1] // D
    lay = lambda f, i: f[:, i * D : (i + 1) * D]
    ro = {
        "final": lambda f: lay(f, L - 1),
        "block1": lambda f: lay(f, 1),
        "mean_ln_blocks+final": lambda f: np.mean([ln(lay(f, i)) for i in range(1, L)], 0),
        "mean_ln_all": lambda f: np.mean([ln(lay(f, i)) for i in range(L)], 0),
        "mean_ln_last3": lambda f: np.mean([ln(lay(f, i)) for i in range(L - 3, L)], 0),
    }
    for name, fn in ro.items():
        feats = {p: fn(f) for p, f in fr.items()}
        a = overall(feats)
        b = overall(center(feats))
        print(
            f"{spec[-30:]:30s} {name:22s} probe {a[0]:.3f} knn {a[1]:.3f} | centered probe {b[0]:.3f} knn {b[1]:.3f}",
            flush=True,
        )
