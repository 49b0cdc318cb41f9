"""Every shipped config passes validation; the demo configs also build."""
from pathlib import Path

import pytest

from utils.config import ConfigParser

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAIN_CONFIGS = sorted(CONFIGS.glob("pt/*.json")) + sorted(CONFIGS.glob("demo/*.json"))


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_training_configs_validate(path):
    config = ConfigParser.from_file(path)
    assert config["valid_data_loader"]["args"]["split"] in ("val", "test")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("eval/*.json")), ids=lambda p: p.name)
def test_eval_configs_validate(path):
    ConfigParser.from_file(path, purpose="eval")


def test_seed_hyperparameters_of_the_multiscale_config():
    config = ConfigParser.from_file(CONFIGS / "pt" / "multiscale_egoclip.json")
    assert config["arch"]["args"]["scales"] == [4, 8, 16]
    assert config["arch"]["args"]["fusion_type"] == "learned_weighted"
    loss = config["loss"]["args"]
    assert loss["consistency_weight"] == 0.1
    assert loss["temperature_schedule"] == {"initial_temp": 0.1, "final_temp": 0.01, "total_steps": 50000}


def test_demo_model_builds_offline():
    config = ConfigParser.from_file(CONFIGS / "demo" / "multiscale_demo.json")
    model = config.init_obj("arch")
    assert model.scales == (4, 8, 16)
