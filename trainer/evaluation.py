"""Evaluation over ranks: the Evaluator protocol and the one loop that feeds evaluators.

Each rank scores a disjoint shard of a loader's dataset (``rank, rank + world, ...``: no padding, so nothing
is counted twice); an evaluator's ``compute`` combines the shards (e.g. by summing counts over ranks) and
returns the same numbers on every rank.
"""
from __future__ import annotations

import logging
from typing import Callable, Protocol

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from data_loader.worker_signals import start_iterator
from utils import distributed

logger = logging.getLogger(__name__)


class Evaluator(Protocol):
    """What the evaluation loop calls: ``reset()``, then ``process(batch, outputs)`` for every batch of this
    rank's shard (``outputs`` from the task's ``evaluation_step``), then ``compute()`` on every rank."""

    def reset(self) -> None: ...

    def process(self, batch, outputs) -> None: ...

    def compute(self) -> dict[str, float]: ...


class EvaluationInterrupted(RuntimeError):
    """A stop was requested (preemption signal) while evaluating; the evaluation was abandoned."""


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` of a dataset: disjoint shards whose union is every index once."""

    def __init__(self, num_items: int, rank: int, world_size: int):
        self.indices = list(range(rank, num_items, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def sharded_loader(loader: DataLoader) -> DataLoader:
    """The same dataset, batch size, collate and worker setup as ``loader``, sharded across ranks."""
    rank, world = distributed.get_rank(), distributed.get_world_size()
    return DataLoader(loader.dataset, batch_size=loader.batch_size,
                      sampler=ShardSampler(len(loader.dataset), rank, world),
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn)


def _never() -> bool:
    return False


@torch.no_grad()
def evaluate_loader(task, loader: DataLoader, evaluators: list, ctx, show_progress: bool = True,
                    stop_requested: Callable[[], bool] = _never,
                    agree: Callable[[bool], bool] = distributed.any_rank) -> dict:
    """Run ``task.evaluation_step`` over this rank's shard of ``loader``, feed ``evaluators``, return their
    merged ``compute()``.

    This rank leaves its shard early once ``stop_requested()`` is true; then ``agree(stopped)`` (true on every
    rank if true on any) decides on every rank together, and :class:`EvaluationInterrupted` is raised. Shards
    may differ by a batch, so nothing inside the loop talks to the other ranks."""
    was_training = task.training
    task.eval()
    for evaluator in evaluators:
        evaluator.reset()
    iterator = start_iterator(sharded_loader(loader))
    bar = tqdm(total=len(iterator), desc="evaluating", leave=False,
               disable=not (show_progress and distributed.is_main_process()))
    stopped = False
    try:
        for batch in iterator:
            if stop_requested():
                stopped = True
                break
            with ctx.autocast():
                outputs = task.evaluation_step(batch, ctx)
            for evaluator in evaluators:
                evaluator.process(batch, outputs)
            bar.update(1)
    finally:
        bar.close()
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        task.train(was_training)
    if agree(stopped):
        raise EvaluationInterrupted("evaluation stopped by a signal")
    metrics = {}
    for evaluator in evaluators:
        metrics.update(evaluator.compute())
    return metrics


def evaluate_task(task, split: str, ctx, show_progress: bool = True, stop_requested: Callable[[], bool] = _never,
                  agree: Callable[[bool], bool] = distributed.any_rank) -> dict:
    """Every loader of ``split`` with fresh evaluators; with several loaders keys get a ``loader{i}/`` prefix."""
    loaders = task.loaders(split)
    metrics = {}
    for i, loader in enumerate(loaders):
        prefix = "" if len(loaders) == 1 else f"loader{i}/"
        result = evaluate_loader(task, loader, task.evaluators(split), ctx, show_progress, stop_requested, agree)
        metrics.update({prefix + key: value for key, value in result.items()})
    return metrics


def format_metrics(metrics: dict) -> str:
    """One line ``name value, ...`` of the float metrics (counts left out)."""
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float))
