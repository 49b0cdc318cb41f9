"""EgoVLP's on-disk EgoClip format, shared by the writers (:mod:`utils.synthetic`, :mod:`utils.video_chunk`)
and the readers (:mod:`data_loader`): the columns of ``egoclip.csv`` and the seconds <-> frame / chunk
arithmetic of chunked videos ``<video_uid>/<k>.mp4``.

Conventions:
- frame ``i`` of a stream at ``fps`` is shown during ``[i / fps, (i + 1) / fps)`` seconds;
- frame ranges are inclusive-exclusive ``[start_frame, end_frame)``;
- chunk ``k`` of a chunked video covers seconds ``[k * chunk_len, (k + 1) * chunk_len)`` and holds
  the frames whose start time falls in that interval, its own frame 0 being the first of them.
"""
from __future__ import annotations

import math

# egoclip.csv (TAB-separated) header, in order.
EGOCLIP_COLUMNS = ("clip_idx", "video_uid", "video_dur", "narration_source", "narration_ind",
                   "narration_time", "clip_start", "clip_end", "clip_text", "tag_verb", "tag_noun")

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
