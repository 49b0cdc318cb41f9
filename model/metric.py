"""EgoMCQ accuracy. Types: 1 = inter-video (choices from different videos), 2 = intra-video (same video).

EgoVLP prints these two names swapped (their issue #19); here they follow the dataset's definition.
"""
from __future__ import annotations

import torch

from model.metrics.classification import charades_map, topk_accuracy  # noqa: F401  (EgoVLP-style names)
from model.metrics.retrieval import ek100_mir_metrics  # noqa: F401

TYPE_NAMES = {1: "inter_video", 2: "intra_video"}


def egomcq_counts(scores: torch.Tensor, correct: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """Per-type hit and question counts.

    scores: [B, 5] similarity of each query to its 5 choices; correct: [B] answer index; types: [B] 1|2.
    Returns a float tensor [2, 2]: rows (inter, intra), columns (hits, questions); sums across ranks add up.
    """
    hits = (scores.argmax(dim=1) == correct).float()
    counts = torch.zeros(2, 2, dtype=torch.float64)
    for row, type_id in enumerate(TYPE_NAMES):
        selected = types == type_id
        counts[row, 0] = hits[selected].sum().item()
        counts[row, 1] = selected.sum().item()
    return counts


def egomcq_accuracy(counts: torch.Tensor) -> dict:
    """``{'inter_video_acc', 'intra_video_acc'}`` in percent (NaN for a type with no questions), plus counts."""
    result = {}
    for row, name in enumerate(TYPE_NAMES.values()):
        hits, total = counts[row].tolist()
        result[f"{name}_acc"] = 100.0 * hits / total if total else float("nan")
        result[f"{name}_questions"] = int(total)
    return result
