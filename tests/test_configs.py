"""The shipped configs and ``_base_`` inheritance: every config validates, every fragment is used, schedule
lengths are derived unless given, and a faulty config stops a run script with one error line."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from model.loss import EgoNCEObjective, MultiScaleEgoNCE, ScheduledEgoNCE
from utils.config import ConfigError, ConfigParser
from utils.config_files import load_config_file

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TRAIN_CONFIGS = sorted(CONFIGS.glob("pt/*.json")) + sorted(CONFIGS.glob("demo/*.json"))
EVAL_CONFIGS = sorted(CONFIGS.glob("eval/*.json"))


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_training_configs_validate(path):
    config = ConfigParser.from_file(path)
    assert config["valid_data_loader"]["args"]["split"] in ("val", "test")
    assert "_base_" not in config.config


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=lambda p: p.name)
def test_eval_configs_validate(path):
    ConfigParser.from_file(path, purpose="eval")


def bases_of(path: Path) -> set[Path]:
    """Every file ``path`` inherits from, directly or not."""
    bases = json.loads(path.read_text()).get("_base_", [])
    found = set()
    for base in [bases] if isinstance(bases, str) else bases:
        base_path = (path.parent / base).resolve()
        found |= {base_path} | bases_of(base_path)
    return found


def test_every_base_fragment_is_used_by_a_shipped_config():
    used = set().union(*(bases_of(path) for path in TRAIN_CONFIGS + EVAL_CONFIGS))
    assert sorted(p.relative_to(CONFIGS) for p in CONFIGS.glob("_base_/**/*.json") if p.resolve() not in used) == []


def test_schedule_length_is_derived_unless_the_config_gives_it():
    demo = ConfigParser.from_file(CONFIGS / "demo" / "multiscale_demo.json").init_obj("loss")
    baseline = ConfigParser.from_file(CONFIGS / "demo" / "egoclip_demo.json").init_obj("loss")
    given = ConfigParser.from_file(CONFIGS / "pt" / "multiscale_egoclip.json").init_obj("loss")
    for objective in (demo, baseline, given):
        objective.set_total_steps(360)
    assert demo.temperature_scheduler.total_steps == baseline.temperature_scheduler.total_steps == 360
    assert given.temperature_scheduler.total_steps == 50000
    assert demo.current_temperature(180) == pytest.approx(0.05)
    fixed = EgoNCEObjective(**load_config_file(CONFIGS / "pt" / "egoclip.json")["loss"]["args"])
    fixed.set_total_steps(360)
    assert fixed.temperature_scheduler is None and fixed.current_temperature(180) == 0.05


def test_a_derived_schedule_cannot_run_before_it_knows_its_length():
    objective = ConfigParser.from_file(CONFIGS / "demo" / "multiscale_demo.json").init_obj("loss")
    with pytest.raises(RuntimeError, match="total_steps is not set"):
        objective(torch.randn(2, 4), torch.randn(2, 4), torch.ones(2, 3), torch.ones(2, 3))


def test_baseline_and_multiscale_objectives_share_a_base_and_the_checkpoint_layout():
    assert issubclass(EgoNCEObjective, ScheduledEgoNCE) and issubclass(MultiScaleEgoNCE, ScheduledEgoNCE)
    assert not issubclass(EgoNCEObjective, MultiScaleEgoNCE)
    saved = {"_extra_state": {"temperature_scheduler": {"initial_temp": 0.07, "final_temp": 0.03,
                                                        "total_steps": 360, "current_step": 90}}}
    for cls in (EgoNCEObjective, MultiScaleEgoNCE):
        objective = cls(temperature_schedule={"initial_temp": 0.07, "final_temp": 0.03})
        objective.set_total_steps(360)
        objective.load_state_dict(saved)
        assert list(objective.state_dict()) == ["_extra_state"]
        assert objective.temperature_scheduler.current_step == 90


def test_demo_model_builds_offline():
    config = ConfigParser.from_file(CONFIGS / "demo" / "multiscale_demo.json")
    model = config.init_obj("arch")
    assert model.scales == (4, 8, 16)


# ----------------------------------------------------------------------------- _base_ inheritance
def write(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def test_bases_merge_in_order_then_the_file_on_top(tmp_path):
    write(tmp_path / "_base_" / "common.json", {"trainer": {"epochs": 3, "save_dir": "s"}, "metrics": ["a", "b"]})
    write(tmp_path / "_base_" / "model.json", {"_base_": "common.json",
                                               "arch": {"type": "M", "args": {"p": {"x": 1, "y": [1, 2]}}}})
    write(tmp_path / "_base_" / "other.json", {"arch": {"args": {"p": {"y": [3]}, "q": 1}}, "trainer": {"epochs": 5}})
    child = write(tmp_path / "exp" / "child.json", {"_base_": ["../_base_/model.json", "../_base_/other.json"],
                                                    "arch": {"args": {"p": {"z": 0}}}, "metrics": ["c"]})
    assert load_config_file(child) == {
        "trainer": {"epochs": 5, "save_dir": "s"}, "metrics": ["c"],
        "arch": {"type": "M", "args": {"p": {"x": 1, "y": [3], "z": 0}, "q": 1}}}


def test_set_overrides_the_bases_and_the_run_dir_saves_the_resolved_config(tmp_path):
    demo = load_config_file(CONFIGS / "demo" / "multiscale_demo.json")
    base = write(tmp_path / "_base_" / "demo.json", {**demo, "trainer": {**demo["trainer"],
                                                                         "save_dir": str(tmp_path / "saved")}})
    child = write(tmp_path / "exp" / "child.json", {"_base_": os.path.relpath(base, tmp_path / "exp"),
                                                    "optimizer": {"args": {"lr": 0.002}}})
    parser = ConfigParser.parse_args(["-c", str(child), "--set", "optimizer.args.lr=0.5",
                                      "--set", "trainer.epochs=3", "--run-id", "r"])
    assert parser["optimizer"] == {"type": "AdamW", "args": {"lr": 0.5, "weight_decay": 0.01}}
    assert parser["trainer"]["epochs"] == 3 and parser["arch"] == demo["arch"]
    saved = json.loads((parser.make_run_dir() / "config.json").read_text())
    assert saved == parser.config and "_base_" not in saved


def test_base_cycle_and_missing_base_name_the_file(tmp_path):
    a = write(tmp_path / "a.json", {"_base_": "sub/b.json"})
    b = write(tmp_path / "sub" / "b.json", {"_base_": ["../a.json"]})
    with pytest.raises(ConfigError) as info:
        load_config_file(a)
    cycle = " -> ".join(os.path.relpath(p) for p in (a, b, a))
    assert str(info.value) == f"{b}: '_base_' cycle: {cycle}"

    missing = write(tmp_path / "m.json", {"_base_": ["nope/x.json"]})
    with pytest.raises(ConfigError) as info:
        load_config_file(missing)
    assert str(info.value) == f"{missing}: '_base_' file 'nope/x.json' not found (looked for {tmp_path}/nope/x.json)"

    bad = write(tmp_path / "bad.json", {"_base_": 3})
    with pytest.raises(ConfigError) as info:
        load_config_file(bad)
    assert str(info.value) == f"{bad}: '_base_' must be a path or a list of paths, got 3"


# ----------------------------------------------------------------------------- run scripts stop at load
SCALES_TASK = '''
    from utils.registry import TASKS


    @TASKS.register("TestCfgScalesTask")
    class ScalesTask:
        consistent_keys = (("arch.args.scales", "data_loader.args.video_params.scales"),)

        def __init__(self, model, objective=None):
            pass
'''

FAULTS = {
    "arch.args.video_params.arch_confg": ("unknown key 'arch.args.video_params.arch_confg'; did you mean "
                                          "'arch_config'?"),
    "loss.args.temporal.lambda_begin": "unknown key 'loss.args.temporal.lambda_begin'; did you mean 'lambda_end'?",
    "data_loader.args.video_params.scale": ("unknown key 'data_loader.args.video_params.scale'; did you mean "
                                            "'scales'?"),
    "data_loader.args.video_params.scales": ("'data_loader.args.video_params.scales' = [2, 4] differs from "
                                             "'arch.args.scales' = [4, 8, 16]"),
}


def test_train_script_stops_with_one_error_line_per_fault(tmp_path):
    (tmp_path / "cfg_scales_task.py").write_text(textwrap.dedent(SCALES_TASK))
    demo = load_config_file(CONFIGS / "demo" / "multiscale_demo.json")
    paths = {}
    for i, key in enumerate(FAULTS):
        config = json.loads(json.dumps(demo))
        if key.endswith(".scales"):
            config["task"] = {"type": "cfg_scales_task.ScalesTask"}
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = [2, 4] if leaf.startswith("scale") else 0.1 if leaf.startswith("lambda") else "tiny"
        paths[key] = write(tmp_path / f"fault{i}.json", config)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    runs = {key: subprocess.Popen([sys.executable, str(ROOT / "run" / "train_egoclip.py"), "-c", str(path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
            for key, path in paths.items()}
    for key, run in runs.items():
        stdout, stderr = run.communicate(timeout=60)
        assert (run.returncode, stdout, stderr) == (2, "", f"error: {paths[key]}: {FAULTS[key]}\n"), key
