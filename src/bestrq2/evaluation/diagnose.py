"""Layer-wise diagnosis: which layer of an encoder holds what, against random-init encoders of its shape.

    results = diagnose(["runs/tiny"], "data/suite", out="results/diagnose")

For each model (an export folder, a run folder or a checkpoint; ViT encoders only):

1. every clip goes through the encoder **once** (``BestRQ2Encoder.forward_all``, concat pooling) and the
   clip mean of every layer is kept ([patch embedding + positions, block 1 .. L, final norm]), cached
   like ``evaluate``'s embeddings under a key of the model + "all-layers"; mean pooling (over the
   frequency blocks) is the mean of the concat feature's D-wide blocks, so both poolings come from
   one pass (frame tasks keep every frame instead of the clip mean);
2. per layer and pooling: the linear probe and kNN of ``evaluate`` (:func:`score_task`), overall
   scores weighted by test size (:func:`aggregate`), and the effective rank of the centred clip-mean
   matrix (exp of the entropy of its normalised singular values);
3. the same for random-init encoders of the same architecture (``seeds``, 2 by default): the noise;
4. the patch embedding's norm against the positions' (sin-cos only);
5. with a run folder or checkpoint (which holds the quantizer): target statistics on the suite clips
   (codes used, perplexity, share of the most frequent code) and a bag-of-codes probe (each clip's
   normalised code histogram as its feature, the same protocol);
6. context (``context=True``): a second pass with every token attending to itself only
   (``BestRQ2Encoder.tokens_alone``), scored at every layer. A gain over random init that survives it is a
   better per-patch map of log-mel; only the part that does not survive is context the encoder learned.

Writes ``diagnose.json``, ``diagnose.md`` and ``diagnose.png`` (score against layer) to ``out``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bestrq2.config import Config
from bestrq2.data.audio import AudioError, load_audio
from bestrq2.evaluation.baselines import random_encoder
from bestrq2.evaluation.embeddings import default_cache_dir, embed_clips
from bestrq2.evaluation.models import _Arch, _config_json, _configs, _digest, resolve_model
from bestrq2.evaluation.report import aggregate, domain_rank, save_figure
from bestrq2.evaluation.runner import EvalConfig, score_task
from bestrq2.evaluation.tasks import Suite, Task, load_suite
from bestrq2.export import load_encoder
from bestrq2.inference import batch_with_lengths, split_chunks

FORMAT = "bestrq2-diagnose"
POOLINGS = ("mean", "concat")
GEOMETRY_CLIPS = 64
"""Clips (a seeded subset) for the patch-embedding / position norms."""
BAG_MAX_DIM = 16384
"""The bag-of-codes feature uses the first codebooks whose histograms fit in this many dimensions."""


# --------------------------------------------------------------------------- wrappers around encoders


class LayerStack(nn.Module):
    """Every layer of a :class:`~bestrq2.inference.BestRQ2Encoder` side by side on the feature axis.

    ``forward(wav, lengths) -> [B, T', num_layers * D]`` (``clip_mean=False``), or each clip's mean over
    its own frames as one frame ``[B, 1, num_layers * D]`` (``clip_mean=True``, what clip tasks use);
    layer ``i`` is ``[..., i * D : (i + 1) * D]``. Follows the encoder contract (``output_dim``,
    ``hop_size_in_ms``, ``sampling_rate``, ``output_lengths``), so :func:`embed_clips` batches and caches it.
    """

    def __init__(self, encoder: nn.Module, clip_mean: bool = True):
        super().__init__()
        if not hasattr(encoder, "forward_all"):
            raise ValueError(
                f"{type(encoder).__name__} has no forward_all: the diagnosis needs a ViT encoder"
            )
        self.encoder = encoder
        self.clip_mean = clip_mean
        self.num_layers = int(encoder.num_layers)
        self.layer_dim = int(encoder.output_dim)
        self.output_dim = self.num_layers * self.layer_dim
        self.sampling_rate = encoder.sampling_rate
        self.hop_size_in_ms = encoder.hop_size_in_ms

    def output_lengths(self, lengths: Tensor) -> Tensor:
        if self.clip_mean:
            return torch.ones_like(lengths)
        return self.encoder.output_lengths(lengths)

    def forward(self, wav: Tensor, lengths: Tensor | None = None, layer: int | None = None) -> Tensor:
        wav, lengths = batch_with_lengths(wav, lengths)
        x = torch.cat(self.encoder.forward_all(wav, lengths), dim=-1)  # [B, T', L * D]
        if not self.clip_mean:
            return x
        n = self.encoder.output_lengths(lengths).to(x.device)  # [B]
        keep = (torch.arange(x.shape[1], device=x.device)[None] < n[:, None]).to(x.dtype)  # [B, T']
        return ((x * keep[..., None]).sum(1) / n[:, None].to(x.dtype))[:, None]  # [B, 1, L * D]


class CodeCounts(nn.Module):
    """Quantizer codes of every real token of a clip: ``forward(wav, lengths) -> [B, 1, k * V]``, the
    code counts of the first ``k`` codebooks; ``totals`` [C, V] accumulates every codebook's counts over
    all clips seen (each clip goes through once: use it without an embedding cache)."""

    def __init__(self, objective: nn.Module, sample_rate: int, bag_codebooks: int):
        super().__init__()
        self.frontend = objective.frontend
        self.quantizer = objective.quantizer
        C, V = self.quantizer.codebook.shape[:2]
        self.num_codebooks, self.codebook_size, self.bag_codebooks = int(C), int(V), bag_codebooks
        self.sampling_rate = sample_rate
        self.output_dim = bag_codebooks * self.codebook_size
        self.hop_size_in_ms = float(self.frontend.cfg.hop_size_in_ms)
        self.totals = torch.zeros(self.num_codebooks, self.codebook_size, dtype=torch.float64)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return torch.ones_like(lengths)

    def forward(self, wav: Tensor, lengths: Tensor | None = None, layer: int | None = None) -> Tensor:
        wav, lengths = batch_with_lengths(wav, lengths)
        feats = self.frontend(wav, lengths)
        codes = self.quantizer.frontend_codes(feats)  # [B, N, C]
        real = (~feats["padding"]).to(torch.float32)  # [B, N]
        B, V = codes.shape[0], self.codebook_size
        counts = torch.zeros(B, self.num_codebooks, V, device=codes.device)
        for c in range(self.num_codebooks):
            counts[:, c].scatter_add_(1, codes[..., c], real)  # [B, V]
        self.totals += counts.sum(0).double().cpu()
        return counts[:, : self.bag_codebooks].reshape(B, 1, -1)  # [B, 1, k * V]


# --------------------------------------------------------------------------- measures


def effective_rank(x: np.ndarray | Tensor) -> float:
    """exp(entropy of the normalised singular values) of the centred rows of x [N, D]: 1 (all rows on
    one line) .. min(N - 1, D) (a flat spectrum)."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if float(s.sum()) <= 0:
        return 1.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _summary(values: list[float | None]) -> dict[str, float | None]:
    """Mean and half-range ("spread") of the random-init seeds' scores."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "spread": None, "min": None, "max": None}
    lo, hi = min(vals), max(vals)
    return {"mean": sum(vals) / len(vals), "spread": (hi - lo) / 2, "min": lo, "max": hi}


@torch.no_grad()
def patch_position_norms(encoder: nn.Module, wavs: list[np.ndarray], device: torch.device) -> dict[str, Any]:
    """Mean L2 norm over real tokens of the patch embedding ``patch_embed(patches)`` and of the
    position part added to it (sin-cos); with rotary positions there is nothing added: a note."""
    vit = encoder.encoder
    pe_sum = pos_sum = 0.0
    count = 0
    for wav in wavs:
        x = torch.from_numpy(wav)[None].to(device)
        lengths = torch.tensor([x.shape[1]], device=device)
        pieces, piece_len, _ = split_chunks(x, lengths, encoder.chunk_samples)
        feats = encoder.frontend(pieces, piece_len)
        pe = vit.patch_embed(feats["patches"])  # [nc, N, D]
        tokens, rope = vit.embed(feats["patches"], feats["grid"])  # patch embedding + positions
        if rope is not None:
            return {"note": "rotary positions (rope): nothing is added to the patch embedding"}
        real = ~feats["padding"]  # [nc, N]
        pe_sum += float(pe.norm(dim=-1)[real].sum())
        pos_sum += float((tokens - pe).norm(dim=-1)[real].sum())
        count += int(real.sum())
    if count == 0:
        return {"note": "no clips"}
    pe_norm, pos_norm = pe_sum / count, pos_sum / count
    return {"patch_norm": pe_norm, "position_norm": pos_norm, "ratio": pe_norm / max(pos_norm, 1e-12),
            "tokens": count}  # fmt: skip


# --------------------------------------------------------------------------- one encoder, every layer


def layer_names(num_layers: int) -> list[str]:
    """Names of :meth:`BestRQ2Encoder.forward_all`'s entries: embed, block 1 .. block L, final."""
    return ["embed"] + [f"block {i}" for i in range(1, num_layers - 1)] + ["final"]


def _layer_frames(
    frames: dict[Path, np.ndarray], layer: int, dim: int, pooling: str, width: int
) -> dict[Path, np.ndarray]:
    """One layer's slice of the stacked features; 'mean' averages its frequency blocks of ``width``."""
    out = {}
    for p, f in frames.items():
        x = f[:, layer * dim : (layer + 1) * dim]  # [T', fb * width]
        if pooling == "mean":
            x = x.reshape(len(x), dim // width, width).mean(1)  # [T', width]
        out[p] = x
    return out


def _score_all(
    tasks: list[Task], frames: dict[Path, np.ndarray], root: Path, hop: float, cfg: EvalConfig
) -> dict[str, Any]:
    """Probe + kNN of every task (single-threaded, as ``evaluate``), aggregated."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {t.name: score_task(t, frames, root, hop, cfg) for t in tasks}
    finally:
        torch.set_num_threads(threads)
    scores, skipped = {}, {}
    for t in sorted(tasks, key=lambda t: (domain_rank(t.domain), t.name)):
        r = results[t.name]
        if isinstance(r, str):
            skipped[t.name] = r
        else:
            scores[t.name] = r
    domains, overall = aggregate(scores)
    return {"mlp": overall["mlp"], "knn": overall["knn"], "test": overall["test"], "tasks": scores,
            "domains": domains, "skipped": skipped}  # fmt: skip


def _clip_means(frames: dict[Path, np.ndarray]) -> np.ndarray:
    """[N, D] in path order (so the ranks do not depend on which clips came from the cache)."""
    return np.stack([frames[p].mean(0) for p in sorted(frames)]) if frames else np.zeros((0, 1), np.float32)


def diagnose_encoder(
    build: Callable[[], nn.Module],
    key: str,
    name: str,
    suite: Suite,
    cfg: EvalConfig,
    cache_dir: str | Path | None,
    width: int,
    progress: bool = True,
    log: Callable[[str], None] = print,
    context: bool = False,
) -> dict[str, Any]:
    """Every layer of one ViT encoder (``build()`` gives it, concat pooling) on ``suite``, both poolings;
    with ``context``, also every layer with each token encoded alone (the ``alone`` entry)."""
    t0 = time.perf_counter()
    clip_mean = all(t.kind == "clip" for t in suite.tasks)
    paths = [suite.root / p for p in suite.clip_paths()]
    built: list[nn.Module] = []

    def make(alone: bool = False) -> nn.Module:
        enc = build()
        if getattr(enc, "pooling", None) != "concat":
            raise ValueError(
                f"{name}: the diagnosis builds encoders with concat pooling, got {enc.pooling!r}"
            )
        built.append(enc)
        enc.tokens_alone = alone
        return LayerStack(enc, clip_mean)

    mode = "clip-mean" if clip_mean else "frames"

    def frames_of(alone: bool) -> tuple[dict[Path, np.ndarray], dict[str, Any]]:
        tags = ("all-layers", "concat", mode) + (("tokens-alone",) if alone else ())
        frames, stats = embed_clips(
            lambda: make(alone), _digest(key, *tags), paths, cache_dir, cfg.device, None, cfg.batch_seconds,
            cfg.workers, progress,
        )  # fmt: skip
        for path, reason in stats["failed"].items():  # type: ignore[union-attr]
            log(f"skipped unreadable clip {path}: {reason}")
        return frames, stats

    frames, stats = frames_of(False)
    encoder = built[0] if built else build()  # built by the usual pass, so not tokens-alone
    t1 = time.perf_counter()
    n_layers, dim = int(encoder.num_layers), int(encoder.output_dim)
    hop = float(encoder.hop_size_in_ms)
    names = layer_names(n_layers)

    def score_layers(frames: dict[Path, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        poolings: dict[str, list[dict[str, Any]]] = {}
        for pooling in POOLINGS:
            rows = []
            for layer in range(n_layers):
                feats = _layer_frames(frames, layer, dim, pooling, width)
                row = {"layer": layer, "name": names[layer], "dim": dim if pooling == "concat" else width}
                row |= _score_all(suite.tasks, feats, suite.root, hop, cfg)
                row["effective_rank"] = effective_rank(_clip_means(feats))
                rows.append(row)
            poolings[pooling] = rows
        return poolings

    poolings = score_layers(frames)
    alone = score_layers(frames_of(True)[0]) if context else None
    t2 = time.perf_counter()
    rng = np.random.default_rng(0)
    chosen = (
        sorted(rng.choice(len(paths), min(GEOMETRY_CLIPS, len(paths)), replace=False).tolist())
        if paths
        else []
    )
    wavs = []
    for i in chosen:
        try:
            wavs.append(load_audio(paths[i], int(encoder.sampling_rate), check_silence=False))
        except AudioError:
            pass
    device = torch.device(cfg.device)
    geometry = patch_position_norms(encoder.to(device).eval(), wavs, device)
    return {
        "name": name, "key": key, "num_layers": n_layers, "layer_names": names, "width": width,
        "freq_blocks": dim // width, "poolings": poolings, "patch_embedding": geometry,
        **({"alone": alone} if alone is not None else {}),
        "timing": {"embed_s": round(t1 - t0, 2), "probe_s": round(t2 - t1, 2),
                   "clips_cached": stats["cached"], "clips_computed": stats["computed"]},
    }  # fmt: skip


# --------------------------------------------------------------------------- targets (run folders only)


def target_stats(checkpoint: Path, suite: Suite, cfg: EvalConfig, progress: bool = True) -> dict[str, Any]:
    """Quantizer statistics on the suite clips and the bag-of-codes probe, from a training checkpoint."""
    from bestrq2.objectives import build_objective
    from bestrq2.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    tcfg = Config.from_dict(ckpt["config"])
    with torch.random.fork_rng(devices=[]):
        objective = build_objective(tcfg)
    objective.load_state_dict(ckpt["model"])
    if not hasattr(objective, "quantizer"):
        return {"note": f"method {tcfg.method} has no quantizer targets"}
    return {"method": tcfg.method, "step": int(ckpt["step"])} | objective_target_stats(
        objective, tcfg.frontend.sample_rate, suite, cfg, progress
    )


def objective_target_stats(
    objective: nn.Module, sample_rate: int, suite: Suite, cfg: EvalConfig, progress: bool = True
) -> dict[str, Any]:
    """Code usage of ``objective``'s quantizer over the suite's clips, and how much of each task the
    targets alone carry: the probe and kNN on each clip's normalised histogram of codes (every
    codebook whose histogram fits in :data:`BAG_MAX_DIM`). Needs no training: the quantizer is frozen."""
    objective.eval()
    C, V = objective.quantizer.codebook.shape[:2]
    k = max(1, min(int(C), BAG_MAX_DIM // int(V)))
    counter = CodeCounts(objective, sample_rate, k)
    paths = [suite.root / p for p in suite.clip_paths()]
    counts, _ = embed_clips(
        lambda: counter, "", paths, None, cfg.device, None, cfg.batch_seconds, cfg.workers, progress
    )
    totals = counter.totals  # [C, V]
    p = totals / totals.sum(1, keepdim=True).clamp(min=1)
    used = (totals > 0).sum(1).double()
    ent = -(torch.where(p > 0, p * p.clamp(min=1e-300).log(), torch.zeros_like(p))).sum(1)
    bags = {}
    for path, c in counts.items():  # [1, k * V] -> normalised histogram per codebook
        h = c.reshape(k, V).astype(np.float32)
        bags[path] = (h / np.maximum(h.sum(1, keepdims=True), 1)).reshape(1, -1)
    clip_tasks = [t for t in suite.tasks if t.kind == "clip"]
    bag = _score_all(clip_tasks, bags, suite.root, counter.hop_size_in_ms, cfg)
    return {
        "codebooks": int(C), "codebook_size": int(V), "tokens": float(totals[0].sum()),
        "codes_used": float(used.mean()), "perplexity": float(ent.exp().mean()),
        "top_code_share": float(p.max(1).values.mean()),
        "per_codebook": {"codes_used": used.tolist(), "perplexity": ent.exp().tolist(),
                         "top_code_share": p.max(1).values.tolist()},
        "bag_of_codes": {"codebooks": k, "dim": k * int(V)} | bag,
    }  # fmt: skip


# --------------------------------------------------------------------------- the whole diagnosis


@dataclass
class _Source:
    spec: str
    name: str
    key: str
    path: Path
    arch: _Arch
    checkpoint: Path | None
    """The training checkpoint (run folder or .pt), None for an export folder."""


def _source(spec: str) -> _Source:
    if spec == "logmel" or spec.startswith("random:"):
        raise ValueError(
            f"diagnose takes export or run folders (random-init encoders are added), not {spec!r}"
        )
    resolved = resolve_model(spec)
    path = Path(spec)
    arch = _configs(spec)
    if arch.arch != "vit":
        raise ValueError(
            f"{spec}: the diagnosis needs a ViT encoder (forward_all); this one is {arch.arch!r}"
        )
    export = (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    checkpoint = None
    if not export:
        from bestrq2.training.checkpoint import checkpoint_path

        checkpoint = path if path.is_file() else checkpoint_path(path)
    return _Source(spec, resolved.name, resolved.key, path, arch, checkpoint)


def _random_band(
    runs: list[dict[str, Any]], pooling: str, metric: str, which: str = "poolings"
) -> list[dict[str, float | None]]:
    n = len(runs[0][which][pooling]) if runs else 0
    return [_summary([r[which][pooling][i][metric] for r in runs]) for i in range(n)]


def diagnose(
    models: list[str],
    suite: str | Path | Suite,
    out: str | Path | None = None,
    *,
    cache_dir: str | Path | None = "default",
    cfg: EvalConfig | None = None,
    seeds: tuple[int, ...] = (0, 1),
    tasks: list[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    context: bool = True,
) -> dict[str, Any]:
    """Diagnose every layer of each model in ``models`` beside random-init encoders of its architecture
    (one per seed); ``context`` adds the tokens-alone pass (item 6 of the module docstring). Writes
    diagnose.json / .md / .png to ``out`` when given. Returns the results."""
    cfg = cfg or EvalConfig()
    t0 = time.perf_counter()
    sources = [_source(m) for m in models]  # every argument checked before any work
    names = [s.name for s in sources]
    sources = [dataclasses.replace(s, name=s.spec.rstrip("/")) if names.count(s.name) > 1 else s for s in sources]
    suite = suite if isinstance(suite, Suite) else load_suite(suite, tasks)
    cache = default_cache_dir() if cache_dir == "default" else cache_dir
    randoms: dict[str, dict[str, Any]] = {}  # the same architecture twice: computed once
    entries = []
    for src in sources:
        a = src.arch
        log(f"== {src.name} ({src.spec}): every layer")
        pre = diagnose_encoder(
            lambda src=src: load_encoder(src.path, pooling="concat"), src.key, src.name, suite, cfg, cache,
            a.encoder.width, progress, log, context,
        )  # fmt: skip
        rand = []
        for seed in seeds:
            rkey = _digest("random", _config_json(a.frontend, a.encoder), str(seed))
            if rkey not in randoms:
                log(f"== random init, seed {seed} ({a.name} architecture)")
                randoms[rkey] = diagnose_encoder(
                    lambda a=a, seed=seed: random_encoder(a.frontend, a.encoder, seed, "concat"), rkey,
                    f"random-{a.name}-seed{seed}", suite, cfg, cache, a.encoder.width, progress, log, context,
                )  # fmt: skip
            rand.append(randoms[rkey] | {"seed": seed})
        if src.checkpoint is not None:
            log(f"== {src.name}: quantizer targets")
            targets = target_stats(src.checkpoint, suite, cfg, progress)
        else:
            targets = {
                "note": "export folder: it holds no quantizer; pass the run folder for target statistics"
            }
        entries.append({
            "name": src.name, "spec": src.spec, "preset": a.name, "pretrained": pre, "random": rand,
            "random_band": {p: {m: _random_band(rand, p, m) for m in ("mlp", "knn", "effective_rank")}
                            for p in POOLINGS},
            **({"random_band_alone": {p: {m: _random_band(rand, p, m, "alone") for m in ("mlp", "knn")}
                                      for p in POOLINGS}} if context else {}),
            "targets": targets,
        })  # fmt: skip
    results = {
        "format": FORMAT,
        "suite": {"name": suite.root.name, "tasks": [t.name for t in suite.tasks], "clips": len(suite.clip_paths())},
        "protocol": {"probe": asdict(cfg.probe), "knn_k": cfg.knn_k, "knn_temperature": cfg.knn_temperature,
                     "seeds": list(seeds), "spread": "half the range of the random-init seeds",
                     "mean_pooling": "mean of the concat feature's frequency blocks (one encoder pass)"},
        "models": entries,
        "timing": {"total_s": round(time.perf_counter() - t0, 2)},
    }  # fmt: skip
    if out is not None:
        write_diagnosis(results, out)
    return results


# --------------------------------------------------------------------------- reports


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _band(s: dict[str, float | None], digits: int = 3) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:.{digits}f}±{s['spread']:.{digits}f}"


def markdown_report(results: dict[str, Any]) -> str:
    """Per model: rows = layers, columns = probe / kNN for mean and concat pooling, pretrained vs random."""
    seeds = results["protocol"]["seeds"]
    lines = [f"# Layer-wise diagnosis on {results['suite']['name']} ({len(results['suite']['tasks'])} tasks, "
             f"{results['suite']['clips']} clips)", ""]  # fmt: skip
    for m in results["models"]:
        pre, band = m["pretrained"], m["random_band"]
        lines += [
            f"## {m['name']}",
            "",
            f"{pre['num_layers']} layers (embed = patch embedding + positions, final = after the last norm); "
            f"random init: {len(seeds)} seeds, mean±half-range. Overall scores weighted by test size.",
            "",
            "| layer | mean probe | random | mean kNN | random | concat probe | random | concat kNN | random |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for i, name in enumerate(pre["layer_names"]):
            cells = []
            for p in POOLINGS:
                row = pre["poolings"][p][i]
                for metric in ("mlp", "knn"):
                    cells += [_f(row[metric]), _band(band[p][metric][i])]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "| layer | effective rank, mean | random | concat | random |",
            "|---|---:|---:|---:|---:|",
        ]
        for i, name in enumerate(pre["layer_names"]):
            cells = []
            for p in POOLINGS:
                cells += [
                    _f(pre["poolings"][p][i]["effective_rank"], 1),
                    _band(band[p]["effective_rank"][i], 1),
                ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        if "alone" in pre:
            alone_band = m["random_band_alone"]
            lines += [
                "Context: the same layers with every token encoded alone (attention to itself only). A gain over "
                "random init that survives this is a per-patch feature, not context.",
                "",
                "| layer | probe | alone | random | random alone | kNN | alone | random | random alone |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            p = "mean"
            for i, name in enumerate(pre["layer_names"]):
                cells = []
                for metric in ("mlp", "knn"):
                    cells += [_f(pre["poolings"][p][i][metric]), _f(pre["alone"][p][i][metric]),
                              _band(band[p][metric][i]), _band(alone_band[p][metric][i])]  # fmt: skip
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        g = pre["patch_embedding"]
        if "ratio" in g:
            rr = _summary([r["patch_embedding"].get("ratio") for r in m["random"]])
            lines.append(f"Patch embedding: mean token norm {g['patch_norm']:.3f} vs positions {g['position_norm']:.3f}, "
                         f"ratio {g['ratio']:.3f} (random init {_band(rr)}).")  # fmt: skip
        else:
            lines.append(f"Patch embedding: {g.get('note')}.")
        t = m["targets"]
        if "note" in t:
            lines.append(f"Targets: skipped ({t['note']}).")
        else:
            b = t["bag_of_codes"]
            lines.append(
                f"Targets ({t['codebooks']} x {t['codebook_size']} codes, {int(t['tokens'])} tokens): codes used "
                f"{t['codes_used']:.1f}, perplexity {t['perplexity']:.1f}, most frequent code {t['top_code_share']:.3f} "
                f"of tokens; bag-of-codes ({b['codebooks']} codebook(s)) probe {_f(b['mlp'])}, kNN {_f(b['knn'])}."
            )
        lines.append("")
    return "\n".join(lines)


def plot_layers(results: dict[str, Any], path: str | Path) -> Path:
    """Score against layer index: linear probe above, kNN below; a solid line per model and pooling,
    its random-init seeds as a dashed mean and a band from the lowest to the highest seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (metric, label) in zip(axes, (("mlp", "linear probe"), ("knn", "kNN"))):
        c = 0
        drawn: set[tuple[Any, ...]] = set()  # models of one architecture share their random-init band
        for m in results["models"]:
            for p in POOLINGS:
                colour = colours[c % len(colours)]
                c += 1
                rows = m["pretrained"]["poolings"][p]
                x = [r["layer"] for r in rows]
                y = [np.nan if r[metric] is None else r[metric] for r in rows]
                ax.plot(x, y, "-o", color=colour, ms=3, label=f"{m['name']} {p}")
                band = m["random_band"][p][metric]
                which = (tuple(r["key"] for r in m["random"]), p)
                if band and band[0]["mean"] is not None and which not in drawn:
                    drawn.add(which)
                    ax.plot(x, [b["mean"] for b in band], "--", color=colour, lw=1,
                            label=f"random init ({m['preset']}) {p}")  # fmt: skip
                    ax.fill_between(
                        x, [b["min"] for b in band], [b["max"] for b in band], color=colour, alpha=0.15
                    )
        ax.set_ylabel(f"{label} (overall)")
        ax.grid(alpha=0.3)
    names = max((m["pretrained"]["layer_names"] for m in results["models"]), key=len, default=[])
    axes[1].set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes[1].set_xlabel("layer")
    axes[0].legend(fontsize=7, loc="best")
    axes[0].set_title(f"Layer-wise diagnosis on {results['suite']['name']}")
    return save_figure(fig, path)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_diagnosis(results: dict[str, Any], out: str | Path) -> Path:
    """diagnose.json, diagnose.md and diagnose.png in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnose.json").write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    (out / "diagnose.md").write_text(markdown_report(results))
    plot_layers(results, out / "diagnose.png")
    return out
