"""Procedural videos for temporal alignment: EgoProceL-style task files, per-video feature arrays, task splits
and task-homogeneous batches.

Task file (``egoprocel.json``)::

    {"<task>": {"handles": ["<handle>", ...],
                "hdl_actions": [["<action id>", ...], ...],      # one list per handle, ids as strings
                "hdl_start_times": [[<first frame>, ...], ...],  # frame indices, inclusive
                "hdl_end_times": [[<last frame>, ...], ...]}, ...}

Features: ``<features_dir>/<handle>.npy`` holding ``[T, D]`` (one row per frame). Action ids ``'0'``, ``'SIL'``
and ``'background'`` (configurable) are background: those frames belong to no action. Each task's handles are
split in file order: the first ``train_fraction`` (0.65; the GTCC paper states 0.7) train, the rest test.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data_loader.feature_store import FolderFeatureStore
from data_loader.frame_sampling import sample_frame_indices
from data_loader.samplers import EpochIndex, _distributed_defaults
from data_loader.worker_signals import ignore_preemption_signals
from utils.config_schema import Bounds
from utils.registry import LOADERS

BACKGROUND_LABELS = ("0", "SIL", "background")
TASK_KEYS = ("handles", "hdl_actions", "hdl_start_times", "hdl_end_times")


@dataclass(frozen=True)
class Segment:
    """One action: its id and inclusive frame range."""

    action: str
    start: int
    end: int


@dataclass(frozen=True)
class ProceduralVideo:
    """A video of a task with its (non-background) action segments in frame order."""

    handle: str
    task: str
    segments: tuple[Segment, ...]
    split: str


def _check_frame(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise ValueError(f"{where}: frame indices must be non-negative integers, got {value!r}")
    return int(value)


def read_task_file(path: str | Path, background_labels: Sequence[str] = BACKGROUND_LABELS,
                   train_fraction: float = 0.65) -> dict[str, list[ProceduralVideo]]:
    """``{task: [ProceduralVideo, ...]}`` in file order, each video marked 'train' or 'test'; ValueError naming
    the file, task, handle and key of any malformed entry."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read task file {path}: {err}") from err
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected an object mapping task names to their videos")
    background = {str(label) for label in background_labels}
    tasks = {}
    for task, entry in data.items():
        where = f"{path}: task '{task}'"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with keys {list(TASK_KEYS)}")
        missing = [key for key in TASK_KEYS if key not in entry]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")
        handles = entry["handles"]
        for key in TASK_KEYS[1:]:
            if not isinstance(entry[key], list) or len(entry[key]) != len(handles):
                raise ValueError(f"{where}: '{key}' must be a list with one entry per handle ({len(handles)})")
        num_train = split_size(len(handles), train_fraction)
        videos = []
        for i, handle in enumerate(handles):
            actions, starts, ends = (entry[key][i] for key in TASK_KEYS[1:])
            here = f"{where}, handle '{handle}' (#{i})"
            if not (isinstance(actions, list) and isinstance(starts, list) and isinstance(ends, list)
                    and len(actions) == len(starts) == len(ends)):
                raise ValueError(f"{here}: hdl_actions, hdl_start_times and hdl_end_times must be lists of equal "
                                 "length")
            segments = []
            for k, (action, start, end) in enumerate(zip(actions, starts, ends)):
                start = _check_frame(start, f"{here}, hdl_start_times[{k}]")
                end = _check_frame(end, f"{here}, hdl_end_times[{k}]")
                if end < start:
                    raise ValueError(f"{here}: action {k} ends (frame {end}) before it starts (frame {start})")
                if str(action) not in background:
                    segments.append(Segment(str(action), start, end))
            videos.append(ProceduralVideo(str(handle), str(task), tuple(sorted(segments, key=lambda s: s.start)),
                                          "train" if i < num_train else "test"))
        tasks[str(task)] = videos
    return tasks


def split_size(num_videos: int, train_fraction: float) -> int:
    """Training videos of a task: ``⌊fraction·n⌋``, at least one, and one left for testing when n ≥ 2."""
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    count = max(1, math.floor(train_fraction * num_videos + 1e-9))
    return min(count, num_videos - 1) if num_videos >= 2 else count


def segments_in_sequence(segments: Sequence[Segment], frame_index: np.ndarray) -> list[tuple[int, int, str]]:
    """Action boundaries in positions of a subsampled sequence: ``(first, last, action)`` for every action with at
    least one of the kept ``frame_index`` values (sorted, original frame numbers) inside it."""
    result = []
    for segment in segments:
        first = int(np.searchsorted(frame_index, segment.start, side="left"))
        last = int(np.searchsorted(frame_index, segment.end, side="right")) - 1
        if first <= last:
            result.append((first, last, segment.action))
    return result


class ProceduralDataset(Dataset):
    """Videos of a task file as feature sequences.

    Args:
        task_file: the ``egoprocel.json``-style file. features_dir: folder of ``<handle>.npy`` ``[T, D]`` arrays.
        split: 'train', 'test' or 'all' (both; evaluators fit on the train videos and score the test ones).
        train_fraction: share of each task's handles (in file order) used for training.
        tasks: task names to use (default: all, sorted).
        skip_rate: keep every ``skip_rate``-th frame; action boundaries are rescaled to the kept frames.
        num_frames: after skipping, sample this many frames per video ('rand': one random frame in each of
            ``num_frames`` equal segments, 'uniform': their middles); None keeps every kept frame.
        frame_sampling: 'rand' or 'uniform' (None: 'rand' for split 'train', 'uniform' otherwise).
        background_labels: action ids that mean background.
        boundaries: 'error' (an action ending past the features' last row names the handle) or 'clip'.
        seed: with the epoch and the index, the only source of an item's randomness.

    Item: ``features [T', D]`` float tensor, ``frame_index [T']`` (original frames), ``labels [T']`` (0 =
    background, k = the task's k-th action id in sorted order), ``segments`` ``[(first, last, action)]`` in
    sequence positions (inclusive), ``handle``, ``task``, ``task_index``, ``split``.
    """

    def __init__(self, task_file: str, features_dir: str, split: Literal["train", "test", "all"] = "train",
                 train_fraction: float = 0.65, tasks: list[str] | None = None, skip_rate: int = 1,
                 num_frames: int | None = None, frame_sampling: Literal["rand", "uniform"] | None = None,
                 background_labels: Sequence[str] = BACKGROUND_LABELS,
                 boundaries: Literal["error", "clip"] = "error", seed: int = 0):
        if skip_rate < 1:
            raise ValueError(f"skip_rate must be >= 1, got {skip_rate}")
        all_tasks = read_task_file(task_file, background_labels, train_fraction)
        unknown = sorted(set(tasks or ()) - set(all_tasks))
        if unknown:
            raise ValueError(f"{task_file}: no task(s) {unknown}; the file has {sorted(all_tasks)}")
        self.task_names = sorted(tasks or all_tasks)
        self.actions = {task: sorted({s.action for v in all_tasks[task] for s in v.segments})
                        for task in self.task_names}
        self.videos = [video for task in self.task_names for video in all_tasks[task]
                       if split == "all" or video.split == split]
        if not self.videos:
            raise ValueError(f"{task_file}: split '{split}' holds no video")
        self.store = FolderFeatureStore(features_dir, suffix=".npy")
        missing = [v.handle for v in self.videos if v.handle not in self.store]
        if missing:
            raise FileNotFoundError(f"{features_dir}: no features for {len(missing)} handle(s) of {task_file}, "
                                    f"e.g. {missing[:3]} (expected <handle>.npy)")
        self.task_file, self.split, self.skip_rate, self.num_frames = str(task_file), split, skip_rate, num_frames
        self.frame_sampling = frame_sampling or ("rand" if split == "train" else "uniform")
        self.boundaries, self.seed = boundaries, int(seed)

    def __len__(self) -> int:
        return len(self.videos)

    def task_of(self, index: int) -> int:
        return self.task_names.index(self.videos[index].task)

    def _frames(self, num_rows: int, index) -> np.ndarray:
        frames = np.arange(0, num_rows, self.skip_rate)
        if self.num_frames is None:
            return frames
        rng = np.random.default_rng([self.seed, getattr(index, "epoch", 0), int(index)])
        picks = sample_frame_indices(self.num_frames, 0, len(frames), self.frame_sampling, rng)
        return frames[np.asarray(picks)]

    def __getitem__(self, index) -> dict:
        video = self.videos[int(index)]
        features = self.store.read(video.handle)
        last = max((s.end for s in video.segments), default=-1)
        if last >= len(features):
            if self.boundaries == "error":
                raise ValueError(f"{self.task_file}: handle '{video.handle}' has an action ending at frame {last}, "
                                 f"but its features have {len(features)} rows (boundaries='clip' clips it)")
        frames = self._frames(len(features), index)
        segments = segments_in_sequence(video.segments, frames)
        labels = np.zeros(len(frames), dtype=np.int64)
        action_ids = self.actions[video.task]
        for first, last_pos, action in segments:
            labels[first:last_pos + 1] = action_ids.index(action) + 1
        return {"features": torch.from_numpy(np.ascontiguousarray(features[frames])),
                "frame_index": torch.from_numpy(frames), "labels": torch.from_numpy(labels),
                "segments": segments, "handle": video.handle, "task": video.task,
                "task_index": self.task_names.index(video.task), "split": video.split}


def collate_videos(items: list[dict]) -> dict:
    """Variable-length videos stay lists: ``{key: [value per video]}``."""
    return {key: [item[key] for item in items] for key in items[0]}


class TaskBatchSampler(Sampler):
    """Batches of ``batch_size`` videos of one task each.

    Every epoch (``set_epoch``) each task's videos are shuffled with (``seed``, epoch) and cut into batches; a
    last batch smaller than ``min_batch_size`` is left out; the batch order is shuffled, truncated to a multiple
    of the number of replicas and dealt out round-robin, so ranks get disjoint batches and as many each.
    """

    def __init__(self, task_of_item: Sequence[int], batch_size: int = 2, min_batch_size: int = 2,
                 shuffle: bool = True, seed: int = 0, num_replicas: int | None = None, rank: int | None = None):
        if batch_size < min_batch_size or min_batch_size < 1:
            raise ValueError(f"need 1 <= min_batch_size <= batch_size, got {min_batch_size} and {batch_size}")
        self.task_of_item = np.asarray(task_of_item)
        self.batch_size, self.min_batch_size, self.shuffle, self.seed, self.epoch = (
            batch_size, min_batch_size, shuffle, int(seed), 0)
        self.num_replicas, self.rank = _distributed_defaults(num_replicas, rank)
        sizes = np.bincount(self.task_of_item)
        per_task = [n // batch_size + (n % batch_size >= min_batch_size) for n in sizes]
        self._num_batches = sum(per_task) // self.num_replicas
        if self._num_batches == 0:
            raise ValueError(f"no task has {min_batch_size} videos for a batch on each of {self.num_replicas} "
                             f"replicas (videos per task: {sizes.tolist()})")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        batches = []
        for task in np.unique(self.task_of_item):
            members = np.flatnonzero(self.task_of_item == task)
            if self.shuffle:
                members = members[torch.randperm(len(members), generator=generator).numpy()]
            for start in range(0, len(members), self.batch_size):
                batch = members[start:start + self.batch_size]
                if len(batch) >= self.min_batch_size:
                    batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        batches = batches[:self._num_batches * self.num_replicas][self.rank::self.num_replicas]
        return iter([[EpochIndex(int(i), self.epoch) for i in batch] for batch in batches])


@LOADERS.register()
class ProceduralDataLoader(DataLoader):
    """Config-facing loader of :class:`ProceduralDataset`.

    Split 'train' yields task-homogeneous batches (:class:`TaskBatchSampler`, sharded over ranks; call
    ``set_epoch``); 'test' and 'all' yield the videos in order, ``batch_size`` at a time, for evaluation.
    Batches are dicts of per-video lists (:func:`collate_videos`). Dataset args as in :class:`ProceduralDataset`.
    """

    def __init__(self, task_file: str, features_dir: str, split: Literal["train", "test", "all"] = "train",
                 train_fraction: Annotated[float, Bounds(0, 1)] = 0.65, tasks: list[str] | None = None,
                 skip_rate: Annotated[int, Bounds(1)] = 1, num_frames: Annotated[int | None, Bounds(1)] = None,
                 frame_sampling: Literal["rand", "uniform"] | None = None,
                 background_labels: list[str] = BACKGROUND_LABELS, boundaries: Literal["error", "clip"] = "error",
                 batch_size: Annotated[int, Bounds(1)] = 2, min_batch_size: Annotated[int, Bounds(1)] = 2,
                 shuffle: bool = True, num_workers: Annotated[int, Bounds(0)] = 0, seed: int = 0):
        dataset = ProceduralDataset(task_file, features_dir, split, train_fraction, tasks, skip_rate, num_frames,
                                    frame_sampling, background_labels, boundaries, seed)
        common = dict(collate_fn=collate_videos, num_workers=num_workers,
                      worker_init_fn=ignore_preemption_signals if num_workers else None)
        if split == "train":
            self.task_batches = TaskBatchSampler([dataset.task_of(i) for i in range(len(dataset))], batch_size,
                                                 min_batch_size, shuffle, seed)
            super().__init__(dataset, batch_sampler=self.task_batches, **common)
        else:
            self.task_batches = None
            super().__init__(dataset, batch_size=batch_size, shuffle=False, **common)

    def set_epoch(self, epoch: int) -> None:
        if self.task_batches is not None:
            self.task_batches.set_epoch(epoch)
