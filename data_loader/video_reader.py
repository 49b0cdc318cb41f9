"""Clip reading from EgoVLP's chunked layout ``data_dir/<video_uid>/<k>.mp4``.

Chunk ``k`` covers seconds ``[k * chunk_len, (k + 1) * chunk_len)`` of the source video. Unlike
EgoVLP (30 fps assumed, one frame early), the real fps of each file is read and seconds map to
frames exactly (see :mod:`utils.egoclip_format`); the chunks of one video must share one
frame rate (checked). A variable-frame-rate file (timestamps off a constant grid, e.g. a raw phone
video) is indexed by its timestamps instead: the frame shown at ``t`` is the last whose timestamp is
``<= t``, times in chunk ``k`` counting from its first frame at ``k * chunk_len``.

Nothing is read silently wrong: a clip reaching more than one frame past the end of the video (its last
chunk, or ``video_dur`` when given), a frame missing from a chunk file shorter than its nominal length
(all chunks but the last hold ``chunk_len`` seconds), a missing chunk and chunks that disagree in fps
raise :class:`VideoReadError` naming the file, the clip and the frame or second asked for. Only
rounding is tolerated: a clip end at most one frame past the video, and a chunk one frame short.
"""
from __future__ import annotations

import logging
import os
import re
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from typing import Sequence

import numpy as np
import torch

from data_loader.frame_sampling import sample_frame_indices
from data_loader.video_backends import BACKENDS, DecodeSize, VideoReadError, header_fps, open_video
from utils.egoclip_format import (TIME_TOLERANCE, chunk_index, chunk_of_frame, first_frame_of_chunk,
                                  seconds_to_frame_range, time_to_frame)

__all__ = ["ChunkedVideoReader", "VideoReadError"]

logger = logging.getLogger(__name__)

_CHUNK_NAME = re.compile(r"^(\d+)\.mp4$")


class _VideoChunks:
    """The chunk files of one video opened during one read; each file is opened at most once."""

    def __init__(self, reader: "ChunkedVideoReader", video_uid: str, clip: tuple):
        self.reader, self.video_uid, self.clip = reader, video_uid, clip
        self._files: dict[int, object] = {}
        self._fps: float | None = None

    def path(self, chunk: int) -> str:
        return self.reader.chunk_path(self.video_uid, chunk)

    def get(self, chunk: int):
        """The opened chunk file, or None when it does not exist."""
        if chunk not in self._files:
            path = self.path(chunk)
            if not os.path.isfile(path):
                return None
            try:
                self._files[chunk] = open_video(path, self.reader.backend, self.reader.decode_size,
                                                self.reader.num_threads)
            except VideoReadError as err:
                raise VideoReadError(err.reason, err.paths, self.clip) from err
            fps = self._files[chunk].fps
            if self._fps is not None and abs(fps - self._fps) > 1e-3 * self._fps:
                self._raise_fps_mismatch()
            self._fps = self._fps or fps
        return self._files[chunk]

    def _raise_fps_mismatch(self) -> None:
        """Raise naming the chunks whose frame rate (from the headers of all chunks) differs from that of most
        chunks of the video (on a tie, from chunk 0's), not whichever chunk this read happened to open last."""
        rates = {k: round(header_fps(self.path(k)), 3) for k in range(self.last_chunk() + 1)
                 if os.path.isfile(self.path(k))}
        counts = Counter(rates.values())
        usual = max(counts, key=lambda rate: (counts[rate], rate == rates[min(rates)]))
        odd = [k for k, rate in rates.items() if rate != usual]
        raise VideoReadError(", ".join(f"chunk {k} has {rates[k]:g} fps" for k in odd)
                             + f", the other chunks of the video {usual:g} fps", [self.path(k) for k in odd], self.clip)

    def last_chunk(self) -> int:
        """Highest chunk index on disk, -1 when the video folder is missing or empty."""
        folder = os.path.join(self.reader.data_dir, self.video_uid)
        names = os.listdir(folder) if os.path.isdir(folder) else []
        return max((int(m.group(1)) for m in map(_CHUNK_NAME.match, names) if m), default=-1)

    def require(self, chunk: int, asked: str = ""):
        """The opened chunk file; a missing one raises (missing folder, hole, or past the end), with
        ``asked`` (e.g. the frame wanted from it) in the message."""
        video = self.get(chunk)
        if video is not None:
            return video
        last = self.last_chunk()
        if last < 0:
            reason = "video folder is missing or holds no chunks"
        elif chunk > last:
            reason = f"past the end of the video (last chunk is {last})"
        else:
            reason = "chunk file is missing"
        raise VideoReadError(f"{reason}{': ' + asked if asked else ''}", [self.path(chunk)], self.clip)

    def close(self) -> None:
        for video in self._files.values():
            video.close()
        self._files.clear()


class ChunkedVideoReader:
    """Reads clips (seconds) of chunked videos as uint8 ``[T, H, W, 3]`` RGB tensors.

    Args:
        data_dir: folder holding ``<video_uid>/<k>.mp4``.
        chunk_len: seconds per chunk (EgoVLP: 600).
        backend: 'decord' (batch decoding, default) or 'pyav' (reference).
        decode_size: None (native), int (short side) or ``(height, width)``: scale while decoding.
        num_threads: decoder threads per file (1 suits DataLoader workers).
    """

    def __init__(self, data_dir: str, chunk_len: float = 600.0, backend: str = "decord",
                 decode_size: DecodeSize = None, num_threads: int = 1):
        if backend not in BACKENDS:
            raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")
        if chunk_len <= 0:
            raise ValueError(f"chunk_len must be positive, got {chunk_len}")
        self.data_dir = str(data_dir)
        self.chunk_len = float(chunk_len)
        self.backend = backend
        self.decode_size = tuple(decode_size) if isinstance(decode_size, (list, tuple)) else decode_size
        self.num_threads = num_threads

    def chunk_path(self, video_uid: str, chunk: int) -> str:
        """Path of chunk ``chunk`` of ``video_uid``."""
        return os.path.join(self.data_dir, video_uid, f"{chunk}.mp4")

    def read_clip(self, video_uid: str, clip_start: float, clip_end: float, num_frames: int,
                  sample: str = "uniform", rng: np.random.Generator | None = None, video_dur: float | None = None,
                  shrink: bool = False) -> torch.Tensor:
        """uint8 ``[num_frames, H, W, 3]``: frames sampled from ``[clip_start, clip_end)`` seconds of ``video_uid``.

        ``sample``: 'uniform' (segment middles) or 'rand' (random frame per segment, from ``rng``); short
        clips repeat frames, or with ``shrink`` return each of their ``n < num_frames`` frames once
        (``[n, H, W, 3]``). ``video_dur``: the video's length (seconds) from the metadata, when known; a clip
        ending more than one frame past it raises like one past the last chunk. Multi-scale datasets read
        their finest scale here and take the coarser scales from it
        (:class:`data_loader.MultiScaleEgoClip_dataset.MultiScaleEgoClip_EgoMCQ`).
        """
        clip = (video_uid, float(clip_start), float(clip_end))
        if not clip_end >= clip_start:
            raise VideoReadError("clip end is before its start", clip=clip)
        chunks = _VideoChunks(self, video_uid, clip)
        try:
            start, end = max(0.0, float(clip_start)), float(clip_end)
            first = chunks.require(chunk_index(start, self.chunk_len), f"clip start {start:.3f} s")
            if video_dur is not None and end > float(video_dur) + 1 / first.fps + TIME_TOLERANCE:
                raise VideoReadError(f"clip end {end:.3f} s is more than one frame past the end of the video "
                                     f"({float(video_dur):.3f} s in the metadata)",
                                     [chunks.path(chunk_index(end, self.chunk_len))], clip)
            if first.frame_times is not None:
                located = self._vfr_clip_frames(chunks, start, end)
                count = min(num_frames, len(located)) if shrink else num_frames
                located = [located[p] for p in sample_frame_indices(count, 0, len(located), sample, rng)]
            else:
                start_frame, end_frame = seconds_to_frame_range(start, end, first.fps)
                self._locate(chunks, start_frame, first.fps)
                self._locate(chunks, end_frame - 1, first.fps, round_end=True)
                count = min(num_frames, end_frame - start_frame) if shrink else num_frames
                located = [self._locate(chunks, i, first.fps, round_end=True)
                           for i in sample_frame_indices(count, start_frame, end_frame, sample, rng)]
            return torch.from_numpy(self._decode_located(chunks, located))
        finally:
            chunks.close()

    def read_frames(self, video_uid: str, times_sec: Sequence[float]) -> torch.Tensor:
        """The frame shown at each time (seconds), in the given order: uint8 ``[T, H, W, 3]``.

        Times before 0 or after the end of the video raise :class:`VideoReadError`.
        """
        times = [float(t) for t in times_sec]
        if not times:
            raise ValueError("times_sec is empty")
        clip = (video_uid, min(times), max(times))
        if min(times) < 0:
            raise VideoReadError("negative time", clip=clip)
        chunks = _VideoChunks(self, video_uid, clip)
        try:
            first = chunks.require(chunk_index(times[0], self.chunk_len), f"time {times[0]:.3f} s")
            if first.frame_times is not None:
                located = [self._vfr_locate(chunks, t) for t in times]
            else:
                located = [self._locate(chunks, time_to_frame(t, first.fps), first.fps) for t in times]
            return torch.from_numpy(self._decode_located(chunks, located))
        finally:
            chunks.close()

    def _locate(self, chunks: _VideoChunks, frame: int, fps: float, round_end: bool = False) -> tuple[int, int]:
        """``(chunk, frame in chunk)`` of video frame ``frame`` (counted at ``fps``).

        Rounding is read as the chunk's last frame: a frame one past a chunk that is one frame short of its
        nominal length (the chunker's rounding) and, with ``round_end``, a frame one past the end of the
        video (a clip end rounded up). Any other frame not in its chunk raises :class:`VideoReadError`
        naming the chunk file and the frame: past the end of the video, in a missing chunk, or missing from
        a chunk file shorter than its nominal length (truncated).
        """
        asked = f"frame {frame} ({frame / fps:.3f} s)"
        chunk = chunk_of_frame(frame, fps, self.chunk_len)
        video = chunks.get(chunk)
        if video is None:
            last = chunks.last_chunk()
            if round_end and 0 <= last < chunk:
                video_end = first_frame_of_chunk(last, fps, self.chunk_len) + chunks.require(last).num_frames
                if frame == video_end:
                    return last, video_end - 1 - first_frame_of_chunk(last, fps, self.chunk_len)
            chunks.require(chunk, asked)
        index = frame - first_frame_of_chunk(chunk, fps, self.chunk_len)
        if index < video.num_frames:
            return chunk, index
        nominal = first_frame_of_chunk(chunk + 1, fps, self.chunk_len) - first_frame_of_chunk(chunk, fps, self.chunk_len)
        is_last = chunks.last_chunk() <= chunk
        if index == video.num_frames and (round_end if is_last else video.num_frames >= nominal - 1):
            return chunk, index - 1
        if is_last:
            end = first_frame_of_chunk(chunk, fps, self.chunk_len) + video.num_frames
            raise VideoReadError(f"{asked} is after the end of the video ({end} frames, {end / fps:.3f} s)",
                                 [chunks.path(chunk)], chunks.clip)
        raise VideoReadError(f"chunk holds {video.num_frames} frames, {nominal} expected ({self.chunk_len:g} s at "
                             f"{fps:.4f} fps; truncated file?): {asked} is missing", [chunks.path(chunk)], chunks.clip)

    def _vfr_clip_frames(self, chunks: _VideoChunks, start: float, end: float) -> list[tuple[int, int]]:
        """``(chunk, frame in chunk)`` of every frame shown during ``[start, end)`` s of a variable-frame-rate
        video, in order: the frame on screen at ``start`` and each later one whose timestamp is ``< end``."""
        located = [self._vfr_locate(chunks, start)]
        last_chunk = self._vfr_locate(chunks, end, clip_end=True)[0]
        for k in range(located[0][0], last_chunk + 1):
            if k < last_chunk:  # the clip goes on in the next chunk: this one must reach its nominal end
                self._vfr_locate(chunks, (k + 1) * self.chunk_len, clip_end=True)
            times = _frame_times(chunks.require(k))
            begin = located[0][1] + 1 if k == located[0][0] else 0
            located += [(k, i) for i in range(begin, bisect_left(times, end - k * self.chunk_len - TIME_TOLERANCE))]
        return located

    def _vfr_locate(self, chunks: _VideoChunks, time_sec: float, clip_end: bool = False) -> tuple[int, int]:
        """``(chunk, frame in chunk)`` of the frame shown at ``time_sec`` in a video indexed by timestamps.

        The last frame of a chunk is shown for one frame interval (the chunk's median); a time after that
        raises :class:`VideoReadError` (past the end of the video, or a truncated chunk). A ``clip_end``
        (exclusive) may lie up to one more interval past it (rounding) and at the end of its chunk.
        """
        chunk = chunk_index(time_sec - (TIME_TOLERANCE if clip_end else 0.0), self.chunk_len)
        if clip_end and chunk > 0 and chunks.get(chunk) is None and chunks.get(chunk - 1) is not None:
            chunk -= 1  # an end just past the last chunk: judged against that chunk's frames
        asked = f"{'clip end' if clip_end else 'time'} {time_sec:.3f} s"
        video = chunks.require(chunk, asked)
        times = _frame_times(video)
        local = time_sec - chunk * self.chunk_len
        interval = float(np.median(np.diff(times))) if len(times) > 1 else 1 / video.fps
        shown_until = times[-1] + interval
        if local > shown_until + interval + TIME_TOLERANCE if clip_end else local >= shown_until - TIME_TOLERANCE:
            reason = ("is after the end of the video" if chunks.last_chunk() <= chunk else
                      f"is missing: the chunk's frames end at {chunk * self.chunk_len + shown_until:.3f} s, before its "
                      f"nominal end (truncated file?)")
            raise VideoReadError(f"{asked} {reason}", [chunks.path(chunk)], chunks.clip)
        return chunk, max(0, bisect_right(times, local + TIME_TOLERANCE) - 1)

    def _decode_located(self, chunks: _VideoChunks, located: Sequence[tuple[int, int]]) -> np.ndarray:
        """The frames ``located`` (``(chunk, frame in chunk)``), in order: one ``decode`` of the unique frames per chunk."""
        per_chunk: dict[int, list[int]] = defaultdict(list)
        for chunk, index in located:
            per_chunk[chunk].append(index)
        batches, row = [], {}
        for chunk, indices in sorted(per_chunk.items()):
            unique = sorted(set(indices))
            try:
                batches.append(chunks.get(chunk).decode(unique))
            except VideoReadError as err:
                raise VideoReadError(err.reason, err.paths, chunks.clip) from err
            offset = len(row)
            row.update({(chunk, i): offset + j for j, i in enumerate(unique)})
        shapes = sorted({batch.shape[1:] for batch in batches})
        if len(shapes) > 1:
            raise VideoReadError(f"chunks decode to different frame sizes {shapes}",
                                 [chunks.path(c) for c in sorted(per_chunk)], chunks.clip)
        logger.debug("decoded %d frames of %s from chunks %s", len(row), chunks.video_uid, sorted(per_chunk))
        decoded = batches[0] if len(batches) == 1 else np.concatenate(batches)
        return _take(decoded, [row[key] for key in located])


def _frame_times(video) -> np.ndarray:
    """Seconds of each frame of an opened chunk from its first: its timestamps when VFR, else ``i / fps``."""
    return video.frame_times if video.frame_times is not None else np.arange(video.num_frames) / video.fps


def _take(frames: np.ndarray, rows: list[int]) -> np.ndarray:
    """``frames[rows]``, as a view (no copy) when ``rows`` is an arithmetic progression (e.g. every
    decoded frame once, in order: the usual clip)."""
    step = rows[1] - rows[0] if len(rows) > 1 else 1
    if step > 0 and rows == list(range(rows[0], rows[0] + step * len(rows), step)):
        return frames[rows[0]: rows[-1] + 1: step]
    return frames[rows]
