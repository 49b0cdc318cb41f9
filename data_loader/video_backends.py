"""Decoding one video file: decord (default, batch decoding) and PyAV (fallback and reference).

Both backends index frames the same way (position in presentation order, frame 0 first), read the
real average frame rate of the file, and return identical RGB frames (tested), also when scaling
while decoding (``decode_size``): PyAV then runs the same libavfilter chain as decord
(``scale=W:H:flags=bilinear,format=rgb24``).

Decord pitfalls avoided here: one ``VideoReader`` per call (a cached reader is not fork-safe in
DataLoader workers and holds decoder buffers), ``num_threads`` fixed (0 would spawn one thread per
core in every worker), sorted unique indices for ``get_batch`` (forward-only seeking), and the
global ``decord.bridge`` is never touched (numpy out, the caller makes tensors).
"""
from __future__ import annotations

import bisect
import functools
import logging
import os
from typing import Sequence

import av
import numpy as np

BACKENDS = ("decord", "pyav")

logger = logging.getLogger(__name__)


class VideoReadError(RuntimeError):
    """A video could not be read; the message names the file(s) and, when known, the clip.

    Attributes: ``reason`` (the message without file and clip), ``paths`` (tuple of file paths
    involved) and ``clip`` (``(video_uid, start_s, end_s)`` or None).
    """

    def __init__(self, message: str, paths: Sequence[str] = (), clip: tuple | None = None):
        self.reason = message
        self.paths = tuple(str(p) for p in paths)
        self.clip = clip
        details = []
        if self.paths:
            details.append("file " + ", ".join(self.paths))
        if clip is not None:
            details.append(f"clip {clip[0]} [{clip[1]:.3f}, {clip[2]:.3f}] s")
        super().__init__(f"{message} ({'; '.join(details)})" if details else message)


DecodeSize = int | tuple[int, int] | None


def scaled_size(height: int, width: int, decode_size: DecodeSize) -> tuple[int, int]:
    """Output ``(height, width)``: native when ``decode_size`` is None, short side = ``decode_size``
    (aspect kept, rounded) when it is an int, exactly ``decode_size`` when it is ``(h, w)``."""
    if decode_size is None:
        return height, width
    if isinstance(decode_size, int):
        scale = decode_size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    out_h, out_w = decode_size
    return int(out_h), int(out_w)


@functools.lru_cache(maxsize=4096)
def _probe(path: str, mtime_ns: int, size: int) -> tuple[int, int]:
    """Native ``(height, width)`` of the first video stream (header only, no decoding)."""
    with av.open(path) as container:
        ctx = container.streams.video[0].codec_context
        return ctx.height, ctx.width


@functools.lru_cache(maxsize=256)
def _packet_index(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, list[int]]:
    """Presentation timestamps of all frames in display order and the display positions of keyframes.

    Built by demuxing (no decoding), exactly like decord's frame index, so frame ``i`` means the same
    frame in both backends. Cached per (path, mtime, size): plain arrays, safe across fork.
    """
    with av.open(path) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None]
    packets.sort()
    pts = np.array([p for p, _ in packets], dtype=np.int64)
    keyframes = [i for i, (_, key) in enumerate(packets) if key]
    return pts, keyframes


def _stat_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


# Output widths at which decord 0.6 returns wrongly strided frames ("DECORDArrayCopyFromTo: The size
# must exactly match"), found at run time (e.g. 16, 24, 48, 72 px); such files are decoded with PyAV.
_DECORD_BAD_WIDTHS: set[int] = set()


class DecordVideo:
    """One file opened with decord. ``decode(indices)`` -> uint8 ``[N, H, W, 3]``.

    At an output width that decord cannot return (a decord bug), decoding falls back to PyAV,
    which gives the same frames.
    """

    def __init__(self, path: str, decode_size: DecodeSize = None, num_threads: int = 1):
        import decord

        self.path, self._decode_size, self._num_threads = path, decode_size, num_threads
        self._fallback: PyAVVideo | None = None
        try:
            self._height, self._width = scaled_size(*_probe(*_stat_key(path)), decode_size)
            size = (-1, -1) if decode_size is None else (self._height, self._width)
            self._reader = decord.VideoReader(path, ctx=decord.cpu(0), width=size[1], height=size[0],
                                              num_threads=num_threads)
            self.fps = float(self._reader.get_avg_fps())
            self.num_frames = len(self._reader)
        except (decord.DECORDError, RuntimeError, OSError, av.error.FFmpegError, IndexError) as err:
            raise VideoReadError(f"cannot open video: {err}", [path]) from err
        if self.num_frames < 1 or self.fps <= 0:
            raise VideoReadError(f"video has {self.num_frames} frames at {self.fps} fps", [path])

    def decode(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at sorted, unique, in-range display positions ``indices``."""
        import decord

        if self._width not in _DECORD_BAD_WIDTHS:
            try:
                return self._reader.get_batch(list(indices)).asnumpy()
            except (decord.DECORDError, RuntimeError) as err:
                if "size must exactly match" not in str(err):
                    raise VideoReadError(f"decord failed to decode frames {list(indices)}: {err}",
                                         [self.path]) from err
                logger.warning("decord cannot return %d-pixel-wide frames; decoding such videos with PyAV",
                               self._width)
                _DECORD_BAD_WIDTHS.add(self._width)
        if self._fallback is None:
            self._fallback = PyAVVideo(self.path, self._decode_size, self._num_threads)
        return self._fallback.decode(indices)

    def close(self) -> None:
        self._reader = None
        if self._fallback is not None:
            self._fallback.close()


class PyAVVideo:
    """One file opened with PyAV; exact frames by seeking to the preceding keyframe and decoding forward."""

    def __init__(self, path: str, decode_size: DecodeSize = None, num_threads: int = 1):
        self.path = path
        try:
            self._pts, self._keyframes = _packet_index(*_stat_key(path))
            self._container = av.open(path)
        except (av.error.FFmpegError, OSError, IndexError) as err:
            raise VideoReadError(f"cannot open video: {err}", [path]) from err
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_count = num_threads
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.num_frames = len(self._pts)
        if self.num_frames < 1 or self.fps <= 0 or not self._keyframes:
            self.close()
            raise VideoReadError(f"video has {self.num_frames} frames at {self.fps} fps", [path])
        self._scaler = None if decode_size is None else self._scale_graph(decode_size)

    def _scale_graph(self, decode_size: DecodeSize) -> av.filter.Graph:
        """Filter graph scaling to ``decode_size`` and converting to RGB, as decord does."""
        ctx = self._stream.codec_context
        height, width = scaled_size(ctx.height, ctx.width, decode_size)
        graph = av.filter.Graph()
        graph.link_nodes(graph.add_buffer(template=self._stream),
                         graph.add("scale", f"{width}:{height}:flags=bilinear"),
                         graph.add("format", "rgb24"), graph.add("buffersink")).configure()
        return graph

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        if self._scaler is None:
            return frame.to_ndarray(format="rgb24")
        self._scaler.push(frame)
        return self._scaler.pull().to_ndarray()

    def _keyframe_before(self, index: int) -> int:
        return self._keyframes[max(0, bisect.bisect_right(self._keyframes, index) - 1)]

    def decode(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at sorted, unique, in-range display positions ``indices``; each GOP decoded at most once."""
        wanted = list(indices)
        frames: dict[int, np.ndarray] = {}
        pos = 0
        try:
            while pos < len(wanted):
                self._container.seek(int(self._pts[self._keyframe_before(wanted[pos])]), stream=self._stream,
                                     backward=True, any_frame=False)
                for frame in self._container.decode(self._stream):
                    index = int(np.searchsorted(self._pts, frame.pts)) if frame.pts is not None else -1
                    if index < 0 or index >= self.num_frames or self._pts[index] != frame.pts:
                        continue
                    if index == wanted[pos]:
                        frames[index] = self._to_rgb(frame)
                        pos += 1
                    elif index > wanted[pos]:
                        raise VideoReadError(f"frame {wanted[pos]} was not produced by the decoder", [self.path])
                    if pos == len(wanted) or self._keyframe_before(wanted[pos]) > index:
                        break
                else:
                    raise VideoReadError(f"decoder stopped before frame {wanted[pos]}", [self.path])
        except av.error.FFmpegError as err:
            raise VideoReadError(f"PyAV failed to decode: {err}", [self.path]) from err
        return np.stack([frames[i] for i in wanted])

    def close(self) -> None:
        self._container.close()


def open_video(path: str, backend: str = "decord", decode_size: DecodeSize = None,
               num_threads: int = 1) -> DecordVideo | PyAVVideo:
    """Open ``path`` with ``backend``; the result has ``fps``, ``num_frames``, ``decode()`` and ``close()``."""
    if backend == "decord":
        return DecordVideo(path, decode_size, num_threads)
    if backend == "pyav":
        return PyAVVideo(path, decode_size, num_threads)
    raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")
