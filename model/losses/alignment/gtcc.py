"""Generalised temporal cycle-consistency (GTCC, Donahue & Elhamifar, CVPR 2024): cycle-consistency with a
multi-modal soft match and a learned drop probability, for videos whose steps repeat, swap or are missing.

Reference (paper) form, per anchor frame ``u_i`` of U [N, D] and the other video V [M, D]:

1. ``α_i = softmax_j(−‖u_i − v_j‖² / (D·τ))``; fit a K-component discretised GMM ``Σ_k ψ_k p^(k)`` to ``α_i``
   (:mod:`~model.losses.alignment.gmm_fit`; detached from α as in GTCC unless ``differentiable_gmm``).
2. ``ṽ^(k) = Σ_j p_j^(k) v_j``; ``β^(k) = softmax`` over a window of ``w = round(window_fraction·N)`` frames of U
   of ``−‖ṽ^(k) − u‖² / (D·τ)``. The window holds the anchor ``i`` at a random offset (drawn per step, pair and
   anchor): a window centred on ``i`` would give a uniform (collapsed) β the exact mean ``i`` and zero error.
3. ``L^(k) = (i − μ_k)²/σ_k² + λ log σ_k`` on frame indices, μ_k and σ_k² the mean and variance of β^(k);
   ``L_multi = Σ_k ψ_k L^(k)``, floored at ``align_floor`` (1e-2) before the drop mixture, whose ``1/L_multi``
   term would otherwise explode as the alignment improves (the GTCC code base skips batches whose loss exceeds
   1e7 instead).
4. Drop: ``c(V) ∈ R^{D+1}`` (the model's drop-context head averaged over V's frames),
   ``P_drop = sigmoid([u_i; 1]ᵀ c(V))``, ``L = (1 − P_drop) L_multi + P_drop / L_multi`` (``P_drop = 0`` without
   contexts). The loss is the mean over anchors and ordered pairs ``i != j``.

``form='gtcc_repo'`` follows the GTCC code base: plain (not squared, not /D) distances, ``num_anchors`` (20) random
anchors per video (all frames of a shorter video), ``alignment_variance = 0`` so ``L^(k) = (i − μ_k)²`` on raw indices, a keep
weight ``BX = f + (1 − f)·sigmoid(standardise(u·w + b))`` with the floor ``f = keep_gamma^(epoch+1)``
(keep_gamma = 1 disables dropping), and ``BX·L_multi + (1 − BX)/L_multi`` summed over anchors and pairs. Its GMM is
fitted by L-BFGS on a symmetric KL; here both forms use the EM fit.
"""
from __future__ import annotations

from typing import Literal

import torch

from model.losses.alignment.base import PairwiseAlignmentLoss, frame_positions
from model.losses.alignment.gmm_fit import fit_discrete_gmm
from model.losses.alignment.tcc import cycle_back_regression, soft_neighbour_logits
from utils.registry import LOSSES


def window_mask(anchors: torch.Tensor, length: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``[A, length]`` bool: for each anchor, ``width`` frames starting at a random offset in
    ``[anchor − width + 1, anchor]`` (so the anchor is always inside)."""
    frames = torch.arange(length, device=anchors.device)
    offsets = torch.randint(0, max(width, 1), (anchors.shape[0],), generator=generator).to(anchors.device)
    start = (anchors - offsets).unsqueeze(1)
    return (frames.unsqueeze(0) >= start) & (frames.unsqueeze(0) < start + max(width, 1))


def drop_mixture(align: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``keep·align + (1 − keep)/align``: ``keep = 1`` gives ``align``, ``keep = 0`` gives ``1/align``."""
    return keep * align + (1 - keep) / align


@LOSSES.register()
class GTCCLoss(PairwiseAlignmentLoss):
    """GTCC over the ordered pairs of a same-task batch (see the module doc for both forms).

    Args:
        num_components: K (15 in the wild, 5 for monotonic data). tau: softmax temperature. lam: log-σ weight.
        window_fraction: β window width as a fraction of N (0.2 in the wild, 0.5 monotonic).
        gmm_iterations: EM steps. form: 'reference' (default) or 'gtcc_repo'.
        num_anchors: anchors per video in the repo form. keep_gamma: keep-weight floor base in the repo form.
        seed: anchors (repo form) and windows come from (seed, step, pair).
        align_floor: lower bound of L_multi in the drop mixture.
        differentiable_gmm: back-propagate through the EM fit into α (GTCC detaches it; detaching leaves u_i no
            gradient through its soft match in V, which learns more slowly on small data).
    """

    name = "gtcc"
    uses_contexts = True

    def __init__(self, num_components: int = 15, tau: float = 0.1, lam: float = 1e-3,
                 window_fraction: float = 0.2, gmm_iterations: int = 20,
                 form: Literal["reference", "gtcc_repo"] = "reference", num_anchors: int = 20,
                 keep_gamma: float = 0.95, seed: int = 0, align_floor: float = 1e-2,
                 differentiable_gmm: bool = False):
        super().__init__()
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.num_components, self.tau, self.lam, self.window_fraction = num_components, tau, lam, window_fraction
        self.gmm_iterations, self.form, self.num_anchors = gmm_iterations, form, num_anchors
        self.keep_gamma, self.seed, self.align_floor = keep_gamma, seed, align_floor
        self.differentiable_gmm = differentiable_gmm
        self.pair_reduction = "sum" if form == "gtcc_repo" else "mean"

    def pair_loss(self, u, v, index_u, index_v, contexts, step, epoch):
        repo = self.form == "gtcc_repo"
        n, m = u.shape[0], v.shape[0]
        generator = torch.Generator().manual_seed(hash((self.seed, step, index_u, index_v)) % 2 ** 63)
        anchors = torch.arange(n, device=u.device)
        if repo:
            anchors = torch.randperm(n, generator=generator)[:min(self.num_anchors, n)].sort().values.to(u.device)
        distance, scale_by_dim = ("euclidean", False) if repo else ("sqeuclidean", True)
        alpha = soft_neighbour_logits(u[anchors], v, self.tau, distance, scale_by_dim).softmax(dim=1)   # [A, M]
        gmm = fit_discrete_gmm(alpha, min(self.num_components, m), self.gmm_iterations,
                               differentiable=self.differentiable_gmm)
        soft_matches = gmm.components.to(v.dtype) @ v                                                # [A, K, D]
        num_anchors, k = soft_matches.shape[:2]
        logits = soft_neighbour_logits(soft_matches.reshape(num_anchors * k, -1), u, self.tau, distance,
                                       scale_by_dim).view(num_anchors, k, n)
        inside = window_mask(anchors, n, max(round(self.window_fraction * n), 1), generator)
        beta = logits.masked_fill(~inside.unsqueeze(1), float("-inf")).softmax(dim=-1)
        positions = frame_positions(n, normalize=False, like=u)
        per_component = cycle_back_regression(beta.reshape(num_anchors * k, n),
                                              positions[anchors].repeat_interleave(k), positions, self.lam,
                                              variance=not repo, log_term="log_std").view(num_anchors, k)
        align = (gmm.weights.to(u.dtype) * per_component).sum(dim=1).clamp_min(self.align_floor)  # L_multi [A]
        if contexts is None:
            return align.sum() if repo else align.mean()
        context = contexts[index_v]                                                                 # [D + 1]
        score = u[anchors] @ context[:-1] + context[-1]
        if repo:
            floor = self.keep_gamma ** (epoch + 1)
            standardised = (score - score.mean()) / score.std(unbiased=False).clamp_min(1e-6)
            keep = floor + (1 - floor) * torch.sigmoid(standardised)
            return drop_mixture(align, keep).sum()
        return drop_mixture(align, 1 - torch.sigmoid(score)).mean()
