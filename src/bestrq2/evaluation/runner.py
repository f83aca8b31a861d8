"""Evaluate an encoder on a suite with the X-ARES protocol: embed once, then every probe from the cache.

    results = evaluate("runs/tiny/export", "data/suite", out="results/tiny")
    table = compare_with_baselines("runs/tiny/export", "data/suite", out="results")

1. every distinct clip of the suite goes through the encoder once (batched by length, cached);
2. clip tasks pool each clip's frames (mean over its own frames); frame tasks keep them;
3. per task: the linear probe (train / best epoch on valid / score on test) and kNN (clip tasks);
4. scores per domain and overall, weighted by test-set size.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bestrq2.evaluation.embeddings import default_cache_dir, embed_clips
from bestrq2.evaluation.knn import knn_accuracy
from bestrq2.evaluation.models import ModelSpec, resolve_model
from bestrq2.evaluation.probe import ProbeConfig, train_probe
from bestrq2.evaluation.report import aggregate, domain_rank, markdown, write_comparison, write_run
from bestrq2.evaluation.tasks import IGNORE, SPLITS, Clip, Suite, Task, align_frame_labels, load_suite

FORMAT = "bestrq2-eval"


@dataclass(kw_only=True)
class EvalConfig:
    """How to run an evaluation (the protocol's constants are in ProbeConfig and the kNN fields)."""

    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """Linear probe hyper-parameters (X-ARES)."""
    knn_k: int = 10
    """Neighbours per test clip."""
    knn_temperature: float = 0.07
    """Votes are softmax(similarity / temperature) over the k neighbours."""
    device: str = "cpu"
    """Where the encoder runs (probes run on CPU)."""
    layer: int | None = None
    """Take this encoder block's output instead of the final one."""
    batch_seconds: float = 120.0
    """Padded audio per encoder batch, in seconds."""
    workers: int = 2
    """Audio decoding threads."""


def _split_arrays(
    task: Task, clips: list[Clip], frames: dict[Path, np.ndarray], root: Path, hop_ms: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip task: x [N, D] (mean over frames), y [N]; frame task: x [N, T, D] zero-padded, y [N, T]."""
    index = {c: i for i, c in enumerate(task.classes)}
    kept = [c for c in clips if root / c.path in frames]
    if task.kind == "clip":
        x = np.stack([frames[root / c.path].mean(0) for c in kept]) if kept else np.zeros((0, 1), np.float32)
        y = np.array([index[c.label] for c in kept], dtype=np.int64)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    feats = [frames[root / c.path] for c in kept]
    t_max = max((len(f) for f in feats), default=1)
    dim = feats[0].shape[1] if feats else 1
    x = np.zeros((len(kept), t_max, dim), np.float32)  # [N, T, D]
    y = np.full((len(kept), t_max), IGNORE, np.int64)  # [N, T]
    for i, (c, f) in enumerate(zip(kept, feats)):
        x[i, : len(f)] = f
        ids = [index[v] for v in c.frame_labels or []]
        y[i, : len(f)] = align_frame_labels(ids, c.frame_hop_ms or hop_ms, hop_ms, len(f))
    return torch.from_numpy(x), torch.from_numpy(y)


def score_task(
    task: Task, frames: dict[Path, np.ndarray], root: Path, hop_ms: float, cfg: EvalConfig
) -> dict[str, Any] | str:
    """Probe (and kNN for clip tasks) one task; a string says why it was skipped."""
    data = {s: _split_arrays(task, task.splits[s], frames, root, hop_ms) for s in SPLITS}
    sizes = {s: len(data[s][0]) for s in SPLITS}
    if sizes["train"] == 0 or sizes["test"] == 0:
        return f"needs train and test clips, has {sizes}"
    n_cls = len(task.classes)
    probe = train_probe(
        data["train"], data["valid"] if sizes["valid"] else None, data["test"], n_cls, cfg.probe
    )
    knn = None
    if task.kind == "clip":
        knn = knn_accuracy(*data["train"], *data["test"], n_cls, cfg.knn_k, cfg.knn_temperature)
    return {
        "domain": task.domain, "kind": task.kind, "classes": n_cls, **sizes,
        "mlp": probe.test_accuracy, "knn": knn,
        "mlp_valid": probe.valid_accuracy, "best_epoch": probe.best_epoch,
    }  # fmt: skip


def evaluate(
    model: str | ModelSpec,
    suite: str | Path | Suite,
    out: str | Path | None = None,
    *,
    cache_dir: str | Path | None = "default",
    cfg: EvalConfig | None = None,
    tasks: list[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate ``model`` (an export folder, ``logmel``, ``random:PRESET`` ...) on ``suite``.

    Writes results.json / .md / .png to ``out`` when given; ``cache_dir`` None disables the
    embedding cache, "default" uses :func:`default_cache_dir`.
    """
    cfg = cfg or EvalConfig()
    t0 = time.perf_counter()
    spec = model if isinstance(model, ModelSpec) else resolve_model(model, cfg.layer)
    suite = suite if isinstance(suite, Suite) else load_suite(suite, tasks)
    encoder = spec.build()
    paths = [suite.root / p for p in suite.clip_paths()]
    cache = default_cache_dir() if cache_dir == "default" else cache_dir
    frames, stats = embed_clips(
        lambda: encoder,
        spec.key,
        paths,
        cache,
        cfg.device,
        spec.layer,
        cfg.batch_seconds,
        cfg.workers,
        progress,
    )
    for path, reason in stats["failed"].items():  # type: ignore[union-attr]
        log(f"skipped unreadable clip {path}: {reason}")
    t1 = time.perf_counter()
    hop = float(encoder.hop_size_in_ms)
    scores: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # probes are many tiny steps: one thread is several times faster than two
    try:
        results_by_task = {task.name: score_task(task, frames, suite.root, hop, cfg) for task in suite.tasks}
    finally:
        torch.set_num_threads(threads)
    for task in sorted(suite.tasks, key=lambda t: (domain_rank(t.domain), t.name)):
        result = results_by_task[task.name]
        if isinstance(result, str):
            skipped[task.name] = result
            log(f"skipped task {task.name}: {result}")
        else:
            scores[task.name] = result
    domains, overall = aggregate(scores)
    t2 = time.perf_counter()
    results = {
        "format": FORMAT,
        "model": {
            "name": spec.name, "spec": spec.spec, "key": spec.key, "layer": spec.layer,
            "output_dim": int(encoder.output_dim), "hop_size_in_ms": hop, "sampling_rate": int(encoder.sampling_rate),
        },
        "suite": {"name": suite.root.name, "tasks": len(suite.tasks), "clips": len(paths)},
        "protocol": {"probe": asdict(cfg.probe), "knn_k": cfg.knn_k, "knn_temperature": cfg.knn_temperature},
        "tasks": scores,
        "domains": domains,
        "overall": overall,
        "skipped": skipped,
        "timing": {
            "embed_s": round(t1 - t0, 2), "probe_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
            "clips_cached": stats["cached"], "clips_computed": stats["computed"], "clips_failed": len(stats["failed"]),  # type: ignore[arg-type]
            "threads": torch.get_num_threads(),
        },
    }  # fmt: skip
    if out is not None:
        write_run(results, out)
    return results


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def evaluate_many(
    models: list[str], suite: str | Path, out: str | Path | None = None, **kwargs: Any
) -> tuple[list[dict[str, Any]], str]:
    """Evaluate several models on one suite (read once); each run in ``out/<name>/``, the side-by-side
    table and chart in ``out/comparison.{md,png}``. Returns the runs and the table."""
    log: Callable[[str], None] = kwargs.get("log", print)
    loaded = load_suite(suite, kwargs.pop("tasks", None))
    runs, used = [], set()
    for m in models:
        spec = resolve_model(m, (kwargs.get("cfg") or EvalConfig()).layer)
        folder = _folder_name(spec.name)
        while folder in used:
            folder += "_"
        used.add(folder)
        log(f"== {spec.name} ({m})")
        run = evaluate(spec, loaded, None if out is None else Path(out) / folder, **kwargs)
        log(markdown(run))
        runs.append(run)
    from bestrq2.evaluation.report import compare_markdown

    table = write_comparison(runs, out) if out is not None else compare_markdown(runs)
    return runs, table


def baselines_for(model: str) -> list[str]:
    """``model``, a random-init encoder of its architecture, and log-mel statistics."""
    return [model, f"random:{model}", "logmel"]


def compare_with_baselines(
    model: str, suite: str | Path, out: str | Path | None = None, **kwargs: Any
) -> str:
    """Pretrained vs random-init (same architecture) vs log-mel statistics, side by side: prints and
    returns the Markdown table (and writes comparison.md / .png under ``out``)."""
    _, table = evaluate_many(baselines_for(model), suite, out, **kwargs)
    print(table)
    return table
