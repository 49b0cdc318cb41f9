"""ChunkedVideoReader on real H.264 chunks written under a temporary folder.

Every frame carries its video-level index as a flat colour code in its top half (robust to
compression and scaling) and a per-frame random texture in its bottom half (so backend equality
means equal pixels, not just equal codes).
"""
import os
from fractions import Fraction

import numpy as np
import pytest
import torch

from data_loader.video_reader import ChunkedVideoReader, VideoReadError
from utils.video_io import H264Writer

NTSC = Fraction(30000, 1001)
BACKENDS = ("decord", "pyav")


def coded_frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    frame = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame[: height // 2] = (16 * (index % 16) + 8, 16 * (index // 16) + 8, 128)
    return frame


def frame_codes(frames: torch.Tensor) -> list[int]:
    """Indices encoded in ``frames`` [T, H, W, 3]."""
    top = frames[:, 2: frames.shape[1] // 2 - 2, 2:-2].double().mean(dim=(1, 2))
    return [int(round((r - 8) / 16)) + 16 * int(round((g - 8) / 16)) for r, g, _ in top.tolist()]


def write_chunks(folder, fps, chunk_sizes, width=64):
    """Write chunks ``0.mp4, 1.mp4, ...`` holding consecutive coded frames; ``fps`` may be one per chunk."""
    os.makedirs(folder)
    first = 0
    rates = fps if isinstance(fps, list) else [fps] * len(chunk_sizes)
    for k, (size, rate) in enumerate(zip(chunk_sizes, rates)):
        with H264Writer(os.path.join(folder, f"{k}.mp4"), rate, width, 48, crf=10, gop=10, threads=1) as writer:
            for index in range(first, first + size):
                writer.write(coded_frame(index, width=width))
        first += size


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunks")
    # 29.97 fps, 2 s chunks: chunk k starts at frame ceil(k * 2 * 29.97) -> 0, 60, 120, 180.
    write_chunks(root / "ntsc", NTSC, [60, 60, 60, 20])
    write_chunks(root / "twelve", 12, [24, 24, 10])
    write_chunks(root / "narrow", 12, [24, 5], width=48)       # a width decord 0.6 cannot return
    write_chunks(root / "mixed_fps", [12, 10], [24, 20])
    write_chunks(root / "hole", 12, [24, 24, 10])
    os.remove(root / "hole" / "1.mp4")
    (root / "garbage").mkdir()
    (root / "garbage" / "0.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    write_chunks(root / "truncated", 12, [24])
    data = (root / "truncated" / "0.mp4").read_bytes()
    (root / "truncated" / "0.mp4").write_bytes(data[: len(data) // 2])
    return str(root)


@pytest.fixture(params=BACKENDS)
def reader(request, data_dir):
    return ChunkedVideoReader(data_dir, chunk_len=2.0, backend=request.param)


def test_uniform_clip_returns_exact_frames_across_a_chunk_boundary(reader):
    frames = reader.read_clip("ntsc", 1.5, 2.5, num_frames=8)
    assert frames.dtype == torch.uint8 and frames.shape == (8, 48, 64, 3)
    # frames [44, 75) at 29.97 fps; chunk 1 starts at frame 60
    assert frame_codes(frames) == [45, 48, 52, 56, 60, 64, 68, 72]


def test_real_fps_is_used(reader):
    assert frame_codes(reader.read_frames("twelve", [0.0, 1.0, 2.0, 3.5, 4.75])) == [0, 12, 24, 42, 57]
    assert frame_codes(reader.read_clip("twelve", 3.0, 4.0, num_frames=3)) == [37, 41, 45]


def test_read_frames_keeps_order_and_duplicates_and_exact_boundaries(reader):
    times = [6.0, 0.5, 6.0, 2.0, 2.0021, 1 / float(NTSC) * 5]
    assert frame_codes(reader.read_frames("ntsc", times)) == [179, 14, 179, 59, 60, 5]


def test_rand_sampling_is_reproducible_and_inside_the_clip(reader):
    a = reader.read_clip("ntsc", 1.0, 3.0, num_frames=16, sample="rand", rng=np.random.default_rng(5))
    b = reader.read_clip("ntsc", 1.0, 3.0, num_frames=16, sample="rand", rng=np.random.default_rng(5))
    assert torch.equal(a, b)
    codes = frame_codes(a)
    assert codes == sorted(codes) and all(29 <= c < 90 for c in codes)


def test_clip_end_past_the_video_by_at_most_one_frame_reads_the_last_frame(reader):
    # ntsc ends at frame 199 (6.673 s): [6.0, 6.70) s is frames [179, 201), one past the end (rounding)
    assert frame_codes(reader.read_clip("ntsc", 6.0, 6.70, num_frames=22)) == list(range(179, 200)) + [199]
    assert frame_codes(reader.read_clip("twelve", 4.5, 4.9, num_frames=5)) == [54, 55, 56, 57, 57]


@pytest.mark.parametrize("uid, start, end, frame", [("ntsc", 6.5, 7.5, "frame 224 (7.474 s)"),
                                                    ("twelve", 4.5, 9.0, "frame 107 (8.917 s)"),
                                                    ("twelve", 4.5, 5.0, "frame 59 (4.917 s)")])
def test_clip_end_past_the_video_raises_naming_the_frame(reader, data_dir, uid, start, end, frame):
    with pytest.raises(VideoReadError, match="(after|past) the end of the video") as info:
        reader.read_clip(uid, start, end, num_frames=2)
    assert frame in str(info.value) and info.value.paths[0].startswith(os.path.join(data_dir, uid))


def test_decord_and_pyav_return_identical_frames(data_dir):
    decord_reader = ChunkedVideoReader(data_dir, chunk_len=2.0, backend="decord")
    pyav_reader = ChunkedVideoReader(data_dir, chunk_len=2.0, backend="pyav")
    rng = np.random.default_rng(0)
    for start in (0.0, 0.7, 1.9, 3.3, 5.0):
        a = decord_reader.read_clip("ntsc", start, start + 1.4, num_frames=16)
        b = pyav_reader.read_clip("ntsc", start, start + 1.4, num_frames=16)
        assert torch.equal(a, b)
    times = sorted(rng.uniform(0, 6.6, size=40).tolist())
    assert torch.equal(decord_reader.read_frames("ntsc", times), pyav_reader.read_frames("ntsc", times))


def test_decord_falls_back_to_pyav_at_widths_it_cannot_return(data_dir):
    clips = [ChunkedVideoReader(data_dir, 2.0, backend).read_clip("narrow", 1.0, 2.4, num_frames=6)
             for backend in BACKENDS]
    assert clips[0].shape == (6, 48, 48, 3) and torch.equal(clips[0], clips[1])
    assert frame_codes(clips[0]) == [12, 15, 18, 21, 24, 27]   # frames [12, 29)


@pytest.mark.parametrize("decode_size, shape", [(24, (24, 32)), ((20, 30), (20, 30)), (100, (100, 133))])
def test_decode_size_scales_while_decoding_identically_in_both_backends(data_dir, decode_size, shape):
    frames = {backend: ChunkedVideoReader(data_dir, 2.0, backend, decode_size=decode_size)
              .read_clip("ntsc", 1.5, 2.5, num_frames=8) for backend in BACKENDS}
    for clip in frames.values():
        assert clip.shape == (8, *shape, 3)
        assert frame_codes(clip) == [45, 48, 52, 56, 60, 64, 68, 72]
    assert torch.equal(frames["decord"], frames["pyav"])


@pytest.mark.parametrize("uid, start, end, path_part, reason", [
    ("missing", 0.0, 1.0, os.path.join("missing", "0.mp4"), "missing"),
    ("garbage", 0.0, 1.0, os.path.join("garbage", "0.mp4"), "cannot open"),
    ("truncated", 0.0, 1.0, os.path.join("truncated", "0.mp4"), "cannot open"),
    ("ntsc", 7.0, 8.0, os.path.join("ntsc", "3.mp4"), "after the end"),
    ("ntsc", 9.0, 9.5, os.path.join("ntsc", "4.mp4"), "past the end"),
    ("hole", 1.5, 2.5, os.path.join("hole", "1.mp4"), "chunk file is missing"),
    ("mixed_fps", 1.5, 2.5, os.path.join("mixed_fps", "1.mp4"), "fps"),
])
def test_unreadable_clips_raise_a_typed_error_naming_file_and_clip(reader, data_dir, uid, start, end,
                                                                    path_part, reason):
    with pytest.raises(VideoReadError) as info:
        reader.read_clip(uid, start, end, num_frames=4)
    message = str(info.value)
    assert os.path.join(data_dir, path_part) in message and reason in message
    assert f"clip {uid} [{start:.3f}, {end:.3f}] s" in message
    assert info.value.clip == (uid, start, end)


def test_read_frames_past_the_end_raises(reader):
    with pytest.raises(VideoReadError, match="after the end"):
        reader.read_frames("ntsc", [1.0, 6.7])


def test_invalid_requests(reader):
    with pytest.raises(ValueError, match="number of frames"):
        reader.read_clip("ntsc", 0.0, 1.0, num_frames=0)
    with pytest.raises(VideoReadError, match="before its start"):
        reader.read_clip("ntsc", 2.0, 1.0, num_frames=4)
    with pytest.raises(ValueError):
        ChunkedVideoReader(".", backend="opencv")
