"""Scores -> aggregates (per domain, overall), Markdown tables and bar charts; one run or several.

Aggregates are X-ARES's: the mean of task scores weighted by test-set size (clips). Frame tasks
have no kNN score and are left out of the kNN aggregates, as in X-ARES.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DOMAIN_ORDER = ("speech", "music", "environment")
METRICS = (("mlp", "MLP"), ("knn", "kNN"))


def weighted(tasks: dict[str, dict[str, Any]], metric: str) -> dict[str, Any]:
    """{'score': mean of ``metric`` weighted by test size (None if no task has it), 'test': total weight}."""
    pairs = [(t[metric], t["test"]) for t in tasks.values() if t.get(metric) is not None and t["test"] > 0]
    total = sum(w for _, w in pairs)
    return {"score": sum(s * w for s, w in pairs) / total if total else None, "test": total}


def aggregate(tasks: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-domain and overall scores of a task table: ({domain: {mlp, knn, test}}, {mlp, knn, test})."""
    domains = sorted({t["domain"] for t in tasks.values()}, key=domain_rank)
    per_domain = {}
    for d in domains:
        sub = {n: t for n, t in tasks.items() if t["domain"] == d}
        per_domain[d] = {m: weighted(sub, m)["score"] for m, _ in METRICS} | {
            "test": weighted(sub, "mlp")["test"]
        }
    overall = {m: weighted(tasks, m)["score"] for m, _ in METRICS} | {"test": weighted(tasks, "mlp")["test"]}
    return per_domain, overall


def domain_rank(d: str) -> tuple[int, str]:
    return (DOMAIN_ORDER.index(d) if d in DOMAIN_ORDER else len(DOMAIN_ORDER), d)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(results: dict[str, Any]) -> str:
    """One run: a row per task, then per domain, then overall."""
    m = results["model"]
    lines = [
        f"### {m['name']} ({m['output_dim']}-d, {m['hop_size_in_ms']:g} ms frames)",
        "",
        "| task | domain | kind | classes | train / valid / test | MLP | kNN |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, t in results["tasks"].items():
        lines.append(
            f"| {name} | {t['domain']} | {t['kind']} | {t['classes']} | {t['train']} / {t['valid']} / {t['test']} "
            f"| {_fmt(t['mlp'])} | {_fmt(t['knn'])} |"
        )
    for d, s in results["domains"].items():
        lines.append(f"| **{d}** | | | | {s['test']} | {_fmt(s['mlp'])} | {_fmt(s['knn'])} |")
    o = results["overall"]
    lines.append(f"| **overall** | | | | {o['test']} | **{_fmt(o['mlp'])}** | **{_fmt(o['knn'])}** |")
    return "\n".join(lines) + "\n"


def _names(runs: list[dict[str, Any]]) -> list[str]:
    names, seen = [], {}
    for r in runs:
        n = r["model"]["name"]
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return names


def _rows(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(label, kind) of every table row across runs: tasks, domains, overall."""
    tasks: dict[str, None] = {}
    domains: dict[str, None] = {}
    for r in runs:
        tasks.update(dict.fromkeys(r["tasks"]))
        domains.update(dict.fromkeys(r["domains"]))
    ordered = sorted(domains, key=domain_rank)
    return [(t, "task") for t in tasks] + [(d, "domain") for d in ordered] + [("overall", "overall")]


def _score(run: dict[str, Any], label: str, kind: str, metric: str) -> float | None:
    if kind == "task":
        return run["tasks"].get(label, {}).get(metric)
    if kind == "domain":
        return run["domains"].get(label, {}).get(metric)
    return run["overall"].get(metric)


def compare_markdown(runs: list[dict[str, Any]]) -> str:
    """Several runs side by side: MLP and kNN columns per run."""
    names = _names(runs)
    head = "| | " + " | ".join(f"{n} {label}" for n in names for _, label in METRICS) + " |"
    lines = [head, "|---|" + "---:|" * (len(names) * len(METRICS))]
    for label, kind in _rows(runs):
        cells = [_fmt(_score(r, label, kind, m)) for r in runs for m, _ in METRICS]
        shown = label if kind == "task" else f"**{label}**"
        lines.append(f"| {shown} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Grouped bars (one colour per run) for every task, domain and overall; MLP above, kNN below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names, rows = _names(runs), _rows(runs)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.9 * len(rows) + 2), 7), sharex=True)
    width = 0.8 / len(runs)
    x = np.arange(len(rows))
    for ax, (metric, label) in zip(axes, METRICS):
        for i, (run, name) in enumerate(zip(runs, names)):
            values = [_score(run, r, k, metric) for r, k in rows]
            ax.bar(x + (i - (len(runs) - 1) / 2) * width, [np.nan if v is None else v for v in values], width,
                   label=name)  # fmt: skip
        ax.set_ylabel(f"{label} accuracy")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        for j, (_, kind) in enumerate(rows):
            if kind != "task":
                ax.axvspan(j - 0.5, j + 0.5, color="grey", alpha=0.08, lw=0)
    axes[0].legend(fontsize=8, loc="upper right")
    axes[0].set_title(title or ("X-ARES protocol: " + ", ".join(names)))
    axes[1].set_xticks(x, [r for r, _ in rows], rotation=30, ha="right")
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_results(path: str | Path) -> dict[str, Any]:
    """A results.json, or a folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}")
    return json.loads(path.read_text())


def write_run(results: dict[str, Any], out: str | Path) -> Path:
    """results.json, results.md and results.png in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    plot([results], out / "results.png", title=f"{results['model']['name']}: X-ARES protocol")
    return out


def write_comparison(runs: list[dict[str, Any]], out: str | Path) -> str:
    """comparison.md and comparison.png in ``out``; returns the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = compare_markdown(runs)
    (out / "comparison.md").write_text(table)
    plot(runs, out / "comparison.png")
    return table
