"""JSON experiment configs: loading, CLI overrides, validation, object construction, run dirs.

A config is a JSON object with the sections below. Sections of the form ``{"type": ..., "args": {...}}``
resolve ``type`` through :data:`SECTION_MODULES` and check ``args`` against the constructor signature of
the class it names, so a typo or a wrong type fails before anything is built, naming the config file.

    {
      "name": "multiscale_egoclip",
      "arch": {"type": "MultiScaleFrozenInTime", "args": {...}},
      "data_loader": {"type": "MultiScaleEgoClipDataLoader", "args": {...}},   # or a list of them
      "valid_data_loader": {...},                                               # optional, dict or list
      "optimizer": {"type": "AdamW", "args": {"lr": 3e-5}},
      "lr_scheduler": {"type": "WarmupCosineSchedule", "args": {...}},          # optional
      "loss": {"type": "MultiScaleEgoNCE", "args": {...}},
      "metrics": ["egomcq_accuracy"],
      "trainer": {"epochs": 10, "save_dir": "saved", ...}
    }
"""
from __future__ import annotations

import argparse
import copy
import difflib
import importlib
import inspect
import json
import os
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

# Where the ``type`` of each typed section is looked up.
SECTION_MODULES = {
    "arch": "model.model",
    "data_loader": "data_loader.data_loader",
    "valid_data_loader": "data_loader.data_loader",
    "optimizer": "torch.optim",
    "lr_scheduler": "trainer.lr_schedule",
    "loss": "model.loss",
}
# Constructor arguments that the code passes itself and a config must not set.
INJECTED_ARGS = {
    "optimizer": {"params"},
    "lr_scheduler": {"optimizer", "total_steps"},
}
# Untyped sections: (expected JSON type, required).
PLAIN_SECTIONS = {"name": (str, True), "metrics": (list, False), "trainer": (dict, True)}
# Typed sections a config must have, by what the run does with it.
REQUIRED_TYPED = {"train": ("arch", "data_loader", "optimizer", "loss"), "eval": ("arch", "valid_data_loader")}
LIST_ALLOWED = {"data_loader", "valid_data_loader"}
TRAINER_OPTIONS = "trainer.options.TrainerOptions"
METRICS_MODULE = "model.metric"


class ConfigError(ValueError):
    """A config that cannot be run; the message names the config file and the key."""


def _closest(key: str, valid) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {sorted(valid)}"


def _import_object(dotted: str):
    module_name, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def resolve_type(section: str, type_name: str):
    """The class a section's ``type`` names, e.g. ``resolve_type('loss', 'MultiScaleEgoNCE')``."""
    module = importlib.import_module(SECTION_MODULES[section])
    obj = getattr(module, type_name, None)
    if obj is None or not callable(obj):
        candidates = [n for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")]
        raise KeyError(f"unknown {section} type '{type_name}' in {module.__name__}{_closest(type_name, candidates)}")
    return obj


# ----------------------------------------------------------------------------- type checking
def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _matches(value, expected) -> bool:
    """Whether a JSON value fits an annotation (int is accepted for float; bool is not an int)."""
    if expected in (inspect.Parameter.empty, Any, None):
        return True
    origin = typing.get_origin(expected)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return any(_matches(value, arg) for arg in typing.get_args(expected))
    if origin is typing.Literal:
        return value in typing.get_args(expected)
    if expected is type(None):
        return value is None
    base = origin or expected
    if base in (list, tuple, typing.Sequence):
        return isinstance(value, (list, tuple))
    if base in (dict, typing.Mapping):
        return isinstance(value, dict)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(base, type):
        return isinstance(value, base)
    return True


def _expected_type(param: inspect.Parameter):
    """The annotation if it is a real type, else the type of the default (None default: anything)."""
    ann = param.annotation
    if isinstance(ann, str):
        ann = inspect.Parameter.empty  # unresolved string annotation
    if ann is not inspect.Parameter.empty:
        return ann
    if param.default is inspect.Parameter.empty or param.default is None:
        return inspect.Parameter.empty
    default_type = type(param.default)
    return list if default_type is tuple else default_type


def _signature_params(obj) -> tuple[dict, bool]:
    """Named parameters of a class constructor (with resolved annotations) and whether it takes **kwargs."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return {}, True
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:
        hints = {}
    params, var_kw = {}, False
    for name, p in sig.parameters.items():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is not p.VAR_POSITIONAL and name != "self":
            params[name] = p.replace(annotation=hints.get(name, p.annotation))
    return params, var_kw


def check_kwargs(kwargs: dict, params: dict, var_kw: bool, where: str, injected=()) -> None:
    """Raise ConfigError for unknown, wrongly typed or missing arguments of one constructor."""
    for key, value in kwargs.items():
        if key in injected:
            raise ConfigError(f"{where}.{key} is set by the code and must not be in the config")
        if key not in params:
            if var_kw:
                continue
            raise ConfigError(f"unknown key '{where}.{key}'{_closest(key, params)}")
        expected = _expected_type(params[key])
        if not _matches(value, expected):
            raise ConfigError(f"wrong type for '{where}.{key}': expected {_type_name(expected)}, "
                              f"got {type(value).__name__} ({value!r})")
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and name not in kwargs and name not in injected:
            raise ConfigError(f"missing required key '{where}.{name}'")


# ----------------------------------------------------------------------------- validation
def validate_config(config: dict, source: str = "<config>", purpose: str = "train") -> None:
    """Check a whole config before anything is built. Raises ConfigError naming ``source`` and the key.

    ``purpose`` ('train' or 'eval') selects the sections that must be present.
    """
    try:
        _validate(config, REQUIRED_TYPED[purpose])
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _validate(config: dict, required_sections) -> None:
    if not isinstance(config, dict):
        raise ConfigError(f"top level must be a JSON object, got {type(config).__name__}")
    valid_top = set(SECTION_MODULES) | set(PLAIN_SECTIONS)
    for key in config:
        if key not in valid_top:
            raise ConfigError(f"unknown key '{key}'{_closest(key, valid_top)}")
    for key, (json_type, required) in PLAIN_SECTIONS.items():
        if key not in config:
            if required:
                raise ConfigError(f"missing required key '{key}'")
        elif not isinstance(config[key], json_type):
            raise ConfigError(f"wrong type for '{key}': expected {json_type.__name__}, got {type(config[key]).__name__}")
    for section in required_sections:
        if section not in config:
            raise ConfigError(f"missing required key '{section}'")
    for section in SECTION_MODULES:
        if section not in config:
            continue
        value = config[section]
        if isinstance(value, list) and section in LIST_ALLOWED:
            if not value:
                raise ConfigError(f"'{section}' is an empty list")
            for i, entry in enumerate(value):
                _validate_typed(section, entry, f"{section}[{i}]")
        else:
            _validate_typed(section, value, section)
    params, var_kw = _signature_params(_import_object(TRAINER_OPTIONS))
    check_kwargs(config["trainer"], params, var_kw, "trainer")
    metric_module = importlib.import_module(METRICS_MODULE)
    for i, name in enumerate(config.get("metrics", [])):
        if not callable(getattr(metric_module, str(name), None)):
            names = [n for n, v in vars(metric_module).items() if inspect.isfunction(v) and not n.startswith("_")]
            raise ConfigError(f"unknown metric 'metrics[{i}]' = {name!r}{_closest(str(name), names)}")


def _validate_typed(section: str, entry, where: str) -> None:
    if not isinstance(entry, dict):
        raise ConfigError(f"wrong type for '{where}': expected object with 'type' and 'args', got {type(entry).__name__}")
    for key in entry:
        if key not in ("type", "args"):
            raise ConfigError(f"unknown key '{where}.{key}'{_closest(key, ('type', 'args'))}")
    if not isinstance(entry.get("type"), str):
        raise ConfigError(f"missing required key '{where}.type' (a string)")
    args = entry.get("args", {})
    if not isinstance(args, dict):
        raise ConfigError(f"wrong type for '{where}.args': expected object, got {type(args).__name__}")
    try:
        cls = resolve_type(section, entry["type"])
    except KeyError as err:
        raise ConfigError(f"'{where}.type': {err.args[0]}") from None
    params, var_kw = _signature_params(cls)
    check_kwargs(args, params, var_kw, f"{where}.args", INJECTED_ARGS.get(section, ()))


# ----------------------------------------------------------------------------- overrides
def parse_value(text: str):
    """JSON-typed CLI value: ``3`` → int, ``1e-5`` → float, ``[4,8]`` → list, ``true`` → bool, else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_by_path(config: dict, path: str, value) -> None:
    """Set ``a.b.0.c`` in place. A list met without an index applies the rest of the path to every element."""
    keys = path.split(".")
    _set(config, keys, value, path)


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
    """A copy of ``config`` with ``--lr/--bs/--cw`` and every ``--set key=value`` applied."""
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
def build_arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="path to a JSON config")
    parser.add_argument("-r", "--resume", default=None, help="checkpoint to resume from (or evaluate)")
    parser.add_argument("-d", "--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda'")
    parser.add_argument("--lr", type=float, default=None, help="optimizer learning rate")
    parser.add_argument("--bs", type=int, default=None, help="training batch size per process")
    parser.add_argument("--cw", type=float, default=None, help="temporal consistency weight")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override any config value (JSON-typed); repeatable")
    parser.add_argument("--run-id", default=None,
                        help="run directory name (default: a timestamp); reuse one to auto-resume, e.g. a SLURM job id")
    return parser


class ConfigParser:
    """A validated config plus the CLI options of one run.

    Attributes: ``config`` (dict), ``source`` (config file path), ``resume`` (checkpoint path or None),
    ``device`` (str), ``run_id`` (str or None), ``run_dir`` (Path, after :meth:`make_run_dir`).
    """

    def __init__(self, config: dict, source: str = "<config>", resume: str | None = None,
                 device: str = "auto", run_id: str | None = None, purpose: str = "train"):
        validate_config(config, source, purpose)
        self.config, self.source, self.resume, self.device, self.run_id = config, source, resume, device, run_id
        self.run_dir: Path | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike, overrides: argparse.Namespace | None = None, **kwargs) -> "ConfigParser":
        path = str(path)
        try:
            with open(path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
        if overrides is not None:
            try:
                raw = apply_overrides(raw, overrides)
            except ConfigError as err:
                raise ConfigError(f"{path}: {err}") from None
        return cls(raw, source=path, **kwargs)

    @classmethod
    def from_args(cls, argv=None, description: str = "Multi-scale EgoVLP", purpose: str = "train") -> "ConfigParser":
        args = build_arg_parser(description).parse_args(argv)
        return cls.from_file(args.config, overrides=args, resume=args.resume, device=args.device,
                             run_id=args.run_id, purpose=purpose)

    # -- access
    def __getitem__(self, key):
        return self.config[key]

    def get(self, key, default=None):
        return self.config.get(key, default)

    @property
    def trainer_options(self):
        """The ``trainer`` section as a TrainerOptions dataclass."""
        return _import_object(TRAINER_OPTIONS)(**self.config["trainer"])

    def entries(self, section: str) -> list[dict]:
        """A typed section as a list of ``{type, args}`` (a single dict becomes a one-element list)."""
        value = self.config.get(section)
        if value is None:
            return []
        return list(value) if isinstance(value, list) else [value]

    def init_obj(self, section: str, *args, entry: dict | None = None, **kwargs):
        """Build the object a typed section names: ``cls(*args, **config_args, **kwargs)``."""
        entry = entry if entry is not None else self.config[section]
        cls = resolve_type(section, entry["type"])
        config_args = dict(entry.get("args", {}))
        clash = set(config_args) & set(kwargs)
        if clash:
            raise ConfigError(f"{self.source}: {section}.args {sorted(clash)} are also set by the code")
        return cls(*args, **config_args, **kwargs)

    def init_all(self, section: str, *args, **kwargs) -> list:
        """Build every entry of a section that may be a list (e.g. several training loaders)."""
        return [self.init_obj(section, *args, entry=e, **kwargs) for e in self.entries(section)]

    # -- run directory
    def make_run_dir(self, create: bool = True) -> Path:
        """``save_dir/<name>/<run_id or timestamp>``; a new timestamped dir never reuses an existing one.

        With ``create=False`` (non-main ranks) only the path is computed; the caller broadcasts rank 0's.
        """
        base = Path(self.config["trainer"].get("save_dir", "saved")) / self.config["name"]
        if self.run_id is not None:
            run_dir = base / self.run_id
            if create:
                run_dir.mkdir(parents=True, exist_ok=True)
        else:
            stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
            run_dir = base / stamp
            suffix = 0
            while create:
                try:
                    run_dir.mkdir(parents=True, exist_ok=False)
                    break
                except FileExistsError:
                    suffix += 1
                    run_dir = base / f"{stamp}_{suffix}"
        self.run_dir = run_dir
        if create:
            self.save(run_dir / "config.json")
        return run_dir

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config (after overrides) as JSON, atomically."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.config, indent=2) + "\n")
        os.replace(tmp, path)

