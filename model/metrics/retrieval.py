"""EPIC-Kitchens-100 multi-instance retrieval metrics: mean average precision and nDCG over graded relevance.

Both take a similarity matrix ``sim_vt`` [clips, sentences] (higher = more similar) and the relevancy matrix of
the same shape (values in [0, 1]; 1 = same verb and same noun set), as numpy arrays or tensors. Video-to-text
(V2T) ranks the sentences of each clip row; text-to-video (T2V) ranks the clips of each sentence column.

Ties: items with equal similarity are ranked in their input order (a stable descending sort: the lower
column index first for V2T, the lower row index first for T2V). On tie-free input the values equal those of the
EK-100 reference evaluation (JPoSE), whose order of tied items depends on numpy's unstable sort.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

NanPolicy = Literal["omit", "propagate"]
ROWS_PER_BLOCK = 512  # queries ranked at once (bounds memory: a block of [rows, items] float64 arrays)


def _numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().double().numpy()
    return np.asarray(array, dtype=np.float64)


def _ranked_relevance(sim: np.ndarray, relevancy: np.ndarray) -> np.ndarray:
    """Each row's relevances reordered by descending similarity (ties: input order)."""
    order = np.argsort(-sim, axis=1, kind="stable")
    return np.take_along_axis(relevancy, order, axis=1)


def average_precision_rows(sim: np.ndarray, relevancy: np.ndarray) -> np.ndarray:
    """AP of each query row [Q]: ``sum_{k: r_k = 1} (sum_{i <= k} r_i) / k / #{r = 1}`` over the ranked
    relevances ``r``; only exact 1s are relevant but partial relevances add to the numerator (ranked
    ``[0.5, 1]`` gives 0.75). NaN for a row without an exact 1."""
    result = np.empty(sim.shape[0])
    ranks = np.arange(1, sim.shape[1] + 1)
    for lo in range(0, sim.shape[0], ROWS_PER_BLOCK):
        ranked = _ranked_relevance(sim[lo:lo + ROWS_PER_BLOCK], relevancy[lo:lo + ROWS_PER_BLOCK])
        relevant = ranked == 1
        precision = np.where(relevant, np.cumsum(ranked, axis=1) / ranks, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            result[lo:lo + len(ranked)] = precision.sum(axis=1) / relevant.sum(axis=1)
    return result


def _dcg(ranked: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Sum over the first ``depth[q]`` ranks p (1-based) of ``ranked[q, p] / log2(p + 1)``."""
    positions = np.arange(ranked.shape[1])
    within = positions[None, :] < depth[:, None]
    return np.where(within, ranked / np.log2(positions + 2), 0.0).sum(axis=1)


def ndcg_rows(sim: np.ndarray, relevancy: np.ndarray) -> np.ndarray:
    """nDCG of each query row [Q], cut at ``k_q = #{relevance > 0}``: DCG of the ranking over DCG of the ideal
    ranking (items by descending relevance). NaN for an all-zero relevance row."""
    result = np.empty(sim.shape[0])
    for lo in range(0, sim.shape[0], ROWS_PER_BLOCK):
        rel = relevancy[lo:lo + ROWS_PER_BLOCK]
        depth = (rel > 0).sum(axis=1)
        ideal = _dcg(-np.sort(-rel, axis=1), depth)
        with np.errstate(invalid="ignore", divide="ignore"):
            result[lo:lo + len(rel)] = _dcg(_ranked_relevance(sim[lo:lo + ROWS_PER_BLOCK], rel), depth) / ideal
    return result


def _mean(values: np.ndarray, nan_policy: NanPolicy) -> tuple[float, int]:
    """(mean in percent, number of undefined queries skipped)."""
    undefined = int(np.isnan(values).sum())
    if nan_policy == "propagate":
        return 100.0 * float(values.mean()), 0
    defined = values[~np.isnan(values)]
    return (100.0 * float(defined.mean()) if len(defined) else float("nan")), undefined


def ek100_mir_metrics(sim_vt, relevancy, nan_policy: NanPolicy = "omit") -> dict:
    """EK-100 MIR metrics in percent: ``mAP_V2T, mAP_T2V, mAP_AVG, nDCG_V2T, nDCG_T2V, nDCG_AVG``.

    sim_vt, relevancy: [clips, sentences] (numpy or torch). V2T ranks each row, T2V each column; AVG is the mean
    of the two directions. Undefined queries (mAP: no relevance exactly 1; nDCG: all relevances 0):
    ``nan_policy='propagate'`` makes the mean NaN (the reference evaluation); ``'omit'`` averages the defined
    queries and reports the number skipped as ``skipped_mAP_V2T`` etc.
    """
    if nan_policy not in ("omit", "propagate"):
        raise ValueError(f"nan_policy must be 'omit' or 'propagate', got {nan_policy!r}")
    sim, rel = _numpy(sim_vt), _numpy(relevancy)
    if sim.ndim != 2 or sim.shape != rel.shape:
        raise ValueError(f"ek100_mir_metrics: sim_vt {sim.shape} and relevancy {rel.shape} must be the same "
                         f"[clips, sentences] shape")
    result = {}
    for name, rows in (("mAP", average_precision_rows), ("nDCG", ndcg_rows)):
        for direction, (s, r) in (("V2T", (sim, rel)), ("T2V", (sim.T, rel.T))):
            result[f"{name}_{direction}"], skipped = _mean(rows(np.ascontiguousarray(s), np.ascontiguousarray(r)),
                                                           nan_policy)
            if nan_policy == "omit":
                result[f"skipped_{name}_{direction}"] = skipped
        result[f"{name}_AVG"] = (result[f"{name}_V2T"] + result[f"{name}_T2V"]) / 2
    order = ("mAP_V2T", "mAP_T2V", "mAP_AVG", "nDCG_V2T", "nDCG_T2V", "nDCG_AVG")
    return {**{key: result.pop(key) for key in order}, **result}
