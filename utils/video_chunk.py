"""Cut videos into chunks of N seconds named ``<video_uid>/<k>.mp4``, in-process with PyAV.

    python -m utils.video_chunk --input RESIZED_DIR --output CHUNK_DIR [--chunk-len 600]
        [--workers 4] [--shard INDEX/COUNT]

``<video_uid>`` is the file name without extension. Chunk ``k`` holds the frames whose start time
lies in ``[k * chunk_len, (k + 1) * chunk_len)`` (the layout :class:`data_loader.video_reader.
ChunkedVideoReader` reads), re-encoded (at the input's nominal rate, colour tags kept) so every cut is
frame-exact. A video's chunks are written to
a temporary folder renamed to ``<video_uid>/`` when all are done; existing complete folders are
skipped, so a re-run after a crash resumes.
"""
from __future__ import annotations

import argparse
import collections
import functools
import itertools
import os
import sys

import av

from utils.egoclip_format import chunk_of_frame
from utils.video_io import (ColourTags, H264Writer, add_batch_arguments, atomic_dir, encoder_threads, find_videos,
                            frame_rate, is_complete_video, iter_cfr_frames, job_status, run_batch_tool,
                            run_jobs, select_shard)


def chunk_video(src: str, out_dir: str, chunk_len: float = 600.0, crf: int = 23, preset: str = "veryfast",
                threads: int = 0) -> list[int]:
    """Write ``src`` as ``out_dir/<k>.mp4`` chunks of ``chunk_len`` seconds; returns frames per chunk.

    Odd frame dimensions are rounded down to even (H.264 yuv420p).
    """
    if chunk_len <= 0:
        raise ValueError(f"chunk_len must be positive, got {chunk_len}")
    frames_per_chunk = []
    with av.open(src) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = frame_rate(stream, src)
        width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2
        frames = iter_cfr_frames(container, stream, fps)
        chunk_of = functools.partial(chunk_of_frame, fps=float(fps), chunk_len=chunk_len)
        with atomic_dir(out_dir) as tmp:
            for chunk, group in itertools.groupby(frames, key=lambda item: chunk_of(item[0])):
                with H264Writer(os.path.join(tmp, f"{chunk}.mp4"), fps, width, height, crf, preset,
                                threads=threads, colour=ColourTags.of(stream)) as writer:
                    for _, frame in group:
                        writer.write(frame)
                frames_per_chunk.append(writer.num_frames)
            if not frames_per_chunk:
                raise ValueError(f"{src}: no frames decoded")
    return frames_per_chunk


def is_complete_chunk_dir(folder: str) -> bool:
    """True when ``folder`` holds chunks ``0.mp4 .. N.mp4`` with no gap, each decodable."""
    if not os.path.isdir(folder):
        return False
    names = [n for n in os.listdir(folder) if n.endswith(".mp4") and n[:-4].isdigit()]
    expected = {f"{k}.mp4" for k in range(len(names))}
    return bool(names) and set(names) == expected and all(is_complete_video(os.path.join(folder, n)) for n in names)


def _chunk_job(rel_path: str, input_dir: str, output_dir: str, chunk_len: float, crf: int, preset: str,
               threads: int) -> tuple[str, str]:
    """Worker: ``(rel_path, 'skipped' | 'done' | 'failed: reason')``."""
    out_dir = os.path.join(output_dir, video_uid_of(rel_path))
    return job_status(rel_path, is_complete_chunk_dir(out_dir), lambda: chunk_video(
        os.path.join(input_dir, rel_path), out_dir, chunk_len, crf, preset, threads), "chunking")


def video_uid_of(rel_path: str) -> str:
    """Video uid of an input file: its name without folder and extension."""
    return os.path.splitext(os.path.basename(rel_path))[0]


def chunk_folder(input_dir: str, output_dir: str, chunk_len: float = 600.0, workers: int = 1,
                 shard: tuple[int, int] = (0, 1), crf: int = 23, preset: str = "veryfast",
                 progress: bool = True) -> dict[str, str]:
    """Chunk every video under ``input_dir`` of shard ``(index, count)``; returns ``{rel_path: status}``."""
    videos = find_videos(input_dir)
    duplicates = sorted(u for u, n in collections.Counter(map(video_uid_of, videos)).items() if n > 1)
    if duplicates:
        raise ValueError(f"{input_dir}: several input files share the video uid(s) {duplicates}")
    job = functools.partial(_chunk_job, input_dir=input_dir, output_dir=output_dir, chunk_len=chunk_len,
                            crf=crf, preset=preset, threads=encoder_threads(workers))
    return dict(run_jobs(job, select_shard(videos, *shard), workers, desc="chunk", progress=progress))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.video_chunk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="folder of (resized) videos, walked recursively")
    parser.add_argument("--output", required=True, help="folder for <video_uid>/<k>.mp4 chunks")
    parser.add_argument("--chunk-len", type=float, default=600.0, help="seconds per chunk")
    add_batch_arguments(parser, encoder=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_batch_tool(build_parser(), argv, lambda args: chunk_folder(
        args.input, args.output, args.chunk_len, args.workers, args.shard, args.crf, args.preset,
        progress=not args.no_progress), "chunked")


if __name__ == "__main__":
    sys.exit(main())
