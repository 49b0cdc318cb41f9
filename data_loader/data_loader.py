"""Config-facing data loaders (``"data_loader": {"type": "MultiScaleEgoClipDataLoader", "args": {...}}``).

Each builds its dataset, the collate function and a sampler, and shards by itself under an initialised
torch.distributed (rank and world size come from it): 'temporal_pair' → :class:`TemporalPairBatchSampler`,
'random' (alias 'distributed') → ``DistributedSampler`` (also used, with one replica, without DDP).
Call ``loader.set_epoch(epoch)`` before every epoch: it reshuffles. Batches are bit-exact whatever the
number of workers (persistent or not) and when an epoch starts at batch k (resuming): the samplers yield
:class:`~data_loader.samplers.EpochIndex` values (index + epoch), and each item's randomness comes from
(``seed``, epoch, index) only (see :class:`EgoClip_EgoMCQ`).
"""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from data_loader.EgoClip_EgoMCQ_dataset import EgoClip_EgoMCQ, ReaderParams, VideoClipParams
from data_loader.MultiScaleEgoClip_dataset import MultiScaleEgoClip_EgoMCQ
from data_loader.collate import EgoClipCollate
from data_loader.samplers import EpochDistributedSampler, TemporalPairBatchSampler
from data_loader.transforms import init_video_transform_dict
from data_loader.worker_signals import ignore_preemption_signals
from utils.config_schema import ArgsOf, Bounds
from utils.distributed import get_rank, get_world_size
from utils.registry import LOADERS

SAMPLERS = ("temporal_pair", "random", "distributed")

__all__ = ["EgoClipDataLoader", "MultiScaleEgoClipDataLoader", "TemporalPairBatchSampler"]


class _TextVideoDataLoader(DataLoader):
    """Shared builder; subclasses choose the dataset class and the default training sampler.

    Args (dataset): ``dataset_name``, ``video_params``, ``data_dir``, ``meta_dir``, ``split``,
        ``reader``, ``neg_param`` as in :class:`EgoClip_EgoMCQ`; ``tsfm_params`` (kwargs of
        :func:`init_video_transform_dict`, ``input_res`` defaults to ``video_params``'s) and ``tsfm_split``
        (which split's transform to use, default ``split``).
    Args (loading): ``batch_size`` per process; ``num_workers``; ``pin_memory`` (None: when CUDA is
        available); ``persistent_workers`` (only with workers); ``prefetch_factor`` (only with workers);
        ``seed`` (sampling order, item augmentation, worker RNG seeds); ``sampler`` (None: the class default for
        'train', 'random' otherwise); ``temporal_pair_ratio`` / ``max_temporal_gap`` (seconds) for the pair
        sampler and the ``temporal_pairs`` of each batch; ``shuffle`` and ``drop_last`` (None: True for
        'train') for the 'random' sampler (the pair sampler always shuffles and drops incomplete batches).
    """

    dataset_class = EgoClip_EgoMCQ
    default_train_sampler = "random"

    def __init__(self, dataset_name: str = "EgoClip",
                 video_params: Annotated[dict | None, ArgsOf(VideoClipParams)] = None,
                 data_dir: str = "data/synthetic/videos", meta_dir: str = "data/synthetic/meta",
                 split: Literal["train", "val", "test"] = "train",
                 reader: Annotated[dict | str | None, ArgsOf(ReaderParams)] = None, neg_param: float | None = None,
                 tsfm_params: Annotated[dict | None, ArgsOf(init_video_transform_dict)] = None,
                 tsfm_split: str | None = None,
                 batch_size: Annotated[int, Bounds(1)] = 16, num_workers: Annotated[int, Bounds(0)] = 4,
                 pin_memory: bool | None = None, persistent_workers: bool = False,
                 prefetch_factor: Annotated[int | None, Bounds(1)] = None, shuffle: bool = True,
                 seed: int = 0, sampler: Literal["temporal_pair", "random", "distributed"] | None = None,
                 temporal_pair_ratio: Annotated[float, Bounds(0, 1)] = 0.3,
                 max_temporal_gap: Annotated[float, Bounds(0)] = 2.0, drop_last: bool | None = None):
        sampler = sampler or (self.default_train_sampler if split == "train" else "random")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if sampler == "temporal_pair" and split != "train":
            raise ValueError(f"the temporal_pair sampler is for split 'train', not {split!r}")
        tsfm_params = dict(tsfm_params or {})
        tsfm_params.setdefault("input_res", (video_params or {}).get("input_res", 224))
        tsfms = init_video_transform_dict(**tsfm_params)[tsfm_split or split]
        dataset = self.dataset_class(dataset_name=dataset_name, video_params=video_params, data_dir=data_dir,
                                     meta_dir=meta_dir, split=split, tsfms=tsfms, reader=reader, neg_param=neg_param,
                                     seed=seed)
        self.rank, self.world_size = get_rank(), get_world_size()
        self.seed, self.dataset_name = int(seed), dataset_name
        drop_last = split == "train" if drop_last is None else drop_last
        generator = torch.Generator()
        loader_args = dict(collate_fn=EgoClipCollate(max_temporal_gap), num_workers=num_workers,
                           pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                           persistent_workers=persistent_workers and num_workers > 0, generator=generator,
                           worker_init_fn=ignore_preemption_signals)
        if num_workers > 0 and prefetch_factor is not None:
            loader_args["prefetch_factor"] = prefetch_factor
        if sampler == "temporal_pair":
            batches = TemporalPairBatchSampler(dataset, batch_size, temporal_pair_ratio, max_temporal_gap,
                                               num_replicas=self.world_size, rank=self.rank, seed=seed)
            super().__init__(dataset, batch_sampler=batches, **loader_args)
        else:
            order = EpochDistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle,
                                            seed=seed, drop_last=drop_last)
            super().__init__(dataset, batch_size=batch_size, sampler=order, drop_last=drop_last, **loader_args)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the sample order (same on every rank) and of the items (its indices carry it;
        the dataset is told too, for plain-int indices in this process); reseed the workers' global RNGs."""
        pair_batches = isinstance(self.batch_sampler, TemporalPairBatchSampler)
        (self.batch_sampler if pair_batches else self.sampler).set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        state = np.random.SeedSequence([self.seed, self.rank, int(epoch)]).generate_state(2, dtype=np.uint32)
        self.generator.manual_seed(int(state[0]) << 32 | int(state[1]))


@LOADERS.register()
class EgoClipDataLoader(_TextVideoDataLoader):
    """EgoClip/EgoMCQ batches with ``video`` ``[B, T, 3, R, R]`` (``[B, 5, T, 3, R, R]`` for EgoMCQ)."""

    dataset_class = EgoClip_EgoMCQ
    default_train_sampler = "random"


@LOADERS.register()
class MultiScaleEgoClipDataLoader(_TextVideoDataLoader):
    """Multi-scale batches: ``video`` is ``{'frames_<s>': [B, s, 3, R, R]}`` plus ``scale_mask`` ``[B, S]``;
    training batches come from the :class:`TemporalPairBatchSampler` unless ``sampler`` says otherwise."""

    dataset_class = MultiScaleEgoClip_EgoMCQ
    default_train_sampler = "temporal_pair"
