"""Evaluators of temporal alignment: they collect every video's frame embeddings (from the task's
``evaluation_step``) together with its task, split, frame labels and action segments, and score them per task,
then average over tasks. Run them on a loader of split 'all': training videos are used only to fit (SVC,
regression, the path-length normaliser Ĝ), test videos only to score.

Each rank sees a shard of the videos; ``compute`` gathers the records of every rank first.
"""
from __future__ import annotations

import abc
import itertools
from collections import defaultdict

import numpy as np
import torch
from scipy.special import expit

from model.metrics.alignment import (drop_counts, drop_prf1, enclosed_area_error, few_shot_classification,
                                     kendalls_tau, kendalls_tau_wild, phase_classification, phase_progression_r2)
from model.metrics.progress import (action_progress, geodesic_action_progress, online_progress_error, path_length,
                                    video_progress)
from utils import distributed
from utils.registry import EVALUATORS


def gather_records(records: list[dict]) -> list[dict]:
    """Every rank's records, in rank order (the local list when not distributed)."""
    if not distributed.is_dist():
        return records
    gathered = [None] * distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, records)
    return [record for part in gathered for record in part]


def _mean(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


class VideoRecords(abc.ABC):
    """Base class: keeps one record per video; subclasses implement ``score_task(train, test) -> {metric: value}``
    and the result is the mean over tasks (tasks without test videos are skipped)."""

    metric_names: tuple[str, ...] = ()

    def reset(self) -> None:
        self.records: list[dict] = []

    def process(self, batch: dict, outputs: dict) -> None:
        progress = outputs.get("progress") or [None] * len(outputs["embeddings"])
        contexts = outputs.get("contexts") or [None] * len(outputs["embeddings"])
        for i, embeddings in enumerate(outputs["embeddings"]):
            self.records.append({
                "handle": batch["handle"][i], "task": batch["task"][i], "split": batch["split"][i],
                "embeddings": embeddings.numpy(), "labels": batch["labels"][i].numpy(),
                "segments": [(s, e) for s, e, _ in batch["segments"][i]],
                "progress": None if progress[i] is None else progress[i].numpy(),
                "context": None if contexts[i] is None else contexts[i].numpy()})

    def compute(self) -> dict[str, float]:
        by_task = defaultdict(lambda: {"train": [], "test": []})
        for record in sorted(gather_records(self.records), key=lambda r: r["handle"]):
            by_task[record["task"]][record["split"]].append(record)
        scores = defaultdict(list)
        for task in sorted(by_task):
            if by_task[task]["test"]:
                for name, value in self.score_task(by_task[task]["train"], by_task[task]["test"]).items():
                    scores[name].append(value)
        return {name: _mean(scores.get(name, [])) for name in self.metric_names}

    @abc.abstractmethod
    def score_task(self, train: list[dict], test: list[dict]) -> dict[str, float]:
        """Metrics of one task from its training and test video records."""


@EVALUATORS.register()
class AlignmentKendallTau(VideoRecords):
    """Over the ordered pairs of a task's test videos: Kendall's τ (all frames, every ``stride``-th),
    τ in the wild (alignable frames) and the enclosed area error (``kendalls_tau``, ``kendalls_tau_wild``,
    ``enclosed_area_error``)."""

    metric_names = ("kendalls_tau", "kendalls_tau_wild", "enclosed_area_error")

    def __init__(self, stride: int = 1):
        self.stride = stride

    def score_task(self, train, test):
        pairs = list(itertools.permutations(test, 2))
        return {
            "kendalls_tau": _mean([kendalls_tau(a["embeddings"], b["embeddings"], self.stride) for a, b in pairs]),
            "kendalls_tau_wild": _mean([kendalls_tau_wild(a["embeddings"], b["embeddings"], a["labels"], b["labels"])
                                        for a, b in pairs]),
            "enclosed_area_error": _mean([enclosed_area_error(a["embeddings"], b["embeddings"], a["labels"],
                                                              b["labels"]) for a, b in pairs])}


@EVALUATORS.register()
class PhaseClassification(VideoRecords):
    """Frame action classification (background is a class) by an SVC fitted on 10 / 50 / 100 % of a task's
    training videos and scored on its test videos (``phase_acc_10``, ``phase_acc_50``, ``phase_acc_100``, in %),
    and the R² of a linear regression from embedding to in-action progress (``phase_progression_r2``)."""

    metric_names = ("phase_acc_10", "phase_acc_50", "phase_acc_100", "phase_progression_r2")

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score_task(self, train, test):
        if not train:
            return {}
        accuracy = phase_classification([r["embeddings"] for r in train], [r["labels"] for r in train],
                                        [r["embeddings"] for r in test], [r["labels"] for r in test],
                                        fractions=(0.1, 0.5, 1.0), seed=self.seed)
        progress = [[action_progress(r["segments"], len(r["labels"])) for r in part] for part in (train, test)]
        r2 = phase_progression_r2([r["embeddings"] for r in train], progress[0],
                                  [r["embeddings"] for r in test], progress[1])
        return {"phase_acc_10": 100 * accuracy[0.1], "phase_acc_50": 100 * accuracy[0.5],
                "phase_acc_100": 100 * accuracy[1.0], "phase_progression_r2": r2}


@EVALUATORS.register()
class FewShotPhaseClassification(VideoRecords):
    """Few-shot frame classification (TCC protocol): per episode an SVC fitted on ``k`` random training videos of
    the task, scored on its test videos; mean accuracy in % over ``episodes`` (``few_shot_acc_<k>``) and the 95 %
    confidence half-width (``few_shot_ci_<k>``)."""

    def __init__(self, shots: list[int] = (1, 2, 5), episodes: int = 50, seed: int = 42):
        self.shots, self.episodes, self.seed = tuple(shots), episodes, seed
        self.metric_names = tuple(f"few_shot_{kind}_{k}" for k in self.shots for kind in ("acc", "ci"))

    def score_task(self, train, test):
        if not train:
            return {}
        result = few_shot_classification([r["embeddings"] for r in train], [r["labels"] for r in train],
                                         [r["embeddings"] for r in test], [r["labels"] for r in test],
                                         self.shots, self.episodes, self.seed)
        return {name: 100 * value for k, (mean, ci) in result.items()
                for name, value in ((f"few_shot_acc_{k}", mean), (f"few_shot_ci_{k}", ci))}


@EVALUATORS.register()
class OnlineProgressError(VideoRecords):
    """Online progress errors on a task's test videos (fractions, lower is better):

    * ``ope``: video level, geodesic progress normalised by Ĝ, the mean path length of the task's training videos;
    * ``ope_action_geodesic``: action level, the path length normalised within each action;
    * ``ope_action_head``: action level, the learnable head fed each action from its start (when the model has one);
    * ``ope_action_constant``: action level, the constant 0.5 baseline.
    """

    metric_names = ("ope", "ope_action_geodesic", "ope_action_head", "ope_action_constant")

    def score_task(self, train, test):
        if not train:
            return {}
        g_hat = float(np.mean([path_length(r["embeddings"])[-1] for r in train]))
        scores = defaultdict(list)
        for r in test:
            length = len(r["labels"])
            target = action_progress(r["segments"], length)
            geodesic = path_length(r["embeddings"]) / g_hat if g_hat > 0 else np.zeros(length)
            scores["ope"].append(online_progress_error(geodesic, video_progress(r["segments"], length)))
            scores["ope_action_geodesic"].append(
                online_progress_error(geodesic_action_progress(r["embeddings"], r["segments"]), target))
            scores["ope_action_constant"].append(online_progress_error(np.full(length, 0.5), target))
            if r["progress"] is not None:
                scored = ~np.isnan(r["progress"])
                scores["ope_action_head"].append(online_progress_error(r["progress"][scored], target[scored]))
        return {name: _mean(values) for name, values in scores.items()}


@EVALUATORS.register()
class DropDetection(VideoRecords):
    """GTCC drop detection over the ordered pairs of a task's test videos: frame i of U is predicted dropped when
    ``sigmoid([u_i; 1]ᵀ c(V)) > threshold``; background frames should be dropped. Precision, recall, F1 and accuracy
    in percent, pooled over the task's pairs (``drop_precision``, ``drop_recall``, ``drop_f1``,
    ``drop_accuracy``); NaN for a model without a drop-context head."""

    metric_names = ("drop_precision", "drop_recall", "drop_f1", "drop_accuracy")

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def score_task(self, train, test):
        counts = np.zeros(4)
        for u, v in itertools.permutations(test, 2):
            if v["context"] is None:
                return {}
            score = u["embeddings"] @ v["context"][:-1] + v["context"][-1]
            counts += drop_counts(expit(score) > self.threshold, u["labels"] == 0)
        return drop_prf1(counts)
