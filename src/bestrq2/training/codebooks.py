"""Fitting codebooks: k-means centroids of the quantizer's own inputs (``quantizer.centroids``).

BEST-RQ's codes are the nearest of random unit vectors to a random projection of the input: random
hyperplanes that cut the inputs wherever they fall. HuBERT's targets are k-means clusters instead, first of
MFCCs and then of the previous iteration's features, so that one code stands for one dense region of the
inputs. This module fits such centroids for any quantizer design: it draws random crops of the pretraining
audio, runs them through the frontend and the quantizer's own input path (patches or a teacher's features,
bands, lifters, norms: :meth:`RandomProjectionQuantizer.frontend_inputs`) and runs k-means (k-means++
seeding, Lloyd iterations) for every target on its own. The file format (safetensors, with the fields that
define the inputs as metadata) is :func:`bestrq2.quantizer.save_centroids` / ``load_centroids``.

    bestrq2 codebooks --out runs/codes/tiny.safetensors --crops 2048          # the preset's own inputs
    bestrq2 pretrain --out runs/km --set quantizer.centroids=runs/codes/tiny.safetensors
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from bestrq2.config import Config, ConfigError
from bestrq2.data.audio import AudioError, load_audio
from bestrq2.data.files import list_audio
from bestrq2.objectives import build_objective

log = logging.getLogger(__name__)


def kmeans(x: Tensor, k: int, iters: int = 30, generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    """Lloyd's k-means of ``x`` [n, d] with k-means++ seeding -> (centroids [k, d], mean squared distance).

    A cluster that empties is reseeded at the point farthest from its centroid, so all ``k`` stay in use."""
    x = x.double()
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means of {n} points into {k} clusters: draw more crops (--crops)")
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):  # k-means++: each next seed drawn with probability proportional to d^2
        i = int(torch.multinomial(d2 / d2.sum(), 1, generator=generator)) if d2.sum() > 0 else int(d2.argmax())
        centroids.append(x[i])
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(1))
    c = torch.stack(centroids)
    for _ in range(iters):
        assign, dist = _nearest(x, c)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled, None]
        for j in torch.nonzero(~filled).flatten().tolist():
            far = int(dist.argmax())
            c[j], dist[far] = x[far], 0.0
    _, dist = _nearest(x, c)
    return c.float(), float(dist.mean())


def _nearest(x: Tensor, c: Tensor, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Index of the nearest centroid of every point, and its squared distance."""
    idx, dist = [], []
    sq = (c**2).sum(1)
    for s in range(0, x.shape[0], chunk):
        xs = x[s : s + chunk]
        d = (xs**2).sum(1, keepdim=True) - 2 * xs @ c.T + sq  # [chunk, k]
        m = d.min(1)
        idx.append(m.indices)
        dist.append(m.values.clamp_min(0))
    return torch.cat(idx), torch.cat(dist)


@torch.no_grad()
def sample_inputs(
    cfg: Config, data: str, crops: int, seed: int = 0, device: str = "cpu", progress: bool = False
) -> tuple[Tensor, dict]:
    """Prepared quantizer inputs [tokens, targets, input / bands] (on the CPU) of ``crops`` random training crops of
    ``data`` (files drawn with replacement, one crop each), and counts of the crops used and of the files skipped.
    ``device`` runs the frontend and the teacher, if any."""
    plain = dataclasses.replace(cfg, quantizer=dataclasses.replace(cfg.quantizer, centroids=""))
    objective = build_objective(plain).eval().to(device)
    if not hasattr(objective, "quantizer"):
        raise ConfigError(f"bestrq2 codebooks: method {cfg.method!r} has no code targets to fit")
    fe, quantizer = objective.frontend, objective.quantizer
    files = list_audio(data)
    rng = np.random.default_rng(seed)
    samples = int(cfg.data.crop_seconds * fe.cfg.sample_rate)
    out, skipped = [], 0
    bar = tqdm(total=crops, desc="codebooks: crops", unit="crop", disable=not progress)
    while len(out) < crops:
        path = files[int(rng.integers(len(files)))]
        try:
            wav = load_audio(path, fe.cfg.sample_rate, samples, rng)
        except AudioError as e:
            skipped += 1
            log.warning("codebooks: skipped %s", e)
            if skipped > max(100, 10 * crops):
                raise RuntimeError(f"codebooks: {skipped} files of {data} could not be read") from e
            continue
        feats = fe(torch.from_numpy(wav)[None].to(device))
        xs = quantizer.frontend_inputs(feats)[0]  # [N, T, D]
        out.append(xs[~feats["padding"][0]].cpu())
        bar.update()
    bar.close()
    return torch.cat(out), {"crops": crops, "skipped_files": skipped}


def fit_codebooks(
    cfg: Config, data: str, crops: int = 512, iters: int = 30, seed: int = 0, device: str = "cpu", progress: bool = False
) -> tuple[Tensor, dict]:
    """Centroids [targets, codebook_size, input / bands] for ``cfg``'s quantizer, fitted on ``data``: the inputs are
    computed on ``device``, k-means runs on the CPU (in float64, seeded)."""
    x, info = sample_inputs(cfg, data, crops, seed, device, progress)
    g = torch.Generator().manual_seed(seed)
    fitted, msd = [], []
    for t in range(x.shape[1]):
        c, m = kmeans(x[:, t], cfg.quantizer.codebook_size, iters, g)
        fitted.append(c)
        msd.append(round(m, 4))
        log.info("codebooks: target %d of %d, mean squared distance %.4f", t + 1, x.shape[1], m)
    info |= {"tokens": int(x.shape[0]), "iters": iters, "seed": seed, "data": str(data), "mean_sq_distance": msd}
    return torch.stack(fitted), info
