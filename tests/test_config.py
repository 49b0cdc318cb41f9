"""Config system: registries, nested validation, cross-checks, overrides, CLI errors, run directories.

Test-local classes are registered under names starting with ``TestCfg`` so they never clash with the project's.
``_base_`` inheritance has its own module, tests/test_configs.py (with the shipped configs).
"""
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pytest
import torch

from utils import config as cfg
from utils.config import ArgsOf, ConfigError, ConfigParser, values_at
from utils.registry import EVALUATORS, HOOKS, LOADERS, LOSSES, MODELS, TASKS


@dataclass
class TinyVideoParams:
    num_frames: int = 4
    input_res: int = 32


@dataclass
class TinyClipParams:
    input_res: int = 32
    scales: list[int] | None = None


@dataclass
class NeedsPathParams:
    path: str


@MODELS.register("TestCfgArch")
class TinyArch:
    def __init__(self, video_params: Annotated[dict, ArgsOf(TinyVideoParams)], projection_dim: int = 256,
                 scales: tuple[int, ...] = (4, 8, 16), extra: Annotated[dict | None, ArgsOf(NeedsPathParams)] = None):
        self.video_params, self.projection_dim = video_params, projection_dim


@LOADERS.register("TestCfgLoader")
class TinyLoader:
    def __init__(self, data_dir: str, split: str = "train", batch_size: int = 8, num_workers: int = 0,
                 video_params: Annotated[dict | None, ArgsOf(TinyClipParams)] = None):
        self.data_dir, self.split, self.batch_size = data_dir, split, batch_size


@LOSSES.register("TestCfgLoss", "TestCfgLossAlias")
class TinyLoss:
    def __init__(self, consistency_weight: float = 0.1, temperature: float = 0.05):
        self.consistency_weight = consistency_weight


@EVALUATORS.register("TestCfgTop1", "test_cfg_top1")
class TinyEvaluator:
    def __init__(self, k: int = 1):
        self.k = k


@HOOKS.register("TestCfgHook")
class TinyHook:
    def __init__(self, every: int = 1):
        self.every = every


@TASKS.register("TestCfgTask")
class TinyTask:
    consistent_keys = (("arch.args.scales", "data_loader.args.video_params.scales"),
                       ("arch.args.video_params.input_res", "data_loader.args.video_params.input_res",
                        "valid_data_loader.args.video_params.input_res"))

    def __init__(self, model, objective=None, log_every: int = 1):
        self.log_every = log_every


def base_config(list_loader=False):
    loader = {"type": "TestCfgLoader", "args": {"data_dir": "d", "batch_size": 8}}
    return {
        "name": "unit",
        "task": {"type": "TestCfgTask"},
        "arch": {"type": "TestCfgArch", "args": {"video_params": {"num_frames": 4}, "projection_dim": 64}},
        "data_loader": [loader, {"type": "TestCfgLoader", "args": {"data_dir": "e", "batch_size": 4}}]
        if list_loader else loader,
        "optimizer": {"type": "AdamW", "args": {"lr": 1e-4, "weight_decay": 0.01}},
        "loss": {"type": "TestCfgLoss", "args": {"consistency_weight": 0.1}},
        "metrics": ["test_cfg_top1"],
        "trainer": {"epochs": 2, "save_dir": "saved"},
    }


def write(tmp_path, config, name="exp.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def parse(tmp_path, config, *cli):
    path = write(tmp_path, config)
    return ConfigParser.parse_args(["-c", str(path), *cli])


def message(tmp_path, config, *cli) -> str:
    with pytest.raises(ConfigError) as info:
        parse(tmp_path, config, *cli)
    return str(info.value)


# ----------------------------------------------------------------------------- overrides
def test_named_overrides_land_at_their_paths_dict_loader(tmp_path):
    parser = parse(tmp_path, base_config(), "--lr", "3e-5", "--bs", "16", "--cw", "0.25")
    assert parser["optimizer"]["args"]["lr"] == 3e-5
    assert parser["data_loader"]["args"]["batch_size"] == 16
    assert parser["loss"]["args"]["consistency_weight"] == 0.25


def test_bs_override_applies_to_every_loader_in_a_list(tmp_path):
    parser = parse(tmp_path, base_config(list_loader=True), "--bs", "32")
    assert [e["args"]["batch_size"] for e in parser["data_loader"]] == [32, 32]
    assert [loader.batch_size for loader in parser.init_all("data_loader")] == [32, 32]


def test_lr_reaches_the_built_optimizer(tmp_path):
    parser = parse(tmp_path, base_config(), "--lr", "0.5")
    optimizer = parser.init_obj("optimizer", [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == 0.5 and optimizer.defaults["weight_decay"] == 0.01


def test_set_is_json_typed_and_indexes_lists(tmp_path):
    parser = parse(tmp_path, base_config(list_loader=True),
                   "--set", "data_loader.1.args.num_workers=3",
                   "--set", "arch.args.scales=[4, 8]",
                   "--set", "trainer.init_val=true",
                   "--set", "task.args.log_every=5")
    assert "num_workers" not in parser["data_loader"][0]["args"]
    assert parser["data_loader"][1]["args"]["num_workers"] == 3
    assert parser["arch"]["args"]["scales"] == [4, 8]
    assert parser["trainer"]["init_val"] is True
    assert parser["task"] == {"type": "TestCfgTask", "args": {"log_every": 5}}


def test_set_is_applied_after_named_flags(tmp_path):
    parser = parse(tmp_path, base_config(), "--lr", "0.5", "--set", "optimizer.args.lr=0.25")
    assert parser["optimizer"]["args"]["lr"] == 0.25


def test_set_index_out_of_range_names_the_file(tmp_path):
    path = write(tmp_path, base_config(list_loader=True))
    assert message(tmp_path, base_config(list_loader=True), "--set", "data_loader.5.args.batch_size=2") == (
        f"{path}: --set data_loader.5.args.batch_size: index 5 out of range (list has 2 entries)")


def test_set_result_is_validated(tmp_path):
    path = write(tmp_path, base_config())
    assert message(tmp_path, base_config(), "--set", "arch.args.video_params.num_frame=8") == (
        f"{path}: unknown key 'arch.args.video_params.num_frame'; did you mean 'num_frames'?")


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["arch"]["args"].update(projection_dims=3),
     "unknown key 'arch.args.projection_dims'; did you mean 'projection_dim'?"),
    (lambda c: c.update(trainr={}), "unknown key 'trainr'; did you mean 'trainer'?"),
    (lambda c: c["trainer"].update(epoch=3), "unknown key 'trainer.epoch'; did you mean 'epochs'?"),
    (lambda c: c["data_loader"][1]["args"].update(batch_sz=3),
     "unknown key 'data_loader[1].args.batch_sz'; did you mean 'batch_size'?"),
    (lambda c: c["arch"]["args"].update(projection_dim="big"),
     "wrong type for 'arch.args.projection_dim': expected int, got str ('big')"),
    (lambda c: c["arch"]["args"].update(scales=[4, "8"]),
     "wrong type for 'arch.args.scales': expected list[int], got list ([4, '8'])"),
    (lambda c: c["trainer"].update(epochs=2.5), "wrong type for 'trainer.epochs': expected int, got float (2.5)"),
    (lambda c: c["optimizer"]["args"].update(lr="fast"),
     "wrong type for 'optimizer.args.lr': expected float | Tensor, got str ('fast')"),
    (lambda c: c["data_loader"][0]["args"].pop("data_dir"), "missing required key 'data_loader[0].args.data_dir'"),
    (lambda c: c.pop("loss"), "missing required key 'loss'"),
    (lambda c: c.__setitem__("name", 3), "wrong type for 'name': expected str, got int"),
    (lambda c: c["optimizer"]["args"].update(params=[]), "'optimizer.args.params' is set by the code and must not "
                                                         "be in the config"),
    (lambda c: c["data_loader"].clear(), "'data_loader' is an empty list"),
])
def test_bad_configs_fail_with_file_and_dotted_key(tmp_path, mutate, expected):
    config = base_config(list_loader=True)
    mutate(config)
    assert message(tmp_path, config) == f"{tmp_path / 'exp.json'}: {expected}"


@pytest.mark.parametrize("section, entry, expected", [
    ("task", {"type": "TestCfgTsk"}, "'task.type': unknown task type 'TestCfgTsk'; did you mean 'TestCfgTask'?"),
    ("arch", {"type": "TestCfgArc"}, "'arch.type': unknown model type 'TestCfgArc'; did you mean 'TestCfgArch'?"),
    ("data_loader", {"type": "TestCfgLoadr", "args": {"data_dir": "d"}},
     "'data_loader.type': unknown data loader type 'TestCfgLoadr'; did you mean 'TestCfgLoader'?"),
    ("loss", {"type": "TestCfgLos"}, "'loss.type': unknown loss type 'TestCfgLos'; did you mean 'TestCfgLoss'?"),
    ("optimizer", {"type": "AdamX"}, "'optimizer.type': unknown optimizer type 'AdamX'; did you mean 'Adam'?"),
    ("lr_scheduler", {"type": "WarmupDecay"},
     "'lr_scheduler.type': unknown lr_scheduler type 'WarmupDecay'; did you mean 'WarmupDecaySchedule'?"),
    ("hooks", [{"type": "TestCfgHok"}], "'hooks[0].type': unknown hook type 'TestCfgHok'; did you mean 'TestCfgHook'?"),
    ("hooks", {"type": "TestCfgHook"},
     "wrong type for 'hooks': expected a list of objects with 'type' and 'args', got dict"),
    ("task", {"type": "TestCfgTask", "args": {"log_evry": 2}},
     "unknown key 'task.args.log_evry'; did you mean 'log_every'?"),
    ("task", {"type": "TestCfgTask", "args": {"model": "x"}},
     "'task.args.model' is set by the code and must not be in the config"),
    ("hooks", [{"type": "TestCfgHook", "args": {"every": 1}}, {"type": "TestCfgHook", "args": {"evry": 2}}],
     "unknown key 'hooks[1].args.evry'; did you mean 'every'?"),
    ("lr_scheduler", {"type": "WarmupDecaySchedule", "args": {"total_steps": 10}},
     "'lr_scheduler.args.total_steps' is set by the code and must not be in the config"),
    ("arch", {"type": "TestCfgArch", "args": {"video_params": {}, "extra": {}}},
     "missing required key 'arch.args.extra.path'"),
    ("arch", {"type": "TestCfgArch", "args": {"video_params": {"input_res": "big"}}},
     "wrong type for 'arch.args.video_params.input_res': expected int, got str ('big')"),
    ("arch", {"type": "TestCfgArch", "args": {}}, "missing required key 'arch.args.video_params'"),
])
def test_typed_sections_resolve_through_their_registry(tmp_path, section, entry, expected):
    config = base_config()
    config[section] = entry
    assert message(tmp_path, config) == f"{tmp_path / 'exp.json'}: {expected}"


def test_aliases_and_every_list_section_build(tmp_path):
    config = base_config()
    config["loss"]["type"] = "TestCfgLossAlias"
    config["hooks"] = [{"type": "TestCfgHook", "args": {"every": 3}}, {"type": "TestCfgHook"}]
    parser = parse(tmp_path, config)
    assert type(parser.init_obj("loss")) is TinyLoss
    assert [hook.every for hook in parser.init_all("hooks")] == [3, 1]
    assert parser.task_class() is TinyTask
    assert parser.init_obj("task", "model").log_every == 1


def test_metrics_are_evaluator_names_and_stand_for_evaluators(tmp_path):
    parser = parse(tmp_path, base_config())
    assert parser.entries("evaluators") == [{"type": "test_cfg_top1"}]
    assert [type(e) for e in parser.init_all("evaluators")] == [TinyEvaluator]

    config = base_config()
    del config["metrics"]
    config["evaluators"] = [{"type": "TestCfgTop1", "args": {"k": 5}}]
    assert [e.k for e in parse(tmp_path, config).init_all("evaluators")] == [5]

    path = tmp_path / "exp.json"
    assert message(tmp_path, {**config, "metrics": ["test_cfg_top1"]}) == (
        f"{path}: both 'metrics' and 'evaluators' are given; list every evaluator under 'evaluators'")
    config["evaluators"][0]["args"] = {"kk": 5}
    assert message(tmp_path, config) == f"{path}: unknown key 'evaluators[0].args.kk'; did you mean 'k'?"
    assert message(tmp_path, {**base_config(), "metrics": ["test_cfg_tp1"]}) == (
        f"{path}: 'metrics[0]': unknown evaluator type 'test_cfg_tp1'; did you mean 'test_cfg_top1'?")


def test_init_obj_builds_with_config_and_code_args(tmp_path):
    parser = parse(tmp_path, base_config(list_loader=True))
    arch = parser.init_obj("arch")
    assert isinstance(arch, TinyArch) and arch.projection_dim == 64
    loaders = parser.init_all("data_loader", split="val")
    assert [(l.data_dir, l.batch_size, l.split) for l in loaders] == [("d", 8, "val"), ("e", 4, "val")]
    with pytest.raises(ConfigError, match=r"exp\.json: 'data_loader' has 2 entries; use init_all"):
        parser.init_obj("data_loader")
    with pytest.raises(ConfigError, match=r"exp\.json: data_loader\.args \['batch_size'\] are also set by the code"):
        parser.init_obj("data_loader", entry=parser.entries("data_loader")[0], batch_size=2)


# ----------------------------------------------------------------------------- nested args of the real classes
DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo" / "multiscale_demo.json"


@pytest.mark.parametrize("path, value, expected", [
    ("arch.args.video_params.arch_confg", "tiny", "unknown key 'arch.args.video_params.arch_confg'; "
                                                  "did you mean 'arch_config'?"),
    ("arch.args.video_params.arch_config", "huge", "wrong type for 'arch.args.video_params.arch_config': "
                                                   "expected one of ['base_patch16_224', 'small', 'tiny'], got str ('huge')"),
    ("arch.args.text_params.pretrain", True, "unknown key 'arch.args.text_params.pretrain'; did you mean 'pretrained'?"),
    ("loss.args.temporal.lambda_begin", 0.1, "unknown key 'loss.args.temporal.lambda_begin'; did you mean 'lambda_end'?"),
    ("loss.args.temporal.loss_type", "l2", "wrong type for 'loss.args.temporal.loss_type': "
                                           "expected one of ['cosine', 'contrastive'], got str ('l2')"),
    ("loss.args.temperature_schedule.total_step", 10, "unknown key 'loss.args.temperature_schedule.total_step'; "
                                                      "did you mean 'total_steps'?"),
    ("data_loader.args.video_params.scale", [2, 4], "unknown key 'data_loader.args.video_params.scale'; "
                                                    "did you mean 'scales'?"),
    ("valid_data_loader.args.video_params.loading", "loose", "wrong type for 'valid_data_loader.args.video_params"
                                                             ".loading': expected one of ['strict', 'lax'], got str ('loose')"),
    ("data_loader.args.reader.chunk_length", 10, "unknown key 'data_loader.args.reader.chunk_length'; "
                                                 "did you mean 'chunk_len'?"),
    ("data_loader.args.reader.decode_size", [256], "wrong type for 'data_loader.args.reader.decode_size': "
                                                   "expected int | [int, int] | None, got list ([256])"),
    ("data_loader.args.tsfm_params.hflip", 0.0, "unknown key 'data_loader.args.tsfm_params.hflip'; "
                                                "did you mean 'hflip_prob'?"),
    ("data_loader.args.tsfm_params.randcrop_scale", [0.7], "wrong type for 'data_loader.args.tsfm_params"
                                                           ".randcrop_scale': expected [float, float], got list ([0.7])"),
])
def test_nested_args_of_every_section_are_checked(tmp_path, path, value, expected):
    config = ConfigParser.from_file(DEMO).config
    cfg.set_by_path(config, path, value)
    assert message(tmp_path, config) == f"{tmp_path / 'exp.json'}: {expected}"


def test_text_params_spec_lists_the_keys_the_text_encoder_accepts():
    from dataclasses import fields

    from model.model import TextParams
    from model.text_encoder import TEXT_PARAM_KEYS
    assert {f.name for f in fields(TextParams)} == set(TEXT_PARAM_KEYS)


# ----------------------------------------------------------------------------- cross-checks
def test_values_at_expands_list_sections_but_not_list_values():
    config = {"arch": {"args": {"scales": [4, 8]}},
              "data_loader": [{"args": {"video_params": {"scales": [2]}}}, {"args": {}}]}
    assert values_at(config, "arch.args.scales") == [("arch.args.scales", [4, 8])]
    assert values_at(config, "data_loader.args.video_params.scales") == [
        ("data_loader[0].args.video_params.scales", [2])]
    assert values_at(config, "valid_data_loader.args.video_params.scales") == []


@pytest.mark.parametrize("list_loader, name", [(False, "data_loader"), (True, "data_loader[1]")])
def test_task_consistent_keys_name_both_keys_and_values(tmp_path, list_loader, name):
    config = base_config(list_loader)
    config["arch"]["args"]["scales"] = [4, 8, 16]
    loader = config["data_loader"][1] if list_loader else config["data_loader"]
    loader["args"]["video_params"] = {"scales": [2, 4]}
    assert message(tmp_path, config) == (f"{tmp_path / 'exp.json'}: '{name}.args.video_params.scales' = [2, 4] "
                                         f"differs from 'arch.args.scales' = [4, 8, 16]")
    loader["args"]["video_params"] = {"scales": [4, 8, 16], "input_res": 64}
    config["valid_data_loader"] = {"type": "TestCfgLoader", "args": {"data_dir": "v", "video_params": {"input_res": 32}}}
    assert message(tmp_path, config) == (f"{tmp_path / 'exp.json'}: 'valid_data_loader.args.video_params.input_res' "
                                         f"= 32 differs from '{name}.args.video_params.input_res' = 64")
    config["valid_data_loader"]["args"]["video_params"]["input_res"] = 64
    assert parse(tmp_path, config)["arch"]["args"]["scales"] == [4, 8, 16]


def test_without_task_the_default_task_checks_once_registered(tmp_path, monkeypatch):
    config = base_config()
    del config["task"]
    config["arch"]["args"]["scales"] = [4, 8, 16]
    config["data_loader"]["args"]["video_params"] = {"scales": [2, 4]}
    monkeypatch.setattr(cfg, "DEFAULT_TASK", "TestCfgNotRegisteredTask")
    assert parse(tmp_path, config).entries("task") == [{"type": "TestCfgNotRegisteredTask"}]
    monkeypatch.setattr(cfg, "DEFAULT_TASK", "TestCfgTask")
    assert message(tmp_path, config) == (f"{tmp_path / 'exp.json'}: 'data_loader.args.video_params.scales' = [2, 4] "
                                         f"differs from 'arch.args.scales' = [4, 8, 16]")


# ----------------------------------------------------------------------------- files, CLI and run dirs
def test_a_config_dict_with_base_must_come_from_a_file():
    with pytest.raises(ConfigError) as info:
        ConfigParser({**base_config(), "_base_": ["x.json"]}, source="dict.json")
    assert str(info.value) == "dict.json: '_base_' is resolved when a config file is read; use ConfigParser.from_file"


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "x",\n  "arch": ,\n}')
    with pytest.raises(ConfigError) as info:
        ConfigParser.parse_args(["-c", str(path)])
    assert str(info.value) == f"{path}: invalid JSON at line 3 column 11: Expecting value"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        ConfigParser.parse_args(["-c", str(tmp_path / "nope.json")])
    assert str(info.value) == f"{tmp_path / 'nope.json'}: config file not found"


def test_from_args_prints_one_error_line_and_exits_2(tmp_path, capsys):
    config = base_config()
    config["trainer"]["epoch"] = 3
    path = write(tmp_path, config)
    with pytest.raises(SystemExit) as info:
        ConfigParser.from_args(["-c", str(path)])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: {path}: unknown key 'trainer.epoch'; did you mean 'epochs'?\n"


def test_run_dirs_never_collide_and_config_round_trips(tmp_path):
    config = base_config()
    config["trainer"]["save_dir"] = str(tmp_path / "saved")
    first = parse(tmp_path, config, "--lr", "0.5")
    second = parse(tmp_path, config, "--lr", "0.5")
    d1, d2 = first.make_run_dir(), second.make_run_dir()  # same second, most likely
    assert d1 != d2 and d1.parent == d2.parent == tmp_path / "saved" / "unit"
    saved = json.loads((d1 / "config.json").read_text())
    assert saved == first.config and saved["optimizer"]["args"]["lr"] == 0.5
    reloaded = ConfigParser.parse_args(["-c", str(d1 / "config.json")])
    assert reloaded.config == first.config


def test_run_id_reuses_directory(tmp_path):
    config = base_config()
    config["trainer"]["save_dir"] = str(tmp_path / "saved")
    a = parse(tmp_path, config, "--run-id", "job42").make_run_dir()
    b = parse(tmp_path, copy.deepcopy(config), "--run-id", "job42").make_run_dir()
    assert a == b == Path(tmp_path / "saved" / "unit" / "job42")
