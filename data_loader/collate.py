"""Batch collation for EgoClip/EgoMCQ items, including the temporal pairs the temporal loss uses."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import default_collate


def temporal_pairs(video_uids: Sequence[str], narration_times, max_temporal_gap: float) -> torch.Tensor:
    """Float ``[P, 3]`` rows ``(i, j, dt)``: every pair of batch positions ``i < j`` from the same video
    whose narration times (seconds) differ by at most ``max_temporal_gap``; ``dt = t_j - t_i``.

    Rows are ordered by ``i`` then ``j``.
    """
    times = torch.as_tensor(narration_times, dtype=torch.float64).reshape(-1)
    if len(video_uids) != times.numel():
        raise ValueError(f"{len(video_uids)} video uids but {times.numel()} narration times")
    codes = {}
    video = torch.tensor([codes.setdefault(uid, len(codes)) for uid in video_uids], dtype=torch.long)
    dt = times.unsqueeze(0) - times.unsqueeze(1)
    close = (video.unsqueeze(0) == video.unsqueeze(1)) & (dt.abs() <= max_temporal_gap)
    i, j = torch.triu(close, diagonal=1).nonzero(as_tuple=True)
    return torch.stack([i.double(), j.double(), dt[i, j]], dim=1).float()


class EgoClipCollate:
    """Collate dataset items into a batch dict.

    Tensors (and dicts of tensors such as the multi-scale ``video``) are stacked, strings become lists,
    numbers tensors; batches whose items carry ``meta.narration_time`` gain ``temporal_pairs`` ``[P, 3]``.
    Training batch (B items): ``video`` float ``[B, T, 3, R, R]`` or ``{'frames_<s>': [B, s, 3, R, R]}``
    with ``scale_mask`` bool ``[B, S]``; ``text`` list of B str; ``verb_vec`` ``[B, V]`` / ``noun_vec``
    ``[B, N]`` multi-hot; ``meta`` dict of B-long columns (``video_uid`` list, times float64 ``[B]``
    seconds, ``index`` ``[B]``); ``temporal_pairs`` ``[P, 3]``; scene-aware negatives add ``video_neg``
    (and ``scale_mask_neg``), ``text_neg``, ``verb_vec_neg``, ``noun_vec_neg`` shaped alike.
    Training batches also hold ``num_replaced`` (int: how many clips of the batch, negatives included, were
    unreadable and replaced in 'lax' loading; sum it over steps and ranks for a total) and ``replaced_rows``
    (list of str, one per replaced clip, naming its CSV row and clip, e.g. ``egoclip.csv row 1234
    (<video_uid> 0.00-1.50 s)``), from the items' ``replaced`` / ``replaced_rows`` fields.
    EgoMCQ batch: ``video`` ``[B, 5, T, 3, R, R]`` (or the dict of ``[B, 5, s, 3, R, R]`` with
    ``scale_mask`` ``[B, 5, S]``), ``text`` list of B queries, ``correct`` and ``type`` int64 ``[B]``.
    """

    def __init__(self, max_temporal_gap: float = 2.0):
        self.max_temporal_gap = float(max_temporal_gap)

    def __call__(self, items: list[dict]) -> dict:
        replaced = None
        if "replaced" in items[0]:
            replaced = (sum(int(item["replaced"]) for item in items),
                        [row for item in items for row in item["replaced_rows"]])
            items = [{k: v for k, v in item.items() if k not in ("replaced", "replaced_rows")} for item in items]
        batch = default_collate(items)
        if replaced is not None:
            batch["num_replaced"], batch["replaced_rows"] = replaced
        meta = batch.get("meta")
        if isinstance(meta, dict) and "narration_time" in meta and "video_uid" in meta:
            batch["temporal_pairs"] = temporal_pairs(meta["video_uid"], meta["narration_time"], self.max_temporal_gap)
        return batch
