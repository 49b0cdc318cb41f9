"""A second, tiny system built only from the registries, a config and the engine: classifying feature vectors.

Nothing in ``trainer/`` knows about it. Used by tests/test_engine.py (in-process and under torchrun, where the
config names these classes by their dotted import paths).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from data_loader.worker_signals import ignore_preemption_signals
from trainer.tasks.base import StepOutput, Task
from utils import distributed
from utils.registry import EVALUATORS, LOADERS, LOSSES, MODELS, TASKS


def gaussian_blobs(num_items: int, dim: int, num_classes: int, seed: int, split: str) -> list[dict]:
    """Items ``{'x': [dim], 'y': int}``: class centres fixed by ``seed``, noise per split."""
    centres = 3 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed))
    noise = torch.Generator().manual_seed(seed + {"train": 1, "val": 2}[split])
    labels = torch.randint(num_classes, (num_items,), generator=noise)
    features = centres[labels] + torch.randn(num_items, dim, generator=noise)
    return [{"x": features[i], "y": labels[i]} for i in range(num_items)]


@LOADERS.register("TinyFeatureLoader")
class TinyFeatureLoader(DataLoader):
    """Batches ``{'x': [B, dim], 'y': [B]}`` in a fixed order, sharded over ranks like DistributedSampler."""

    def __init__(self, split: str = "train", num_items: int = 64, dim: int = 8, num_classes: int = 3,
                 batch_size: int = 8, seed: int = 0, num_workers: int = 0):
        items = gaussian_blobs(num_items, dim, num_classes, seed, split)
        order = DistributedSampler(items, num_replicas=distributed.get_world_size(), rank=distributed.get_rank(),
                                   shuffle=False)
        super().__init__(items, batch_size=batch_size, sampler=order, collate_fn=default_collate,
                         num_workers=num_workers, worker_init_fn=ignore_preemption_signals)


@MODELS.register("TinyMLP")
class TinyMLP(nn.Module):
    """``x [B, dim]`` → logits ``[B, num_classes]``."""

    def __init__(self, dim: int = 8, hidden: int = 16, num_classes: int = 3):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.encoder(x))


LOSSES.register("TinyCrossEntropy")(nn.CrossEntropyLoss)


@EVALUATORS.register("TinyTop1")
class TinyTop1:
    """Top-1 accuracy in percent over every rank's shard (``top1``, ``items``).

    ``seconds_per_batch`` slows it down and ``started_marker`` (a path) is created at the first batch, so a
    test can send a signal while an evaluation is surely running.
    """

    metric_names = ("top1", "items")

    def __init__(self, seconds_per_batch: float = 0.0, started_marker: str | None = None):
        self.seconds_per_batch, self.started_marker = seconds_per_batch, started_marker

    def reset(self):
        self.counts = torch.zeros(2, dtype=torch.float64)

    def process(self, batch, predictions):
        if self.started_marker:
            Path(self.started_marker).touch()
        time.sleep(self.seconds_per_batch)
        self.counts += torch.tensor([(predictions.cpu() == batch["y"]).sum().item(), len(batch["y"])],
                                    dtype=torch.float64)

    def compute(self):
        hits, items = distributed.all_reduce_sum(self.counts).tolist()
        return {"top1": 100.0 * hits / items, "items": int(items)}


@TASKS.register("TinyFeatureClassification")
class TinyFeatureClassification(Task):
    """Cross-entropy on feature vectors; ``split_optimizers`` gives the encoder and the head an optimizer each."""

    default_evaluators = ("TinyTop1",)

    def __init__(self, model, objective=None, split_optimizers: bool = False):
        super().__init__(model, objective)
        self.split_optimizers = split_optimizers

    def training_step(self, batch, ctx):
        loss = self.objective(self.model(batch["x"].to(ctx.device)), batch["y"].to(ctx.device))
        return StepOutput(loss=loss, num_samples=len(batch["y"]), logs={"loss/cross_entropy": loss.detach()})

    def evaluation_step(self, batch, ctx):
        return self.model(batch["x"].to(ctx.device)).argmax(dim=1)

    def optimizer_groups(self, base_lr, weight_decay, options):
        if not self.split_optimizers:
            return super().optimizer_groups(base_lr, weight_decay, options)
        return {part: [{"name": "all", "params": list(getattr(self.model, part).parameters())}]
                for part in ("encoder", "head")}


def with_import_paths(config: dict) -> dict:
    """A copy of a tiny-task config naming its classes by import path, for a process that has not imported this
    module (``run/train.py`` under torchrun)."""
    config = copy.deepcopy(config)
    for section in ("task", "arch", "data_loader", "valid_data_loader"):
        if section in config:
            config[section]["type"] = f"{__name__}.{config[section]['type']}"
    config["loss"]["type"] = "torch.nn.CrossEntropyLoss"
    for evaluator in config.get("evaluators", []):
        evaluator["type"] = f"{__name__}.{evaluator['type']}"
    return config
