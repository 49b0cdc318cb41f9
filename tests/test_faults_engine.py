"""Faults around the engine, each run as a user would meet it: exit code, time to exit, message, checkpoint."""
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import tests.tiny_task
from tests.tiny_task import with_import_paths
from tests.test_engine import tiny_task_config, train
from tests.test_trainer import tiny_config
from trainer import launch
from trainer.engine import Engine
from trainer.state import load_training_checkpoint
from utils.config import ConfigError, ConfigParser, set_by_path

ROOT = Path(__file__).resolve().parents[1]
EXIT_BOUND_S = 60  # a failure must end the process within this many seconds


def run_script(script: str, config: dict, tmp_path: Path, *args, timeout=EXIT_BOUND_S):
    path = tmp_path / "fault.json"
    path.write_text(json.dumps(config))
    start = time.time()
    result = subprocess.run([sys.executable, str(ROOT / "run" / script), "-c", str(path), "-d", "cpu", *args],
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    return result, time.time() - start


@pytest.mark.parametrize("loading", ["strict", "lax"])
def test_a_failing_run_with_live_workers_exits_promptly(tiny_synthetic, tmp_path, loading):
    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic, data)
    for chunk in (data / "videos").rglob("*.mp4"):
        chunk.write_bytes(b"not a video")
    config = tiny_config(data, tmp_path / "saved")
    config["data_loader"]["args"].update(num_workers=1)
    config["data_loader"]["args"]["video_params"]["loading"] = loading
    result, seconds = run_script("train_multiscale_egoclip.py", config, tmp_path)
    assert result.returncode != 0 and seconds < EXIT_BOUND_S
    expected = "max_bad_fraction" if loading == "lax" else str(data / "videos")
    assert expected in result.stderr


def test_an_evaluation_failure_with_persistent_training_workers_exits_promptly(tiny_synthetic, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic, data)
    mcq = json.loads((data / "meta" / "egomcq.json").read_text())
    for uid in {clip["video_uid"] for item in mcq.values() for clip in item["choices"].values()}:
        for chunk in (data / "videos" / uid).glob("*.mp4"):
            chunk.write_bytes(b"not a video")
    config = tiny_config(data, tmp_path / "saved", valid=True)
    config["trainer"].update(monitor="max inter_video_acc", epochs=1)
    config["data_loader"]["args"].update(num_workers=1, persistent_workers=True)
    result, seconds = run_script("train_multiscale_egoclip.py", config, tmp_path)
    assert result.returncode == 1 and seconds < EXIT_BOUND_S
    assert "egomcq.json item 0 choice 0" in result.stderr


def test_a_finished_run_with_persistent_workers_exits(tiny_synthetic, tmp_path):
    config = tiny_config(tiny_synthetic, tmp_path / "saved", valid=True)
    config["trainer"].update(monitor="max inter_video_acc")
    for section in ("data_loader", "valid_data_loader"):
        config[section]["args"].update(num_workers=1, persistent_workers=True)
    result, seconds = run_script("train_multiscale_egoclip.py", config, tmp_path, "--run-id", "done")
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_training_checkpoint(tmp_path / "saved" / "tiny" / "done" / "latest.pth")["epoch"] == 2


def test_job_wide_sigterm_during_evaluation_saves_and_exits(tmp_path):
    marker = tmp_path / "evaluating"
    config = tiny_task_config(tmp_path, epochs=50)
    config["valid_data_loader"]["args"].update(num_workers=1, batch_size=4)
    config["evaluators"] = [{"type": "TinyTop1", "args": {"seconds_per_batch": 1.0, "started_marker": str(marker)}}]
    config = with_import_paths(config)
    path = tmp_path / "long.json"
    path.write_text(json.dumps(config))
    process = subprocess.Popen([sys.executable, str(ROOT / "run" / "train.py"), "-c", str(path), "-d", "cpu",
                                "--run-id", "preempted"], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists():
        assert process.poll() is None and time.time() < deadline, "evaluation did not start"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGTERM)
    signalled = time.time()
    _, stderr = process.communicate(timeout=EXIT_BOUND_S)
    assert process.returncode == 0, stderr[-3000:]
    assert time.time() - signalled < 10  # 12 batches of 1 s were left: evaluation was abandoned
    run_dir = tmp_path / "tiny_features" / "preempted"
    ckpt = load_training_checkpoint(run_dir / "latest.pth")
    assert (ckpt["epoch"], ckpt["batch_in_epoch"]) == (1, 8)  # the epoch's training is kept
    assert "stopped by signal" in (run_dir / "train.log").read_text()


def test_nonfinite_stop_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny_task_config(tmp_path, epochs=3, max_nan_steps=2, monitor="off")
    original = tests.tiny_task.TinyFeatureClassification.training_step

    def diverge_in_epoch_2(self, batch, ctx):
        output = original(self, batch, ctx)
        if ctx.epoch == 2:
            output.loss = output.loss * float("inf")
        return output

    monkeypatch.setattr(tests.tiny_task.TinyFeatureClassification, "training_step", diverge_in_epoch_2)
    with pytest.raises(RuntimeError, match="2 consecutive non-finite losses at step 8; stopped"):
        train(config, run_id="diverged")
    run_dir = tmp_path / "tiny_features" / "diverged"
    latest = load_training_checkpoint(run_dir / "latest.pth")
    epoch1 = load_training_checkpoint(run_dir / "checkpoint-epoch1.pth")
    assert latest["global_step"] == 8
    for key, value in epoch1["state_dict"].items():
        assert torch.equal(latest["state_dict"][key], value), key


def test_partial_checkpoint_temporaries_are_removed_on_resume(tmp_path):
    config = tiny_task_config(tmp_path, epochs=1, monitor="off", auto_resume=True)
    run_dir, _ = train(config, run_id="run")
    stale = run_dir / ".latest.pth.tmp4242"
    stale.write_bytes(b"half a checkpoint")
    config["trainer"]["epochs"] = 2
    train(config, run_id="run")
    assert not stale.exists()
    assert load_training_checkpoint(run_dir / "latest.pth")["epoch"] == 2


def test_resume_from_a_missing_file_fails_before_anything_is_built(tmp_path):
    config = with_import_paths(tiny_task_config(tmp_path))
    result, seconds = run_script("train.py", config, tmp_path, "-r", str(tmp_path / "nope.pth"))
    assert result.returncode != 0 and seconds < 20
    assert f"--resume {tmp_path / 'nope.pth'}: no such checkpoint file" in result.stderr
    assert not (tmp_path / "tiny_features").exists()  # no run dir was made


def test_evaluation_reports_weights_it_had_to_adapt(tiny_synthetic, tmp_path):
    single = tiny_config(tiny_synthetic, tmp_path, multiscale=False)
    weights = tmp_path / "single_scale.pth"
    torch.save(ConfigParser(copy.deepcopy(single), device="cpu").init_obj("arch").state_dict(), weights)
    multi = tiny_config(tiny_synthetic, tmp_path, multiscale=True, valid=True)
    multi["arch"]["args"]["video_params"] = {**multi["arch"]["args"]["video_params"], "num_frames": 8}
    multi["arch"]["args"]["scales"] = [4, 8]
    for section in ("data_loader", "valid_data_loader"):
        multi[section]["args"]["video_params"]["scales"] = [4, 8]
    eval_config = {k: multi[k] for k in ("name", "arch", "valid_data_loader", "trainer")}
    parser = ConfigParser(eval_config, device="cpu", purpose="eval", resume=str(weights), run_id="eval")
    launch.evaluate(parser)
    written = json.loads((parser.run_dir / "eval_results.json").read_text())
    assert written["load_warnings"][0].startswith("not in the checkpoint, left as initialised: fusion")
    assert any("temporal_embed (1, 4, 32) -> (1, 8, 32)" in w for w in written["load_warnings"])


@pytest.mark.parametrize("path, value, message", [
    ("trainer.val_every", 0, "'trainer.val_every' must be >= 1, got 0"),
    ("trainer.save_period", 0, "'trainer.save_period' must be >= 1, got 0"),
    ("trainer.log_every", 0, "'trainer.log_every' must be >= 1, got 0"),
    ("trainer.max_steps_per_epoch", 0, "'trainer.max_steps_per_epoch' must be >= 1, got 0"),
    ("optimizer.args.lr", -0.001, "'optimizer.args': Invalid learning rate: -0.001"),
    ("trainer.monitor", "max top5", "'trainer.monitor' names 'top5', which no evaluator reports; they report "
                                    "['items', 'top1']"),
])
def test_out_of_range_config_values_fail_at_load(tmp_path, path, value, message):
    config = tiny_task_config(tmp_path)
    set_by_path(config, path, value)
    with pytest.raises(ConfigError) as err:
        ConfigParser(config, source="tiny.json", device="cpu")
    assert str(err.value) == f"tiny.json: {message}"


@pytest.mark.parametrize("key, value, message", [("batch_size", 0, "must be >= 1, got 0"),
                                                 ("num_workers", -1, "must be >= 0, got -1"),
                                                 ("temporal_pair_ratio", 1.5, "must be <= 1, got 1.5")])
def test_out_of_range_loader_values_fail_at_load(tiny_synthetic, tmp_path, key, value, message):
    config = tiny_config(tiny_synthetic, tmp_path)
    config["data_loader"]["args"][key] = value
    with pytest.raises(ConfigError) as err:
        ConfigParser(config, source="egoclip.json", device="cpu")
    assert str(err.value) == f"egoclip.json: 'data_loader.args.{key}' {message}"


def test_an_out_of_range_value_is_one_line_from_the_run_script(tmp_path):
    config = with_import_paths(tiny_task_config(tmp_path))
    config["trainer"]["val_every"] = 0
    result, seconds = run_script("train.py", config, tmp_path, timeout=60)
    assert result.returncode == 2 and seconds < 20
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'fault.json'}: 'trainer.val_every' must be >= 1, got 0"]


@pytest.mark.parametrize("workers, persistent", [(1, False), (2, False), (2, True)])
def test_interrupted_and_resumed_run_equals_uninterrupted_with_workers(tiny_synthetic, tmp_path, monkeypatch,
                                                                        workers, persistent):
    config = tiny_config(tiny_synthetic, tmp_path)
    config["data_loader"]["args"].update(num_workers=workers, persistent_workers=persistent)
    parser = ConfigParser(copy.deepcopy(config), source="test.json", device="cpu", run_id="full")
    launch.train(parser)
    full = load_training_checkpoint(parser.run_dir / "latest.pth")
    stop_at = full["global_step"] // 2 + 1  # inside epoch 2
    original = Engine.train_step

    def step_then_signal(self, batch):
        result = original(self, batch)
        if self.global_step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(Engine, "train_step", step_then_signal)
    cut = ConfigParser(copy.deepcopy(config), source="test.json", device="cpu", run_id="cut")
    launch.train(cut)
    monkeypatch.setattr(Engine, "train_step", original)
    assert load_training_checkpoint(cut.run_dir / "latest.pth")["global_step"] == stop_at
    resumed = ConfigParser(copy.deepcopy(config), source="test.json", device="cpu", run_id="resumed",
                           resume=str(cut.run_dir / "latest.pth"))
    launch.train(resumed)
    final = load_training_checkpoint(resumed.run_dir / "latest.pth")
    assert final["global_step"] == full["global_step"]
    for key, value in full["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key


def test_replaced_clips_are_counted_per_epoch_and_in_total(tiny_synthetic, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic, data)
    broken = data / "videos" / pd.read_csv(data / "meta" / "egoclip.csv", sep="\t")["video_uid"][0]
    for chunk in broken.glob("*.mp4"):
        chunk.write_bytes(b"not a video")
    config = tiny_config(data, tmp_path / "saved")
    config["data_loader"]["args"]["video_params"].update(loading="lax", max_bad_fraction=0.9)
    config["data_loader"]["args"]["num_workers"] = 1
    parser = ConfigParser(config, source="lax.json", device="cpu", run_id="lax")
    launch.train(parser)
    from tests.test_engine import scalars
    logged = scalars(parser.run_dir / "tensorboard")
    per_step, per_epoch = logged["data/replaced_clips"], logged["data/replaced_clips_epoch"]
    steps = len(per_step) // 2
    assert per_epoch == [sum(per_step[:steps]), sum(per_step[steps:])] and sum(per_epoch) > 0
    assert logged["data/replaced_clips_total"] == [per_epoch[0], sum(per_epoch)]
    assert load_training_checkpoint(parser.run_dir / "latest.pth")["hooks"]["ReplacedClipsReport"] == {"total": sum(per_epoch)}
    log = (parser.run_dir / "train.log").read_text()
    assert f"epoch 1: {int(per_epoch[0])} training clips replaced after read errors" in log
    assert "egoclip.csv row" in log and broken.name in log


def test_resuming_from_a_truncated_checkpoint_names_it(tmp_path):
    run_dir, _ = train(tiny_task_config(tmp_path, epochs=1, monitor="off"), run_id="run")
    latest = run_dir / "latest.pth"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match=f"{latest}: checkpoint file is truncated or corrupt \\(1000 bytes\\)"):
        train(tiny_task_config(tmp_path, epochs=2, monitor="off"), resume=str(latest), run_id="resumed")
