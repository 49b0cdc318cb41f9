"""EgoClip / EgoMCQ metadata: parsing and validation of ``egoclip.csv``, ``egomcq.json``, ``taxonomy.json``.

Formats are EgoVLP's (DESIGN.md §3). ``egoclip.csv`` is TAB-separated; its ``tag_verb`` / ``tag_noun``
cells hold the text of a Python list of class ids and are parsed without ``eval``.
"""
from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

logger = logging.getLogger(__name__)

EGOCLIP_COLUMNS = ("clip_idx", "video_uid", "video_dur", "narration_source", "narration_ind",
                   "narration_time", "clip_start", "clip_end", "clip_text", "tag_verb", "tag_noun")
TIME_COLUMNS = ("narration_time", "clip_start", "clip_end")
# Ego4D taxonomy sizes, used when the dataset ships no taxonomy.json.
EGO4D_NUM_VERBS = 118
EGO4D_NUM_NOUNS = 582

_SKIPPED_LINE = re.compile(r"Skipping line (\d+)")


def parse_tag_list(text) -> tuple[int, ...]:
    """Class ids from a cell such as ``"[192, 115, 12]"`` (JSON or a Python literal; never evaluated).

    Raises ValueError when the cell is not a list/tuple of non-negative integers.
    """
    if not isinstance(text, str):
        raise ValueError(f"tag cell is {type(text).__name__}, not text: {text!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            raise ValueError(f"tag cell is not a list literal: {text!r}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"tag cell is not a list: {text!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ValueError(f"tag cell holds something other than non-negative integers: {text!r}")
    return tuple(value)


def multi_hot(ids, size: int) -> torch.Tensor:
    """Float vector ``[size]`` with ones at ``ids``."""
    vec = torch.zeros(size)
    if len(ids):
        vec[torch.as_tensor(np.asarray(ids, dtype=np.int64))] = 1.0
    return vec


class TagLists:
    """Variable-length class-id lists stored flat (no per-row Python objects, so forked workers share them).

    Row ``r`` holds ``values[offsets[r]:offsets[r + 1]]``.
    """

    def __init__(self, lists):
        lengths = np.fromiter((len(ids) for ids in lists), dtype=np.int64, count=len(lists))
        self.offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.values = np.fromiter((i for ids in lists for i in ids), dtype=np.int32, count=int(self.offsets[-1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> np.ndarray:
        return self.values[self.offsets[row]:self.offsets[row + 1]]


@dataclass
class EgoClipTable:
    """Valid EgoClip rows (``frame``, index 0..N-1) with their parsed tags and what was skipped."""
    frame: pd.DataFrame
    verb_ids: TagLists
    noun_ids: TagLists
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True)
class Taxonomy:
    """Class-vocabulary sizes and, when the dataset says so, its chunk length (seconds) and fps."""
    num_verbs: int = EGO4D_NUM_VERBS
    num_nouns: int = EGO4D_NUM_NOUNS
    chunk_len: float | None = None
    fps: float | None = None


def load_taxonomy(meta_dir: str) -> Taxonomy:
    """``meta_dir/taxonomy.json`` when present (``verbs``/``nouns`` name lists), else Ego4D's 118/582."""
    path = os.path.join(meta_dir, "taxonomy.json")
    if not os.path.isfile(path):
        return Taxonomy()
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    for key in ("verbs", "nouns"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise ValueError(f"{path}: '{key}' must be a non-empty list of class names")
    chunk_len, fps = data.get("chunk_len"), data.get("fps")
    return Taxonomy(num_verbs=len(data["verbs"]), num_nouns=len(data["nouns"]),
                    chunk_len=None if chunk_len is None else float(chunk_len),
                    fps=None if fps is None else float(fps))


def _read_tsv(path: str) -> tuple[pd.DataFrame, list[int]]:
    """All cells as text; lines with too many fields are dropped and their (1-based) numbers returned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, on_bad_lines="warn")
    bad_lines = []
    for w in caught:
        if issubclass(w.category, pd.errors.ParserWarning):
            bad_lines.extend(int(n) for n in _SKIPPED_LINE.findall(str(w.message)))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return frame, bad_lines


def _file_line(row: int, dropped_lines: list[int]) -> int:
    """1-based line number in the file of parsed data row ``row`` (after the header and dropped lines)."""
    line = row + 2
    for dropped in sorted(dropped_lines):
        if dropped <= line:
            line += 1
    return line


def _parse_tag_column(cells: pd.Series, size: int) -> tuple[list, np.ndarray]:
    """Parsed ids per row (None where invalid or out of ``[0, size)``) and the validity mask."""
    parsed = {}
    for text in pd.unique(cells):
        try:
            ids = parse_tag_list(text)
        except ValueError:
            ids = None
        if ids is not None and any(i >= size for i in ids):
            ids = None
        parsed[text] = ids
    rows = [parsed[text] for text in cells]
    valid = np.fromiter((ids is not None for ids in rows), dtype=bool, count=len(rows))
    return rows, valid


def load_egoclip(path: str, num_verbs: int = EGO4D_NUM_VERBS, num_nouns: int = EGO4D_NUM_NOUNS) -> EgoClipTable:
    """Read a TAB-separated ``egoclip.csv``, keeping only rows that can be trained on.

    Skipped and counted (one summary warning): lines with too many fields, non-numeric or non-finite
    times, ``clip_end < clip_start``, tag cells that are not lists of ids within the taxonomy.
    Raises ValueError naming the file when a column is missing or no row survives.
    """
    frame, bad_lines = _read_tsv(path)
    missing = [c for c in EGOCLIP_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing EgoClip columns {missing}; found {list(frame.columns)} "
                         "(the file must be TAB-separated)")
    skipped = {"malformed line": len(bad_lines)}
    times = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64) for c in TIME_COLUMNS}
    finite = np.logical_and.reduce([np.isfinite(t) for t in times.values()])
    ordered = finite & (times["clip_end"] >= times["clip_start"])
    verbs, verb_ok = _parse_tag_column(frame["tag_verb"], num_verbs)
    nouns, noun_ok = _parse_tag_column(frame["tag_noun"], num_nouns)
    has_uid = frame["video_uid"].str.len().to_numpy() > 0
    tags_ok = verb_ok & noun_ok
    skipped["non-numeric time"] = int((~finite).sum())
    skipped["clip_end < clip_start"] = int((finite & ~ordered).sum())
    skipped["bad tags"] = int((ordered & ~tags_ok).sum())
    skipped["empty video_uid"] = int((ordered & tags_ok & ~has_uid).sum())
    keep = ordered & tags_ok & has_uid
    skipped = {reason: n for reason, n in skipped.items() if n}
    if skipped:
        first_bad = sorted(bad_lines[:5] + [_file_line(int(r), bad_lines) for r in np.flatnonzero(~keep)[:5]])[:5]
        logger.warning("%s: skipped %d of %d rows (%s); first skipped lines: %s", path,
                       sum(skipped.values()), len(frame) + len(bad_lines),
                       ", ".join(f"{n} {reason}" for reason, n in skipped.items()), first_bad)
    if not keep.any():
        raise ValueError(f"{path}: no valid EgoClip rows (skipped: {skipped or 'file is empty'})")
    rows = np.flatnonzero(keep)
    clean = frame.iloc[rows][["video_uid", "narration_source", "clip_text"]].reset_index(drop=True)
    for column in ("video_dur", "narration_ind"):
        clean[column] = pd.to_numeric(frame[column].iloc[rows], errors="coerce").to_numpy()
    for column, values in times.items():
        clean[column] = values[rows]
    return EgoClipTable(frame=clean, verb_ids=TagLists([verbs[r] for r in rows]),
                        noun_ids=TagLists([nouns[r] for r in rows]), skipped=skipped)


@dataclass(frozen=True)
class ClipRow:
    """One clip of an EgoMCQ item."""
    video_uid: str
    clip_start: float
    clip_end: float
    narration_time: float
    clip_text: str


@dataclass(frozen=True)
class MCQItem:
    """One EgoMCQ question: a query narration, its candidate clips, the correct choice and the type."""
    key: str
    query: ClipRow
    choices: tuple[ClipRow, ...]
    answer: int
    type: int  # 1 inter-video, 2 intra-video


def _clip_row(row, where: str) -> ClipRow:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object with EgoClip columns, got {type(row).__name__}")
    try:
        start, end = float(row["clip_start"]), float(row["clip_end"])
        narration = float(row.get("narration_time", (start + end) / 2))
        uid, text = str(row["video_uid"]), str(row["clip_text"])
    except KeyError as err:
        raise ValueError(f"{where}: missing column {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: bad value ({err})") from None
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError(f"{where}: invalid clip window [{start}, {end}]")
    return ClipRow(uid, start, end, narration, text)


def load_egomcq(path: str) -> list[MCQItem]:
    """Read ``egomcq.json`` (``{"0": {"query", "choices", "answer", "types"}, ...}``) ordered by key.

    Raises ValueError naming the file and the item key on any malformed entry.
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty object of MCQ items")
    try:
        keys = sorted(data, key=int)
    except ValueError:
        raise ValueError(f"{path}: item keys must be integers, got e.g. {next(iter(data))!r}") from None
    items = []
    for key in keys:
        entry, where = data[key], f"{path} item {key}"
        if not isinstance(entry, dict) or not {"query", "choices", "answer", "types"} <= set(entry):
            raise ValueError(f"{where}: needs 'query', 'choices', 'answer' and 'types'")
        choices = entry["choices"]
        if not isinstance(choices, dict) or not choices:
            raise ValueError(f"{where}: 'choices' must be a non-empty object")
        try:
            ordered = [choices[k] for k in sorted(choices, key=int)]
        except ValueError:
            raise ValueError(f"{where}: choice keys must be integers, got {sorted(choices)}") from None
        answer, mcq_type = entry["answer"], entry["types"]
        if not isinstance(answer, int) or not 0 <= answer < len(ordered):
            raise ValueError(f"{where}: answer {answer!r} is not a choice index in [0, {len(ordered)})")
        if mcq_type not in (1, 2):
            raise ValueError(f"{where}: types must be 1 (inter-video) or 2 (intra-video), got {mcq_type!r}")
        items.append(MCQItem(key=str(key), query=_clip_row(entry["query"], f"{where} query"),
                             choices=tuple(_clip_row(c, f"{where} choice {i}") for i, c in enumerate(ordered)),
                             answer=answer, type=mcq_type))
    return items
