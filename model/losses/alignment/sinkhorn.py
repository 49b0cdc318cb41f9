"""Entropic optimal transport by Sinkhorn iterations in the log domain (stable for small regularisation).

``T = argmin_{T 1 = a, Tᵀ 1 = b} ⟨T, C⟩ + reg·KL(T ‖ K₀)``, solved as ``T = diag(e^f) K diag(e^g)`` with
``log K = log_prior − C / reg``. Differentiable by unrolling the iterations.
"""
from __future__ import annotations

import torch


def sinkhorn_log(cost: torch.Tensor, reg: float, log_a: torch.Tensor | None = None,
                 log_b: torch.Tensor | None = None, n_iters: int = 20,
                 log_prior: torch.Tensor | None = None) -> torch.Tensor:
    """Transport plan ``[N, M]`` for ``cost [N, M]``; marginals ``exp(log_a) [N]``, ``exp(log_b) [M]`` (uniform by
    default, each summing to 1), so the plan sums to 1. ``log_prior [N, M]`` multiplies the Gibbs kernel."""
    if cost.dim() != 2:
        raise ValueError(f"sinkhorn_log: cost must be [N, M], got shape {tuple(cost.shape)}")
    if reg <= 0:
        raise ValueError(f"sinkhorn_log: reg must be > 0, got {reg}")
    n, m = cost.shape
    if log_a is None:
        log_a = torch.full((n,), -torch.log(torch.tensor(float(n))).item(), dtype=cost.dtype, device=cost.device)
    if log_b is None:
        log_b = torch.full((m,), -torch.log(torch.tensor(float(m))).item(), dtype=cost.dtype, device=cost.device)
    log_kernel = -cost / reg if log_prior is None else log_prior - cost / reg
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    for _ in range(n_iters):
        f = log_a - torch.logsumexp(log_kernel + g.unsqueeze(0), dim=1)
        g = log_b - torch.logsumexp(log_kernel + f.unsqueeze(1), dim=0)
    return torch.exp(f.unsqueeze(1) + log_kernel + g.unsqueeze(0))
