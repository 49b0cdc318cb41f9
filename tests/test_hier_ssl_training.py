"""Hierarchical SSL on the shared engine: windows and sources, the task's optimizers, alternating freeze,
the curriculum and its exact resume, the feature evaluators, the shipped configs."""
import copy
import json

import h5py
import numpy as np
import pytest
import torch

from data_loader.ssl_video import H5VideoSource, SSLVideoLoader, SSLWindowDataset, VideoFileSource, sliding_windows
from trainer import launch
from trainer.evaluators.features import LinearProbe, MultiViewAccuracy, WeightedKNN
from trainer.tasks.base import StepContext
from trainer.tasks.hier_ssl import AlternatingFreeze
from utils.config import ConfigParser
from utils.config_files import load_config_file
from utils.synthetic_ssl import generate_ssl_h5, moving_square_videos, write_ssl_h5, write_ssl_video_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models


@pytest.fixture(scope="module")
def h5_data(tmp_path_factory):
    return generate_ssl_h5(tmp_path_factory.mktemp("ssl"), num_train=16, num_test=8, num_frames=12, seed=3)


def test_sliding_windows_follow_length_frequency_step_and_cap():
    windows = sliding_windows([20, 4, 13], length=4, frequency=3, step=2)
    assert windows.tolist() == [[0, s] for s in (0, 2, 4, 6, 8, 10)] + [[2, 0], [2, 2]]  # span 10; video 1 dropped
    capped = sliding_windows([20], length=4, frequency=3, step=2, max_per_video=3)
    assert capped[:, 1].tolist() == [0, 4, 10]  # spread over the video


def test_h5_source_reads_the_window_frames_and_names_bad_datasets(tmp_path):
    videos, labels = moving_square_videos(3, num_frames=10, seed=0)
    path = write_ssl_h5(tmp_path / "v.h5", videos, labels)
    dataset = SSLWindowDataset(H5VideoSource(str(path)), length=3, frequency=2, step=4)
    item = dataset[1]  # video 0, start 4: frames 4, 6, 8
    expected = torch.from_numpy(videos[0, [4, 6, 8]]).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(item["video"] * dataset.std + dataset.mean, expected, atol=1e-6)
    assert item["label"] == labels[0] and item["video_index"] == 0
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["clip_a"] = videos[0]
    with pytest.raises(ValueError, match="bad.h5: dataset 'clip_a'"):
        H5VideoSource(str(tmp_path / "bad.h5"))


def test_pairs_are_two_different_windows_of_one_video(h5_data):
    loader = SSLVideoLoader({"h5": str(h5_data["train"])}, length=4, step=2, pairs=True, batch_size=4)
    dataset = loader.dataset
    for index in range(0, len(dataset), 5):
        partner = dataset.partner(index, epoch=0)
        assert partner != index and dataset.windows[partner, 0] == dataset.windows[index, 0]
    assert dataset.partner(3, epoch=1) == dataset.partner(3, epoch=1)  # a function of (seed, epoch, index)
    batch = next(iter(loader))
    assert batch["video"].shape == batch["video_b"].shape == (4, 4, 3, 16, 16)


def test_video_files_are_read_through_the_chunked_reader(tmp_path):
    videos, labels = moving_square_videos(2, num_frames=8, seed=1)
    csv = write_ssl_video_files(tmp_path, "train", videos, labels)
    source = VideoFileSource(str(csv), str(tmp_path / "videos"), backend="pyav")
    frames = source.read(1, np.array([2, 5]))
    assert frames.shape == (2, 16, 16, 3)
    assert (frames.float() - torch.from_numpy(videos[1, [2, 5]]).float()).abs().mean() < 4  # lossless-ish H.264
    (tmp_path / "bad.csv").write_text("video_uid,label,num_frames\nx,1,8\n")
    with pytest.raises(ValueError, match="bad.csv: missing columns \\['fps'\\]"):
        VideoFileSource(str(tmp_path / "bad.csv"), str(tmp_path / "videos"))


def encoder_args(max_time_tokens=4):
    return {"levels": [{"name": "space", "dim": 16, "heads": 2, "head_dim": 8},
                       {"name": "time", "dim": 24, "heads": 2, "head_dim": 8, "causal": True,
                        "max_tokens": max_time_tokens},
                       {"name": "clip", "dim": 32, "heads": 2, "head_dim": 8, "causal": True, "max_tokens": 2}],
            "image_size": 16, "patch_size": 4, "clips": 2}


def build(h5_data, tmp_path, task_args=None, epochs=2, evaluate=False, loss=None, **loader_args):
    train = {"source": {"h5": str(h5_data["train"])}, "length": 8, "step": 4, "batch_size": 8, **loader_args}
    config = {
        "name": "hier_ssl_test",
        "task": {"type": "HierarchicalSSL", "args": task_args or {}},
        "arch": {"type": "HierarchicalVideoEncoder", "args": encoder_args()},
        "data_loader": {"type": "SSLVideoLoader", "args": train},
        "loss": loss or {"type": "HierarchicalPrediction", "args": {"loss": "vicreg"}},
        "optimizer": {"type": "AdamW", "args": {"lr": 0.003, "weight_decay": 0.01}},
        "trainer": {"epochs": epochs, "save_dir": str(tmp_path), "tqdm": False, "log_every": 1, "monitor": "off",
                    "amp": "none", "save_period": 100},
    }
    if evaluate:
        config["valid_data_loader"] = {"type": "SSLVideoLoader", "args": {
            "source": {"h5": str(h5_data["test"])}, "bank_source": {"h5": str(h5_data["train"])}, "length": 8,
            "step": 4, "batch_size": 16, "shuffle": False, "drop_last": False}}
        config["evaluators"] = [{"type": "WeightedKNN", "args": {"k": 5}}, {"type": "LinearProbe", "args": {}}]
        config["hooks"] = [{"type": "Evaluate", "args": {"exponential_base": 2.0, "monitor": "max knn_top1"}}]
    return config


def run(config, resume=None, run_id=None):
    torch.manual_seed(0)
    parser = ConfigParser(copy.deepcopy(config), source="hier_ssl_test.json", device="cpu", resume=resume,
                          run_id=run_id)
    metrics = launch.train(parser)
    return metrics, parser.run_dir


def task_from(config):
    parser = ConfigParser(copy.deepcopy(config), device="cpu")
    torch.manual_seed(0)
    return launch.build_task(parser, torch.device("cpu"), splits=("train",))


@pytest.mark.parametrize("mode, names", [
    ("with_level", {"space", "time", "clip"}),
    ("separate", {"space", "time", "clip", "space_predictors", "time_predictors", "clip_predictors"})])
def test_one_optimizer_per_level_covers_every_parameter_once(h5_data, tmp_path, mode, names):
    task = task_from(build(h5_data, tmp_path, {"predictor_optimizer": mode}))
    groups = task.optimizer_groups(1e-3, 0.0, None)
    assert set(groups) == names
    ids = [id(p) for g in groups.values() for group in g for p in group["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in task.parameters()}
    single = task_from(build(h5_data, tmp_path, {"per_level_optimizers": False})).optimizer_groups(1e-3, 0.0, None)
    assert list(single) == ["main"] and len(single["main"][0]["params"]) == len(ids)


def test_alternating_freeze_flips_the_trainable_set_and_frozen_levels_stay_unchanged(h5_data, tmp_path):
    task = task_from(build(h5_data, tmp_path, {"alternating_interval": 50}))
    hook = AlternatingFreeze(50)
    levels = task.model.active
    assert hook.pattern(levels, 0, 10) == {"space", "clip"} and hook.pattern(levels, 4, 10) == {"space", "clip"}
    assert hook.pattern(levels, 5, 10) == {"time"} and hook.pattern(levels, 10, 10) == {"space", "clip"}
    optimizers = {name: torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1)
                  for name, groups in task.optimizer_groups(1e-2, 0.1, None).items()}
    batch = next(iter(task.loaders("train")[0]))
    ctx = StepContext(device=torch.device("cpu"), global_step=0, epoch=1, total_epochs=1, total_steps=1)
    for step in (0, 5):
        trainable = hook.pattern(levels, step, 10)
        previous = {name for name in levels if task.level_parameters(name)[0].requires_grad}
        task.set_trainable(trainable)
        if step:
            assert trainable == set(levels) - previous  # the complement of the previous set
        assert {n for n in levels if all(p.requires_grad for p in task.level_parameters(n))} == trainable
        before = {n: [p.detach().clone() for p in task.level_parameters(n)] for n in levels}
        output = task.training_step(batch, ctx)
        assert {k.split("/")[1].rpartition("_")[0] for k in output.logs if k.startswith("loss/")} == trainable
        output.loss.backward()
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for name in levels:
            same = all(torch.equal(a, b) for a, b in zip(before[name], task.level_parameters(name)))
            assert same == (name not in trainable), name


CURRICULUM = [{"epoch": 1, "levels": 2, "clips": 1, "frames": 2},
              {"epoch": 2, "levels": 3, "clips": 2, "frames": 8}]


def test_curriculum_grows_the_model_and_keeps_the_old_positional_rows(h5_data, tmp_path):
    task = task_from(build(h5_data, tmp_path, {"curriculum": CURRICULUM, "seed": 5}))
    assert task.model.active == ["space", "time"] and task.model.clips == 1
    table = task.model.levels["time"].pos_embedding
    old = table.detach().clone()
    redrawn = task.advance_stage(1)
    assert task.model.active == ["space", "time", "clip"] and task.model.clips == 2
    assert [(p is table, rows) for p, rows in redrawn] == [(True, slice(2, 4))]
    assert torch.equal(table[:, :2], old[:, :2]) and not torch.equal(table[:, 2:], old[:, 2:])
    again = task_from(build(h5_data, tmp_path, {"curriculum": CURRICULUM, "seed": 5}))
    again.advance_stage(1)
    assert torch.equal(again.model.levels["time"].pos_embedding, table)  # fresh rows come from (seed, stage)
    with pytest.raises(ValueError, match="curriculum\\[1\\]"):
        task_from(build(h5_data, tmp_path, {"curriculum": [CURRICULUM[0], {**CURRICULUM[1], "levels": 1}]}))


def final_weights(run_dir):
    state = torch.load(run_dir / "latest.pth", map_location="cpu", weights_only=True)
    return state["state_dict"], state["loss"], state["task"], state["optimizers"]


def test_a_resumed_grown_run_is_bit_identical_to_an_uninterrupted_one(h5_data, tmp_path):
    task_args = {"curriculum": CURRICULUM, "alternating_interval": 50, "seed": 1}
    config = build(h5_data, tmp_path, task_args, epochs=3, max_windows_per_video=2)
    _, straight = run(config, run_id="straight")
    for stop_epoch in (1, 2):  # stopped before the growth, and after it
        _, first = run({**config, "trainer": {**config["trainer"], "epochs": stop_epoch}}, run_id=f"part{stop_epoch}")
        _, resumed = run(config, resume=str(first / "latest.pth"), run_id=f"resumed{stop_epoch}")
        a, b = final_weights(straight), final_weights(resumed)
        assert a[2] == b[2] == {"stage": 1}
        for ours, theirs in zip(a[:2], b[:2]):
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        assert torch.equal(a[3]["time"]["state"][0]["exp_avg"], b[3]["time"]["state"][0]["exp_avg"])


def test_training_logs_components_and_evaluates_knn_and_probe(h5_data, tmp_path):
    metrics, run_dir = run(build(h5_data, tmp_path, {"alternating_interval": 50}, epochs=2, evaluate=True))
    assert {"knn_top1", "knn_top5", "knn_queries", "probe_top1", "probe_nll", "probe_multiview_top1"} <= set(metrics)
    assert metrics["knn_queries"] == 8 * 2  # 8 test videos of 12 frames, windows of 8 every 4
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/space_up", "loss/time_down", "schedule/weight_space_up", "train/trainable_time",
            "val/knn_top1", "val/probe_top1"} <= tags
    trainable = [e.value for e in events.Scalars("train/trainable_time")]
    assert 0.0 in trainable and 1.0 in trainable  # the levels alternated


def test_siamese_vicreg_trains_on_window_pairs(h5_data, tmp_path):
    loss = {"type": "SiameseVICReg", "args": {"hidden": 32, "out_dim": 32}}
    metrics, run_dir = run(build(h5_data, tmp_path, {"per_level_optimizers": False}, epochs=1, loss=loss,
                                 pairs=True))
    assert final_weights(run_dir)[1].keys() >= {"projector.0.weight"}


def test_feature_evaluators_need_a_bank_and_separate_clusters():
    knn, probe = WeightedKNN(k=5), LinearProbe(epochs=30, lr=1.0)
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    features = 5 * torch.eye(4, 8)[labels] + 0.3 * torch.randn(40, 8, generator=generator)
    for evaluator in (knn, probe):
        evaluator.reset()
        evaluator.process({"label": labels, "video_index": labels + 4 * (torch.arange(40) >= 20),
                           "bank": torch.arange(40) >= 20}, {"features": features})
    assert knn.compute()["knn_top1"] == 100.0
    result = probe.compute()
    assert result["probe_top1"] == 100.0 and result["probe_multiview_top1"] == 100.0
    knn.reset()
    knn.process({"label": labels, "video_index": labels, "bank": torch.zeros(40, dtype=torch.bool)},
                {"features": features})
    with pytest.raises(ValueError, match="bank_source"):
        knn.compute()


@pytest.mark.parametrize("name", ["hierarchical", "siamese_vicreg", "curriculum", "ucf101"])
def test_shipped_configs_validate(name):
    config = load_config_file(f"configs/hier_ssl/{name}.json")
    ConfigParser(config, source=name)
    assert json.dumps(config)


def test_evaluation_loads_a_grown_checkpoint_in_its_stage(h5_data, tmp_path):
    config = build(h5_data, tmp_path, {"curriculum": CURRICULUM}, epochs=2, max_windows_per_video=1)
    _, run_dir = run(config)
    task = task_from(config)
    assert task.model.active == ["space", "time"]
    task.load_pretrained(str(run_dir / "latest.pth"))
    assert task.model.active == ["space", "time", "clip"] and task.model.clips == 2
    state = torch.load(run_dir / "latest.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in task.model.state_dict().items())


def _clustered_items():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.arange(48) // 2) % 4  # two windows per video
    features = 2 * torch.eye(4, 8)[labels] + torch.randn(48, 8, generator=generator)
    return {"label": labels, "video_index": torch.arange(48) // 2, "bank": torch.arange(48) < 32}, features


def _evaluate_shard(rank, world_size, out_dir, h5_data):
    batch, features = _clustered_items()
    evaluators = [WeightedKNN(k=5), LinearProbe(epochs=3)]
    for evaluator in evaluators:
        evaluator.reset()
        for rows in torch.arange(rank, 48, world_size).split(5):  # this rank's shard, in batches
            evaluator.process({k: v[rows] for k, v in batch.items()}, {"features": features[rows]})
    results = {k: v for evaluator in evaluators for k, v in evaluator.compute().items()}
    results["frozen"] = _frozen_levels_under_ddp(h5_data, out_dir)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(results))


def _frozen_levels_under_ddp(h5_data, out_dir):
    """Levels frozen after DDP wrapped the step (find_unused_parameters): per step, the levels whose parameters
    got no gradient and did not change."""
    from torch.nn.parallel import DistributedDataParallel
    from trainer.engine import _TrainingStep
    task = task_from(build(h5_data, out_dir))
    step = DistributedDataParallel(_TrainingStep(task), find_unused_parameters=True)
    optimizers = [torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1)
                  for groups in task.optimizer_groups(1e-2, 0.1, None).values()]
    batch = next(iter(task.loaders("train")[0]))
    ctx = StepContext(device=torch.device("cpu"), global_step=0, epoch=1, total_epochs=1, total_steps=1)
    frozen = []
    for trainable in ({"space", "clip"}, {"time"}):
        task.set_trainable(trainable)
        before = {n: [p.detach().clone() for p in task.level_parameters(n)] for n in task.model.level_names}
        step(batch, ctx)[0].backward()
        no_grad = {n for n in before if all(p.grad is None for p in task.level_parameters(n))}
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        unchanged = {n for n in before if all(torch.equal(a, b) for a, b in zip(before[n], task.level_parameters(n)))}
        frozen.append(sorted(no_grad & unchanged))
    return frozen


def test_two_ranks_gather_evaluator_shards_and_keep_frozen_levels_frozen(tmp_path, h5_data):
    from tests.gloo_ranks import run_ranks
    run_ranks(_evaluate_shard, 2, tmp_path, h5_data)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] and ranks[0]["knn_queries"] == 16
    assert ranks[0]["frozen"] == [["time"], ["clip", "space"]]
    batch, features = _clustered_items()
    knn = WeightedKNN(k=5)
    knn.reset()
    knn.process(batch, {"features": features})
    assert {k: ranks[0][k] for k in ("knn_top1", "knn_top5")} == {k: v for k, v in knn.compute().items()
                                                                   if k != "knn_queries"}


def test_augmented_windows_are_cropped_per_window_and_reproducible(h5_data):
    from data_loader.samplers import EpochIndex
    loader = SSLVideoLoader({"h5": str(h5_data["train"])}, length=4, step=4, pairs=True,
                            augment={"input_res": 12, "scale": [0.3, 0.6], "hflip_prob": 0.5})
    dataset = loader.dataset
    first, again, later = dataset[EpochIndex(2, 0)], dataset[EpochIndex(2, 0)], dataset[EpochIndex(2, 1)]
    assert first["video"].shape == first["video_b"].shape == (4, 3, 12, 12)
    assert torch.equal(first["video"], again["video"]) and not torch.equal(first["video"], later["video"])


def test_probe_caches_features_and_multiview_accuracy_reads_log_probs(tmp_path):
    batch, features = _clustered_items()
    probe = LinearProbe(epochs=2, cache_path=str(tmp_path / "features.h5"))
    probe.reset()
    probe.process(batch, {"features": features})
    probe.compute()
    with h5py.File(tmp_path / "features.h5", "r") as f:
        assert f["data"].dtype == np.float32 and f["data"].shape == (48, 8) and f["labels"].dtype == np.uint8
        assert np.array_equal(f["labels"][:32], batch["label"][batch["bank"]].numpy())  # bank rows first
    evaluator = MultiViewAccuracy()
    evaluator.reset()
    log_probs = torch.log_softmax(torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]), dim=1)
    evaluator.process({"label": torch.tensor([0, 0, 1]), "video_index": torch.tensor([5, 5, 6])},
                      {"log_probs": log_probs})
    assert evaluator.compute() == {"window_top1": pytest.approx(200 / 3), "multiview_top1": 100.0}
