"""The engine with a task it has never heard of (tests/tiny_task.py): registry + config + engine only."""
import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tests.tiny_task
from tests.tiny_task import with_import_paths
from trainer import launch
from trainer.engine import Engine
from trainer.hooks import exponential_epochs
from trainer.state import load_training_checkpoint, resumed_epoch_loader
from utils.config import ConfigParser

ROOT = Path(__file__).resolve().parents[1]


def tiny_task_config(save_dir: Path, **trainer) -> dict:
    return {
        "name": "tiny_features",
        "task": {"type": "TinyFeatureClassification", "args": {}},
        "arch": {"type": "TinyMLP", "args": {"dim": 8, "hidden": 16, "num_classes": 3}},
        "data_loader": {"type": "TinyFeatureLoader", "args": {"split": "train", "batch_size": 8}},
        "valid_data_loader": {"type": "TinyFeatureLoader", "args": {"split": "val", "num_items": 48}},
        "loss": {"type": "TinyCrossEntropy", "args": {}},
        "optimizer": {"type": "SGD", "args": {"lr": 0.1}},
        "trainer": {"epochs": 4, "save_dir": str(save_dir), "tqdm": False, "log_every": 1,
                    "monitor": "max top1", **trainer},
    }


def train(config: dict, resume=None, run_id=None):
    parser = ConfigParser(copy.deepcopy(config), source="tiny.json", device="cpu", resume=resume, run_id=run_id)
    metrics = launch.train(parser)
    return parser.run_dir, metrics


def scalars(log_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_new_task_trains_and_evaluates_with_no_trainer_code(tmp_path):
    torch.manual_seed(0)
    run_dir, metrics = train(tiny_task_config(tmp_path))
    logged = scalars(run_dir / "tensorboard")
    losses = logged["loss/cross_entropy"]
    assert len(losses) == 4 * 8  # 64 items / batch 8, 4 epochs, every step logged
    assert sum(losses[-8:]) / 8 < 0.25 * sum(losses[:8]) / 8  # the learning curve drops
    assert metrics["items"] == 48 and metrics["top1"] >= 90.0
    assert logged["val/top1"][-1] == pytest.approx(metrics["top1"])
    assert (run_dir / "model_best.pth").exists() and (run_dir / "curves.png").exists()
    assert json.loads((run_dir / "final_metrics.json").read_text()) == metrics
    best_epoch = logged["val/top1"].index(max(logged["val/top1"])) + 1
    best = load_training_checkpoint(run_dir / "model_best.pth")
    assert best["hooks"] == {"Evaluate": {"best": max(logged["val/top1"]), "evaluated_epoch": best_epoch},
                             "LearningCurves": {}}
    assert best["epoch"] == best_epoch
    # latest.pth is written before the epoch's evaluation (a stop during it loses no training)
    assert load_training_checkpoint(run_dir / "latest.pth")["hooks"]["Evaluate"]["evaluated_epoch"] == 3


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    config = tiny_task_config(tmp_path, epochs=1, monitor="off")
    config.pop("valid_data_loader")
    big_dir, _ = train(config, run_id="batch8")
    config["data_loader"]["args"]["batch_size"] = 4
    config["trainer"]["grad_accum_steps"] = 2
    small_dir, _ = train(config, run_id="batch4x2")
    big, small = (load_training_checkpoint(d / "latest.pth") for d in (big_dir, small_dir))
    assert big["global_step"] == small["global_step"] == 8
    for key in big["state_dict"]:
        torch.testing.assert_close(small["state_dict"][key], big["state_dict"][key], rtol=0, atol=1e-6)


def test_one_optimizer_per_parameter_set_is_checkpointed_and_resumed(tmp_path, monkeypatch):
    config = tiny_task_config(tmp_path, epochs=2, monitor="off")
    config["task"]["args"]["split_optimizers"] = True
    config["lr_scheduler"] = {"type": "WarmupDecaySchedule", "args": {"warmup_steps": 2}}
    full_dir, _ = train(config, run_id="full")
    full = load_training_checkpoint(full_dir / "latest.pth")
    assert sorted(full["optimizers"]) == ["encoder", "head"] and sorted(full["lr_scheduler"]) == ["encoder", "head"]
    logged = scalars(full_dir / "tensorboard")
    assert "schedule/lr_encoder_all" in logged and "schedule/lr_head_all" in logged

    original = Engine.train_step

    def signal_at_step_11(self, batch):  # a preemption in the middle of epoch 2
        result = original(self, batch)
        if self.global_step == 11:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(Engine, "train_step", signal_at_step_11)
    cut_dir, _ = train(config, run_id="cut")
    monkeypatch.setattr(Engine, "train_step", original)
    assert load_training_checkpoint(cut_dir / "latest.pth")["global_step"] == 11
    resumed_dir, _ = train(config, resume=str(cut_dir / "latest.pth"), run_id="resumed")
    resumed = load_training_checkpoint(resumed_dir / "latest.pth")
    for key in full["state_dict"]:
        torch.testing.assert_close(resumed["state_dict"][key], full["state_dict"][key], rtol=0, atol=0)


def test_exponential_evaluation_epochs():
    assert exponential_epochs(2, 10) == {1, 2, 4, 8, 10}
    assert exponential_epochs(1.5, 6) == {1, 2, 3, 5, 6}
    with pytest.raises(ValueError, match="exponential_base must be > 1"):
        exponential_epochs(1.0, 5)


def test_exponential_schedule_hook_evaluates_at_those_epochs(tmp_path):
    config = tiny_task_config(tmp_path, epochs=5, monitor="off")
    config["hooks"] = [{"type": "Evaluate", "args": {"exponential_base": 2, "monitor": "max top1"}}]
    run_dir, _ = train(config)
    log = (run_dir / "train.log").read_text()
    evaluated = [int(line.split("after epoch ")[1].split(":")[0]) for line in log.splitlines()
                 if "evaluation (val) after epoch" in line]
    assert evaluated == [1, 2, 4, 5]


def test_a_stop_during_evaluation_keeps_the_epoch_and_evaluates_on_resume(tmp_path, monkeypatch):
    config = tiny_task_config(tmp_path, epochs=2)
    original = tests.tiny_task.TinyTop1.process
    calls = {"n": 0}

    def signal_on_first_batch(self, batch, predictions):
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, predictions)

    monkeypatch.setattr(tests.tiny_task.TinyTop1, "process", signal_on_first_batch)
    cut_dir, metrics = train(config, run_id="cut")
    assert metrics == {} and calls["n"] == 1  # stopped at the next evaluation batch
    cut = load_training_checkpoint(cut_dir / "latest.pth")
    assert (cut["epoch"], cut["batch_in_epoch"], cut["hooks"]["Evaluate"]["evaluated_epoch"]) == (1, 8, 0)

    monkeypatch.setattr(tests.tiny_task.TinyTop1, "process", original)
    resumed_dir, metrics = train(config, resume=str(cut_dir / "latest.pth"), run_id="resumed")
    assert "running the evaluation of epoch 1 that the previous run did not finish" in \
        (resumed_dir / "train.log").read_text()
    resumed = load_training_checkpoint(resumed_dir / "latest.pth")
    assert (resumed["epoch"], resumed["hooks"]["Evaluate"]["evaluated_epoch"]) == (2, 1)  # written before epoch 2's
    assert "evaluation (val) after epoch 2" in (resumed_dir / "train.log").read_text()


def test_two_processes_with_batch_4_equal_one_process_with_batch_8(tmp_path):
    config = with_import_paths(tiny_task_config(tmp_path, epochs=1, monitor="off"))
    config.pop("valid_data_loader")
    single_dir, _ = train(config, run_id="single")
    config["data_loader"]["args"]["batch_size"] = 4
    path = tmp_path / "ddp.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         str(ROOT / "run" / "train.py"), "-c", str(path), "-d", "cpu",
         "--run-id", "ddp"], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    single = load_training_checkpoint(single_dir / "latest.pth")
    ddp = load_training_checkpoint(tmp_path / "tiny_features" / "ddp" / "latest.pth")
    assert ddp["world_size"] == 2 and ddp["global_step"] == single["global_step"] == 8
    for key in single["state_dict"]:
        torch.testing.assert_close(ddp["state_dict"][key], single["state_dict"][key], rtol=0, atol=1e-6)


def test_every_zipped_training_loader_is_logged(tmp_path):
    config = tiny_task_config(tmp_path, epochs=1, monitor="off")
    config.pop("valid_data_loader")
    second = copy.deepcopy(config["data_loader"])
    second["args"]["seed"] = 5
    config["data_loader"] = [config["data_loader"], second]
    run_dir, _ = train(config)
    logged = scalars(run_dir / "tensorboard")
    first, other = logged["loader0/loss/cross_entropy"], logged["loader1/loss/cross_entropy"]
    assert len(first) == len(other) == 8 and first != other
    for total, a, b in zip(logged["loss/total"], first, other):
        assert total == pytest.approx((a + b) / 2, rel=1e-5)


def test_a_loader_resumed_mid_epoch_keeps_its_worker_settings():
    loader = tests.tiny_task.TinyFeatureLoader(num_workers=2, batch_size=4)
    loader = torch.utils.data.DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, num_workers=2,
                                         persistent_workers=True, prefetch_factor=3,
                                         collate_fn=loader.collate_fn)
    resumed = resumed_epoch_loader(loader, skip_batches=5)
    assert (resumed.num_workers, resumed.persistent_workers, resumed.prefetch_factor) == (2, True, 3)
    assert len(resumed) == len(loader) - 5
    assert [b["y"].tolist() for b in resumed] == [b["y"].tolist() for b in loader][5:]
