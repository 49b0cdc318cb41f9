"""JSON experiment configs: loading (with ``_base_`` inheritance), CLI overrides, validation, building, run dirs.

A config is a JSON object with the sections below. A typed section ``{"type": ..., "args": {...}}`` resolves
``type`` through its registry in :mod:`utils.registry` (``optimizer``: an attribute of ``torch.optim``) and
checks ``args`` against the constructor's signature at every depth (see :mod:`utils.config_schema`), so a typo
or a wrong type fails before anything is built, naming the config file and the dotted key.

    {
      "_base_": ["../_base_/models/tiny.json"],                                 # optional, see utils.config_files
      "name": "multiscale_egoclip",
      "task": {"type": "EgoClipPretraining", "args": {...}},                   # optional (this is the default)
      "arch": {"type": "MultiScaleFrozenInTime", "args": {...}},               # MODELS
      "data_loader": {"type": "MultiScaleEgoClipDataLoader", "args": {...}},   # LOADERS; or a list of them
      "valid_data_loader": {...},                                               # optional, dict or list
      "optimizer": {"type": "AdamW", "args": {"lr": 3e-5}},                     # torch.optim
      "lr_scheduler": {"type": "WarmupDecaySchedule", "args": {...}},          # LR_SCHEDULES, optional
      "loss": {"type": "MultiScaleEgoNCE", "args": {...}},                     # LOSSES
      "evaluators": [{"type": "EgoMCQ", "args": {}}],                          # EVALUATORS, optional list
      "metrics": ["egomcq_accuracy"],                                           # optional: evaluator names
      "hooks": [{"type": "...", "args": {...}}],                                # HOOKS, optional list
      "trainer": {"epochs": 10, "save_dir": "saved", ...}                      # trainer.options.TrainerOptions
    }

``metrics`` is shorthand for ``evaluators`` entries without args (a config has one or the other). The task
class (``task.type``, default ``EgoClipPretraining`` once registered) may list ``consistent_keys``: groups of
dotted keys that must hold equal values wherever present; a list-valued section applies the path to each entry.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from utils.config_files import BASE_KEY, load_config_file
from utils.config_overrides import apply_overrides, set_by_path
from utils.config_schema import ArgsOf, ConfigError, check_args, check_kwargs, closest
from utils.registry import EVALUATORS, HOOKS, LOADERS, LOSSES, LR_SCHEDULES, MODELS, TASKS

__all__ = ["ArgsOf", "ConfigError", "ConfigParser", "apply_overrides", "build_arg_parser", "check_consistent_keys",
           "check_kwargs", "resolve_type", "set_by_path", "validate_config"]


class _TorchOptimizers:
    """``torch.optim`` optimizer classes by name, looked up like a Registry."""

    kind = "optimizer"

    def get(self, name: str):
        import torch.optim
        obj = getattr(torch.optim, name, None)
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer):
            return obj
        names = [n for n, v in vars(torch.optim).items()
                 if inspect.isclass(v) and issubclass(v, torch.optim.Optimizer) and v is not torch.optim.Optimizer]
        raise KeyError(f"unknown optimizer type '{name}'{closest(name, names)}")


# Where the ``type`` of each typed section is looked up.
SECTION_REGISTRIES = {
    "task": TASKS,
    "arch": MODELS,
    "data_loader": LOADERS,
    "valid_data_loader": LOADERS,
    "optimizer": _TorchOptimizers(),
    "lr_scheduler": LR_SCHEDULES,
    "loss": LOSSES,
    "evaluators": EVALUATORS,
    "hooks": HOOKS,
}
LIST_ALLOWED = {"data_loader", "valid_data_loader"}  # one entry or a list of entries
LIST_ONLY = {"evaluators", "hooks"}                   # always a list of entries
# Constructor arguments that the code passes itself and a config must not set.
INJECTED_ARGS = {
    "task": {"model", "objective"},
    "optimizer": {"params"},
    "lr_scheduler": {"optimizer", "total_steps"},
}
# Untyped sections: (expected JSON type, required).
PLAIN_SECTIONS = {"name": (str, True), "metrics": (list, False), "trainer": (dict, True)}
# Typed sections a config must have, by what the run does with it.
REQUIRED_TYPED = {"train": ("arch", "data_loader", "optimizer", "loss"), "eval": ("arch", "valid_data_loader"),
                  "extract": ("arch", "task")}
DEFAULT_TASK = "EgoClipPretraining"
TRAINER_OPTIONS_MODULE = "trainer.options"


def resolve_type(section: str, type_name: str):
    """The class a section's ``type`` names, e.g. ``resolve_type('loss', 'MultiScaleEgoNCE')``; KeyError if unknown."""
    return SECTION_REGISTRIES[section].get(type_name)


def _trainer_options_class():
    return importlib.import_module(TRAINER_OPTIONS_MODULE).TrainerOptions


# ----------------------------------------------------------------------------- validation
def validate_config(config: dict, source: str = "<config>", purpose: str = "train") -> None:
    """Check a whole (``_base_``-resolved) config before anything is built; ConfigError naming ``source`` and
    the dotted key. ``purpose`` ('train' or 'eval') selects the sections that must be present."""
    try:
        _validate(config, REQUIRED_TYPED[purpose])
        task = _task_class(config)
        if task is not None:
            check_consistent_keys(config, getattr(task, "consistent_keys", ()))
        if purpose == "train":
            _validate_monitor(config, task)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _validate(config: dict, required_sections) -> None:
    if not isinstance(config, dict):
        raise ConfigError(f"top level must be a JSON object, got {type(config).__name__}")
    if BASE_KEY in config:
        raise ConfigError(f"'{BASE_KEY}' is resolved when a config file is read; use ConfigParser.from_file")
    valid_top = set(SECTION_REGISTRIES) | set(PLAIN_SECTIONS)
    for key in config:
        if key not in valid_top:
            raise ConfigError(f"unknown key '{key}'{closest(key, valid_top)}")
    for key, (json_type, required) in PLAIN_SECTIONS.items():
        if key not in config:
            if required:
                raise ConfigError(f"missing required key '{key}'")
        elif not isinstance(config[key], json_type):
            raise ConfigError(f"wrong type for '{key}': expected {json_type.__name__}, got {type(config[key]).__name__}")
    for section in required_sections:
        if section not in config:
            raise ConfigError(f"missing required key '{section}'")
    for section in SECTION_REGISTRIES:
        if section in config:
            _validate_section(section, config[section])
    check_args(config["trainer"], _trainer_options_class(), "trainer")
    try:
        _trainer_options_class()(**config["trainer"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _validate_metrics(config)
    if "optimizer" in config:
        _try_optimizer(config["optimizer"])


def _validate_section(section: str, value) -> None:
    if section in LIST_ONLY and not isinstance(value, list):
        raise ConfigError(f"wrong type for '{section}': expected a list of objects with 'type' and 'args', "
                          f"got {type(value).__name__}")
    if isinstance(value, list) and section in LIST_ALLOWED | LIST_ONLY:
        if not value and section in LIST_ALLOWED:
            raise ConfigError(f"'{section}' is an empty list")
        for i, entry in enumerate(value):
            _validate_entry(section, entry, f"{section}[{i}]")
    else:
        _validate_entry(section, value, section)


def _validate_entry(section: str, entry, where: str) -> None:
    if not isinstance(entry, dict):
        raise ConfigError(f"wrong type for '{where}': expected object with 'type' and 'args', got {type(entry).__name__}")
    for key in entry:
        if key not in ("type", "args"):
            raise ConfigError(f"unknown key '{where}.{key}'{closest(key, ('type', 'args'))}")
    if not isinstance(entry.get("type"), str):
        raise ConfigError(f"missing required key '{where}.type' (a string)")
    args = entry.get("args", {})
    if not isinstance(args, dict):
        raise ConfigError(f"wrong type for '{where}.args': expected object, got {type(args).__name__}")
    try:
        cls = resolve_type(section, entry["type"])
    except KeyError as err:
        raise ConfigError(f"'{where}.type': {err.args[0]}") from None
    check_args(args, cls, f"{where}.args", INJECTED_ARGS.get(section, ()))


def _validate_metrics(config: dict) -> None:
    metrics = config.get("metrics")
    if metrics is None:
        return
    if "evaluators" in config:
        raise ConfigError("both 'metrics' and 'evaluators' are given; list every evaluator under 'evaluators'")
    for i, name in enumerate(metrics):
        if not isinstance(name, str):
            raise ConfigError(f"wrong type for 'metrics[{i}]': expected str (an evaluator name), "
                              f"got {type(name).__name__}")
        try:
            EVALUATORS.get(name)
        except KeyError as err:
            raise ConfigError(f"'metrics[{i}]': {err.args[0]}") from None


def _try_optimizer(entry: dict) -> None:
    """Build the optimizer over one dummy parameter, so torch's own range checks (lr, betas, eps, ...) fail now."""
    import torch
    try:
        resolve_type("optimizer", entry["type"])([torch.zeros(1, requires_grad=True)], **entry.get("args", {}))
    except ValueError as err:
        raise ConfigError(f"'optimizer.args': {err}") from None


def _validate_monitor(config: dict, task) -> None:
    """``trainer.monitor`` (and each hook's ``monitor``) must name a metric the evaluators report.

    Evaluators list their metric names in ``metric_names``; prefixes such as ``loader1/`` or ``scale4/`` are
    ignored. An evaluator without ``metric_names`` turns the check off."""
    if "valid_data_loader" not in config:
        return
    entries = config.get("evaluators") or [{"type": name} for name in
                                           config.get("metrics") or getattr(task, "default_evaluators", ())]
    reported = set()
    for entry in entries:
        names = getattr(EVALUATORS.get(entry["type"]), "metric_names", None)
        if names is None:
            return
        reported.update(names)
    monitors = [("trainer.monitor", config["trainer"].get("monitor", "max intra_video_acc"))]
    monitors += [(f"hooks[{i}].args.monitor", h["args"]["monitor"])
                 for i, h in enumerate(config.get("hooks") or []) if "monitor" in h.get("args", {})]
    for where, monitor in monitors:
        metric = monitor.partition(" ")[2]
        if monitor != "off" and metric.rpartition("/")[2] not in reported:
            raise ConfigError(f"'{where}' names '{metric}', which no evaluator reports; they report "
                              f"{sorted(reported)}")


def _task_class(config: dict):
    """The task class of a validated config; None when there is no ``task`` and the default is not registered."""
    entry = config.get("task")
    if entry is not None:
        return resolve_type("task", entry["type"])
    return TASKS.get(DEFAULT_TASK) if DEFAULT_TASK in TASKS else None


def values_at(config: dict, path: str) -> list[tuple[str, object]]:
    """``(dotted key, value)`` of every place the dotted ``path`` reaches in ``config``; a list met before the
    end of the path applies the rest of it to each element (named ``section[i]``). Absent keys give nothing."""
    found = []

    def walk(node, keys: list[str], name: str) -> None:
        if not keys:
            found.append((name, node))
        elif isinstance(node, list):
            for i, element in enumerate(node):
                walk(element, keys, f"{name}[{i}]")
        elif isinstance(node, dict) and keys[0] in node:
            walk(node[keys[0]], keys[1:], f"{name}.{keys[0]}" if name else keys[0])

    walk(config, path.split("."), "")
    return found


def check_consistent_keys(config: dict, groups) -> None:
    """ConfigError naming both keys and values when the present values of a group of dotted paths differ."""
    for group in groups:
        found = [item for path in group for item in values_at(config, path)]
        for name, value in found[1:]:
            if value != found[0][1]:
                raise ConfigError(f"'{name}' = {value!r} differs from '{found[0][0]}' = {found[0][1]!r}")


def build_arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="path to a JSON config")
    parser.add_argument("-r", "--resume", default=None, help="checkpoint to resume from (or evaluate)")
    parser.add_argument("-d", "--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda'")
    parser.add_argument("--lr", type=float, default=None, help="optimizer learning rate")
    parser.add_argument("--bs", type=int, default=None, help="training batch size per process (every loader)")
    parser.add_argument("--cw", type=float, default=None, help="temporal consistency weight")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override any config value (JSON-typed; after _base_ is resolved); repeatable")
    parser.add_argument("--run-id", default=None,
                        help="run directory name (default: a timestamp); reuse one to auto-resume, e.g. a SLURM job id")
    return parser


class ConfigParser:
    """A validated config plus the CLI options of one run.

    Attributes: ``config`` (the resolved dict: ``_base_`` merged, overrides applied), ``source`` (config file
    path), ``resume`` (checkpoint path or None), ``device`` (str), ``run_id`` (str or None), ``run_dir`` (Path,
    after :meth:`make_run_dir`).
    """

    def __init__(self, config: dict, source: str = "<config>", resume: str | None = None,
                 device: str = "auto", run_id: str | None = None, purpose: str = "train"):
        validate_config(config, source, purpose)
        self.config, self.source, self.resume, self.device, self.run_id = config, source, resume, device, run_id
        self.run_dir: Path | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike, overrides: argparse.Namespace | None = None, **kwargs) -> "ConfigParser":
        """Read ``path`` (resolving ``_base_``), apply CLI ``overrides``, validate. Raises ConfigError."""
        path = str(path)
        raw = load_config_file(path)
        if overrides is not None:
            try:
                raw = apply_overrides(raw, overrides)
            except ConfigError as err:
                raise ConfigError(f"{path}: {err}") from None
        return cls(raw, source=path, **kwargs)

    @classmethod
    def parse_args(cls, argv=None, description: str = "Multi-scale EgoVLP", purpose: str = "train") -> "ConfigParser":
        """:meth:`from_file` for command-line arguments (``-c``, ``--set``, ...). Raises ConfigError."""
        args = build_arg_parser(description).parse_args(argv)
        return cls.from_file(args.config, overrides=args, resume=args.resume, device=args.device,
                             run_id=args.run_id, purpose=purpose)

    @classmethod
    def from_args(cls, argv=None, description: str = "Multi-scale EgoVLP", purpose: str = "train") -> "ConfigParser":
        """:meth:`parse_args` for run scripts: a bad config prints ``error: <message>`` (one line) to stderr
        and exits with status 2."""
        try:
            return cls.parse_args(argv, description, purpose)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    # -- access
    def __getitem__(self, key):
        return self.config[key]

    def get(self, key, default=None):
        return self.config.get(key, default)

    @property
    def trainer_options(self):
        """The ``trainer`` section as a TrainerOptions dataclass."""
        return _trainer_options_class()(**self.config["trainer"])

    def task_class(self):
        """The class ``task.type`` names (default ``EgoClipPretraining``); KeyError if it is not registered."""
        return resolve_type("task", self.entries("task")[0]["type"])

    def entries(self, section: str) -> list[dict]:
        """A typed section as a list of ``{type, args}``: a single entry becomes a one-element list, an absent
        section an empty one; ``task`` defaults to ``EgoClipPretraining`` and ``evaluators`` to ``metrics``."""
        if section == "task":
            return [self.config.get("task") or {"type": DEFAULT_TASK}]
        if section == "evaluators" and "evaluators" not in self.config:
            return [{"type": name} for name in self.config.get("metrics", [])]
        value = self.config.get(section)
        if value is None:
            return []
        return list(value) if isinstance(value, list) else [value]

    def init_obj(self, section: str, *args, entry: dict | None = None, **kwargs):
        """Build the object a one-entry section names: ``cls(*args, **config_args, **kwargs)``."""
        if entry is None:
            entries = self.entries(section)
            if len(entries) != 1:
                raise ConfigError(f"{self.source}: '{section}' has {len(entries)} entries; use init_all")
            entry = entries[0]
        cls = resolve_type(section, entry["type"])
        config_args = dict(entry.get("args", {}))
        clash = set(config_args) & set(kwargs)
        if clash:
            raise ConfigError(f"{self.source}: {section}.args {sorted(clash)} are also set by the code")
        return cls(*args, **config_args, **kwargs)

    def init_all(self, section: str, *args, **kwargs) -> list:
        """Build every entry of a section (e.g. several training loaders, the evaluators, the hooks)."""
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
        """Write the resolved config (``_base_`` merged, overrides applied) as JSON, atomically."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.config, indent=2) + "\n")
        os.replace(tmp, path)
