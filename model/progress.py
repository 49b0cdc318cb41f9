"""The learnable progress head: how far an action has gone at the last frame of a segment, in (0, 1).

The non-learned alternative, geodesic (cumulative L2) progress, is in :mod:`model.metrics.progress`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence


def with_position_channel(segment: torch.Tensor) -> torch.Tensor:
    """``[L, D]`` → ``[L, D+1]``: the last channel is ``k / L`` for row k."""
    length = segment.shape[0]
    position = torch.arange(length, dtype=segment.dtype, device=segment.device).unsqueeze(1) / length
    return torch.cat([segment, position], dim=1)


class ProgressHead(nn.Module):
    """Predicts the progress at the last frame of an embedding segment ``[start … t]``.

    Each segment ``[L, D]`` gets a position channel ``k/L``; a one-layer GRU (``D+1 → hidden``) with a learnable
    initial state runs over it; its last state goes through ``Linear(hidden, mlp_hidden) → ReLU →
    Linear(mlp_hidden, 1) → Sigmoid``.

    Args:
        input_dim: D, the embedding size. hidden: GRU size (64). mlp_hidden: 32.
    """

    def __init__(self, input_dim: int = 128, hidden: int = 64, mlp_hidden: int = 32):
        super().__init__()
        self.gru = nn.GRU(input_dim + 1, hidden, num_layers=1, batch_first=True)
        self.h0 = nn.Parameter(torch.zeros(1, 1, hidden))
        self.readout = nn.Sequential(nn.Linear(hidden, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, 1),
                                     nn.Sigmoid())

    def forward(self, segments: list[torch.Tensor]) -> torch.Tensor:
        """``segments``: list of ``[L_i, D]`` (L_i >= 1) → progress ``[B]`` in (0, 1)."""
        if not segments:
            raise ValueError("ProgressHead: no segments")
        lengths = torch.tensor([s.shape[0] for s in segments])
        if (lengths < 1).any():
            raise ValueError("ProgressHead: every segment needs at least one frame")
        padded = pad_sequence([with_position_channel(s) for s in segments], batch_first=True)
        packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        h0 = self.h0.expand(-1, len(segments), -1).contiguous().to(padded.dtype)
        _, last = self.gru(packed, h0)
        return self.readout(last[-1]).squeeze(-1)

