"""Charades-Ego multi-label recognition: mAP over classes of every test video's class scores."""
from __future__ import annotations

import torch

from model.metrics.classification import charades_map
from trainer.evaluators.gather import gather_rows, num_rows_over_ranks
from utils.registry import EVALUATORS


@EVALUATORS.register("CharadesEgo")
class CharadesEgoMAP:
    """``mAP`` (percent over classes with a positive video; videos without labels ranked last) and
    ``classes_scored``, from batches with ``index`` [B] (video rows), ``label`` [B, C] multi-hot and outputs
    ``{'scores': [B, C]}``. Every video row up to the last one scored counts exactly once whatever the number of
    ranks (a row scored twice, e.g. a padded duplicate, or not at all raises). With ``random_baseline_draws``
    > 0 it also reports ``mAP_random_scores``, the chance level on the same labels (mean over that many draws
    of uniformly random scores)."""

    metric_names = ("mAP", "classes_scored", "mAP_random_scores")

    def __init__(self, random_baseline_draws: int = 0):
        self.random_baseline_draws = int(random_baseline_draws)

    def reset(self) -> None:
        self.rows, self.scores, self.labels = [], [], []

    def process(self, batch, outputs) -> None:
        self.rows.append(torch.as_tensor(batch["index"]).cpu())
        self.scores.append(outputs["scores"].detach().float().cpu())
        self.labels.append(torch.as_tensor(batch["label"]).float().cpu())

    def compute(self) -> dict[str, float]:
        num_rows = num_rows_over_ranks(self.rows)
        scores = gather_rows(self.rows, self.scores, num_rows, "CharadesEgo scores")
        labels = gather_rows(self.rows, self.labels, num_rows, "CharadesEgo labels")
        result = charades_map(scores, labels)
        metrics = {"mAP": result["mAP"], "classes_scored": result["classes_scored"]}
        if self.random_baseline_draws:
            metrics["mAP_random_scores"] = random_scores_map(labels, self.random_baseline_draws)
        return metrics


def random_scores_map(labels: torch.Tensor, draws: int, seed: int = 0) -> float:
    """Mean mAP (percent) of ``draws`` sets of uniformly random scores on ``labels`` [N, C]: the chance level."""
    generator = torch.Generator().manual_seed(seed)
    return sum(charades_map(torch.rand(labels.shape, generator=generator, dtype=torch.float64), labels)["mAP"]
               for _ in range(draws)) / draws
