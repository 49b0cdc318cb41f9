"""Name → class registries: a config's ``"type": "Name"`` is looked up here.

A class registers itself where it is defined::

    from utils.registry import LOSSES

    @LOSSES.register()
    class MyLoss(nn.Module): ...

Each registry knows the modules that define its built-in entries and imports them on the first lookup, so
a config can name any built-in class without the caller importing it first. A ``type`` with a dot
(``"my_package.losses.MyLoss"``) is imported directly, for classes that live outside this project.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Iterable


class Registry:
    """Classes (or factories) by name, for one kind of config object.

    Args:
        kind: what the entries are, used in messages ("task", "loss", ...).
        modules: modules whose import registers the built-in entries.
    """

    def __init__(self, kind: str, modules: Iterable[str] = ()):
        self.kind = kind
        self.modules = tuple(modules)
        self._entries: dict[str, Callable] = {}
        self._imported = False

    def register(self, name: str | None = None, *aliases: str):
        """Class decorator: register under ``name`` (default: the class name) and any ``aliases``."""
        def decorator(obj):
            for key in (name or obj.__name__, *aliases):
                existing = self._entries.get(key)
                if existing is not None and existing is not obj:
                    raise KeyError(f"{self.kind} '{key}' is registered twice: {_qualname(existing)} and "
                                   f"{_qualname(obj)}")
                self._entries[key] = obj
            return obj
        return decorator

    def _import_builtins(self) -> None:
        if not self._imported:
            self._imported = True
            for module in self.modules:
                importlib.import_module(module)

    def get(self, name: str) -> Callable:
        """The entry called ``name`` (or a dotted import path); KeyError naming the closest valid name."""
        self._import_builtins()
        if name in self._entries:
            return self._entries[name]
        if "." in name:
            module_name, _, attr = name.rpartition(".")
            try:
                return getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as err:
                raise KeyError(f"cannot import {self.kind} '{name}': {err}") from None
        match = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.5)
        hint = f"; did you mean '{match[0]}'?" if match else f"; known: {sorted(self._entries)}"
        raise KeyError(f"unknown {self.kind} type '{name}'{hint}")

    def names(self) -> list[str]:
        self._import_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._import_builtins()
        return name in self._entries


def _qualname(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


TASK_MODULES = ["trainer.tasks", "trainer.tasks.retrieval", "trainer.tasks.recognition", "trainer.tasks.extract",
                "trainer.tasks.clep", "trainer.tasks.hier_ssl", "trainer.tasks.alignment"]
TASKS = Registry("task", TASK_MODULES)
MODELS = Registry("model", ["model.model", "model.clep", "model.hierarchical", "model.sequence_encoders"])
LOSSES = Registry("loss", ["model.loss", "model.clep", "model.hierarchical_objective", "model.losses.alignment",
                           "model.losses.progress"])
LOADERS = Registry("data loader", ["data_loader.data_loader", "data_loader.narration_features",
                                   "data_loader.labelled_features", "data_loader.ek100_mir", "data_loader.charades_ego",
                                   "data_loader.ssl_video", "data_loader.procedural"])
EVALUATORS = Registry("evaluator", ["trainer.evaluators", "trainer.evaluators.zero_shot", "trainer.evaluators.ek100_mir",
                                    "trainer.evaluators.charades_ego", "trainer.evaluators.features",
                                    "trainer.evaluators.alignment"])
HOOKS = Registry("hook", ["trainer.hooks", *TASK_MODULES])  # tasks define the hooks they need
LR_SCHEDULES = Registry("lr_scheduler", ["trainer.lr_schedule"])
