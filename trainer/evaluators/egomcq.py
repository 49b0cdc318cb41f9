"""EgoMCQ: for each text query, which of 5 clips it describes; accuracy per question type."""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from model.metric import egomcq_accuracy, egomcq_counts
from utils import distributed
from utils.registry import EVALUATORS


def choice_scores(text_embeds: torch.Tensor, video_embeds: torch.Tensor) -> torch.Tensor:
    """text [B, D], video [B*K, D] (K choices per query, in order) → cosine scores [B, K]."""
    video = F.normalize(video_embeds.float(), dim=-1).view(text_embeds.shape[0], -1, video_embeds.shape[-1])
    text = F.normalize(text_embeds.float(), dim=-1)
    return torch.einsum("bd,bkd->bk", text, video)


@EVALUATORS.register("EgoMCQ", "egomcq_accuracy")
class EgoMCQEvaluator:
    """Inter- and intra-video accuracy in percent (``inter_video_acc``, ``intra_video_acc``, ``*_questions``).

    ``outputs`` of a batch: ``{'text': [B, D], 'video': {prefix: [B*5, D]}}``; prefix ``''`` is the model's
    answer, others (e.g. ``'scale4/'``) add their own accuracies. ``batch`` has ``correct`` [B] and
    ``type`` [B] (1 inter-video, 2 intra-video).

    ``query_groups`` (``{group: regex}``) also scores the questions whose query text matches each regex
    (``re.search``) on their own, as ``<group>/inter_video_acc`` etc. (model answer and every scale), e.g.
    ``{"open": "\\bopens?\\b"}`` for the questions about opening.
    """

    metric_names = ("inter_video_acc", "intra_video_acc", "inter_video_questions", "intra_video_questions")

    def __init__(self, query_groups: dict[str, str] | None = None):
        self.query_groups = {name: re.compile(pattern) for name, pattern in (query_groups or {}).items()}
        self.reset()

    def reset(self) -> None:
        self.counts: dict[str, torch.Tensor] = {}

    def _add(self, key: str, counts: torch.Tensor) -> None:
        self.counts[key] = self.counts.get(key, 0) + counts

    def process(self, batch, outputs) -> None:
        group_rows = {group: torch.tensor([bool(pattern.search(text)) for text in batch["text"]])
                      for group, pattern in self.query_groups.items()}
        for prefix, video_embeds in outputs["video"].items():
            scores = choice_scores(outputs["text"], video_embeds).cpu()
            self._add(prefix, egomcq_counts(scores, batch["correct"], batch["type"]))
            for group, rows in group_rows.items():
                self._add(f"{group}/{prefix}", egomcq_counts(scores[rows], batch["correct"][rows],
                                                             batch["type"][rows]))

    def compute(self) -> dict[str, float]:
        # Rank 0 always holds question 0, so its prefixes are complete; a rank with an empty shard adds zeros.
        prefixes = distributed.broadcast_object(sorted(self.counts))
        result = {}
        for prefix in prefixes:
            local = self.counts.get(prefix, torch.zeros(2, 2, dtype=torch.float64))
            total = distributed.all_reduce_sum(local)
            result.update({prefix + k: v for k, v in egomcq_accuracy(total).items()})
        return result
