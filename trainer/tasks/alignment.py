"""Temporal alignment of procedural videos (TCC, LAV, VAVA, GTCC) with an optional learnable progress head.

A batch holds videos of one task (``ProceduralDataLoader``). The step embeds every video, applies the alignment
loss (``loss`` section) over the batch's ordered video pairs and, with ``progress`` set, samples progress targets
inside the videos' actions and trains the model's progress head on them:

    total = L_align + λ · L_progress          (λ = progress.weight)

After the backward pass the :class:`RescaleGradients` hook divides the progress head's gradients by λ, so the
head's own update does not depend on λ while the encoder receives λ times the progress gradient. Under Adam a
constant gradient scale hardly changes the update, so the division matters mainly with a tiny ``grad_clip``
(the GTCC fork clips all gradients to norm 1e-5, which puts them near Adam's ε; set ``trainer.grad_clip`` to
1e-5 only to reproduce that recipe).
"""
from __future__ import annotations

import zlib
from typing import Annotated

import torch

from model.losses.progress import ProgressObjective
from trainer.hooks import Hook
from trainer.tasks.base import StepContext, StepOutput, Task
from utils.config_schema import ArgsOf, Bounds
from utils.registry import HOOKS, TASKS


@HOOKS.register()
class RescaleGradients(Hook):
    """Multiplies the gradients of parameter groups by fixed factors after the backward pass that completes an
    accumulation window (once per optimizer step). The groups come from ``task.gradient_rescales()``:
    ``[(parameters, factor), ...]``."""

    def after_backward(self, engine) -> None:
        if (engine.micro_step + 1) % engine.options.grad_accum_steps:
            return
        for parameters, factor in engine.task.gradient_rescales():
            for parameter in parameters:
                if parameter.grad is not None:
                    parameter.grad.mul_(factor)


def _step_generator(seed: int, step: int, handles: list[str]) -> torch.Generator:
    """The progress-target RNG of one step: a function of the seed, the step and the batch's videos."""
    key = zlib.crc32("|".join(handles).encode())
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4_294_967_296 + key)


@TASKS.register()
class TemporalAlignment(Task):
    """Alignment (+ progress) training on procedural videos; alignment and progress evaluators.

    Args:
        progress: ``ProgressObjective`` args (weight λ, cap, sampling); needs ``arch.args.progress_head``.
        progress_eval_stride: the head is evaluated at every n-th frame of each action.
        seed: progress-target sampling seed.

    Step logs: ``loss/align_<loss>``, ``loss/progress``, ``progress/train_mae``, ``data/progress_targets``,
    ``fusion/head_weight_<k>`` (MCN: mean attention weight per head), ``drop/probability`` (GTCC drop context).
    """

    default_evaluators = ("AlignmentKendallTau", "OnlineProgressError")

    def __init__(self, model, objective=None, progress: Annotated[dict | None, ArgsOf(ProgressObjective)] = None,
                 progress_eval_stride: Annotated[int, Bounds(1)] = 1, seed: int = 0):
        super().__init__(model, objective)
        head = getattr(model, "progress_head", None)
        if progress is not None and head is None:
            raise ValueError("task.args.progress is set but the model has no progress head; set "
                             "arch.args.progress_head (e.g. {\"hidden\": 64})")
        if (objective is not None and getattr(model, "drop_context", None) is not None
                and not getattr(objective, "uses_contexts", False)):
            raise ValueError(f"the model has a drop-context head (arch.args.drop_context) but the loss "
                             f"{type(objective).__name__} does not use it (only GTCCLoss does); its parameters would "
                             "get no gradient")
        self.progress = ProgressObjective(**progress) if progress is not None else None
        self.progress_eval_stride, self.seed = progress_eval_stride, seed

    def default_hooks(self) -> list:
        return [RescaleGradients()] if self.progress is not None else []

    def gradient_rescales(self) -> list:
        """The progress head's gradients are divided by λ (see the module doc)."""
        if self.progress is None:
            return []
        return [(list(self.model.progress_head.parameters()), 1.0 / self.progress.weight)]

    def _progress_loss(self, embeddings, segments, generator) -> tuple[torch.Tensor, dict] | None:
        queries, targets = [], []
        for video, video_segments in zip(embeddings, segments):
            for target in self.progress.targets([(s, e) for s, e, _ in video_segments], generator):
                queries.append(video[target.start:target.end + 1])
                targets.append(target.progress)
        if not queries:
            return None
        prediction = self.model.progress_head(queries)
        target = torch.tensor(targets, dtype=prediction.dtype, device=prediction.device)
        loss = self.progress(prediction, target)
        return loss, {"loss/progress": loss.detach(), "progress/train_mae": (prediction - target).abs().mean().detach(),
                      "data/progress_targets": float(len(targets))}

    def training_step(self, batch: dict, ctx: StepContext) -> StepOutput:
        outputs = self.model([f.to(ctx.device, non_blocking=True) for f in batch["features"]])
        loss, components = self.objective(outputs["embeddings"], contexts=outputs["contexts"],
                                          step=ctx.global_step, epoch=ctx.epoch - 1)
        logs = {f"loss/{name}": value for name, value in components.items()}
        if self.progress is not None:
            generator = _step_generator(self.seed, ctx.global_step, batch["handle"])
            result = self._progress_loss(outputs["embeddings"], batch["segments"], generator)
            if result is not None:
                progress_loss, progress_logs = result
                loss = loss + self.progress.weight * progress_loss
                logs.update(progress_logs)
        if outputs["head_weights"] is not None:
            weights = torch.cat(outputs["head_weights"]).detach().mean(0)
            logs.update({f"fusion/head_weight_{k}": w for k, w in enumerate(weights)})
        if outputs["contexts"] is not None:
            probability = torch.cat([torch.sigmoid(u @ c[:-1] + c[-1])
                                     for u, c in zip(outputs["embeddings"], outputs["contexts"])])
            logs["drop/probability"] = probability.detach().mean()
        return StepOutput(loss=loss, num_samples=len(batch["features"]), logs=logs)

    @torch.no_grad()
    def head_progress(self, embeddings: torch.Tensor, segments) -> torch.Tensor:
        """``[T]``: the progress head's prediction at every ``progress_eval_stride``-th frame of each action, fed
        the action from its (oracle) start; NaN elsewhere."""
        prediction = torch.full((embeddings.shape[0],), float("nan"))
        ends = [(s, t) for s, e, _ in segments for t in range(s, e + 1, self.progress_eval_stride)]
        if ends:
            values = self.model.progress_head([embeddings[s:t + 1] for s, t in ends]).float().cpu()
            prediction[[t for _, t in ends]] = values
        return prediction

    def evaluation_step(self, batch: dict, ctx: StepContext) -> dict:
        """``{'embeddings': [T_i, D] list (CPU float32), 'progress': [T_i] head predictions or None,
        'contexts': [D+1] drop contexts or None}``."""
        outputs = self.model([f.to(ctx.device, non_blocking=True) for f in batch["features"]])
        embeddings = outputs["embeddings"]
        progress = None
        if getattr(self.model, "progress_head", None) is not None:
            progress = [self.head_progress(e, s) for e, s in zip(embeddings, batch["segments"])]
        contexts = outputs["contexts"]
        return {"embeddings": [e.detach().float().cpu() for e in embeddings], "progress": progress,
                "contexts": None if contexts is None else [c.detach().float().cpu() for c in contexts]}


__all__ = ["RescaleGradients", "TemporalAlignment"]
