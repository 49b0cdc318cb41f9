"""Narration–feature pairs for CLEP: a window of precomputed video features around each narration, mean-pooled,
with the narration's two sentence embeddings (from ``run/preprocess_clep.py``'s output folder).

Window of a narration at ``ts`` s: ``[ts − w, ts + w]`` with a fixed half-width ``w`` (``window="fixed"``,
``window_sec``), or EgoVLP's adaptive ``w = β_v / (2α)`` (``window="egovlp"``), where ``β_v`` is the mean gap
between consecutive narrations of video v and α the mean of all β. Rows are chosen by
:func:`data_loader.feature_store.feature_slice`. Videos whose β is below ``min_mean_gap`` s are dropped (Ego4D
CLEP's filter; counted in ``dropped_videos``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from data_loader.feature_store import H5FeatureStore, feature_slice
from data_loader.samplers import EpochDistributedSampler
from data_loader.worker_signals import ignore_preemption_signals
from utils.config_schema import Bounds
from utils.distributed import get_rank, get_world_size
from utils.registry import LOADERS

logger = logging.getLogger(__name__)


def mean_gaps(videos: np.ndarray, times: np.ndarray) -> pd.Series:
    """β per video (indexed by the values of ``videos``): the mean gap (s) between consecutive narration times
    (rows grouped by video, sorted); NaN for a video with one narration."""
    frame = pd.DataFrame({"uid": videos, "ts": times})
    return frame.groupby("uid", sort=False)["ts"].agg(lambda ts: np.diff(ts.to_numpy()).mean() if len(ts) > 1
                                                       else np.nan)


class NarrationFeatureDataset(Dataset):
    """Items ``{'video': [D] float32, 'text': [E], 'text_no_tag': [E]}``, one per kept narration.

    Args:
        root: the preprocessing output folder (``narrations.csv``, ``video_features.hdf5``,
            ``narration_text.hdf5``, ``narration_text_no_tag.hdf5``).
        features_per_second: rows per second of the video features (Omnivore: 30 / 16 = 1.875).
        window: 'fixed' (half-width ``window_sec``) or 'egovlp' (β_v / 2α).
        window_sec: the fixed half-width w in seconds.
        min_mean_gap: drop videos whose mean narration gap β is below this (s); single-narration videos are kept.
    """

    def __init__(self, root: str, features_per_second: float = 1.875, window: str = "fixed",
                 window_sec: float = 0.1, min_mean_gap: float = 0.1):
        if window not in ("fixed", "egovlp"):
            raise ValueError(f"window must be 'fixed' or 'egovlp', got {window!r}")
        self.root, self.features_per_second = Path(root), float(features_per_second)
        table_path = self.root / "narrations.csv"
        if not table_path.is_file():
            raise FileNotFoundError(f"{table_path} does not exist: run run/preprocess_clep.py --out {self.root}")
        table = pd.read_csv(table_path, usecols=["video_uid", "timestamp_sec"], dtype={"video_uid": str})
        codes, names = pd.factorize(table["video_uid"])      # per narration: its video's index into names
        times = table["timestamp_sec"].to_numpy(np.float64)
        row_in_video = table.groupby("video_uid", sort=False).cumcount().to_numpy(np.int32)
        counts = np.bincount(codes, minlength=len(names))
        gaps = mean_gaps(codes, times).reindex(range(len(names)))
        kept_videos = ~(gaps < min_mean_gap).to_numpy()
        self.dropped_videos = int((~kept_videos).sum())
        if self.dropped_videos:
            logger.info("%s: %d of %d videos dropped (mean narration gap < %s s)", table_path, self.dropped_videos,
                        len(names), min_mean_gap)
        keep = kept_videos[codes]
        self.video_uids = np.asarray(names, dtype=object)
        self.codes, self.times, self.rows = codes[keep].astype(np.int32), times[keep], row_in_video[keep]
        if window == "egovlp":
            beta = gaps.where(kept_videos)
            beta = beta.fillna(beta.mean())
            self.half_width = (beta / (2 * beta[kept_videos].mean())).to_numpy()[self.codes]
        else:
            self.half_width = np.full(len(self.codes), float(window_sec))
        self.video = H5FeatureStore(self.root / "video_features.hdf5")
        self.text = H5FeatureStore(self.root / "narration_text.hdf5")
        self.text_no_tag = H5FeatureStore(self.root / "narration_text_no_tag.hdf5")
        self.num_rows = self._check_stores(table_path, counts, kept_videos)

    def _check_stores(self, table_path, counts: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """Feature rows of each video (0 for dropped ones); ValueError naming the store and the video that does
        not match the table."""
        num_rows = np.zeros(len(self.video_uids), dtype=np.int64)
        for code in np.flatnonzero(kept):
            uid, count = self.video_uids[code], counts[code]
            for store in (self.video, self.text, self.text_no_tag):
                if uid not in store:
                    raise ValueError(f"{store.path} has no '{uid}', which {table_path} narrates; rerun the "
                                     "preprocessing")
            for store in (self.text, self.text_no_tag):
                stored = store.num_rows(uid)
                if stored != count:
                    raise ValueError(f"{store.path}: '{uid}' has {stored} embeddings but {count} narrations in "
                                     f"{table_path}; rerun the preprocessing")
            num_rows[code] = self.video.num_rows(uid)
        return num_rows

    def __len__(self) -> int:
        return len(self.codes)

    def window(self, index: int) -> tuple[int, int]:
        """Feature rows ``[start, stop)`` of narration ``index``."""
        ts, w = self.times[index], self.half_width[index]
        return feature_slice(ts - w, ts + w, self.features_per_second, int(self.num_rows[self.codes[index]]))

    def __getitem__(self, index: int) -> dict:
        uid, row = self.video_uids[self.codes[index]], int(self.rows[index])
        start, stop = self.window(index)
        return {"video": torch.from_numpy(self.video.read(uid, start, stop).mean(axis=0)),
                "text": torch.from_numpy(self.text.read(uid, row, row + 1)[0]),
                "text_no_tag": torch.from_numpy(self.text_no_tag.read(uid, row, row + 1)[0])}


@LOADERS.register()
class NarrationFeatureLoader(DataLoader):
    """Batches ``{'video': [B, D], 'text': [B, E], 'text_no_tag': [B, E]}`` of :class:`NarrationFeatureDataset`,
    shuffled per epoch (``set_epoch``) and sharded over ranks like ``DistributedSampler``: rank r of W takes
    items r, r + W, ... of the epoch's permutation, so W ranks × batch b see the batches of one process × W·b."""

    def __init__(self, root: str = "data/clep", features_per_second: Annotated[float, Bounds(0)] = 1.875,
                 window: Literal["fixed", "egovlp"] = "fixed", window_sec: Annotated[float, Bounds(0)] = 0.1,
                 min_mean_gap: Annotated[float, Bounds(0)] = 0.1, batch_size: Annotated[int, Bounds(1)] = 128,
                 num_workers: Annotated[int, Bounds(0)] = 2, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 0):
        dataset = NarrationFeatureDataset(root, features_per_second, window, window_sec, min_mean_gap)
        order = EpochDistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=shuffle,
                                        seed=seed, drop_last=drop_last)
        super().__init__(dataset, batch_size=batch_size, sampler=order, drop_last=drop_last, num_workers=num_workers,
                         worker_init_fn=ignore_preemption_signals)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
