"""Clip reading from whole (not chunked) video files, e.g. EK-100's ``<pid>/<vid>.MP4``, Charades-Ego's
``<id>.mp4`` and Ego4D's full-length ``<video_uid>.mp4``.

The chunked reader with one chunk per video: the same real-fps frame indexing, variable-frame-rate handling and
errors (a clip past the end of the file raises :class:`VideoReadError` naming the file).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from data_loader.video_backends import DecodeSize, VideoReadError, open_video
from data_loader.video_reader import ChunkedVideoReader

WHOLE_FILE = 1e9  # seconds: every time of a video falls in its one "chunk"


class VideoFileReader(ChunkedVideoReader):
    """Reads clips (seconds) of ``<data_dir>/<relative path>`` as uint8 ``[T, H, W, 3]`` RGB tensors.

    ``video`` arguments are paths relative to ``data_dir`` (with extension). Args as
    :class:`~data_loader.video_reader.ChunkedVideoReader` without ``chunk_len``.
    """

    def __init__(self, data_dir: str, backend: str = "decord", decode_size: DecodeSize = None, num_threads: int = 1):
        super().__init__(data_dir, chunk_len=WHOLE_FILE, backend=backend, decode_size=decode_size,
                         num_threads=num_threads)

    def chunk_path(self, video_uid: str, chunk: int) -> str:
        """The file itself for chunk 0; no later chunk exists."""
        path = os.path.join(self.data_dir, video_uid)
        return path if chunk == 0 else f"{path} (no chunk {chunk})"

    def _require_file(self, video: str, clip: tuple | None) -> None:
        if not os.path.isfile(self.chunk_path(video, 0)):
            raise VideoReadError("video file is missing", [self.chunk_path(video, 0)], clip)

    def read_clip(self, video_uid: str, clip_start: float, clip_end: float, num_frames: int,
                  sample: str = "uniform", rng: np.random.Generator | None = None, video_dur: float | None = None,
                  shrink: bool = False) -> torch.Tensor:
        self._require_file(video_uid, (video_uid, float(clip_start), float(clip_end)))
        return super().read_clip(video_uid, clip_start, clip_end, num_frames, sample, rng, video_dur, shrink)

    def read_frames(self, video_uid: str, times_sec) -> torch.Tensor:
        self._require_file(video_uid, None)
        return super().read_frames(video_uid, times_sec)

    def video_info(self, video: str) -> tuple[float, int]:
        """``(fps, number of frames)`` of a video file, from its header and index."""
        self._require_file(video, None)
        handle = open_video(self.chunk_path(video, 0), self.backend, self.decode_size, self.num_threads)
        try:
            return float(handle.fps), int(handle.num_frames)
        finally:
            handle.close()
