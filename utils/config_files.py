"""Reading config files: JSON objects with ``_base_`` inheritance.

``"_base_": "../_base_/models/tiny.json"`` (or a list of such paths, relative to the including file): the bases
are read, each with its own bases, and merged in order; the file's own keys are merged on top. Objects merge
key by key at every depth; any other value, lists included, replaces the inherited one. The result has no
``_base_`` key.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from utils.config_schema import ConfigError

BASE_KEY = "_base_"


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` updated with ``override``: nested dicts merged recursively, other values replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``; ConfigError naming the file when it is missing, invalid or not an object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    return data


def load_config_file(path: str | os.PathLike) -> dict:
    """The config in ``path`` with its ``_base_`` files resolved and merged (see the module docstring)."""
    return _load(str(path), ())


def _load(path: str, chain: tuple[str, ...]) -> dict:
    own = read_json_object(path)
    bases = own.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: '{BASE_KEY}' must be a path or a list of paths, got {bases!r}")
    chain = chain + (os.path.realpath(path),)
    merged: dict = {}
    for base in bases:
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
        if os.path.realpath(base_path) in chain:
            cycle = " -> ".join([*(os.path.relpath(p) for p in chain), os.path.relpath(base_path)])
            raise ConfigError(f"{path}: '{BASE_KEY}' cycle: {cycle}")
        if not Path(base_path).is_file():
            raise ConfigError(f"{path}: '{BASE_KEY}' file '{base}' not found (looked for {base_path})")
        merged = deep_merge(merged, _load(base_path, chain))
    return deep_merge(merged, own)
