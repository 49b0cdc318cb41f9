"""Clip reading from EgoVLP's chunked layout ``data_dir/<video_uid>/<k>.mp4``.

Chunk ``k`` covers seconds ``[k * chunk_len, (k + 1) * chunk_len)`` of the source video. Unlike
EgoVLP (30 fps assumed, one frame early), the real fps of each file is read and seconds map to
frames exactly (see :mod:`utils.egoclip_format`); the chunks of one video must share one
frame rate (checked). A frame past a chunk's end comes from the next chunk, a frame past the end
of the video is clamped to the last frame, and a clip that starts after the end of the video is an
error. Every failure raises :class:`VideoReadError` naming file and clip.
"""
from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from data_loader.frame_sampling import sample_frame_indices
from data_loader.video_backends import BACKENDS, DecodeSize, VideoReadError, open_video
from utils.egoclip_format import (chunk_index, chunk_of_frame, first_frame_of_chunk, seconds_to_frame_range,
                                  time_to_frame)

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
                raise VideoReadError(f"chunk has {fps:.4f} fps, other chunks of the video {self._fps:.4f}",
                                     [path], self.clip)
            self._fps = self._fps or fps
        return self._files[chunk]

    def last_chunk(self) -> int:
        """Highest chunk index on disk, -1 when the video folder is missing or empty."""
        folder = os.path.join(self.reader.data_dir, self.video_uid)
        names = os.listdir(folder) if os.path.isdir(folder) else []
        return max((int(m.group(1)) for m in map(_CHUNK_NAME.match, names) if m), default=-1)

    def require(self, chunk: int):
        """The opened chunk file; a missing one raises (missing folder, hole, or past the end)."""
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
        raise VideoReadError(reason, [self.path(chunk)], self.clip)

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
                  sample: str = "uniform", rng: np.random.Generator | None = None) -> torch.Tensor:
        """uint8 ``[num_frames, H, W, 3]``: frames sampled from ``[clip_start, clip_end)`` seconds of ``video_uid``.

        ``sample``: 'uniform' (segment middles) or 'rand' (random frame per segment, from ``rng``); short
        clips repeat frames. Multi-scale datasets read their finest scale here and take the coarser scales
        from it (:class:`data_loader.MultiScaleEgoClip_dataset.MultiScaleEgoClip_EgoMCQ`).
        """
        clip = (video_uid, float(clip_start), float(clip_end))
        if not clip_end >= clip_start:
            raise VideoReadError("clip end is before its start", clip=clip)
        chunks = _VideoChunks(self, video_uid, clip)
        try:
            start = max(0.0, float(clip_start))
            fps = chunks.require(chunk_index(start, self.chunk_len)).fps
            start_frame, end_frame = seconds_to_frame_range(start, float(clip_end), fps)
            self._locate(chunks, start_frame, fps, clamp=False)
            indices = sample_frame_indices(num_frames, start_frame, end_frame, sample, rng)
            return torch.from_numpy(self._decode_frames(chunks, indices, fps, clamp=True))
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
            fps = chunks.require(chunk_index(times[0], self.chunk_len)).fps
            return torch.from_numpy(self._decode_frames(chunks, [time_to_frame(t, fps) for t in times], fps,
                                                        clamp=False))
        finally:
            chunks.close()

    def _locate(self, chunks: _VideoChunks, frame: int, fps: float, clamp: bool) -> tuple[int, int]:
        """``(chunk, frame in chunk)`` of video frame ``frame`` (counted at ``fps``).

        A frame beyond a chunk's last frame (rounding in the chunker) is clamped when a later chunk
        exists; a frame past the end of the video is clamped if ``clamp`` else an error.
        """
        chunk = chunk_of_frame(frame, fps, self.chunk_len)
        video = chunks.get(chunk)
        if video is None:
            last = chunks.last_chunk()
            if not clamp or last < 0 or last > chunk:
                chunks.require(chunk)
            return last, chunks.require(last).num_frames - 1
        index = frame - first_frame_of_chunk(chunk, fps, self.chunk_len)
        if index >= video.num_frames:
            if not clamp and chunks.get(chunk + 1) is None:
                raise VideoReadError(f"frame {frame} ({frame / fps:.3f} s) is after the end of the video",
                                     [chunks.path(chunk)], chunks.clip)
            index = video.num_frames - 1
        return chunk, index

    def _decode_frames(self, chunks: _VideoChunks, frames: Sequence[int], fps: float, clamp: bool) -> np.ndarray:
        """Video frames ``frames`` (counted at ``fps``), in order: one ``decode`` of the unique frames per chunk."""
        located = [self._locate(chunks, frame, fps, clamp) for frame in frames]
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


def _take(frames: np.ndarray, rows: list[int]) -> np.ndarray:
    """``frames[rows]``, as a view (no copy) when ``rows`` is an arithmetic progression (e.g. every
    decoded frame once, in order: the usual clip)."""
    step = rows[1] - rows[0] if len(rows) > 1 else 1
    if step > 0 and rows == list(range(rows[0], rows[0] + step * len(rows), step)):
        return frames[rows[0]: rows[-1] + 1: step]
    return frames[rows]
