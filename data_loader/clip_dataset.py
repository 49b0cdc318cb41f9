"""The shared base of the downstream video datasets (EK-100 MIR, Charades-Ego): clips of whole video files.

A subclass loads its annotations into ``metadata`` (one row per item) and implements ``row_name(index)``,
``_train_sample(index, rng)`` and ``_test_sample(index, rng)``, reading frames with :meth:`read_frames`. This base
gives the rest:

- items are a function of (``seed``, epoch, index) only (the epoch comes with the index from the samplers);
- a read error names the annotation file and row; evaluation (and strict training) raise it;
- 'lax' training replaces an unreadable clip by a random other row and counts it (``replaced`` /
  ``replaced_rows`` per item; the collate sums them per batch), with EgoClip's retry loop, log rate limit and
  ``max_bad_fraction`` give-up rule;
- a clip with fewer frames than ``num_frames`` is an error (``short_clips='error'``) or repeats frames
  (``'repeat'``, as EgoVLP's segment sampling does).
"""
from __future__ import annotations

import abc
import os
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data_loader.collate import EgoClipCollate
from data_loader.EgoClip_EgoMCQ_dataset import EgoClip_EgoMCQ, _RowReadError
from data_loader.samplers import EpochDistributedSampler
from data_loader.transforms import VideoTransform, frame_size
from data_loader.video_backends import VideoReadError
from data_loader.video_files import VideoFileReader
from data_loader.worker_signals import ignore_preemption_signals
from utils.distributed import get_rank, get_world_size

SHORT_CLIP_POLICIES = ("error", "repeat")


class VideoFileClips(Dataset, abc.ABC):
    """Base class (see the module docstring).

    Args:
        data_dir: root of the video files. split: 'train' (random frames, training transform) or another split
            (segment middles, evaluation). num_frames: frames per clip. tsfms: the frame transform.
        reader: video backend ('decord' | 'pyav'); decode_size: scale while decoding (None: native).
        loading: 'strict' or 'lax' (training only); max_bad_fraction: lax gives up past this failed fraction.
        short_clips: 'error' or 'repeat'. seed: item randomness. dataset_name: used in messages.
    """

    # Lax replacement is EgoClip's: one implementation of the retry loop, its logging and its give-up rule.
    _get_train_item = EgoClip_EgoMCQ._get_train_item
    _record_bad_read = EgoClip_EgoMCQ._record_bad_read
    _item_rng = EgoClip_EgoMCQ._item_rng
    set_epoch = EgoClip_EgoMCQ.set_epoch

    def __init__(self, data_dir: str, split: str, num_frames: int, tsfms: VideoTransform, reader: str = "decord",
                 decode_size=None, loading: Literal["strict", "lax"] = "strict", max_bad_fraction: float = 0.05,
                 short_clips: Literal[SHORT_CLIP_POLICIES] = "error", seed: int = 0, dataset_name: str = ""):
        if loading not in ("strict", "lax"):
            raise ValueError(f"{dataset_name}: loading must be 'strict' or 'lax', got {loading!r}")
        if loading == "lax" and split != "train":
            raise ValueError(f"{dataset_name}: lax loading is for training only; evaluation never scores a "
                             f"replaced clip")
        if short_clips not in SHORT_CLIP_POLICIES:
            raise ValueError(f"short_clips must be one of {SHORT_CLIP_POLICIES}, got {short_clips!r}")
        self.dataset_name, self.split, self.data_dir = dataset_name, split, data_dir
        self.video_params = {"num_frames": int(num_frames), "loading": loading,
                             "max_bad_fraction": float(max_bad_fraction)}
        self.short_clips, self.transforms = short_clips, tsfms
        self.frame_sample = "rand" if split == "train" else "uniform"
        self.reader_args = {"backend": reader, "decode_size": decode_size}
        self._reader = None
        self.seed, self.epoch = int(seed), 0
        self.reads, self.bad_reads = 0, 0
        self._log_window = (-float("inf"), 0, 0)

    @property
    def reader(self) -> VideoFileReader:
        """The video reader, opened lazily in the process that uses it (DataLoader workers)."""
        if self._reader is None:
            self._reader = VideoFileReader(self.data_dir, **self.reader_args)
        return self._reader

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}

    def __len__(self) -> int:
        return len(self.metadata)

    @abc.abstractmethod
    def row_name(self, index: int) -> str:
        """How errors name the annotation row of ``index``."""

    def read_frames(self, index: int, video: str, start: float, stop: float, rng: np.random.Generator) -> torch.Tensor:
        """float ``[T, 3, R, R]``: ``num_frames`` frames of ``[start, stop)`` s of ``video`` (relative to
        ``data_dir``), transformed; a failed read raises naming the row of ``index``."""
        num_frames = self.video_params["num_frames"]
        try:
            frames = self.reader.read_clip(video, start, stop, num_frames, sample=self.frame_sample, rng=rng,
                                           shrink=self.short_clips == "error")
            if len(frames) < num_frames:
                raise VideoReadError(f"clip holds {len(frames)} frames, fewer than num_frames={num_frames} "
                                     f"(short_clips='repeat' repeats frames instead)",
                                     [os.path.join(self.data_dir, video)], (video, start, stop))
        except VideoReadError as err:
            raise _RowReadError(self.row_name(index), err) from err
        return self.transforms.apply(frames, self.transforms.sample_params(*frame_size(frames), rng))

    def video_duration(self, index: int, video: str) -> float:
        """Seconds of ``video`` (frames / fps of the file); an unreadable file raises naming the row."""
        try:
            fps, num_frames = self.reader.video_info(video)
        except VideoReadError as err:
            raise _RowReadError(self.row_name(index), err) from err
        return num_frames / fps

    @abc.abstractmethod
    def _train_sample(self, index: int, rng: np.random.Generator) -> dict:
        """A training item."""

    @abc.abstractmethod
    def _test_sample(self, index: int, rng: np.random.Generator) -> dict:
        """An evaluation item."""

    def __getitem__(self, index) -> dict:
        """Item ``index``; an :class:`data_loader.samplers.EpochIndex` also gives the epoch."""
        epoch = getattr(index, "epoch", self.epoch)
        index = int(index)
        if self.split == "train" and self.video_params["loading"] == "lax":
            return self._get_train_item(index, epoch)
        rng = self._item_rng(index, epoch)
        try:
            if self.split == "train":
                return {**self._train_sample(index, rng), "replaced": 0, "replaced_rows": []}
            return self._test_sample(index, rng)
        except _RowReadError as failure:
            raise VideoReadError(f"{failure.row}: {failure.error}") from failure.error


class VideoFileClipsLoader(DataLoader):
    """Batches of a :class:`VideoFileClips` dataset (collated like EgoClip's: tensors stacked, strings listed,
    ``num_replaced`` / ``replaced_rows`` per training batch). Training shards over ranks (``DistributedSampler``,
    reshuffled by :meth:`set_epoch`; ``shuffle`` / ``drop_last`` default to True); evaluation keeps the
    annotation order (the evaluation loop shards it)."""

    def __init__(self, dataset: VideoFileClips, batch_size: int, num_workers: int, shuffle: bool | None = None,
                 drop_last: bool | None = None, seed: int = 0, pin_memory: bool | None = None):
        training = dataset.split == "train"
        drop_last = training if drop_last is None else drop_last
        order = EpochDistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(),
                                        shuffle=training if shuffle is None else shuffle, seed=seed,
                                        drop_last=drop_last)
        super().__init__(dataset, batch_size=batch_size, sampler=order, collate_fn=EgoClipCollate(),
                         num_workers=num_workers, worker_init_fn=ignore_preemption_signals,
                         pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                         drop_last=drop_last)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
