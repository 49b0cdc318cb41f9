"""Temporal cycle-consistency (TCC, Dwibedi et al. 2019): soft nearest neighbour of ``u_i`` in V, cycled back to U.

For ``U [N, D]`` and ``V [M, D]`` (reference form): ``sim(x, y) = -‖x − y‖² / (D·τ)``; ``α_i = softmax_j sim(u_i, v_j)``;
``ṽ_i = Σ_j α_ij v_j``; ``β_i = softmax_k sim(ṽ_i, u_k)``; with ``t_k = k / N``: ``μ_i = Σ_k β_ik t_k``,
``σ_i² = Σ_k β_ik (t_k − μ_i)²``. Variants:

* ``regression_mse_var``: ``mean_i[(t_i − μ_i)²/σ_i² + λ log σ_i²]`` (λ = 1e-3),
* ``regression_mse``: ``mean_i (t_i − μ_i)²``,
* ``classification``: cross-entropy of ``β_i`` against ``i`` (label smoothing 0.1),
* ``huber``: Huber(μ_i, t_i) with δ = 0.1.

``form='gtcc_repo'`` reproduces the GTCC code base: plain (not squared) distance, no division by D, raw frame
indices, ``Σ_i[(i − μ_i)²/σ_i² + λ log σ_i]`` summed over anchors, and self-pairs (U, U) included in the
average over pairs. The reference form is the default.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from model.losses.alignment.base import PairwiseAlignmentLoss, frame_positions, pairwise_distance
from utils.registry import LOSSES

Variant = Literal["regression_mse_var", "regression_mse", "classification", "huber"]
Form = Literal["reference", "gtcc_repo"]


def soft_neighbour_logits(query: torch.Tensor, keys: torch.Tensor, tau: float, distance: str,
                          scale_by_dim: bool) -> torch.Tensor:
    """Similarity logits ``[Q, K] = -dist(query, keys) / τ`` (divided by D too when ``scale_by_dim``)."""
    scale = tau * (query.shape[-1] if scale_by_dim else 1.0)
    return -pairwise_distance(query, keys, distance) / scale


def cycle_back_regression(beta: torch.Tensor, anchor_positions: torch.Tensor, positions: torch.Tensor,
                          lam: float, variance: bool = True, log_term: Literal["log_var", "log_std"] = "log_var"
                          ) -> torch.Tensor:
    """Per-anchor regression loss ``[A]`` of the cycled-back distribution ``beta [A, N]`` over ``positions [N]``.

    ``variance``: ``(t − μ)²/σ² + λ·log σ²`` (``log_term='log_var'``) or ``+ λ·log σ`` ('log_std'); otherwise
    ``(t − μ)²``.
    """
    mu = beta @ positions
    error = (anchor_positions - mu).pow(2)
    if not variance:
        return error
    var = (beta * (positions.unsqueeze(0) - mu.unsqueeze(1)).pow(2)).sum(1).clamp_min(1e-12)
    log_sigma = var.log() if log_term == "log_var" else 0.5 * var.log()
    return error / var + lam * log_sigma


def tcc_pair(u: torch.Tensor, v: torch.Tensor, variant: Variant = "regression_mse_var", tau: float = 0.1,
             lam: float = 1e-3, form: Form = "reference", label_smoothing: float = 0.1,
             huber_delta: float = 0.1) -> torch.Tensor:
    """TCC loss of one ordered pair ``(U [N, D], V [M, D])`` (0-d tensor)."""
    repo = form == "gtcc_repo"
    distance, scale_by_dim = ("euclidean", False) if repo else ("sqeuclidean", True)
    alpha = soft_neighbour_logits(u, v, tau, distance, scale_by_dim).softmax(dim=1)
    beta_logits = soft_neighbour_logits(alpha @ v, u, tau, distance, scale_by_dim)
    n = u.shape[0]
    if variant == "classification":
        return F.cross_entropy(beta_logits, torch.arange(n, device=u.device), label_smoothing=label_smoothing)
    positions = frame_positions(n, normalize=not repo, like=u)
    beta = beta_logits.softmax(dim=1)
    if variant == "huber":
        return F.huber_loss(beta @ positions, positions, delta=huber_delta)
    if variant not in ("regression_mse_var", "regression_mse"):
        raise ValueError(f"unknown TCC variant {variant!r}")
    per_anchor = cycle_back_regression(beta, positions, positions, lam, variance=variant == "regression_mse_var",
                                       log_term="log_std" if repo else "log_var")
    return per_anchor.sum() if repo else per_anchor.mean()


@LOSSES.register()
class TCCLoss(PairwiseAlignmentLoss):
    """TCC over every ordered pair of a same-task batch (see the module doc for the variants and forms).

    Args:
        variant: 'regression_mse_var' (default), 'regression_mse', 'classification' or 'huber'.
        tau: softmax temperature. lam: weight of the log-variance term.
        form: 'reference' (TCC paper/official code, default) or 'gtcc_repo' (the GTCC code base's version).
    """

    name = "tcc"

    def __init__(self, variant: Variant = "regression_mse_var", tau: float = 0.1, lam: float = 1e-3,
                 form: Form = "reference", label_smoothing: float = 0.1, huber_delta: float = 0.1):
        super().__init__()
        self.variant, self.tau, self.lam, self.form = variant, tau, lam, form
        self.label_smoothing, self.huber_delta = label_smoothing, huber_delta
        self.self_pairs = form == "gtcc_repo"

    def pair_loss(self, u, v, index_u, index_v, contexts, step, epoch):
        return tcc_pair(u, v, self.variant, self.tau, self.lam, self.form, self.label_smoothing, self.huber_delta)
