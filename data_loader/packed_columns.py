"""Compact pandas columns for the EgoClip table: no Python object per row.

:class:`PackedStrings` keeps strings in one UTF-8 byte buffer with int64 offsets (a pandas extension
array, dtype ``'packed_str'``); :class:`TagLists` keeps variable-length class-id lists flat. Forked
DataLoader workers read both without copying their pages (reading a Python object updates its reference
count, which makes the OS copy the page it lives on).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionArray, ExtensionDtype, register_extension_dtype
from pandas.api.indexers import check_array_indexer
from pandas.api.types import is_integer, pandas_dtype

try:  # pandas' own ``.str`` methods for object arrays; internal, so optional
    from pandas.core.strings.object_array import ObjectStringArrayMixin as _StrMethods
except ImportError:  # pragma: no cover - a pandas that moved it: ``.str`` needs ``.astype(str)`` first
    class _StrMethods:
        pass

# PackedStrings gathers (take, sort, masks) copy bytes this many rows at a time (bounds the index arrays).
_GATHER_ROWS = 16_384


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
