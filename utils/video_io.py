"""PyAV video writing and the batch-tool plumbing shared by the preprocessing tools and the
synthetic dataset generator: atomic outputs, constant-frame-rate decoding, sharding, worker pools.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable, Iterator, Sequence

import av
import numpy as np
from tqdm import tqdm

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


def partial_path(final_path: str) -> str:
    """Temporary sibling of ``final_path`` (hidden, same folder, so the final rename is atomic)."""
    folder, name = os.path.split(final_path)
    return os.path.join(folder, f".{name}.partial")


@contextlib.contextmanager
def atomic_file(final_path: str) -> Iterator[str]:
    """Yield a temporary path; on success it is renamed to ``final_path``, on error removed."""
    os.makedirs(os.path.dirname(final_path) or ".", exist_ok=True)
    tmp = partial_path(final_path)
    try:
        yield tmp
        os.replace(tmp, final_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(final_dir: str) -> Iterator[str]:
    """Yield an empty temporary folder; on success it replaces ``final_dir``, on error it is removed."""
    tmp = partial_path(final_dir.rstrip(os.sep))
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(tmp, final_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class ColourTags:
    """A video stream's colour description (FFmpeg enum values): ``range`` (1 limited/tv, 2 full/pc),
    ``space`` (YUV matrix, e.g. 1 BT.709, 5/6 BT.601), ``primaries`` and ``trc`` (transfer); 0/2 = unspecified."""

    range: int
    space: int
    primaries: int
    trc: int

    @classmethod
    def of(cls, stream: av.video.stream.VideoStream) -> "ColourTags":
        ctx = stream.codec_context
        return cls(int(ctx.color_range), int(ctx.colorspace), int(ctx.color_primaries), int(ctx.color_trc))


class H264Writer:
    """Writes RGB uint8 ``[H, W, 3]`` frames (or PyAV frames) to an H.264/yuv420p mp4 at constant ``fps``.

    ``height``/``width`` must be even. ``gop``: keyframe interval in frames (None: x264 default).
    ``threads``: x264 threads (0 = auto). ``colour``: the output's colour tags, e.g. the source's
    (:meth:`ColourTags.of`): PyAV frames are then scaled without any change of YUV matrix or range and the
    stream is tagged with them, so players convert to RGB exactly as for the source (untagged output
    is read as BT.601 limited range, which shifts the colours of BT.709 or full-range sources); RGB
    arrays are converted with that matrix and range. None: untagged, frames converted with defaults.
    """

    def __init__(self, path: str, fps: float | Fraction, width: int, height: int, crf: int = 23,
                 preset: str = "veryfast", gop: int | None = None, threads: int = 0, colour: ColourTags | None = None):
        if width % 2 or height % 2:
            raise ValueError(f"H.264/yuv420p needs even frame dimensions, got {width}x{height} for {path}")
        self.width, self.height, self.colour = width, height, colour
        self._rate = Fraction(fps).limit_denominator(100000)
        self._container = av.open(path, mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=self._rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        if colour is not None:
            ctx = self._stream.codec_context
            ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc = (
                colour.range, colour.space, colour.primaries, colour.trc)
        options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
        if gop is not None:
            options["g"] = str(gop)
        self._stream.options = options
        self.num_frames = 0

    def write(self, frame: np.ndarray | av.VideoFrame) -> None:
        """Append one frame (scaled to the writer's size if it is a PyAV frame of another size)."""
        colour = self.colour
        if isinstance(frame, np.ndarray):
            out = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if colour is not None:
                out = out.reformat(format="yuv420p", dst_colorspace=colour.space, dst_color_range=colour.range)
        elif colour is None:
            out = frame.reformat(width=self.width, height=self.height, format="yuv420p",
                                 interpolation="BICUBIC")
        else:
            out = frame.reformat(width=self.width, height=self.height, format="yuv420p", interpolation="BICUBIC",
                                 src_colorspace=frame.colorspace, dst_colorspace=colour.space,
                                 src_color_range=frame.color_range, dst_color_range=colour.range)
        out.pts = self.num_frames
        out.time_base = 1 / self._rate
        self._container.mux(self._stream.encode(out))
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        self._container.mux(self._stream.encode(None))
        self._container.close()

    def __enter__(self) -> "H264Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._container.close()


def frame_rate(stream: av.video.stream.VideoStream, path: str) -> Fraction:
    """Nominal frame rate of ``stream``: the rate of its timestamp grid (FFmpeg's guessed rate, from
    ``r_frame_rate``), the average rate as fallback; raises ValueError naming ``path``.

    For a constant-rate stream both are equal. A variable-rate one whose frames sit on a grid with gaps
    (dropped or held frames) keeps every frame when resampled at the grid's rate, where its lower average
    rate would drop frames; for irregular timestamps FFmpeg's guess is the average rate itself.
    """
    rate = stream.guessed_rate or stream.average_rate
    if not rate or rate <= 0:
        raise ValueError(f"{path}: video stream has no frame rate")
    return Fraction(rate)


def iter_cfr_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    fps: Fraction) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decode ``stream`` as constant-rate frames: yields ``(index, frame)`` for index 0, 1, 2, ...

    Output frame ``n`` (time ``n / fps`` after the first frame) is the latest input frame whose time
    rounds to a slot <= n; for a constant-rate input this is exactly the input frame sequence, for a
    variable-rate one frames are repeated or dropped (like ``ffmpeg -vsync cfr``).
    """
    first_pts = None
    pending, next_index = None, 0
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        if first_pts is None:
            first_pts = frame.pts
        slot = round((frame.pts - first_pts) * stream.time_base * fps)
        if pending is not None:
            while next_index < slot:
                yield next_index, pending
                next_index += 1
        pending = frame
    if pending is not None:
        yield next_index, pending


def is_complete_video(path: str) -> bool:
    """True when ``path`` opens as a video and its first frame decodes (an mp4 cut short lacks its index)."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            return next(container.decode(stream), None) is not None
    except (av.error.FFmpegError, OSError, IndexError):
        return False


def find_videos(root: str, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[str]:
    """Sorted paths, relative to ``root``, of the video files under ``root`` (hidden names skipped)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files
                  if not f.startswith(".") and f.lower().endswith(tuple(extensions))]
    return sorted(found)


def parse_shard(text: str) -> tuple[int, int]:
    """``'INDEX/COUNT'`` -> ``(index, count)`` with ``0 <= index < count``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like INDEX/COUNT (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, COUNT), got {text!r}")
    return index, count


def add_batch_arguments(parser: argparse.ArgumentParser, encoder: bool = False) -> None:
    """Add the options shared by the batch tools: ``--workers``, ``--shard``, ``--no-progress``, and with
    ``encoder`` the x264 options ``--crf`` and ``--preset`` of the tools that re-encode."""
    if encoder:
        parser.add_argument("--crf", type=int, default=23, help="x264 constant rate factor")
        parser.add_argument("--preset", default="veryfast", help="x264 preset")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--shard", type=_shard_argument, default=(0, 1), metavar="INDEX/COUNT",
                        help="process only shard INDEX of COUNT of the sorted inputs "
                             "(e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _shard_argument(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def select_shard(items: Sequence, index: int, count: int) -> list:
    """Every ``count``-th item starting at ``index`` (shards are disjoint and cover ``items``)."""
    return list(items[index::count])


def run_jobs(function: Callable, jobs: Iterable, workers: int = 1, desc: str = "",
             progress: bool = True) -> list:
    """``[function(job) for job in jobs]`` (in completion order) on ``workers`` processes with a tqdm bar."""
    jobs = list(jobs)
    bar = dict(total=len(jobs), desc=desc, disable=not progress, unit="video")
    if workers <= 1 or len(jobs) <= 1:
        return [function(job) for job in tqdm(jobs, **bar)]
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        return list(tqdm(pool.imap_unordered(function, jobs), **bar))


def job_status(rel_path: str, complete: bool, work: Callable[[], object], action: str) -> tuple[str, str]:
    """A batch tool worker's result ``(rel_path, 'skipped' | 'done' | 'failed: reason')``.

    ``complete``: the output is already there (skipped); otherwise ``work()`` runs, and an OSError,
    ValueError or RuntimeError is logged as "``action`` ``rel_path`` failed" and reported.
    """
    if complete:
        return rel_path, "skipped"
    try:
        work()
    except (OSError, ValueError, RuntimeError) as err:
        logger.error("%s %s failed: %s", action, rel_path, err)
        return rel_path, f"failed: {err}"
    return rel_path, "done"


def encoder_threads(workers: int) -> int:
    """x264 threads per encoder so that ``workers`` parallel encoders share the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def summarize(status: dict[str, str], action: str) -> tuple[str, int]:
    """A batch tool's ``{input: status}`` as report text (counts, then each failure) and the failure count."""
    failed = sorted(path for path, state in status.items() if state.startswith("failed"))
    done = sum(state == "done" for state in status.values())
    skipped = sum(state == "skipped" for state in status.values())
    lines = [f"{action} {done}, skipped {skipped} (already complete), failed {len(failed)}"]
    lines += [f"  {path}: {status[path]}" for path in failed]
    return "\n".join(lines), len(failed)


def run_batch_tool(parser: argparse.ArgumentParser, argv: list[str] | None,
                   run: Callable[[argparse.Namespace], dict[str, str]], action: str) -> int:
    """A batch tool's ``main``: parse ``argv``, log to stderr, ``run(args)`` -> ``{input: status}``, print
    the :func:`summarize` report; returns the exit status (1 when any input failed)."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report, failures = summarize(run(args), action)
    print(report)
    return 1 if failures else 0
