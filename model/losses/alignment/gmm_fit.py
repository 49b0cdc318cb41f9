"""Fitting a K-component discretised Gaussian mixture to distributions over frame indices.

``p_j = Σ_k ψ_k p_j^(k)`` with ``p^(k)_j ∝ exp(−(j − μ_k)² / 2σ_k²)`` normalised over the grid ``j = 0 … M−1``.
The fit minimises ``KL(α ‖ p)`` by weighted expectation-maximisation on the grid (each EM step does not increase
it); means start evenly spaced, variances at M (clamped below at ``min_var``), weights uniform. By default it runs
without gradient (as in GTCC, the mixture is a fixed target for the loss); ``differentiable=True`` back-propagates
through the unrolled EM steps into ``alpha``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DiscreteGMM:
    """Per-row mixtures: ``weights [A, K]`` (ψ), ``means [A, K]`` and ``variances [A, K]`` in index units, and
    the normalised components ``components [A, K, M]`` (p^(k))."""

    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    components: torch.Tensor


def discretised_gaussians(means: torch.Tensor, variances: torch.Tensor, length: int) -> torch.Tensor:
    """``[A, K, length]``: each Gaussian evaluated on ``0 … length−1`` and normalised to sum 1."""
    grid = torch.arange(length, dtype=means.dtype, device=means.device)
    logits = -(grid - means.unsqueeze(-1)).pow(2) / (2 * variances.unsqueeze(-1))
    return logits.softmax(dim=-1)


def fit_discrete_gmm(alpha: torch.Tensor, num_components: int, iterations: int = 20,
                     min_var: float = 0.5, differentiable: bool = False) -> DiscreteGMM:
    """Fit one mixture to each row of ``alpha [A, M]`` (rows are distributions over M indices)."""
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        return _fit(alpha if differentiable else alpha.detach(), num_components, iterations, min_var)


def _fit(alpha: torch.Tensor, num_components: int, iterations: int, min_var: float) -> DiscreteGMM:
    rows, length = alpha.shape
    grid = torch.arange(length, dtype=alpha.dtype, device=alpha.device)
    # means at the centres of K equal bins of the grid
    means = ((torch.arange(num_components, dtype=alpha.dtype, device=alpha.device) + 0.5)
             * length / num_components - 0.5).expand(rows, -1).clone()
    variances = torch.full_like(means, float(length))
    weights = torch.full_like(means, 1.0 / num_components)
    for _ in range(iterations):
        joint = weights.unsqueeze(-1) * discretised_gaussians(means, variances, length)       # [A, K, M]
        responsibility = joint / joint.sum(dim=1, keepdim=True).clamp_min(1e-30)
        mass = alpha.unsqueeze(1) * responsibility
        weights = mass.sum(-1).clamp_min(1e-12)
        means = (mass * grid).sum(-1) / weights
        variances = ((mass * (grid - means.unsqueeze(-1)).pow(2)).sum(-1) / weights).clamp_min(min_var)
        weights = weights / weights.sum(dim=1, keepdim=True)
    return DiscreteGMM(weights, means, variances, discretised_gaussians(means, variances, length))
