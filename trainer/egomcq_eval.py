"""EgoMCQ evaluation of a bare model (FrozenInTime or MultiScaleFrozenInTime), for scripts and notebooks.

Training and ``run/evaluate.py`` reach the same code through the EgoClip task and the ``EgoMCQ`` evaluator.
"""
from __future__ import annotations

import contextlib

import torch
from torch.utils.data import DataLoader

from trainer.evaluation import ShardSampler, evaluate_loader
from trainer.evaluators.egomcq import EgoMCQEvaluator
from trainer.tasks.base import StepContext
from trainer.tasks.egoclip import EgoClipPretraining

__all__ = ["evaluate_egomcq", "ShardSampler"]


def evaluate_egomcq(model, loader: DataLoader, device: torch.device, autocast=contextlib.nullcontext,
                    show_progress: bool = True) -> dict:
    """``{'inter_video_acc', 'intra_video_acc', '*_questions'}`` in percent of ``model`` on an EgoMCQ loader
    (this rank's shard, summed over ranks); a multi-scale model adds ``scale{S}/...`` for each scale alone."""
    ctx = StepContext(device=device, global_step=0, epoch=0, total_epochs=0, total_steps=0, autocast=autocast)
    return evaluate_loader(EgoClipPretraining(model), loader, [EgoMCQEvaluator()], ctx, show_progress)
