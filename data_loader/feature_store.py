"""Precomputed per-video features: one ``[T, D]`` array per key, from an HDF5 file or a folder of files.

Two backends behind one interface (``keys()``, ``read(key, start, stop)``, ``num_rows(key)``):

* :class:`H5FeatureStore` — one HDF5 dataset per key (Ego4D's ``features.hdf5`` layout), the key list in a
  side-car ``<file>.keys.json`` (listing a large HDF5 file's keys is slow). The file is opened lazily in each
  process, so a store built before DataLoader workers fork is safe to use in them.
* :class:`FolderFeatureStore` — one ``<key>.pt`` (a tensor, Ego4D's released features) or ``<key>.npy`` file
  per key.

:func:`feature_slice` turns a time window in seconds into the rows that cover it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import torch

KEYS_SUFFIX = ".keys.json"


class FeatureStore(Protocol):
    def keys(self) -> list[str]: ...
    def num_rows(self, key: str) -> int: ...
    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray: ...


def feature_slice(t1: float, t2: float, features_per_second: float, num_rows: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` covering seconds ``[t1, t2]`` of a ``num_rows``-row feature array.

    Row ``r`` starts at ``r / features_per_second`` s. ``start = min(max(0, ⌊t1·fps⌋), num_rows − 1)`` and the
    last row is ``min(⌊t2·fps⌋, num_rows − 1)``, so a window always covers at least one row and a window past
    the end clamps to the last row: ``feature_slice(0, 4, 1.875, 100) == (0, 8)``.
    """
    if num_rows < 1:
        raise ValueError(f"feature_slice: the feature array has no rows (num_rows={num_rows})")
    start = min(max(0, math.floor(t1 * features_per_second)), num_rows - 1)
    last = min(math.floor(t2 * features_per_second), num_rows - 1)
    return start, max(last, start) + 1


class FeatureStoreKeyError(KeyError):
    """A key that the store does not hold; the message names the store."""

    def __str__(self):
        return str(self.args[0])


class _KeyedStore:
    """What both backends share: the key list (``_keys``), membership and ``store[key]`` = every row."""

    _keys: list[str]
    _key_set: set[str]

    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._key_set

    def __getitem__(self, key: str) -> np.ndarray:
        return self.read(key)


class H5FeatureStore(_KeyedStore):
    """Features in one HDF5 file, one float dataset ``[T, D]`` per key.

    Args:
        path: the ``.hdf5`` file; its key list is read from ``<path>.keys.json`` when present (written by
            :class:`H5FeatureWriter`), else from the file itself.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"feature store {self.path} does not exist")
        self._file, self._pid = None, None
        keys_file = Path(f"{self.path}{KEYS_SUFFIX}")
        self._keys = json.loads(keys_file.read_text()) if keys_file.is_file() else list(self._h5())
        self._key_set = set(self._keys)

    def _h5(self):
        import h5py
        if self._file is None or self._pid != os.getpid():     # a forked worker opens its own handle
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}

    def _dataset(self, key: str):
        if key not in self._key_set:
            raise FeatureStoreKeyError(f"feature store {self.path} has no key '{key}'")
        return self._h5()[key]

    def num_rows(self, key: str) -> int:
        return int(self._dataset(key).shape[0])

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of ``key`` as float32 ``[rows, D]`` (only those rows are read from disk)."""
        return np.asarray(self._dataset(key)[start:stop], dtype=np.float32)


class FolderFeatureStore(_KeyedStore):
    """Features as one file per key in ``root``: ``<key>.pt`` (a tensor) or ``<key>.npy``.

    ``.npy`` files are memory-mapped, so ``read`` of a few rows does not load the whole array; a ``.pt`` file is
    loaded whole (``weights_only``) on each read.
    """

    def __init__(self, root: str | os.PathLike, suffix: str = ".pt"):
        if suffix not in (".pt", ".npy"):
            raise ValueError(f"FolderFeatureStore: suffix must be '.pt' or '.npy', not {suffix!r}")
        self.root, self.suffix = Path(root), suffix
        if not self.root.is_dir():
            raise FileNotFoundError(f"feature folder {self.root} does not exist")
        self._keys = sorted(p.name[:-len(suffix)] for p in self.root.iterdir() if p.name.endswith(suffix))
        self._key_set = set(self._keys)

    def _load(self, key: str):
        if key not in self._key_set:
            raise FeatureStoreKeyError(f"feature folder {self.root} has no file '{key}{self.suffix}'")
        path = self.root / f"{key}{self.suffix}"
        try:
            if self.suffix == ".npy":
                array = np.load(path, mmap_mode="r")
            else:
                array = torch.load(path, map_location="cpu", weights_only=True)
                array = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        except Exception as err:
            raise ValueError(f"cannot read features from {path}: {err}") from err
        if array.ndim != 2:
            raise ValueError(f"{path}: features must be [T, D], got shape {tuple(array.shape)}")
        return array

    def num_rows(self, key: str) -> int:
        return int(self._load(key).shape[0])

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        return np.asarray(self._load(key)[start:stop], dtype=np.float32)


def open_feature_store(path: str | os.PathLike, suffix: str = ".pt") -> FeatureStore:
    """An HDF5 file (``.h5`` / ``.hdf5``) or a folder of ``suffix`` files."""
    path = Path(path)
    if path.suffix in (".h5", ".hdf5"):
        return H5FeatureStore(path)
    return FolderFeatureStore(path, suffix)


class H5FeatureWriter:
    """Writes an :class:`H5FeatureStore`, resumably: keys already in the file are kept and reported by ``in``.

    Each ``write`` is flushed, and the side-car key list is rewritten atomically on ``close`` (and every
    ``sync_every`` writes), so a preempted writer loses at most the key it was writing::

        with H5FeatureWriter("features.hdf5") as out:
            for uid in uids:
                if uid not in out:
                    out.write(uid, extract(uid))
    """

    def __init__(self, path: str | os.PathLike, sync_every: int = 100):
        import h5py
        self.path, self.sync_every = Path(path), sync_every
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.path, "a")
        self._keys = [key for key in self._file if self._complete(key)]
        self._key_set, self._unsynced = set(self._keys), 0

    def _complete(self, key: str) -> bool:
        if self._file[key].attrs.get("complete", False):
            return True
        del self._file[key]              # left half-written by an interrupted run: written again
        return False

    def __contains__(self, key: str) -> bool:
        return key in self._key_set

    def write(self, key: str, features) -> None:
        """Store ``features`` ``[T, D]`` (array or tensor) as float32 under ``key``."""
        array = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        if array.ndim != 2:
            raise ValueError(f"{self.path}: features for '{key}' must be [T, D], got shape {array.shape}")
        if key in self._key_set:
            raise KeyError(f"{self.path} already holds '{key}'")
        dataset = self._file.create_dataset(key, data=array.astype(np.float32, copy=False))
        dataset.attrs["complete"] = True
        self._file.flush()
        self._keys.append(key)
        self._key_set.add(key)
        self._unsynced += 1
        if self._unsynced >= self.sync_every:
            self.sync()

    def sync(self) -> None:
        """Rewrite the side-car key list (atomically)."""
        keys_file = Path(f"{self.path}{KEYS_SUFFIX}")
        tmp = keys_file.with_name(keys_file.name + ".tmp")
        tmp.write_text(json.dumps(self._keys))
        os.replace(tmp, keys_file)
        self._unsynced = 0

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_feature_store(items: Iterable[tuple[str, np.ndarray]], path: str | os.PathLike) -> H5FeatureStore:
    """Write ``(key, [T, D] array)`` pairs to an HDF5 store at ``path`` and open it."""
    with H5FeatureWriter(path) as out:
        for key, features in items:
            out.write(key, features)
    return H5FeatureStore(path)
