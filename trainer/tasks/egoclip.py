"""EgoClip pretraining (EgoVLP): video-text contrastive learning with EgoNCE, EgoMCQ evaluation.

Works with the single-scale ``FrozenInTime`` (``video`` ``[B, T, 3, R, R]``) and the multi-scale
``MultiScaleFrozenInTime`` (``video`` ``{'frames_<s>': [B, s, 3, R, R]}`` plus ``scale_mask``); the objective
is ``MultiScaleEgoNCE`` or the baseline ``EgoNCEObjective``.
"""
from __future__ import annotations

import torch

from trainer.hooks import ReplacedClipsReport
from trainer.tasks.base import StepContext, StepOutput, Task
from utils.registry import TASKS

SCENE_NEGATIVE_KEYS = ("video", "text", "verb_vec", "noun_vec", "scale_mask")
# TensorBoard group of each objective component that is not a loss term.
COMPONENT_GROUPS = {"lambda": "schedule", "temperature": "schedule", "num_pairs": "data"}


def _concat_batch(first, second):
    if isinstance(first, list):
        return first + list(second)
    if isinstance(first, dict):
        return {key: torch.cat([first[key], second[key]]) for key in first}
    return torch.cat([first, second])


def append_scene_negatives(batch: dict) -> dict:
    """EgoVLP's scene-aware negatives (dataset ``neg_param``): the ``*_neg`` clips appended after the batch's own
    clips, so the loss sees 2B clips; ``temporal_pairs`` index the first B and stay valid."""
    if "video_neg" not in batch:
        return batch
    merged = dict(batch)
    for key in SCENE_NEGATIVE_KEYS:
        if f"{key}_neg" in batch:
            merged[key] = _concat_batch(batch[key], batch[f"{key}_neg"])
    return merged


def _to_device(value, device):
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: v.to(device, non_blocking=True) for k, v in value.items()}
    return value.to(device, non_blocking=True)


def _flatten_choices(video):
    """[B, 5, T, 3, R, R] (or a dict of them) → [B*5, T, 3, R, R]."""
    if isinstance(video, dict):
        return {k: v.flatten(0, 1) for k, v in video.items()}
    return video.flatten(0, 1)


@TASKS.register("EgoClipPretraining")
class EgoClipPretraining(Task):
    """Contrastive pretraining on EgoClip batches; evaluation on EgoMCQ batches.

    Step logs: ``loss/egonce``, ``loss/temporal``, ``schedule/temperature``, ``schedule/lambda``,
    ``data/num_pairs``, ``fusion/weight_s{S}`` (multi-scale: mean fusion weight of each scale) and
    ``data/replaced_clips`` (clips of this process's batch replaced after a read error; per-epoch and run totals
    over all ranks come from :class:`trainer.hooks.ReplacedClipsReport`).
    """

    consistent_keys = (
        ("arch.args.scales", "data_loader.args.video_params.scales", "valid_data_loader.args.video_params.scales"),
        ("arch.args.video_params.input_res", "data_loader.args.video_params.input_res",
         "valid_data_loader.args.video_params.input_res"),
    )
    default_evaluators = ("EgoMCQ",)

    def __init__(self, model, objective=None):
        super().__init__(model, objective)
        self.replaced_clips = 0  # this process's clips replaced after read errors in this epoch
        self.replaced_rows: list[str] = []  # the failed rows, for the epoch's report (a few are kept)

    def default_hooks(self) -> list:
        return [ReplacedClipsReport()]

    def _model_inputs(self, batch: dict, device) -> dict:
        inputs = {"text": self.model.tokenize(batch["text"], device=device),
                  "video": _to_device(batch["video"], device)}
        if batch.get("scale_mask") is not None:
            inputs["scale_mask"] = _to_device(batch["scale_mask"], device)
        return inputs

    def _forward(self, inputs: dict) -> dict:
        if isinstance(inputs["video"], dict):
            return self.model.forward_with_scales(inputs)
        text_embeds, video_embeds = self.model(inputs)
        return {"text_embeds": text_embeds, "video_embeds": video_embeds}

    def training_step(self, batch: dict, ctx: StepContext) -> StepOutput:
        num_samples = len(batch["text"])
        batch = append_scene_negatives(batch)
        outputs = self._forward(self._model_inputs(batch, ctx.device))
        loss, components = self.objective(
            outputs["text_embeds"], outputs["video_embeds"],
            verb_vec=_to_device(batch["verb_vec"], ctx.device), noun_vec=_to_device(batch["noun_vec"], ctx.device),
            temporal_pairs=_to_device(batch.get("temporal_pairs"), ctx.device),
            scale_embeds=outputs.get("scale_embeds"),
            step=ctx.global_step, epoch=ctx.epoch - 1, total_epochs=ctx.total_epochs)
        logs = {f"{COMPONENT_GROUPS.get(key, 'loss')}/{key}": value for key, value in components.items()}
        if "fusion_weights" in outputs:
            scales = self.model.scales
            weights = outputs["fusion_weights"].detach().float().reshape(-1, len(scales)).mean(0)
            logs.update({f"fusion/weight_s{s}": weights[i] for i, s in enumerate(scales)})
        if "num_replaced" in batch:  # lax loading: clips replaced after a read error, this process's batch
            self.replaced_clips += batch["num_replaced"]
            self.replaced_rows = (self.replaced_rows + list(batch["replaced_rows"]))[:10]
            logs["data/replaced_clips"] = batch["num_replaced"]
        return StepOutput(loss=loss, num_samples=num_samples, logs=logs)

    def evaluation_step(self, batch: dict, ctx: StepContext) -> dict:
        """``{'text': [B, D], 'video': {'': [B*5, D], 'scale{S}/': [B*5, D] per scale (multi-scale)}}``."""
        tokens = self.model.tokenize(batch["text"], device=ctx.device)
        video = _to_device(_flatten_choices(batch["video"]), ctx.device)
        text_embeds = self.model.compute_text(tokens)
        if isinstance(video, dict):
            mask = batch.get("scale_mask")  # [B, 5, S]: scales each choice clip is long enough for
            mask = None if mask is None else mask.flatten(0, 1).to(ctx.device)
            fused, per_scale = self.model.compute_video(video, scale_mask=mask, return_scales=True)
            videos = {"": fused, **{f"scale{s}/": e for s, e in per_scale.items()}}
        else:
            videos = {"": self.model.compute_video(video)}
        return {"text": text_embeds, "video": videos}
