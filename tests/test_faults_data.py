"""Regression tests for data-side reliability faults: each failure is detected and named, never silent."""
import itertools
import json
import logging
import os
import shutil
from fractions import Fraction

import av
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

import data_loader.EgoClip_EgoMCQ_dataset as dataset_module
from data_loader.EgoClip_EgoMCQ_dataset import EgoClip_EgoMCQ, MCQClipError
from data_loader.MultiScaleEgoClip_dataset import MultiScaleEgoClip_EgoMCQ
from data_loader.data_loader import EgoClipDataLoader, MultiScaleEgoClipDataLoader
from data_loader.metadata import load_egoclip, load_egomcq
from data_loader.samplers import EpochIndex
from data_loader.video_backends import PyAVVideo
from data_loader.video_reader import ChunkedVideoReader, VideoReadError
from model.checkpoint import CorruptCheckpointError, load_checkpoint_file, torch_load
from utils.video_io import H264Writer


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


# ---------------------------------------------------------------- helpers: videos whose frames carry their index
def code_colour(index: int) -> tuple[int, int, int]:
    return 16 * (index % 16) + 8, 16 * (index // 16) + 8, 128


def frame_codes(frames) -> list[int]:
    """Indices encoded by :func:`code_colour` in uint8 frames ``[T, H, W, 3]``."""
    mean = frames.double().mean(dim=(1, 2)) if isinstance(frames, torch.Tensor) else torch.from_numpy(
        np.asarray(frames, dtype=np.float64)).mean(dim=(1, 2))
    return [int(round((r - 8) / 16)) + 16 * int(round((g - 8) / 16)) for r, g, _ in mean.tolist()]


def write_coded(path, indices, fps=12, gop=6):
    """A constant-rate H.264 file whose frames show the codes ``indices``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with H264Writer(str(path), fps, 32, 24, crf=10, gop=gop, threads=1) as writer:
        for index in indices:
            writer.write(np.full((24, 32, 3), code_colour(index), np.uint8))


def write_vfr(path, times_s, time_base=Fraction(1, 1000), bframes=3, gop=8):
    """A variable-frame-rate H.264 mp4 whose frame ``k`` (code ``k``) has presentation time ``times_s[k]``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.codec_context.time_base = time_base
        stream.options = {"crf": "10", "bf": str(bframes), "g": str(gop), "threads": "1"}
        for k, t in enumerate(times_s):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), code_colour(k), np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t / time_base), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# ---------------------------------------------------------------- short chunks and clips past the end
@pytest.fixture(scope="module")
def chunk_dir(tmp_path_factory):
    """2 s chunks at 12 fps (24 frames): 'short' has chunk 1 cut to 7 frames, 'rounded' chunk 0 one frame short,
    'odd_fps' chunk 1 at 10 fps among 12 fps chunks."""
    root = tmp_path_factory.mktemp("faulty_chunks")
    for k, (first, count) in enumerate([(0, 24), (24, 7), (48, 24), (72, 10)]):
        write_coded(root / "short" / f"{k}.mp4", range(first, first + count))
    write_coded(root / "rounded" / "0.mp4", range(23))
    write_coded(root / "rounded" / "1.mp4", range(24, 48))
    for k, fps in enumerate([12, 10, 12]):
        write_coded(root / "odd_fps" / f"{k}.mp4", range(24 * k, 24 * k + 2 * fps), fps=fps)
    return root


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_frames_missing_from_a_short_chunk_raise_naming_chunk_and_frame(chunk_dir, backend):
    reader = ChunkedVideoReader(str(chunk_dir), chunk_len=2.0, backend=backend)
    # frames [24, 31) exist in chunk 1: read exactly; [2.0, 3.5) s needs frames 24..41
    assert frame_codes(reader.read_clip("short", 2.0, 2.5, num_frames=6)) == [24, 25, 26, 27, 28, 29]
    with pytest.raises(VideoReadError) as info:
        reader.read_clip("short", 2.0, 3.5, num_frames=16)
    message = str(info.value)
    assert info.value.paths == (str(chunk_dir / "short" / "1.mp4"),)
    assert "chunk holds 7 frames, 24 expected" in message and "frame 41 (3.417 s) is missing" in message
    # the last chunk is naturally shorter: it reads, and a clip past it is an error
    assert frame_codes(reader.read_clip("short", 6.0, 6.8, num_frames=10)) == list(range(72, 82))
    with pytest.raises(VideoReadError, match=r"frame 83 \(6\.917 s\) is after the end of the video"):
        reader.read_clip("short", 6.0, 7.0, num_frames=4)


def test_a_chunk_one_frame_short_is_rounding(chunk_dir):
    reader = ChunkedVideoReader(str(chunk_dir), chunk_len=2.0, backend="pyav")
    assert frame_codes(reader.read_frames("rounded", [1.90, 1.95, 2.0])) == [22, 22, 24]


def test_clip_end_past_video_dur_raises_unless_within_one_frame(chunk_dir):
    reader = ChunkedVideoReader(str(chunk_dir), chunk_len=2.0, backend="pyav")
    assert len(reader.read_clip("short", 1.0, 1.5, num_frames=4, video_dur=1.45)) == 4  # 0.05 s < 1/12 s
    with pytest.raises(VideoReadError, match=r"clip end 1\.500 s is more than one frame past the end of the video "
                                             r"\(1\.400 s in the metadata\)") as info:
        reader.read_clip("short", 1.0, 1.5, num_frames=4, video_dur=1.4)
    assert info.value.paths == (str(chunk_dir / "short" / "0.mp4"),)


def test_fps_mismatch_names_the_odd_chunk(chunk_dir):
    reader = ChunkedVideoReader(str(chunk_dir), chunk_len=2.0, backend="pyav")
    for start in (1.5, 3.5):  # the odd chunk opened second, then first
        with pytest.raises(VideoReadError, match="chunk 1 has 10 fps, the other chunks of the video 12 fps") as info:
            reader.read_clip("odd_fps", start, start + 1.0, num_frames=4)
        assert info.value.paths == (str(chunk_dir / "odd_fps" / "1.mp4"),)


# ---------------------------------------------------------------- variable frame rate: raw files indexed by timestamp
# 30 fps grid with dropped frames and a stall, then irregular jitter (milliseconds)
VFR_MS = [0, 33, 67, 100, 200, 233, 267, 300, 333, 500, 517, 550, 567, 600, 700, 733, 767, 800, 1000, 1033,
          1067, 1100, 1133, 1250, 1283, 1317, 1400, 1433, 1467, 1500]
VFR_TIMES = [t / 1000 for t in VFR_MS]


def shown_at(t: float) -> int:
    """The true frame on screen at ``t`` seconds: the last whose timestamp is <= t."""
    return max(k for k, start in enumerate(VFR_TIMES) if start <= t + 1e-9)


@pytest.fixture(scope="module")
def vfr_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("vfr")
    write_vfr(root / "raw" / "0.mp4", VFR_TIMES)
    return root


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_vfr_file_maps_seconds_to_frames_by_timestamp(vfr_dir, backend):
    reader = ChunkedVideoReader(str(vfr_dir), chunk_len=600.0, backend=backend)
    times = [0.0, 0.15, 0.2, 0.45, 0.5, 0.9, 1.0, 1.2, 1.25, 1.39, 1.52]
    expected = [shown_at(t) for t in times]
    assert expected == [0, 3, 4, 8, 9, 17, 18, 22, 23, 25, 29]
    assert frame_codes(reader.read_frames("raw", times)) == expected
    # [0.45, 1.05) s shows frames 8..19 (12 frames): every one once, in order
    assert frame_codes(reader.read_clip("raw", 0.45, 1.05, num_frames=12)) == list(range(8, 20))
    assert frame_codes(reader.read_clip("raw", 0.45, 1.05, num_frames=4)) == [9, 12, 15, 18]
    with pytest.raises(VideoReadError, match="time 1.600 s is after the end of the video"):
        reader.read_frames("raw", [1.6])


class EarlySeekingContainer:
    """A PyAV container whose seeks land on the first keyframe, like demuxers with sparse seek indices; with
    ``stuck`` its decoder keeps returning the first GOP (never reaching later frames)."""

    def __init__(self, container, stuck=False):
        self.container, self.stuck, self.seeks = container, stuck, 0

    def seek(self, offset, **kwargs):
        self.seeks += 1
        self.container.seek(0, **kwargs)

    def decode(self, stream):
        if not self.stuck:
            return self.container.decode(stream)
        gop = [frame for _, frame in zip(range(4), self.container.decode(stream))]
        return itertools.cycle(gop)

    def close(self):
        self.container.close()


def test_pyav_decoding_is_bounded_when_seeks_land_early(vfr_dir):
    video = PyAVVideo(str(vfr_dir / "raw" / "0.mp4"))
    video._container = EarlySeekingContainer(video._container)
    assert frame_codes(video.decode([5, 20, 27])) == [5, 20, 27]
    assert video._container.seeks <= 3
    video._container = EarlySeekingContainer(video._container.container, stuck=True)
    with pytest.raises(VideoReadError, match=r"decoded \d+ frames without reaching frame 20") as info:
        video.decode([20])
    assert info.value.paths == (str(vfr_dir / "raw" / "0.mp4"),)
    video.close()


# ---------------------------------------------------------------- datasets: short chunks, replaced clips, bit-exact loading
RES = 16


@pytest.fixture(scope="module")
def faulty(tiny_synthetic, tmp_path_factory):
    """The tiny set with chunk 0 of the first training video cut to 12 of its 48 frames (1.5 of 6 s): rows 0-2
    (0.75-2.5, 2.75-4.5, 4.75-6.375 s) reach past it, rows 3-5 lie in chunk 1; an EgoMCQ copy whose item 0
    choice 2 is row 0's clip."""
    root = tmp_path_factory.mktemp("faulty")
    shutil.copytree(tiny_synthetic / "videos", root / "videos")
    shutil.copytree(tiny_synthetic / "meta", root / "meta")
    csv = pd.read_csv(root / "meta" / "egoclip.csv", sep="\t")
    uid = csv.video_uid[0]
    chunk = root / "videos" / uid / "0.mp4"
    with av.open(str(chunk)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 48
    with H264Writer(str(chunk), 8, 32, 32, crf=18, threads=1) as writer:
        for frame in frames[:12]:
            writer.write(frame)
    mcq = json.loads((root / "meta" / "egomcq.json").read_text())
    mcq["0"]["choices"]["2"] = {k: csv.loc[0, k].item() if hasattr(csv.loc[0, k], "item") else csv.loc[0, k]
                                for k in ("video_uid", "clip_start", "clip_end", "narration_time", "clip_text")}
    (root / "meta" / "egomcq.json").write_text(json.dumps(mcq))
    return {"data_dir": str(root / "videos"), "meta_dir": str(root / "meta"), "csv": csv, "chunk": str(chunk)}


def faulty_dataset(faulty, cls=EgoClip_EgoMCQ, split="train", loading="lax", **kwargs):
    params = {"input_res": RES, "num_frames": 2, "loading": loading, "max_bad_fraction": 0.9}
    if cls is MultiScaleEgoClip_EgoMCQ:
        params.pop("num_frames")
        params["scales"] = [1, 2]
    params.update(kwargs.pop("video_params", {}))
    return cls(video_params=params, data_dir=faulty["data_dir"], meta_dir=faulty["meta_dir"], split=split,
               reader="pyav", **kwargs)


def row_name(csv, row: int) -> str:
    return f"egoclip.csv row {row} ({csv.video_uid[row]} {csv.clip_start[row]:.2f}-{csv.clip_end[row]:.2f} s)"


def test_short_chunk_is_a_named_error_in_evaluation_and_strict_training(faulty):
    with pytest.raises(MCQClipError, match="egomcq.json item 0 choice 2") as info:
        faulty_dataset(faulty, split="val")[0]
    assert faulty["chunk"] in str(info.value) and "chunk holds 12 frames, 48 expected" in str(info.value)
    with pytest.raises(VideoReadError, match=r"12 frames, 48 expected .*: frame 19 \(2\.375 s\) is missing") as info:
        faulty_dataset(faulty, loading="strict")[0]
    assert info.value.paths == (faulty["chunk"],)


@pytest.mark.parametrize("cls", [EgoClip_EgoMCQ, MultiScaleEgoClip_EgoMCQ])
def test_lax_training_replaces_and_names_the_failing_clip(faulty, cls):
    ds = faulty_dataset(faulty, cls=cls, neg_param=4.0)
    first = ds[EpochIndex(0, 0)]
    assert first["replaced"] == len(first["replaced_rows"]) >= 1
    assert first["replaced_rows"][0] == row_name(faulty["csv"], 0)
    # row 3 reads, but its only scene negative (narration 4-8 s of the video) is row 2, which does not
    second = ds[EpochIndex(3, 0)]
    assert second["replaced"] >= 1 and second["replaced_rows"][0] == row_name(faulty["csv"], 2)
    assert ds.bad_reads == first["replaced"] + second["replaced"]


def test_replaced_counts_survive_workers_and_are_summed_by_the_collate(faulty):
    ds = faulty_dataset(faulty)
    expected = [ds[EpochIndex(i, 1)] for i in range(len(ds))]
    loader = EgoClipDataLoader(data_dir=faulty["data_dir"], meta_dir=faulty["meta_dir"], reader="pyav",
                               video_params={"input_res": RES, "num_frames": 2, "loading": "lax",
                                             "max_bad_fraction": 0.9},
                               batch_size=5, num_workers=2, shuffle=False, drop_last=False)
    loader.set_epoch(1)
    batches = list(loader)
    assert [b["num_replaced"] for b in batches] == [sum(e["replaced"] for e in expected[i:i + 5])
                                                    for i in range(0, len(ds), 5)]
    assert [r for b in batches for r in b["replaced_rows"]] == [r for e in expected for r in e["replaced_rows"]]
    assert sum(b["num_replaced"] for b in batches) >= 3
    assert "replaced" not in batches[0]["meta"] and isinstance(batches[0]["num_replaced"], int)


def test_each_replaced_read_is_logged_naming_its_row_rate_limited(faulty, caplog, monkeypatch):
    monkeypatch.setattr(dataset_module, "LOG_BURST", 2)
    ds = faulty_dataset(faulty)
    with caplog.at_level(logging.WARNING, logger=dataset_module.__name__):
        items = [ds[EpochIndex(i, 0)] for i in (0, 1, 2)]
        monkeypatch.setattr(dataset_module, "LOG_WINDOW_S", 0.0)
        items.append(ds[EpochIndex(0, 0)])
    rows = [r for item in items for r in item["replaced_rows"]]
    messages = [r.getMessage() for r in caplog.records]
    assert len(rows) >= 4 and len(messages) == 4
    for message, row in zip(messages[:2], rows):
        assert message.startswith(f"EgoClip: replacing unreadable training clip, {row}: ") and faulty["chunk"] in message
    assert f"{len(rows) - 1 - 2} more replaced training clips were not logged" in messages[2]
    assert messages[3].startswith(f"EgoClip: replacing unreadable training clip, {rows[-1]}: ")


def test_max_bad_fraction_still_stops_lax_loading(faulty):
    ds = faulty_dataset(faulty, video_params={"max_bad_fraction": 0.05})
    with pytest.raises(RuntimeError, match=r"11 of \d+ video reads failed in this process, more than "
                                           r"max_bad_fraction=0.05.*egoclip.csv row \d"):
        for _ in range(11):
            ds[EpochIndex(0, 0)]


class SkipFirstBatches:
    """What the trainer does on resume: the loader's batch sampler without its first ``skip`` batches."""

    def __init__(self, batch_sampler, skip):
        self.batch_sampler, self.skip = batch_sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self):
        return len(self.batch_sampler) - self.skip


def assert_same_batches(got, expected):
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        assert a["text"] == b["text"] and a["text_neg"] == b["text_neg"]
        assert a["meta"]["index"].tolist() == b["meta"]["index"].tolist()
        assert a["num_replaced"] == b["num_replaced"] and a["replaced_rows"] == b["replaced_rows"]
        for key in ("video", "video_neg"):
            for name in (a[key] if isinstance(a[key], dict) else {key: None}):
                x, y = (a[key], b[key]) if isinstance(a[key], torch.Tensor) else (a[key][name], b[key][name])
                assert torch.equal(x, y), key


@pytest.mark.parametrize("loader_cls", [EgoClipDataLoader, MultiScaleEgoClipDataLoader])
def test_batches_are_bit_exact_for_any_worker_count_epoch_and_resumed_start(faulty, loader_cls):
    """Augmentation, frame choice, scene negatives and lax replacements depend on (seed, epoch, index) only."""
    def make(num_workers, persistent=False):
        video_params = {"input_res": RES, "loading": "lax", "max_bad_fraction": 0.9,
                        **({"scales": [1, 2]} if loader_cls is MultiScaleEgoClipDataLoader else {"num_frames": 2})}
        return loader_cls(data_dir=faulty["data_dir"], meta_dir=faulty["meta_dir"], reader="pyav", seed=7,
                          video_params=video_params, neg_param=4.0, batch_size=4, num_workers=num_workers,
                          persistent_workers=persistent, temporal_pair_ratio=0.5, max_temporal_gap=4.0)

    def epochs(loader, numbers):
        """The batches of each epoch in ``numbers``; the loader (and its persistent workers, which ignore SIGTERM)
        is released when this returns, before any assertion can keep it alive."""
        return [list(loader) for number in numbers if loader.set_epoch(number) is None]

    expected = epochs(make(0), (0, 1))
    assert sum(b["num_replaced"] for b in expected[0]) > 0  # lax replacements are part of what must match
    assert not torch.equal(*(torch.cat([b["meta"]["index"] for b in e]) for e in expected))
    assert_same_batches(epochs(make(1), (1,))[0], expected[1])
    for got, reference in zip(epochs(make(2, persistent=True), (0, 1)), expected):
        assert_same_batches(got, reference)
    # resuming epoch 1 at batch 2, as the trainer does: a new loader over the batch sampler minus its first batches
    resumed = make(2)
    resumed.set_epoch(1)
    skipped = DataLoader(resumed.dataset, batch_sampler=SkipFirstBatches(resumed.batch_sampler, 2),
                         collate_fn=resumed.collate_fn, num_workers=2)
    assert_same_batches(list(skipped), expected[1][2:])
