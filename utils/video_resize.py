"""Resize videos so the short side is 256 (even dimensions), in-process with PyAV (no ffmpeg binary).

    python -m utils.video_resize --input RAW_DIR --output RESIZED_DIR [--short-side 256]
        [--workers 4] [--shard INDEX/COUNT]

Walks ``--input``; writes ``--output/<same relative path>.mp4`` (H.264, constant frame rate at the
input's nominal rate, so a variable-rate input keeps every frame that lies on its grid; colour range,
matrix, primaries and transfer of the input kept; audio dropped). Outputs that already exist and decode are skipped, so a
re-run after a crash resumes; each file is written under a temporary name and renamed when done.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

import av

from utils.video_io import (ColourTags, H264Writer, add_batch_arguments, atomic_file, encoder_threads, find_videos,
                            frame_rate, is_complete_video, iter_cfr_frames, job_status, run_batch_tool,
                            run_jobs, select_shard)


def resized_dimensions(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the short side is ``short_side``, both rounded to even numbers."""
    if short_side < 2 or short_side % 2:
        raise ValueError(f"short_side must be an even number >= 2, got {short_side}")
    scale = short_side / min(width, height)
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


def resize_video(src: str, dst: str, short_side: int = 256, crf: int = 23, preset: str = "veryfast",
                 threads: int = 0) -> int:
    """Re-encode ``src`` to ``dst`` with the short side scaled to ``short_side``; returns frames written."""
    with av.open(src) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = frame_rate(stream, src)
        width, height = resized_dimensions(stream.codec_context.width, stream.codec_context.height, short_side)
        with atomic_file(dst) as tmp, H264Writer(tmp, fps, width, height, crf, preset, threads=threads,
                                                 colour=ColourTags.of(stream)) as writer:
            for _, frame in iter_cfr_frames(container, stream, fps):
                writer.write(frame)
    if writer.num_frames == 0:
        raise ValueError(f"{src}: no frames decoded")
    return writer.num_frames


def _resize_job(rel_path: str, input_dir: str, output_dir: str, short_side: int, crf: int, preset: str,
                threads: int) -> tuple[str, str]:
    """Worker: ``(rel_path, 'skipped' | 'done' | 'failed: reason')``."""
    dst = os.path.join(output_dir, os.path.splitext(rel_path)[0] + ".mp4")
    return job_status(rel_path, os.path.exists(dst) and is_complete_video(dst), lambda: resize_video(
        os.path.join(input_dir, rel_path), dst, short_side, crf, preset, threads), "resizing")


def resize_folder(input_dir: str, output_dir: str, short_side: int = 256, workers: int = 1,
                  shard: tuple[int, int] = (0, 1), crf: int = 23, preset: str = "veryfast",
                  progress: bool = True) -> dict[str, str]:
    """Resize every video under ``input_dir`` of shard ``(index, count)``; returns ``{rel_path: status}``."""
    videos = select_shard(find_videos(input_dir), *shard)
    job = functools.partial(_resize_job, input_dir=input_dir, output_dir=output_dir, short_side=short_side,
                            crf=crf, preset=preset, threads=encoder_threads(workers))
    return dict(run_jobs(job, videos, workers, desc="resize", progress=progress))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.video_resize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="folder of source videos (walked recursively)")
    parser.add_argument("--output", required=True, help="folder for the resized videos")
    parser.add_argument("--short-side", type=int, default=256, help="target short side in pixels (even)")
    add_batch_arguments(parser, encoder=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_batch_tool(build_parser(), argv, lambda args: resize_folder(
        args.input, args.output, args.short_side, args.workers, args.shard, args.crf, args.preset,
        progress=not args.no_progress), "resized")


if __name__ == "__main__":
    sys.exit(main())
