"""EgoClip (training) and EgoMCQ (validation/test) datasets in EgoVLP's on-disk format.

Files: ``<data_dir>/<video_uid>/<k>.mp4`` (chunk ``k`` = seconds ``[k * chunk_len, (k + 1) * chunk_len)``);
``<meta_dir>/egoclip.csv`` (TAB-separated, columns :data:`utils.egoclip_format.EGOCLIP_COLUMNS`, times in
seconds, ``tag_verb``/``tag_noun`` lists of class ids); ``<meta_dir>/egomcq.json``
(``{"<n>": {"query": clip, "choices": {"0".."4": clip}, "answer": int, "types": 1|2}}``, a clip being an
object with ``video_uid``, ``clip_start``, ``clip_end``, ``clip_text``); optional ``taxonomy.json``
(``verbs``/``nouns`` name lists, ``chunk_len``).

Train item: ``{'video': [T, 3, R, R], 'text': str, 'meta': {...}, 'verb_vec': [V], 'noun_vec': [N]}``
(+ ``video_neg``/``text_neg``/``verb_vec_neg``/``noun_vec_neg`` with scene-aware negatives).
Val/test item: ``{'video': [5, T, 3, R, R], 'text': query, 'correct': int, 'type': 1|2}``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from data_loader.frame_sampling import sample_multiscale_indices
from data_loader.metadata import ClipRow, MCQItem, load_egoclip, load_egomcq, load_taxonomy, multi_hot
from data_loader.transforms import VideoTransform, frame_size, init_video_transform_dict
from data_loader.video_backends import BACKENDS, DecodeSize
from data_loader.video_reader import ChunkedVideoReader, VideoReadError

logger = logging.getLogger(__name__)

SPLIT_FILES = {"train": "egoclip.csv", "val": "egomcq.json", "test": "egomcq.json"}
DEFAULT_CHUNK_LEN = 600.0
SHORT_CLIP_POLICIES = ("pad", "skip")


@dataclass
class VideoClipParams:
    """The keys of a dataset's ``video_params`` (see :class:`EgoClip_EgoMCQ`) with their defaults."""

    input_res: int = 224
    num_frames: int = 4
    loading: Literal["strict", "lax"] = "strict"
    max_bad_fraction: float = 0.05
    scales: list[int] | None = None
    short_clip_policy: Literal[SHORT_CLIP_POLICIES] = "pad"


@dataclass
class ReaderParams:
    """The keys of a dataset's ``reader`` dict: video backend, chunk length (seconds), decode size (pixels)."""

    backend: Literal[BACKENDS] = "decord"
    chunk_len: float | None = None
    decode_size: DecodeSize = None


VIDEO_PARAM_DEFAULTS = asdict(VideoClipParams())
READER_DEFAULTS = asdict(ReaderParams())
# 'lax' loading tolerates this many failed reads before judging the failed fraction.
BAD_READ_GRACE = 10
# Replaced reads are logged one line each, at most this many per process in any LOG_WINDOW_S seconds.
LOG_BURST, LOG_WINDOW_S = 20, 60.0


class MCQClipError(RuntimeError):
    """An EgoMCQ clip could not be read; evaluation never substitutes clips. Names the item and the clip."""


def _merge_params(given, defaults: dict, what: str) -> dict:
    given = dict(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)}; valid keys: {sorted(defaults)}")
    return {**defaults, **given}


class EgoClip_EgoMCQ(Dataset):
    """EgoClip narrated clips (``split='train'``) or EgoMCQ questions (``'val'``/``'test'``).

    Args:
        dataset_name: a label carried into log messages (EgoVLP: 'EgoClip').
        video_params: ``input_res`` (R), ``num_frames`` (T), ``loading`` ('strict' raises on a bad video;
            'lax' replaces the training sample with a random other one), ``max_bad_fraction`` (lax gives up
            when more than this fraction of reads fail), and for multi-scale ``scales`` and
            ``short_clip_policy``.
        data_dir: chunked videos ``<data_dir>/<video_uid>/<k>.mp4``.
        meta_dir: ``egoclip.csv``, ``egomcq.json`` and optionally ``taxonomy.json``.
        split: 'train' | 'val' | 'test'.
        tsfms: a :class:`VideoTransform`; default: EgoVLP's transform for the split at ``input_res``.
        reader: ``{'backend': 'decord'|'pyav', 'chunk_len': seconds, 'decode_size': ...}`` or a backend name;
            ``chunk_len`` defaults to taxonomy.json's, else 600 s.
        neg_param: seconds; if set, each training item also carries one clip from the same
            ``narration_time // neg_param`` segment of the same video (EgoVLP's scene-aware negatives).
        seed: with the epoch and the item's index, the only source of an item's randomness (frame choice,
            crop, flip, scene negative, lax replacement), so items do not depend on which DataLoader worker
            reads them. The epoch comes with the index (``samplers.EpochIndex``), else from :meth:`set_epoch`.

    Training items also carry ``replaced`` (int: how many unreadable clips 'lax' loading replaced for this
    item, 0 otherwise) and ``replaced_rows`` (list of str naming each failed clip as ``egoclip.csv row <i>
    (<video_uid> <start>-<end> s)``, ``i`` being its dataset index), gathered per batch by the collate.
    """

    def __init__(self, dataset_name: str = "EgoClip", video_params: dict | None = None,
                 data_dir: str = "data/synthetic/videos", meta_dir: str = "data/synthetic/meta",
                 split: str = "train", tsfms: VideoTransform | None = None,
                 reader: dict | str | None = None, neg_param: float | None = None, seed: int = 0):
        if split not in SPLIT_FILES:
            raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
        self.dataset_name, self.split = dataset_name, split
        self.video_params = self._check_video_params(_merge_params(video_params, VIDEO_PARAM_DEFAULTS, "video_params"))
        self.data_dir, self.meta_dir = data_dir, meta_dir
        self.meta_path = os.path.join(meta_dir, SPLIT_FILES[split])
        taxonomy = load_taxonomy(meta_dir)
        self.verb_dim, self.noun_dim = taxonomy.num_verbs, taxonomy.num_nouns
        reader_args = _merge_params({"backend": reader} if isinstance(reader, str) else reader,
                                    READER_DEFAULTS, "reader")
        if reader_args["chunk_len"] is None:
            reader_args["chunk_len"] = taxonomy.chunk_len or DEFAULT_CHUNK_LEN
        self.reader_args = reader_args
        self.chunk_sec = float(reader_args["chunk_len"])
        if tsfms is None:
            tsfms = init_video_transform_dict(self.video_params["input_res"])[split]
        self.transforms = tsfms
        self.frame_sample = "rand" if split == "train" else "uniform"
        self.neg_param = neg_param if split == "train" and neg_param else None
        self._load_metadata()
        self._reader = None
        self.seed, self.epoch = int(seed), 0
        self.reads, self.bad_reads = 0, 0
        self._log_window: tuple[float, int, int] = (-LOG_WINDOW_S, 0, 0)  # (start, logged, suppressed)

    # ------------------------------------------------------------------ setup
    def _check_video_params(self, params: dict) -> dict:
        if params["loading"] not in ("strict", "lax"):
            raise ValueError(f"video_params.loading must be 'strict' or 'lax', got {params['loading']!r}")
        if not 0.0 <= params["max_bad_fraction"] < 1.0:
            raise ValueError(f"video_params.max_bad_fraction must be in [0, 1), got {params['max_bad_fraction']}")
        if int(params["num_frames"]) < 1 or int(params["input_res"]) < 1:
            raise ValueError(f"video_params num_frames and input_res must be positive, got {params}")
        if params["short_clip_policy"] not in SHORT_CLIP_POLICIES:
            raise ValueError(f"video_params.short_clip_policy must be one of {SHORT_CLIP_POLICIES}, "
                             f"got {params['short_clip_policy']!r}")
        scales = params["scales"]
        if scales is not None:
            if not scales or any(not isinstance(s, int) or s < 1 for s in scales) or len(set(scales)) != len(scales):
                raise ValueError(f"video_params.scales must be distinct positive frame counts, got {scales}")
            params["scales"] = sorted(scales)
        return params

    def _load_metadata(self) -> None:
        if not os.path.isfile(self.meta_path):
            raise FileNotFoundError(f"{self.dataset_name} {self.split}: metadata file {self.meta_path} not found")
        if self.split == "train":
            table = load_egoclip(self.meta_path, self.verb_dim, self.noun_dim)
            self.metadata, self.verb_ids, self.noun_ids = table.frame, table.verb_ids, table.noun_ids
            if self.neg_param:
                self._build_segments()
        else:
            self.metadata: list[MCQItem] = load_egomcq(self.meta_path)

    def _build_segments(self) -> None:
        """Rows grouped by (video, ``narration_time // neg_param``): rows of segment s are
        ``_segment_rows[_segment_offsets[s]:_segment_offsets[s + 1]]``."""
        chunk = np.floor_divide(self.metadata["narration_time"].to_numpy(dtype=np.float64), self.neg_param)
        video_codes = pd.factorize(self.metadata["video_uid"])[0].astype(np.int64)  # categorical: no strings made
        chunk_codes = pd.factorize(chunk)[0].astype(np.int64)
        codes, uniques = pd.factorize(video_codes * (int(chunk_codes.max(initial=0)) + 1) + chunk_codes)
        self._segment_of_row = codes.astype(np.int64)
        self._segment_rows = np.argsort(codes, kind="stable")
        self._segment_offsets = np.searchsorted(codes[self._segment_rows], np.arange(len(uniques) + 1))

    @property
    def reader(self) -> ChunkedVideoReader:
        """The video reader, opened lazily in the process that uses it (DataLoader workers)."""
        if self._reader is None:
            self._reader = ChunkedVideoReader(self.data_dir, chunk_len=self.chunk_sec,
                                              backend=self.reader_args["backend"],
                                              decode_size=self.reader_args["decode_size"])
        return self._reader

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_reader"] = None
        return state

    # ------------------------------------------------------------------ rows and paths
    def _train_clip(self, index: int) -> ClipRow:
        meta = self.metadata  # columns read one cell each: no row Series is built
        video_dur = float(meta["video_dur"].iat[index])
        return ClipRow(meta["video_uid"].iat[index], float(meta["clip_start"].iat[index]),
                       float(meta["clip_end"].iat[index]), float(meta["narration_time"].iat[index]),
                       meta["clip_text"].iat[index], video_dur if np.isfinite(video_dur) else None)

    def _get_video_path(self, sample) -> tuple[list[str], list[float], float]:
        """EgoVLP's (chunk paths of clip start and end, [start, end] seconds, end of the start chunk)."""
        start, end = max(float(sample.clip_start), 0.0), max(float(sample.clip_end), 0.0)
        first, last = int(start // self.chunk_sec), int(end // self.chunk_sec)
        paths = [os.path.join(self.data_dir, sample.video_uid, f"{k}.mp4") for k in (first, last)]
        return paths, [start, end], (first + 1) * self.chunk_sec

    def _get_caption(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        """(narration, noun multi-hot [noun_dim], verb multi-hot [verb_dim]) of a training row."""
        return (self.metadata["clip_text"].iat[index], multi_hot(self.noun_ids[index], self.noun_dim),
                multi_hot(self.verb_ids[index], self.verb_dim))

    # ------------------------------------------------------------------ video
    def _get_video_frames(self, clip: ClipRow, rng: np.random.Generator) -> torch.Tensor:
        """float ``[T, 3, R, R]``: ``num_frames`` frames of the clip, transformed."""
        _, (start, end), _ = self._get_video_path(clip)
        frames = self.reader.read_clip(clip.video_uid, start, end, num_frames=int(self.video_params["num_frames"]),
                                       sample=self.frame_sample, rng=rng, video_dur=clip.video_dur)
        return self.transforms.apply(frames, self.transforms.sample_params(*frame_size(frames), rng))

    def _get_video_multiscale(self, clip: ClipRow, rng: np.random.Generator) -> tuple[dict, torch.Tensor]:
        """(``{'frames_<s>': float [s, 3, R, R]}`` for every scale, ``scale_mask`` bool ``[num_scales]``).

        One decode and one transform per clip: the finest scale's frames are read and transformed once
        (one crop/flip) and every coarser scale is a nested subset of them (``sample_multiscale_indices``
        over their positions).
        A clip with ``n`` distinct frames fewer than a scale ``s`` gets its ``n`` frames with the last
        one repeated up to ``s``; with ``short_clip_policy='skip'`` such scales are also masked out
        (the smallest scale is always kept).
        """
        scales = self.video_params["scales"]
        if scales is None:
            raise ValueError(f"{self.dataset_name}: multi-scale loading needs video_params.scales")
        _, (start, end), _ = self._get_video_path(clip)
        base = self.reader.read_clip(clip.video_uid, start, end, num_frames=scales[-1], sample=self.frame_sample,
                                     rng=rng, video_dur=clip.video_dur, shrink=True)
        available = base_count = len(base)  # the clip's distinct frames when fewer than the finest scale
        base = self.transforms.apply(base, self.transforms.sample_params(*frame_size(base), rng))
        positions = _scale_positions(scales, base_count, self.frame_sample, rng)
        every_frame = list(range(base_count))
        frames = {f"frames_{s}": base if positions[s] == every_frame else base[positions[s]] for s in scales}
        usable = [s <= available or self.video_params["short_clip_policy"] == "pad" for s in scales]
        usable[0] = True
        return frames, torch.tensor(usable)

    def _get_video(self, clip: ClipRow, rng: np.random.Generator) -> dict:
        """``{'video': ...}`` for one clip (multi-scale datasets add ``scale_mask``)."""
        return {"video": self._get_video_frames(clip, rng)}

    # ------------------------------------------------------------------ items
    def set_epoch(self, epoch: int) -> None:
        """The epoch of indices that come without one (plain ints); the loaders' samplers send it with each index."""
        self.epoch = int(epoch)

    def _item_rng(self, index: int, epoch: int) -> np.random.Generator:
        """The item's random generator, from (seed, epoch, index) only: the same in every worker and on resume."""
        return np.random.default_rng([self.seed, epoch, index])

    def _row_video(self, index: int, rng: np.random.Generator) -> dict:
        """``_get_video`` of training row ``index``; a failed read raises :class:`_RowReadError` naming the row."""
        clip = self._train_clip(index)
        try:
            return self._get_video(clip, rng)
        except VideoReadError as err:
            row = (f"{os.path.basename(self.meta_path)} row {index} ({clip.video_uid} "
                   f"{clip.clip_start:.2f}-{clip.clip_end:.2f} s)")
            raise _RowReadError(row, err) from err

    def _train_sample(self, index: int, rng: np.random.Generator) -> dict:
        clip = self._train_clip(index)
        text, noun_vec, verb_vec = self._get_caption(index)
        item = {**self._row_video(index, rng), "text": text,
                "meta": {"video_uid": clip.video_uid, "clip_start": clip.clip_start, "clip_end": clip.clip_end,
                         "narration_time": clip.narration_time, "index": index},
                "verb_vec": verb_vec, "noun_vec": noun_vec}
        if self.neg_param:
            neg_index = self._scene_negative(index, rng)
            neg = self._row_video(neg_index, rng)
            text_neg, noun_neg, verb_neg = self._get_caption(neg_index)
            item.update({f"{k}_neg": v for k, v in neg.items()})
            item.update(text_neg=text_neg, noun_vec_neg=noun_neg, verb_vec_neg=verb_neg)
        return item

    def _scene_negative(self, index: int, rng: np.random.Generator) -> int:
        """Another row of the same video segment (the row itself when it is alone there)."""
        seg = self._segment_of_row[index]
        rows = self._segment_rows[self._segment_offsets[seg]:self._segment_offsets[seg + 1]]
        if len(rows) == 1:
            return index
        pick = int(rng.integers(len(rows) - 1))
        return int(rows[pick] if rows[pick] != index else rows[-1])

    def _record_bad_read(self, failure: "_RowReadError") -> None:
        """Count a replaced read, log it (rate-limited per process) and give up past ``max_bad_fraction``."""
        self.bad_reads += 1
        start, logged, suppressed = self._log_window
        now = time.monotonic()
        if now - start >= LOG_WINDOW_S:
            if suppressed:
                logger.warning("%s: %d more replaced training clips were not logged", self.dataset_name, suppressed)
            start, logged, suppressed = now, 0, 0
        if logged < LOG_BURST:
            logger.warning("%s: replacing unreadable training clip, %s: %s", self.dataset_name, failure.row,
                           failure.error)
            logged += 1
        else:
            suppressed += 1
        self._log_window = (start, logged, suppressed)
        if self.bad_reads > BAD_READ_GRACE and self.bad_reads > self.video_params["max_bad_fraction"] * self.reads:
            raise RuntimeError(
                f"{self.dataset_name}: {self.bad_reads} of {self.reads} video reads failed in this process, more than "
                f"max_bad_fraction={self.video_params['max_bad_fraction']}; check data_dir {self.data_dir} "
                f"(last error: {failure.row}: {failure.error})") from failure.error

    def _get_train_item(self, index: int, epoch: int) -> dict:
        rng = self._item_rng(index, epoch)
        replaced_rows = []
        while True:
            self.reads += 1
            try:
                item = self._train_sample(index, rng)
            except _RowReadError as failure:
                if self.video_params["loading"] == "strict":
                    raise failure.error from None
                self._record_bad_read(failure)
                replaced_rows.append(failure.row)
                index = int(rng.integers(len(self.metadata)))
                continue
            return {**item, "replaced": len(replaced_rows), "replaced_rows": replaced_rows}

    def _get_val_item(self, index: int, epoch: int) -> dict:
        item = self.metadata[index]
        rng = self._item_rng(index, epoch)
        videos = []
        for c, clip in enumerate(item.choices):
            try:
                videos.append(self._get_video(clip, rng))
            except VideoReadError as err:
                paths, secs, _ = self._get_video_path(clip)
                raise MCQClipError(f"{self.meta_path} item {item.key} choice {c}: clip {clip.video_uid} "
                                   f"[{secs[0]:.3f}, {secs[1]:.3f}] s in {paths} cannot be read: {err}") from err
        stacked = {key: _stack([v[key] for v in videos]) for key in videos[0]}
        return {**stacked, "text": item.query.clip_text, "correct": item.answer, "type": item.type}

    def __len__(self) -> int:
        return len(self.metadata)

    def __getitem__(self, index: int) -> dict:
        """Item ``index``; an :class:`data_loader.samplers.EpochIndex` also gives the epoch (else :meth:`set_epoch`'s)."""
        epoch = getattr(index, "epoch", self.epoch)
        if self.split == "train":
            return self._get_train_item(int(index), epoch)
        return self._get_val_item(int(index), epoch)


class _RowReadError(Exception):
    """A training row's clip could not be read: ``row`` names the CSV row and clip, ``error`` is the read error."""

    def __init__(self, row: str, error: VideoReadError):
        super().__init__(f"{row}: {error}")
        self.row, self.error = row, error


def _scale_positions(scales: list[int], base_count: int, mode: str, rng: np.random.Generator) -> dict[int, list[int]]:
    """Positions of each scale's frames among ``base_count`` consecutive sampled frames.

    Scales that fit are nested subsets (``sample_multiscale_indices`` over the positions, so the finest
    fitting scale takes every frame); a larger scale takes every frame and repeats the last one.
    """
    fitting = sorted({s for s in scales if s <= base_count} | {base_count})
    nested = sample_multiscale_indices(fitting, 0, base_count, mode, rng)
    return {s: nested[s] if s <= base_count else list(range(base_count)) + [base_count - 1] * (s - base_count)
            for s in scales}


def _stack(values: list):
    """Stack tensors, or dicts of tensors key by key, along a new first axis."""
    if isinstance(values[0], dict):
        return {k: torch.stack([v[k] for v in values]) for k in values[0]}
    return torch.stack(values)
