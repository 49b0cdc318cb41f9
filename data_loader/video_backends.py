"""Decoding one video file: decord (default, batch decoding) and PyAV (fallback and reference).

Both backends index frames the same way (position in presentation order, frame 0 first), read the
real average frame rate of the file, and return identical RGB frames (tested), also when scaling
while decoding (``decode_size``): PyAV then runs the same libavfilter chain as decord
(``scale=W:H:flags=bilinear,format=rgb24``). A variable-frame-rate file (presentation timestamps not
on a constant grid) also exposes ``frame_times``, the exact presentation time of every frame, so that
readers map seconds to frames by timestamp instead of by the average rate.

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
from fractions import Fraction
from typing import Sequence

import av
import numpy as np

BACKENDS = ("decord", "pyav")
# A file is variable-frame-rate when a frame is further than this many frame intervals from the constant grid.
VFR_DEVIATION = 0.25

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
def _packet_index(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, list[int], Fraction]:
    """Presentation timestamps of all frames in display order, the display positions of keyframes and
    the stream's time base (seconds per timestamp unit).

    Built by demuxing (no decoding), exactly like decord's frame index, so frame ``i`` means the same
    frame in both backends. Cached per (path, mtime, size): plain arrays, safe across fork.
    """
    with av.open(path) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None]
        time_base = Fraction(stream.time_base)
    packets.sort()
    pts = np.array([p for p, _ in packets], dtype=np.int64)
    keyframes = [i for i, (_, key) in enumerate(packets) if key]
    return pts, keyframes, time_base


def vfr_frame_times(times: np.ndarray) -> np.ndarray | None:
    """Float64 seconds of each frame relative to the first when ``times`` (display order, seconds) is not on a
    constant grid, else None.

    Constant rate: every frame lies within a quarter of a frame interval of the straight line from the
    first to the last frame (timestamp rounding is far smaller); a dropped or irregular frame is not.
    """
    times = np.asarray(times, dtype=np.float64)
    if len(times) < 3:
        return None
    relative = times - times[0]
    step = relative[-1] / (len(times) - 1)
    deviation = np.abs(relative - step * np.arange(len(times))).max()
    return relative if step <= 0 or deviation > VFR_DEVIATION * step else None


@functools.lru_cache(maxsize=4096)
def _header_fps(path: str, mtime_ns: int, size: int) -> float:
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 0.0


def header_fps(path: str) -> float:
    """Average frame rate of ``path`` from its header (no decoding); raises :class:`VideoReadError`."""
    try:
        return _header_fps(*_stat_key(path))
    except (av.error.FFmpegError, OSError, IndexError) as err:
        raise VideoReadError(f"cannot read the frame rate: {err}", [path]) from err


def _stat_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


# Output widths at which decord 0.6 returns wrongly strided frames ("DECORDArrayCopyFromTo: The size
# must exactly match"), found at run time (e.g. 16, 24, 48, 72 px); such files are decoded with PyAV.
_DECORD_BAD_WIDTHS: set[int] = set()


def _exact_frame_times(path: str, num_frames: int) -> np.ndarray:
    """``frame_times`` of a VFR file from its exact (integer) timestamps, as both backends use them."""
    pts, _, time_base = _packet_index(*_stat_key(path))
    if len(pts) != num_frames:
        raise VideoReadError(f"decord indexes {num_frames} frames, the demuxer {len(pts)}", [path])
    return (pts - pts[0]) * float(time_base)


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
            self.frame_times = None
            if vfr_frame_times(self._reader.get_frame_timestamp(np.arange(self.num_frames))[:, 0]) is not None:
                self.frame_times = _exact_frame_times(path, self.num_frames)
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
            self._pts, self._keyframes, time_base = _packet_index(*_stat_key(path))
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
        self.frame_times = None
        if vfr_frame_times(self._pts * float(time_base)) is not None:
            self.frame_times = (self._pts - self._pts[0]) * float(time_base)
        # Most frames one request may decode: a forward pass through the file plus a GOP per wanted frame.
        self._longest_gop = int(np.diff(self._keyframes + [self.num_frames]).max())
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
        """Frames at sorted, unique, in-range display positions ``indices``; each GOP decoded at most once.

        Bounded: once a seek lands before the keyframe asked for (demuxers with sparse seek indices, as in
        some raw VFR files with B-frames), the rest of the request is decoded forward instead of seeking
        to the same keyframe again and again; one request decodes at most a pass through the file plus
        one GOP per wanted frame, beyond that it raises :class:`VideoReadError` naming file and frame.
        """
        wanted = list(indices)
        frames: dict[int, np.ndarray] = {}
        pos, current, decoded, sought = 0, -1, 0, None
        budget = self.num_frames + len(wanted) * self._longest_gop
        stream, seeking = None, True
        try:
            while pos < len(wanted):
                target = self._keyframe_before(wanted[pos])
                if stream is None or (seeking and target > current):
                    self._container.seek(int(self._pts[target]), stream=self._stream, backward=True, any_frame=False)
                    stream, sought = self._container.decode(self._stream), target
                frame = next(stream, None)
                if frame is None:
                    raise VideoReadError(f"decoder stopped before frame {wanted[pos]}", [self.path])
                decoded += 1
                if decoded > budget:
                    raise VideoReadError(f"decoded {decoded} frames without reaching frame {wanted[pos]} "
                                         "(the file's timestamps or keyframes do not match its index)", [self.path])
                index = int(np.searchsorted(self._pts, frame.pts)) if frame.pts is not None else -1
                if index < 0 or index >= self.num_frames or self._pts[index] != frame.pts:
                    continue
                if sought is not None and index < sought:  # the seek landed early: decode forward from here on
                    seeking = False
                current, sought = index, None
                if index == wanted[pos]:
                    frames[index] = self._to_rgb(frame)
                    pos += 1
                elif index > wanted[pos]:
                    raise VideoReadError(f"frame {wanted[pos]} was not produced by the decoder", [self.path])
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
