import numpy as np
import pandas as pd
import pytest
import torch

from data_loader.collate import EgoClipCollate
from data_loader.samplers import TemporalPairBatchSampler


def make_metadata(n=240, videos=6, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"video_uid": rng.choice([f"vid{i}" for i in range(videos)], n),
                         "narration_time": rng.uniform(0.0, 300.0, n).round(3)})


def pair_members(sampler, batch):
    pairs = sampler.pairs_for_batch(batch)
    return {batch[int(i)] for i in pairs[:, 0]} | {batch[int(j)] for j in pairs[:, 1]}


def test_every_batch_meets_the_ratio_and_indices_are_unique():
    meta = make_metadata()
    sampler = TemporalPairBatchSampler(meta, batch_size=10, temporal_pair_ratio=0.3, max_temporal_gap=2.0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) > 0
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen))
        for batch in batches:
            assert len(batch) == 10
            assert len(pair_members(sampler, batch)) >= 3


def test_high_ratio_is_met_too():
    meta = make_metadata(n=400, videos=2)
    sampler = TemporalPairBatchSampler(meta, batch_size=8, temporal_pair_ratio=1.0, max_temporal_gap=2.0)
    for batch in sampler:
        assert len(pair_members(sampler, batch)) == 8


def test_two_replicas_get_disjoint_equal_shards_and_are_reproducible():
    meta = make_metadata()
    shards = []
    for rank in range(2):
        sampler = TemporalPairBatchSampler(meta, batch_size=8, num_replicas=2, rank=rank, seed=7)
        sampler.set_epoch(4)
        shards.append(list(sampler))
        again = TemporalPairBatchSampler(meta, batch_size=8, num_replicas=2, rank=rank, seed=7)
        again.set_epoch(4)
        assert list(again) == shards[-1]
    assert len(shards[0]) == len(shards[1]) > 0
    assert not {i for b in shards[0] for i in b} & {i for b in shards[1] for i in b}
    other_epoch = TemporalPairBatchSampler(meta, batch_size=8, num_replicas=2, rank=0, seed=7)
    other_epoch.set_epoch(5)
    assert list(other_epoch) != shards[0]


def test_pairs_for_batch_equal_collate_pairs():
    meta = make_metadata(n=120, videos=3)
    sampler = TemporalPairBatchSampler(meta, batch_size=12, max_temporal_gap=2.0)
    collate = EgoClipCollate(max_temporal_gap=2.0)
    for batch in sampler:
        items = [{"text": "", "meta": {"video_uid": meta.video_uid[i], "narration_time": float(meta.narration_time[i]),
                                       "index": i}} for i in batch]
        torch.testing.assert_close(collate(items)["temporal_pairs"], sampler.pairs_for_batch(batch), rtol=0, atol=0)


def test_only_adjacent_pair_is_batched_together():
    meta = {"video_uid": ["a", "a", "b", "a"], "narration_time": [0.0, 5.0, 5.5, 6.0]}
    sampler = TemporalPairBatchSampler(meta, batch_size=2, temporal_pair_ratio=1.0, max_temporal_gap=2.0)
    assert len(sampler) == 1
    assert sorted(next(iter(sampler))) == [1, 3]


def test_ratio_zero_is_plain_shuffled_batching():
    meta = make_metadata(n=50)
    sampler = TemporalPairBatchSampler(meta, batch_size=8, temporal_pair_ratio=0.0, max_temporal_gap=0.0)
    batches = list(sampler)
    assert len(batches) == 6
    assert len({i for b in batches for i in b}) == 48


def test_categorical_video_uids_give_the_same_batches():
    """The EgoClip table keeps video_uid categorical; the sampler sees the same clips as with strings."""
    meta = make_metadata()
    compact = meta.assign(video_uid=meta["video_uid"].astype("category"))
    plain = TemporalPairBatchSampler(meta, batch_size=10, temporal_pair_ratio=0.3, seed=3)
    categorical = TemporalPairBatchSampler(compact, batch_size=10, temporal_pair_ratio=0.3, seed=3)
    assert categorical.video_uids.tolist() == meta["video_uid"].tolist()
    assert categorical.global_batches(1) == plain.global_batches(1)
    batch = plain.global_batches(0)[0]
    assert torch.equal(categorical.pairs_for_batch(batch), plain.pairs_for_batch(batch))


def test_reads_a_dataset_metadata_attribute():
    class Dataset:
        metadata = make_metadata(n=60)
    assert len(TemporalPairBatchSampler(Dataset(), batch_size=6)) > 0


def test_clear_errors():
    with pytest.raises(ValueError, match="no two clips"):
        TemporalPairBatchSampler({"video_uid": ["a", "b", "a"], "narration_time": [0.0, 0.0, 9.0]}, batch_size=2)
    with pytest.raises(ValueError, match="lower the ratio"):
        TemporalPairBatchSampler(make_metadata(), batch_size=1)
    with pytest.raises(ValueError, match="narration_time"):
        TemporalPairBatchSampler({"video_uid": ["a"]}, batch_size=1)
    with pytest.raises(ValueError, match="one batch"):
        TemporalPairBatchSampler(make_metadata(n=20, videos=1), batch_size=8, num_replicas=4, rank=0)
