import pytest
import torch

from data_loader.collate import EgoClipCollate, temporal_pairs


def test_temporal_pairs_exact():
    uids = ["a", "b", "a", "a", "b"]
    times = [10.0, 11.0, 11.5, 13.0, 14.0]
    pairs = temporal_pairs(uids, times, max_temporal_gap=2.0)
    expected = torch.tensor([[0, 2, 1.5], [2, 3, 1.5]])
    torch.testing.assert_close(pairs, expected)
    # the gap bound is inclusive, and non-consecutive clips count too
    pairs = temporal_pairs(uids, times, max_temporal_gap=3.0)
    torch.testing.assert_close(pairs, torch.tensor([[0, 2, 1.5], [0, 3, 3.0], [1, 4, 3.0], [2, 3, 1.5]]))


def test_temporal_pairs_empty_and_mismatch():
    pairs = temporal_pairs(["a", "b"], [0.0, 0.5], 2.0)
    assert pairs.shape == (0, 3) and pairs.dtype == torch.float32
    with pytest.raises(ValueError, match="narration times"):
        temporal_pairs(["a"], [0.0, 1.0], 2.0)


def train_item(uid, t, index, multiscale=False):
    video = ({"frames_2": torch.full((2, 3, 4, 4), float(index)), "frames_4": torch.full((4, 3, 4, 4), float(index))}
             if multiscale else torch.full((4, 3, 4, 4), float(index)))
    item = {"video": video, "text": f"#C C does {index}",
            "meta": {"video_uid": uid, "clip_start": t - 0.5, "clip_end": t + 0.5, "narration_time": t, "index": index},
            "verb_vec": torch.eye(3)[index % 3], "noun_vec": torch.eye(5)[index % 5]}
    if multiscale:
        item["scale_mask"] = torch.tensor([True, index != 1])
    return item


def test_collate_train_multiscale_batch():
    items = [train_item("v1", 1.0, 0, True), train_item("v1", 2.5, 1, True), train_item("v2", 2.0, 2, True)]
    batch = EgoClipCollate(max_temporal_gap=2.0)(items)
    assert batch["video"]["frames_2"].shape == (3, 2, 3, 4, 4)
    assert batch["video"]["frames_4"].shape == (3, 4, 3, 4, 4)
    assert torch.equal(batch["video"]["frames_4"][:, 0, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0]))
    assert batch["text"] == ["#C C does 0", "#C C does 1", "#C C does 2"]
    assert batch["meta"]["video_uid"] == ["v1", "v1", "v2"]
    assert torch.equal(batch["meta"]["index"], torch.tensor([0, 1, 2]))
    torch.testing.assert_close(batch["meta"]["narration_time"], torch.tensor([1.0, 2.5, 2.0], dtype=torch.float64))
    assert batch["verb_vec"].shape == (3, 3) and batch["noun_vec"].shape == (3, 5)
    assert torch.equal(batch["scale_mask"], torch.tensor([[True, True], [True, False], [True, True]]))
    torch.testing.assert_close(batch["temporal_pairs"], torch.tensor([[0.0, 1.0, 1.5]]))


def test_collate_val_batch_has_no_pairs():
    items = [{"video": torch.zeros(5, 2, 3, 4, 4), "text": "q0", "correct": 3, "type": 1},
             {"video": torch.ones(5, 2, 3, 4, 4), "text": "q1", "correct": 0, "type": 2}]
    batch = EgoClipCollate()(items)
    assert batch["video"].shape == (2, 5, 2, 3, 4, 4)
    assert batch["text"] == ["q0", "q1"]
    assert batch["correct"].dtype == torch.long and batch["correct"].tolist() == [3, 0]
    assert batch["type"].tolist() == [1, 2]
    assert "temporal_pairs" not in batch
