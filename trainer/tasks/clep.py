"""CLEP: contrastive language–video training on precomputed features, evaluated zero-shot.

Training batches ``{'video': [B, D], 'text': [B, E], 'text_no_tag': [B, E]}`` (:class:`NarrationFeatureLoader`);
evaluation batches of labelled feature sets (:class:`LabelledFeatureLoader`) are scored against every class
prompt the set carries. Hooks: :class:`ClampLogitScale` (added by the task) keeps the logit scale in its range
after every optimizer step; :class:`trainer.hooks.EvaluateEverySteps` evaluates every N optimizer steps.
"""
from __future__ import annotations

from typing import Literal

import torch

from model.clep import LogitScale
from trainer.hooks import Hook
from trainer.tasks.base import StepContext, StepOutput, Task
from utils.registry import HOOKS, TASKS


@HOOKS.register()
class ClampLogitScale(Hook):
    """Clamps every :class:`model.clep.LogitScale` of the task to its range after each optimizer step."""

    def after_step(self, engine) -> None:
        for module in engine.task.modules():
            if isinstance(module, LogitScale):
                module.clamp_()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values [B, T, C], mask [B, T] → mean over the True rows [B, C]."""
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1)


@TASKS.register()
class CLEPTraining(Task):
    """Two-tower contrastive training (``CLEPTwoTower`` + ``CLEPLoss``) and zero-shot evaluation.

    Args:
        text_key: which narration embedding the text tower reads: 'text' (tags replaced by words, as Ego4D CLEP)
            or 'text_no_tag' (tags removed).
        classifier_norm: 'per_class' (each class vector L2-normalised, CLIP) or 'per_dimension' (Ego4D CLEP's
            evaluation); reported with the metrics as ``classifier_norm``.

    Step logs: ``loss/clep``, ``schedule/logit_scale`` (the multiplier of the similarities).
    Evaluation outputs: ``{'scores': {prompt: [B, C] logits}, 'classifier_norm': str}`` — for window batches
    (``mask``) the per-window logits averaged over the video's windows.
    """

    default_evaluators = ("ZeroShotTopK",)

    def __init__(self, model, objective=None, text_key: Literal["text", "text_no_tag"] = "text",
                 classifier_norm: Literal["per_class", "per_dimension"] = "per_class"):
        super().__init__(model, objective)
        self.text_key, self.classifier_norm = text_key, classifier_norm

    def default_hooks(self) -> list:
        return [ClampLogitScale()]

    def training_step(self, batch: dict, ctx: StepContext) -> StepOutput:
        text = batch[self.text_key].to(ctx.device, non_blocking=True)
        text_embeds, video_embeds = self.model(text, batch["video"].to(ctx.device, non_blocking=True))
        scale = self.model.logit_scale()
        loss, components = self.objective(text_embeds, video_embeds, scale, text_no_tag=batch.get("text_no_tag"))
        logs = {f"loss/{key}": value for key, value in components.items()}
        logs["schedule/logit_scale"] = scale.detach()
        return StepOutput(loss=loss, num_samples=len(text), logs=logs)

    def evaluation_step(self, batch: dict, ctx: StepContext) -> dict:
        video = batch["video"].to(ctx.device)
        scores = {}
        for prompt, class_text in batch["class_prompts"].items():
            logits = self.model.zero_shot_logits(video, class_text.to(ctx.device), self.classifier_norm).float()
            scores[prompt] = _masked_mean(logits, batch["mask"].to(ctx.device)) if "mask" in batch else logits
        return {"scores": scores, "classifier_norm": self.classifier_norm}
