"""Learning by aligning videos (LAV, Haresh et al. 2021): soft-DTW between two videos plus an inverse difference
moment (IDM) regulariser inside each video.

Reference form, ``A [N, D]``, ``B [M, D]`` (L2-normalised rows by default)::

    L = [SoftDTW_γ(‖a_i − b_j‖²) + α (IDM(A) + IDM(B))] / N
    IDM(X) = Σ_ij 1{|i − j| > σ} (1 + (t_i − t_j)²) max(0, m − ‖x_i − x_j‖²) + 1{|i − j| ≤ σ} ‖x_i − x_j‖²

with ``t = index / L`` (L the length of X), γ = 0.1, α = 0.5, σ = 10 frames, m = 2: frames far apart in time are
pushed at least ``m`` apart, frames close in time are pulled together.

``form='gtcc_repo'`` is the GTCC code base's version: the sum (not mean) over ordered pairs of
``SoftDTW + 0.01 (C(X) + C(Y))``, no division by N, where C uses raw indices, plain (not squared) distances,
window 15, and its inside-window term is the constant ``((i − j)² + 1)·m`` (it has no gradient).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from model.losses.alignment.base import PairwiseAlignmentLoss, frame_positions, pairwise_distance
from model.losses.alignment.soft_dtw import soft_dtw
from utils.registry import LOSSES


def inverse_difference_moment(x: torch.Tensor, sigma: int = 10, margin: float = 2.0) -> torch.Tensor:
    """Reference IDM of one sequence ``x [L, D]`` (0-d tensor), see the module doc."""
    length = x.shape[0]
    index = torch.arange(length, device=x.device)
    outside = (index.unsqueeze(0) - index.unsqueeze(1)).abs() > sigma
    t = frame_positions(length, normalize=True, like=x)
    weight = 1 + (t.unsqueeze(0) - t.unsqueeze(1)).pow(2)
    dist = pairwise_distance(x, x, "sqeuclidean")
    return torch.where(outside, weight * (margin - dist).clamp_min(0), dist).sum()


def gtcc_repo_idm(x: torch.Tensor, window: int = 15, margin: float = 2.0) -> torch.Tensor:
    """The GTCC code base's regulariser C(X): raw indices, plain distances, constant inside the window."""
    index = torch.arange(x.shape[0], device=x.device, dtype=x.dtype)
    gap = (index.unsqueeze(0) - index.unsqueeze(1)).abs()
    weight = gap.pow(2) + 1
    dist = pairwise_distance(x, x, "euclidean")
    return torch.where(gap > window, weight * (margin - dist).clamp_min(0), weight * margin).sum()


@LOSSES.register()
class LAVLoss(PairwiseAlignmentLoss):
    """LAV over every ordered pair ``i != j`` of a same-task batch.

    Args:
        gamma: soft-DTW smoothing. alpha: IDM weight (reference form). sigma: IDM window in frames.
        margin: IDM margin. normalize: L2-normalise embeddings first (reference: yes).
        form: 'reference' (default) or 'gtcc_repo' (see the module doc; ``repo_weight`` 0.01 and
            ``repo_window`` 15 apply to it).
    """

    name = "lav"

    def __init__(self, gamma: float = 0.1, alpha: float = 0.5, sigma: int = 10, margin: float = 2.0,
                 normalize: bool = True, form: Literal["reference", "gtcc_repo"] = "reference",
                 repo_weight: float = 0.01, repo_window: int = 15):
        super().__init__()
        self.gamma, self.alpha, self.sigma, self.margin, self.normalize = gamma, alpha, sigma, margin, normalize
        self.form, self.repo_weight, self.repo_window = form, repo_weight, repo_window
        self.pair_reduction = "sum" if form == "gtcc_repo" else "mean"

    def pair_loss(self, u, v, index_u, index_v, contexts, step, epoch):
        if self.normalize:
            u, v = F.normalize(u, dim=-1), F.normalize(v, dim=-1)
        alignment = soft_dtw(pairwise_distance(u, v, "sqeuclidean"), self.gamma)
        if self.form == "gtcc_repo":
            regulariser = gtcc_repo_idm(u, self.repo_window, self.margin) + gtcc_repo_idm(v, self.repo_window,
                                                                                          self.margin)
            return alignment + self.repo_weight * regulariser
        regulariser = (inverse_difference_moment(u, self.sigma, self.margin)
                       + inverse_difference_moment(v, self.sigma, self.margin))
        return (alignment + self.alpha * regulariser) / u.shape[0]
