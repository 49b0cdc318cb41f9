"""Charades-Ego action recognition: dataset and data loader.

Files under ``meta_dir``: ``metadata_train.csv`` (TAB-separated ``id cls t_start t_end narration``, one row per
action, written by ``python -m utils.charades_meta``) for training, ``CharadesEgo_v1_<split>_only1st.csv``
(Charades layout, ``id`` and ``actions`` read by name) for evaluation, and the class list ``classes_file``
(``cXXX name`` lines). Videos: ``<data_dir>/<id>.mp4``.

Train items (one per action): the trimmed segment ``[t_start, t_end]`` with ``rand`` sampling, ``text`` = the
class name, ``label`` = the class. Test items (one per video): the whole untrimmed video with ``uniform``
sampling, ``label`` = multi-hot [num_classes] of its actions (all zero for a video without actions).
"""
from __future__ import annotations

import os
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch

from data_loader.clip_dataset import SHORT_CLIP_POLICIES, VideoFileClips, VideoFileClipsLoader
from data_loader.transforms import init_video_transform_dict
from data_loader.video_backends import BACKENDS
from utils.charades_meta import METADATA_COLUMNS, CharadesFormatError, read_charades_csv, read_classes
from utils.config_schema import ArgsOf, Bounds
from utils.registry import LOADERS


def read_metadata(path: str, num_classes: int) -> pd.DataFrame:
    """``metadata_<split>.csv`` with int ``cls`` and float ``t_start`` / ``t_end``; a bad row raises naming the
    file and row (counted from 0 after the header)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Charades-Ego metadata file {path} not found (write it with "
                                f"python -m utils.charades_meta)")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if tuple(table.columns) != METADATA_COLUMNS:
        raise CharadesFormatError(f"{path}: header {list(table.columns)}, expected {list(METADATA_COLUMNS)} "
                                  f"(TAB-separated)")
    cls, start, end = (np.empty(len(table), dtype) for dtype in (np.int64, np.float64, np.float64))
    for row in range(len(table)):
        try:
            cls[row], start[row], end[row] = (int(table["cls"].iat[row]), float(table["t_start"].iat[row]),
                                              float(table["t_end"].iat[row]))
        except ValueError:
            raise CharadesFormatError(f"{path} row {row} (id {table['id'].iat[row]}): cls / t_start / t_end "
                                      f"{table.iloc[row, 1:4].tolist()} are not numbers") from None
        if not 0 <= cls[row] < num_classes or not 0 <= start[row] <= end[row]:
            raise CharadesFormatError(f"{path} row {row} (id {table['id'].iat[row]}): class {cls[row]} of "
                                      f"{num_classes} or times {start[row]}-{end[row]} s out of range")
    return table.assign(cls=cls, t_start=start, t_end=end)


class CharadesEgo(VideoFileClips):
    """Charades-Ego actions (``split='train'``) or videos (other splits); see the module docstring.

    Args:
        meta_dir: folder of the annotation csv files; data_dir: ``<id>.mp4`` videos; classes_file: class list.
        split: 'train' (metadata_train.csv) or e.g. 'test' (CharadesEgo_v1_test_only1st.csv).
        num_frames (EgoVLP 16, EgoVLPv2 32), input_res, tsfms, reader, decode_size, loading, max_bad_fraction,
        short_clips, seed: as :class:`~data_loader.clip_dataset.VideoFileClips`. video_ext: video extension.
    """

    def __init__(self, meta_dir: str, data_dir: str, classes_file: str, split: str = "test", num_frames: int = 16,
                 input_res: int = 224, tsfms=None, reader: str = "decord", decode_size=None,
                 loading: Literal["strict", "lax"] = "strict", max_bad_fraction: float = 0.05,
                 short_clips: Literal[SHORT_CLIP_POLICIES] = "error", video_ext: str = ".mp4", seed: int = 0,
                 dataset_name: str = "CharadesEgo"):
        tsfms = tsfms or init_video_transform_dict(input_res)["train" if split == "train" else "test"]
        super().__init__(data_dir, split, num_frames, tsfms, reader, decode_size, loading, max_bad_fraction,
                         short_clips, seed, dataset_name)
        self.class_names = read_classes(classes_file)
        self.video_ext = video_ext
        if split == "train":
            self.meta_path = os.path.join(meta_dir, f"metadata_{split}.csv")
            self.metadata = read_metadata(self.meta_path, len(self.class_names))
        else:
            self.meta_path = os.path.join(meta_dir, f"CharadesEgo_v1_{split}_only1st.csv")
            self.metadata = read_charades_csv(self.meta_path, len(self.class_names))

    def row_name(self, index: int) -> str:
        return f"{os.path.basename(self.meta_path)} row {index} (id {self.metadata['id'].iat[index]})"

    def _video(self, index: int) -> str:
        return self.metadata["id"].iat[index] + self.video_ext

    def _train_sample(self, index: int, rng: np.random.Generator) -> dict:
        meta = self.metadata
        video = self.read_frames(index, self._video(index), float(meta["t_start"].iat[index]),
                                 float(meta["t_end"].iat[index]), rng)
        return {"video": video, "text": meta["narration"].iat[index], "label": int(meta["cls"].iat[index]),
                "index": index}

    def _test_sample(self, index: int, rng: np.random.Generator) -> dict:
        video = self._video(index)
        frames = self.read_frames(index, video, 0.0, self.video_duration(index, video), rng)
        label = torch.zeros(len(self.class_names))
        for cls, _, _ in self.metadata["action_list"].iat[index]:
            label[cls] = 1.0
        return {"video": frames, "label": label, "index": index}


@LOADERS.register()
class CharadesEgoDataLoader(VideoFileClipsLoader):
    """Batches of :class:`CharadesEgo`: ``video`` [B, T, 3, R, R], ``index`` [B], and ``text`` (B class names) +
    ``label`` [B] for training (with ``num_replaced`` / ``replaced_rows``), ``label`` [B, C] multi-hot for
    evaluation. Dataset args as :class:`CharadesEgo`; ``tsfm_params`` are :func:`init_video_transform_dict`'s;
    loading args as :class:`~data_loader.clip_dataset.VideoFileClipsLoader`."""

    def __init__(self, meta_dir: str, data_dir: str, classes_file: str, split: str = "test",
                 num_frames: Annotated[int, Bounds(1)] = 16, input_res: Annotated[int, Bounds(1)] = 224,
                 reader: Literal[BACKENDS] = "decord", decode_size: int | list[int] | None = None,
                 loading: Literal["strict", "lax"] = "strict", max_bad_fraction: Annotated[float, Bounds(0, 1)] = 0.05,
                 short_clips: Literal[SHORT_CLIP_POLICIES] = "error", video_ext: str = ".mp4",
                 tsfm_params: Annotated[dict | None, ArgsOf(init_video_transform_dict)] = None,
                 batch_size: Annotated[int, Bounds(1)] = 16, num_workers: Annotated[int, Bounds(0)] = 4,
                 shuffle: bool | None = None, drop_last: bool | None = None, seed: int = 0,
                 pin_memory: bool | None = None):
        tsfms = init_video_transform_dict(**{"input_res": input_res, **(tsfm_params or {})})
        dataset = CharadesEgo(meta_dir, data_dir, classes_file, split, num_frames, input_res,
                              tsfms["train" if split == "train" else "test"], reader, decode_size, loading,
                              max_bad_fraction, short_clips, video_ext, seed)
        super().__init__(dataset, batch_size, num_workers, shuffle, drop_last, seed, pin_memory)
