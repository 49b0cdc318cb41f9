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

from data_loader.clip_dataset import SHORT_CLIP_POLICIES, VideoFileClips, VideoFileClipsLoader
from data_loader.transforms import init_video_transform_dict
from data_loader.video_backends import BACKENDS
from model.checkpoint import _numpy_safe_globals
from utils.config_schema import ArgsOf, Bounds
from utils.distributed import barrier, get_rank
from utils.registry import LOADERS
from utils.video_io import atomic_file

logger = logging.getLogger(__name__)


CLIP_COLUMNS = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp", "narration")


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
    """The pickled relevancy array [clips, sentences] (its own float dtype), loaded without executing pickled code."""
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
    return array


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
        matrix = load_relevancy(relevancy_path(meta_dir, split))
        check_relevancy_shape(matrix.shape, meta_dir, split, len(clips), len(sentences))
    return EK100Annotations(clips, sentences, rows.astype(np.int64), matrix)


def check_relevancy_shape(shape, meta_dir: str, split: str, num_clips: int, num_sentences: int) -> None:
    if tuple(shape) != (num_clips, num_sentences):
        raise AnnotationError(f"{relevancy_path(meta_dir, split)}: relevancy matrix is {shape[0]} x {shape[1]} but "
                              f"{clip_csv_path(meta_dir, split)} has {num_clips} clips and "
                              f"{sentence_csv_path(meta_dir, split)} {num_sentences} sentences")


def positives_above(relevancy: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse rows of ``relevancy > threshold``: ``(offsets [clips + 1], sentence ids, relevances)``; clip i's
    positives are ``ids[offsets[i]:offsets[i + 1]]``."""
    rows, cols = np.nonzero(relevancy > threshold)
    offsets = np.searchsorted(rows, np.arange(relevancy.shape[0] + 1))
    return offsets, cols.astype(np.int64), relevancy[rows, cols].astype(np.float32)


def _positives_cache(meta_dir: str, split: str, threshold: float) -> str:
    return f"{relevancy_path(meta_dir, split)}.positives_{threshold:g}.npz"


def _fresh(cache: str, source: str) -> bool:
    return os.path.isfile(cache) and os.path.getmtime(cache) >= os.path.getmtime(source)


def _write_positives_cache(meta_dir: str, split: str, threshold: float) -> None:
    relevancy = load_relevancy(relevancy_path(meta_dir, split))
    offsets, ids, values = positives_above(relevancy, threshold)
    try:
        with atomic_file(_positives_cache(meta_dir, split, threshold)) as tmp, open(tmp, "wb") as f:
            np.savez(f, offsets=offsets, ids=ids, values=values, shape=np.array(relevancy.shape))
    except OSError as err:
        logger.warning("cannot cache the training positives beside %s (%s); every process will read the dense "
                       "matrix", relevancy_path(meta_dir, split), err)


def training_positives(meta_dir: str, split: str, threshold: float, num_clips: int, num_sentences: int):
    """``positives_above`` of the split's relevancy matrix. The first process computes it and caches it beside the
    pickle (``<pickle>.positives_<threshold>.npz``, rebuilt when the pickle is newer) while the other ranks wait, so
    only one process at a time holds the dense matrix (EK-100 train: 67,217 x 15,989 float64, 8.6 GB)."""
    source, cache = relevancy_path(meta_dir, split), _positives_cache(meta_dir, split, threshold)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"EK-100 relevancy file {source} not found")
    failure = None
    if get_rank() == 0 and not _fresh(cache, source):
        try:
            _write_positives_cache(meta_dir, split, threshold)
        except (AnnotationError, OSError) as err:  # raised after the barrier, so no rank waits forever
            failure = err
    barrier()
    if failure is not None:
        raise failure
    if not _fresh(cache, source):
        relevancy = load_relevancy(source)
        check_relevancy_shape(relevancy.shape, meta_dir, split, num_clips, num_sentences)
        return positives_above(relevancy, threshold)
    with np.load(cache) as stored:
        check_relevancy_shape(stored["shape"], meta_dir, split, num_clips, num_sentences)
        return stored["offsets"], stored["ids"], stored["values"]


class EK100MIR(VideoFileClips):
    """EK-100 MIR clips of one split (see the module docstring).

    Args:
        meta_dir: the retrieval annotation folder; data_dir: ``<participant_id>/<video_id>.MP4`` videos.
        split: 'train' or 'test'. num_frames, input_res: frames per clip and their size.
        tsfms: the frame transform (default: random resized crop 0.5-1 for train, centre square for test).
        reader, decode_size, loading, max_bad_fraction, short_clips, seed: as
            :class:`~data_loader.clip_dataset.VideoFileClips` (bad reads name the csv row).
        positive_threshold: training captions are drawn among sentences with relevance above it (0.1).
        video_ext: video file extension.
    """

    def __init__(self, meta_dir: str, data_dir: str, split: Literal["train", "test"] = "test", num_frames: int = 4,
                 input_res: int = 224, tsfms=None, reader: str = "decord", decode_size=None,
                 loading: Literal["strict", "lax"] = "strict", max_bad_fraction: float = 0.05,
                 short_clips: Literal[SHORT_CLIP_POLICIES] = "error", positive_threshold: float = 0.1,
                 video_ext: str = ".MP4", seed: int = 0, dataset_name: str = "EK100MIR"):
        if split not in ("train", "test"):
            raise ValueError(f"EK100MIR split must be 'train' or 'test', got {split!r}")
        tsfms = tsfms or init_video_transform_dict(input_res, center_crop=input_res, resize_short=input_res)[split]
        super().__init__(data_dir, split, num_frames, tsfms, reader, decode_size, loading, max_bad_fraction,
                         short_clips, seed, dataset_name)
        self.meta_dir, self.meta_path, self.video_ext = meta_dir, clip_csv_path(meta_dir, split), video_ext
        annotations = load_annotations(meta_dir, split, relevancy=False)
        self.metadata, self.sentences = annotations.clips, annotations.sentences["narration"].tolist()
        if split == "train":
            self.positive_offsets, self.positive_ids, self.positive_relevance = training_positives(
                meta_dir, split, positive_threshold, len(self.metadata), len(self.sentences))

    def video_path(self, index: int) -> str:
        """``<participant_id>/<video_id><ext>`` of clip row ``index``, relative to ``data_dir``."""
        return os.path.join(self.metadata["participant_id"].iat[index],
                            self.metadata["video_id"].iat[index] + self.video_ext)

    def row_name(self, index: int) -> str:
        meta = self.metadata
        return (f"{os.path.basename(self.meta_path)} row {index} ({meta['narration_id'].iat[index]}, "
                f"{meta['start_sec'].iat[index]:.2f}-{meta['stop_sec'].iat[index]:.2f} s)")

    def read_video(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        """float ``[T, 3, R, R]`` of clip row ``index``."""
        return self.read_frames(index, self.video_path(index), float(self.metadata["start_sec"].iat[index]),
                                float(self.metadata["stop_sec"].iat[index]), rng)

    def _train_sample(self, index: int, rng: np.random.Generator) -> dict:
        lo, hi = self.positive_offsets[index], self.positive_offsets[index + 1]
        if hi > lo:
            pick = int(rng.integers(lo, hi))
            text, relevance = self.sentences[self.positive_ids[pick]], float(self.positive_relevance[pick])
        else:  # no sentence above the threshold: the clip's own narration
            text, relevance = self.metadata["narration"].iat[index], 1.0
        return {"video": self.read_video(index, rng), "text": text, "relevance": relevance, "index": index}

    def _test_sample(self, index: int, rng: np.random.Generator) -> dict:
        return {"video": self.read_video(index, rng), "text": self.metadata["narration"].iat[index], "index": index}


@LOADERS.register()
class EK100MIRDataLoader(VideoFileClipsLoader):
    """Batches of :class:`EK100MIR`: ``video`` [B, T, 3, R, R], ``text`` list of B str, ``index`` [B] clip rows,
    and for training ``relevance`` [B] (of each drawn caption), ``num_replaced`` / ``replaced_rows``.

    Dataset args as :class:`EK100MIR`; ``tsfm_params`` are :func:`init_video_transform_dict`'s (test default:
    resize to ``input_res`` and centre crop ``input_res``); loading args as
    :class:`~data_loader.clip_dataset.VideoFileClipsLoader`.
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
        super().__init__(dataset, batch_size, num_workers, shuffle, drop_last, seed, pin_memory)
