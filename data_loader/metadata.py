"""EgoClip / EgoMCQ metadata: parsing and validation of ``egoclip.csv``, ``egomcq.json``, ``taxonomy.json``.

Formats are EgoVLP's. ``egoclip.csv`` is TAB-separated with the columns of
:data:`utils.egoclip_format.EGOCLIP_COLUMNS` (times in seconds); its ``tag_verb`` / ``tag_noun`` cells hold
the text of a Python list of class ids (``"[192, 115]"``) and are parsed without ``eval``. ``egomcq.json``
and ``taxonomy.json`` are described at :func:`load_egomcq` and :func:`load_taxonomy`.

The EgoClip table (3.8 M rows in Ego4D) is kept without a Python object per row: times are float64
columns, ``video_uid``/``narration_source`` categorical, ``clip_text`` a :class:`PackedStrings` column
(one UTF-8 buffer + offsets) and the tags :class:`TagLists`. Every rank holds it once per process, and
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
from pandas.api.extensions import ExtensionArray, ExtensionDtype, register_extension_dtype
from pandas.api.indexers import check_array_indexer
from pandas.api.types import is_integer, pandas_dtype

from utils.egoclip_format import EGOCLIP_COLUMNS

try:  # pandas' own ``.str`` methods for object arrays; internal, so optional
    from pandas.core.strings.object_array import ObjectStringArrayMixin as _StrMethods
except ImportError:  # pragma: no cover - a pandas that moved it: ``.str`` needs ``.astype(str)`` first
    class _StrMethods:
        pass

logger = logging.getLogger(__name__)

TIME_COLUMNS = ("narration_time", "clip_start", "clip_end")
# Ego4D taxonomy sizes, used when the dataset ships no taxonomy.json.
EGO4D_NUM_VERBS = 118
EGO4D_NUM_NOUNS = 582

# egoclip.csv is parsed this many rows at a time, so only one chunk's cells exist as Python strings at once.
CHUNK_ROWS = 16_384
# Parsed tag cells remembered per column across chunks (cleared when full: bounds the loader's peak memory).
_TAG_CACHE_ROWS = 32_768
# PackedStrings gathers (take, sort, masks) copy bytes this many rows at a time (bounds the index arrays).
_GATHER_ROWS = 16_384

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

    @classmethod
    def concatenate(cls, parts) -> TagLists:
        """The rows of ``parts`` one after another."""
        out = cls([])
        lengths = [np.diff(p.offsets) for p in parts]
        out.offsets = np.zeros(1 + sum(len(p) for p in parts), dtype=np.int64)
        if lengths:
            np.cumsum(np.concatenate(lengths), out=out.offsets[1:])
            out.values = np.concatenate([p.values[p.offsets[0]:p.offsets[-1]] for p in parts]).astype(np.int32)
        return out


@register_extension_dtype
class PackedStringDtype(ExtensionDtype):
    """pandas dtype ``'packed_str'`` of a :class:`PackedStrings` column."""
    name = "packed_str"
    type = str
    kind = "O"

    @classmethod
    def construct_array_type(cls) -> type[PackedStrings]:
        return PackedStrings


def _is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and value != value)


class PackedStrings(_StrMethods, ExtensionArray):
    """Read-only strings in one UTF-8 byte buffer with int64 offsets: no Python object per row.

    Row ``i`` is ``buffer[offsets[i]:offsets[i + 1]]`` decoded; rows where ``na`` is True are missing
    (``NaN``). A pandas column of it (dtype ``'packed_str'``) costs its text bytes plus 8 per row, pickles
    as two arrays, and forked processes read it without copying its pages. Indexing a row decodes a fresh
    ``str``; masks, ``take``/``sort_values``, ``==``, ``tolist``, ``astype(object | str)``, ``.str``
    methods and concatenation behave as for a string column; assignment is not supported.
    """

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray, na: np.ndarray | None = None):
        self._buffer = np.asarray(buffer, dtype=np.uint8)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        if self._offsets.ndim != 1 or len(self._offsets) == 0:
            raise ValueError("PackedStrings offsets must be 1-D with one more entry than there are strings")
        self._na = None if na is None or not np.any(na) else np.asarray(na, dtype=bool)

    @classmethod
    def from_strings(cls, strings) -> PackedStrings:
        """From an iterable of ``str``; None / NaN / ``pd.NA`` become missing rows."""
        encoded, na = [], []
        for value in strings:
            if isinstance(value, str):
                encoded.append(value.encode("utf-8", "surrogatepass"))
                na.append(False)
            elif _is_missing(value):
                encoded.append(b"")
                na.append(True)
            else:
                raise TypeError(f"PackedStrings holds text, got {type(value).__name__}: {value!r}")
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets, np.array(na, dtype=bool))

    # -- pandas ExtensionArray interface
    @classmethod
    def _from_sequence(cls, scalars, *, dtype=None, copy: bool = False) -> PackedStrings:
        if isinstance(scalars, PackedStrings):
            return scalars.copy() if copy else scalars
        return cls.from_strings(scalars)

    @classmethod
    def _from_sequence_of_strings(cls, strings, *, dtype=None, copy: bool = False) -> PackedStrings:
        return cls.from_strings(strings)

    @classmethod
    def _from_factorized(cls, values, original) -> PackedStrings:
        return cls.from_strings(values)

    @property
    def dtype(self) -> PackedStringDtype:
        return PackedStringDtype()

    @property
    def nbytes(self) -> int:
        return int(self._offsets[-1] - self._offsets[0]) + self._offsets.nbytes + (
            0 if self._na is None else self._na.nbytes)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _decode(self, lo: int, hi: int) -> list:
        """Rows ``lo..hi-1`` as a list of ``str`` (missing rows: NaN)."""
        start = int(self._offsets[lo])
        data = self._buffer[start:int(self._offsets[hi])].tobytes()
        bounds = (self._offsets[lo:hi + 1] - start).tolist()
        values = [data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(bounds[:-1], bounds[1:])]
        if self._na is not None:
            for i in np.flatnonzero(self._na[lo:hi]):
                values[i] = np.nan
        return values

    def __getitem__(self, item):
        if is_integer(item):
            i = int(item) + (len(self) if item < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"index {item} is out of bounds for {len(self)} strings")
            if self._na is not None and self._na[i]:
                return np.nan
            return self._buffer[self._offsets[i]:self._offsets[i + 1]].tobytes().decode("utf-8", "surrogatepass")
        if isinstance(item, tuple) and len(item) == 1:
            item = item[0]
        if item is Ellipsis:
            return self
        if isinstance(item, slice):
            if item.step in (None, 1):  # a view on the same buffer
                start, stop, _ = item.indices(len(self))
                stop = max(start, stop)
                return PackedStrings(self._buffer, self._offsets[start:stop + 1],
                                     None if self._na is None else self._na[start:stop])
            return self._gather(np.arange(len(self))[item])
        index = check_array_indexer(self, item)
        if index.dtype == bool:
            return self._gather(np.flatnonzero(index))
        return self.take(index)

    def _gather(self, index: np.ndarray, missing: np.ndarray | None = None) -> PackedStrings:
        """Rows ``index`` (in range) copied into a new buffer; ``missing`` rows become NaN."""
        index = np.asarray(index, dtype=np.int64)
        starts = self._offsets[index]
        lengths = self._offsets[index + 1] - starts
        na = None if self._na is None else self._na[index]
        if missing is not None:
            lengths[missing] = 0
            na = missing if na is None else na | missing
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        buffer = np.empty(int(offsets[-1]), dtype=np.uint8)
        for lo in range(0, len(index), _GATHER_ROWS):
            hi = min(lo + _GATHER_ROWS, len(index))
            first, last = int(offsets[lo]), int(offsets[hi])
            if last > first:
                shift = np.repeat(starts[lo:hi] - offsets[lo:hi], lengths[lo:hi])
                buffer[first:last] = self._buffer[np.arange(first, last) + shift]
        return PackedStrings(buffer, offsets, na)

    def take(self, indices, *, allow_fill: bool = False, fill_value=None) -> PackedStrings:
        index = np.asarray(indices, dtype=np.int64)
        n = len(self)
        missing = None
        if allow_fill:
            if (index < -1).any():
                raise ValueError(f"take with allow_fill needs indices >= -1, got {int(index.min())}")
            missing = index == -1
            if not missing.any():
                missing = None
            elif not _is_missing(fill_value):  # a text fill value: rare, done through Python strings
                return PackedStrings.from_strings(fill_value if m else self[int(i)] for i, m in zip(index, missing))
            else:
                index = np.where(missing, 0, index)
        else:
            index = np.where(index < 0, index + n, index)
        checked = index if missing is None else index[~missing]
        if checked.size and (checked.min() < 0 or checked.max() >= n):
            raise IndexError(f"take index out of bounds for {n} strings")
        if n == 0 and missing is not None:  # only fills
            return PackedStrings(np.zeros(0, np.uint8), np.zeros(len(index) + 1, np.int64), missing)
        return self._gather(index, missing)

    def isna(self) -> np.ndarray:
        return np.zeros(len(self), dtype=bool) if self._na is None else self._na.copy()

    def fillna(self, value, limit: int | None = None, copy: bool = True) -> PackedStrings:
        if self._na is None:
            return self.copy() if copy else self
        filled = self._na.copy()
        if limit is not None:
            filled[np.flatnonzero(filled)[limit:]] = False
        values = np.asarray(self, dtype=object)
        values[filled] = value if np.ndim(value) == 0 else np.asarray(value, dtype=object)[filled]
        return PackedStrings.from_strings(values)

    def copy(self) -> PackedStrings:
        """A compact copy (only this array's own bytes)."""
        lo, hi = int(self._offsets[0]), int(self._offsets[-1])
        return PackedStrings(self._buffer[lo:hi].copy(), self._offsets - lo,
                             None if self._na is None else self._na.copy())

    def __reduce__(self):
        compact = self.copy() if self._offsets[0] or len(self._buffer) != self._offsets[-1] else self
        return PackedStrings, (compact._buffer, compact._offsets, compact._na)

    @classmethod
    def _concat_same_type(cls, to_concat) -> PackedStrings:
        buffers = [a._buffer[a._offsets[0]:a._offsets[-1]] for a in to_concat]  # views, no copies
        bases = np.cumsum([0] + [len(b) for b in buffers])
        offsets = [np.zeros(1, np.int64)] + [a._offsets[1:] - a._offsets[0] + base for a, base in zip(to_concat, bases)]
        na = np.concatenate([a.isna() for a in to_concat]) if any(a._na is not None for a in to_concat) else None
        buffer = np.concatenate(buffers) if buffers else np.zeros(0, np.uint8)
        return cls(buffer, np.concatenate(offsets), na)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = np.empty(len(self), dtype=object)
        values[:] = self._decode(0, len(self))
        return values if dtype is None or np.dtype(dtype) == object else values.astype(dtype)

    def __iter__(self):
        for lo in range(0, len(self), _GATHER_ROWS):
            yield from self._decode(lo, min(lo + _GATHER_ROWS, len(self)))

    def __eq__(self, other):
        if isinstance(other, (pd.Series, pd.Index, pd.DataFrame)):
            return NotImplemented
        if isinstance(other, PackedStrings):
            other = np.asarray(other, dtype=object)
        result = np.asarray(np.asarray(self, dtype=object) == other, dtype=bool)
        return result & ~self.isna()

    def astype(self, dtype, copy: bool = True):
        dtype = pandas_dtype(dtype)
        if isinstance(dtype, PackedStringDtype):
            return self.copy() if copy else self
        if dtype == np.dtype(object):
            return np.asarray(self, dtype=object)
        return super().astype(dtype, copy=copy)


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
    Raises ValueError naming the file when a column is missing or no row survives.

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
        with pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, on_bad_lines="warn",
                         chunksize=chunk_rows) as reader:
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
