"""The downstream evaluators give the same numbers on 1 and 2 gloo ranks (each rank scores its shard)."""
import json

import pytest

from data_loader.ek100_mir import load_annotations
from tests.downstream_fixtures import evaluate_charades_fixed, evaluate_ek100_fixed
from tests.gloo_ranks import run_ranks
from utils.synthetic_downstream import generate_ek100


def _evaluate_on_rank(rank, world_size, meta_dir, num_rows, out):
    result = {"ek100": evaluate_ek100_fixed(meta_dir, num_rows), "charades": evaluate_charades_fixed(11, 5)}
    if rank == 0:
        with open(out, "w") as f:
            json.dump(result, f)


def test_ek100_and_charades_evaluators_are_the_same_on_two_ranks(tmp_path):
    generate_ek100(str(tmp_path / "ek"), num_train_videos=1, num_test_videos=2, clips_per_video=(4, 5),
                   write_videos=False)
    meta_dir = str(tmp_path / "ek" / "annotations")
    num_rows = len(load_annotations(meta_dir, "test").clips)  # odd or even, the shards differ in size by <= 1
    single = {"ek100": evaluate_ek100_fixed(meta_dir, num_rows), "charades": evaluate_charades_fixed(11, 5)}
    run_ranks(_evaluate_on_rank, 2, meta_dir, num_rows, str(tmp_path / "rank0.json"))
    ranks = json.loads((tmp_path / "rank0.json").read_text())
    assert ranks["ek100"] == pytest.approx(single["ek100"]) and ranks["charades"] == pytest.approx(single["charades"])
