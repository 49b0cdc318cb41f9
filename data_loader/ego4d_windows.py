"""Ego4D episodic-memory clips (EgoMQ moments, EgoNLQ) as windows of frames for feature extraction.

Annotations: ``moments_<split>.json`` / ``nlq_<split>.json``: ``{"videos": [{"video_uid", "clips": [{"clip_uid",
"video_start_sec", "video_end_sec", "annotations": [{"language_queries": [{"query": str}, ...]}]}]}]}`` (NLQ
clips carry the queries). Videos: full-length ``<video_dir>/<video_uid>.mp4`` (not chunked).

Windows (EgoVLP's EgoMQ/EgoNLQ features): a clip ``[s, e]`` gives ``M = int((e - s) * features_per_second * F + 1)``
frames at the centres of M equal bins of ``[s, e]``; its first ``N = M // F`` groups of F consecutive frames are
the windows, one feature each (``≈ features_per_second`` features per second; a 480 s clip at 1.87 and F = 4
gives N = 897). Frame times map to frames at the file's real fps.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

FEATURES_PER_SECOND = 1.87  # EgoVLP's rate for EgoMQ / EgoNLQ features


class Ego4DAnnotationError(ValueError):
    """An annotation file does not have the expected structure; the message names the file and the entry."""


@dataclass(frozen=True)
class EpisodicClip:
    """One clip to extract: ``clip_uid`` of ``video_uid`` over ``[start, end]`` seconds of the video; ``source``
    names the annotation file and entry (for messages)."""

    clip_uid: str
    video_uid: str
    start: float
    end: float
    source: str


def _load_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Ego4D annotation file {path} not found")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise Ego4DAnnotationError(f"{path}: expected an object with a 'videos' list")
    return data


def read_clips(paths: list[str]) -> list[EpisodicClip]:
    """Distinct clips of the annotation files (a clip_uid in several files is extracted once; its times must
    agree), sorted by clip_uid."""
    clips: dict[str, EpisodicClip] = {}
    for path in paths:
        for v, video in enumerate(_load_json(path)["videos"]):
            for c, clip in enumerate(video.get("clips", [])):
                where = f"{path} videos[{v}].clips[{c}]"
                try:
                    entry = EpisodicClip(str(clip["clip_uid"]), str(video["video_uid"]),
                                         float(clip["video_start_sec"]), float(clip["video_end_sec"]), where)
                except (KeyError, TypeError, ValueError) as err:
                    raise Ego4DAnnotationError(f"{where}: needs video_uid, clip_uid, video_start_sec and "
                                               f"video_end_sec ({err!r})") from None
                if not 0 <= entry.start < entry.end:
                    raise Ego4DAnnotationError(f"{where}: clip {entry.clip_uid} has times {entry.start}-{entry.end} s")
                known = clips.setdefault(entry.clip_uid, entry)
                if (known.video_uid, known.start, known.end) != (entry.video_uid, entry.start, entry.end):
                    raise Ego4DAnnotationError(f"{where}: clip {entry.clip_uid} differs from {known.source}")
    return [clips[uid] for uid in sorted(clips)]


def read_queries(paths: list[str]) -> list[str]:
    """Distinct NLQ query strings of the annotation files, in order of first appearance."""
    queries: dict[str, None] = {}
    for path in paths:
        for video in _load_json(path)["videos"]:
            for clip in video.get("clips", []):
                for annotation in clip.get("annotations", []):
                    for query in annotation.get("language_queries", []):
                        if isinstance(query.get("query"), str) and query["query"].strip():
                            queries.setdefault(query["query"], None)
    return list(queries)


def num_windows(duration: float, num_frames: int, features_per_second: float = FEATURES_PER_SECOND) -> int:
    """``N = M // F`` with ``M = int(duration * features_per_second * F + 1)``."""
    return int(duration * features_per_second * num_frames + 1) // num_frames


def window_times(start: float, end: float, num_frames: int,
                 features_per_second: float = FEATURES_PER_SECOND) -> np.ndarray:
    """Seconds [N, F] of the frames of each window of the clip ``[start, end]`` (bin centres of M bins)."""
    sampled = int((end - start) * features_per_second * num_frames + 1)
    centres = start + (np.arange(sampled) + 0.5) * (end - start) / sampled
    count = sampled // num_frames
    return centres[:count * num_frames].reshape(count, num_frames)
