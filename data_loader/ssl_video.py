"""Sliding windows of labelled videos for self-supervised training and feature evaluation.

A window is ``length`` frames taken every ``frequency`` frames (it spans ``(length − 1)·frequency + 1``
frames); windows start every ``step`` frames; videos shorter than one window are dropped; at most
``max_windows_per_video`` windows per video are kept (evenly spread over the video).

Videos come from one of two sources (``source`` of :class:`SSLVideoLoader`):

- ``{"h5": "train.h5"}``: an HDF5 file with one uint8 ``[T, H, W, 3]`` dataset per video named ``"{i}_{label}"``
  (frames already at the model's resolution);
- ``{"annotations": "train.csv", "data_dir": "videos", "backend": "pyav", "decode_size": [H, W]}``: a CSV with
  columns ``video_uid,label,num_frames,fps`` and chunked videos ``data_dir/<video_uid>/<k>.mp4`` read by
  :class:`data_loader.video_reader.ChunkedVideoReader` (frame ``i`` is the frame shown at ``(i + 0.5)/fps`` s).

Items: ``video`` float ``[length, 3, H, W]`` (ImageNet-normalised; with ``augment`` a random resized crop and
flip per window, one draw for all its frames, from ``(seed, epoch, index)``), ``label, ``video_index``, ``window``
(index of the window), ``bank`` (True for items of the kNN/probe training bank); with ``pairs`` also ``video_b``,
a second, different window of the same video drawn from ``(seed, epoch, index)``.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Annotated

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from data_loader.samplers import EpochDistributedSampler
from data_loader.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainVideoTransform
from data_loader.video_reader import ChunkedVideoReader
from data_loader.worker_signals import ignore_preemption_signals
from utils.config_schema import ArgsOf, Bounds
from utils.distributed import get_rank, get_world_size
from utils.registry import LOADERS

logger = logging.getLogger(__name__)

_H5_NAME = re.compile(r"^(\d+)_(\d+)$")


def sliding_windows(num_frames, length: int, frequency: int = 1, step: int = 1,
                    max_per_video: int | None = None) -> np.ndarray:
    """``[W, 2]`` int64 rows ``(video, first frame)`` over videos of ``num_frames[v]`` frames."""
    if min(length, frequency, step) < 1:
        raise ValueError(f"length, frequency and step must be >= 1, got {length}, {frequency}, {step}")
    span = (length - 1) * frequency + 1
    rows = []
    for video, count in enumerate(num_frames):
        starts = np.arange(0, int(count) - span + 1, step)
        if max_per_video is not None and len(starts) > max_per_video:
            starts = starts[np.linspace(0, len(starts) - 1, max_per_video).round().astype(int)]
        rows.extend((video, int(s)) for s in starts)
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


class H5VideoSource:
    """Videos of an HDF5 file (datasets ``"{i}_{label}"``, uint8 ``[T, H, W, 3]``), opened lazily per process."""

    def __init__(self, h5: str):
        self.path = str(h5)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"video HDF5 not found: {self.path}")
        with h5py.File(self.path, "r") as f:
            entries = []
            for name in f.keys():
                match = _H5_NAME.match(name)
                if match is None:
                    raise ValueError(f"{self.path}: dataset '{name}' is not named '<index>_<label>'")
                shape = f[name].shape
                if len(shape) != 4 or shape[-1] != 3 or f[name].dtype != np.uint8:
                    raise ValueError(f"{self.path}: dataset '{name}' must be uint8 [T, H, W, 3], got "
                                     f"{f[name].dtype} {shape}")
                entries.append((int(match[1]), name, int(match[2]), shape[0]))
        entries.sort()
        self.keys = [e[1] for e in entries]
        self.labels = [e[2] for e in entries]
        self.num_frames = [e[3] for e in entries]
        self._file = None

    def read(self, video: int, frames: np.ndarray) -> torch.Tensor:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return torch.from_numpy(self._file[self.keys[video]][np.asarray(frames)])

    def __getstate__(self):  # an open h5py handle must not be shared with DataLoader workers
        return {**self.__dict__, "_file": None}


class VideoFileSource:
    """Videos listed in a CSV (``video_uid,label,num_frames,fps``), read from chunked mp4 files."""

    COLUMNS = ("video_uid", "label", "num_frames", "fps")

    def __init__(self, annotations: str, data_dir: str, backend: str = "pyav", decode_size=None,
                 chunk_len: float = 600.0):
        table = pd.read_csv(annotations)
        missing = [c for c in self.COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{annotations}: missing columns {missing} (need {list(self.COLUMNS)})")
        bad = table[(table["num_frames"] < 1) | (table["fps"] <= 0) | table[list(self.COLUMNS)].isna().any(axis=1)]
        if len(bad):
            raise ValueError(f"{annotations}: row {int(bad.index[0]) + 2} has an empty field, num_frames < 1 or "
                             "fps <= 0")
        self.uids = table["video_uid"].astype(str).tolist()
        self.labels = table["label"].astype(int).tolist()
        self.num_frames = table["num_frames"].astype(int).tolist()
        self.fps = table["fps"].astype(float).tolist()
        self.reader = ChunkedVideoReader(data_dir, chunk_len=chunk_len, backend=backend, decode_size=decode_size)

    def read(self, video: int, frames: np.ndarray) -> torch.Tensor:
        return self.reader.read_frames(self.uids[video], (np.asarray(frames) + 0.5) / self.fps[video])


def open_video_source(source: dict):
    """:class:`H5VideoSource` for ``{"h5": path}``, :class:`VideoFileSource` for ``{"annotations", "data_dir",
    ...}``."""
    source = dict(source)
    if "h5" in source:
        return H5VideoSource(**source)
    if "annotations" in source:
        return VideoFileSource(**source)
    raise ValueError(f"a video source needs 'h5' or 'annotations' + 'data_dir', got keys {sorted(source)}")


class SSLWindowDataset(Dataset):
    """Windows of one source (see the module docstring); ``bank`` marks every item as a training-bank item;
    ``augment`` is a :class:`data_loader.transforms.TrainVideoTransform` (or None)."""

    def __init__(self, source, length: int, frequency: int = 1, step: int = 1,
                 max_windows_per_video: int | None = None, pairs: bool = False, bank: bool = False, seed: int = 0,
                 augment: TrainVideoTransform | None = None):
        self.source, self.length, self.frequency, self.augment = source, length, frequency, augment
        self.pairs, self.bank, self.seed = pairs, bank, seed
        self.windows = sliding_windows(source.num_frames, length, frequency, step, max_windows_per_video)
        dropped = len(source.num_frames) - len(np.unique(self.windows[:, 0]))
        if dropped:
            logger.info("%d of %d videos are shorter than one window of %d frames and are left out", dropped,
                        len(source.num_frames), (length - 1) * frequency + 1)
        if not len(self.windows):
            raise ValueError(f"no video holds a window of {length} frames every {frequency}")
        self.by_video: dict[int, np.ndarray] = {}
        for row, video in enumerate(self.windows[:, 0]):
            self.by_video.setdefault(int(video), []).append(row)
        self.by_video = {v: np.array(rows) for v, rows in self.by_video.items()}
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __len__(self):
        return len(self.windows)

    def _clip(self, row: int, epoch: int, view: int) -> torch.Tensor:
        video, start = self.windows[row]
        frames = self.source.read(int(video), start + self.frequency * np.arange(self.length))
        if self.augment is not None:
            return self.augment(frames, np.random.default_rng([self.seed, epoch, row, view]))
        return (frames.permute(0, 3, 1, 2).float() / 255 - self.mean) / self.std

    def partner(self, index: int, epoch: int) -> int:
        """Another window of the same video (the same one when the video has a single window)."""
        rows = self.by_video[int(self.windows[index, 0])]
        others = rows[rows != index]
        if not len(others):
            return index
        return int(np.random.default_rng([self.seed, epoch, int(index)]).choice(others))

    def __getitem__(self, index):
        video, epoch = int(self.windows[index, 0]), getattr(index, "epoch", 0)
        item = {"video": self._clip(int(index), epoch, 0), "label": int(self.source.labels[video]), "video_index": video,
                "window": int(index), "bank": self.bank}
        if self.pairs:
            item["video_b"] = self._clip(self.partner(int(index), epoch), epoch, 1)
        return item


@LOADERS.register("SSLVideoLoader")
class SSLVideoLoader(DataLoader):
    """Batches of video windows (see the module docstring).

    Args:
        source: ``{"h5": path}`` or ``{"annotations": csv, "data_dir": dir, "backend", "decode_size"}``.
        bank_source: for evaluation: a second source (the training split) whose windows come first, marked
            ``bank`` (kNN memory / probe training set); its video indices are offset past the source's.
        length, frequency, step, max_windows_per_video: the sliding-window index.
        pairs: add ``video_b``, another window of the same video (siamese training).
        augment: arguments of :class:`data_loader.transforms.TrainVideoTransform` (``input_res``, ``scale``,
            ``ratio``, ``hflip_prob``) to crop and flip every training window; None: frames as stored.
        batch_size, shuffle, drop_last, num_workers, seed: loading (shuffled orders from ``seed`` and the epoch,
            sharded over ranks).
    """

    def __init__(self, source: dict, bank_source: dict | None = None, length: Annotated[int, Bounds(1)] = 8,
                 frequency: Annotated[int, Bounds(1)] = 1, step: Annotated[int, Bounds(1)] = 1,
                 max_windows_per_video: Annotated[int | None, Bounds(1)] = None, pairs: bool = False,
                 augment: Annotated[dict | None, ArgsOf(TrainVideoTransform)] = None, batch_size: Annotated[int, Bounds(1)] = 16, shuffle: bool = True, drop_last: bool = True,
                 num_workers: Annotated[int, Bounds(0)] = 0, seed: int = 0):
        window = dict(length=length, frequency=frequency, step=step, max_windows_per_video=max_windows_per_video,
                      pairs=pairs, seed=seed)
        dataset = SSLWindowDataset(open_video_source(source), augment=TrainVideoTransform(**augment) if augment
                                   else None, **window)
        if bank_source is not None:
            bank = SSLWindowDataset(open_video_source(bank_source), bank=True, **window)
            dataset = ConcatDataset([_OffsetVideos(bank, len(dataset.source.num_frames)), dataset])
        order = EpochDistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=shuffle,
                                        seed=seed, drop_last=drop_last)
        self.seed = seed
        super().__init__(dataset, batch_size=batch_size, sampler=order, drop_last=drop_last,
                         num_workers=num_workers, worker_init_fn=ignore_preemption_signals,
                         generator=torch.Generator())
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """The epoch's sample order; worker seeds from ``(seed, rank, epoch)``, never from the global RNG (so a
        resumed run draws the same random numbers as an uninterrupted one)."""
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(int(np.random.SeedSequence([self.seed, get_rank(), epoch]).generate_state(1)[0]))


class _OffsetVideos(Dataset):
    """A dataset whose ``video_index`` values are shifted by ``offset`` (bank videos after the query videos)."""

    def __init__(self, dataset: SSLWindowDataset, offset: int):
        self.dataset, self.offset = dataset, offset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        item["video_index"] += self.offset
        return item
