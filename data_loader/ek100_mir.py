"""EPIC-Kitchens-100 multi-instance retrieval (EK-100 MIR): annotations, dataset and data loader.

Files under ``meta_dir`` (``epic-kitchens-100-annotations/retrieval_annotations``):
``EPIC_100_retrieval_{split}.csv`` (one row per clip; columns read by name: ``narration_id``, ``participant_id``,
``video_id``, ``start_timestamp``, ``stop_timestamp`` ``HH:MM:SS.ff``, ``narration``),
``EPIC_100_retrieval_{split}_sentence.csv`` (``narration_id``, ``narration``: one row per distinct caption, named
by a representative clip) and ``relevancy/caption_relevancy_EPIC_100_retrieval_{split}.pkl`` (pickled float
array [clips, sentences]). Videos: ``<data_dir>/<participant_id>/<video_id>.MP4``, read at their real fps.

Test items: ``{'video': [T, 3, R, R], 'text': the row's narration, 'index': row}`` with ``uniform`` sampling.
Train items: ``{'video', 'text', 'relevance', 'index', 'replaced', 'replaced_rows'}``: the caption is drawn
uniformly among the sentences whose relevance to the clip exceeds ``positive_threshold`` (the clip's own
narration with relevance 1 when there is none), ``rand`` sampling.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from data_loader.collate import EgoClipCollate
from data_loader.EgoClip_EgoMCQ_dataset import EgoClip_EgoMCQ, _RowReadError
from data_loader.samplers import EpochDistributedSampler
from data_loader.transforms import frame_size, init_video_transform_dict
from data_loader.video_backends import BACKENDS, VideoReadError
from data_loader.video_files import VideoFileReader
from data_loader.worker_signals import ignore_preemption_signals
from model.checkpoint import _numpy_safe_globals
from utils.config_schema import ArgsOf, Bounds
from utils.distributed import get_rank, get_world_size
from utils.registry import LOADERS

logger = logging.getLogger(__name__)

CLIP_COLUMNS = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp", "narration")
SHORT_CLIP_POLICIES = ("error", "repeat")


class AnnotationError(ValueError):
    """An annotation file does not have the expected format; the message names the file (and row)."""


def clip_csv_path(meta_dir: str, split: str) -> str:
    return os.path.join(meta_dir, f"EPIC_100_retrieval_{split}.csv")


def sentence_csv_path(meta_dir: str, split: str) -> str:
    return os.path.join(meta_dir, f"EPIC_100_retrieval_{split}_sentence.csv")


def relevancy_path(meta_dir: str, split: str) -> str:
    return os.path.join(meta_dir, "relevancy", f"caption_relevancy_EPIC_100_retrieval_{split}.pkl")


def _read_csv(path: str, first_column: str, required) -> pd.DataFrame:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EK-100 annotation file {path} not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if len(table.columns) and table.columns[0] != first_column:
        hint = (" (a file from before May 2020 with a leading 'uid' column: use the current "
                "epic-kitchens-100-annotations release)" if table.columns[0] == "uid" else "")
        raise AnnotationError(f"{path}: first column is {table.columns[0]!r}, expected {first_column!r}{hint}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise AnnotationError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    return table


def parse_timestamp(text: str) -> float:
    """Seconds of ``HH:MM:SS.ff`` (ValueError otherwise)."""
    hours, minutes, seconds = text.split(":")
    value = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"bad timestamp {text!r}")
    return value


def read_clip_csv(path: str) -> pd.DataFrame:
    """The clip table with float ``start_sec`` / ``stop_sec`` columns; a bad row raises naming file and row
    (rows numbered from 0, the header not counted)."""
    table = _read_csv(path, "narration_id", CLIP_COLUMNS)
    starts, stops = np.empty(len(table)), np.empty(len(table))
    for row, (start, stop) in enumerate(zip(table["start_timestamp"], table["stop_timestamp"])):
        try:
            starts[row], stops[row] = parse_timestamp(start), parse_timestamp(stop)
        except ValueError:
            raise AnnotationError(f"{path} row {row} ({table['narration_id'].iat[row]}): start/stop timestamps "
                                  f"{start!r}, {stop!r} are not HH:MM:SS.ff") from None
        if stops[row] < starts[row]:
            raise AnnotationError(f"{path} row {row} ({table['narration_id'].iat[row]}): stop {stop} is before "
                                  f"start {start}")
    return table.assign(start_sec=starts, stop_sec=stops)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays only: any other global is refused (a relevancy file runs no code)."""

    allowed = _numpy_safe_globals()

    def find_class(self, module, name):
        obj = self.allowed.get(f"{module}.{name}")
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (only numpy arrays are read)")
        return obj


def load_relevancy(path: str) -> np.ndarray:
    """The pickled relevancy array [clips, sentences] as float32, loaded without executing pickled code."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EK-100 relevancy file {path} not found")
    with open(path, "rb") as f:
        try:
            array = _ArrayUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise AnnotationError(f"{path}: not a pickled numpy array: {err}") from err
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise AnnotationError(f"{path}: expected a 2-D array [clips, sentences], got {type(array).__name__} "
                              f"{getattr(array, 'shape', '')}")
    return array.astype(np.float32, copy=False)


@dataclass
class EK100Annotations:
    """One split: ``clips`` (the clip table), ``sentences`` (the sentence table), ``sentence_rows`` [S] (the clip
    row whose narration_id names each sentence) and ``relevancy`` [clips, sentences] (None when not loaded)."""

    clips: pd.DataFrame
    sentences: pd.DataFrame
    sentence_rows: np.ndarray
    relevancy: np.ndarray | None


def load_annotations(meta_dir: str, split: str, relevancy: bool = True) -> EK100Annotations:
    """Read and cross-check the clip csv, the sentence csv and (``relevancy``) the relevancy matrix of ``split``."""
    clip_path, sentence_path = clip_csv_path(meta_dir, split), sentence_csv_path(meta_dir, split)
    clips = read_clip_csv(clip_path)
    sentences = _read_csv(sentence_path, "narration_id", ("narration_id", "narration"))
    row_of = pd.Series(np.arange(len(clips)), index=clips["narration_id"])
    if not row_of.index.is_unique:
        duplicate = row_of.index[row_of.index.duplicated()][0]
        raise AnnotationError(f"{clip_path}: narration_id {duplicate!r} appears more than once")
    rows = row_of.reindex(sentences["narration_id"]).to_numpy()
    if np.isnan(rows.astype(float)).any():
        bad = int(np.flatnonzero(np.isnan(rows.astype(float)))[0])
        raise AnnotationError(f"{sentence_path} row {bad}: narration_id {sentences['narration_id'].iat[bad]!r} "
                              f"is not a clip of {clip_path}")
    matrix = None
    if relevancy:
        path = relevancy_path(meta_dir, split)
        matrix = load_relevancy(path)
        if matrix.shape != (len(clips), len(sentences)):
            raise AnnotationError(f"{path}: relevancy matrix is {matrix.shape[0]} x {matrix.shape[1]} but "
                                  f"{clip_path} has {len(clips)} clips and {sentence_path} {len(sentences)} sentences")
    return EK100Annotations(clips, sentences, rows.astype(np.int64), matrix)


def positives_above(relevancy: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse rows of ``relevancy > threshold``: ``(offsets [clips + 1], sentence ids, relevances)``; clip i's
    positives are ``ids[offsets[i]:offsets[i + 1]]``."""
    rows, cols = np.nonzero(relevancy > threshold)
    offsets = np.searchsorted(rows, np.arange(relevancy.shape[0] + 1))
    return offsets, cols.astype(np.int64), relevancy[rows, cols].astype(np.float32)


class EK100MIR(Dataset):
    """EK-100 MIR clips of one split (see the module docstring).

    Args:
        meta_dir: the retrieval annotation folder; data_dir: ``<participant_id>/<video_id>.MP4`` videos.
        split: 'train' or 'test'. num_frames, input_res: frames per clip and their size.
        tsfms: the frame transform (default: random resized crop 0.5-1 for train, centre square for test).
        reader: video backend ('decord' | 'pyav'); decode_size: scale while decoding (None: native).
        loading: 'strict' (a bad clip raises naming the csv row) or 'lax' (training only: a bad clip is replaced
            by a random other one and counted); max_bad_fraction: lax gives up past this failed fraction.
        short_clips: a clip with fewer frames than ``num_frames`` is an error ('error') or repeats frames
            ('repeat', as EgoVLP's segment sampling does).
        positive_threshold: training captions are drawn among sentences with relevance above it (0.1).
        video_ext: video file extension. seed: with the epoch and index, the source of an item's randomness.
    """

    # Lax replacement is EgoClip's: one implementation of the retry loop, its logging and its give-up rule.
    _get_train_item = EgoClip_EgoMCQ._get_train_item
    _record_bad_read = EgoClip_EgoMCQ._record_bad_read
    _item_rng = EgoClip_EgoMCQ._item_rng
    set_epoch = EgoClip_EgoMCQ.set_epoch

    def __init__(self, meta_dir: str, data_dir: str, split: Literal["train", "test"] = "test", num_frames: int = 4,
                 input_res: int = 224, tsfms=None, reader: str = "decord", decode_size=None,
                 loading: Literal["strict", "lax"] = "strict", max_bad_fraction: float = 0.05,
                 short_clips: Literal[SHORT_CLIP_POLICIES] = "error", positive_threshold: float = 0.1,
                 video_ext: str = ".MP4", seed: int = 0, dataset_name: str = "EK100MIR"):
        if split not in ("train", "test"):
            raise ValueError(f"EK100MIR split must be 'train' or 'test', got {split!r}")
        if loading == "lax" and split != "train":
            raise ValueError("EK100MIR: lax loading is for training only; evaluation never scores a replaced clip")
        if short_clips not in SHORT_CLIP_POLICIES:
            raise ValueError(f"short_clips must be one of {SHORT_CLIP_POLICIES}, got {short_clips!r}")
        self.dataset_name, self.split, self.data_dir, self.meta_dir = dataset_name, split, data_dir, meta_dir
        self.meta_path = clip_csv_path(meta_dir, split)
        self.video_params = {"num_frames": int(num_frames), "loading": loading,
                             "max_bad_fraction": float(max_bad_fraction)}
        self.short_clips, self.video_ext = short_clips, video_ext
        self.transforms = tsfms or init_video_transform_dict(input_res, center_crop=input_res,
                                                             resize_short=input_res)[split]
        self.frame_sample = "rand" if split == "train" else "uniform"
        annotations = load_annotations(meta_dir, split, relevancy=split == "train")
        self.metadata, self.sentences = annotations.clips, annotations.sentences["narration"].tolist()
        if split == "train":
            self.positive_offsets, self.positive_ids, self.positive_relevance = positives_above(
                annotations.relevancy, positive_threshold)
        self.reader_args = {"backend": reader, "decode_size": decode_size}
        self._reader = None
        self.seed, self.epoch = int(seed), 0
        self.reads, self.bad_reads = 0, 0
        self._log_window = (-float("inf"), 0, 0)

    @property
    def reader(self) -> VideoFileReader:
        if self._reader is None:
            self._reader = VideoFileReader(self.data_dir, **self.reader_args)
        return self._reader

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}

    def __len__(self) -> int:
        return len(self.metadata)

    def video_path(self, index: int) -> str:
        """``<participant_id>/<video_id><ext>`` of clip row ``index``, relative to ``data_dir``."""
        return os.path.join(self.metadata["participant_id"].iat[index],
                            self.metadata["video_id"].iat[index] + self.video_ext)

    def row_name(self, index: int) -> str:
        meta = self.metadata
        return (f"{os.path.basename(self.meta_path)} row {index} ({meta['narration_id'].iat[index]}, "
                f"{meta['start_sec'].iat[index]:.2f}-{meta['stop_sec'].iat[index]:.2f} s)")

    def read_video(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        """float ``[T, 3, R, R]`` of clip row ``index``; a failed read raises naming the csv row."""
        start, stop = float(self.metadata["start_sec"].iat[index]), float(self.metadata["stop_sec"].iat[index])
        num_frames = self.video_params["num_frames"]
        path = self.video_path(index)
        try:
            frames = self.reader.read_clip(path, start, stop, num_frames, sample=self.frame_sample, rng=rng,
                                           shrink=self.short_clips == "error")
            if len(frames) < num_frames:
                raise VideoReadError(f"clip holds {len(frames)} frames, fewer than num_frames={num_frames} "
                                     f"(short_clips='repeat' repeats frames instead)",
                                     [os.path.join(self.data_dir, path)], (path, start, stop))
        except VideoReadError as err:
            raise _RowReadError(self.row_name(index), err) from err
        return self.transforms.apply(frames, self.transforms.sample_params(*frame_size(frames), rng))

    def _train_sample(self, index: int, rng: np.random.Generator) -> dict:
        lo, hi = self.positive_offsets[index], self.positive_offsets[index + 1]
        if hi > lo:
            pick = int(rng.integers(lo, hi))
            text, relevance = self.sentences[self.positive_ids[pick]], float(self.positive_relevance[pick])
        else:  # no sentence above the threshold: the clip's own narration
            text, relevance = self.metadata["narration"].iat[index], 1.0
        return {"video": self.read_video(index, rng), "text": text, "relevance": relevance, "index": index}

    def __getitem__(self, index) -> dict:
        epoch = getattr(index, "epoch", self.epoch)
        index = int(index)
        if self.split == "train" and self.video_params["loading"] == "lax":
            return self._get_train_item(index, epoch)
        rng = self._item_rng(index, epoch)
        try:
            if self.split == "train":
                return {**self._train_sample(index, rng), "replaced": 0, "replaced_rows": []}
            video = self.read_video(index, rng)
        except _RowReadError as failure:
            raise VideoReadError(f"{failure.row}: {failure.error}") from failure.error
        return {"video": video, "text": self.metadata["narration"].iat[index], "index": index}


@LOADERS.register()
class EK100MIRDataLoader(DataLoader):
    """Batches of :class:`EK100MIR`: ``video`` [B, T, 3, R, R], ``text`` list of B str, ``index`` [B] clip rows,
    and for training ``relevance`` [B] (of each drawn caption), ``num_replaced`` / ``replaced_rows``.

    Dataset args as :class:`EK100MIR`; ``tsfm_params`` are :func:`init_video_transform_dict`'s (test default:
    resize to ``input_res`` and centre crop ``input_res``). Training shards over ranks (``DistributedSampler``,
    reshuffled by ``set_epoch``); evaluation order is the csv's (the evaluation loop shards it).
    """

    def __init__(self, meta_dir: str, data_dir: str, split: Literal["train", "test"] = "test",
                 num_frames: Annotated[int, Bounds(1)] = 4, input_res: Annotated[int, Bounds(1)] = 224,
                 reader: Literal[BACKENDS] = "decord", decode_size: int | list[int] | None = None,
                 loading: Literal["strict", "lax"] = "strict", max_bad_fraction: Annotated[float, Bounds(0, 1)] = 0.05,
                 short_clips: Literal[SHORT_CLIP_POLICIES] = "error",
                 positive_threshold: Annotated[float, Bounds(0, 1)] = 0.1, video_ext: str = ".MP4",
                 tsfm_params: Annotated[dict | None, ArgsOf(init_video_transform_dict)] = None,
                 batch_size: Annotated[int, Bounds(1)] = 16, num_workers: Annotated[int, Bounds(0)] = 4,
                 shuffle: bool | None = None, drop_last: bool | None = None, seed: int = 0,
                 pin_memory: bool | None = None):
        tsfm_params = {"input_res": input_res, "center_crop": input_res, "resize_short": input_res,
                       **(tsfm_params or {})}
        dataset = EK100MIR(meta_dir, data_dir, split, num_frames, input_res,
                           init_video_transform_dict(**tsfm_params)[split], reader, decode_size, loading,
                           max_bad_fraction, short_clips, positive_threshold, video_ext, seed)
        training = split == "train"
        self.seed, self.rank = int(seed), get_rank()
        order = EpochDistributedSampler(dataset, num_replicas=get_world_size(), rank=self.rank,
                                        shuffle=training if shuffle is None else shuffle, seed=seed,
                                        drop_last=training if drop_last is None else drop_last)
        super().__init__(dataset, batch_size=batch_size, sampler=order, collate_fn=EgoClipCollate(),
                         num_workers=num_workers, worker_init_fn=ignore_preemption_signals,
                         pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                         drop_last=training if drop_last is None else drop_last)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
