"""Full dataset path (decode + transforms + collate) for single-scale vs multi-scale training samples.

    python benchmarks/bench_data_pipeline.py [--data DIR] [--frame-size 256 --input-res 224 --fps 30 ...]

Generates a synthetic EgoClip set (EgoVLP-like 256-px, 30 fps chunks) unless ``--data`` points at one,
then times, in this process and interleaved round by round, batches of ``EgoClip_EgoMCQ`` items with 4
and 16 frames and ``MultiScaleEgoClip_EgoMCQ`` items with 4+8+16 frames (one 16-frame decode), each
collated with ``EgoClipCollate``. Reports clips/s and ratios against the single-scale 16-frame path;
writes ``benchmarks/results/data_pipeline.json``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_info, write_report  # noqa: E402
from data_loader.EgoClip_EgoMCQ_dataset import EgoClip_EgoMCQ  # noqa: E402
from data_loader.MultiScaleEgoClip_dataset import MultiScaleEgoClip_EgoMCQ  # noqa: E402
from data_loader.collate import EgoClipCollate  # noqa: E402
from utils.synthetic import generate  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "data_pipeline.json")


def build_datasets(root: str, input_res: int, backend: str) -> dict:
    common = {"data_dir": os.path.join(root, "videos"), "meta_dir": os.path.join(root, "meta"),
              "reader": {"backend": backend}}
    return {
        "single_4": EgoClip_EgoMCQ(video_params={"input_res": input_res, "num_frames": 4}, **common),
        "single_16": EgoClip_EgoMCQ(video_params={"input_res": input_res, "num_frames": 16}, **common),
        "multi_4_8_16": MultiScaleEgoClip_EgoMCQ(video_params={"input_res": input_res, "scales": [4, 8, 16]},
                                                 **common),
    }


def time_pass(dataset, batches: list[list[int]], collate) -> float:
    """Seconds to build and collate every batch."""
    start = time.perf_counter()
    for indices in batches:
        collate([dataset[i] for i in indices])
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="existing synthetic dataset root (default: generate one)")
    parser.add_argument("--frame-size", type=int, default=256)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--input-res", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3, help="batches per timed pass")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed passes per variant (median)")
    parser.add_argument("--backend", default="decord", choices=("decord", "pyav"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = one worker)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = tmp
            t0 = time.perf_counter()
            generate(root, seed=0, num_videos=args.num_videos, num_mcq_videos=0, fps=args.fps,
                     frame_size=args.frame_size, chunk_len=10.0)
            print(f"generated synthetic data in {time.perf_counter() - t0:.1f} s")
        datasets = build_datasets(root, args.input_res, args.backend)
        num_items = len(datasets["single_4"])
        gen = torch.Generator().manual_seed(0)
        order = torch.randperm(num_items, generator=gen).tolist()
        needed = args.batch_size * args.batches
        order = (order * (needed // num_items + 1))[:needed]
        batches = [order[b * args.batch_size:(b + 1) * args.batch_size] for b in range(args.batches)]
        collate = EgoClipCollate()
        for dataset in datasets.values():  # warm-up: opens readers, fills fps caches
            time_pass(dataset, batches[:1], collate)
        times = {name: [] for name in datasets}
        for _ in range(args.rounds):
            for name, dataset in datasets.items():
                torch.manual_seed(0)
                times[name].append(time_pass(dataset, batches, collate))

    clips = args.batch_size * args.batches
    results = {name: {"median_s": statistics.median(ts), "clips_per_s": clips / statistics.median(ts),
                      "ms_per_clip": 1000 * statistics.median(ts) / clips} for name, ts in times.items()}
    base = results["single_16"]["median_s"]
    ratios = {f"{name}_vs_single_16": results[name]["median_s"] / base for name in results}
    report = {"benchmark": "data_pipeline", "what": "decode + transforms + collate per training clip",
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "data")},
              "dataset": "given" if args.data else "generated", "num_clips_in_set": num_items,
              "machine": machine_info(torch=torch.__version__), "results": results, "time_ratios": ratios}

    print(f"{'variant':<14}{'clips/s':>10}{'ms/clip':>10}{'time vs single_16':>20}")
    for name, r in results.items():
        print(f"{name:<14}{r['clips_per_s']:>10.1f}{r['ms_per_clip']:>10.1f}{ratios[f'{name}_vs_single_16']:>20.2f}")
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
