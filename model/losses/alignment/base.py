"""What every alignment loss shares: pairwise distances, index grids and the loop over ordered video pairs.

An alignment loss is called on one batch of videos of the same task: ``embeddings`` is a list of ``[T_i, D]``
tensors (lengths may differ). It returns ``(loss, components)``: a scalar, and ``{name: 0-d tensor}`` for logging.
"""
from __future__ import annotations

import abc
from typing import Literal

import torch
from torch import nn

Distance = Literal["sqeuclidean", "euclidean"]


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, distance: Distance = "sqeuclidean") -> torch.Tensor:
    """``[N, M]`` distances between the rows of ``x [N, D]`` and ``y [M, D]``.

    'euclidean' is the square root of the squared distance clamped at 1e-12, so its gradient is finite at 0.
    """
    squared = (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(-1)
    if distance == "sqeuclidean":
        return squared
    if distance == "euclidean":
        return squared.clamp_min(1e-12).sqrt()
    raise ValueError(f"unknown distance {distance!r}; expected 'sqeuclidean' or 'euclidean'")


def frame_positions(length: int, normalize: bool, like: torch.Tensor) -> torch.Tensor:
    """Frame indices ``0 … length-1`` as a float vector of ``like``'s dtype/device, divided by ``length`` when
    ``normalize``."""
    positions = torch.arange(length, dtype=like.dtype, device=like.device)
    return positions / length if normalize else positions


def ordered_pairs(num_videos: int, self_pairs: bool = False) -> list[tuple[int, int]]:
    """All ordered pairs ``(i, j)`` of video indices, ``i != j`` unless ``self_pairs``."""
    return [(i, j) for i in range(num_videos) for j in range(num_videos) if self_pairs or i != j]


class PairwiseAlignmentLoss(nn.Module, abc.ABC):
    """Mean (or sum, ``pair_reduction``) of :meth:`pair_loss` over the ordered pairs of a batch (``self_pairs``
    adds ``(i, i)``).

    Subclasses implement ``pair_loss(u, v, index_u, index_v, contexts, step, epoch) -> 0-d tensor``. The loss is
    computed in float32 (float64 inputs stay float64) with autocast off: soft minima and Sinkhorn iterations
    overflow in half precision.
    """

    name = "align"
    self_pairs = False
    pair_reduction = "mean"   # or "sum" over pairs
    uses_contexts = False     # whether the model's drop contexts enter the loss

    def forward(self, embeddings: list[torch.Tensor], contexts: list[torch.Tensor] | None = None,
                step: int = 0, epoch: int = 0) -> tuple[torch.Tensor, dict]:
        if len(embeddings) < (1 if self.self_pairs else 2):
            raise ValueError(f"{type(self).__name__}: a batch needs at least 2 videos of one task, got "
                             f"{len(embeddings)}")
        device = embeddings[0].device
        with torch.autocast(device.type, enabled=False):
            embeddings = [e if e.dtype == torch.float64 else e.float() for e in embeddings]
            contexts = None if contexts is None else [c if c.dtype == torch.float64 else c.float() for c in contexts]
            losses = [self.pair_loss(embeddings[i], embeddings[j], i, j, contexts, step, epoch)
                      for i, j in ordered_pairs(len(embeddings), self.self_pairs)]
            loss = torch.stack(losses)
            loss = loss.sum() if self.pair_reduction == "sum" else loss.mean()
        return loss, {f"align_{self.name}": loss.detach()}

    @abc.abstractmethod
    def pair_loss(self, u, v, index_u, index_v, contexts, step, epoch) -> torch.Tensor:
        """The scalar loss of aligning ``u`` [N, D] with ``v`` [M, D]."""
