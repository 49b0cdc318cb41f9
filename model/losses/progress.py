"""Progress targets and the progress loss of the learnable progress head.

Targets: per video, ``samples_per_video`` times a random non-background action ``[s, e]`` of at least
``min_segment_len`` frames is drawn, then ``frames_per_segment`` end frames ``t ≥ s + min_offset``; the head sees
``[s … t]`` and the target is ``g = (t − s + 1)/(e − s + 1)``. Stratified draws take one end frame from each
non-empty bin ``g ≤ 1/3``, ``1/3 < g ≤ 2/3``, ``g > 2/3`` first and fill the rest at random.

Loss: ``Σ w·|p − g| / Σ w`` with ``w = min(1/max(g, 1/cap), cap)``, weighting early frames (small g) up to ``cap``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from utils.registry import LOSSES

BIN_EDGES = (1 / 3, 2 / 3)


@dataclass(frozen=True)
class ProgressTarget:
    """One head query: frames ``[start, end]`` (inclusive) of the video, ground-truth progress at ``end``."""

    start: int
    end: int
    progress: float


def weighted_l1_progress(prediction: torch.Tensor, target: torch.Tensor, cap: float = 10.0) -> torch.Tensor:
    """``Σ w |p − g| / Σ w``, ``w = min(1/max(g, 1/cap), cap)``; prediction and target ``[B]``."""
    weight = (1 / target.clamp_min(1 / cap)).clamp_max(cap)
    return (weight * (prediction - target).abs()).sum() / weight.sum()


def _progress_bin(progress: torch.Tensor) -> torch.Tensor:
    return torch.bucketize(progress, torch.tensor(BIN_EDGES, dtype=progress.dtype))


def sample_segment_ends(start: int, end: int, count: int, min_offset: int, stratified: bool,
                        generator: torch.Generator) -> list[ProgressTarget]:
    """``count`` targets in action ``[start, end]`` with end frames ``t ≥ start + min_offset``."""
    length = end - start + 1
    candidates = torch.arange(min(start + min_offset, end), end + 1)
    progress = (candidates - start + 1).double() / length
    chosen: list[int] = []
    if stratified:
        bins = _progress_bin(progress)
        for b in range(len(BIN_EDGES) + 1):
            members = (bins == b).nonzero().flatten()
            if len(members) and len(chosen) < count:
                chosen.append(int(members[torch.randint(len(members), (1,), generator=generator)]))
    rest = count - len(chosen)
    if rest > 0:
        chosen += torch.randint(len(candidates), (rest,), generator=generator).tolist()
    return [ProgressTarget(start, int(candidates[i]), float(progress[i])) for i in chosen]


def sample_progress_targets(segments: list[tuple[int, int]], samples_per_video: int = 10,
                            frames_per_segment: int = 5, min_segment_len: int = 3, min_offset: int = 2,
                            stratified: bool = True, generator: torch.Generator | None = None
                            ) -> list[ProgressTarget]:
    """Targets of one video from its non-background action ``segments`` (inclusive ``(start, end)`` frames);
    empty when no action has ``min_segment_len`` frames."""
    generator = generator or torch.Generator().manual_seed(0)
    eligible = [(s, e) for s, e in segments if e - s + 1 >= min_segment_len]
    targets: list[ProgressTarget] = []
    if not eligible:
        return targets
    for pick in torch.randint(len(eligible), (samples_per_video,), generator=generator).tolist():
        start, end = eligible[pick]
        targets += sample_segment_ends(start, end, frames_per_segment, min_offset, stratified, generator)
    return targets


@LOSSES.register()
class ProgressObjective(nn.Module):
    """The progress part of an alignment task: target sampling and the weighted L1 loss.

    Args:
        weight: λ in ``L_align + λ·L_progress``; the task divides the progress head's gradients by λ after the
            backward pass, so λ scales what the encoder receives from the progress loss and not the head's
            own update.
        cap: the weight cap of the weighted L1.
        samples_per_video, frames_per_segment, min_segment_len, min_offset, stratified: target sampling.
    """

    def __init__(self, weight: float = 1.0, cap: float = 10.0, samples_per_video: int = 10,
                 frames_per_segment: int = 5, min_segment_len: int = 3, min_offset: int = 2,
                 stratified: bool = True):
        super().__init__()
        if weight <= 0:
            raise ValueError(f"progress weight must be > 0, got {weight}")
        self.weight, self.cap = float(weight), float(cap)
        self.sampling = dict(samples_per_video=samples_per_video, frames_per_segment=frames_per_segment,
                             min_segment_len=min_segment_len, min_offset=min_offset, stratified=stratified)

    def targets(self, segments: list[tuple[int, int]], generator: torch.Generator) -> list[ProgressTarget]:
        return sample_progress_targets(segments, generator=generator, **self.sampling)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return weighted_l1_progress(prediction, target, self.cap)
