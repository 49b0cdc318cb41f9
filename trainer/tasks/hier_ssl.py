"""Self-supervised training of the hierarchical video encoder, on the shared engine.

The objective is :class:`model.hierarchical_objective.HierarchicalPredictionObjective` (every level predicts
its neighbours) or :class:`model.hierarchical_objective.SiameseVICRegObjective` (two windows of one video,
``pairs`` in the loader). Everything that differs from plain training is task state and hooks:

- **per-level optimizers** (``per_level_optimizers``): :meth:`optimizer_groups` returns one optimizer per level
  (its transformer, input projection and predictors; the space level also owns the stem and patch embedding);
  predictors train in the level's group, in their own group at ``predictor_lr_scale`` × lr
  (``predictor_optimizer: "group"``) or with their own optimizer (``"separate"``).
- **alternating freeze** (``alternating_interval``, percent of an epoch's batches; hook
  :class:`AlternatingFreeze`): levels start trainable as ``[yes, no, yes, …]`` bottom-up and flip every interval;
  frozen levels get ``requires_grad = False``, their losses are left out, so their optimizers skip them. The
  pattern is a function of the step, so a resumed run flips exactly as an uninterrupted one.
- **curriculum** (``curriculum``: stages ``{"epoch", "levels", "clips", "frames"}``; hook
  :class:`CurriculumGrowth`): from its epoch a stage runs more levels (new levels start from their
  initialisation) and longer token sequences (positional rows beyond the old length are drawn afresh from a
  generator seeded by ``seed`` and the stage, earlier rows are kept exactly, their optimizer state is zeroed).
  The stage is task state: a resumed run continues in it, bit for bit. Windows must hold the largest stage's
  ``frames``; a stage reads the first ``frames`` of each window.

Validation: the evaluators (default :class:`trainer.evaluators.features.WeightedKNN`) read ``features``, the final
active level's aggregate; schedule it with the ``Evaluate`` hook (e.g. ``exponential_base``).
Step logs: ``loss/<level>_<direction>``, ``schedule/weight_<level>_<direction>``, ``train/trainable_<level>``,
``curriculum/stage``.
"""
from __future__ import annotations

import logging
from typing import Annotated, Literal

import torch

from model.checkpoint import torch_load
from trainer.hooks import Hook
from trainer.tasks.base import StepContext, StepOutput, Task
from utils.config_schema import Bounds
from utils.registry import HOOKS, TASKS

logger = logging.getLogger(__name__)

STAGE_KEYS = ("epoch", "levels", "clips", "frames")


def check_stages(stages: list[dict], num_levels: int) -> list[dict]:
    """Validated curriculum stages: keys from ``STAGE_KEYS``, the first at epoch 1, epochs increasing, levels in
    ``1..num_levels`` and never fewer than before, ``frames`` divisible by ``clips``."""
    checked = []
    for i, stage in enumerate(stages):
        unknown = set(stage) - set(STAGE_KEYS)
        if unknown or "epoch" not in stage:
            raise ValueError(f"curriculum[{i}]: keys must be {list(STAGE_KEYS)} with 'epoch', got {sorted(stage)}")
        stage = {"levels": num_levels, "clips": 1, "frames": None, **stage}
        if i == 0 and stage["epoch"] != 1:
            raise ValueError(f"curriculum[0] must start at epoch 1, got {stage['epoch']}")
        if i and (stage["epoch"] <= checked[-1]["epoch"] or stage["levels"] < checked[-1]["levels"]):
            raise ValueError(f"curriculum[{i}]: epochs must increase and levels never decrease")
        if not 1 <= stage["levels"] <= num_levels:
            raise ValueError(f"curriculum[{i}].levels must be in 1..{num_levels}, got {stage['levels']}")
        if stage["frames"] is not None and stage["frames"] % stage["clips"]:
            raise ValueError(f"curriculum[{i}]: {stage['frames']} frames do not split into {stage['clips']} clips")
        checked.append(stage)
    return checked


@TASKS.register("HierarchicalSSL")
class HierarchicalSSL(Task):
    """Self-supervised hierarchical video learning (see the module docstring).

    Args:
        model: a :class:`model.hierarchical.HierarchicalVideoEncoder`.
        objective: the prediction objective or the siamese VICReg objective (its predictors are created here).
        per_level_optimizers: one optimizer per level (else one, ``"main"``).
        predictor_optimizer: ``"with_level"``, ``"group"`` (own group, ``predictor_lr_scale`` × lr) or
            ``"separate"`` (own optimizer ``<level>_predictors``).
        predictor_lr_scale: learning-rate factor of predictor groups/optimizers.
        alternating_interval: flip the trainable levels every this percent of an epoch's batches (0: never).
        curriculum: stages ``{"epoch", "levels", "clips", "frames"}`` (default: one stage with every level,
            the model's ``clips`` and all frames of a window).
        seed: seed of the positional rows a curriculum stage draws afresh.
    """

    default_evaluators = ("WeightedKNN",)

    def __init__(self, model, objective=None, per_level_optimizers: bool = True,
                 predictor_optimizer: Literal["with_level", "group", "separate"] = "with_level",
                 predictor_lr_scale: Annotated[float, Bounds(0)] = 3.0,
                 alternating_interval: Annotated[float, Bounds(0, 100)] = 0.0,
                 curriculum: list | None = None, seed: int = 0):
        super().__init__(model, objective)
        if objective is not None:
            objective.bind(model)
        self.per_level_optimizers, self.predictor_optimizer = per_level_optimizers, predictor_optimizer
        self.predictor_lr_scale, self.alternating_interval, self.seed = predictor_lr_scale, alternating_interval, seed
        default = {"epoch": 1, "levels": model.active_levels, "clips": model.clips}
        self.stages = check_stages(curriculum or [default], len(model.level_names))
        self.two_views = bool(getattr(objective, "two_views", False))
        if self.two_views and len({s["levels"] for s in self.stages}) > 1:
            raise ValueError("the siamese objective's projector reads one level: its curriculum cannot add levels")
        self.stage = 0
        self._apply_stage(0)
        self.trainable = set(model.level_names)

    # ------------------------------------------------------------------ hooks the task needs
    def default_hooks(self) -> list:
        hooks = [CurriculumGrowth()] if len(self.stages) > 1 else []
        if self.alternating_interval > 0:
            hooks.append(AlternatingFreeze(self.alternating_interval))
        return hooks

    # ------------------------------------------------------------------ curriculum
    def stage_for_epoch(self, epoch: int) -> int:
        return max(i for i, stage in enumerate(self.stages) if stage["epoch"] <= epoch)

    def _tokens(self) -> dict[str, int]:
        """Token sequence length of each active level above space at the current stage."""
        stage = self.stages[self.stage]
        tokens = {"clip": stage["clips"]}
        if stage["frames"] is not None:
            tokens["time"] = stage["frames"] // stage["clips"]
        return {name: n for name, n in tokens.items() if name in self.model.active}

    def _apply_stage(self, index: int) -> None:
        self.stage = index
        self.model.set_stage(self.stages[index]["levels"], self.stages[index]["clips"])

    def advance_stage(self, index: int) -> list[tuple[torch.nn.Parameter, slice]]:
        """Enter stage ``index``: activate its levels, draw fresh positional rows for every level whose token
        sequence grew (rows before the old length are kept). Returns the re-drawn ``(parameter, rows)``."""
        before = self._tokens()
        self._apply_stage(index)
        generator = torch.Generator().manual_seed(self.seed * 1009 + index)
        redrawn = []
        for name, n in self._tokens().items():
            if name in before and n > before[name]:
                redrawn += self.model.reset_rows(name, before[name], generator)
        logger.info("curriculum stage %d: levels %s, %d clip(s), %s frames", index, self.model.active,
                    self.model.clips, self.stages[index]["frames"] or "all")
        return redrawn

    def task_state(self) -> dict:
        return {"stage": self.stage}

    def load_pretrained(self, path: str):
        """Weights for evaluation (strict), in the curriculum stage the checkpoint was saved in (the last stage
        for a bare state dict)."""
        checkpoint = torch_load(path, map_location="cpu", weights_only=True)
        report = self.model.load_state_dict(checkpoint.get("state_dict", checkpoint))
        stage = (checkpoint.get("task") or {}).get("stage", len(self.stages) - 1)
        self._apply_stage(int(stage))
        return report

    def load_task_state(self, state: dict) -> None:
        self._apply_stage(int(state.get("stage", 0)))

    # ------------------------------------------------------------------ trainable levels
    def level_parameters(self, name: str) -> list[torch.nn.Parameter]:
        objective = [] if self.objective is None else self.objective.level_parameters(name)
        return self.model.level_parameters(name) + objective

    def set_trainable(self, levels: set[str]) -> None:
        """Only ``levels`` train (``requires_grad``; their losses count); the others are frozen."""
        for name in self.model.level_names:
            for param in self.level_parameters(name):
                param.requires_grad_(name in levels)
        self.trainable = set(levels)

    def optimizer_groups(self, base_lr, weight_decay, options) -> dict[str, list[dict]]:
        def group(name, params, scale=1.0):
            return {"name": name, "params": params, "weight_decay": weight_decay, "lr": base_lr * scale}

        levels = self.model.level_names
        if not self.per_level_optimizers:
            return {"main": [group("all", [p for name in levels for p in self.level_parameters(name)])]}
        groups = {}
        for name in levels:
            own = self.model.level_parameters(name)
            predictors = [] if self.objective is None else self.objective.level_parameters(name)
            if self.predictor_optimizer == "with_level":
                groups[name] = [group(name, own + predictors)]
            elif self.predictor_optimizer == "group":
                groups[name] = [group(name, own)] + ([group(f"{name}_predictors", predictors,
                                                            self.predictor_lr_scale)] if predictors else [])
            else:
                groups[name] = [group(name, own)]
                if predictors:
                    groups[f"{name}_predictors"] = [group(f"{name}_predictors", predictors, self.predictor_lr_scale)]
        return groups

    # ------------------------------------------------------------------ steps
    def _video(self, video: torch.Tensor, device) -> torch.Tensor:
        frames = self.stages[self.stage]["frames"]
        if frames is not None:
            if video.shape[1] < frames:
                raise ValueError(f"curriculum stage {self.stage} reads {frames} frames, the windows hold "
                                 f"{video.shape[1]} (raise the loader's length)")
            video = video[:, :frames]
        return video.to(device, non_blocking=True)

    def training_step(self, batch: dict, ctx: StepContext) -> StepOutput:
        video = self._video(batch["video"], ctx.device)
        if self.two_views:
            loss, components = self.objective(self.model.features(video),
                                              self.model.features(self._video(batch["video_b"], ctx.device)))
        else:
            active = self.model.active
            loss, components = self.objective(self.model(video), active, self.model.clips, epoch=ctx.epoch,
                                              trainable=self.trainable & set(active))
        logs = {("schedule/" if key.startswith("weight_") else "loss/") + key: value
                for key, value in components.items()}
        logs.update({f"train/trainable_{name}": float(name in self.trainable) for name in self.model.active})
        logs["curriculum/stage"] = float(self.stage)
        return StepOutput(loss=loss, num_samples=len(video), logs=logs)

    def evaluation_step(self, batch: dict, ctx: StepContext) -> dict:
        """``{"features": [B, D]}``: the final active level's aggregate."""
        return {"features": self.model.features(self._video(batch["video"], ctx.device))}


@HOOKS.register()
class AlternatingFreeze(Hook):
    """Flips which levels train every ``interval`` percent of an epoch's batches (see :class:`HierarchicalSSL`).

    Before step ``s`` (counted over the whole run) the pattern ``[yes, no, yes, …]`` over the active levels is
    inverted ``⌊s / max(1, round(steps_per_epoch · interval / 100))⌋`` times; with one active level it trains."""

    def __init__(self, interval: Annotated[float, Bounds(0, 100)] = 10.0):
        if interval <= 0:
            raise ValueError(f"interval must be > 0 percent, got {interval}")
        self.interval = interval

    def pattern(self, levels: list[str], step: int, steps_per_epoch: int) -> set[str]:
        if len(levels) < 2:
            return set(levels)
        flips = step // max(1, round(steps_per_epoch * self.interval / 100))
        return {name for i, name in enumerate(levels) if (i % 2 == 0) != (flips % 2 == 1)}

    def before_step(self, engine) -> None:
        task = engine.task
        step = (engine.epoch - 1) * engine.steps_per_epoch + engine.batch_in_epoch
        trainable = self.pattern(task.model.active, step, engine.steps_per_epoch)
        if trainable != task.trainable:
            task.set_trainable(trainable)


@HOOKS.register()
class CurriculumGrowth(Hook):
    """Enters the task's curriculum stage of each epoch before it starts; zeroes the optimizer state of the
    positional rows the stage re-drew (see :class:`HierarchicalSSL`)."""

    def before_epoch(self, engine) -> None:
        task = engine.task
        target = task.stage_for_epoch(engine.epoch)
        if target == task.stage:
            return
        for param, rows in task.advance_stage(target):
            for optimizer in engine.optimizers.values():
                for value in optimizer.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        value[:, rows] = 0
        engine.scalar("curriculum/stage", target)
