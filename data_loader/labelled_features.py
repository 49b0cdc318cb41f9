"""Labelled videos as precomputed features, for zero-shot classification (Kinetics-400-style single-label,
Charades-Ego-style multi-label), from a folder written by ``run/preprocess_clep.py``: ``features.hdf5``,
``labels.csv`` (``key``, ``labels`` = ';'-separated class ids, ``ego`` 0/1) and ``classes.pt``
(``{'names': [C], 'prompts': {prompt: [C, E]}}``: the class-prompt sentence embeddings).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from data_loader.feature_store import H5FeatureStore
from data_loader.worker_signals import ignore_preemption_signals
from utils.config_schema import Bounds
from utils.registry import LOADERS


def parse_label_ids(field, num_classes: int, where: str) -> torch.Tensor:
    """Multi-hot float32 [num_classes] from ``"3;17"`` (empty: no label); ValueError naming ``where``."""
    labels = torch.zeros(num_classes)
    for part in str(field).split(";") if isinstance(field, str) or not pd.isna(field) else []:
        if not part.strip():
            continue
        if not part.strip().isdigit() or int(part) >= num_classes:
            raise ValueError(f"{where}: label {part!r} is not a class id below {num_classes}")
        labels[int(part)] = 1
    return labels


class LabelledFeatureDataset(Dataset):
    """Items ``{'video': ..., 'labels': [C] multi-hot, 'ego': bool}``.

    ``aggregate='mean'``: ``video`` is the mean over all feature rows ``[D]``; ``'windows'``: every row ``[T, D]``
    (batched with padding and a ``mask`` by :func:`collate_windows`). ``class_prompts`` holds each prompt's
    class embeddings ``[C, E]``."""

    def __init__(self, root: str, aggregate: str = "mean"):
        if aggregate not in ("mean", "windows"):
            raise ValueError(f"aggregate must be 'mean' or 'windows', got {aggregate!r}")
        self.root, self.aggregate = Path(root), aggregate
        classes = torch.load(self.root / "classes.pt", map_location="cpu", weights_only=True)
        self.class_names = list(classes["names"])
        self.class_prompts = {name: tensor.float() for name, tensor in classes["prompts"].items()}
        table_path = self.root / "labels.csv"
        table = pd.read_csv(table_path, dtype={"key": str, "labels": str}, keep_default_na=False)
        self.keys = table["key"].tolist()
        self.labels = torch.stack([parse_label_ids(field, len(self.class_names), f"{table_path} row {i + 2}")
                                   for i, field in enumerate(table["labels"])]) if len(table) else torch.zeros(0)
        self.ego = table["ego"].astype(bool).tolist() if "ego" in table else [False] * len(table)
        self.store = H5FeatureStore(self.root / "features.hdf5")
        missing = [key for key in self.keys if key not in self.store]
        if missing:
            raise ValueError(f"{self.store.path} lacks {len(missing)} video(s) of {table_path}, e.g. {missing[:3]}")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict:
        features = torch.from_numpy(self.store.read(self.keys[index]))
        video = features.mean(0) if self.aggregate == "mean" else features
        return {"video": video, "labels": self.labels[index], "ego": self.ego[index]}


def collate_windows(items: list[dict]) -> dict:
    """``video`` [B, T_max, D] zero-padded with ``mask`` [B, T_max] (True on real rows); labels, ego stacked."""
    lengths = [len(item["video"]) for item in items]
    video = torch.zeros(len(items), max(lengths), items[0]["video"].shape[-1])
    mask = torch.zeros(len(items), max(lengths), dtype=torch.bool)
    for i, item in enumerate(items):
        video[i, :lengths[i]], mask[i, :lengths[i]] = item["video"], True
    return {"video": video, "mask": mask, "labels": torch.stack([item["labels"] for item in items]),
            "ego": torch.tensor([item["ego"] for item in items])}


class _WithClassPrompts:
    """Collate that adds the dataset's ``class_prompts`` ({prompt: [C, E]}) to every batch."""

    def __init__(self, collate, class_prompts: dict):
        self.collate, self.class_prompts = collate, class_prompts

    def __call__(self, items):
        return {**self.collate(items), "class_prompts": self.class_prompts}


@LOADERS.register()
class LabelledFeatureLoader(DataLoader):
    """Evaluation batches of a labelled feature set, in file order (the evaluation loop shards them over ranks).

    Batches: ``video`` ([B, D], or [B, T, D] with ``mask`` for ``aggregate='windows'``), ``labels`` [B, C],
    ``ego`` [B], ``class_prompts`` {prompt: [C, E]}."""

    def __init__(self, root: str = "data/clep/k400", aggregate: Literal["mean", "windows"] = "mean",
                 batch_size: Annotated[int, Bounds(1)] = 128, num_workers: Annotated[int, Bounds(0)] = 0):
        dataset = LabelledFeatureDataset(root, aggregate)
        base = torch.utils.data.default_collate if aggregate == "mean" else collate_windows
        super().__init__(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                         collate_fn=_WithClassPrompts(base, dataset.class_prompts),
                         worker_init_fn=ignore_preemption_signals)
