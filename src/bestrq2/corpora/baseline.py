"""A sanity baseline for the suite: log-mel mean/std features + logistic regression, per task.

    python -m bestrq2.corpora.baseline data/suite

Proves each task is learnable from simple spectral statistics yet not trivial; a pretrained encoder
should beat it. Uses numpy and torch only.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bestrq2.corpora.audio import SAMPLE_RATE
from bestrq2.corpora.manifest import read_manifest

N_FFT, HOP, N_MELS = 400, 160, 64


def mel_filterbank(n_fft: int = N_FFT, n_mels: int = N_MELS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters on the HTK mel scale."""

    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    def hz(m):
        return 700 * (10 ** (m / 2595) - 1)

    edges = hz(np.linspace(mel(0), mel(sr / 2), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1 / sr)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid))).astype(np.float32)


_FB = mel_filterbank()


def features(x: np.ndarray) -> np.ndarray:
    """[T] audio -> [2 * N_MELS] mean and std over time of the log-mel spectrogram."""
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP] * np.hanning(N_FFT)  # [F, N_FFT]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [F, N_FFT/2+1]
    logmel = np.log(power @ _FB.T + 1e-6)  # [F, N_MELS]
    return np.concatenate([logmel.mean(0), logmel.std(0)]).astype(np.float32)


def _fit(xtr: torch.Tensor, ytr: torch.Tensor, n_classes: int, wd: float) -> torch.nn.Linear:
    torch.manual_seed(0)
    model = torch.nn.Linear(xtr.shape[1], n_classes)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xtr), ytr) + wd * model.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def logistic_regression(xtr, ytr, xva, yva, n_classes: int) -> tuple[torch.nn.Linear, float]:
    """Multinomial logistic regression; weight decay picked on the validation split."""
    best = (None, -1.0)
    for wd in (1e-4, 1e-3, 1e-2, 1e-1):
        model = _fit(xtr, ytr, n_classes, wd)
        with torch.no_grad():
            acc = (model(xva).argmax(1) == yva).float().mean().item()
        if acc > best[1]:
            best = (model, acc)
    return best


def evaluate(suite_dir: Path) -> dict[str, dict[str, float]]:
    rows = read_manifest(suite_dir / "manifest.jsonl")
    cache: dict[str, np.ndarray] = {}
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    results = {}
    for task, task_rows in sorted(by_task.items()):
        for r in task_rows:
            if r["path"] not in cache:
                x, _ = sf.read(str(suite_dir / r["path"]), dtype="float32")
                cache[r["path"]] = features(x)
        classes = sorted({r["label"] for r in task_rows})
        data = {}
        for split in ("train", "valid", "test"):
            rs = [r for r in task_rows if r["split"] == split]
            x = torch.tensor(np.stack([cache[r["path"]] for r in rs]))
            y = torch.tensor([classes.index(r["label"]) for r in rs])
            data[split] = (x, y)
        mu, sd = data["train"][0].mean(0), data["train"][0].std(0) + 1e-6
        data = {k: ((x - mu) / sd, y) for k, (x, y) in data.items()}
        model, _ = logistic_regression(*data["train"], *data["valid"], n_classes=len(classes))
        xte, yte = data["test"]
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        majority = Counter(data["train"][1].tolist()).most_common(1)[0][0]
        results[task] = {
            "test": len(yte),
            "logreg": round(acc, 3),
            "majority": round((yte == majority).float().mean().item(), 3),
            "chance": round(1 / len(classes), 3),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("suite_dir", type=Path)
    args = p.parse_args(argv)
    print("| task | test clips | logreg (log-mel mean/std) | majority | chance |")
    print("|---|---|---|---|---|")
    for task, r in evaluate(args.suite_dir).items():
        print(f"| {task} | {r['test']} | {r['logreg']:.3f} | {r['majority']:.3f} | {r['chance']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
