"""Soft dynamic time warping (Cuturi & Blondel, 2017) by anti-diagonal dynamic programming, in pure torch.

``R[i, j] = D[i, j] + softmin_γ(R[i-1, j-1], R[i-1, j], R[i, j-1])`` with ``softmin_γ(x) = -γ log Σ exp(-x/γ)``,
``R[-1, -1] = 0`` and every other border cell at +∞. All cells of one anti-diagonal ``i + j = k`` depend only on
the two previous anti-diagonals, so each of the ``N + M - 1`` steps is one vectorised torch operation and autograd
gives the gradient (no custom backward, no numba, any device). On an all-zero cost the result is
``-γ log Delannoy(N-1, M-1)`` (the number of monotone warping paths).
"""
from __future__ import annotations

import torch

# Border cells: large but finite, so softmin weights vanish exactly and no inf - inf appears in the backward.
_FAR = 1e10


def _softmin(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, gamma: float) -> torch.Tensor:
    stacked = torch.stack([a, b, c]) / -gamma
    return -gamma * torch.logsumexp(stacked, dim=0)


def soft_dtw(cost: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """Soft-DTW value of a cost matrix ``[N, M]`` (a 0-d tensor, differentiable in ``cost``).

    Computed in float64 on CPU inputs of that type and in float32 otherwise (autocast is disabled inside).
    """
    if cost.dim() != 2 or cost.numel() == 0:
        raise ValueError(f"soft_dtw: cost must be a non-empty [N, M] matrix, got shape {tuple(cost.shape)}")
    if gamma <= 0:
        raise ValueError(f"soft_dtw: gamma must be > 0, got {gamma}")
    with torch.autocast(cost.device.type, enabled=False):
        cost = cost if cost.dtype == torch.float64 else cost.float()
        n, m = cost.shape
        rows = torch.arange(n, device=cost.device)
        far = torch.full((n,), _FAR, dtype=cost.dtype, device=cost.device)
        # diagonal k holds R[i, k - i] for every row i (rows outside the matrix at _FAR)
        before_prev = far                       # diagonal k - 2
        prev = far                              # diagonal k - 1
        for k in range(n + m - 1):
            cols = k - rows
            valid = (cols >= 0) & (cols < m)
            step_cost = cost[rows, cols.clamp(0, m - 1)]
            up_left = torch.cat([far[:1], before_prev[:-1]])   # R[i-1, j-1]
            up = torch.cat([far[:1], prev[:-1]])               # R[i-1, j]
            left = prev                                        # R[i, j-1]
            if k == 0:
                up_left = torch.zeros_like(far)                # R[-1, -1] = 0 reaches cell (0, 0) only
            current = torch.where(valid, step_cost + _softmin(up_left, up, left, gamma), far)
            before_prev, prev = prev, current
        return prev[n - 1]
