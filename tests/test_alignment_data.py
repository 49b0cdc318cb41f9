"""Procedural data: task-file reading (background normalised, errors named), splits, subsampling with rescaled
boundaries, task-homogeneous batches, and the synthetic generator in the real format."""
import json

import numpy as np
import pytest

from data_loader.procedural import (ProceduralDataLoader, ProceduralDataset, Segment, TaskBatchSampler,
                                    read_task_file, segments_in_sequence, split_size)
from tests.alignment_fixtures import tiny_procedural


def write_task_file(path, tasks):
    path.write_text(json.dumps(tasks))
    return path


def one_task(actions, starts, ends, handles=("h0",)):
    return {"cook": {"handles": list(handles), "hdl_actions": [actions] * len(handles),
                     "hdl_start_times": [starts] * len(handles), "hdl_end_times": [ends] * len(handles)}}


def test_background_labels_are_normalised(tmp_path):
    path = write_task_file(tmp_path / "t.json", one_task(["0", "3", "SIL", "1", "background", 2],
                                                         [0, 3, 6, 8, 12, 14], [2, 5, 7, 11, 13, 16]))
    video = read_task_file(path)["cook"][0]
    assert video.segments == (Segment("3", 3, 5), Segment("1", 8, 11), Segment("2", 14, 16))
    # '0' as an action (the upstream bug) would add a segment and change every ground truth
    assert len(read_task_file(path, background_labels=("SIL",))["cook"][0].segments) == 5


@pytest.mark.parametrize("tasks, message", [
    ({"cook": {"handles": ["a"], "hdl_actions": [["1"]], "hdl_start_times": [[0]]}}, "missing key"),
    (one_task(["1"], [5], [2]), "ends (frame 2) before it starts"),
    (one_task(["1", "2"], [0], [3]), "equal length"),
    (one_task(["1"], [-1], [3]), "hdl_start_times[0]"),
])
def test_malformed_task_files_name_the_entry(tmp_path, tasks, message):
    path = write_task_file(tmp_path / "bad.json", tasks)
    with pytest.raises(ValueError, match="bad.json") as err:
        read_task_file(path)
    assert message in str(err.value)


def test_split_by_task_in_file_order(tmp_path):
    assert [split_size(n, 0.65) for n in (1, 2, 10, 20)] == [1, 1, 6, 13]
    assert split_size(10, 0.7) == 7
    path = write_task_file(tmp_path / "t.json", one_task(["1"], [0], [3], handles=[f"h{i}" for i in range(10)]))
    splits = [v.split for v in read_task_file(path)["cook"]]
    assert splits == ["train"] * 6 + ["test"] * 4


def test_subsampling_rescales_boundaries():
    frames = np.arange(0, 20, 3)                       # 0 3 6 9 12 15 18
    segments = [Segment("a", 2, 7), Segment("b", 10, 11), Segment("c", 13, 19)]
    assert segments_in_sequence(segments, frames) == [(1, 2, "a"), (5, 6, "c")]   # 'b' has no kept frame


def test_dataset_items_and_feature_errors(tmp_path):
    task_file, features = tiny_procedural(tmp_path)
    data = ProceduralDataset(task_file, features, split="all", skip_rate=2)
    item = data[0]
    raw = np.load(f"{features}/{item['handle']}.npy")
    assert np.array_equal(item["features"].numpy(), raw[::2])
    for first, last, action in item["segments"]:
        assert (item["labels"][first:last + 1] == data.actions[item["task"]].index(action) + 1).all()
    assert (item["labels"] == 0).sum() + sum(e - s + 1 for s, e, _ in item["segments"]) == len(raw[::2])
    sampled = ProceduralDataset(task_file, features, split="train", num_frames=8)
    assert sampled[0]["features"].shape[0] == 8
    assert {v.split for v in ProceduralDataset(task_file, features, split="test").videos} == {"test"}
    with pytest.raises(ValueError, match="no task"):
        ProceduralDataset(task_file, features, tasks=["nope"])
    meta = json.loads(open(task_file).read())
    last_action = max(k for k, a in enumerate(meta["task0"]["hdl_actions"][0]) if a != "0")
    meta["task0"]["hdl_end_times"][0][last_action] = 10_000
    broken = write_task_file(tmp_path / "broken.json", meta)
    with pytest.raises(ValueError, match="task0_video000.*10000"):
        ProceduralDataset(str(broken), features, split="train")[0]
    assert ProceduralDataset(str(broken), features, split="train", boundaries="clip")[0]["segments"]
    (tmp_path / "features" / "task1_video005.npy").unlink()
    with pytest.raises(FileNotFoundError, match="task1_video005"):
        ProceduralDataset(task_file, features, split="all")


def test_task_batches_are_homogeneous_sharded_and_reproducible():
    tasks = [0] * 5 + [1] * 4 + [2] * 1
    sampler = TaskBatchSampler(tasks, batch_size=2, seed=3)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4          # 2 + 2 batches; the single videos are left out
    assert all(len({tasks[i] for i in batch}) == 1 and len(batch) == 2 for batch in batches)
    assert [b[0].epoch for b in batches] == [1] * 4
    assert batches == list(sampler)
    sampler.set_epoch(2)
    assert batches != list(sampler)
    ranks = [TaskBatchSampler(tasks, 2, seed=3, num_replicas=2, rank=r) for r in range(2)]
    shards = [sum((list(map(int, b)) for b in r), []) for r in ranks]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == 4


def test_loader_yields_lists_of_one_task(tmp_path):
    task_file, features = tiny_procedural(tmp_path)
    loader = ProceduralDataLoader(task_file, features, split="train", num_frames=10, batch_size=2)
    loader.set_epoch(1)
    for batch in loader:
        assert len(set(batch["task"])) == 1 and [f.shape for f in batch["features"]] == [(10, 16)] * 2
    evaluation = ProceduralDataLoader(task_file, features, split="all", batch_size=5)
    assert sum(len(b["handle"]) for b in evaluation) == 12
