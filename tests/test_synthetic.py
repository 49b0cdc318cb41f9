"""Synthetic EgoClip / EgoMCQ dataset: format, MCQ integrity, determinism and visual content."""
import ast
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from data_loader.video_reader import ChunkedVideoReader
from utils import synthetic

SMALL = dict(seed=3, num_videos=3, num_mcq_videos=5, clips_per_video=(5, 7), chunk_len=3.0, fps=15,
             frame_size=48)
META_FILES = ("egoclip.csv", "egomcq.json", "taxonomy.json")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    summary = synthetic.generate(str(root), **SMALL)
    csv = pd.read_csv(root / "meta" / "egoclip.csv", sep="\t")
    mcq = json.loads((root / "meta" / "egomcq.json").read_text())
    taxonomy = json.loads((root / "meta" / "taxonomy.json").read_text())
    return root, summary, csv, mcq, taxonomy


def tags(text):
    value = ast.literal_eval(text)
    assert isinstance(value, list) and all(isinstance(v, int) for v in value)
    return value


def mcq_rows(mcq):
    for item in mcq.values():
        yield item["query"]
        yield from item["choices"].values()


def test_csv_has_the_egoclip_columns_and_consistent_rows(dataset):
    root, summary, csv, _, taxonomy = dataset
    assert tuple(csv.columns) == synthetic.EGOCLIP_COLUMNS
    assert (root / "meta" / "egoclip.csv").read_text().splitlines()[0].split("\t") == list(synthetic.EGOCLIP_COLUMNS)
    assert len(csv) == summary["num_clips"] and csv["clip_idx"].tolist() == list(range(len(csv)))
    assert set(csv["video_uid"]) == set(taxonomy["train_videos"])
    assert (csv["narration_source"] == "narration_pass_1").all()
    assert ((csv["clip_start"] < csv["narration_time"]) & (csv["narration_time"] < csv["clip_end"])).all()
    assert (csv["clip_end"] <= csv["video_dur"]).all()
    for row in csv.itertuples():
        (verb,), (noun,) = tags(row.tag_verb), tags(row.tag_noun)
        phrase = taxonomy["verb_phrases"][taxonomy["verbs"][verb]].format(noun=taxonomy["nouns"][noun])
        assert row.clip_text == f"#C C {phrase}"
    for _, video in csv.groupby("video_uid"):
        assert video["narration_ind"].tolist() == list(range(len(video)))
        assert video["narration_time"].is_monotonic_increasing


def test_taxonomy(dataset):
    _, summary, _, _, taxonomy = dataset
    assert len(taxonomy["verbs"]) == summary["num_verbs"] == 10
    assert len(taxonomy["nouns"]) == summary["num_nouns"] == 12
    assert taxonomy["nouns"][:4] == ["red circle", "red square", "red triangle", "green circle"]
    assert (taxonomy["chunk_len"], taxonomy["fps"], taxonomy["frame_size"]) == (3.0, 15, [48, 48])


def test_every_mcq_item_is_well_formed_and_references_existing_clips(dataset):
    root, summary, csv, mcq, taxonomy = dataset
    assert list(mcq) == [str(i) for i in range(len(mcq))]
    assert {item["types"] for item in mcq.values()} == {1, 2}
    assert sum(item["types"] == 1 for item in mcq.values()) == summary["num_inter"] > 0
    assert sum(item["types"] == 2 for item in mcq.values()) == summary["num_intra"] > 0
    for item in mcq.values():
        assert list(item["choices"]) == ["0", "1", "2", "3", "4"] and 0 <= item["answer"] <= 4
        assert item["choices"][str(item["answer"])] == item["query"]
        choices = list(item["choices"].values())
        others = [c for i, c in enumerate(choices) if i != item["answer"]]
        assert len({c["clip_idx"] for c in choices}) == 5
        if item["types"] == 1:
            assert len({c["video_uid"] for c in choices}) == 5
            assert all(c["tag_noun"] != item["query"]["tag_noun"] for c in others)
        else:
            assert {c["video_uid"] for c in choices} == {item["query"]["video_uid"]}
            assert all(c["tag_verb"] != item["query"]["tag_verb"] for c in others)
    held_out = set(taxonomy["mcq_videos"])
    for row in mcq_rows(mcq):
        assert list(row) == list(synthetic.EGOCLIP_COLUMNS)
        assert row["video_uid"] in held_out and row["video_uid"] not in set(csv["video_uid"])
        assert 0 <= row["clip_start"] < row["clip_end"] <= row["video_dur"]
        for k in range(int(row["clip_start"] // 3.0), int(math.ceil(row["clip_end"] / 3.0))):
            assert (root / "videos" / row["video_uid"] / f"{k}.mp4").is_file()
        assert len(tags(row["tag_verb"])) == len(tags(row["tag_noun"])) == 1


def test_videos_are_chunked_with_clips_crossing_chunk_boundaries(dataset):
    root, summary, csv, _, taxonomy = dataset
    uids = taxonomy["train_videos"] + taxonomy["mcq_videos"]
    assert sorted(os.listdir(root / "videos")) == sorted(uids)
    durations = dict(zip(csv["video_uid"], csv["video_dur"]))
    for uid, duration in durations.items():
        assert sorted(os.listdir(root / "videos" / uid)) == sorted(f"{k}.mp4" for k in range(math.ceil(duration / 3.0)))
    assert summary["num_chunks"] == sum(len(os.listdir(root / "videos" / uid)) for uid in uids)
    crossing = csv[(csv["clip_start"] // 3.0) != ((csv["clip_end"] - 1e-6) // 3.0)]
    assert len(crossing) > 0
    row = crossing.iloc[0]
    frames = ChunkedVideoReader(str(root / "videos"), chunk_len=3.0).read_clip(
        row.video_uid, row.clip_start, row.clip_end, num_frames=4)
    assert frames.shape == (4, 48, 48, 3)


def test_demo_size_narration_gaps_and_clip_lengths_vary(tmp_path):
    summary = synthetic.generate(str(tmp_path), write_videos=False)     # default (demo) size, metadata only
    csv = pd.read_csv(tmp_path / "meta" / "egoclip.csv", sep="\t")
    mcq = json.loads((tmp_path / "meta" / "egomcq.json").read_text())
    assert 200 <= summary["num_clips"] <= 600 and 200 <= len(mcq) <= 600
    gaps = np.concatenate([np.diff(v["narration_time"].to_numpy()) for _, v in csv.groupby("video_uid")])
    assert 0.1 < (gaps < 2.0).mean() < 0.5 and gaps.min() >= 1.0
    lengths = csv["clip_end"] - csv["clip_start"]
    assert lengths.min() >= 1.0 and lengths.max() <= 4.0 and lengths.std() > 0.5
    assert set(csv["tag_verb"].map(tags).str[0]) == set(range(10))


def test_same_seed_gives_byte_identical_metadata(dataset, tmp_path):
    root = dataset[0]
    synthetic.generate(str(tmp_path / "again"), write_videos=False, **SMALL)
    synthetic.generate(str(tmp_path / "other"), write_videos=False, **{**SMALL, "seed": 4})
    for name in META_FILES:
        assert (tmp_path / "again" / "meta" / name).read_bytes() == (root / "meta" / name).read_bytes()
    assert (tmp_path / "other" / "meta" / "egoclip.csv").read_bytes() != (root / "meta" / "egoclip.csv").read_bytes()


def object_pixels(frame: torch.Tensor, colour) -> np.ndarray:
    """Boolean mask of pixels close to ``colour``."""
    distance = (frame.int() - torch.tensor(colour)).abs().sum(dim=-1)
    return (distance < 90).numpy()


def centre_and_area(frame, colour):
    mask = object_pixels(frame, colour)
    if not mask.any():
        return None, 0
    ys, xs = np.nonzero(mask)
    return (xs.mean(), ys.mean()), int(mask.sum())


def test_each_narration_is_determined_by_the_clip_content(dataset):
    root, _, csv, _, taxonomy = dataset
    reader = ChunkedVideoReader(str(root / "videos"), chunk_len=3.0)
    fps = taxonomy["fps"]
    for row in csv.itertuples():
        verb = taxonomy["verbs"][tags(row.tag_verb)[0]]
        noun = tags(row.tag_noun)[0]
        colour = taxonomy["colours"][taxonomy["nouns"][noun].split()[0]]
        first, last = reader.read_frames(row.video_uid, [row.clip_start, row.clip_end - 1 / fps])
        (c0, a0), (c1, a1) = centre_and_area(first, colour), centre_and_area(last, colour)
        if verb == "put_down":
            assert a0 == 0 and a1 > 10, row
            continue
        if verb == "pick_up":
            assert a0 > 10 and a1 == 0, row
            continue
        dx, dy = c1[0] - c0[0], c1[1] - c0[1]
        expected = {"move_left": (dx < -12 and abs(dy) < 2), "move_right": (dx > 12 and abs(dy) < 2),
                    "lift": (dy < -12 and abs(dx) < 2), "lower": (dy > 12 and abs(dx) < 2),
                    "nudge_left": (-9 < dx < -2 and abs(dy) < 2), "nudge_right": (2 < dx < 9 and abs(dy) < 2),
                    "stretch": a1 > 2.5 * a0, "squeeze": a0 > 2.5 * a1}
        assert expected[verb], (row, dx, dy, a0, a1)


def test_cli_writes_metadata(tmp_path):
    assert synthetic.main(["--out", str(tmp_path), "--num-videos", "2", "--num-mcq-videos", "5",
                           "--metadata-only", "--size", "32", "48"]) == 0
    taxonomy = json.loads((tmp_path / "meta" / "taxonomy.json").read_text())
    assert taxonomy["frame_size"] == [32, 48] and len(taxonomy["train_videos"]) == 2
    assert not (tmp_path / "videos").exists()


@pytest.mark.parametrize("bad", [dict(num_mcq_videos=3), dict(num_colours=7), dict(frame_size=15),
                                 dict(objects_per_video=(2, 20)), dict(num_verbs=1)])
def test_invalid_configs_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError):
        synthetic.generate(str(tmp_path), write_videos=False, **bad)


def test_temporal_scale_verbs_are_rendered_as_described():
    config = synthetic.SyntheticConfig(seed=1, num_verbs=14, frame_size=(48, 48))
    seen = set()
    for index in range(8):
        if len(seen) == 4:
            break
        plan = synthetic._plan_video(config, index)
        frames = list(synthetic.render_frames(plan, config))
        for clip in plan.clips:
            verb = synthetic.VERBS[clip.verb][0]
            if verb not in synthetic.FINE_TEMPORAL_VERBS + synthetic.LONG_RANGE_VERBS:
                continue
            seen.add(verb)
            colour = synthetic.COLOURS[clip.noun // config.num_shapes][1]
            states = [centre_and_area(torch.from_numpy(frames[f]), colour)
                      for f in range(clip.start_frame, clip.end_frame)]
            hidden = [i for i, (_, area) in enumerate(states) if area == 0]
            n = len(states)
            if verb == "tap":
                assert len(hidden) == 2 and hidden[1] == hidden[0] + 1 and n // 4 <= hidden[0] < 3 * n // 4, hidden
                continue
            assert not hidden
            xs = [centre[0] for centre, _ in states]
            if verb == "hold":
                assert max(xs) - min(xs) < 0.5
                continue
            sign = -1 if verb == "left_and_back" else 1
            assert abs(xs[-1] - xs[0]) < 1.5 and sign * (xs[n // 2] - xs[0]) > 8, (verb, xs)
    assert seen == {"tap", "hold", "left_and_back", "right_and_back"}
