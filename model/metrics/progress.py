"""Progress ground truth and online progress errors.

* Video level: every non-background action gets an equal share of [0, 1]; inside action k of A (frames s … e)
  progress rises linearly from k/A to (k+1)/A, ``k/A + (t − s)/(e − s)/A``; over background it stays where the
  last action ended. The prediction is the geodesic progress ``Σ_{t<i} ‖u_{t+1} − u_t‖ / Ĝ`` with Ĝ the mean
  path length of the task's *training* videos.
* Action level: inside each action progress is ``(t − s + 1)/(e − s + 1)`` (the progress head's target);
  background frames are NaN and not scored.

The online progress error (OPE) is the mean absolute difference over scored frames.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def video_progress(segments: Sequence[tuple[int, int]], length: int) -> np.ndarray:
    """``[length]`` video-level ground truth from the ordered action ``segments`` (inclusive ``(start, end)``)."""
    progress = np.zeros(length)
    share = 1.0 / max(len(segments), 1)
    reached = 0.0
    position = 0
    for k, (start, end) in enumerate(sorted(segments)):
        progress[position:start] = reached
        inside = np.arange(start, end + 1)
        progress[start:end + 1] = k * share + share * ((inside - start) / (end - start) if end > start else 1.0)
        reached, position = (k + 1) * share, end + 1
    progress[position:] = reached
    return progress


def action_progress(segments: Sequence[tuple[int, int]], length: int) -> np.ndarray:
    """``[length]``: ``(t − s + 1)/(e − s + 1)`` inside each action, NaN on background."""
    progress = np.full(length, np.nan)
    for start, end in segments:
        progress[start:end + 1] = (np.arange(start, end + 1) - start + 1) / (end - start + 1)
    return progress


def path_length(embeddings: np.ndarray) -> np.ndarray:
    """``[T]`` cumulative path length ``Σ_{t<i} ‖u_{t+1} − u_t‖``."""
    steps = np.linalg.norm(np.diff(np.asarray(embeddings, dtype=float), axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def geodesic_action_progress(embeddings: np.ndarray, segments: Sequence[tuple[int, int]]) -> np.ndarray:
    """``[T]``: per action, the path length from its start divided by the action's whole path length (needs
    the action's end, so an upper bound on what an online method can do); NaN on background."""
    progress = np.full(len(embeddings), np.nan)
    for start, end in segments:
        path = path_length(embeddings[start:end + 1])
        progress[start:end + 1] = path / path[-1] if path[-1] > 0 else 0.0
    return progress


def online_progress_error(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean ``|prediction − target|`` over frames where the target is not NaN (NaN if none)."""
    prediction, target = np.asarray(prediction, dtype=float), np.asarray(target, dtype=float)
    keep = ~np.isnan(target)
    return float(np.abs(prediction[keep] - target[keep]).mean()) if keep.any() else float("nan")
