"""The Task: a model, its objective, its data and its evaluators behind one ``training_step``.

The engine (:mod:`trainer.engine`) knows only tasks, optimizers and hooks. A new system is a ``Task``
subclass registered in :data:`utils.registry.TASKS` and named by a config's ``task.type``; its model, loss,
loaders and evaluators come from the config's ``arch``, ``loss``, ``data_loader`` / ``valid_data_loader``
and ``evaluators`` (or ``metrics``) sections through their registries.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from trainer.param_groups import build_param_groups
from utils.registry import EVALUATORS

# Which config section holds the loaders of each split.
LOADER_SECTIONS = {"train": "data_loader", "val": "valid_data_loader"}


@dataclass
class StepOutput:
    """One micro-batch's result: ``loss`` (scalar tensor, the one that is back-propagated), ``num_samples``
    (items of this process's batch) and ``logs`` (TensorBoard tag → float or 0-d tensor; read only on
    logging steps, so tensors cost no device sync otherwise)."""

    loss: torch.Tensor
    num_samples: int
    logs: dict = field(default_factory=dict)


@dataclass
class StepContext:
    """What a step may need from the engine. ``epoch`` is 1-based; steps are optimizer steps."""

    device: torch.device
    global_step: int
    epoch: int
    total_epochs: int
    total_steps: int
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


class Task(nn.Module):
    """Base class of every task.

    Args:
        model: the network (its ``state_dict`` is the checkpoint's ``state_dict``).
        objective: the loss module, or None for evaluation-only tasks (saved as the checkpoint's ``loss``).

    Subclasses implement :meth:`training_step` and :meth:`evaluation_step`, and may set
    ``consistent_keys`` (groups of dotted config keys that must agree, checked when the config loads) and
    ``default_evaluators`` (evaluator names used when the config names none).
    """

    consistent_keys: tuple[tuple[str, ...], ...] = ()
    default_evaluators: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, objective: nn.Module | None = None):
        super().__init__()
        self.model, self.objective = model, objective
        self._loaders: dict[str, list] = {}
        self._evaluator_factories: list[Callable] = []

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config, splits=("train", "val")) -> "Task":
        """Build the task and its parts from a validated ConfigParser; loaders only for ``splits``."""
        model = config.init_obj("arch")
        objective = config.init_obj("loss") if config.get("loss") and "train" in splits else None
        task = cls(model, objective, **config.entries("task")[0].get("args", {}))
        task._loaders = {split: config.init_all(LOADER_SECTIONS[split]) for split in splits}
        evaluators = config.entries("evaluators") or [{"type": name} for name in cls.default_evaluators]
        task._evaluator_factories = [functools.partial(EVALUATORS.get(e["type"]), **e.get("args", {}))
                                     for e in evaluators]
        return task

    # ------------------------------------------------------------------ what the engine calls
    def loaders(self, split: str) -> list:
        """The DataLoaders of ``split`` ('train' or 'val')."""
        return self._loaders.get(split, [])

    def evaluators(self, split: str) -> list:
        """Fresh evaluators for one loader of ``split``."""
        return [factory() for factory in self._evaluator_factories]

    def training_step(self, batch, ctx: StepContext) -> StepOutput:
        raise TypeError(f"{type(self).__name__} does not train")

    def evaluation_step(self, batch, ctx: StepContext):
        """The outputs the evaluators' ``process(batch, outputs)`` need."""
        raise TypeError(f"{type(self).__name__} has no evaluation step")

    def default_hooks(self) -> list:
        """Hooks this task needs besides the config's (a config entry of the same type replaces one)."""
        return []

    def optimizer_groups(self, base_lr: float, weight_decay: float, options) -> dict[str, list[dict]]:
        """Parameter groups per optimizer name; one optimizer (``'main'``) over the model by default."""
        return {"main": build_param_groups(self.model, base_lr, weight_decay, options)}

    def load_pretrained(self, path: str):
        """Load weights for evaluation (strict where the model supports it)."""
        load = getattr(self.model, "load_weights", None)
        if load is not None:
            return load(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        return self.model.load_state_dict(state.get("state_dict", state))

    # ------------------------------------------------------------------ checkpoint state
    def task_state(self) -> dict:
        """Task-level state beyond model and objective weights (a curriculum stage, ...)."""
        return {}

    def load_task_state(self, state: dict) -> None:
        del state

    def checkpoint_state(self) -> dict:
        return {"state_dict": self.model.state_dict(),
                "loss": self.objective.state_dict() if self.objective is not None else {},
                "task": self.task_state()}

    def load_checkpoint_state(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["state_dict"])
        if self.objective is not None and checkpoint.get("loss"):
            self.objective.load_state_dict(checkpoint["loss"])
        self.load_task_state(checkpoint.get("task") or {})
