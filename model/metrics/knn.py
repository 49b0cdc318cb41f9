"""Weighted k-nearest-neighbour classification of feature vectors (DINO / SVT protocol).

Features are L2-normalised; over the ``k`` most cosine-similar training items each class scores
``Σ exp(sim / T)`` of its neighbours. Test items are scored in chunks of ``chunk_size`` rows, so any test-set size
works (including fewer than 100 items) on any device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.metrics.classification import topk_accuracy


def weighted_knn_scores(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                        num_classes: int, k: int = 20, temperature: float = 0.07,
                        chunk_size: int = 1024) -> torch.Tensor:
    """Class scores ``[N_test, num_classes]`` (float64) of ``test_features [N_test, D]`` against the labelled
    ``train_features [N_train, D]``; ``k`` is capped at ``N_train``."""
    if len(train_features) == 0 or len(test_features) == 0:
        raise ValueError(f"kNN needs training and test items, got {len(train_features)} and {len(test_features)}")
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    train = F.normalize(train_features.double(), dim=1)
    test = F.normalize(test_features.double().to(train.device), dim=1)
    labels = train_labels.long().to(train.device)
    k = min(k, len(train))
    scores = []
    for start in range(0, len(test), chunk_size):
        similarity, neighbours = (test[start:start + chunk_size] @ train.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        chunk = torch.zeros(len(weights), num_classes, dtype=torch.float64, device=train.device)
        scores.append(chunk.scatter_add_(1, labels[neighbours], weights))
    return torch.cat(scores)


def knn_accuracy(train_features, train_labels, test_features, test_labels, k: int = 20, temperature: float = 0.07,
                 ks=(1, 5)) -> dict[str, float]:
    """``{'top1': %, 'top5': %}`` of weighted kNN (classes: every label seen in either set)."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores = weighted_knn_scores(train_features, train_labels, test_features, num_classes, k, temperature)
    return topk_accuracy(scores, test_labels, ks)
