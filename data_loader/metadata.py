"""EgoClip / EgoMCQ metadata: parsing and validation of ``egoclip.csv``, ``egomcq.json``, ``taxonomy.json``.

Formats are EgoVLP's. ``egoclip.csv`` is TAB-separated with the columns of
:data:`utils.egoclip_format.EGOCLIP_COLUMNS` (times in seconds); its ``tag_verb`` / ``tag_noun`` cells hold
the text of a Python list of class ids (``"[192, 115]"``) and are parsed without ``eval``. ``egomcq.json``
and ``taxonomy.json`` are described at :func:`load_egomcq` and :func:`load_taxonomy`.

The EgoClip table (3.8 M rows in Ego4D) is kept without a Python object per row: times are float64
columns, ``video_uid``/``narration_source`` categorical, ``clip_text`` a :class:`PackedStrings` column
(one UTF-8 buffer + offsets) and the tags :class:`TagLists` (both in :mod:`data_loader.packed_columns`). Every rank holds it once per process, and
forked DataLoader workers read it without copying its pages (reading a Python object updates its
reference count, which makes the OS copy the page it lives on).
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

from data_loader.packed_columns import PackedStrings, TagLists
from utils.egoclip_format import EGOCLIP_COLUMNS

logger = logging.getLogger(__name__)

TIME_COLUMNS = ("narration_time", "clip_start", "clip_end")
MCQ_CHOICE_KEYS = ("0", "1", "2", "3", "4")
# Ego4D taxonomy sizes, used when the dataset ships no taxonomy.json.
EGO4D_NUM_VERBS = 118
EGO4D_NUM_NOUNS = 582

# egoclip.csv is parsed this many rows at a time, so only one chunk's cells exist as Python strings at once.
CHUNK_ROWS = 16_384
# Parsed tag cells remembered per column across chunks (cleared when full: bounds the loader's peak memory).
_TAG_CACHE_ROWS = 32_768

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
    """Class-vocabulary sizes and, when the dataset says so, its chunk length (seconds)."""
    num_verbs: int = EGO4D_NUM_VERBS
    num_nouns: int = EGO4D_NUM_NOUNS
    chunk_len: float | None = None


def load_taxonomy(meta_dir: str) -> Taxonomy:
    """``meta_dir/taxonomy.json`` when present (``verbs``/``nouns`` name lists, optional ``chunk_len`` in
    seconds; other keys are ignored), else Ego4D's 118/582 classes."""
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
    chunk_len = data.get("chunk_len")
    return Taxonomy(num_verbs=len(data["verbs"]), num_nouns=len(data["nouns"]),
                    chunk_len=None if chunk_len is None else float(chunk_len))


def _file_line(row: int, dropped_lines: list[int]) -> int:
    """1-based line number in the file of parsed data row ``row`` (after the header and dropped lines)."""
    line = row + 2
    for dropped in sorted(dropped_lines):
        if dropped <= line:
            line += 1
    return line


def _parse_tag_column(cells: pd.Series, size: int, cache: dict) -> tuple[list, np.ndarray]:
    """Parsed ids per row (None where invalid or out of ``[0, size)``) and the validity mask.

    ``cache`` maps cell text to its parse and is shared across chunks (tag cells repeat a lot); it is
    emptied before it would grow past ``_TAG_CACHE_ROWS`` entries.
    """
    uniques = pd.unique(cells)
    if len(cache) + len(uniques) > _TAG_CACHE_ROWS:
        cache.clear()
    for text in uniques:
        if text not in cache:
            try:
                ids = parse_tag_list(text)
            except ValueError:
                ids = None
            cache[text] = None if ids is not None and any(i >= size for i in ids) else ids
    rows = [cache[text] for text in cells]
    valid = np.fromiter((ids is not None for ids in rows), dtype=bool, count=len(rows))
    return rows, valid


def _global_codes(values: np.ndarray, index: dict) -> np.ndarray:
    """Codes of ``values`` in ``index`` (value -> code, grown with values not seen before)."""
    codes, uniques = pd.factorize(values)
    mapping = np.fromiter((index.setdefault(u, len(index)) for u in uniques), dtype=np.int32, count=len(uniques))
    return mapping[codes]


def _sorted_categorical(codes: np.ndarray, index: dict) -> pd.Categorical:
    """Categorical of ``codes`` (into ``index``'s values) whose categories are sorted, so the column sorts
    and groups in the same order as the strings themselves."""
    names = np.empty(len(index), dtype=object)
    names[:] = list(index)
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return pd.Categorical.from_codes(rank[codes], categories=pd.Index(names[order]))


class _EgoClipChunks:
    """Accumulates the kept rows of egoclip.csv chunks in compact form, and what was skipped."""

    def __init__(self, num_verbs: int, num_nouns: int):
        self.num_verbs, self.num_nouns = num_verbs, num_nouns
        self.rows_read = 0
        self.skipped = dict.fromkeys(("non-numeric time", "clip_end < clip_start", "bad tags", "empty video_uid"), 0)
        self.first_skipped_rows: list[int] = []  # parsed-row numbers of the first few skipped rows
        self.tag_cache: tuple[dict, dict] = ({}, {})
        self.uid_index: dict[str, int] = {}
        self.source_index: dict[str, int] = {}
        self.parts: dict[str, list] = {name: [] for name in (
            "video_uid", "narration_source", "clip_text", "video_dur", "narration_ind", *TIME_COLUMNS,
            "verb_ids", "noun_ids")}

    def add(self, chunk: pd.DataFrame) -> None:
        times = {c: pd.to_numeric(chunk[c], errors="coerce").to_numpy(dtype=np.float64) for c in TIME_COLUMNS}
        finite = np.logical_and.reduce([np.isfinite(t) for t in times.values()])
        ordered = finite & (times["clip_end"] >= times["clip_start"])
        verbs, verb_ok = _parse_tag_column(chunk["tag_verb"], self.num_verbs, self.tag_cache[0])
        nouns, noun_ok = _parse_tag_column(chunk["tag_noun"], self.num_nouns, self.tag_cache[1])
        has_uid = chunk["video_uid"].str.len().to_numpy() > 0
        tags_ok = verb_ok & noun_ok
        self.skipped["non-numeric time"] += int((~finite).sum())
        self.skipped["clip_end < clip_start"] += int((finite & ~ordered).sum())
        self.skipped["bad tags"] += int((ordered & ~tags_ok).sum())
        self.skipped["empty video_uid"] += int((ordered & tags_ok & ~has_uid).sum())
        keep = ordered & tags_ok & has_uid
        if len(self.first_skipped_rows) < 5:
            self.first_skipped_rows += (self.rows_read + np.flatnonzero(~keep)[:5]).tolist()
        self.rows_read += len(chunk)
        rows = np.flatnonzero(keep)
        if not len(rows):
            return
        parts = self.parts
        parts["video_uid"].append(_global_codes(chunk["video_uid"].to_numpy(dtype=object)[rows], self.uid_index))
        parts["narration_source"].append(
            _global_codes(chunk["narration_source"].to_numpy(dtype=object)[rows], self.source_index))
        parts["clip_text"].append(PackedStrings.from_strings(chunk["clip_text"].to_numpy(dtype=object)[rows]))
        for column in ("video_dur", "narration_ind"):
            parts[column].append(pd.to_numeric(chunk[column].iloc[rows], errors="coerce").to_numpy())
        for column, values in times.items():
            parts[column].append(values[rows])
        parts["verb_ids"].append(TagLists([verbs[r] for r in rows]))
        parts["noun_ids"].append(TagLists([nouns[r] for r in rows]))

    @property
    def rows_kept(self) -> int:
        return sum(len(p) for p in self.parts["clip_text"])

    def table(self, skipped: dict[str, int]) -> EgoClipTable:
        """The kept rows as one table; the parts are released as they are joined."""
        parts, columns = self.parts, {}
        columns["video_uid"] = _sorted_categorical(np.concatenate(parts.pop("video_uid")), self.uid_index)
        columns["narration_source"] = _sorted_categorical(np.concatenate(parts.pop("narration_source")),
                                                          self.source_index)
        columns["clip_text"] = PackedStrings._concat_same_type(parts.pop("clip_text"))
        for column in ("video_dur", "narration_ind", *TIME_COLUMNS):
            columns[column] = np.concatenate(parts.pop(column))
        verb_ids, noun_ids = TagLists.concatenate(parts.pop("verb_ids")), TagLists.concatenate(parts.pop("noun_ids"))
        return EgoClipTable(frame=pd.DataFrame(columns, copy=False), verb_ids=verb_ids, noun_ids=noun_ids,
                            skipped=skipped)


def load_egoclip(path: str, num_verbs: int = EGO4D_NUM_VERBS, num_nouns: int = EGO4D_NUM_NOUNS, *,
                 chunk_rows: int = CHUNK_ROWS) -> EgoClipTable:
    """Read a TAB-separated ``egoclip.csv``, keeping only rows that can be trained on.

    Skipped and counted (one summary warning): lines with too many fields, non-numeric or non-finite
    times, ``clip_end < clip_start``, tag cells that are not lists of ids within the taxonomy.
    Raises ValueError naming the file when it is empty, a column is missing or no row survives.

    The file is parsed ``chunk_rows`` rows at a time (every cell as text, as before, so malformed values
    are counted rather than raised; ``usecols`` is not used because it stops pandas from flagging lines
    with too many fields) and each chunk's kept rows are stored compactly at once. The table's frame has
    columns ``video_uid`` and ``narration_source`` (categorical, categories sorted), ``clip_text``
    (:class:`PackedStrings`), ``video_dur``, ``narration_ind`` (numeric) and ``narration_time``,
    ``clip_start``, ``clip_end`` (float64, exact to the file's decimals).
    """
    chunks = _EgoClipChunks(num_verbs, num_nouns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            reader = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, on_bad_lines="warn",
                                 chunksize=chunk_rows)
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path}: file is empty (not even a header line of the EgoClip columns)") from None
        with reader:
            for chunk in reader:
                missing = [c for c in EGOCLIP_COLUMNS if c not in chunk.columns]
                if missing:
                    raise ValueError(f"{path}: missing EgoClip columns {missing}; found {list(chunk.columns)} "
                                     "(the file must be TAB-separated)")
                chunks.add(chunk)
    bad_lines = []
    for w in caught:
        if issubclass(w.category, pd.errors.ParserWarning):
            bad_lines.extend(int(n) for n in _SKIPPED_LINE.findall(str(w.message)))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    skipped = {"malformed line": len(bad_lines), **chunks.skipped}
    skipped = {reason: n for reason, n in skipped.items() if n}
    if skipped:
        first_bad = sorted(bad_lines[:5] + [_file_line(r, bad_lines) for r in chunks.first_skipped_rows[:5]])[:5]
        logger.warning("%s: skipped %d of %d rows (%s); first skipped lines: %s", path,
                       sum(skipped.values()), chunks.rows_read + len(bad_lines),
                       ", ".join(f"{n} {reason}" for reason, n in skipped.items()), first_bad)
    if not chunks.rows_kept:
        raise ValueError(f"{path}: no valid EgoClip rows (skipped: {skipped or 'file is empty'})")
    return chunks.table(skipped)


@dataclass(frozen=True)
class ClipRow:
    """One clip: an EgoClip row or an EgoMCQ query/choice; times in seconds, ``video_dur`` when known."""
    video_uid: str
    clip_start: float
    clip_end: float
    narration_time: float
    clip_text: str
    video_dur: float | None = None


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
    """Read ``egomcq.json`` (``{"0": {"query", "choices", "answer", "types"}, ...}``) ordered by key; every
    item has exactly the 5 choices ``"0"``..``"4"`` (batches stack them).

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
        if not isinstance(choices, dict) or sorted(choices) != list(MCQ_CHOICE_KEYS):
            keys = sorted(choices) if isinstance(choices, dict) else type(choices).__name__
            raise ValueError(f"{where}: 'choices' must hold {len(MCQ_CHOICE_KEYS)} clips keyed "
                             f"{', '.join(MCQ_CHOICE_KEYS)}; got {keys}")
        ordered = [choices[k] for k in MCQ_CHOICE_KEYS]
        answer, mcq_type = entry["answer"], entry["types"]
        if not isinstance(answer, int) or not 0 <= answer < len(ordered):
            raise ValueError(f"{where}: answer {answer!r} is not a choice index in [0, {len(ordered)})")
        if mcq_type not in (1, 2):
            raise ValueError(f"{where}: types must be 1 (inter-video) or 2 (intra-video), got {mcq_type!r}")
        items.append(MCQItem(key=str(key), query=_clip_row(entry["query"], f"{where} query"),
                             choices=tuple(_clip_row(c, f"{where} choice {i}") for i, c in enumerate(ordered)),
                             answer=answer, type=mcq_type))
    return items
