"""Charades-Ego: the metadata CLI, the dataset (trimmed training segments, untrimmed test videos), the
CharadesEgo evaluator against charades_map, zero-shot scoring with class-name prompts, fine-tuning."""
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from data_loader.charades_ego import CharadesEgo, CharadesEgoDataLoader
from data_loader.samplers import EpochIndex
from data_loader.video_backends import VideoReadError
from model.metric import charades_map
from tests.downstream_fixtures import CPU, FixedScores, charades_labels, evaluate_charades_fixed, tiny_arch
from trainer import launch
from trainer.evaluators.charades_ego import random_scores_map
from trainer.tasks.recognition import VideoTextRecognition
from utils import charades_meta
from utils.charades_meta import CharadesFormatError, parse_actions, read_classes
from utils.config import ConfigParser
from utils.config_files import load_config_file
from utils.synthetic_downstream import generate_charades

RES = 32
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def charades(tmp_path_factory):
    root = tmp_path_factory.mktemp("charades")
    generate_charades(str(root), seed=0, num_train_videos=2, num_test_videos=3, clips_per_video=(2, 3),
                      clip_duration=(1.6, 2.4), fps=10, frame_size=RES)
    classes = str(root / "Charades_v1_classes.txt")
    assert charades_meta.main(["--classes", classes, "--out-dir", str(root),
                               str(root / "CharadesEgo_v1_train_only1st.csv"),
                               str(root / "CharadesEgo_v1_test_only1st.csv")]) == 0
    return {"root": root, "meta_dir": str(root), "data_dir": str(root / "videos"), "classes": classes}


def test_metadata_cli_writes_one_row_per_action_for_every_split(tmp_path):
    (tmp_path / "classes.txt").write_text("c000 Holding some clothes\nc001 Putting clothes somewhere\n"
                                          "c002 Taking some clothes from somewhere\n")
    pd.DataFrame({"id": ["AAA", "BBB", "CCC"], "script": ["", "", ""], "length": ["20", "9", "5"],
                  "actions": ["c002 0.00 12.30;c000 3.10 8.00", "", "c001 1.5 2"]}).to_csv(
        tmp_path / "CharadesEgo_v1_train_only1st.csv", index=False)
    shutil.copy(tmp_path / "CharadesEgo_v1_train_only1st.csv", tmp_path / "CharadesEgo_v1_val_only1st.csv")
    out = tmp_path / "out"
    assert charades_meta.main(["--classes", str(tmp_path / "classes.txt"), "--out-dir", str(out),
                               str(tmp_path / "CharadesEgo_v1_train_only1st.csv"),
                               str(tmp_path / "CharadesEgo_v1_val_only1st.csv")]) == 0
    expected = ("id\tcls\tt_start\tt_end\tnarration\n"
                "AAA\t2\t0.0\t12.3\tTaking some clothes from somewhere\n"
                "AAA\t0\t3.1\t8.0\tHolding some clothes\n"
                "CCC\t1\t1.5\t2.0\tPutting clothes somewhere\n")
    assert (out / "metadata_train.csv").read_text() == expected
    assert (out / "metadata_val.csv").read_text() == expected


def test_unparseable_actions_name_the_file_and_row(tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("c000 Holding some clothes\n")
    path = tmp_path / "CharadesEgo_v1_test_only1st.csv"
    pd.DataFrame({"id": ["AAA", "BBB"], "actions": ["c000 0.0 1.0", "c000 zero 1.0"]}).to_csv(path, index=False)
    assert charades_meta.main(["--classes", str(tmp_path / "classes.txt"), "--out-dir", str(tmp_path),
                               str(path)]) == 2
    assert "CharadesEgo_v1_test_only1st.csv row 1 (id BBB): action 'c000 zero 1.0'" in capsys.readouterr().err
    with pytest.raises(CharadesFormatError, match="ends before it starts"):
        parse_actions("c001 5.0 4.0", "here")
    assert parse_actions(float("nan"), "here") == [] and parse_actions("c010 0 1", "x") == [(10, 0.0, 1.0)]
    (tmp_path / "bad_classes.txt").write_text("c000 a\nc002 b\n")
    with pytest.raises(CharadesFormatError, match=r"bad_classes.txt line 2: expected 'c001 <class name>'"):
        read_classes(str(tmp_path / "bad_classes.txt"))


def test_training_items_are_trimmed_actions_and_test_items_whole_videos(charades):
    names = read_classes(charades["classes"])
    train = CharadesEgo(charades["meta_dir"], charades["data_dir"], charades["classes"], "train", num_frames=4,
                        input_res=RES)
    meta = pd.read_csv(os.path.join(charades["meta_dir"], "metadata_train.csv"), sep="\t")
    assert len(train) == len(meta)
    for i in range(len(train)):
        item = train[EpochIndex(i, 0)]
        assert item["label"] == meta["cls"].iat[i] and item["text"] == names[meta["cls"].iat[i]]
        assert item["video"].shape == (4, 3, RES, RES)
    test = CharadesEgo(charades["meta_dir"], charades["data_dir"], charades["classes"], "test", num_frames=8,
                       input_res=RES)
    csv = pd.read_csv(os.path.join(charades["meta_dir"], "CharadesEgo_v1_test_only1st.csv"), keep_default_na=False)
    for i in range(len(test)):
        label = test[i]["label"]
        assert sorted(torch.nonzero(label).flatten().tolist()) == sorted(
            {c for c, _, _ in parse_actions(csv["actions"].iat[i], "")})
    assert test[len(test) - 1]["label"].sum() == 0  # the video without actions
    # the whole video: its last frame is sampled (uniform sampling over all frames)
    whole = test.reader.read_clip(test._video(0), 0.0, test.video_duration(0, test._video(0)), 8)
    assert whole.shape[0] == 8


def test_bad_videos_name_the_row(charades, tmp_path):
    data = tmp_path / "ch"
    shutil.copytree(charades["root"], data)
    first = pd.read_csv(data / "CharadesEgo_v1_test_only1st.csv")["id"].iat[0]
    os.remove(data / "videos" / f"{first}.mp4")
    test = CharadesEgo(str(data), str(data / "videos"), str(data / "Charades_v1_classes.txt"), "test",
                       num_frames=4, input_res=RES)
    with pytest.raises(VideoReadError, match=rf"CharadesEgo_v1_test_only1st.csv row 0 \(id {first}\).*missing"):
        test[0]
    short = CharadesEgo(charades["meta_dir"], charades["data_dir"], charades["classes"], "train", num_frames=64,
                        input_res=RES)
    with pytest.raises(VideoReadError, match=r"metadata_train.csv row 0 \(id SYN000EGO\).*fewer than num_frames=64"):
        short[EpochIndex(0, 0)]
    lax = CharadesEgoDataLoader(str(data), str(data / "videos"), str(data / "Charades_v1_classes.txt"), "train",
                                num_frames=4, input_res=RES, loading="lax", max_bad_fraction=0.9, batch_size=2,
                                num_workers=0)
    os.remove(data / "videos" / "SYN000EGO.mp4")
    batches = list(lax)
    assert sum(b["num_replaced"] for b in batches) >= 1
    assert all(row.startswith("metadata_train.csv row") for b in batches for row in b["replaced_rows"])


def test_evaluator_equals_charades_map():
    expected = charades_map(FixedScores(11, 5).scores, charades_labels(11, 5))
    assert evaluate_charades_fixed(11, 5) == {"mAP": pytest.approx(expected["mAP"]),
                                              "classes_scored": expected["classes_scored"]}


def _tiny_config(charades, save_dir):
    config = load_config_file(str(ROOT / "configs" / "charades_ego" / "demo_finetune.json"))
    config["arch"] = tiny_arch(RES)
    config["task"]["args"]["classes_file"] = charades["classes"]
    for section in ("data_loader", "valid_data_loader"):
        config[section]["args"].update(meta_dir=charades["meta_dir"], data_dir=charades["data_dir"],
                                       classes_file=charades["classes"], num_frames=4, input_res=RES,
                                       batch_size=2)
    config["trainer"].update(epochs=1, val_every=1, init_val=False, max_steps_per_epoch=2, save_dir=str(save_dir),
                             tqdm=False, log_every=1)
    return config


def test_zero_shot_scores_are_cosines_with_prompts_from_the_text_tower(charades, tmp_path):
    parser = ConfigParser(_tiny_config(charades, tmp_path), source="charades_demo.json", device="cpu")
    task = VideoTextRecognition.from_config(parser, splits=("val",)).eval()
    batch = next(iter(task.loaders("val")[0]))
    with torch.no_grad():
        scores = task.evaluation_step(batch, CPU)["scores"]
        names = read_classes(charades["classes"])
        prompts = task.model.compute_text(task.model.tokenize(names))
        video = task.model.compute_video(batch["video"])
    expected = nn.functional.normalize(video, dim=1) @ nn.functional.normalize(prompts, dim=1).t()
    assert scores.shape == (len(batch["index"]), len(names))
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)


def test_fine_tuning_runs_on_the_engine(charades, tmp_path):
    metrics = launch.train(ConfigParser(_tiny_config(charades, tmp_path), source="charades_demo.json", device="cpu"))
    assert 0 < metrics["mAP"] <= 100 and metrics["classes_scored"] >= 2
    assert np.isfinite(metrics["mAP"])


def test_random_scores_baseline_is_the_chance_level():
    # one positive among two videos per class: AP is 1 or 1/2 with equal chance, 75 % in expectation
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert random_scores_map(labels, 2000) == pytest.approx(75.0, abs=1.5)
    assert random_scores_map(torch.ones(3, 2), 5) == 100.0


def test_configs_load():
    for name, purpose in (("zeroshot", "eval"), ("finetune", "train"), ("demo_zeroshot", "eval"),
                          ("demo_finetune", "train")):
        ConfigParser.from_file(ROOT / "configs" / "charades_ego" / f"{name}.json", purpose=purpose)
