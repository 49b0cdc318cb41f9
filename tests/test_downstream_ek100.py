"""EK-100 MIR: synthetic set in the real formats, annotation checks, dataset items, the evaluator against the
metric, and the retrieval task through the engine."""
import ast
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from data_loader.ek100_mir import EK100MIR, AnnotationError, EK100MIRDataLoader, load_annotations, load_relevancy
from data_loader.samplers import EpochIndex
from data_loader.video_backends import VideoReadError
from model.metric import ek100_mir_metrics
from tests.downstream_fixtures import FixedEmbeddings, evaluate_ek100_fixed, tiny_arch
from trainer import launch
from trainer.evaluators.ek100_mir import EK100MIRRetrieval, dual_softmax_similarity
from trainer.tasks.retrieval import model_video_input
from utils.config import ConfigError, ConfigParser
from utils.config_files import load_config_file
from utils.synthetic import COLOURS, SHAPES, VERBS, _plan_video, render_frames
from utils.synthetic_downstream import (EK100_COLUMNS, EK100_VERBS, _config, _ek100_annotations, generate_ek100,
                                      render_with_places)

RES = 32
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ek100(tmp_path_factory):
    root = tmp_path_factory.mktemp("ek100")
    generate_ek100(str(root), seed=0, num_train_videos=2, num_test_videos=2, clips_per_video=(4, 5),
                   clip_duration=(1.6, 2.4), fps=10, frame_size=RES)
    return {"root": root, "meta_dir": str(root / "annotations"), "data_dir": str(root / "videos")}


def copy_set(ek100, tmp_path):
    target = tmp_path / "ek"
    shutil.copytree(ek100["root"], target)
    return {"root": target, "meta_dir": str(target / "annotations"), "data_dir": str(target / "videos")}


def test_synthetic_files_have_the_real_formats(ek100):
    meta = ek100["meta_dir"]
    test = pd.read_csv(os.path.join(meta, "EPIC_100_retrieval_test.csv"))
    assert tuple(test.columns) == EK100_COLUMNS
    train_sentences = pd.read_csv(os.path.join(meta, "EPIC_100_retrieval_train_sentence.csv"))
    assert list(train_sentences.columns) == ["narration_id", "narration", "verb_class", "noun_classes", "verb", "nouns"]
    for split in ("train", "test"):
        ann = load_annotations(meta, split)
        clips = ann.clips
        rel = ann.relevancy
        assert rel.shape == (len(clips), len(ann.sentences))
        nouns = [set(ast.literal_eval(n)) for n in clips["all_noun_classes"]]
        assert all(int(c) in n for c, n in zip(clips["noun_class"], nouns))
        # JPoSE: half for the same verb class, half the Jaccard overlap of the noun classes
        for i in range(len(clips)):
            for j, row in enumerate(ann.sentence_rows):
                same_verb = clips["verb_class"].iat[i] == clips["verb_class"].iat[row]
                jaccard = len(nouns[i] & nouns[row]) / len(nouns[i] | nouns[row])
                assert rel[i, j] == pytest.approx(0.5 * same_verb + 0.5 * jaccard)
        assert (rel[ann.sentence_rows, np.arange(len(ann.sentence_rows))] == 1).all()
        for path in ("P01/P01_01.MP4",) if split == "train" else ():
            assert os.path.isfile(os.path.join(ek100["data_dir"], path))


def test_synthetic_vocabulary_is_kitchen_style_with_synonyms_and_two_noun_clips(tmp_path):
    summary = generate_ek100(str(tmp_path), seed=0, num_train_videos=30, num_test_videos=10, write_videos=False)
    assert summary["train_clips"] >= 200 and summary["test_clips"] >= 60
    meta = str(tmp_path / "annotations")
    ann = load_annotations(meta, "train")
    clips, rel = ann.clips, ann.relevancy
    pretraining_words = {word for _, phrase in VERBS for word in phrase.split()} | set(SHAPES) | {"#C", "C"}
    for narration, verb_class, nouns in zip(clips["narration"], clips["verb_class"], clips["all_noun_classes"]):
        _, phrasings = EK100_VERBS[VERBS[int(verb_class)][0]]
        assert any(narration.startswith(t.split("{noun}")[0]) for _, t in phrasings)
        assert not set(narration.split()) & set(SHAPES)
        assert len(ast.literal_eval(nouns)) == 1 + (" on " in narration or " from " in narration)
    # no narration is a pretraining phrase, and the key words are new to the pretraining text
    config = _config(0, 10, 64, (6, 8), (1.6, 3.0))
    assert not set(clips["narration"]) & {p.format(noun=config.noun_name(n)) for _, p in VERBS
                                          for n in range(config.num_nouns)}
    assert set(" ".join(clips["narration"]).split()) - pretraining_words >= {"take", "grab", "plate", "box", "funnel"}
    # synonyms: a clip has relevance 1 to every distinct sentence of its verb and noun classes
    classes = [(v, frozenset(ast.literal_eval(n))) for v, n in zip(clips["verb_class"], clips["all_noun_classes"])]
    exact = [[j for j, r in enumerate(ann.sentence_rows) if classes[r] == c] for c in classes]
    assert all((rel[i, e] == 1).all() and (rel[i] == 1).sum() == len(e) for i, e in enumerate(exact))
    assert max(len(e) for e in exact) >= 2
    # two-noun clips: relevance 0.75 to the single-noun sentence of their verb and first noun
    two = [i for i, n in enumerate(clips["all_noun_classes"]) if len(ast.literal_eval(n)) == 2]
    assert len(two) >= 10
    pairs = [(i, j) for i in two for j, r in enumerate(ann.sentence_rows)
             if classes[r] == (classes[i][0], {int(clips["noun_class"].iat[i])})]
    assert pairs and all(rel[i, j] == pytest.approx(0.75) for i, j in pairs)
    verb_classes = pd.read_csv(tmp_path / "EPIC_100_verb_classes.csv")
    assert list(verb_classes.columns) == ["id", "key", "instances", "category"]
    assert verb_classes["key"].iat[5] == "take" and ast.literal_eval(verb_classes["instances"].iat[5]) == [
        "take", "grab", "pick-up"]
    assert pd.read_csv(tmp_path / "EPIC_100_noun_classes.csv")["key"].tolist()[:4] == [
        "plate:red", "box:red", "funnel:red", "plate:green"]
    # metadata is a pure function of the arguments
    again = tmp_path / "again"
    generate_ek100(str(again), seed=0, num_train_videos=30, num_test_videos=10, write_videos=False)
    for name in ("EPIC_100_retrieval_train.csv", "EPIC_100_retrieval_test_sentence.csv"):
        assert (tmp_path / "annotations" / name).read_bytes() == (again / "annotations" / name).read_bytes()


def test_two_noun_clips_show_the_second_object_during_the_clip_clear_of_the_first():
    config = _config(0, 10, 64, (6, 8), (1.6, 3.0))
    frames_with_place = 0
    for index in range(12):
        plan = _plan_video(config, index)
        places = {k: p for k, (*_, p) in enumerate(_ek100_annotations(config, plan, index, 1.0)) if p is not None}
        spans = {k: range(plan.clips[k].start_frame, plan.clips[k].end_frame) for k in places}
        for frame, (drawn, plain) in enumerate(zip(render_with_places(plan, config, places),
                                                   render_frames(plan, config))):
            inside = [k for k, span in spans.items() if frame in span]
            if not inside:
                assert np.array_equal(drawn, plain)
                continue
            place = places[inside[0]]
            assert (drawn[round(place.y), round(place.x)] == COLOURS[place.noun // config.num_shapes][1]).all()
            shown = (plain != np.array(plan.background)).any(-1)  # the clip's own object is left as it was
            assert np.array_equal(drawn[shown], plain[shown])
            frames_with_place += 1
    assert frames_with_place > 100


def test_pre_2020_uid_column_is_rejected_naming_the_file(ek100, tmp_path):
    data = copy_set(ek100, tmp_path)
    path = os.path.join(data["meta_dir"], "EPIC_100_retrieval_test.csv")
    table = pd.read_csv(path)
    table.insert(0, "uid", range(len(table)))
    table.to_csv(path, index=False)
    with pytest.raises(AnnotationError, match=r"EPIC_100_retrieval_test.csv: first column is 'uid'.*before May 2020"):
        load_annotations(data["meta_dir"], "test")


def test_relevancy_shape_mismatch_and_unsafe_pickles_are_rejected(ek100, tmp_path):
    data = copy_set(ek100, tmp_path)
    path = os.path.join(data["meta_dir"], "relevancy", "caption_relevancy_EPIC_100_retrieval_test.pkl")
    with open(path, "wb") as f:
        pickle.dump(np.zeros((3, 2)), f)
    with pytest.raises(AnnotationError, match=r"caption_relevancy_EPIC_100_retrieval_test.pkl: relevancy matrix "
                                              r"is 3 x 2 but .*EPIC_100_retrieval_test.csv has \d+ clips"):
        load_annotations(data["meta_dir"], "test")
    with open(path, "wb") as f:
        pickle.dump(os.system, f)  # a global that would run code
    with pytest.raises(AnnotationError, match="refusing to unpickle"):
        load_relevancy(path)


def test_bad_timestamp_names_the_row(ek100, tmp_path):
    data = copy_set(ek100, tmp_path)
    path = os.path.join(data["meta_dir"], "EPIC_100_retrieval_test.csv")
    table = pd.read_csv(path, dtype=str)
    table.loc[2, "stop_timestamp"] = "soon"
    table.to_csv(path, index=False)
    with pytest.raises(AnnotationError, match=r"EPIC_100_retrieval_test.csv row 2 \(P0\d_0\d_\d\)"):
        load_annotations(data["meta_dir"], "test", relevancy=False)


def test_training_captions_are_positives_with_their_relevance(ek100):
    ds = EK100MIR(ek100["meta_dir"], ek100["data_dir"], "train", num_frames=4, input_res=RES)
    ann = load_annotations(ek100["meta_dir"], "train")
    sentences = ann.sentences["narration"].tolist()
    for index in range(len(ds)):
        item = ds[EpochIndex(index, 0)]
        assert item["video"].shape == (4, 3, RES, RES)
        candidates = [j for j in range(len(sentences)) if ann.relevancy[index, j] > 0.1]
        assert any(sentences[j] == item["text"] and ann.relevancy[index, j] == pytest.approx(item["relevance"])
                   for j in candidates)
    # same (seed, epoch, index), same item; another epoch may draw another caption
    assert torch.equal(ds[EpochIndex(3, 1)]["video"], ds[EpochIndex(3, 1)]["video"])


def test_short_clip_is_an_error_naming_the_row_unless_repeat(ek100):
    ds = EK100MIR(ek100["meta_dir"], ek100["data_dir"], "test", num_frames=40, input_res=RES)
    with pytest.raises(VideoReadError, match=r"EPIC_100_retrieval_test.csv row 0 \(P\d+_\d+_0, .*holds \d+ frames, "
                                             r"fewer than num_frames=40"):
        ds[0]
    repeat = EK100MIR(ek100["meta_dir"], ek100["data_dir"], "test", num_frames=40, input_res=RES, short_clips="repeat")
    assert repeat[0]["video"].shape[0] == 40


def test_missing_video_fails_evaluation_and_is_replaced_in_lax_training(ek100, tmp_path):
    data = copy_set(ek100, tmp_path)
    test_video = pd.read_csv(os.path.join(data["meta_dir"], "EPIC_100_retrieval_test.csv"))["video_id"].iat[0]
    os.remove(os.path.join(data["data_dir"], test_video[:3], test_video + ".MP4"))
    test = EK100MIR(data["meta_dir"], data["data_dir"], "test", num_frames=4, input_res=RES)
    with pytest.raises(VideoReadError, match=rf"EPIC_100_retrieval_test.csv row 0 .*video file is missing.*"
                                             rf"{test_video}.MP4"):
        test[0]
    with pytest.raises(ValueError, match="lax loading is for training only"):
        EK100MIR(data["meta_dir"], data["data_dir"], "test", loading="lax")
    os.remove(os.path.join(data["data_dir"], "P01", "P01_01.MP4"))  # the first training video
    strict = EK100MIR(data["meta_dir"], data["data_dir"], "train", num_frames=4, input_res=RES)
    with pytest.raises(VideoReadError, match=r"EPIC_100_retrieval_train.csv row 0 \(P01_01_0"):
        strict[EpochIndex(0, 0)]
    loader = EK100MIRDataLoader(data["meta_dir"], data["data_dir"], "train", num_frames=4, input_res=RES,
                                loading="lax", max_bad_fraction=0.9, batch_size=4, num_workers=0, shuffle=False,
                                drop_last=False)
    batches = list(loader)
    first_video_rows = (pd.read_csv(os.path.join(data["meta_dir"], "EPIC_100_retrieval_train.csv"))["video_id"]
                        == "P01_01").sum()
    assert sum(b["num_replaced"] for b in batches) >= first_video_rows
    assert all(row.startswith("EPIC_100_retrieval_train.csv row") for b in batches for row in b["replaced_rows"])
    assert all(v.shape[1:] == (4, 3, RES, RES) for v in (b["video"] for b in batches))


def test_evaluator_equals_the_metric(ek100):
    ann = load_annotations(ek100["meta_dir"], "test")
    num_rows = len(ann.clips)
    single = evaluate_ek100_fixed(ek100["meta_dir"], num_rows)
    fixed = FixedEmbeddings(num_rows)
    text, video = fixed.text.double(), fixed.video.double()
    cosine = (nn.functional.normalize(video, dim=1) @ nn.functional.normalize(text, dim=1).t())[:, ann.sentence_rows]
    assert single == {**ek100_mir_metrics(cosine, ann.relevancy), **{
        f"dual_softmax/{k}": v for k, v in ek100_mir_metrics(
            dual_softmax_similarity(text, video).t()[:, ann.sentence_rows], ann.relevancy).items()}}


def test_evaluator_refuses_rows_scored_twice(ek100):
    ann = load_annotations(ek100["meta_dir"], "test")
    evaluator = EK100MIRRetrieval(ek100["meta_dir"])
    evaluator.reset()
    rows = torch.arange(len(ann.clips))
    evaluator.process({"index": torch.cat([rows, rows[:1]])},
                      {"text": torch.ones(len(rows) + 1, 4), "video": torch.ones(len(rows) + 1, 4)})
    with pytest.raises(RuntimeError, match=r"rows \[0\] were scored \[2.0\] times"):
        evaluator.compute()


def test_multiscale_models_get_nested_scales_of_the_clip():
    class MultiScale:
        scales = (2, 4)

    video = torch.arange(4.0).view(1, 4, 1, 1, 1).expand(1, 4, 3, 2, 2)
    frames = model_video_input(MultiScale(), video)
    assert frames["frames_4"][0, :, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert set(frames["frames_2"][0, :, 0, 0, 0].tolist()) <= {0, 1, 2, 3} and frames["frames_2"].shape[1] == 2
    assert model_video_input(object(), video) is video
    with pytest.raises(ValueError, match="needs at least 4 frames"):
        model_video_input(MultiScale(), video[:, :3])


def demo_config(ek100, save_dir, loss):
    config = load_config_file(str(ROOT / "configs" / "ek100" / "demo_finetune.json"))
    config["arch"] = tiny_arch(RES)
    for section in ("data_loader", "valid_data_loader"):
        config[section]["args"].update(meta_dir=ek100["meta_dir"], data_dir=ek100["data_dir"], num_frames=4,
                                       input_res=RES)
    config["evaluators"][0]["args"]["meta_dir"] = ek100["meta_dir"]
    config["loss"] = loss
    config["trainer"].update(epochs=1, val_every=1, init_val=False, max_steps_per_epoch=2, save_dir=str(save_dir),
                             tqdm=False, log_every=1)
    return config


def test_fine_tuning_runs_on_the_engine_and_logs_its_loss(ek100, tmp_path):
    config = demo_config(ek100, tmp_path, {"type": "AdaptiveMaxMarginRankingLoss", "args": {"margin": 0.2}})
    parser = ConfigParser(config, source="ek100_demo.json", device="cpu")
    metrics = launch.train(parser)
    assert set(EK100MIRRetrieval.metric_names) <= set(metrics) and 0 < metrics["mAP_AVG"] <= 100
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(parser.run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "train/loss/AdaptiveMaxMarginRankingLoss" in tags or any(t.endswith("loss/AdaptiveMaxMarginRankingLoss")
                                                                    for t in tags)
    assert any(t.endswith("mAP_AVG") for t in tags)


def test_training_positives_are_cached_beside_the_pickle_and_rebuilt_when_it_changes(ek100, tmp_path):
    data = copy_set(ek100, tmp_path)
    pickle_path = os.path.join(data["meta_dir"], "relevancy", "caption_relevancy_EPIC_100_retrieval_train.pkl")
    first = EK100MIR(data["meta_dir"], data["data_dir"], "train", num_frames=4, input_res=RES)
    assert os.path.isfile(pickle_path + ".positives_0.1.npz")
    cached = EK100MIR(data["meta_dir"], data["data_dir"], "train", num_frames=4, input_res=RES)
    for name in ("positive_offsets", "positive_ids", "positive_relevance"):
        np.testing.assert_array_equal(getattr(first, name), getattr(cached, name))
    relevancy = load_relevancy(pickle_path)
    with open(pickle_path, "wb") as f:
        pickle.dump(relevancy[:, :-1], f)  # a newer pickle: the cache is rebuilt, and checked
    os.utime(pickle_path, (os.path.getmtime(pickle_path) + 10,) * 2)
    with pytest.raises(AnnotationError, match=r"caption_relevancy_EPIC_100_retrieval_train.pkl: relevancy matrix"):
        EK100MIR(data["meta_dir"], data["data_dir"], "train", num_frames=4, input_res=RES)


def test_configs_load_and_the_evaluator_must_read_the_loaders_annotations(tmp_path):
    for name, purpose in (("zeroshot", "eval"), ("finetune", "train"), ("demo_zeroshot", "eval"),
                          ("demo_finetune", "train")):
        ConfigParser.from_file(ROOT / "configs" / "ek100" / f"{name}.json", purpose=purpose)
    config = load_config_file(str(ROOT / "configs" / "ek100" / "zeroshot.json"))
    config["evaluators"][0]["args"]["meta_dir"] = "elsewhere"
    with pytest.raises(ConfigError, match=r"'evaluators\[0\].args.meta_dir' = 'elsewhere' differs"):
        ConfigParser(config, source="zeroshot.json", purpose="eval")
