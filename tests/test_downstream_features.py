"""Ego4D EgoMQ / EgoNLQ feature extraction: windows, annotations, features equal to direct forward passes,
resuming, sharding and bad input."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from data_loader.ego4d_windows import (Ego4DAnnotationError, num_windows, read_clips, read_queries, window_times)
from data_loader.video_backends import VideoReadError
from tests.downstream_fixtures import tiny_arch
from trainer.tasks.extract import FeatureExtraction
from utils.config import ConfigParser
from utils.registry import MODELS
from utils.synthetic_downstream import generate_ego4d

RES = 32
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ego4d(tmp_path_factory):
    root = tmp_path_factory.mktemp("ego4d")
    generate_ego4d(str(root), seed=0, num_videos=2, clips_per_video=(3, 4), clip_duration=(1.6, 2.4), fps=10,
                   frame_size=RES)
    annotations = [str(root / "annotations" / f"{b}_{s}.json") for b in ("moments", "nlq") for s in ("train", "val")]
    return {"root": root, "annotations": annotations, "video_dir": str(root / "videos")}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    arch = tiny_arch(RES)
    return MODELS.get(arch["type"])(**arch["args"]).eval()


def make_task(model, ego4d, out_dir, **kwargs):
    args = dict(annotations=ego4d["annotations"], video_dir=ego4d["video_dir"], out_dir=str(out_dir), num_frames=4,
                input_res=RES, windows_per_batch=3, reader="pyav")
    return FeatureExtraction(model, **{**args, **kwargs})


def test_windows_follow_the_sampling_rule():
    assert num_windows(480.0, 4) == 897  # M = int(480 * 1.87 * 4 + 1) = 3591 frames
    times = window_times(10.0, 12.0, 4)
    sampled = int(2.0 * 1.87 * 4 + 1)  # 15 bin centres, the first 12 make 3 windows
    assert times.shape == (sampled // 4, 4) == (num_windows(2.0, 4), 4)
    np.testing.assert_allclose(times.ravel(), 10.0 + (np.arange(12) + 0.5) * 2.0 / sampled)
    assert window_times(0.0, 0.3, 4).shape == (0, 4)


def test_annotations_are_merged_by_clip_and_checked(ego4d, tmp_path):
    clips = read_clips(ego4d["annotations"])
    assert len(clips) == 4 and [c.clip_uid for c in clips] == sorted(c.clip_uid for c in clips)
    assert all(q.startswith("where did I see the") for q in read_queries(ego4d["annotations"]))
    data = json.loads(open(ego4d["annotations"][0]).read())
    data["videos"][0]["clips"][0]["video_end_sec"] += 1.0
    changed = tmp_path / "moments_changed.json"
    changed.write_text(json.dumps(data))
    with pytest.raises(Ego4DAnnotationError, match=r"moments_changed.json videos\[0\].clips\[0\]: clip .* differs"):
        read_clips([ego4d["annotations"][0], str(changed)])
    del data["videos"][0]["clips"][1]["clip_uid"]
    changed.write_text(json.dumps(data))
    with pytest.raises(Ego4DAnnotationError, match=r"moments_changed.json videos\[0\].clips\[1\]: needs"):
        read_clips([str(changed)])


def test_features_equal_direct_forward_passes(ego4d, model, tmp_path):
    task = make_task(model, ego4d, tmp_path)
    summary = task.extract(torch.device("cpu"), show_progress=False)
    clips = read_clips(ego4d["annotations"])
    assert summary == {"clips": 4, "extracted": 4, "skipped": 0,
                       "windows": sum(num_windows(c.end - c.start, 4) for c in clips)}
    shapes = json.loads((tmp_path / "feature_shapes.json").read_text())
    assert shapes == {c.clip_uid: num_windows(c.end - c.start, 4) for c in clips}
    for clip in clips[:2]:
        saved = torch.load(tmp_path / f"{clip.clip_uid}.pt", weights_only=True)
        times = window_times(clip.start, clip.end, 4)
        frames = task.reader.read_frames(clip.video_uid + ".mp4", times.ravel().tolist())
        frames = task.transform(frames).view(len(times), 4, 3, RES, RES)
        with torch.no_grad():
            expected = model.compute_video(frames)
        assert saved.dtype == torch.float32 and saved.shape == (shapes[clip.clip_uid], 16)
        torch.testing.assert_close(saved, expected, rtol=1e-4, atol=1e-5)
    queries = torch.load(tmp_path / "nlq_query_features.pt", weights_only=True)
    assert list(queries) == read_queries(ego4d["annotations"])
    with torch.no_grad():
        direct = model.compute_text(model.tokenize(list(queries)))
    torch.testing.assert_close(torch.cat(list(queries.values())), direct, rtol=1e-4, atol=1e-5)
    assert all(v.shape == (1, 16) for v in queries.values())


def test_an_interrupted_run_resumes_without_recomputing_finished_clips(ego4d, model, tmp_path, monkeypatch):
    task = make_task(model, ego4d, tmp_path)
    computed = []
    original = FeatureExtraction.clip_features

    def interrupted_after_two(self, clip, device, progress=None):
        if len(computed) == 2:
            raise KeyboardInterrupt
        computed.append(clip.clip_uid)
        return original(self, clip, device, progress)

    monkeypatch.setattr(FeatureExtraction, "clip_features", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        task.extract(torch.device("cpu"), show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{uid}.pt" for uid in computed)
    finished = {uid: os.stat(tmp_path / f"{uid}.pt").st_mtime_ns for uid in computed}
    computed.clear()
    monkeypatch.setattr(FeatureExtraction, "clip_features", lambda self, clip, device, progress=None: (
        computed.append(clip.clip_uid), original(self, clip, device, progress))[1])
    summary = task.extract(torch.device("cpu"), show_progress=False)
    assert summary["skipped"] == 2 and summary["extracted"] == 2 and not set(computed) & set(finished)
    assert {uid: os.stat(tmp_path / f"{uid}.pt").st_mtime_ns for uid in finished} == finished
    assert len(json.loads((tmp_path / "feature_shapes.json").read_text())) == 4


def test_shards_are_disjoint_and_cover_every_clip(ego4d, model, tmp_path):
    done = []
    for index in range(2):
        out = tmp_path / f"shard{index}"
        make_task(model, ego4d, out, shard=(index, 2), query_features=None).extract(torch.device("cpu"), False)
        done.append({p.stem for p in out.glob("*.pt")})
    assert not done[0] & done[1] and done[0] | done[1] == {c.clip_uid for c in read_clips(ego4d["annotations"])}
    with pytest.raises(ValueError, match="shard"):
        make_task(model, ego4d, tmp_path, shard=(2, 2))


def test_missing_videos_and_short_clips_name_the_annotation(ego4d, model, tmp_path):
    data = json.loads(open(ego4d["annotations"][0]).read())
    data["videos"][0]["video_uid"] = "no-such-video"
    data["videos"] = data["videos"][:1]
    bad = tmp_path / "moments_bad.json"
    bad.write_text(json.dumps(data))
    task = make_task(model, ego4d, tmp_path / "out", annotations=[str(bad)], query_features=None)
    with pytest.raises(VideoReadError, match=r"moments_bad.json videos\[0\].clips\[0\] \(clip .*\): video file is "
                                             r"missing.*no-such-video.mp4"):
        task.extract(torch.device("cpu"), show_progress=False)
    data["videos"][0]["clips"] = [{"clip_uid": "tiny", "video_start_sec": 1.0, "video_end_sec": 1.2}]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"moments_bad.json videos\[0\].clips\[0\]: clip tiny \(0.200 s\) is shorter "
                                         r"than one window of 4 frames"):
        task.extract(torch.device("cpu"), show_progress=False)


def test_configs_load():
    for name in ("extract_features", "demo_extract_features"):
        config = ConfigParser.from_file(ROOT / "configs" / "ego4d" / f"{name}.json", purpose="extract")
        assert config["task"]["type"] == "FeatureExtraction"
