"""Video-text retrieval fine-tuning and zero-shot evaluation (EK-100 multi-instance retrieval).

Training batches: ``video`` [B, T, 3, R, R], ``text`` (B captions), ``relevance`` [B] (of each caption to its
clip); the objective sees the cosine matrix of the batch gathered over ranks (rows text, columns video):
``MaxMarginRankingLoss`` (EgoVLP), ``AdaptiveMaxMarginRankingLoss`` (EgoVLPv2: margin scaled by the relevance)
or ``NormSoftmaxLoss``. Evaluation: ``{'text': [B, D], 'video': [B, D]}`` per batch for the evaluators.
A multi-scale model gets each scale's frames as nested subsets of the T frames (T = its largest scale).
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from data_loader.frame_sampling import sample_multiscale_indices
from model.distributed_gather import all_gather_tensor, all_gather_with_grad, gather_batch_sizes
from trainer.hooks import ReplacedClipsReport
from trainer.tasks.base import StepContext, StepOutput, Task
from utils.registry import TASKS


def model_video_input(model, video: torch.Tensor):
    """``video`` [B, T, 3, R, R] as the model takes it: the tensor, or for a multi-scale model
    ``{'frames_<s>': [B, s, 3, R, R]}`` with each scale's frames evenly spread over the T (nested subsets)."""
    scales = getattr(model, "scales", None)
    if scales is None:
        return video
    if video.shape[1] < max(scales):
        raise ValueError(f"multi-scale model with scales {list(scales)} needs at least {max(scales)} frames per "
                         f"clip, got {video.shape[1]}")
    positions = sample_multiscale_indices(scales, 0, video.shape[1], "uniform")
    return {f"frames_{s}": video[:, positions[s]] for s in scales}


def encode_video(model, video: torch.Tensor, device) -> torch.Tensor:
    """Projected video embeddings [B, D] of ``video`` [B, T, 3, R, R] (single- or multi-scale model)."""
    return model.compute_video(model_video_input(model, video.to(device, non_blocking=True)))


def encode_text(model, texts: list[str], device) -> torch.Tensor:
    """Projected text embeddings [B, D] from the text tower alone."""
    return model.compute_text(model.tokenize(list(texts), device=device))


def gathered_cosine(text_embeds: torch.Tensor, video_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine matrix [N, N] (rows text, columns video) of the batch gathered over ranks (gradients flow back to
    every rank's own rows), in float32."""
    sizes = gather_batch_sizes(video_embeds.shape[0], video_embeds.device)
    text = F.normalize(all_gather_with_grad(text_embeds, sizes).float(), dim=-1, eps=1e-8)
    video = F.normalize(all_gather_with_grad(video_embeds, sizes).float(), dim=-1, eps=1e-8)
    return text @ video.t()


def count_replaced_clips(task, batch: dict, logs: dict) -> None:
    """Add a training batch's lax-replaced clips to ``task.replaced_clips`` / ``replaced_rows`` (reported per epoch
    by :class:`ReplacedClipsReport`) and to the step logs."""
    if "num_replaced" in batch:
        task.replaced_clips += batch["num_replaced"]
        task.replaced_rows = (task.replaced_rows + list(batch["replaced_rows"]))[:10]
        logs["data/replaced_clips"] = batch["num_replaced"]


@TASKS.register("Retrieval")
class VideoTextRetrieval(Task):
    """Fine-tune or evaluate a dual encoder for video-text retrieval.

    Step logs: ``loss/<objective name>``, ``data/mean_relevance`` (of the batch's captions, when the batch has
    them), ``data/replaced_clips``.
    """

    default_evaluators = ()
    consistent_keys = (("valid_data_loader.args.meta_dir", "evaluators.args.meta_dir"),)

    def __init__(self, model, objective=None):
        super().__init__(model, objective)
        self.replaced_clips, self.replaced_rows = 0, []
        self._weighted = objective is not None and "weight" in inspect.signature(objective.forward).parameters

    def default_hooks(self) -> list:
        return [ReplacedClipsReport()]

    def training_step(self, batch: dict, ctx: StepContext) -> StepOutput:
        video = encode_video(self.model, batch["video"], ctx.device)
        text = encode_text(self.model, batch["text"], ctx.device)
        with torch.autocast(device_type=ctx.device.type, enabled=False):
            sim = gathered_cosine(text.float(), video.float())
            if self._weighted:
                if "relevance" not in batch:
                    raise KeyError(f"{type(self.objective).__name__} needs each caption's 'relevance' in the batch")
                weight = all_gather_tensor(torch.as_tensor(batch["relevance"]).float().to(ctx.device))
                loss = self.objective(sim, weight)
            else:
                loss = self.objective(sim)
        logs = {f"loss/{type(self.objective).__name__}": loss.detach()}
        if "relevance" in batch:
            logs["data/mean_relevance"] = torch.as_tensor(batch["relevance"]).float().mean()
        count_replaced_clips(self, batch, logs)
        return StepOutput(loss=loss, num_samples=len(batch["text"]), logs=logs)

    def evaluation_step(self, batch: dict, ctx: StepContext) -> dict:
        return {"text": encode_text(self.model, batch["text"], ctx.device),
                "video": encode_video(self.model, batch["video"], ctx.device)}
