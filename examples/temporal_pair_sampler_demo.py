"""TemporalPairBatchSampler on the synthetic EgoClip metadata: adjacency, pair ratio, coverage, sharding.

    python examples/temporal_pair_sampler_demo.py [--data data/synthetic] [--small]
        [--batch-size 16 --ratio 0.3 --max-gap 2.0 --epochs 3]

The temporal consistency loss needs clips of the same video that are close in time in the same
batch. This script reads ``meta/egoclip.csv`` through the EgoClip dataset (metadata only, no video is
decoded) and prints:
- adjacency: clips, videos, the gaps between consecutive narrations of a video and how many of them
  are within ``--max-gap`` seconds (the adjacent pairs the sampler can draw on);
- per batch: the fraction of clips that belong to an adjacent pair inside the batch, against the
  requested ``--ratio`` (pairs counted exactly as the collate function reports them to the loss);
- per epoch: how many clips are seen (each at most once) and the coverage over several epochs;
- with 2 replicas (as under DDP): the batches of rank 0 and rank 1 are disjoint.
The dataset is generated in ``--data`` if absent (``--small``: a small one). Runs in seconds.
"""
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from data_loader.EgoClip_EgoMCQ_dataset import EgoClip_EgoMCQ  # noqa: E402
from data_loader.samplers import TemporalPairBatchSampler  # noqa: E402
from examples.common import example_parser, synthetic_data  # noqa: E402


def parse_args(argv=None):
    parser = example_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ratio", type=float, default=0.3, help="requested fraction of pair members per batch")
    parser.add_argument("--max-gap", type=float, default=2.0, help="max seconds between adjacent narrations")
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the coverage statistics")
    parser.add_argument("--show-batches", type=int, default=5, help="batches of epoch 0 to list")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def print_adjacency(metadata, max_gap):
    """Print adjacency statistics; returns the number of disjoint adjacent pairs one epoch can use."""
    frame = metadata.sort_values(["video_uid", "narration_time"])
    clips_per_video = frame.groupby("video_uid").size()
    gaps_with_starts = frame.groupby("video_uid")["narration_time"].diff().to_numpy()  # NaN: first clip
    gaps = gaps_with_starts[~np.isnan(gaps_with_starts)]
    runs = [len(list(run)) for adjacent, run in itertools.groupby(gaps_with_starts <= max_gap) if adjacent]
    disjoint_pairs = sum((edges + 1) // 2 for edges in runs)  # a run of k adjacent gaps links k + 1 clips
    print("== adjacency")
    print(f"  clips {len(frame)}, videos {len(clips_per_video)}, clips per video "
          f"{clips_per_video.min()}-{clips_per_video.max()} (median {clips_per_video.median():g})")
    print(f"  consecutive narrations of a video: {len(gaps)}; within {max_gap:g} s (adjacent pairs): "
          f"{(gaps <= max_gap).sum()} ({100 * (gaps <= max_gap).mean():.0f} %)")
    print(f"  runs of adjacent clips: {len(runs)}, giving {disjoint_pairs} disjoint pairs per epoch")
    print(f"  gap between consecutive narrations, seconds (median {np.median(gaps):.2f}):")
    upper = np.append(max_gap * np.arange(0.25, 2.01, 0.25), np.inf)
    counts = np.bincount(np.searchsorted(upper, gaps), minlength=len(upper))
    scale = 40 / max(counts.max(), 1)
    for low, high, count in zip(np.append(0.0, upper[:-1]), upper, counts):
        label = f"({low:.2f}, {high:.2f}]" if np.isfinite(high) else f"> {low:.2f}"
        tag = "adjacent" if high <= max_gap else ""
        print(f"    {label:>14} {count:4d} {'#' * round(count * scale):<40} {tag}".rstrip())
    return disjoint_pairs


def pair_member_fraction(sampler, batch):
    """Fraction of the batch's clips that are in an adjacent pair with another clip of the batch."""
    pairs = sampler.pairs_for_batch(batch)
    members = set(pairs[:, :2].long().flatten().tolist())
    return len(members) / len(batch), len(pairs)


def print_batches(sampler, ratio, disjoint_pairs, show):
    batches = sampler.global_batches(0)
    num_clips = len(sampler.video_uids)
    print(f"\n== batches of epoch 0: {len(batches)} of {sampler.batch_size}, "
          f"{sampler.pairs_per_batch} adjacent pairs placed in each (requested ratio {ratio:g})")
    if sampler.pairs_per_batch:
        limit = min(num_clips // sampler.batch_size, disjoint_pairs // sampler.pairs_per_batch)
        print(f"  at most min({num_clips} clips // {sampler.batch_size}, {disjoint_pairs} disjoint pairs // "
              f"{sampler.pairs_per_batch}) = {limit} batches: clips beyond them wait for another epoch")
    fractions = []
    for i, batch in enumerate(batches):
        fraction, num_pairs = pair_member_fraction(sampler, batch)
        fractions.append(fraction)
        if i < show:
            print(f"  batch {i}: {num_pairs} pairs, pair members {fraction:.2f} of the batch")
    fractions = np.array(fractions)
    print(f"  pair-member fraction over the epoch: min {fractions.min():.2f}, mean {fractions.mean():.2f}, "
          f"max {fractions.max():.2f}; every batch >= {ratio:g}: {bool((fractions >= ratio).all())}")


def print_coverage(sampler, num_clips, epochs):
    print(f"\n== coverage ({num_clips} clips)")
    seen = set()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        indices = [i for batch in sampler for i in batch]
        seen.update(indices)
        print(f"  epoch {epoch}: {len(indices)} clips ({100 * len(indices) / num_clips:.0f} %), each at most once: "
              f"{len(set(indices)) == len(indices)}; seen so far {len(seen)} ({100 * len(seen) / num_clips:.0f} %)")


def print_shards(dataset, args):
    print("\n== 2 replicas (DDP ranks), epoch 0")
    shards = []
    for rank in range(2):
        sampler = TemporalPairBatchSampler(dataset, args.batch_size, args.ratio, args.max_gap, num_replicas=2,
                                           rank=rank, seed=args.seed)
        indices = [i for batch in sampler for i in batch]
        shards.append(set(indices))
        print(f"  rank {rank}: {len(sampler)} batches, {len(indices)} clips, first batch {sorted(next(iter(sampler)))}")
    print(f"  shared clips: {len(shards[0] & shards[1])}; together {len(shards[0] | shards[1])} distinct clips")


def main(argv=None):
    args = parse_args(argv)
    data = synthetic_data(args)
    dataset = EgoClip_EgoMCQ(data_dir=str(data / "videos"), meta_dir=str(data / "meta"), split="train")
    disjoint_pairs = print_adjacency(dataset.metadata, args.max_gap)
    sampler = TemporalPairBatchSampler(dataset, args.batch_size, args.ratio, args.max_gap, num_replicas=1, rank=0,
                                       seed=args.seed)
    print_batches(sampler, args.ratio, disjoint_pairs, args.show_batches)
    print_coverage(sampler, len(dataset), args.epochs)
    print_shards(dataset, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
