"""CLEP training: dataset windows, the two towers, the logit-scale clamp, parameter groups, zero-shot evaluators,
learning on the synthetic set, and 2 processes = 1 process on the concatenated batch."""
import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from data_loader.feature_store import H5FeatureWriter
from data_loader.narration_features import NarrationFeatureDataset
from model.clep import CLEPTwoTower, LogitScale, normalize_classifier
from model.losses.contrastive import contrastive_loss
from tests.clep_fixtures import SMALL, clep_processed, clep_raw  # noqa: F401
from trainer import launch
from trainer.evaluators.zero_shot import CharadesZeroShot, ZeroShotTopK
from trainer.options import TrainerOptions
from trainer.state import load_training_checkpoint
from trainer.tasks.clep import CLEPTraining, ClampLogitScale
from utils.config import ConfigParser
from utils.config_files import load_config_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models

ROOT = Path(__file__).resolve().parents[1]


def _write_processed(root: Path, times: dict, num_rows: int = 40, dim: int = 3):
    """A preprocessed folder whose feature row r holds r in column 0; narrations at ``times[uid]``."""
    rows = [(uid, "narration_pass_1", t, "#C C does a thing") for uid, ts in times.items() for t in sorted(ts)]
    pd.DataFrame(rows, columns=["video_uid", "narration_pass", "timestamp_sec", "narration_text"]).to_csv(
        root / "narrations.csv", index=False)
    with H5FeatureWriter(root / "video_features.hdf5") as videos, \
            H5FeatureWriter(root / "narration_text.hdf5") as text, \
            H5FeatureWriter(root / "narration_text_no_tag.hdf5") as no_tag:
        for uid, ts in times.items():
            features = np.zeros((num_rows, dim), dtype=np.float32)
            features[:, 0] = np.arange(num_rows)
            videos.write(uid, features)
            text.write(uid, np.arange(len(ts), dtype=np.float32)[:, None] * np.ones((1, 2), np.float32))
            no_tag.write(uid, -np.ones((len(ts), 2), np.float32))


def test_windows_average_the_rows_feature_slice_selects(tmp_path):
    _write_processed(tmp_path, {"a": [2.0, 1.284, 30.0], "b": [0.0, 0.05]})
    dataset = NarrationFeatureDataset(str(tmp_path), window_sec=2.0, min_mean_gap=0.1)
    assert dataset.dropped_videos == 1 and len(dataset) == 3      # 'b': mean gap 0.05 s < 0.1 s
    assert dataset.window(0) == (0, 7)                             # ts 1.284 ± 2 s: row 0 to ⌊3.284·1.875⌋ = 6
    assert dataset[0]["video"][0].item() == pytest.approx(np.mean(np.arange(0, 7)))
    assert dataset.window(1) == (0, 8)                             # ts 2 ± 2 s: rows [0, 8)
    assert dataset[1]["video"][0].item() == pytest.approx(np.mean(np.arange(0, 8)))
    assert dataset[2]["video"][0].item() == 39.0                   # ts 30 s: past the end, the last row
    assert dataset[2]["text"].tolist() == [2.0, 2.0]               # the narration's own embedding row
    narrow = NarrationFeatureDataset(str(tmp_path), window_sec=0.1, min_mean_gap=0.0)
    assert narrow.window(0) == (2, 3)                              # ts 1.284, w 0.1: one row


def test_adaptive_window_is_beta_over_two_alpha(tmp_path):
    _write_processed(tmp_path, {"a": [1.0, 2.0, 3.0], "b": [1.0, 4.0, 7.0]})
    dataset = NarrationFeatureDataset(str(tmp_path), window="egovlp")
    alpha = (1.0 + 3.0) / 2
    assert dataset.half_width.tolist() == pytest.approx([1 / (2 * alpha)] * 3 + [3 / (2 * alpha)] * 3)


def test_a_video_missing_from_the_embeddings_is_named(tmp_path):
    _write_processed(tmp_path, {"a": [1.0, 2.0]})
    table = pd.read_csv(tmp_path / "narrations.csv")
    pd.concat([table, table.assign(video_uid="zz")]).to_csv(tmp_path / "narrations.csv", index=False)
    with pytest.raises(ValueError, match="video_features.hdf5 has no 'zz'"):
        NarrationFeatureDataset(str(tmp_path))


def test_towers_use_xavier_relu_init_and_the_raw_scale_is_the_multiplier():
    torch.manual_seed(0)
    model = CLEPTwoTower(text_dim=16, video_dim=24, hidden_dim=32, embed_dim=8, logit_scale_mode="raw")
    first = model.visual_proj[0]
    bound = math.sqrt(2) * math.sqrt(6 / (24 + 32))
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.9 * bound
    assert not first.bias.any() and not model.text_proj[2].bias.any()
    assert model.logit_scale().item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)    # raw: s, not e^s
    exp_scale = LogitScale("exp")
    assert exp_scale().item() == pytest.approx(1 / 0.07, rel=1e-5)


@pytest.mark.parametrize("mode", ["raw", "exp"])
def test_the_logit_scale_is_clamped_to_ln_100_after_a_step(mode):
    model = CLEPTwoTower(text_dim=4, video_dim=4, hidden_dim=4, embed_dim=4, logit_scale_mode=mode)
    task = CLEPTraining(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    with torch.no_grad():
        model.logit_scale.value.fill_(10.0)
    model.logit_scale().backward()
    optimizer.step()
    assert model.logit_scale.value.item() != pytest.approx(math.log(100))
    ClampLogitScale().after_step(SimpleNamespace(task=task))
    assert model.logit_scale.value.item() == pytest.approx(math.log(100))
    with torch.no_grad():
        model.logit_scale.value.fill_(-1.0)
    ClampLogitScale().after_step(SimpleNamespace(task=task))
    assert model.logit_scale.value.item() == 0.0


def test_biases_and_the_logit_scale_get_no_weight_decay():
    task = CLEPTraining(CLEPTwoTower(text_dim=4, video_dim=4, hidden_dim=4, embed_dim=4))
    groups = {g["name"]: g for g in task.optimizer_groups(1e-3, 0.1, TrainerOptions())["main"]}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    named = dict(task.model.named_parameters())
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.1
    assert no_decay == {id(p) for name, p in named.items() if name.endswith("bias") or "logit_scale" in name}


@pytest.mark.parametrize("mode,normalize,scale", [("raw", False, math.log(1 / 0.07)), ("exp", True, 1 / 0.07)])
def test_the_training_step_loss_is_the_clep_loss_at_the_model_scale(mode, normalize, scale):
    from model.clep import CLEPLoss
    torch.manual_seed(1)
    model = CLEPTwoTower(text_dim=6, video_dim=5, hidden_dim=8, embed_dim=4, logit_scale_mode=mode)
    batch = {"video": torch.randn(5, 5), "text": torch.randn(5, 6), "text_no_tag": torch.randn(5, 6)}
    ctx = SimpleNamespace(device=torch.device("cpu"))
    output = CLEPTraining(model, CLEPLoss(normalize_embeddings=normalize)).training_step(batch, ctx)
    text, video = model(batch["text"], batch["video"])
    if normalize:
        text, video = torch.nn.functional.normalize(text, dim=1), torch.nn.functional.normalize(video, dim=1)
    expected = contrastive_loss(text @ video.t(), scale=scale)
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert output.logs["schedule/logit_scale"].item() == pytest.approx(scale, rel=1e-6)
    assert set(output.logs) == {"loss/clep", "schedule/logit_scale"}


def test_per_class_and_per_dimension_classifiers_disagree_on_anisotropic_data():
    generator = torch.Generator().manual_seed(0)
    scales = torch.logspace(-1, 1, 32) * torch.logspace(-0.5, 0.5, 10)[:, None]  # anisotropic dims, uneven norms
    classes = torch.randn(10, 32, generator=generator) * scales
    videos = classes[torch.arange(200) % 10] + torch.randn(200, 32, generator=generator)
    unit = torch.nn.functional.normalize(videos, dim=-1)
    per_class = (unit @ normalize_classifier(classes, "per_class").t()).argmax(1)
    per_dimension = (unit @ normalize_classifier(classes, "per_dimension").t()).argmax(1)
    assert torch.allclose(normalize_classifier(classes, "per_class").norm(dim=1), torch.ones(10))
    assert torch.allclose(normalize_classifier(classes, "per_dimension").norm(dim=0), torch.ones(32))
    assert (per_class == per_dimension).float().mean() < 0.8
    assert (per_class == torch.arange(200) % 10).all()      # the cosine classifier is right on this data


def test_evaluators_report_topk_and_the_charades_variants():
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    topk = ZeroShotTopK(prompt="p")
    topk.reset()
    topk.process({"labels": torch.eye(3)[[0, 2, 1]]}, {"scores": {"p": scores}, "classifier_norm": "per_class"})
    assert topk.compute() == {"top1": pytest.approx(100 / 3), "top5": 100.0, "videos": 3,
                              "classifier_norm": "per_class"}
    charades = CharadesZeroShot()
    charades.reset()
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 0, 1]])
    batch = {"labels": labels, "ego": torch.tensor([True, False, True])}
    prompts = {"name": scores, "camera_wearer": scores, "person": -scores}
    charades.process(batch, {"scores": prompts, "classifier_norm": "per_dimension"})
    charades.process({"labels": labels[:1], "ego": torch.tensor([False])},  # a K400-style set: not its batch
                     {"scores": {"name": scores[:1], "person_doing": scores[:1]}, "classifier_norm": "x"})
    result = charades.compute()
    from model.metrics.classification import charades_map
    assert result["videos"] == 3 and result["classifier_norm"] == "per_dimension"
    expected = charades_map(scores.softmax(-1), labels)["mAP"]
    assert result["mAP_all_name"] == pytest.approx(expected)
    assert result["mAP_ego_person"] == pytest.approx(charades_map((-scores).softmax(-1)[[0, 2]], labels[[0, 2]])["mAP"])


def _synthetic_config(processed: Path, save_dir: Path, **trainer) -> dict:
    config = load_config_file(str(ROOT / "configs/clep/synthetic.json"))
    config["data_loader"]["args"].update(root=str(processed), batch_size=32)
    config["valid_data_loader"][0]["args"]["root"] = str(processed / "k400")
    config["valid_data_loader"][1]["args"]["root"] = str(processed / "charades")
    config["trainer"].update(save_dir=str(save_dir), **trainer)
    return config


def test_zero_shot_accuracy_goes_from_chance_to_above_80_percent(clep_processed, tmp_path):
    config = _synthetic_config(clep_processed, tmp_path, epochs=12)
    config["hooks"][1]["args"].update(every_steps=1000, at_start=True)   # at the start and at the end
    parser = ConfigParser(copy.deepcopy(config), source="synthetic.json", device="cpu", run_id="learn")
    metrics = launch.train(parser)
    log = (parser.run_dir / "train.log").read_text()
    first = [line for line in log.splitlines() if "evaluation (val)" in line][0]
    assert metrics["loader0/top1"] > 80.0, metrics
    assert metrics["loader1/mAP_all_name"] > 80.0, metrics
    assert "loader0/top1" in first
    untrained = []
    for seed in range(8):  # one untrained draw can be lucky with 10 classes; their mean is near chance
        torch.manual_seed(seed)
        task = launch.build_task(ConfigParser(copy.deepcopy(config), device="cpu"), torch.device("cpu"),
                                 splits=("val",))
        ctx = SimpleNamespace(device=torch.device("cpu"), autocast=__import__("contextlib").nullcontext)
        from trainer.evaluation import evaluate_task
        untrained.append(evaluate_task(task, "val", ctx, show_progress=False)["loader0/top1"])
    assert np.mean(untrained) < 2 * 100 / SMALL.num_concepts, untrained


def _train_on_rank(rank: int, world_size: int, config: dict, run_dir: str) -> None:
    """One rank of a 2-process run: the engine on the group ``run_ranks`` set up. DDP is released before the
    group is destroyed (destroying the group first can deadlock: gloo's threads then need the GIL that the
    destructor holds)."""
    import gc
    from trainer.engine import Engine
    from trainer.state import seed_everything
    from utils.distributed import DistInfo
    torch.set_num_threads(1)
    parser = ConfigParser(config, device="cpu")
    parser.run_dir = Path(run_dir)
    seed_everything(parser.trainer_options.seed + rank)
    task = launch.build_task(parser, torch.device("cpu"))
    engine = Engine(task, parser, DistInfo(rank, world_size, rank, torch.device("cpu")), parser.run_dir)
    metrics = engine.train()
    if rank == 0:
        (parser.run_dir / "final_metrics.json").write_text(json.dumps(metrics))
    del engine, task
    gc.collect()


def test_two_processes_equal_one_process_on_the_concatenated_batch(clep_processed, tmp_path):
    from tests.gloo_ranks import run_ranks
    config = _synthetic_config(clep_processed, tmp_path, epochs=1, max_steps_per_epoch=3)
    config["hooks"] = [{"type": "ClampLogitScale", "args": {}},
                       {"type": "EvaluateEverySteps", "args": {"every_steps": 1000}},   # once, at the end
                       {"type": "LearningCurves", "args": {"every_epochs": 9}}]
    config["loss"]["args"]["targets"] = "soft"                # gathered targets too
    config["data_loader"]["args"]["batch_size"] = 16
    single = ConfigParser(copy.deepcopy(config), device="cpu", run_id="single")
    single_metrics = launch.train(single)
    config["data_loader"]["args"]["batch_size"] = 8
    ddp_dir = tmp_path / "ddp"
    ddp_dir.mkdir()
    run_ranks(_train_on_rank, 2, config, str(ddp_dir))
    one = load_training_checkpoint(single.run_dir / "latest.pth")
    two = load_training_checkpoint(ddp_dir / "latest.pth")
    assert two["world_size"] == 2 and two["global_step"] == one["global_step"] == 3
    for key in one["state_dict"]:
        torch.testing.assert_close(two["state_dict"][key], one["state_dict"][key], rtol=0, atol=2e-6)
    # evaluation sharded over the two ranks counts every labelled video once
    ddp_metrics = json.loads((ddp_dir / "final_metrics.json").read_text())
    assert ddp_metrics["loader0/videos"] == single_metrics["loader0/videos"] == 10 * SMALL.k400_clips_per_class
    assert ddp_metrics["loader1/videos"] == SMALL.charades_clips
    for key, value in single_metrics.items():
        assert ddp_metrics[key] == (pytest.approx(value, abs=1e-3) if isinstance(value, float) else value), key


def test_evaluate_every_steps_runs_at_the_start_every_n_steps_and_at_the_end(tmp_path):
    from tests.test_engine import scalars, tiny_task_config   # registers the tiny task's classes too
    config = tiny_task_config(tmp_path, epochs=2, monitor="off")    # 8 steps per epoch
    config["hooks"] = [{"type": "EvaluateEverySteps", "args": {"every_steps": 5, "at_start": True,
                                                                "monitor": "max top1"}},
                       {"type": "LearningCurves", "args": {"every_epochs": 100}}]
    parser = ConfigParser(copy.deepcopy(config), device="cpu", run_id="steps")
    launch.train(parser)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(parser.run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/top1")] == [0, 5, 10, 15, 16]
    best = load_training_checkpoint(parser.run_dir / "model_best.pth")
    assert best["hooks"]["EvaluateEverySteps"]["best"] == max(scalars(parser.run_dir / "tensorboard")["val/top1"])
