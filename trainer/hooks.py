"""Engine hooks: code that runs at fixed points of training, with state that checkpoints carry.

Events, each called with the engine: ``before_train``, ``before_epoch``, ``before_step``, ``after_backward``
(gradients exist, before the optimizer step), ``after_step``, ``after_epoch`` (after ``latest.pth`` is
written), ``after_train``. A hook is registered in ``utils.registry.HOOKS`` and listed in a config's
``hooks`` section: ``{"type": "Evaluate", "args": {"every_epochs": 2, "monitor": "max inter_video_acc"}}``.
"""
from __future__ import annotations

import logging
import math
from typing import Annotated

import torch

from utils import distributed
from utils.config_schema import Bounds
from utils.curves import plot_run
from utils.registry import HOOKS

logger = logging.getLogger(__name__)


class Hook:
    """Base class: every event does nothing; ``state_dict`` is saved in each checkpoint."""

    def before_train(self, engine) -> None: ...

    def before_epoch(self, engine) -> None: ...

    def before_step(self, engine) -> None: ...

    def after_backward(self, engine) -> None: ...

    def after_step(self, engine) -> None: ...

    def after_epoch(self, engine) -> None: ...

    def after_train(self, engine) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state


def exponential_epochs(base: float, last_epoch: int) -> set[int]:
    """Epochs ``⌊base^k⌋`` for k = 0, 1, ... up to ``last_epoch``, plus 1 and ``last_epoch`` (base > 1)."""
    if base <= 1:
        raise ValueError(f"exponential_base must be > 1, got {base}")
    epochs, k = {1, last_epoch}, 0
    while (epoch := math.floor(base ** k)) <= last_epoch:
        epochs.add(epoch)
        k += 1
    return epochs


@HOOKS.register()
class Evaluate(Hook):
    """Evaluates the task's validation loaders on a schedule and keeps ``model_best.pth`` by a metric.

    Args:
        every_epochs: evaluate after every N-th epoch and the last (ignored when ``exponential_base`` is set).
        exponential_base: evaluate after epochs ``⌊base^k⌋``, the first and the last.
        at_start: also evaluate before the first training step.
        monitor: ``"max <metric>"`` / ``"min <metric>"`` for ``model_best.pth``, or ``"off"``.
        split: which loaders to evaluate.

    An evaluation interrupted by a preemption signal is run again when the run resumes.
    """

    def __init__(self, every_epochs: int = 1, exponential_base: float | None = None, at_start: bool = False,
                 monitor: str = "off", split: str = "val"):
        if every_epochs < 1:
            raise ValueError(f"every_epochs must be >= 1, got {every_epochs}")
        self.every_epochs, self.exponential_base, self.at_start = every_epochs, exponential_base, at_start
        self.mode, _, self.metric = monitor.partition(" ")
        if monitor != "off" and (self.mode not in ("max", "min") or not self.metric):
            raise ValueError(f"monitor must be 'max <metric>', 'min <metric>' or 'off', got '{monitor}'")
        self.split = split
        self.best: float | None = None
        self.evaluated_epoch = 0

    def due(self, epoch: int, last_epoch: int) -> bool:
        if self.exponential_base is not None:
            return epoch in exponential_epochs(self.exponential_base, last_epoch)
        return epoch % self.every_epochs == 0 or epoch == last_epoch

    def before_train(self, engine) -> None:
        if not engine.task.loaders(self.split):
            return
        completed = engine.epoch - 1 if engine.batch_in_epoch == 0 else 0
        if completed and completed > self.evaluated_epoch and self.due(completed, engine.options.epochs):
            logger.info("running the evaluation of epoch %d that the previous run did not finish", completed)
            self._evaluate(engine, completed)
        elif self.at_start and engine.global_step == 0:
            engine.evaluate(self.split)

    def after_epoch(self, engine) -> None:
        if engine.task.loaders(self.split) and self.due(engine.epoch, engine.options.epochs):
            self._evaluate(engine, engine.epoch)

    def _evaluate(self, engine, epoch: int) -> None:
        metrics = engine.evaluate(self.split)
        self.evaluated_epoch = epoch
        if self.mode not in ("max", "min"):
            return
        if self.metric not in metrics:
            raise KeyError(f"monitor names '{self.metric}', but evaluation reports {sorted(metrics)}")
        value = metrics[self.metric]
        if math.isnan(value):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = value
            engine.save_checkpoint(["model_best.pth"])
            logger.info("new best %s = %.2f (epoch %d)", self.metric, value, epoch)

    def state_dict(self) -> dict:
        return {"best": self.best, "evaluated_epoch": self.evaluated_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.evaluated_epoch = state.get("best"), state.get("evaluated_epoch", 0)


@HOOKS.register()
class EvaluateEverySteps(Evaluate):
    """Evaluates every ``every_steps`` optimizer steps (before the next step starts, so every ``after_step``
    hook has run) and once more after the last step; keeps ``model_best.pth`` by ``monitor`` like
    :class:`trainer.hooks.Evaluate`.

    Args:
        every_steps: evaluation period in optimizer steps.
        at_start: also evaluate before the first step (Ego4D CLEP evaluates at step 0).
        monitor, split: as in :class:`trainer.hooks.Evaluate`.
    """

    def __init__(self, every_steps: Annotated[int, Bounds(1)] = 500, at_start: bool = False, monitor: str = "off",
                 split: str = "val"):
        super().__init__(at_start=at_start, monitor=monitor, split=split)
        self.every_steps, self.evaluated_step = every_steps, -1

    def _evaluate_now(self, engine) -> None:
        if engine.task.loaders(self.split) and engine.global_step != self.evaluated_step:
            self._evaluate(engine, engine.epoch)
            self.evaluated_step = engine.global_step

    def before_train(self, engine) -> None:
        if self.at_start and engine.global_step == 0:
            self._evaluate_now(engine)

    def before_step(self, engine) -> None:
        if engine.global_step > 0 and engine.global_step % self.every_steps == 0:
            self._evaluate_now(engine)

    def after_epoch(self, engine) -> None:
        pass

    def after_train(self, engine) -> None:
        self._evaluate_now(engine)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "evaluated_step": self.evaluated_step}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.evaluated_step = state.get("evaluated_step", -1)


@HOOKS.register()
class ReplacedClipsReport(Hook):
    """How many training clips were replaced after read errors, per epoch and in the whole run, over every
    DataLoader worker and rank: TensorBoard ``data/replaced_clips_epoch`` / ``data/replaced_clips_total`` and a
    warning naming some of the failed rows. The task counts them in ``replaced_clips`` and ``replaced_rows``."""

    def __init__(self):
        self.total = 0

    def after_step(self, engine) -> None:
        if engine.batch_in_epoch != engine.steps_per_epoch:
            return
        task = engine.task  # the last step of the epoch, before latest.pth is written
        count = int(distributed.all_reduce_sum(torch.tensor([float(task.replaced_clips)])).item())
        self.total += count
        engine.scalar("data/replaced_clips_epoch", count)
        engine.scalar("data/replaced_clips_total", self.total)
        if count:
            logger.warning("epoch %d: %d training clips replaced after read errors (%d in this run); e.g. %s",
                           engine.epoch, count, self.total, "; ".join(task.replaced_rows[:3]) or "(other ranks)")
        task.replaced_clips, task.replaced_rows = 0, []

    def state_dict(self) -> dict:
        return {"total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.total = state.get("total", 0)


@HOOKS.register()
class LearningCurves(Hook):
    """Draws every logged scalar (losses, schedules, validation metrics) to ``run_dir/curves.png`` on rank 0:
    after each epoch that ran an evaluation (default) or every ``every_epochs`` epochs, and when training ends."""

    def __init__(self, every_epochs: Annotated[int, Bounds(1)] | None = None):
        self.every_epochs = every_epochs
        self._evaluations_drawn = 0
        self._step_drawn = -1

    def _draw(self, engine) -> None:
        self._evaluations_drawn, self._step_drawn = engine.evaluations, engine.global_step
        if engine.writer is None:
            return
        engine.writer.flush()
        try:
            path = plot_run(engine.run_dir)
        except Exception as err:  # a picture must never end a training run
            logger.warning("learning curves not drawn: %s", err)
            return
        logger.info("learning curves: %s", path)

    def after_epoch(self, engine) -> None:
        due = (engine.epoch % self.every_epochs == 0 if self.every_epochs
               else engine.evaluations > self._evaluations_drawn)
        if due:
            self._draw(engine)

    def after_train(self, engine) -> None:
        if engine.global_step != self._step_drawn:  # not drawn already after the last epoch
            self._draw(engine)


def hook_keys(hooks) -> list[str]:
    """Checkpoint keys of ``hooks``: the type name, with ``#2``, ``#3`` ... for a repeated type."""
    seen: dict[str, int] = {}
    keys = []
    for hook in hooks:
        name = type(hook).__name__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


def build_hooks(config, task) -> list[Hook]:
    """The config's ``hooks``, then the task's ``default_hooks()`` of types the config does not list; an
    :class:`Evaluate` hook from the ``trainer`` options (``val_every``, ``init_val``, ``monitor``) is added when
    the task has validation loaders and no Evaluate hook is listed."""
    hooks = config.init_all("hooks")
    hooks += [hook for hook in task.default_hooks() if not any(type(h) is type(hook) for h in hooks)]
    if task.loaders("val") and not any(isinstance(hook, Evaluate) for hook in hooks):
        options = config.trainer_options
        hooks.append(Evaluate(every_epochs=options.val_every, at_start=options.init_val, monitor=options.monitor))
    if not any(isinstance(hook, LearningCurves) for hook in hooks):
        hooks.append(LearningCurves())
    return hooks
