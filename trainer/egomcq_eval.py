"""EgoMCQ evaluation shared by the trainer's validation and ``run/test_egomcq.py``.

Each rank scores its own shard of questions (no padding, so nothing is counted twice) and the per-type
hit/question counts are summed across ranks.
"""
from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from model.metric import egomcq_accuracy, egomcq_counts
from utils import distributed

logger = logging.getLogger(__name__)


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` of a dataset: disjoint shards whose union is every index once."""

    def __init__(self, num_items: int, rank: int, world_size: int):
        self.indices = list(range(rank, num_items, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def sharded_eval_loader(loader: DataLoader) -> DataLoader:
    """The same dataset, batch size and collate as ``loader``, sharded across ranks without padding."""
    rank, world = distributed.get_rank(), distributed.get_world_size()
    return DataLoader(loader.dataset, batch_size=loader.batch_size,
                      sampler=ShardSampler(len(loader.dataset), rank, world),
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory)


def _choice_scores(text_embeds: torch.Tensor, video_embeds: torch.Tensor) -> torch.Tensor:
    """text [B, D], video [B*5, D] → cosine scores [B, 5]."""
    video = F.normalize(video_embeds.float(), dim=-1).view(text_embeds.shape[0], -1, video_embeds.shape[-1])
    text = F.normalize(text_embeds.float(), dim=-1)
    return torch.einsum("bd,bkd->bk", text, video)


def _flatten_choices(video):
    """[B, 5, T, 3, R, R] (or a dict of them) → [B*5, T, 3, R, R]."""
    if isinstance(video, dict):
        return {k: v.flatten(0, 1) for k, v in video.items()}
    return video.flatten(0, 1)


@torch.no_grad()
def evaluate_egomcq(model, loader: DataLoader, device: torch.device,
                    autocast=contextlib.nullcontext, show_progress: bool = True) -> dict:
    """Accuracy of ``model`` (unwrapped FrozenInTime or MultiScaleFrozenInTime) on an EgoMCQ loader.

    Returns ``{'inter_video_acc', 'intra_video_acc', '*_questions'}`` in percent; a multi-scale model adds
    ``scale{S}/inter_video_acc`` etc. for each scale alone.
    """
    was_training = model.training
    model.eval()
    counts: dict[str, torch.Tensor] = {}
    batches = sharded_eval_loader(loader)
    bar = tqdm(batches, desc="EgoMCQ", leave=False, disable=not (show_progress and distributed.is_main_process()))
    for batch in bar:
        tokens = model.tokenize(batch["text"], device=device)
        video = _flatten_choices(batch["video"])
        with autocast():
            text_embeds = model.compute_text(tokens)
            if isinstance(video, dict):
                video = {k: v.to(device, non_blocking=True) for k, v in video.items()}
                mask = batch.get("scale_mask")  # [B, 5, S]: scales each choice clip is long enough for
                mask = None if mask is None else mask.flatten(0, 1).to(device)
                fused, per_scale = model.compute_video(video, scale_mask=mask, return_scales=True)
                outputs = {"": fused, **{f"scale{s}/": e for s, e in per_scale.items()}}
            else:
                outputs = {"": model.compute_video(video.to(device, non_blocking=True))}
        for prefix, video_embeds in outputs.items():
            scores = _choice_scores(text_embeds, video_embeds).cpu()
            batch_counts = egomcq_counts(scores, batch["correct"], batch["type"])
            counts[prefix] = counts.get(prefix, 0) + batch_counts
    model.train(was_training)
    # Rank 0 always holds question 0, so its keys are complete; a rank with an empty shard adds zeros.
    prefixes = distributed.broadcast_object(sorted(counts))
    result = {}
    for prefix in prefixes:
        local = counts.get(prefix, torch.zeros(2, 2, dtype=torch.float64))
        total = distributed.all_reduce_sum(local.to(device)).cpu()
        result.update({prefix + k: v for k, v in egomcq_accuracy(total).items()})
    return result


def evaluate_loaders(model, loaders: list[DataLoader], device: torch.device, autocast=contextlib.nullcontext,
                     show_progress: bool = True) -> dict:
    """:func:`evaluate_egomcq` on each loader; with several, keys are prefixed ``loader{i}/``."""
    metrics = {}
    for i, loader in enumerate(loaders):
        prefix = "" if len(loaders) == 1 else f"loader{i}/"
        result = evaluate_egomcq(model, loader, device, autocast, show_progress)
        metrics.update({prefix + k: v for k, v in result.items()})
    return metrics

