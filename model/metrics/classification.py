"""Classification metrics: top-k accuracy and Charades-style multi-label mean average precision.

Both take scores ``[N, C]`` (higher = more likely) as numpy arrays or tensors.
"""
from __future__ import annotations

import numpy as np
import torch


def _numpy(array) -> np.ndarray:
    return array.detach().cpu().double().numpy() if isinstance(array, torch.Tensor) else np.asarray(array, float)


def topk_hits(scores, labels, ks=(1, 5)) -> dict[int, int]:
    """``{k: number of rows whose label is among the k highest scores}``; scores [N, C], labels [N] class ids.

    Ties at the k-th score count in favour of the lowest class index (a stable descending sort).
    """
    scores, labels = _numpy(scores), np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.argmax(order == labels[:, None], axis=1)           # 0-based rank of the true class
    return {k: int((rank < k).sum()) for k in ks}


def topk_accuracy(scores, labels, ks=(1, 5)) -> dict[str, float]:
    """``{'top1': %, 'top5': %}``: percent of rows whose label is among the k highest scores."""
    hits = topk_hits(scores, labels, ks)
    return {f"top{k}": 100.0 * hits[k] / len(labels) for k in ks}


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one ranking: the mean over positives of precision at that positive's rank; NaN without positives.

    scores [N], positives [N] bool. Items are ranked by descending score; tied items keep their input order
    (stable sort), so on tie-free scores this equals scikit-learn's ``average_precision_score``.
    """
    if not positives.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positives[order]
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.mean())


def charades_map(scores, labels) -> dict:
    """Charades mean average precision over classes.

    scores [N videos, C classes]; labels [N, C] multi-hot (nonzero = positive). A video with no label at all is
    ranked last in every class (its scores are set to −inf), as the Charades evaluation does. A class with no
    positive video has no AP: NaN in ``per_class_ap``, left out of the mean.

    Returns ``{'mAP': percent over classes with a positive, 'per_class_ap': [C] fractions (NaN if undefined),
    'classes_scored': number of classes with a positive}``.
    """
    scores, labels = _numpy(scores).copy(), _numpy(labels) != 0
    if scores.shape != labels.shape:
        raise ValueError(f"charades_map: scores {scores.shape} and labels {labels.shape} differ in shape")
    scores[~labels.any(axis=1)] = -np.inf
    per_class = np.array([average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])])
    defined = ~np.isnan(per_class)
    mean = 100.0 * float(per_class[defined].mean()) if defined.any() else float("nan")
    return {"mAP": mean, "per_class_ap": per_class, "classes_scored": int(defined.sum())}
