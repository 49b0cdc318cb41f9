"""Frame sampling (EgoVLP segment sampling) and the seconds <-> frame / chunk arithmetic.

Conventions used throughout the project:
- frame ``i`` of a stream at ``fps`` is shown during ``[i / fps, (i + 1) / fps)`` seconds;
- frame ranges are inclusive-exclusive ``[start_frame, end_frame)``;
- chunk ``k`` of a chunked video covers seconds ``[k * chunk_len, (k + 1) * chunk_len)`` and holds
  the frames whose start time falls in that interval, its own frame 0 being the first of them.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

SAMPLE_MODES = ("rand", "uniform")

# Times closer than this (seconds) to a frame or chunk boundary count as on the boundary; it absorbs
# float error (0.3 * 10 == 2.9999999999999996) and the 6-decimal rounding of metadata files.
TIME_TOLERANCE = 1e-6


def time_to_frame(time_sec: float, fps: float) -> int:
    """Index of the frame shown at ``time_sec`` (frame ``i`` covers ``[i / fps, (i + 1) / fps)``)."""
    return math.floor((time_sec + TIME_TOLERANCE) * fps)


def seconds_to_frame_range(start_sec: float, end_sec: float, fps: float) -> tuple[int, int]:
    """Frames ``[start_frame, end_frame)`` shown during ``[start_sec, end_sec)`` at ``fps``.

    A negative start is clamped to 0; the range always holds at least one frame.
    """
    if end_sec < start_sec:
        raise ValueError(f"clip end {end_sec} s is before its start {start_sec} s")
    start_frame = max(0, time_to_frame(start_sec, fps))
    end_frame = math.ceil((end_sec - TIME_TOLERANCE) * fps)
    return start_frame, max(end_frame, start_frame + 1)


def chunk_index(time_sec: float, chunk_len: float) -> int:
    """Index ``k`` of the chunk interval ``[k * chunk_len, (k + 1) * chunk_len)`` holding ``time_sec``."""
    return max(0, math.floor((time_sec + TIME_TOLERANCE) / chunk_len))


def chunk_of_frame(frame: int, fps: float, chunk_len: float) -> int:
    """Chunk holding video frame ``frame``: the one whose interval holds the frame's start time."""
    return chunk_index(frame / fps, chunk_len)


def first_frame_of_chunk(chunk: int, fps: float, chunk_len: float) -> int:
    """Video frame index of frame 0 of chunk ``chunk`` (the first frame starting at or after ``chunk * chunk_len``)."""
    return max(0, math.ceil((chunk * chunk_len - TIME_TOLERANCE) * fps))


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
