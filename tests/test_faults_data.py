"""Regression tests for data-side reliability faults: each failure is detected and named, never silent."""
import itertools
import json
import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from data_loader.metadata import load_egoclip, load_egomcq
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
