"""Self-supervised losses between predictions and targets ``[..., D]`` (leading dims are flattened to rows).

- :func:`mse`: mean squared error.
- :func:`cosine`: ``m − m · mean cos(pred, target)``.
- :func:`soft_ce`: ``mean(−Σ softmax(target/τ_t) · log(softmax(pred/τ_p) + 1e-6))`` (DINO-like).
- :func:`vicreg`: ``sim·mse + std·[hinge(x)/2 + hinge(y)/2] + cov·[C(x) + C(y)]`` with
  ``hinge(x) = mean relu(1 − √(var(x) + 1e-4))`` and ``C(x) = Σ offdiag(Cov(x))² / D``, ``Cov = X̄ᵀX̄/(n − 1)``.
  With ``target_regularised`` (the target's terms were already counted in this pass) only the prediction's
  hinge (full weight) and covariance are added.

A collapsed batch (every row identical) gives VICReg ``std·(1 − √1e-4) = 24.75`` at the default weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.registry import LOSSES


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).float()


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(_rows(pred), _rows(target))


def cosine(pred: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    return margin - margin * F.cosine_similarity(_rows(pred), _rows(target), dim=-1).mean()


def soft_ce(pred: torch.Tensor, target: torch.Tensor, pred_temperature: float = 1.0,
            target_temperature: float = 0.5) -> torch.Tensor:
    target_probs = F.softmax(_rows(target) / target_temperature, dim=-1)
    pred_probs = F.softmax(_rows(pred) / pred_temperature, dim=-1)
    return -(target_probs * torch.log(pred_probs + 1e-6)).sum(dim=-1).mean()


def std_hinge(x: torch.Tensor) -> torch.Tensor:
    """``mean relu(1 − √(var + 1e-4))`` over the feature dims of rows ``x [n, D]``."""
    return F.relu(1 - torch.sqrt(x.var(dim=0) + 1e-4)).mean()


def covariance_penalty(x: torch.Tensor) -> torch.Tensor:
    """``Σ offdiag(Cov(x))² / D`` for rows ``x [n, D]``."""
    n, d = x.shape
    centred = x - x.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d


def vicreg(pred: torch.Tensor, target: torch.Tensor, sim_weight: float = 25.0, std_weight: float = 25.0,
           cov_weight: float = 1.0, target_regularised: bool = False) -> torch.Tensor:
    x, y = _rows(pred), _rows(target)
    if x.shape[0] < 2:
        raise ValueError("VICReg needs at least 2 rows (batch × tokens) for variances")
    loss = sim_weight * F.mse_loss(x, y)
    if target_regularised:
        return loss + std_weight * std_hinge(x) + cov_weight * covariance_penalty(x)
    return (loss + std_weight * (std_hinge(x) / 2 + std_hinge(y) / 2)
            + cov_weight * (covariance_penalty(x) + covariance_penalty(y)))


PREDICTION_LOSSES = {"mse": mse, "cosine": cosine, "soft_ce": soft_ce, "vicreg": vicreg}


@LOSSES.register("VICRegLoss")
class VICRegLoss(nn.Module):
    """VICReg between two views' embeddings ``[B, D]`` (the siamese baseline; upstream weights 5/5/1)."""

    def __init__(self, sim_weight: float = 25.0, std_weight: float = 25.0, cov_weight: float = 1.0):
        super().__init__()
        self.weights = dict(sim_weight=sim_weight, std_weight=std_weight, cov_weight=cov_weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return vicreg(x, y, **self.weights)
