"""Zero-shot classification of labelled feature sets: Kinetics-style top-k and Charades-style mAP.

``outputs`` of a batch (from the task's ``evaluation_step``): ``{'scores': {prompt: [B, C] logits},
'classifier_norm': str}``; ``batch`` has ``labels`` [B, C] multi-hot and ``ego`` [B]. Both evaluators report
``classifier_norm`` with their numbers, so each number says which classifier normalisation produced it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from model.metrics.classification import charades_map, topk_hits
from utils import distributed
from utils.registry import EVALUATORS

CHARADES_VIDEOS = ("all", "ego", "nonego")
CHARADES_PROMPTS = ("name", "camera_wearer", "person")


@EVALUATORS.register()
class ZeroShotTopK:
    """Top-1 / top-5 accuracy in percent over every rank's shard (``top1``, ``top5``, ``videos``) of the
    prompt ``prompt``'s scores; each video must have exactly one label. Batches of sets without that prompt
    are not its to score (with several validation sets it reports only on those that have it)."""

    metric_names = ("top1", "top5", "videos")

    def __init__(self, prompt: str = "person_doing"):
        self.prompt = prompt

    def reset(self) -> None:
        self.counts = torch.zeros(3, dtype=torch.float64)
        self.classifier_norm = None

    def process(self, batch, outputs) -> None:
        if self.prompt not in outputs["scores"]:
            return
        labels = batch["labels"]
        if not bool((labels.sum(1) == 1).all()):
            raise ValueError("ZeroShotTopK: every video needs exactly one label (use CharadesZeroShot for "
                             "multi-label sets)")
        hits = topk_hits(outputs["scores"][self.prompt], labels.argmax(1), (1, 5))
        self.counts += torch.tensor([hits[1], hits[5], len(labels)], dtype=torch.float64)
        self.classifier_norm = outputs["classifier_norm"]

    def compute(self) -> dict:
        hits1, hits5, videos = distributed.all_reduce_sum(self.counts).tolist()
        if not videos:
            return {}
        return {"top1": 100.0 * hits1 / max(videos, 1), "top5": 100.0 * hits5 / max(videos, 1),
                "videos": int(videos), "classifier_norm": distributed.broadcast_object(self.classifier_norm)}


def _gather_rows(array: np.ndarray | None) -> np.ndarray:
    """Every rank's rows (None: a rank without any), concatenated in rank order."""
    if not distributed.is_dist():
        return array
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate([part for part in parts if part is not None])


@EVALUATORS.register()
class CharadesZeroShot:
    """Charades-Ego zero-shot mAP (percent, :func:`charades_map`): per-video logits → softmax over classes, for
    videos {all, ego, nonego} × prompts {name, camera_wearer, person}: ``mAP_<videos>_<prompt>``. Ego4D CLEP
    selects its checkpoint by ``mAP_ego_name``. Scores the batches of sets that carry all three prompts."""

    metric_names = tuple(f"mAP_{v}_{p}" for v in CHARADES_VIDEOS for p in CHARADES_PROMPTS) + ("videos",)

    def reset(self) -> None:
        self.scores = {prompt: [] for prompt in CHARADES_PROMPTS}
        self.labels, self.ego, self.classifier_norm = [], [], None

    def process(self, batch, outputs) -> None:
        if not all(prompt in outputs["scores"] for prompt in CHARADES_PROMPTS):
            return
        for prompt in CHARADES_PROMPTS:
            self.scores[prompt].append(outputs["scores"][prompt].softmax(dim=-1).double().cpu().numpy())
        self.labels.append(batch["labels"].cpu().numpy())
        self.ego.append(batch["ego"].cpu().numpy().astype(bool))
        self.classifier_norm = outputs["classifier_norm"]

    def compute(self) -> dict:
        if not distributed.any_rank(bool(self.labels)):
            return {}
        labels = _gather_rows(np.concatenate(self.labels) if self.labels else None)
        ego = _gather_rows(np.concatenate(self.ego) if self.ego else None)
        subsets = {"all": np.ones(len(ego), dtype=bool), "ego": ego, "nonego": ~ego}
        result = {}
        for prompt in CHARADES_PROMPTS:
            scores = _gather_rows(np.concatenate(self.scores[prompt]) if self.labels else None)
            for videos, rows in subsets.items():
                result[f"mAP_{videos}_{prompt}"] = charades_map(scores[rows], labels[rows])["mAP"] if rows.any() \
                    else float("nan")
        result["videos"] = len(labels)
        result["classifier_norm"] = distributed.broadcast_object(self.classifier_norm)
        return result
