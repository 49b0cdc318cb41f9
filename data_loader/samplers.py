"""Samplers whose indices carry their epoch, and TemporalPairBatchSampler (batches that contain temporally
adjacent clips of the same video).

Epochs reach the dataset with the indices: the samplers of this module yield :class:`EpochIndex` values
(ints that also carry ``.epoch``), which the dataset reads in whichever worker serves them. Setting an
attribute on the dataset would not do: DataLoader workers hold copies of it, and persistent workers keep
the copies they were started with.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DistributedSampler, Sampler

from data_loader.collate import temporal_pairs
from utils.distributed import get_rank, get_world_size


class EpochIndex(int):
    """A dataset index (an ``int``, equal to the plain index) that also carries the ``epoch`` it was drawn for."""

    epoch: int

    def __new__(cls, index: int, epoch: int) -> "EpochIndex":
        value = super().__new__(cls, index)
        value.epoch = int(epoch)
        return value

    def __reduce__(self):
        return EpochIndex, (int(self), self.epoch)

    def __repr__(self) -> str:
        return f"EpochIndex({int(self)}, epoch={self.epoch})"


class EpochDistributedSampler(DistributedSampler):
    """``DistributedSampler`` yielding :class:`EpochIndex` values of the epoch set by ``set_epoch``."""

    def __iter__(self) -> Iterator[EpochIndex]:
        epoch = self.epoch
        return (EpochIndex(index, epoch) for index in super().__iter__())


def temporal_columns(data_source) -> tuple[np.ndarray, np.ndarray]:
    """(video_uid [N] object, narration_time [N] float64) of a dataset with a ``metadata`` DataFrame,
    a DataFrame, or a mapping with those two keys."""
    source = data_source.metadata if hasattr(data_source, "metadata") else data_source
    if isinstance(source, (pd.DataFrame, Mapping)):
        try:
            uids, times = source["video_uid"], source["narration_time"]
        except KeyError as err:
            raise ValueError(f"temporal pair sampling needs a '{err.args[0]}' column") from None
        uids = np.asarray(uids, dtype=object)
        times = np.asarray(times, dtype=np.float64)
        if uids.shape != times.shape or uids.ndim != 1:
            raise ValueError(f"video_uid {uids.shape} and narration_time {times.shape} must be equal-length 1-D")
        return uids, times
    raise TypeError(f"cannot read video_uid/narration_time from {type(data_source).__name__}; pass a dataset "
                    "with a 'metadata' DataFrame, a DataFrame or a mapping")


def _distributed_defaults(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``: the given values, else the process group's (1 and 0 without one); checked."""
    num_replicas = get_world_size() if num_replicas is None else num_replicas
    rank = get_rank() if rank is None else rank
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
    return num_replicas, rank


class TemporalPairBatchSampler(Sampler):
    """Yields index lists (of :class:`EpochIndex`) of ``batch_size`` in which at least ``temporal_pair_ratio``
    of the samples are members of adjacent pairs whose two members are both in the batch.

    Adjacency (built once): clips grouped by ``video_uid`` and sorted by ``narration_time``; consecutive
    clips at most ``max_temporal_gap`` seconds apart are adjacent. Each epoch, every run of adjacent clips
    is cut into disjoint consecutive pairs (odd runs at a random offset); each batch gets
    ``ceil(ceil(ratio * batch_size) / 2)`` of those pairs and is filled with the other indices at random.
    Every index appears at most once per epoch; indices that do not fill a whole batch, or that would
    need more pairs than exist, are left out of that epoch.

    Distributed: the same global batch list is built on every rank (``seed``, ``epoch``) and dealt out
    round-robin, truncated to a multiple of ``num_replicas``, so ranks get disjoint batches and the same
    number of them. ``num_replicas``/``rank`` default to torch.distributed's when it is initialised.
    """

    def __init__(self, data_source, batch_size: int, temporal_pair_ratio: float = 0.3,
                 max_temporal_gap: float = 2.0, num_replicas: int | None = None, rank: int | None = None,
                 seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0.0 <= temporal_pair_ratio <= 1.0:
            raise ValueError(f"temporal_pair_ratio must be in [0, 1], got {temporal_pair_ratio}")
        self.video_uids, self.narration_times = temporal_columns(data_source)
        self.batch_size, self.temporal_pair_ratio = int(batch_size), float(temporal_pair_ratio)
        self.max_temporal_gap, self.seed, self.epoch = float(max_temporal_gap), int(seed), 0
        self.num_replicas, self.rank = _distributed_defaults(num_replicas, rank)
        self.pairs_per_batch = math.ceil(math.ceil(self.temporal_pair_ratio * self.batch_size - 1e-9) / 2)
        if 2 * self.pairs_per_batch > self.batch_size:
            raise ValueError(f"temporal_pair_ratio {temporal_pair_ratio} needs {2 * self.pairs_per_batch} pair "
                             f"members in a batch of {batch_size}; lower the ratio or raise the batch size")
        self._order, self._run_starts, self._run_lengths = self._adjacent_runs()
        num_pairs = int((self._run_lengths // 2).sum())
        if self.pairs_per_batch and num_pairs == 0:
            raise ValueError(f"no two clips of the same video are within max_temporal_gap={max_temporal_gap}s "
                             f"of each other in {len(self.video_uids)} clips, so temporal_pair_ratio="
                             f"{temporal_pair_ratio} cannot be met; set it to 0 or raise the gap")
        global_batches = len(self.video_uids) // self.batch_size
        if self.pairs_per_batch:
            global_batches = min(global_batches, num_pairs // self.pairs_per_batch)
        self._num_batches = global_batches // self.num_replicas
        if self._num_batches == 0:
            raise ValueError(f"{len(self.video_uids)} clips ({num_pairs} adjacent pairs) do not fill one batch of "
                             f"{batch_size} with ratio {temporal_pair_ratio} per each of {self.num_replicas} replicas")

    def _adjacent_runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices sorted by (video, time), and start positions / lengths (>= 2) of runs of adjacent clips."""
        codes, _ = pd.factorize(self.video_uids)
        order = np.lexsort((self.narration_times, codes))
        sorted_codes, sorted_times = codes[order], self.narration_times[order]
        adjacent = (sorted_codes[1:] == sorted_codes[:-1]) & (np.diff(sorted_times) <= self.max_temporal_gap)
        edges = np.concatenate([[False], adjacent, [False]]).astype(np.int8)
        change = np.diff(edges)
        starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
        return order, starts, ends - starts + 1

    def _epoch_pairs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Disjoint adjacent pairs ``[P, 2]`` (odd runs cut at a random offset) and all other indices."""
        pairs_per_run = self._run_lengths // 2
        offsets = (self._run_lengths % 2) * rng.integers(0, 2, size=len(self._run_lengths))
        first_of_run = np.repeat(self._run_starts + offsets, pairs_per_run)
        step = np.arange(first_of_run.size) - np.repeat(np.cumsum(pairs_per_run) - pairs_per_run, pairs_per_run)
        first = first_of_run + 2 * step
        pairs = np.stack([self._order[first], self._order[first + 1]], axis=1)
        paired = np.zeros(len(self.video_uids), dtype=bool)
        paired[pairs.reshape(-1)] = True
        return pairs, np.flatnonzero(~paired)

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every rank's batches of an epoch (before dealing them out), as index lists."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
        num_batches = self._num_batches * self.num_replicas
        pairs, others = self._epoch_pairs(rng)
        pairs = pairs[rng.permutation(len(pairs))]
        reserved = num_batches * self.pairs_per_batch
        pool = np.concatenate([others, pairs[reserved:].reshape(-1)])
        pool = pool[rng.permutation(len(pool))]
        fill = self.batch_size - 2 * self.pairs_per_batch
        batches = []
        for b in range(num_batches):
            members = np.concatenate([pairs[b * self.pairs_per_batch:(b + 1) * self.pairs_per_batch].reshape(-1),
                                      pool[b * fill:(b + 1) * fill]])
            batches.append(members[rng.permutation(len(members))].tolist())
        return batches

    def __iter__(self) -> Iterator[list[EpochIndex]]:
        epoch = self.epoch
        for batch in self.global_batches(epoch)[self.rank::self.num_replicas]:
            yield [EpochIndex(index, epoch) for index in batch]

    def __len__(self) -> int:
        return self._num_batches

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches the next ``__iter__`` yields (call before each epoch)."""
        self.epoch = int(epoch)

    def pairs_for_batch(self, batch: list[int]) -> torch.Tensor:
        """``[P, 3]`` rows ``(i, j, dt)`` of a batch, exactly as :class:`EgoClipCollate` computes them."""
        idx = np.asarray(batch, dtype=np.int64)
        return temporal_pairs(self.video_uids[idx].tolist(), self.narration_times[idx], self.max_temporal_gap)
