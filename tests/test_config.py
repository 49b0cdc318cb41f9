"""Config system: overrides, validation messages, run directories, round trips."""
import json
from pathlib import Path

import pytest

from utils import config as cfg
from utils.config import ConfigError, ConfigParser, build_arg_parser


class TinyArch:
    def __init__(self, video_params: dict, projection_dim: int = 256, fusion_type: str = "learned_weighted"):
        self.video_params, self.projection_dim = video_params, projection_dim


class TinyLoader:
    def __init__(self, data_dir, split="train", batch_size=8, num_workers=0, shuffle=True):
        self.data_dir, self.split, self.batch_size = data_dir, split, batch_size


class TinyLoss:
    def __init__(self, consistency_weight=0.1, temperature=0.05):
        self.consistency_weight = consistency_weight


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    here = __name__
    for section in ("arch", "data_loader", "valid_data_loader", "loss"):
        monkeypatch.setitem(cfg.SECTION_MODULES, section, here)


def base_config(list_loader=False):
    loader = {"type": "TinyLoader", "args": {"data_dir": "d", "batch_size": 8}}
    return {
        "name": "unit",
        "arch": {"type": "TinyArch", "args": {"video_params": {"num_frames": 4}, "projection_dim": 64}},
        "data_loader": [loader, {"type": "TinyLoader", "args": {"data_dir": "e", "batch_size": 4}}] if list_loader else loader,
        "optimizer": {"type": "AdamW", "args": {"lr": 1e-4, "weight_decay": 0.01}},
        "loss": {"type": "TinyLoss", "args": {"consistency_weight": 0.1}},
        "metrics": ["egomcq_accuracy"],
        "trainer": {"epochs": 2, "save_dir": "saved"},
    }


def write(tmp_path, config, name="exp.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def parse(tmp_path, config, *cli):
    path = write(tmp_path, config)
    return ConfigParser.from_args(["-c", str(path), *cli])


def test_named_overrides_land_at_their_paths_dict_loader(tmp_path):
    parser = parse(tmp_path, base_config(), "--lr", "3e-5", "--bs", "16", "--cw", "0.25")
    assert parser["optimizer"]["args"]["lr"] == 3e-5
    assert parser["data_loader"]["args"]["batch_size"] == 16
    assert parser["loss"]["args"]["consistency_weight"] == 0.25


def test_bs_override_applies_to_every_loader_in_a_list(tmp_path):
    parser = parse(tmp_path, base_config(list_loader=True), "--bs", "32")
    assert [e["args"]["batch_size"] for e in parser["data_loader"]] == [32, 32]


def test_set_is_json_typed_and_indexes_lists(tmp_path):
    parser = parse(tmp_path, base_config(list_loader=True),
                   "--set", "data_loader.1.args.num_workers=3",
                   "--set", "arch.args.video_params.scales=[4, 8]",
                   "--set", "trainer.init_val=true",
                   "--set", "arch.args.fusion_type=attention")
    assert parser["data_loader"][0]["args"].get("num_workers") is None
    assert parser["data_loader"][1]["args"]["num_workers"] == 3
    assert parser["arch"]["args"]["video_params"]["scales"] == [4, 8]
    assert parser["trainer"]["init_val"] is True
    assert parser["arch"]["args"]["fusion_type"] == "attention"


def test_set_index_out_of_range_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"exp\.json: --set data_loader\.5\.args\.batch_size: index 5 out of range"):
        parse(tmp_path, base_config(list_loader=True), "--set", "data_loader.5.args.batch_size=2")


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["arch"]["args"].update(projection_dims=3),
     r"exp\.json: unknown key 'arch\.args\.projection_dims'; did you mean 'projection_dim'\?"),
    (lambda c: c.update(trainr={}), r"exp\.json: unknown key 'trainr'; did you mean 'trainer'\?"),
    (lambda c: c["trainer"].update(epoch=3), r"exp\.json: unknown key 'trainer\.epoch'; did you mean 'epochs'\?"),
    (lambda c: c["data_loader"][1]["args"].update(batch_sz=3),
     r"exp\.json: unknown key 'data_loader\[1\]\.args\.batch_sz'; did you mean 'batch_size'\?"),
    (lambda c: c["arch"]["args"].update(projection_dim="big"),
     r"exp\.json: wrong type for 'arch\.args\.projection_dim': expected int, got str \('big'\)"),
    (lambda c: c["trainer"].update(epochs=2.5),
     r"exp\.json: wrong type for 'trainer\.epochs': expected int, got float"),
    (lambda c: c["optimizer"]["args"].update(lr="fast"),
     r"exp\.json: wrong type for 'optimizer\.args\.lr': expected float"),
    (lambda c: c["data_loader"][0]["args"].pop("data_dir"),
     r"exp\.json: missing required key 'data_loader\[0\]\.args\.data_dir'"),
    (lambda c: c.pop("loss"), r"exp\.json: missing required key 'loss'"),
    (lambda c: c.__setitem__("name", 3), r"exp\.json: wrong type for 'name': expected str, got int"),
    (lambda c: c.__setitem__("metrics", ["egomcq_acuracy"]),
     r"exp\.json: unknown metric 'metrics\[0\]' = 'egomcq_acuracy'; did you mean 'egomcq_accuracy'\?"),
    (lambda c: c["arch"].update(type="TinyArc"),
     r"exp\.json: 'arch\.type': unknown arch type 'TinyArc' .*did you mean 'TinyArch'\?"),
    (lambda c: c["optimizer"]["args"].update(params=[]),
     r"exp\.json: optimizer\.args\.params is set by the code"),
])
def test_bad_configs_fail_with_named_key(tmp_path, mutate, message):
    config = base_config(list_loader=True)
    mutate(config)
    with pytest.raises(ConfigError, match=message):
        parse(tmp_path, config)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "x",\n  "arch": ,\n}')
    with pytest.raises(ConfigError, match=r"broken\.json: invalid JSON at line 3"):
        ConfigParser.from_args(["-c", str(path)])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.json: config file not found"):
        ConfigParser.from_args(["-c", str(tmp_path / "nope.json")])


def test_init_obj_builds_with_config_and_code_args(tmp_path):
    parser = parse(tmp_path, base_config(list_loader=True))
    arch = parser.init_obj("arch")
    assert isinstance(arch, TinyArch) and arch.projection_dim == 64
    loaders = parser.init_all("data_loader", split="val")
    assert [(l.data_dir, l.batch_size, l.split) for l in loaders] == [("d", 8, "val"), ("e", 4, "val")]
    with pytest.raises(ConfigError, match="also set by the code"):
        parser.init_obj("data_loader", entry=parser.entries("data_loader")[0], batch_size=2)


def test_run_dirs_never_collide_and_config_round_trips(tmp_path):
    config = base_config()
    config["trainer"]["save_dir"] = str(tmp_path / "saved")
    first = parse(tmp_path, config, "--lr", "0.5")
    second = parse(tmp_path, config, "--lr", "0.5")
    d1, d2 = first.make_run_dir(), second.make_run_dir()  # same second, most likely
    assert d1 != d2 and d1.parent == d2.parent == tmp_path / "saved" / "unit"
    saved = json.loads((d1 / "config.json").read_text())
    assert saved == first.config and saved["optimizer"]["args"]["lr"] == 0.5
    reloaded = ConfigParser.from_args(["-c", str(d1 / "config.json")])
    assert reloaded.config == first.config


def test_run_id_reuses_directory(tmp_path):
    config = base_config()
    config["trainer"]["save_dir"] = str(tmp_path / "saved")
    a = parse(tmp_path, config, "--run-id", "job42").make_run_dir()
    b = parse(tmp_path, config, "--run-id", "job42").make_run_dir()
    assert a == b == Path(tmp_path / "saved" / "unit" / "job42")


def test_cli_flags_parse():
    args = build_arg_parser("x").parse_args(["-c", "a.json", "-r", "ck.pth", "-d", "cpu"])
    assert (args.config, args.resume, args.device) == ("a.json", "ck.pth", "cpu")
