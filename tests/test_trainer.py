"""The trainer end to end on a tiny synthetic set: resume equality, SIGTERM, NaN skipping, 2-process gloo,
and EgoMCQ evaluation of an EgoVLP-layout checkpoint through run/test_egomcq.py."""
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import CheckpointKeyError
from model.loss import MultiScaleEgoNCE
from model.presets import TEXT_PRESETS
from trainer import launch
from trainer.egomcq_eval import evaluate_egomcq
from trainer.state import load_training_checkpoint
from trainer.trainer_egoclip import Multi_Trainer_dist
from trainer.trainer_multiscale_egoclip import MultiScale_Trainer_dist
from utils.config import ConfigParser

ROOT = Path(__file__).resolve().parents[1]
TINY_TEXT = TEXT_PRESETS["tiny"]
TINY_VIDEO = {"model": "SpaceTimeTransformer", "arch_config": "tiny", "embed_dim": 32, "num_heads": 2,
              "patch_size": 16, "input_res": 32, "num_frames": 4, "pretrained": False}


def tiny_config(root: Path, save_dir: Path, multiscale: bool = True, valid: bool = False) -> dict:
    scales = [2, 4]
    loader_type = "MultiScaleEgoClipDataLoader" if multiscale else "EgoClipDataLoader"
    video = {"input_res": 32, "loading": "strict", **({"scales": scales} if multiscale else {"num_frames": 4})}
    loader = {"data_dir": str(root / "videos"), "meta_dir": str(root / "meta"), "video_params": video,
              "batch_size": 6, "num_workers": 0, "seed": 0}
    arch_args = {"video_params": TINY_VIDEO, "text_params": TINY_TEXT, "projection_dim": 16}
    if multiscale:
        arch_args["scales"] = scales
        loader["temporal_pair_ratio"] = 0.3
    config = {
        "name": "tiny",
        "arch": {"type": "MultiScaleFrozenInTime" if multiscale else "FrozenInTime", "args": arch_args},
        "data_loader": {"type": loader_type, "args": {**loader, "split": "train"}},
        "optimizer": {"type": "AdamW", "args": {"lr": 1e-3, "weight_decay": 0.01}},
        "lr_scheduler": {"type": "WarmupDecaySchedule", "args": {"warmup_steps": 2}},
        "loss": {"type": "MultiScaleEgoNCE",
                 "args": {"consistency_weight": 0.5 if multiscale else 0.0,
                          "temperature_schedule": {"initial_temp": 0.1, "final_temp": 0.05, "total_steps": 8}}},
        "trainer": {"epochs": 2, "save_dir": str(save_dir), "tqdm": False, "log_every": 1, "monitor": "off"},
    }
    if valid:
        config["valid_data_loader"] = {"type": loader_type,
                                       "args": {**loader, "split": "val", "batch_size": 4, "shuffle": False}}
    return config


def run_training(config: dict, trainer_cls=MultiScale_Trainer_dist, resume=None):
    parser = ConfigParser(copy.deepcopy(config), source="test.json", device="cpu", resume=resume)
    metrics = launch.train(parser, trainer_cls)
    return parser.run_dir, metrics


def tensorboard_scalars(log_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_interrupted_and_resumed_run_equals_uninterrupted(synthetic, tmp_path, monkeypatch):
    config = tiny_config(synthetic, tmp_path)
    full_dir, _ = run_training(config)
    full = load_training_checkpoint(full_dir / "latest.pth")
    steps_per_epoch = full["global_step"] // 2
    assert steps_per_epoch >= 2
    scalars = tensorboard_scalars(full_dir / "tensorboard")
    for tag in ("loss/total", "loss/egonce", "loss/temporal", "schedule/temperature", "schedule/lambda",
                "schedule/lr_decay", "schedule/lr_no_decay", "schedule/lr_new", "fusion/weight_s2",
                "fusion/weight_s4", "data/num_pairs", "perf/samples_per_s", "perf/data_wait_fraction"):
        assert len(scalars[tag]) == full["global_step"], tag
    temperatures = scalars["schedule/temperature"]
    assert temperatures[0] == pytest.approx(0.1) and temperatures == sorted(temperatures, reverse=True)
    assert scalars["schedule/lambda"][0] == pytest.approx(0.5 * 0.1)  # consistency_weight x lambda_start

    # SIGTERM during epoch 2: the trainer finishes the step, writes latest.pth and stops.
    stop_at = steps_per_epoch + 1
    original_step = Multi_Trainer_dist.train_step

    def step_then_signal(self, batch):
        result = original_step(self, batch)
        if self.global_step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(Multi_Trainer_dist, "train_step", step_then_signal)
    cut_dir, metrics = run_training(config)
    monkeypatch.setattr(Multi_Trainer_dist, "train_step", original_step)
    cut = load_training_checkpoint(cut_dir / "latest.pth")
    assert metrics == {} and (cut["epoch"], cut["global_step"]) == (2, stop_at)
    assert cut["batch_in_epoch"] == 1
    assert "stopped by signal at epoch 2, batch 1" in (cut_dir / "train.log").read_text()
    with pytest.raises(AssertionError):
        assert_same_weights(cut["state_dict"], full["state_dict"])

    resumed_dir, _ = run_training(config, resume=str(cut_dir / "latest.pth"))
    resumed = load_training_checkpoint(resumed_dir / "latest.pth")
    assert resumed["global_step"] == full["global_step"]
    assert_same_weights(resumed["state_dict"], full["state_dict"])
    for a, b in zip(resumed["optimizer"]["state"].values(), full["optimizer"]["state"].values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=0, atol=0)
    assert resumed["loss"] == full["loss"]  # temperature schedule state


def test_nonfinite_loss_is_skipped_then_stops_the_run(synthetic, tmp_path, monkeypatch):
    config = tiny_config(synthetic, tmp_path, multiscale=False)
    config["trainer"]["max_nan_steps"] = 2
    calls = {"n": 0}
    original = MultiScaleEgoNCE.forward

    def nan_on_second_call(self, *args, **kwargs):
        loss, components = original(self, *args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 2 else loss), components

    monkeypatch.setattr(MultiScaleEgoNCE, "forward", nan_on_second_call)
    run_dir, _ = run_training(config, Multi_Trainer_dist)
    ckpt = load_training_checkpoint(run_dir / "latest.pth")
    assert ckpt["global_step"] == calls["n"] - 1  # one skipped step, no optimizer step for it
    assert "non-finite loss (nan) at epoch 1, step 1: step skipped (1 in a row, limit 2)" in \
        (run_dir / "train.log").read_text()
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())

    monkeypatch.setattr(MultiScaleEgoNCE, "forward",
                        lambda self, *a, **k: (original(self, *a, **k)[0] * float("inf"), {}))
    with pytest.raises(RuntimeError, match="2 consecutive non-finite losses at step 0; stopped"):
        run_training(config, Multi_Trainer_dist)


def test_two_process_gloo_training_and_validation(synthetic, tmp_path):
    config = tiny_config(synthetic, tmp_path, valid=True)
    config["trainer"].update(epochs=1, monitor="max inter_video_acc")
    config["data_loader"]["args"]["batch_size"] = 4  # two steps per rank: a second step needs a complete reduction
    path = tmp_path / "ddp.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         str(ROOT / "run" / "train_multiscale_egoclip.py"), "-c", str(path), "-d", "cpu", "--run-id", "ddp"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "tiny" / "ddp"
    ckpt = load_training_checkpoint(run_dir / "latest.pth")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["global_step"] >= 2
    metrics = json.loads((run_dir / "final_metrics.json").read_text())
    mcq = json.loads((synthetic / "meta" / "egomcq.json").read_text())
    # every question counted exactly once across the two ranks
    assert metrics["inter_video_questions"] + metrics["intra_video_questions"] == len(mcq)
    assert (run_dir / "model_best.pth").exists()
    # the 2-rank validation equals a single-process evaluation of the same weights (up to one question per
    # type: an untrained model scores some choices almost equally, and other batching can flip those)
    parser = ConfigParser(config, device="cpu")
    model = parser.init_obj("arch")
    model.load_state_dict(ckpt["state_dict"])
    single = evaluate_egomcq(model, parser.init_all("valid_data_loader")[0], torch.device("cpu"))
    assert single.keys() == metrics.keys()
    for key, value in single.items():
        if key.endswith("_questions"):
            assert value == metrics[key]
        else:
            one_question = 100.0 / single[key.rsplit("_acc", 1)[0] + "_questions"]
            assert abs(value - metrics[key]) <= one_question + 1e-9, key


class EgoVLPConfigStandIn:
    """Stands for EgoVLP's parse_config.ConfigParser, pickled into its checkpoints."""


def test_egovlp_layout_checkpoint_evaluates_through_run_script(synthetic, tmp_path, monkeypatch):
    train_config = tiny_config(synthetic, tmp_path, multiscale=False, valid=True)
    parser = ConfigParser(copy.deepcopy(train_config), device="cpu")
    torch.manual_seed(3)
    model = parser.init_obj("arch")
    # EgoVLP's file: module.-prefixed keys and a pickled object of a class the loader cannot import.
    EgoVLPConfigStandIn.__module__ = "parse_config"
    EgoVLPConfigStandIn.__qualname__ = "ConfigParser"
    monkeypatch.setitem(sys.modules, "parse_config", type(sys)("parse_config"))
    sys.modules["parse_config"].ConfigParser = EgoVLPConfigStandIn
    checkpoint = {"arch": "FrozenInTime", "epoch": 10, "monitor_best": 0.0, "optimizer": {},
                  "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                  "config": EgoVLPConfigStandIn()}
    ckpt_path = tmp_path / "egovlp.pth"
    torch.save(checkpoint, ckpt_path)
    monkeypatch.delitem(sys.modules, "parse_config")

    eval_config = {k: train_config[k] for k in ("name", "arch", "valid_data_loader", "trainer")}
    eval_path = tmp_path / "eval.json"
    eval_path.write_text(json.dumps(eval_config))
    result = subprocess.run([sys.executable, str(ROOT / "run" / "test_egomcq.py"), "-c", str(eval_path),
                             "--resume", str(ckpt_path), "-d", "cpu", "--run-id", "eval"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "inter_video_acc" in result.stdout and "intra_video_acc" in result.stdout
    written = json.loads((tmp_path / "tiny" / "eval" / "egomcq_results.json").read_text())
    expected = evaluate_egomcq(model, parser.init_all("valid_data_loader")[0], torch.device("cpu"))
    assert {k: written[k] for k in expected} == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize("multiscale", [False, True], ids=["single_scale", "multi_scale"])
def test_scene_aware_negatives_reach_the_loss(synthetic, tmp_path, monkeypatch, multiscale):
    config = tiny_config(synthetic, tmp_path, multiscale=multiscale)
    config["data_loader"]["args"]["neg_param"] = 60
    config["trainer"].update(epochs=1, max_steps_per_epoch=1)
    seen = []
    original = MultiScaleEgoNCE.forward

    def record(self, text_embeds, video_embeds, verb_vec=None, noun_vec=None, temporal_pairs=None, **kwargs):
        seen.append((text_embeds.shape[0], video_embeds.shape[0], verb_vec.shape[0], noun_vec.shape[0],
                     int(temporal_pairs[:, :2].max()) if temporal_pairs is not None and len(temporal_pairs) else -1))
        return original(self, text_embeds, video_embeds, verb_vec, noun_vec, temporal_pairs, **kwargs)

    monkeypatch.setattr(MultiScaleEgoNCE, "forward", record)
    run_training(config, MultiScale_Trainer_dist if multiscale else Multi_Trainer_dist)
    batch_size = config["data_loader"]["args"]["batch_size"]
    assert seen[0][:4] == (2 * batch_size,) * 4
    assert seen[0][4] < batch_size  # temporal pairs still index the batch's own clips


def test_resume_refuses_a_checkpoint_that_is_not_a_training_run(synthetic, tmp_path):
    config = tiny_config(synthetic, tmp_path, multiscale=False)
    bare = tmp_path / "bare.pth"
    torch.save(ConfigParser(copy.deepcopy(config), device="cpu").init_obj("arch").state_dict(), bare)
    with pytest.raises(ValueError, match=r"bare\.pth is not a training checkpoint of this project .*load_checkpoint"):
        run_training(config, Multi_Trainer_dist, resume=str(bare))


def test_evaluation_refuses_a_checkpoint_that_does_not_fit(synthetic, tmp_path):
    config = tiny_config(synthetic, tmp_path, multiscale=False, valid=True)
    state = ConfigParser(copy.deepcopy(config), device="cpu").init_obj("arch").state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("vid_proj.")}
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": state}, path)
    eval_config = {k: config[k] for k in ("name", "arch", "valid_data_loader", "trainer")}
    parser = ConfigParser(eval_config, device="cpu", purpose="eval", resume=str(path))
    with pytest.raises(CheckpointKeyError, match=r"strict load failed\n  missing \(2\): vid_proj\.\*\.bias"):
        launch.evaluate(parser)
    assert not list((tmp_path / "tiny").glob("*/egomcq_results.json"))



def test_sigterm_to_the_whole_process_group_saves_and_exits(synthetic, tmp_path):
    """A cluster signals every process of the job, DataLoader workers included: the run still checkpoints."""
    config = tiny_config(synthetic, tmp_path)
    config["data_loader"]["args"]["num_workers"] = 1
    config["trainer"]["epochs"] = 100  # cannot finish before the signal
    path = tmp_path / "long.json"
    path.write_text(json.dumps(config))
    process = subprocess.Popen([sys.executable, str(ROOT / "run" / "train_multiscale_egoclip.py"), "-c", str(path),
                                "-d", "cpu", "--run-id", "preempted"], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "tiny" / "preempted" / "train.log"
    deadline = time.time() + 240
    while not (log.exists() and "epoch 1 step 1/" in log.read_text()):
        assert process.poll() is None and time.time() < deadline, "training did not start"
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-3000:]
    ckpt = load_training_checkpoint(tmp_path / "tiny" / "preempted" / "latest.pth")
    assert ckpt["global_step"] >= 1
    assert "stopped by signal" in log.read_text()
