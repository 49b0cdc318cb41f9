"""Evaluators of frozen features: weighted kNN, a linear probe on cached features, multi-view accuracy.

They read ``outputs["features"]`` ``[B, D]`` from the task's ``evaluation_step`` and the batch's ``label``,
``video_index`` and ``bank`` (True: a training-bank item, the kNN memory / probe training set; False: a query),
as :class:`data_loader.ssl_video.SSLVideoLoader` with ``bank_source`` yields them; any task whose evaluation
step returns features and whose loader yields those keys can use them. Each rank processes its shard; ``compute``
gathers every rank's items, so all ranks report the same numbers.
"""
from __future__ import annotations

import logging

import h5py
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from model.metrics.classification import topk_accuracy
from model.metrics.knn import knn_accuracy
from model.metrics.multiview import multiview_accuracy
from utils import distributed
from utils.registry import EVALUATORS

logger = logging.getLogger(__name__)


def gather_items(parts: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate this rank's per-batch tensors, then every rank's (in rank order)."""
    local = {key: torch.cat(values) if values else torch.empty(0) for key, values in parts.items()}
    if not distributed.is_dist():
        return local
    everyone = [None] * distributed.get_world_size()
    dist.all_gather_object(everyone, local)
    return {key: torch.cat([rank[key] for rank in everyone]) for key in local}


class _FeatureCollector:
    """Collects features, labels, video indices and bank flags of every evaluated item."""

    def __init__(self, feature_key: str = "features"):
        self.feature_key = feature_key

    def reset(self):
        self.parts = {"features": [], "label": [], "video_index": [], "bank": []}

    def process(self, batch, outputs):
        self.parts["features"].append(outputs[self.feature_key].detach().float().cpu())
        for key in ("label", "video_index", "bank"):
            self.parts[key].append(torch.as_tensor(batch[key]).cpu())

    def split(self):
        """``(bank items, query items)``, each a dict of tensors; ValueError when either is empty."""
        items = gather_items(self.parts)
        bank = items["bank"].bool()
        if bank.all() or not bank.any():
            raise ValueError(f"{type(self).__name__} needs bank and query items: give the validation loader a "
                             f"bank_source (got {int(bank.sum())} bank, {int((~bank).sum())} query items)")
        return ({k: v[bank] for k, v in items.items()}, {k: v[~bank] for k, v in items.items()})


@EVALUATORS.register("WeightedKNN")
class WeightedKNN(_FeatureCollector):
    """Weighted kNN top-1/top-5 (percent) of query items against the bank: ``knn_top1``, ``knn_top5``,
    ``knn_queries``. Args: ``k`` neighbours, ``temperature`` T, ``feature_key``."""

    def __init__(self, k: int = 20, temperature: float = 0.07, feature_key: str = "features"):
        super().__init__(feature_key)
        self.k, self.temperature = k, temperature

    def compute(self):
        bank, query = self.split()
        result = knn_accuracy(bank["features"], bank["label"], query["features"], query["label"], self.k,
                              self.temperature)
        return {f"knn_{key}": value for key, value in result.items()} | {"knn_queries": len(query["label"])}


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int = 15,
                     lr: float = 0.1, gamma: float = 0.8, batch_size: int = 64, seed: int = 0) -> torch.nn.Linear:
    """A linear classifier on frozen features: Adadelta, StepLR(γ per epoch), cross-entropy on log-softmax.
    Trains with gradients on even when called under ``torch.no_grad`` (the evaluation loop)."""
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=generator)
        head.bias.zero_()
    optimizer = torch.optim.Adadelta(head.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=gamma)
    with torch.enable_grad():
        for _ in range(epochs):
            for rows in torch.randperm(len(features), generator=generator).split(batch_size):
                loss = F.nll_loss(F.log_softmax(head(features[rows]), dim=1), labels[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            schedule.step()
    return head


@EVALUATORS.register("LinearProbe")
class LinearProbe(_FeatureCollector):
    """A linear probe trained on the bank's features, tested on the queries: ``probe_top1`` (per window),
    ``probe_nll``, ``probe_multiview_top1`` (log-probabilities averaged over each video's windows).

    The features are computed once per evaluation and reused for every probe epoch; with ``cache_path`` they
    are also written to HDF5 (``data`` float32 ``[N, D]``, ``labels`` uint8 ``[N]``, ``video`` ``[N]``, ``bank``
    ``[N]``) on rank 0. Args as :func:`fit_linear_probe`."""

    def __init__(self, epochs: int = 15, lr: float = 0.1, gamma: float = 0.8, batch_size: int = 64, seed: int = 0,
                 cache_path: str | None = None, feature_key: str = "features"):
        super().__init__(feature_key)
        self.probe_args = dict(epochs=epochs, lr=lr, gamma=gamma, batch_size=batch_size, seed=seed)
        self.cache_path = cache_path

    def _write_cache(self, bank, query):
        with h5py.File(self.cache_path, "w") as f:
            f["data"] = torch.cat([bank["features"], query["features"]]).numpy().astype(np.float32)
            f["labels"] = torch.cat([bank["label"], query["label"]]).numpy().astype(np.uint8)
            f["video"] = torch.cat([bank["video_index"], query["video_index"]]).numpy()
            f["bank"] = np.r_[np.ones(len(bank["label"]), bool), np.zeros(len(query["label"]), bool)]
        logger.info("probe features cached in %s", self.cache_path)

    def compute(self):
        bank, query = self.split()
        if self.cache_path and distributed.is_main_process():
            self._write_cache(bank, query)
        num_classes = int(max(bank["label"].max(), query["label"].max())) + 1
        head = fit_linear_probe(bank["features"], bank["label"].long(), num_classes, **self.probe_args)
        with torch.no_grad():
            log_probs = F.log_softmax(head(query["features"]), dim=1)
        labels = query["label"].long()
        return {"probe_top1": topk_accuracy(log_probs, labels, (1,))["top1"],
                "probe_nll": F.nll_loss(log_probs, labels).item(),
                "probe_multiview_top1": multiview_accuracy(log_probs, labels, query["video_index"])}


@EVALUATORS.register("MultiViewAccuracy")
class MultiViewAccuracy:
    """For a model with a classification head: ``outputs["log_probs"] [B, C]`` of every window; reports
    ``window_top1`` and ``multiview_top1`` (windows of a video averaged) over every rank's items."""

    def reset(self):
        self.parts = {"log_probs": [], "label": [], "video_index": []}

    def process(self, batch, outputs):
        self.parts["log_probs"].append(outputs["log_probs"].detach().float().cpu())
        self.parts["label"].append(torch.as_tensor(batch["label"]).cpu())
        self.parts["video_index"].append(torch.as_tensor(batch["video_index"]).cpu())

    def compute(self):
        items = gather_items(self.parts)
        return {"window_top1": topk_accuracy(items["log_probs"], items["label"], (1,))["top1"],
                "multiview_top1": multiview_accuracy(items["log_probs"], items["label"], items["video_index"])}
