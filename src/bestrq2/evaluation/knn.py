"""The X-ARES kNN classifier on pooled embeddings.

Embeddings are L2-normalised; each test clip takes the k = 10 most cosine-similar training
clips, weights their votes by softmax(similarity / 0.07) over those k, and predicts the class
with the largest summed weight. No training: the score shows how the raw embedding space is
organised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_scores(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    num_classes: int,
    k: int = 10,
    temperature: float = 0.07,
    chunk: int = 2048,
) -> Tensor:
    """train_x [N, D], train_y [N] class ids, test_x [M, D] -> class votes [M, C]."""
    k = min(k, len(train_x))
    bank = F.normalize(train_x.float(), dim=1)  # [N, D]
    out = []
    for i in range(0, len(test_x), chunk):
        q = F.normalize(test_x[i : i + chunk].float(), dim=1)  # [m, D]
        sims, idx = (q @ bank.T).topk(k, dim=1, largest=True, sorted=True)  # [m, k]
        weights = torch.softmax(sims / temperature, dim=1)  # [m, k]
        votes = torch.zeros(len(q), num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_y[idx], weights)  # [m, C]
        out.append(votes)
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    k: int = 10,
    temperature: float = 0.07,
) -> float:
    """Fraction of test clips whose kNN vote is right."""
    if len(test_x) == 0:
        return 0.0
    pred = knn_scores(train_x, train_y, test_x, num_classes, k, temperature).argmax(1)
    return float((pred == test_y).float().mean())
