"""Per-clip video cost of a training sample, measured where training reads: the datasets' ``_get_video``.

    python benchmarks/bench_video_read.py [--data DIR] [--clips 40] [--rounds 5] [--sizes 64 256]

For each frame size and backend, three ways of getting a clip's training video (decode + transform,
``split='train'``: random frames per segment, random crop/flip) run interleaved clip by clip:

* ``single_16``: ``EgoClip_EgoMCQ`` with 16 frames (the baseline);
* ``multi_4_8_16``: ``MultiScaleEgoClip_EgoMCQ`` with scales 4, 8, 16 (one 16-frame decode and transform,
  the coarser scales nested in it);
* ``separate_4_8_16``: three ``EgoClip_EgoMCQ`` reads with 4, 8 and 16 frames.

Without ``--data`` it generates synthetic videos (utils.synthetic) in a temporary folder at 64 px (the
demo) and 256 px (the short side of preprocessed Ego4D); frames are cropped to ``min(224, size)`` px.
Cost is the CPU time of this process (robust to other load on a shared machine), the median over
``--rounds`` rounds after a warm-up round; wall-clock clips/s are recorded too. Ratios are taken against
``single_16`` in the same process. Results go to benchmarks/results/video_read.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_info, write_report  # noqa: E402
from data_loader.EgoClip_EgoMCQ_dataset import EgoClip_EgoMCQ  # noqa: E402
from data_loader.MultiScaleEgoClip_dataset import MultiScaleEgoClip_EgoMCQ  # noqa: E402
from utils import synthetic  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "video_read.json")
SCALES = (4, 8, 16)
TARGET = 1.15
PATTERNS = ("single_16", "multi_4_8_16", "separate_4_8_16")


def build_patterns(root: str, backend: str, input_res: int) -> dict:
    """Pattern name -> the datasets whose ``_get_video`` together give one clip's video that way."""
    common = {"data_dir": os.path.join(root, "videos"), "meta_dir": os.path.join(root, "meta"),
              "reader": {"backend": backend}, "split": "train"}
    single = {n: EgoClip_EgoMCQ(video_params={"input_res": input_res, "num_frames": n}, **common) for n in SCALES}
    multi = MultiScaleEgoClip_EgoMCQ(video_params={"input_res": input_res, "scales": list(SCALES)}, **common)
    return {"single_16": [single[16]], "multi_4_8_16": [multi], "separate_4_8_16": list(single.values())}


def measure(patterns: dict, clips: list[int], rounds: int) -> dict:
    """Per-pattern CPU and wall seconds over ``clips`` (dataset rows), median of ``rounds`` after a warm-up.

    Patterns alternate clip by clip (order rotated every round), so load from other processes hits all
    of them alike; every pattern gets the same random generator seed per clip and round.
    """
    cpu = {name: [] for name in patterns}
    wall = {name: [] for name in patterns}
    for round_index in range(rounds + 1):
        order = PATTERNS[round_index % 3:] + PATTERNS[:round_index % 3]
        cpu_total, wall_total = dict.fromkeys(patterns, 0.0), dict.fromkeys(patterns, 0.0)
        for row in clips:
            for name in order:
                cpu_start, wall_start = time.process_time(), time.perf_counter()
                for dataset in patterns[name]:
                    dataset._get_video(dataset._train_clip(row), np.random.default_rng([round_index, row]))
                cpu_total[name] += time.process_time() - cpu_start
                wall_total[name] += time.perf_counter() - wall_start
        if round_index:  # round 0 warms up: opens readers, fills the fps caches
            for name in patterns:
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


def run(data_root: str, label: str, args: argparse.Namespace, results: dict) -> None:
    taxonomy = json.load(open(os.path.join(data_root, "meta", "taxonomy.json")))
    input_res = min(args.input_res, *taxonomy.get("frame_size", [args.input_res]))
    for backend in args.backends:
        patterns = build_patterns(data_root, backend, input_res)
        clips = list(range(min(args.clips, len(patterns["single_16"][0]))))
        key = f"{label}/{backend}"
        results[key] = {"input_res": input_res, "clips": len(clips), **measure(patterns, clips, args.rounds)}
        row = results[key]
        print(f"{key:<22}" + "".join(f"{row['clips_per_cpu_s'][n]:>12.1f} ({row['ratio_vs_single_16'][n]:.2f}x)"
                                     for n in PATTERNS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="existing synthetic dataset root (default: generate)")
    parser.add_argument("--clips", type=int, default=40, help="clips per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["decord", "pyav"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="frame sizes to generate")
    parser.add_argument("--input-res", type=int, default=224, help="crop size (at most the frame size)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = one worker)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    results: dict = {}
    print("clips per CPU-second (CPU-time ratio vs single_16)")
    print(f"{'dataset/backend':<22}" + "".join(f"{name:>20}" for name in PATTERNS))
    if args.data:
        run(args.data, os.path.basename(os.path.normpath(args.data)), args, results)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for size in args.sizes:
                root = os.path.join(tmp, f"synthetic_{size}")
                synthetic.generate(root, seed=0, num_videos=8, num_mcq_videos=0, frame_size=size)
                run(root, f"synthetic_{size}px", args, results)
    worst = max(r["ratio_vs_single_16"]["multi_4_8_16"] for r in results.values())
    report = {
        "benchmark": "training video per clip (dataset _get_video: decode + transform): 16 frames vs "
                     "multi-scale 4+8+16 vs three separate reads",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "data")}, "scales": list(SCALES),
        "machine": machine_info(torch=torch.__version__),
        "results": results,
        "target": f"multi_4_8_16 <= {TARGET}x single_16",
        "worst_multi_ratio": worst, "meets_target": worst <= TARGET,
    }
    print(f"worst multi-scale/single ratio {worst:.3f} (target <= {TARGET})")
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
