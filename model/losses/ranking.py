"""Max-margin ranking losses on a square similarity matrix (EgoVLP / EgoVLPv2 EK-100 MIR fine-tuning).

``sim`` [n, n]: rows one modality, columns the other, ``sim[i, i]`` the matching pair (usually the cosine
matrix of the batch gathered over ranks). Diagonal terms are excluded from the mean (EgoVLP's ``fix_norm``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.registry import LOSSES


def _off_diagonal_hinges(sim: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """Mean over the 2n(n-1) terms ``relu(m_i - (s_ii - s_ij))`` and ``relu(m_i - (s_ii - s_ji))``, i != j.

    margins: [n] (row i's margin) or a scalar."""
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"ranking loss: similarity matrix must be square [n, n], got {tuple(sim.shape)}")
    n = sim.shape[0]
    if n < 2:
        raise ValueError("ranking loss: needs at least 2 pairs (no off-diagonal term)")
    sim = sim.float()
    positive = sim.diagonal().unsqueeze(1)
    margins = torch.as_tensor(margins, dtype=sim.dtype, device=sim.device).reshape(-1, 1)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=sim.device)
    rows = F.relu(margins - (positive - sim))        # [i, j]: s_ij against s_ii
    columns = F.relu(margins - (positive - sim.t()))  # [i, j]: s_ji against s_ii
    return torch.cat([rows[off_diagonal], columns[off_diagonal]]).mean()


@LOSSES.register()
class MaxMarginRankingLoss(nn.Module):
    """EgoVLP's EK-100 MIR loss: mean over i != j of ``relu(m - (s_ii - s_ij))`` and ``relu(m - (s_ii - s_ji))``."""

    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = float(margin)

    def forward(self, sim: torch.Tensor) -> torch.Tensor:
        """sim [n, n] → scalar float32 loss."""
        return _off_diagonal_hinges(sim, torch.tensor(self.margin))


@LOSSES.register()
class AdaptiveMaxMarginRankingLoss(nn.Module):
    """EgoVLPv2's variant: row i's margin is ``weight_i * margin``, ``weight_i`` the relevance of pair i's
    sampled positive (1 for an exact match), for both its terms ``s_ij`` and ``s_ji``."""

    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = float(margin)

    def forward(self, sim: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """sim [n, n], weight [n] → scalar float32 loss."""
        weight = torch.as_tensor(weight, device=sim.device).float().reshape(-1)
        if weight.shape[0] != sim.shape[0]:
            raise ValueError(f"AdaptiveMaxMarginRankingLoss: {weight.shape[0]} weights for {sim.shape[0]} pairs")
        return _off_diagonal_hinges(sim, weight * self.margin)
