"""Shared helpers of the temporal-alignment tests: a tiny synthetic procedural dataset and straight-line videos."""
from __future__ import annotations

import torch

from utils.synthetic_procedural import make_procedural


def tiny_procedural(root, seed: int = 0, videos: int = 6, **kwargs):
    """A 2-task synthetic dataset under ``root``; returns (task file, features dir)."""
    task_file = make_procedural(root, num_tasks=2, videos_per_task=videos, actions=3, dim=16, signal_dim=6,
                                frames_per_action=(6, 10), background_frames=(0, 3), seed=seed, **kwargs)
    return str(task_file), str(task_file.parent / "features")


def line(length: int, dim: int = 4, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """``[length, dim]`` points at constant speed along a random direction."""
    direction = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return torch.arange(length, dtype=dtype).unsqueeze(1) * direction
