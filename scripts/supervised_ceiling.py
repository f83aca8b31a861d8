"""An oracle ceiling for the probe: the same encoder architecture trained *with the suite's labels*.

    python scripts/supervised_ceiling.py --suite data/suite --preset tiny --seed 0 --out runs/ceiling/tiny-seed0
    bestrq2 evaluate runs/ceiling/tiny-seed0 --baselines --out results/ceiling

The encoder of ``--preset`` (random init, ``--seed``) is trained end to end on every clip task's train
split at once: frames -> mean over the clip's frames -> one LayerNorm + Linear head per task (the probe's
shape), cross-entropy, each step a batch of one task drawn in proportion to its train split, AdamW with the
pretraining's schedule (one epoch of warm-up, then cosine) and its weight decay rule (matrices only). The epoch with
the best mean validation accuracy is exported as a plain encoder folder (heads dropped), which
``bestrq2 evaluate`` then scores with the X-ARES protocol like any other export.

This is not self-supervised learning and not a fair baseline: it sees the labels the probe is later trained
on (test groups stay unseen). It answers one question: how high can an encoder of this width score under the
protocol's 10-epoch probe at all? A self-supervised target above that ceiling is out of reach for the
architecture, whatever the pretext.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bestrq2.config import OptimConfig, get_preset
from bestrq2.data.audio import AudioError, load_audio
from bestrq2.data.files import collate
from bestrq2.evaluation.baselines import random_encoder
from bestrq2.evaluation.tasks import load_suite
from bestrq2.export import save_encoder
from bestrq2.quantizer import clip_mean
from bestrq2.training.optim import lr_at, param_groups


def load_split(suite, split: str, sr: int) -> dict[str, list[tuple[np.ndarray, int]]]:
    """{task: [(waveform, class index)]} of every clip task's ``split``; unreadable clips are skipped and
    counted."""
    out, skipped, decoded = {}, 0, {}
    for task in suite.tasks:
        if task.kind != "clip":
            continue
        index = {c: i for i, c in enumerate(task.classes)}
        rows = []
        for clip in task.splits.get(split, []):
            path = suite.root / clip.path
            if path not in decoded:
                try:
                    decoded[path] = load_audio(path, sr, check_silence=False)
                except AudioError as e:
                    decoded[path] = None
                    print(f"skipped: {e}")
            if decoded[path] is None:
                skipped += 1
                continue
            rows.append((decoded[path], index[clip.label]))
        out[task.name] = rows
    print(f"{split}: {sum(map(len, out.values()))} rows, {len(decoded)} clips, {skipped} skipped")
    return out


def batch(rows: list[tuple[np.ndarray, int]], crop: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """Zero-padded waveforms [B, T], lengths [B], labels [B]; clips longer than ``crop`` samples give a
    random window of it."""
    wavs = []
    for wav, _ in rows:
        if len(wav) > crop:
            start = int(rng.integers(0, len(wav) - crop + 1))
            wav = wav[start : start + crop]
        wavs.append(wav)
    padded = collate([{"wav": w, "skipped": []} for w in wavs])  # the pretraining loader's zero padding
    return padded["wav"], padded["lengths"], torch.tensor([y for _, y in rows])


def pooled(enc: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each clip's frames averaged over its own frames (the protocol's clip pooling): [B, D]."""
    frames = enc(x, lengths)  # [B, T', D]
    padding = torch.arange(frames.shape[1])[None, :] >= enc.output_lengths(lengths)[:, None]  # [B, T']
    return clip_mean(frames, padding)[:, 0]


@torch.no_grad()
def valid_accuracy(enc, heads, data, crop: int, batch_size: int) -> dict[str, float]:
    enc.eval()
    rng = np.random.default_rng(0)  # the same windows of long clips every epoch
    scores = {}
    for name, rows in data.items():
        if not rows:
            continue
        correct = 0
        for i in range(0, len(rows), batch_size):
            x, lengths, y = batch(rows[i : i + batch_size], crop, rng)
            correct += int((heads[name](pooled(enc, x, lengths)).argmax(-1) == y).sum())
        scores[name] = correct / len(rows)
    enc.train()
    return scores


def main(argv: list[str] | None = None) -> float:
    """Train, export the best epoch, and return its mean validation accuracy."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="data/suite")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--out", required=True, help="export folder to write")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch-size must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = get_preset(args.preset)
    enc = random_encoder(cfg.frontend, cfg.encoder, args.seed).train()  # the init `random:OUT:SEED` scores
    sr = int(enc.sampling_rate)
    crop = int(cfg.data.crop_seconds * sr)  # the clip length pretraining sees
    suite = load_suite(args.suite)
    train, valid = load_split(suite, "train", sr), load_split(suite, "valid", sr)
    classes = {t.name: len(t.classes) for t in suite.tasks if t.kind == "clip"}
    if not any(train.get(n) for n in classes) or not any(valid.get(n) for n in classes):
        raise SystemExit(f"{args.suite}: no clip task with readable train and valid clips")
    torch.manual_seed(args.seed)
    heads = nn.ModuleDict(
        {n: nn.Sequential(nn.LayerNorm(enc.output_dim), nn.Linear(enc.output_dim, k)) for n, k in classes.items()}
    )
    model = nn.ModuleDict({"encoder": enc, "heads": heads})
    optim = OptimConfig(lr=args.lr, weight_decay=args.weight_decay, warmup_fraction=1 / args.epochs)  # one epoch
    opt = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr, betas=optim.betas)
    names = [n for n in train if train[n]]
    sizes = np.array([len(train[n]) for n in names], dtype=np.float64)
    steps_per_epoch = int(math.ceil(sizes.sum() / args.batch_size))
    total = args.epochs * steps_per_epoch
    rng = np.random.default_rng(args.seed)

    best, best_epoch, best_state, history = -1.0, 0, None, []
    step, t0 = 0, time.time()
    for epoch in range(args.epochs):
        losses = []
        for _ in range(steps_per_epoch):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, optim)
            name = names[int(rng.choice(len(names), p=sizes / sizes.sum()))]
            pick = rng.choice(len(train[name]), min(args.batch_size, len(train[name])), replace=False)
            rows = [train[name][i] for i in pick]
            x, lengths, y = batch(rows, crop, rng)
            loss = F.cross_entropy(heads[name](pooled(enc, x, lengths)), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {step} (task {name})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
        scores = valid_accuracy(enc, heads, valid, crop, args.batch_size)
        mean = float(np.mean(list(scores.values())))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "valid_mean": mean, "valid": scores})
        print(f"epoch {epoch + 1}: loss {np.mean(losses):.3f}, valid mean {mean:.3f}, {time.time() - t0:.0f} s", flush=True)
        if mean > best:  # the first of equals (accuracies are finite: some task has valid clips)
            best, best_epoch = mean, epoch + 1
            best_state = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    enc.load_state_dict(best_state)
    provenance = {
        "method": "supervised-ceiling", "preset": args.preset, "seed": args.seed, "best_epoch": best_epoch,
        "step": best_epoch * steps_per_epoch,
        "note": "trained with the suite's train labels: an oracle ceiling, not self-supervised",
    }  # fmt: skip
    out = save_encoder(enc.eval(), args.out, provenance)
    (out / "history.json").write_text(json.dumps({"args": vars(args), "best_epoch": best_epoch, "epochs": history}, indent=2))
    print(f"best valid mean {best:.3f}; wrote {out}")
    return best


if __name__ == "__main__":
    main()
