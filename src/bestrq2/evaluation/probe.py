"""The X-ARES "MLP" probe on frozen embeddings: LayerNorm + Linear, trained with cross-entropy.

Adam (lr 1e-3, no weight decay), batches of 32, 10 epochs, the learning rate following a cosine
from lr to 0.1 x lr, set at the start of each epoch (ignite's CosineAnnealingScheduler with a
cycle of ``epochs``); the epoch with the best validation accuracy (the first of equals) is kept
and scored on test. Clip tasks give x [N, D], y [N]; frame tasks x [N, T, D], y [N, T] with
:data:`~bestrq2.evaluation.tasks.IGNORE` on frames without a label.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bestrq2.evaluation.tasks import IGNORE


@dataclass(kw_only=True)
class ProbeConfig:
    """Hyper-parameters of the linear probe (X-ARES defaults)."""

    lr: float = 1e-3
    """Adam learning rate at the first epoch."""
    batch_size: int = 32
    """Training minibatch size (clips)."""
    epochs: int = 10
    """Passes over the training set."""
    decay_fraction: float = 0.1
    """The cosine ends at decay_fraction x lr."""
    seed: int = 42
    """Seeds the probe's initialisation and the shuffling."""


@dataclass
class ProbeResult:
    test_accuracy: float
    valid_accuracy: float | None
    best_epoch: int
    """1-based epoch whose weights were scored on test."""
    valid_history: list[float] = field(default_factory=list)


def epoch_lr(cfg: ProbeConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: cosine from lr (epoch 0) towards decay_fraction x lr."""
    end = cfg.lr * cfg.decay_fraction
    return cfg.lr + (end - cfg.lr) * (1.0 - math.cos(math.pi * epoch / cfg.epochs)) / 2.0


class LinearProbe(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.ln(x))  # [..., C]


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 4096) -> float:
    """Fraction of labelled positions (clips or frames) whose argmax is right."""
    correct = total = 0
    for i in range(0, len(x), batch):
        logits = model(x[i : i + batch])  # [b, (T,) C]
        t = y[i : i + batch]
        keep = t != IGNORE
        correct += int((logits.argmax(-1) == t)[keep].sum())
        total += int(keep.sum())
    return correct / max(total, 1)


def train_probe(
    train: tuple[Tensor, Tensor],
    valid: tuple[Tensor, Tensor] | None,
    test: tuple[Tensor, Tensor],
    num_classes: int,
    cfg: ProbeConfig | None = None,
) -> ProbeResult:
    """Fit on ``train``, pick the epoch on ``valid`` (the last epoch when there is none), score ``test``."""
    cfg = cfg or ProbeConfig()
    x, y = train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LinearProbe(x.shape[-1], num_classes)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best_acc, best_epoch, best_state = -1.0, cfg.epochs, copy.deepcopy(model.state_dict())
    history: list[float] = []
    for epoch in range(cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = epoch_lr(cfg, epoch)
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            logits = model(x[idx])  # [b, (T,) C]
            t = y[idx]
            if not bool((t != IGNORE).any()):
                continue
            loss = F.cross_entropy(logits.reshape(-1, num_classes), t.reshape(-1), ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        if valid is not None and len(valid[0]):
            acc = accuracy(model, *valid)
            history.append(acc)
            if acc > best_acc:
                best_acc, best_epoch, best_state = acc, epoch + 1, copy.deepcopy(model.state_dict())
        else:
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return ProbeResult(
        test_accuracy=accuracy(model, *test),
        valid_accuracy=best_acc if history else None,
        best_epoch=best_epoch,
        valid_history=history,
    )
