"""EK-100 multi-instance retrieval: mAP and nDCG of every test clip against every test sentence."""
from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F

from data_loader.ek100_mir import load_annotations
from model.metrics.retrieval import ek100_mir_metrics
from trainer.evaluators.gather import gather_rows
from utils.registry import EVALUATORS


@functools.lru_cache(maxsize=2)
def cached_annotations(meta_dir: str, split: str):
    """The split's annotations with its relevancy matrix, read once per process (evaluators are built anew for
    every evaluation)."""
    return load_annotations(meta_dir, split)


def dual_softmax_similarity(text: torch.Tensor, video: torch.Tensor, temperature: float = 500.0) -> torch.Tensor:
    """EgoVLP+'s re-weighting over the whole test set: ``S = T·Vᵀ`` (raw dot products, [texts, videos]),
    ``S ⊙ softmax(S / temperature, over videos)``, then softmax over texts. Uses test-set statistics."""
    sim = text @ video.t()
    sim = sim * torch.softmax(sim / temperature, dim=1)
    return torch.softmax(sim, dim=0)


@EVALUATORS.register("EK100MIRRetrieval")
class EK100MIRRetrieval:
    """``mAP_V2T, mAP_T2V, mAP_AVG, nDCG_V2T, nDCG_T2V, nDCG_AVG`` (percent) on the EK-100 MIR test split.

    ``process`` takes batches with ``index`` [B] (clip rows) and outputs ``{'text': [B, D], 'video': [B, D]}``
    (the row's narration and clip embeddings). Sentence j is scored with the text embedding of the clip its
    ``narration_id`` names (the reference protocol; duplicated sentence strings are not merged). Similarity:
    cosine, or with ``dual_softmax`` EgoVLP+'s test-set re-weighting (labelled ``dual_softmax/`` in the keys).

    Args:
        meta_dir: the retrieval annotation folder (clip csv, sentence csv, relevancy pickle of ``split``).
        split: 'test' (or 'train', for a sanity check on training data).
        nan_policy: 'omit' (average defined queries; ``skipped_*`` counts) or 'propagate' (NaN as the reference).
        dual_softmax: also report the dual-softmax metrics.
    """

    metric_names = ("mAP_V2T", "mAP_T2V", "mAP_AVG", "nDCG_V2T", "nDCG_T2V", "nDCG_AVG", "skipped_mAP_V2T",
                    "skipped_mAP_T2V", "skipped_nDCG_V2T", "skipped_nDCG_T2V")

    def __init__(self, meta_dir: str, split: Literal["train", "test"] = "test",
                 nan_policy: Literal["omit", "propagate"] = "omit", dual_softmax: bool = False):
        self.meta_dir, self.split, self.nan_policy, self.dual_softmax = meta_dir, split, nan_policy, dual_softmax

    @property
    def annotations(self):
        return cached_annotations(self.meta_dir, self.split)

    def reset(self) -> None:
        self.rows, self.text, self.video = [], [], []

    def process(self, batch, outputs) -> None:
        self.rows.append(torch.as_tensor(batch["index"]).cpu())
        self.text.append(outputs["text"].detach().float().cpu())
        self.video.append(outputs["video"].detach().float().cpu())

    def compute(self) -> dict[str, float]:
        annotations = self.annotations
        num_clips = len(annotations.clips)
        text = gather_rows(self.rows, self.text, num_clips, "EK100MIRRetrieval text")
        video = gather_rows(self.rows, self.video, num_clips, "EK100MIRRetrieval video")
        sentence_rows = torch.from_numpy(annotations.sentence_rows)
        # [clips, sentences]: sentence j is the narration of clip sentence_rows[j]
        sim_vt = F.normalize(video, dim=1, eps=1e-8) @ F.normalize(text[sentence_rows], dim=1, eps=1e-8).t()
        result = ek100_mir_metrics(sim_vt, annotations.relevancy, self.nan_policy)
        if self.dual_softmax:
            dual = dual_softmax_similarity(text, video).t()[:, sentence_rows]
            result.update({f"dual_softmax/{k}": v for k, v in
                           ek100_mir_metrics(dual, annotations.relevancy, self.nan_policy).items()})
        return result
