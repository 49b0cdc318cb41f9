"""One symmetric contrastive loss family over a square similarity matrix: InfoNCE, EgoNCE, CLIP, CLEP.

``sim`` [N, N]: rows one modality (text), columns the other (video), ``sim[i, i]`` the matching pair. The logits
are ``sim * scale`` (or ``sim / temperature``); each direction (rows, then columns) gives one loss and
``reduction`` combines them: ``"sum_dirs"`` (EgoNCE) or ``"mean_dirs"`` (CLIP / CLEP's ½[CE(S, I) + CE(Sᵀ, I)]).

Targets:

* ``"hard"`` — ``pos_mask`` bool [N, N] (default: the diagonal): ``−mean_i log Σ_{j∈P_i} softmax(logits)_ij``
  per direction. With the diagonal only this is InfoNCE; with tag-sharing positives it is EgoNCE.
* ``"soft"`` — ``pos_mask`` float [N, N] target weights ≥ 0: cross-entropy against the target rows
  (``normalize_targets``: each row divided by its sum, a probability distribution; upstream CLEP does not
  normalise, which over-weights rows with many positives).
* ``"bce"`` — binary cross-entropy with logits against ``pos_mask`` as 0/1 (or soft) targets, mean over entries.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Targets = Literal["hard", "soft", "bce"]
Reduction = Literal["sum_dirs", "mean_dirs"]


def _logits(sim: torch.Tensor, scale, temperature) -> torch.Tensor:
    if (scale is None) == (temperature is None):
        raise ValueError("contrastive_loss: give exactly one of scale and temperature")
    sim = sim.to(torch.promote_types(sim.dtype, torch.float32))
    return sim / temperature if temperature is not None else sim * scale


def _directions_hard(logits: torch.Tensor, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    positive_logits = logits.masked_fill(~positives, float("-inf"))
    rows = torch.logsumexp(positive_logits, dim=1) - torch.logsumexp(logits, dim=1)
    columns = torch.logsumexp(positive_logits, dim=0) - torch.logsumexp(logits, dim=0)
    return -rows.mean(), -columns.mean()


def _directions_soft(logits, weights, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    losses = []
    for direction_logits, direction_weights in ((logits, weights), (logits.t(), weights.t())):
        targets = direction_weights / direction_weights.sum(dim=1, keepdim=True) if normalize else direction_weights
        losses.append(-(targets * F.log_softmax(direction_logits, dim=1)).sum(dim=1).mean())
    return losses[0], losses[1]


def _directions_bce(logits, weights) -> tuple[torch.Tensor, torch.Tensor]:
    return (F.binary_cross_entropy_with_logits(logits, weights),
            F.binary_cross_entropy_with_logits(logits.t(), weights.t()))


def contrastive_loss(sim: torch.Tensor, pos_mask: torch.Tensor | None = None, *, scale=None,
                     temperature: float | None = None, reduction: Reduction = "mean_dirs",
                     targets: Targets = "hard", normalize_targets: bool = True) -> torch.Tensor:
    """Scalar loss (float32, float64 for float64 input) of similarities ``sim`` [N, N].

    Args:
        pos_mask: None (the diagonal), bool positives [N, N] ('hard'; the diagonal must be among them), or
            float target weights [N, N] ('soft', 'bce'; every row and column needs a nonzero weight for 'soft').
        scale: logit multiplier (float or a 0-d tensor, e.g. a learnable logit scale); or
        temperature: logit divisor (EgoNCE's τ; ``scale = 1/τ`` gives the same loss up to rounding).
        reduction: 'sum_dirs' (rows + columns) or 'mean_dirs' (their mean).
        targets: 'hard', 'soft' or 'bce' (see the module docstring).
        normalize_targets: 'soft' only: divide each target row by its sum (False: upstream CLEP).
    """
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"contrastive_loss: similarity matrix must be square [N, N], got {tuple(sim.shape)}")
    if reduction not in ("sum_dirs", "mean_dirs"):
        raise ValueError(f"contrastive_loss: reduction must be 'sum_dirs' or 'mean_dirs', got {reduction!r}")
    logits = _logits(sim, scale, temperature)
    if pos_mask is None:
        pos_mask = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    if pos_mask.shape != sim.shape:
        raise ValueError(f"contrastive_loss: pos_mask {tuple(pos_mask.shape)} differs from sim {tuple(sim.shape)}")
    if targets == "hard":
        rows, columns = _directions_hard(logits, pos_mask.bool())
    elif targets == "soft":
        rows, columns = _directions_soft(logits, pos_mask.to(logits.dtype), normalize_targets)
    elif targets == "bce":
        rows, columns = _directions_bce(logits, pos_mask.to(logits.dtype))
    else:
        raise ValueError(f"contrastive_loss: targets must be 'hard', 'soft' or 'bce', got {targets!r}")
    total = rows + columns
    return total if reduction == "sum_dirs" else 0.5 * total


def similarity_targets(similarity: torch.Tensor, threshold: float, weighting: Literal["similarity", "binary"]
                       = "similarity") -> torch.Tensor:
    """Target weights [N, N] from a text-text cosine similarity ``similarity`` [N, N] (CLEP's soft labels).

    ``w_ij = (s_ij + 1) / 2`` ('similarity') or 1 ('binary') where that affinity ``(s_ij + 1) / 2`` is at least
    ``threshold``, else 0; the diagonal is always 1 (an item is its own positive, as in EgoNCE's ``+ I``). With
    ``threshold = 1`` only the diagonal and exact duplicates remain: on distinct captions, the hard targets.
    """
    affinity = (similarity.float() + 1) / 2
    weights = affinity if weighting == "similarity" else torch.ones_like(affinity)
    weights = torch.where(affinity >= threshold, weights, torch.zeros_like(weights))
    return weights.fill_diagonal_(1.0)
