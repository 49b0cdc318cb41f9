"""Video alignment with a virtual frame (VAVA, Liu et al. 2022): optimal transport between two videos with
temporal priors, and a virtual first frame that absorbs frames that have no counterpart (background).

For ``U [N, D]``, ``V [M, D]`` (L2-normalised by default), ``D_ij = ‖u_i − v_j‖²`` is bordered by a virtual row and
column of cost ζ (``(N+1) × (M+1)``). With ``i/N``, ``j/M`` the relative positions and ``j*(i) = argmin_j D_ij``:

* consistency ``S_c = 1/((i/N − j/M)² + 1)``, optimality ``S_o = 1/((j/M − j*(i)/M)² + 1)``,
  mixed as ``S = φ S_c + (1 − φ) S_o`` with ``φ = clip(0.999^⌊√(step+1)⌋, 1e-3, 0.999)`` (diagonal first, then
  the current best matches);
* prior ``P = φ 𝒩(d_diag; δ) + (1 − φ) 𝒩(d_opt; δ)``, the distances to the diagonal and to ``(i, j*(i))`` divided
  by ``√(1/N² + 1/M²)``, δ = 2; the virtual row and column get the mean prior and ``S = 0``;
* ``L_VAVA = ⟨T, D⟩ − λ₁ ⟨T, S⟩ + λ₂ KL(T ‖ P)`` with λ₁ = N + M, λ₂ = 0.1·N·M/4. Its minimiser over plans with
  uniform marginals is the Sinkhorn plan of the kernel ``P ⊙ exp((λ₁ S − D)/λ₂)`` (20 log-domain iterations).

Total per pair: ``½(C(U) + C(V)) + L_VAVA/(N·M) + 10⁻⁴·L_inter``, where
``C(X) = mean_ij[y_ij max(0, 2 − ‖x_i − x_j‖²) + (1 − y_ij) ‖x_i − x_j‖² / ((i − j)² + 1)]``, ``y_ij = 1{|i − j| > 15}``,
and ``L_inter`` is the cross-entropy that, for every frame of U, prefers its closest frame of V over its farthest
(logits ``−distance / 0.5``).

Only this reference form is implemented. The GTCC code base's VAVA has a constant transport term (1e6·ΣT with
ΣT = 1), λ₁/λ₂ multiplied again for every pair of a batch, and a CUDA-only Sinkhorn; those are defects, not a
variant worth reproducing.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model.losses.alignment.base import PairwiseAlignmentLoss, pairwise_distance
from model.losses.alignment.sinkhorn import sinkhorn_log
from utils.registry import LOSSES


def prior_mix(step: int) -> float:
    """φ at an optimizer step: 0.999 at step 0, decaying to 0.001."""
    return min(max(0.999 ** math.floor(math.sqrt(step + 1)), 1e-3), 0.999)


def _gaussian(d: torch.Tensor, delta: float) -> torch.Tensor:
    return torch.exp(-d.pow(2) / (2 * delta ** 2)) / (delta * math.sqrt(2 * math.pi))


def temporal_priors(cost: torch.Tensor, phi: float, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, P)`` on the real ``[N, M]`` block of ``cost`` (see the module doc); P sums to 1."""
    n, m = cost.shape
    i = torch.arange(1, n + 1, dtype=cost.dtype, device=cost.device).unsqueeze(1) / n
    j = torch.arange(1, m + 1, dtype=cost.dtype, device=cost.device).unsqueeze(0) / m
    best = (cost.detach().argmin(dim=1).to(cost.dtype).unsqueeze(1) + 1) / m
    consistency = 1 / ((i - j).pow(2) + 1)
    optimality = 1 / ((j - best).pow(2) + 1)
    norm = math.sqrt(1 / n ** 2 + 1 / m ** 2)
    d_diag = (i - j).abs() / norm
    d_opt = (j - best).abs() / norm
    prior = phi * _gaussian(d_diag, delta) + (1 - phi) * _gaussian(d_opt, delta)
    return phi * consistency + (1 - phi) * optimality, prior / prior.sum()


def with_virtual_frame(block: torch.Tensor, border: float | torch.Tensor) -> torch.Tensor:
    """``[N, M]`` → ``[N+1, M+1]`` with a first row and column of ``border``."""
    n, m = block.shape
    out = block.new_empty(n + 1, m + 1)
    out[0, :] = border
    out[:, 0] = border
    out[1:, 1:] = block
    return out


def vava_transport(u: torch.Tensor, v: torch.Tensor, step: int, zeta: float = 0.5, delta: float = 2.0,
                   n_iters: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_VAVA, plan [N+1, M+1])`` of one pair; row/column 0 of the plan is the virtual frame."""
    n, m = u.shape[0], v.shape[0]
    cost = pairwise_distance(u, v, "sqeuclidean")
    phi = prior_mix(step)
    similarity, prior = temporal_priors(cost, phi, delta)
    cost_v = with_virtual_frame(cost, zeta)
    similarity_v = with_virtual_frame(similarity, 0.0)
    log_prior = with_virtual_frame(prior.log(), prior.mean().log())
    log_prior = log_prior - torch.logsumexp(log_prior.flatten(), 0)
    lambda1, lambda2 = float(n + m), 0.1 * n * m / 4
    plan = sinkhorn_log(cost_v - lambda1 * similarity_v, lambda2, n_iters=n_iters, log_prior=log_prior)
    kl = (plan * (plan.clamp_min(1e-30).log() - log_prior)).sum()
    loss = (plan * cost_v).sum() - lambda1 * (plan * similarity_v).sum() + lambda2 * kl
    return loss, plan


def contrastive_idm(x: torch.Tensor, window: int = 15, margin: float = 2.0) -> torch.Tensor:
    """``C(X)``: frames more than ``window`` apart pushed ``margin`` apart, nearer ones pulled together."""
    index = torch.arange(x.shape[0], device=x.device, dtype=x.dtype)
    gap = (index.unsqueeze(0) - index.unsqueeze(1)).abs()
    dist = pairwise_distance(x, x, "sqeuclidean")
    return torch.where(gap > window, (margin - dist).clamp_min(0), dist / (gap.pow(2) + 1)).mean()


def best_over_worst(cost: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Cross-entropy preferring each row's closest column over its farthest (logits ``−cost / temperature``)."""
    logits = torch.stack([-cost.min(dim=1).values, -cost.max(dim=1).values], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(cost.shape[0], dtype=torch.long, device=cost.device))


@LOSSES.register()
class VAVALoss(PairwiseAlignmentLoss):
    """VAVA over every ordered pair ``i != j`` of a same-task batch (reference form, see the module doc).

    Args: zeta (virtual-frame cost), delta (prior width), n_iters (Sinkhorn iterations), window and margin of
    C(X), inter_weight and inter_temperature of L_inter, normalize (L2-normalise embeddings first).
    """

    name = "vava"

    def __init__(self, zeta: float = 0.5, delta: float = 2.0, n_iters: int = 20, window: int = 15,
                 margin: float = 2.0, inter_weight: float = 1e-4, inter_temperature: float = 0.5,
                 normalize: bool = True):
        super().__init__()
        self.zeta, self.delta, self.n_iters, self.window, self.margin = zeta, delta, n_iters, window, margin
        self.inter_weight, self.inter_temperature, self.normalize = inter_weight, inter_temperature, normalize

    def pair_loss(self, u, v, index_u, index_v, contexts, step, epoch):
        if self.normalize:
            u, v = F.normalize(u, dim=-1), F.normalize(v, dim=-1)
        transport, _ = vava_transport(u, v, step, self.zeta, self.delta, self.n_iters)
        regulariser = 0.5 * (contrastive_idm(u, self.window, self.margin) + contrastive_idm(v, self.window,
                                                                                            self.margin))
        inter = best_over_worst(pairwise_distance(u, v, "sqeuclidean"), self.inter_temperature)
        return regulariser + transport / (u.shape[0] * v.shape[0]) + self.inter_weight * inter
