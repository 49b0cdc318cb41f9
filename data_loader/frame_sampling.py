"""Frame sampling: EgoVLP's segment sampling and nested multi-scale sampling of frame ranges.

Frame ranges are inclusive-exclusive ``[start_frame, end_frame)`` of video frame indices; the seconds <->
frame / chunk arithmetic that produces them is in :mod:`utils.egoclip_format`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SAMPLE_MODES = ("rand", "uniform")


def _segment_bounds(num_segments: int, start_frame: int, end_frame: int) -> list[tuple[int, int]]:
    """``num_segments`` near-equal segments ``[lo, hi)`` of ``[start_frame, end_frame)``, none empty.

    Boundaries are ``floor(linspace(start, end, T + 1))`` as in EgoVLP; when the range holds fewer
    frames than segments, an empty segment becomes the single frame at its lower bound.
    """
    if num_segments < 1:
        raise ValueError(f"number of frames must be >= 1, got {num_segments}")
    if end_frame <= start_frame:
        raise ValueError(f"empty frame range [{start_frame}, {end_frame})")
    edges = np.floor(np.linspace(start_frame, end_frame, num_segments + 1)).astype(np.int64).tolist()
    return [(lo, max(hi, lo + 1)) for lo, hi in zip(edges[:-1], edges[1:])]


def _pick(lo: int, hi: int, mode: str, rng: np.random.Generator | None) -> int:
    """One frame of ``[lo, hi)``: uniformly random ('rand') or the middle ('uniform')."""
    if mode == "rand":
        return int(rng.integers(lo, hi))
    return (lo + hi - 1) // 2


def _check_mode(mode: str) -> None:
    if mode not in SAMPLE_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; expected one of {SAMPLE_MODES}")


def sample_frame_indices(num_frames: int, start_frame: int, end_frame: int, mode: str,
                         rng: np.random.Generator | None = None) -> list[int]:
    """EgoVLP segment sampling: ``num_frames`` sorted indices in ``[start_frame, end_frame)``.

    The range is split into ``num_frames`` equal segments; 'rand' takes a uniformly random frame of
    each segment (its last frame included, and one-frame segments work), 'uniform' the middle one.
    Short ranges repeat frames, so exactly ``num_frames`` indices always come back.
    ``rng``: numpy Generator for 'rand' (a fresh OS-seeded one when None).
    """
    _check_mode(mode)
    if mode == "rand" and rng is None:
        rng = np.random.default_rng()
    return [_pick(lo, hi, mode, rng) for lo, hi in _segment_bounds(num_frames, start_frame, end_frame)]


def sample_multiscale_indices(scales: Sequence[int], start_frame: int, end_frame: int, mode: str,
                              rng: np.random.Generator | None = None) -> dict[int, list[int]]:
    """Nested multi-scale sampling: ``{scale: sorted indices}``, every scale a subset of the finest.

    The finest scale ``F = max(scales)`` is sampled with :func:`sample_frame_indices`; a coarser
    scale ``s`` splits those ``F`` positions into ``s`` near-equal groups and takes, per group, the
    middle position ('uniform', the upper middle for even groups) or a random one ('rand'). So the
    union of all scales is the ``F`` finest indices and a multi-scale clip costs one F-frame decode.
    """
    _check_mode(mode)
    if not scales:
        raise ValueError("scales must not be empty")
    finest = max(scales)
    if mode == "rand" and rng is None:
        rng = np.random.default_rng()
    fine = sample_frame_indices(finest, start_frame, end_frame, mode, rng)
    result = {}
    for scale in sorted(set(scales)):
        if scale == finest:
            result[scale] = list(fine)
            continue
        groups = _segment_bounds(scale, 0, finest)
        picks = [int(rng.integers(lo, hi)) if mode == "rand" else (lo + hi) // 2 for lo, hi in groups]
        result[scale] = [fine[p] for p in picks]
    return {scale: result[scale] for scale in scales}
