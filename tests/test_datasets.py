import json
import logging
import os
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from data_loader.EgoClip_EgoMCQ_dataset import EgoClip_EgoMCQ, MCQClipError
from data_loader.MultiScaleEgoClip_dataset import MultiScaleEgoClip_EgoMCQ
from data_loader.data_loader import EgoClipDataLoader, MultiScaleEgoClipDataLoader
from data_loader.frame_sampling import sample_multiscale_indices
from data_loader.metadata import EGOCLIP_COLUMNS, load_egoclip, load_egomcq, load_taxonomy, parse_tag_list
from data_loader.packed_columns import PackedStrings, TagLists
from data_loader.samplers import TemporalPairBatchSampler
from data_loader.transforms import EvalVideoTransform
from data_loader.video_reader import ChunkedVideoReader, VideoReadError
from gloo_ranks import run_ranks
from utils.config_schema import ConfigError, check_kwargs, signature_params

RES = 32
SCALES = [4, 8, 16]


def dirs(data: dict) -> dict:
    """``data_dir`` and ``meta_dir`` of a synthetic set, as dataset / loader keyword arguments."""
    return {"data_dir": data["data_dir"], "meta_dir": data["meta_dir"]}


def dataset(data, cls=EgoClip_EgoMCQ, split="train", video_params=None, **kwargs):
    params = {"input_res": RES, "num_frames": 4} if cls is EgoClip_EgoMCQ else {"input_res": RES, "scales": SCALES}
    params.update(video_params or {})
    args = dirs(data)
    args.update(kwargs)
    return cls(video_params=params, split=split, **args)


def egoclip_frame(data):
    return pd.read_csv(os.path.join(data["meta_dir"], "egoclip.csv"), sep="\t")


def with_csv(data, tmp_path, frame):
    """A meta dir holding ``frame`` as egoclip.csv next to the synthetic set's taxonomy."""
    meta = tmp_path / "meta"
    meta.mkdir()
    shutil.copy(os.path.join(data["meta_dir"], "taxonomy.json"), meta)
    frame.to_csv(meta / "egoclip.csv", sep="\t", index=False)
    return str(meta)


# ---------------------------------------------------------------- metadata
def test_parse_tag_list_is_safe_and_strict():
    assert parse_tag_list("[192, 115, 12]") == (192, 115, 12)
    assert parse_tag_list("(1,)") == (1,) and parse_tag_list("[]") == () and parse_tag_list("7") == (7,)
    for bad in ("__import__('os').getcwd()", "[1, x]", "[1.5]", "[-1]", "[True]", "{'a': 1}", "nan"):
        with pytest.raises(ValueError):
            parse_tag_list(bad)


@pytest.mark.parametrize("chunk_rows", [None, 1, 3])  # None: the default chunk; small ones cross chunk edges
def test_malformed_csv_rows_are_skipped_and_counted(tmp_path, caplog, chunk_rows):
    rows = ["0\tv1\t100\tp\t0\t1.0\t0.5\t1.5\t#C C a\t[1]\t[2, 3]",
            "1\tv1\t100\tp\t1\t2.0\t1.5\t2.5\t#C C b\t[0]\t[2]\textra field",
            "2\tv1\t100\tp\t2\t3.0\t2.5\t3.5\t#C C c\t[1, x]\t[2]",
            "3\tv1\t100\tp\t3\t4.0\t3.5\t4.5\t#C C d\t__import__('os').getcwd()\t[2]",
            "4\tv1\t100\tp\t4\t5.0\t5.5\t4.5\t#C C e\t[1]\t[2]",
            "5\tv1\t100\tp\t5\tabc\t5.5\t6.5\t#C C f\t[1]\t[2]",
            "6\tv1\t100\tp\t6\t7.0\t6.5\t7.5\t#C C g\t[1]\t[999]",
            "7\tv2\t100\tp\t0\t7.0\t-0.5\t7.5\t#C C h\t(1,)\t[]"]
    path = tmp_path / "egoclip.csv"
    path.write_text("\t".join(EGOCLIP_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="data_loader.metadata"):
        table = load_egoclip(str(path), num_verbs=3, num_nouns=5, **({"chunk_rows": chunk_rows} if chunk_rows else {}))
    assert table.skipped == {"malformed line": 1, "non-numeric time": 1, "clip_end < clip_start": 1, "bad tags": 3}
    assert len(table) == 2 and table.num_skipped == 6
    assert list(table.frame.video_uid) == ["v1", "v2"] and list(table.frame.clip_text) == ["#C C a", "#C C h"]
    assert table.frame.clip_start.tolist() == [0.5, -0.5]
    assert table.verb_ids[0].tolist() == [1] and table.noun_ids[0].tolist() == [2, 3] and table.noun_ids[1].size == 0
    summaries = [r for r in caplog.records if "skipped 6 of 8 rows" in r.getMessage()]
    assert len(summaries) == 1 and "[3, 4, 5, 6, 7]" in summaries[0].getMessage()


def test_egoclip_table_is_compact_and_exact(tmp_path):
    """No per-row Python objects: categorical uids/sources, packed narrations, float64 times; values exact."""
    texts = ["#C C picks a bag of clothes from the floor", "", "#C C cuts the café's crème brûlée ✓",
             "#O man X says \"hi\"", "#C C opens the door", "#C C opens the door"]
    uids = ["001e3e4e-2743-47fc-8564-d5efd11f9e90", "b", "001e3e4e-2743-47fc-8564-d5efd11f9e90", "a", "b", "c"]
    frame = pd.DataFrame({"clip_idx": range(6), "video_uid": uids, "video_dur": [128.033333] * 6,
                          "narration_source": ["narration_pass_1", "narration_pass_2"] * 3,
                          "narration_ind": range(6), "narration_time": [3.3445, 0.1, 2.5, 7.0, 8.25, 1e-06],
                          "clip_start": [2.967651, 0.0, 2.0, 6.5, 8.0, 0.0],
                          "clip_end": [3.721266, 0.2, 3.0, 7.5, 8.5, 0.000002],
                          "clip_text": texts, "tag_verb": ["[93]", "[0]", "[1]", "[2]", "(3,)", "[]"],
                          "tag_noun": ["[192, 115, 12]", "[]", "[0, 1]", "[2]", "[3]", "[581]"]})
    path = tmp_path / "egoclip.csv"
    frame.to_csv(path, sep="\t", index=False)
    for chunk_rows in (2, 100):
        table = load_egoclip(str(path), chunk_rows=chunk_rows)
        meta = table.frame
        assert list(meta.columns) == ["video_uid", "narration_source", "clip_text", "video_dur", "narration_ind",
                                      "narration_time", "clip_start", "clip_end"]
        assert not any(dtype == object for dtype in meta.dtypes), meta.dtypes
        assert isinstance(meta["video_uid"].dtype, pd.CategoricalDtype)
        assert isinstance(meta["narration_source"].dtype, pd.CategoricalDtype)
        assert isinstance(meta["clip_text"].array, PackedStrings)
        assert {meta[c].dtype for c in ("narration_time", "clip_start", "clip_end", "video_dur")} == {np.dtype(np.float64)}
        # exact round trip of text, uids and the 6-decimal times
        assert meta["clip_text"].tolist() == texts and [meta["clip_text"].iat[i] for i in range(6)] == texts
        assert meta["video_uid"].tolist() == uids and meta["video_uid"].iat[2] == uids[2]
        assert list(meta["video_uid"].cat.categories) == sorted(set(uids))  # sorts/groups like the strings
        assert meta["clip_start"].tolist() == frame["clip_start"].tolist()
        assert meta["clip_end"].tolist() == frame["clip_end"].tolist()
        assert meta["narration_time"].tolist() == frame["narration_time"].tolist()
        assert meta["narration_ind"].tolist() == list(range(6))
        assert [table.noun_ids[i].tolist() for i in range(6)] == [[192, 115, 12], [], [0, 1], [2], [3], [581]]
        # the DataFrame operations the examples use still work on these columns
        ordered = meta.sort_values(["video_uid", "narration_time"])
        assert ordered.index.tolist() == frame.sort_values(["video_uid", "narration_time"]).index.tolist()
        assert meta.groupby("video_uid", observed=True).size().to_dict() == {uids[0]: 2, "a": 1, "b": 2, "c": 1}
        assert meta[meta["clip_text"] == "#C C opens the door"].index.tolist() == [4, 5]
        clone = pickle.loads(pickle.dumps(table))
        assert clone.frame.equals(meta) and clone.frame["clip_text"].tolist() == texts
        assert np.array_equal(clone.noun_ids.values, table.noun_ids.values)


def test_packed_strings_behave_like_a_string_column():
    texts = ["#C C a", "", "ünïcödé ✓", "x\ty", "#C C picks a bag"]
    arr = PackedStrings.from_strings(texts)
    assert len(arr) == 5 and list(arr) == texts and arr[-1] == texts[-1] and arr.nbytes < 200
    assert arr[1:4].tolist() == texts[1:4] and arr[::2].tolist() == texts[::2]
    assert arr[np.array([True, False, True, False, False])].tolist() == [texts[0], texts[2]]
    assert arr.take([4, 0, -1]).tolist() == [texts[4], texts[0], texts[4]]
    filled = arr.take([2, -1], allow_fill=True)
    assert filled[0] == texts[2] and pd.isna(filled[1]) and filled.isna().tolist() == [False, True]
    with pytest.raises(IndexError):
        arr.take([5])
    series = pd.Series(arr)
    assert (series == "").tolist() == [False, True, False, False, False]
    assert series.sort_values().tolist() == sorted(texts)
    assert pd.concat([series, series.iloc[3:]], ignore_index=True).tolist() == texts + texts[3:]
    assert series.astype(object).tolist() == texts and series.astype(str).tolist() == texts
    assert series.str.len().tolist() == [len(t) for t in texts]
    assert pickle.loads(pickle.dumps(series.iloc[2:4])).tolist() == texts[2:4]
    view = arr[3:4]  # a view shares the buffer; its pickle and copy hold only its own bytes
    assert view.copy()._buffer.nbytes == len(texts[3].encode()) and len(pickle.dumps(view)) < len(pickle.dumps(arr))
    with pytest.raises(TypeError):
        PackedStrings.from_strings([1])
    assert [t.tolist() for t in [TagLists.concatenate([TagLists([(1,), ()]), TagLists([(2, 3)])])[i]
                                 for i in range(3)]] == [[1], [], [2, 3]]


def test_csv_errors_name_the_file(tmp_path):
    comma = tmp_path / "comma.csv"
    comma.write_text(",".join(EGOCLIP_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="comma.csv.*TAB-separated"):
        load_egoclip(str(comma))
    empty = tmp_path / "empty.csv"
    empty.write_text("\t".join(EGOCLIP_COLUMNS) + "\n0\tv\t1\tp\t0\t1\t2\t1\tx\t[0]\t[0]\n")
    with pytest.raises(ValueError, match="empty.csv: no valid EgoClip rows"):
        load_egoclip(str(empty))


def test_egomcq_errors_name_the_item(long_clip_synthetic, tmp_path):
    data = json.loads(open(os.path.join(long_clip_synthetic["meta_dir"], "egomcq.json")).read())
    items = load_egomcq(os.path.join(long_clip_synthetic["meta_dir"], "egomcq.json"))
    assert [i.key for i in items] == sorted(data, key=int) and all(len(i.choices) == 5 for i in items)
    assert {i.type for i in items} == {1, 2}
    data["1"]["answer"] = 5
    bad = tmp_path / "egomcq.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="egomcq.json item 1: answer 5"):
        load_egomcq(str(bad))


def test_taxonomy_sizes(long_clip_synthetic, tmp_path):
    taxonomy = load_taxonomy(long_clip_synthetic["meta_dir"])
    assert (taxonomy.num_verbs, taxonomy.num_nouns) == (10, 12)
    assert (load_taxonomy(str(tmp_path)).num_verbs, load_taxonomy(str(tmp_path)).num_nouns) == (118, 582)


# ---------------------------------------------------------------- single scale
def test_train_item_matches_the_csv_row(long_clip_synthetic):
    ds = dataset(long_clip_synthetic)
    csv = egoclip_frame(long_clip_synthetic)
    assert len(ds) == len(csv)
    item = ds[2]
    row = csv.iloc[2]
    assert set(item) == {"video", "text", "meta", "verb_vec", "noun_vec", "replaced", "replaced_rows"}
    assert item["replaced"] == 0 and item["replaced_rows"] == []
    assert item["video"].shape == (4, 3, RES, RES) and item["video"].dtype == torch.float32
    assert item["text"] == row.clip_text
    assert item["meta"] == {"video_uid": row.video_uid, "clip_start": row.clip_start, "clip_end": row.clip_end,
                            "narration_time": row.narration_time, "index": 2}
    assert item["verb_vec"].shape == (10,) and item["noun_vec"].shape == (12,)
    assert item["verb_vec"].nonzero().flatten().tolist() == sorted(json.loads(row.tag_verb))
    assert item["noun_vec"].nonzero().flatten().tolist() == sorted(json.loads(row.tag_noun))


def test_val_item_has_five_choices_and_the_answer(long_clip_synthetic):
    ds = dataset(long_clip_synthetic, split="val")
    raw = json.loads(open(os.path.join(long_clip_synthetic["meta_dir"], "egomcq.json")).read())
    item = ds[1]
    assert set(item) == {"video", "text", "correct", "type"}
    assert item["video"].shape == (5, 4, 3, RES, RES)
    assert item["text"] == raw["1"]["query"]["clip_text"]
    assert item["correct"] == raw["1"]["answer"] and item["type"] == raw["1"]["types"]
    # evaluation frames are deterministic: the reader's uniform frames through the eval transform
    choice = raw["1"]["choices"]["2"]
    reader = ChunkedVideoReader(long_clip_synthetic["data_dir"], chunk_len=long_clip_synthetic["chunk_len"])
    frames = reader.read_clip(choice["video_uid"], float(choice["clip_start"]), float(choice["clip_end"]),
                              num_frames=4, sample="uniform")
    torch.testing.assert_close(item["video"][2], EvalVideoTransform(RES)(frames), rtol=0, atol=0)


def test_scene_aware_negative_comes_from_the_same_segment(long_clip_synthetic):
    ds = dataset(long_clip_synthetic, neg_param=10.0)
    csv = egoclip_frame(long_clip_synthetic)
    for index in range(4):
        item = ds[index]
        assert {"video_neg", "text_neg", "noun_vec_neg", "verb_vec_neg"} <= set(item)
        assert item["video_neg"].shape == (4, 3, RES, RES)
        row = csv.iloc[index]
        same_segment = csv[(csv.video_uid == row.video_uid)
                           & (csv.narration_time // 10.0 == row.narration_time // 10.0)]
        assert item["text_neg"] in set(same_segment.clip_text)
        if len(same_segment) > 1:
            assert item["text_neg"] != row.clip_text


# ---------------------------------------------------------------- multi-scale
def test_multiscale_train_item_shares_one_crop_across_scales(long_clip_synthetic):
    ds = dataset(long_clip_synthetic, cls=MultiScaleEgoClip_EgoMCQ)
    torch.manual_seed(0)
    for index in range(3):
        item = ds[index]
        assert set(item["video"]) == {"frames_4", "frames_8", "frames_16"}
        for s in SCALES:
            assert item["video"][f"frames_{s}"].shape == (s, 3, RES, RES)
        assert item["scale_mask"].tolist() == [True, True, True]
        finest = item["video"]["frames_16"]
        for s in (4, 8):
            for frame in item["video"][f"frames_{s}"]:
                assert any(torch.equal(frame, f) for f in finest), "coarse frame not among the finest scale's frames"


def test_multiscale_val_item(long_clip_synthetic):
    item = dataset(long_clip_synthetic, cls=MultiScaleEgoClip_EgoMCQ, split="val")[0]
    assert {k: tuple(v.shape) for k, v in item["video"].items()} == {
        f"frames_{s}": (5, s, 3, RES, RES) for s in SCALES}
    assert item["scale_mask"].shape == (5, 3) and item["scale_mask"].all()
    # uniform nested sampling: the middle frames of the 16-frame view are the 4-frame view
    torch.testing.assert_close(item["video"]["frames_4"], item["video"]["frames_16"][:, [2, 6, 10, 14]],
                               rtol=0, atol=0)
    # every scale is the nested subset of the reader's 16 uniformly sampled frames, through the eval transform
    choice = json.loads(open(os.path.join(long_clip_synthetic["meta_dir"], "egomcq.json")).read())["0"]["choices"]["3"]
    reader = ChunkedVideoReader(long_clip_synthetic["data_dir"], chunk_len=long_clip_synthetic["chunk_len"])
    finest = reader.read_clip(choice["video_uid"], float(choice["clip_start"]), float(choice["clip_end"]),
                              num_frames=max(SCALES), sample="uniform")
    positions = sample_multiscale_indices(SCALES, 0, max(SCALES), "uniform")
    for s in SCALES:
        torch.testing.assert_close(item["video"][f"frames_{s}"][3], EvalVideoTransform(RES)(finest[positions[s]]),
                                   rtol=0, atol=1e-5)


@pytest.fixture
def short_clip_meta(long_clip_synthetic, tmp_path):
    """egoclip.csv with row 0 cut to 6 frames (0.6 s at 10 fps) and row 1 to 2 frames."""
    frame = egoclip_frame(long_clip_synthetic)
    frame.loc[0, "clip_end"] = round(frame.loc[0, "clip_start"] + 0.6, 6)
    frame.loc[1, "clip_end"] = round(frame.loc[1, "clip_start"] + 0.2, 6)
    return with_csv(long_clip_synthetic, tmp_path, frame)


def test_short_clip_pad_repeats_the_last_frame(long_clip_synthetic, short_clip_meta):
    ds = dataset(long_clip_synthetic, cls=MultiScaleEgoClip_EgoMCQ, meta_dir=short_clip_meta,
                 video_params={"short_clip_policy": "pad"})
    item = ds[0]
    assert item["scale_mask"].tolist() == [True, True, True]
    f16, f8 = item["video"]["frames_16"], item["video"]["frames_8"]
    for t in range(6, 16):
        assert torch.equal(f16[t], f16[5])
    assert torch.equal(f8[:6], f16[:6]) and torch.equal(f8[6], f16[5]) and torch.equal(f8[7], f16[5])
    assert not torch.equal(f16[0], f16[5])


def test_short_clip_skip_masks_scales_it_cannot_fill(long_clip_synthetic, short_clip_meta):
    ds = dataset(long_clip_synthetic, cls=MultiScaleEgoClip_EgoMCQ, meta_dir=short_clip_meta,
                 video_params={"short_clip_policy": "skip"})
    assert ds[0]["scale_mask"].tolist() == [True, False, False]
    item = ds[1]  # 2 frames: even the smallest scale is short, and it is kept
    assert item["scale_mask"].tolist() == [True, False, False]
    assert item["video"]["frames_4"].shape == (4, 3, RES, RES)
    assert torch.equal(item["video"]["frames_4"][2], item["video"]["frames_4"][1])
    assert ds[2]["scale_mask"].tolist() == [True, True, True]


# ---------------------------------------------------------------- bad videos
@pytest.fixture
def corrupted(long_clip_synthetic, tmp_path):
    """A copy of the videos with the chunk holding row 0's start overwritten by garbage."""
    videos = tmp_path / "videos"
    shutil.copytree(long_clip_synthetic["data_dir"], videos)
    row = egoclip_frame(long_clip_synthetic).iloc[0]
    path = videos / row.video_uid / f"{int(row.clip_start // long_clip_synthetic['chunk_len'])}.mp4"
    path.write_bytes(b"\x00not an mp4" * 100)
    return str(videos), str(path)


def test_strict_loading_raises_naming_the_file(long_clip_synthetic, corrupted):
    videos, bad_path = corrupted
    ds = dataset(long_clip_synthetic, data_dir=videos, video_params={"loading": "strict"})
    with pytest.raises(VideoReadError) as info:
        ds[0]
    assert bad_path in str(info.value)


def test_lax_loading_replaces_counts_and_logs_each_failure(long_clip_synthetic, corrupted, caplog):
    videos, bad_path = corrupted
    ds = dataset(long_clip_synthetic, data_dir=videos, video_params={"loading": "lax"})
    row0 = egoclip_frame(long_clip_synthetic).iloc[0]
    chunk_len = long_clip_synthetic["chunk_len"]
    with caplog.at_level(logging.WARNING, logger="data_loader.EgoClip_EgoMCQ_dataset"):
        first = ds[0]
        second = ds[0]
    for item in (first, second):
        assert item["meta"]["index"] != 0 and item["video"].shape == (4, 3, RES, RES)
        assert not (item["meta"]["video_uid"] == row0.video_uid
                    and int(item["meta"]["clip_start"] // chunk_len) == int(row0.clip_start // chunk_len))
        assert item["replaced"] == len(item["replaced_rows"]) >= 1
        assert item["replaced_rows"][0] == (f"egoclip.csv row 0 ({row0.video_uid} "
                                            f"{row0.clip_start:.2f}-{row0.clip_end:.2f} s)")
    # the replacement is drawn from (seed, epoch, index): the same both times
    assert first["meta"] == second["meta"] and torch.equal(first["video"], second["video"])
    assert ds.bad_reads == first["replaced"] + second["replaced"]
    logged = [r.getMessage() for r in caplog.records if "replacing unreadable" in r.getMessage()]
    assert len(logged) == ds.bad_reads and all(bad_path in m and "egoclip.csv row 0 (" in m for m in logged[:2])


def test_lax_loading_gives_up_when_too_many_reads_fail(long_clip_synthetic, tmp_path):
    ds = dataset(long_clip_synthetic, data_dir=str(tmp_path), video_params={"loading": "lax", "max_bad_fraction": 0.1})
    with pytest.raises(RuntimeError, match="max_bad_fraction=0.1"):
        ds[0]


def test_missing_mcq_clip_is_an_error_naming_it(long_clip_synthetic, tmp_path):
    ds = dataset(long_clip_synthetic, split="val", data_dir=str(tmp_path), video_params={"loading": "lax"})
    with pytest.raises(MCQClipError, match=r"egomcq.json item 0 choice 0: clip \S+ \[[0-9.]+, [0-9.]+\] s"):
        ds[0]


# ---------------------------------------------------------------- loaders
def test_dataset_pickles_after_reading(long_clip_synthetic):
    ds = dataset(long_clip_synthetic, cls=MultiScaleEgoClip_EgoMCQ)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._reader is None and len(clone) == len(ds)
    assert clone.metadata.equals(ds.metadata) and isinstance(clone.metadata["clip_text"].array, PackedStrings)
    assert [clone._train_clip(i) for i in range(len(ds))] == [ds._train_clip(i) for i in range(len(ds))]


def test_scene_segments_group_rows_by_video_and_time_bucket(long_clip_synthetic):
    ds = dataset(long_clip_synthetic, neg_param=10.0)
    meta = ds.metadata
    keys = [f"{u}_{t // 10.0}" for u, t in zip(meta["video_uid"], meta["narration_time"])]
    expected, _ = pd.factorize(pd.Series(keys))  # the string keys the segments used to be built from
    assert ds._segment_of_row.tolist() == expected.tolist()
    for seg in range(len(ds._segment_offsets) - 1):
        rows = ds._segment_rows[ds._segment_offsets[seg]:ds._segment_offsets[seg + 1]]
        assert rows.tolist() == [i for i, code in enumerate(expected) if code == seg]


def test_multiscale_loader_batches_follow_the_pair_sampler(long_clip_synthetic):
    loader = MultiScaleEgoClipDataLoader(**dirs(long_clip_synthetic),
                                         video_params={"input_res": RES, "scales": SCALES}, batch_size=4,
                                         num_workers=1, temporal_pair_ratio=0.5, max_temporal_gap=4.0, seed=3)
    sampler = loader.batch_sampler
    assert isinstance(sampler, TemporalPairBatchSampler) and len(loader) == len(sampler) > 0
    loader.set_epoch(1)
    expected = list(sampler)
    batches = list(loader)
    assert len(batches) == len(expected)
    for batch, indices in zip(batches, expected):
        assert batch["meta"]["index"].tolist() == indices
        assert batch["video"]["frames_16"].shape == (4, 16, 3, RES, RES)
        assert batch["scale_mask"].shape == (4, 3) and batch["verb_vec"].shape == (4, 10)
        torch.testing.assert_close(batch["temporal_pairs"], sampler.pairs_for_batch(indices), rtol=0, atol=0)
        members = set(batch["temporal_pairs"][:, :2].long().flatten().tolist())
        assert len(members) >= 2


def test_loader_is_reproducible_per_seed_and_epoch(long_clip_synthetic):
    def first_batch(seed):
        loader = EgoClipDataLoader(**dirs(long_clip_synthetic),
                                   video_params={"input_res": RES, "num_frames": 4}, batch_size=3, num_workers=1,
                                   seed=seed)
        loader.set_epoch(2)
        return next(iter(loader))
    a, b, c = first_batch(5), first_batch(5), first_batch(6)
    assert a["meta"]["index"].tolist() == b["meta"]["index"].tolist()
    torch.testing.assert_close(a["video"], b["video"], rtol=0, atol=0)
    assert a["meta"]["index"].tolist() != c["meta"]["index"].tolist() or not torch.equal(a["video"], c["video"])


def test_val_loader_keeps_every_question_in_order(long_clip_synthetic):
    loader = MultiScaleEgoClipDataLoader(**dirs(long_clip_synthetic), split="val",
                                         video_params={"input_res": RES, "scales": [2, 4]}, batch_size=16,
                                         num_workers=0, shuffle=False)
    batches = list(loader)
    num_items = len(loader.dataset)
    assert sum(len(b["text"]) for b in batches) == num_items
    assert batches[0]["video"]["frames_4"].shape == (min(16, num_items), 5, 4, 3, RES, RES)
    assert batches[0]["correct"].dtype == torch.long and "temporal_pairs" not in batches[0]
    with pytest.raises(ValueError, match="temporal_pair sampler is for split 'train'"):
        MultiScaleEgoClipDataLoader(**dirs(long_clip_synthetic), split="val",
                                    sampler="temporal_pair", num_workers=0)


def test_loader_args_validate_against_the_signature():
    params, var_kw = signature_params(MultiScaleEgoClipDataLoader)
    assert not var_kw
    good = {"data_dir": "d", "meta_dir": "m", "batch_size": 8, "num_workers": 2, "sampler": "temporal_pair",
            "temporal_pair_ratio": 0.3, "max_temporal_gap": 2.0, "video_params": {"scales": [4, 8, 16]},
            "reader": {"backend": "pyav", "chunk_len": 600}, "persistent_workers": True, "seed": 1}
    check_kwargs(good, params, var_kw, "data_loader.args")
    with pytest.raises(ConfigError, match="batch_sise"):
        check_kwargs({"batch_sise": 8}, params, var_kw, "data_loader.args")
    with pytest.raises(ConfigError, match="wrong type"):
        check_kwargs({"batch_size": "8"}, params, var_kw, "data_loader.args")
    with pytest.raises(ConfigError, match="sampler"):
        check_kwargs({"sampler": "temporal"}, params, var_kw, "data_loader.args")


def test_bad_video_params_are_rejected(long_clip_synthetic):
    with pytest.raises(ValueError, match="unknown video_params keys \\['num_frame'\\]"):
        dataset(long_clip_synthetic, video_params={"num_frame": 4})
    with pytest.raises(ValueError, match="loading"):
        dataset(long_clip_synthetic, video_params={"loading": "sloppy"})
    with pytest.raises(ValueError, match="num_frames 8 must equal the largest scale 16"):
        dataset(long_clip_synthetic, cls=MultiScaleEgoClip_EgoMCQ, video_params={"num_frames": 8})


def _ddp_loader_worker(rank: int, world: int, data_dir: str, meta_dir: str, out_dir: str) -> None:
    loader = MultiScaleEgoClipDataLoader(data_dir=data_dir, meta_dir=meta_dir, batch_size=2, num_workers=0,
                                         video_params={"input_res": 16, "scales": [2, 4]},
                                         temporal_pair_ratio=0.5, max_temporal_gap=4.0)
    random_loader = EgoClipDataLoader(data_dir=data_dir, meta_dir=meta_dir, batch_size=2, num_workers=0,
                                      video_params={"input_res": 16, "num_frames": 2})
    loader.set_epoch(1)
    random_loader.set_epoch(1)
    result = {"pairs": list(loader.batch_sampler), "random": [i for b in random_loader.batch_sampler for i in b],
              "rank": loader.rank, "world": loader.world_size}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def test_loaders_shard_by_torch_distributed_rank(long_clip_synthetic, tmp_path):
    run_ranks(_ddp_loader_worker, 2, long_clip_synthetic["data_dir"], long_clip_synthetic["meta_dir"], str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    assert len(ranks[0]["pairs"]) == len(ranks[1]["pairs"]) > 0
    assert not {i for b in ranks[0]["pairs"] for i in b} & {i for b in ranks[1]["pairs"] for i in b}
    assert len(ranks[0]["random"]) == len(ranks[1]["random"]) > 0
    assert not set(ranks[0]["random"]) & set(ranks[1]["random"])
