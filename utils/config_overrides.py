"""Command-line overrides of a config: ``--lr``, ``--bs``, ``--cw`` and ``--set key.path=JSON``."""
from __future__ import annotations

import argparse
import copy
import json

from utils.config_schema import ConfigError


def parse_value(text: str):
    """JSON-typed CLI value: ``3`` → int, ``1e-5`` → float, ``[4,8]`` → list, ``true`` → bool, else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_by_path(config: dict, path: str, value) -> None:
    """Set ``a.b.0.c`` in place. A list met without an index applies the rest of the path to every element."""
    _set(config, path.split("."), value, path)


def _set(node, keys: list[str], value, path: str) -> None:
    key, rest = keys[0], keys[1:]
    if isinstance(node, list):
        if key.lstrip("-").isdigit():
            idx = int(key)
            if not -len(node) <= idx < len(node):
                raise ConfigError(f"--set {path}: index {idx} out of range (list has {len(node)} entries)")
            if rest:
                _set(node[idx], rest, value, path)
            else:
                node[idx] = value
        else:
            for element in node:
                _set(element, keys, value, path)
        return
    if not isinstance(node, dict):
        raise ConfigError(f"--set {path}: '{key}' is inside a {type(node).__name__}, not an object")
    if rest:
        node.setdefault(key, {})
        _set(node[key], rest, value, path)
    else:
        node[key] = value


# Named CLI shortcuts → config path.
NAMED_OVERRIDES = {
    "lr": "optimizer.args.lr",
    "bs": "data_loader.args.batch_size",
    "cw": "loss.args.consistency_weight",
}


def apply_overrides(config: dict, args: argparse.Namespace) -> dict:
    """A copy of ``config`` with ``--lr/--bs/--cw`` and every ``--set key=value`` applied, in that order."""
    config = copy.deepcopy(config)
    for flag, path in NAMED_OVERRIDES.items():
        value = getattr(args, flag, None)
        if value is not None:
            set_by_path(config, path, value)
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key.path=value, got '{item}'")
        path, text = item.split("=", 1)
        set_by_path(config, path.strip(), parse_value(text))
    return config


# ----------------------------------------------------------------------------- parser
