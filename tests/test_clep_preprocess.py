"""CLEP preprocessing: tag handling, text encoders, streamed narration.json, the output round trip, resuming,
and the errors / counted skips on bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from data_loader.clep_preprocess import NarrationFilter, preprocess, video_narrations, write_narration_table
from data_loader.feature_store import H5FeatureStore
from model.sentence_encoders import HashTextEncoder, MeanPoolingEncoder, minilm_model_dir
from tests.clep_fixtures import SMALL, CountingEncoder, clep_processed, clep_raw  # noqa: F401
from utils.json_stream import iter_object_members
from utils.synthetic_clep import preprocess_inputs
from utils.text import normalize_narration

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models


def test_tags_are_substituted_or_stripped_and_nothing_else():
    text = "#C C picks the Orange from #O man X's bag #unsure"
    assert normalize_narration(text) == "Camera wearer C picks the Orange from Other person man X's bag something"
    assert normalize_narration(text, "strip") == "C picks the Orange from man X's bag"
    assert normalize_narration("#c c opens the Oven", "strip") == "c opens the Oven"   # lower-case tags too
    assert normalize_narration("#Cup stays", "strip") == "#Cup stays"                  # not a tag


def test_hash_encoder_is_deterministic_and_unit_norm():
    a, b = HashTextEncoder(32).encode(["cut the onion", ""]), HashTextEncoder(32).encode(["Cut the onion!", ""])
    np.testing.assert_array_equal(a, b)
    assert np.linalg.norm(a[0]) == pytest.approx(1.0, abs=1e-6) and not a[1].any()


def test_minilm_encoder_equals_sentence_transformers():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = ["#C C picks a bag of clothes from the floor", "The person in this video is doing cutting onion"]
    ours = MeanPoolingEncoder(minilm_model_dir()).encode(texts)
    reference = sentence_transformers.SentenceTransformer(str(minilm_model_dir()), device="cpu").encode(texts)
    assert ours.shape == (2, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 5, 1 << 16])
def test_narration_json_is_read_member_by_member(tmp_path, chunk_size):
    document = {"v1": {"narration_pass_1": {"narrations": [{"timestamp_sec": 1.5, "narration_text": "a } b"}]}},
                "v2": [1, "x\"y"], "v3": 12}
    path = tmp_path / "n.json"
    path.write_text(json.dumps(document, indent=2))
    assert dict(iter_object_members(path, chunk_size)) == document
    path.write_text('{"v1": {"narration_pass_1": ')
    with pytest.raises(ValueError, match="n.json: invalid JSON"):
        list(iter_object_members(path, chunk_size))


def test_both_passes_are_merged_by_time_and_malformed_entries_are_named():
    entry = {"narration_pass_1": {"narrations": [{"timestamp_sec": 3.0, "narration_text": "b"}]},
             "narration_pass_2": {"narrations": [{"timestamp_sec": 1.0, "narration_text": "a"}]}}
    assert video_narrations("n.json", "v", entry) == [("narration_pass_2", 1.0, "a"), ("narration_pass_1", 3.0, "b")]
    entry["narration_pass_2"]["narrations"].append({"narration_text": "no time"})
    with pytest.raises(ValueError, match=r"n.json: 'v'.narration_pass_2.narrations\[1\] needs 'timestamp_sec'"):
        video_narrations("n.json", "v", entry)


def test_preprocessed_set_round_trips_through_the_feature_store(clep_raw, clep_processed):
    report = json.loads((clep_processed / "preprocess_report.json").read_text())
    assert report["narrations"]["videos_excluded_split"] == SMALL.num_val_videos
    assert report["narrations"]["videos_kept"] == SMALL.num_videos - SMALL.num_val_videos
    table = pd.read_csv(clep_processed / "narrations.csv", keep_default_na=False)
    videos = H5FeatureStore(clep_processed / "video_features.hdf5")
    text = H5FeatureStore(clep_processed / "narration_text.hdf5")
    no_tag = H5FeatureStore(clep_processed / "narration_text_no_tag.hdf5")
    assert sorted(videos.keys()) == sorted(table["video_uid"].unique())
    encoder = HashTextEncoder(SMALL.text_dim)
    for uid, rows in list(table.groupby("video_uid"))[:3]:
        np.testing.assert_array_equal(videos[uid], torch.load(clep_raw / "features" / f"{uid}.pt").numpy())
        assert rows["timestamp_sec"].is_monotonic_increasing
        texts = rows["narration_text"].tolist()
        np.testing.assert_array_equal(text[uid], encoder.encode([normalize_narration(t) for t in texts]))
        np.testing.assert_array_equal(no_tag[uid], encoder.encode([normalize_narration(t, "strip") for t in texts]))
    classes = torch.load(clep_processed / "k400" / "classes.pt", weights_only=True)
    assert classes["names"][:2] == ["carry box", "cut onion"]  # quotes and underscores cleaned
    assert set(classes["prompts"]) == {"name", "person_doing"}
    assert torch.equal(classes["prompts"]["person_doing"][1],
                       torch.from_numpy(encoder.encode(["The person in this video is doing cut onion"])[0]))
    charades = pd.read_csv(clep_processed / "charades" / "labels.csv", dtype=str)
    source = pd.read_csv(clep_raw / "charades" / "CharadesEgo_v1_test.csv", dtype=str).set_index("id")
    for key, labels, ego in charades.itertuples(index=False):
        expected = sorted({int(action.split()[0][1:]) for action in source.loc[key, "actions"].split(";")})
        assert [int(c) for c in labels.split(";")] == expected and (ego == "1") == key.endswith("EGO")


def test_an_interrupted_run_resumes_where_it_stopped(clep_raw, clep_processed, tmp_path):
    inputs = {key: value for key, value in preprocess_inputs(clep_raw).items() if key not in ("k400", "charades")}
    interrupted = CountingEncoder(SMALL.text_dim, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        preprocess(tmp_path, encoder=interrupted, batch_size=64, **inputs)
    resumed = CountingEncoder(SMALL.text_dim)
    preprocess(tmp_path, encoder=resumed, batch_size=64, **inputs)
    total = len(pd.read_csv(tmp_path / "narrations.csv"))
    assert interrupted.texts + resumed.texts == 2 * total  # each narration encoded once, both versions
    for name in ("video_features.hdf5", "narration_text.hdf5", "narration_text_no_tag.hdf5"):
        done, reference = H5FeatureStore(tmp_path / name), H5FeatureStore(clep_processed / name)
        assert sorted(done.keys()) == sorted(reference.keys())
        for key in reference.keys():
            np.testing.assert_array_equal(done[key], reference[key])
    # stopped between a video's two embedding writes: the missing one is written, the other kept
    del done, reference  # their read handles
    uid = H5FeatureStore(tmp_path / "narration_text_no_tag.hdf5").keys()[0]
    with h5py.File(tmp_path / "narration_text_no_tag.hdf5", "a") as f:
        f[uid].attrs["complete"] = False
    preprocess(tmp_path, encoder=CountingEncoder(SMALL.text_dim), batch_size=64, **inputs)
    np.testing.assert_array_equal(H5FeatureStore(tmp_path / "narration_text_no_tag.hdf5")[uid],
                                  H5FeatureStore(clep_processed / "narration_text_no_tag.hdf5")[uid])


def _inputs_copy(clep_raw, tmp_path):
    narrations = json.loads((clep_raw / "narration.json").read_text())
    return narrations, tmp_path / "narration.json"


def test_a_narrated_video_without_features_is_named_or_counted(clep_raw, tmp_path):
    narrations, path = _inputs_copy(clep_raw, tmp_path)
    narrations["ffffffff-no-features"] = narrations[next(iter(narrations))]
    path.write_text(json.dumps(narrations))
    with pytest.raises(FileNotFoundError, match="ffffffff-no-features.pt"):
        write_narration_table(path, None, clep_raw / "features", tmp_path / "t.csv", NarrationFilter())
    counts = write_narration_table(path, None, clep_raw / "features", tmp_path / "t.csv", NarrationFilter(),
                                   skip_missing_features=True)
    assert counts["videos_missing_features"] == 1 and counts["videos_kept"] == SMALL.num_videos


def test_short_narrations_are_counted_not_kept(clep_raw, tmp_path):
    narrations, path = _inputs_copy(clep_raw, tmp_path)
    first = next(iter(narrations))
    narrations[first]["narration_pass_1"]["narrations"][0]["narration_text"] = "#C C nods"
    path.write_text(json.dumps(narrations))
    counts = write_narration_table(path, None, clep_raw / "features", tmp_path / "t.csv", NarrationFilter())
    assert counts["narrations_short"] == 1
    assert "#C C nods" not in pd.read_csv(tmp_path / "t.csv")["narration_text"].tolist()


def test_a_feature_file_of_another_width_or_not_a_tensor_is_named(clep_raw, tmp_path):
    narrations, path = _inputs_copy(clep_raw, tmp_path)
    uids = sorted(narrations)[:3]
    path.write_text(json.dumps({uid: narrations[uid] for uid in uids}))
    features = tmp_path / "features"
    features.mkdir()
    for uid in uids:
        (features / f"{uid}.pt").write_bytes((clep_raw / "features" / f"{uid}.pt").read_bytes())
    torch.save(torch.zeros(5, SMALL.video_dim + 1), features / f"{uids[2]}.pt")
    with pytest.raises(ValueError, match=f"{uids[2]}.pt: features are {SMALL.video_dim + 1}-d, expected"):
        preprocess(tmp_path / "out", path, features, HashTextEncoder(SMALL.text_dim))
    (features / f"{uids[2]}.pt").write_text("not a tensor")
    with pytest.raises(ValueError, match=f"cannot read features from .*{uids[2]}.pt"):
        preprocess(tmp_path / "out", path, features, HashTextEncoder(SMALL.text_dim))


def test_the_command_line_writes_what_the_function_writes(clep_raw, clep_processed, tmp_path):
    inputs = preprocess_inputs(clep_raw)
    command = [sys.executable, str(Path(__file__).resolve().parents[1] / "run" / "preprocess_clep.py"),
               "--narrations", inputs["narration_json"], "--ego4d-json", inputs["ego4d_json"],
               "--features", inputs["feature_dir"], "--out", tmp_path, "--text-encoder", f"hash:{SMALL.text_dim}",
               "--k400-labels", inputs["k400"]["labels_csv"], "--k400-features", inputs["k400"]["feature_dir"],
               "--charades-csv", inputs["charades"]["test_csv"],
               "--charades-classes", inputs["charades"]["classes_txt"],
               "--charades-features", inputs["charades"]["feature_dir"]]
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "preprocess_report.json").read_text())
    expected = json.loads((clep_processed / "preprocess_report.json").read_text())
    assert report == {**expected, "text_encoder": f"hash:{SMALL.text_dim}"}
    for name in ("narration_text.hdf5", "k400/features.hdf5", "charades/features.hdf5"):
        done, reference = H5FeatureStore(tmp_path / name), H5FeatureStore(clep_processed / name)
        assert done.keys() == reference.keys()
        np.testing.assert_array_equal(done[done.keys()[0]], reference[reference.keys()[0]])
