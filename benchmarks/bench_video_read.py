"""Clip-read throughput: one 16-frame read vs a nested 4+8+16 read (one decode) vs three separate reads.

    python benchmarks/bench_video_read.py [--data data/synthetic] [--clips 60] [--rounds 5]

Without ``--data`` it generates synthetic videos (utils.synthetic) in a temporary folder at two
frame sizes: 64 px (the demo) and 256 px (the short side of preprocessed Ego4D). For each size and
backend, the three read patterns run interleaved clip by clip for ``--rounds`` rounds over the same
clips; the median round time gives clips/s, and ratios are taken against the 16-frame read in the
same process. Cost is the CPU time of this process (robust to other load on a shared machine);
wall-clock clips/s are recorded too. Results go to benchmarks/results/video_read.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_loader.video_reader import ChunkedVideoReader  # noqa: E402
from utils import synthetic  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "video_read.json")
SCALES = (4, 8, 16)
TARGET = 1.15


def read_patterns(reader: ChunkedVideoReader) -> dict:
    """The three ways of getting 4, 8 and 16 frames of a clip (or just 16)."""
    return {
        "single_16": lambda c: reader.read_clip(*c, num_frames=16),
        "nested_4_8_16": lambda c: reader.read_clip(*c, scales=SCALES),
        "separate_4_8_16": lambda c: [reader.read_clip(*c, num_frames=n) for n in SCALES],
    }


def measure(reader: ChunkedVideoReader, clips: list[tuple], rounds: int) -> dict:
    """Per-pattern totals over ``clips`` for each of ``rounds`` rounds (after a warm-up round).

    Patterns alternate clip by clip (order rotated every round), so load from other processes hits
    all of them alike. Process CPU time is the cost measure (robust on a shared machine); wall-clock
    throughput is reported next to it. Ratios: median CPU seconds / median CPU seconds of single_16.
    """
    patterns = read_patterns(reader)
    names = list(patterns)
    cpu = {name: [] for name in names}
    wall = {name: [] for name in names}
    for round_index in range(rounds + 1):
        order = names[round_index % 3:] + names[:round_index % 3]
        cpu_total, wall_total = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
        for clip in clips:
            for name in order:
                cpu_start, wall_start = time.process_time(), time.perf_counter()
                patterns[name](clip)
                cpu_total[name] += time.process_time() - cpu_start
                wall_total[name] += time.perf_counter() - wall_start
        if round_index:
            for name in names:
                cpu[name].append(cpu_total[name])
                wall[name].append(wall_total[name])
    cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
    wall_median = {name: statistics.median(values) for name, values in wall.items()}
    return {
        "clips_per_cpu_s": {name: round(len(clips) / t, 1) for name, t in cpu_median.items()},
        "clips_per_wall_s": {name: round(len(clips) / t, 1) for name, t in wall_median.items()},
        "ratio_vs_single_16": {name: round(t / cpu_median["single_16"], 3) for name, t in cpu_median.items()},
        "wall_ratio_vs_single_16": {name: round(t / wall_median["single_16"], 3) for name, t in wall_median.items()},
    }


def load_clips(root: str, count: int) -> list[tuple]:
    csv = pd.read_csv(os.path.join(root, "meta", "egoclip.csv"), sep="\t")
    return [(r.video_uid, r.clip_start, r.clip_end) for r in csv.head(count).itertuples()]


def run(data_root: str, label: str, args: argparse.Namespace, results: dict) -> None:
    chunk_len = json.load(open(os.path.join(data_root, "meta", "taxonomy.json")))["chunk_len"]
    clips = load_clips(data_root, args.clips)
    for backend in args.backends:
        reader = ChunkedVideoReader(os.path.join(data_root, "videos"), chunk_len=chunk_len, backend=backend)
        key = f"{label}/{backend}"
        results[key] = measure(reader, clips, args.rounds)
        row = results[key]
        print(f"{key:<22}" + "".join(f"{row['clips_per_cpu_s'][n]:>12.1f} ({row['ratio_vs_single_16'][n]:.2f}x)"
                                     for n in row["clips_per_cpu_s"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="existing synthetic dataset root (default: generate)")
    parser.add_argument("--clips", type=int, default=60, help="clips per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["decord", "pyav"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="frame sizes to generate")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)

    results: dict = {}
    print("clips per CPU-second (CPU-time ratio vs single_16)")
    print(f"{'dataset/backend':<22}" + "".join(f"{name:>20}" for name in ("single_16", "nested_4_8_16",
                                                                         "separate_4_8_16")))
    if args.data:
        run(args.data, os.path.basename(os.path.normpath(args.data)), args, results)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for size in args.sizes:
                root = os.path.join(tmp, f"synthetic_{size}")
                synthetic.generate(root, seed=0, num_videos=8, num_mcq_videos=0, frame_size=size)
                run(root, f"synthetic_{size}px", args, results)
    worst = max(r["ratio_vs_single_16"]["nested_4_8_16"] for r in results.values())
    report = {
        "benchmark": "clip read: 16 frames vs nested 4+8+16 (one decode) vs three separate reads",
        "clips_per_round": args.clips, "rounds": args.rounds, "scales": list(SCALES),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
        "target": f"nested_4_8_16 <= {TARGET}x single_16",
        "worst_nested_ratio": worst, "meets_target": worst <= TARGET,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"worst nested/single ratio {worst:.3f} (target <= {TARGET}); written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
