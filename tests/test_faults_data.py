"""Regression tests for data-side reliability faults: each failure is detected and named, never silent."""
import json

import pytest
import torch

from data_loader.metadata import load_egoclip, load_egomcq
from model.checkpoint import CorruptCheckpointError, load_checkpoint_file, torch_load


# ---------------------------------------------------------------- errors name what is wrong
@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5, 0.999])
def test_truncated_checkpoint_names_the_file(tmp_path, keep):
    path = tmp_path / "model_best.pth"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}, "epoch": 3}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    for load in (load_checkpoint_file, lambda p: torch_load(p, weights_only=True)):
        with pytest.raises(CorruptCheckpointError, match=f"{path}: checkpoint file is truncated or corrupt "
                                                         f"\\({int(len(data) * keep)} bytes\\)"):
            load(path)


def test_truncated_safetensors_names_the_file(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "vit.safetensors"
    save_file({"w": torch.randn(32, 32)}, str(path))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptCheckpointError, match="vit.safetensors: checkpoint file is truncated or corrupt"):
        load_checkpoint_file(path)


def test_empty_egoclip_csv_names_the_file(tmp_path):
    path = tmp_path / "egoclip.csv"
    path.write_text("")
    with pytest.raises(ValueError, match=f"{path}: file is empty"):
        load_egoclip(str(path))


@pytest.mark.parametrize("keys", [["0", "1", "2", "3"], ["0", "1", "2", "3", "4", "5"], ["1", "2", "3", "4", "5"]])
def test_egomcq_item_without_five_choices_is_named_at_load(tiny_synthetic, tmp_path, keys):
    data = json.loads((tiny_synthetic / "meta" / "egomcq.json").read_text())
    choices = list(data["2"]["choices"].values())
    data["2"]["choices"] = {k: choices[i % len(choices)] for i, k in enumerate(keys)}
    data["2"]["answer"] = 0
    path = tmp_path / "egomcq.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"egomcq.json item 2: 'choices' must hold 5 clips keyed 0, 1, 2, 3, 4; "
                                         rf"got \[{', '.join(repr(k) for k in keys)}\]"):
        load_egomcq(str(path))
