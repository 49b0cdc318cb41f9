"""PyAV preprocessing tools: resize (short side 256, even dims) and chunking into <uid>/<k>.mp4."""
import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from data_loader.video_reader import ChunkedVideoReader
from utils import video_chunk, video_resize
from utils.video_io import ColourTags, H264Writer, parse_shard, select_shard

NTSC = Fraction(30000, 1001)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def coded_frame(index: int, height: int, width: int) -> np.ndarray:
    """A flat frame whose colour encodes ``index`` (0..255)."""
    return np.full((height, width, 3), (16 * (index % 16) + 8, 16 * (index // 16) + 8, 128), np.uint8)


def code_of(frame: np.ndarray) -> int:
    r, g, _ = frame.reshape(-1, 3).mean(axis=0)
    return int(round((r - 8) / 16)) + 16 * int(round((g - 8) / 16))


def write_video(path, num_frames, fps, width, height):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with H264Writer(str(path), fps, width, height, crf=10, gop=12, threads=1) as writer:
        for index in range(num_frames):
            writer.write(coded_frame(index, height, width))


def probe(path):
    """``(num_frames, fps, width, height, duration_s, codes)`` of a video, by decoding it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate)
        return (len(frames), fps, stream.codec_context.width, stream.codec_context.height,
                float(stream.duration * stream.time_base), [code_of(f) for f in frames])


def listing(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files)


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    write_video(root / "landscape.mp4", 15, 12, 90, 50)
    write_video(root / "sub" / "portrait.mp4", 10, 10, 50, 90)
    return root


@pytest.mark.parametrize("width, height, short_side, expected", [
    (90, 50, 256, (460, 256)), (50, 90, 256, (256, 460)), (1920, 1080, 256, (456, 256)),
    (640, 480, 256, (342, 256)), (50, 90, 32, (32, 58)),
])
def test_resized_dimensions_are_even_with_the_short_side_exact(width, height, short_side, expected):
    assert video_resize.resized_dimensions(width, height, short_side) == expected


def test_resize_folder_writes_all_frames_at_the_new_size(raw_dir, tmp_path):
    status = video_resize.resize_folder(str(raw_dir), str(tmp_path), progress=False)
    assert status == {"landscape.mp4": "done", os.path.join("sub", "portrait.mp4"): "done"}
    frames, fps, width, height, duration, codes = probe(tmp_path / "landscape.mp4")
    assert (frames, fps, width, height, duration) == (15, 12.0, 460, 256, 1.25)
    assert codes == list(range(15))
    frames, fps, width, height, duration, codes = probe(tmp_path / "sub" / "portrait.mp4")
    assert (frames, fps, width, height, duration) == (10, 10.0, 256, 460, 1.0)
    assert codes == list(range(10))
    assert listing(tmp_path) == ["landscape.mp4", os.path.join("sub", "portrait.mp4")]   # no temporary files


def test_resize_skips_complete_outputs_and_redoes_broken_ones(raw_dir, tmp_path):
    video_resize.resize_folder(str(raw_dir), str(tmp_path), short_side=32, progress=False)
    kept = tmp_path / "landscape.mp4"
    mtime = kept.stat().st_mtime_ns
    broken = tmp_path / "sub" / "portrait.mp4"
    broken.write_bytes(broken.read_bytes()[:300])                 # as if a crash cut it short
    status = video_resize.resize_folder(str(raw_dir), str(tmp_path), short_side=32, progress=False)
    assert status == {"landscape.mp4": "skipped", os.path.join("sub", "portrait.mp4"): "done"}
    assert kept.stat().st_mtime_ns == mtime
    assert probe(broken)[:4] == (10, 10.0, 32, 58)


def test_unreadable_input_fails_without_leaving_output(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.mp4").write_bytes(b"not a video" * 100)
    status = video_resize.resize_folder(str(tmp_path / "in"), str(tmp_path / "out"), progress=False)
    assert status["bad.mp4"].startswith("failed")
    assert not os.path.exists(tmp_path / "out") or listing(tmp_path / "out") == []
    assert video_chunk.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "chunks"),
                             "--no-progress"]) == 1
    assert not os.path.exists(tmp_path / "chunks") or listing(tmp_path / "chunks") == []


@pytest.mark.parametrize("num_frames, fps, chunk_len, sizes", [
    (53, 10, 2.0, [20, 20, 13]),
    (100, NTSC, 1.0, [30, 30, 30, 10]),        # chunk k starts at frame ceil(k * 29.97)
    (7, 12, 600.0, [7]),
])
def test_chunk_video_cuts_frame_exact_chunks(tmp_path, num_frames, fps, chunk_len, sizes):
    write_video(tmp_path / "raw" / "vid.mp4", num_frames, fps, 32, 24)
    assert video_chunk.chunk_video(str(tmp_path / "raw" / "vid.mp4"), str(tmp_path / "out" / "vid"),
                                   chunk_len) == sizes
    assert listing(tmp_path / "out") == [os.path.join("vid", f"{k}.mp4") for k in range(len(sizes))]
    first = 0
    for k, size in enumerate(sizes):
        frames, chunk_fps, width, height, duration, codes = probe(tmp_path / "out" / "vid" / f"{k}.mp4")
        assert (frames, width, height) == (size, 32, 24)
        assert chunk_fps == pytest.approx(float(fps)) and duration == pytest.approx(size / float(fps))
        assert codes == list(range(first, first + size))
        first += size


def test_chunked_output_reads_back_across_boundaries(tmp_path):
    write_video(tmp_path / "raw" / "abc.mp4", 53, 10, 32, 24)
    assert video_chunk.chunk_folder(str(tmp_path / "raw"), str(tmp_path / "out"), 2.0, progress=False) \
        == {"abc.mp4": "done"}
    reader = ChunkedVideoReader(str(tmp_path / "out"), chunk_len=2.0, backend="pyav")
    frames = reader.read_clip("abc", 1.0, 4.6, num_frames=6).numpy()
    assert [code_of(f) for f in frames] == [12, 18, 24, 30, 36, 42]


def test_chunk_folder_resumes_and_shards(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_video(tmp_path / "raw" / f"{name}.mp4", 12, 10, 16, 16)
    out = str(tmp_path / "out")
    assert set(video_chunk.chunk_folder(str(tmp_path / "raw"), out, 1.0, shard=(1, 2), progress=False)) \
        == {"b.mp4", "d.mp4"}
    assert sorted(os.listdir(out)) == ["b", "d"]
    mtime = os.stat(os.path.join(out, "b", "0.mp4")).st_mtime_ns
    status = video_chunk.chunk_folder(str(tmp_path / "raw"), out, 1.0, workers=2, progress=False)
    assert status == {"a.mp4": "done", "b.mp4": "skipped", "c.mp4": "done", "d.mp4": "skipped"}
    assert os.stat(os.path.join(out, "b", "0.mp4")).st_mtime_ns == mtime
    assert listing(out) == sorted(os.path.join(v, f"{k}.mp4") for v in "abcd" for k in (0, 1))


def test_chunk_folder_rejects_duplicate_video_uids(tmp_path):
    write_video(tmp_path / "raw" / "x" / "same.mp4", 3, 10, 16, 16)
    write_video(tmp_path / "raw" / "y" / "same.mp4", 3, 10, 16, 16)
    with pytest.raises(ValueError, match="same"):
        video_chunk.chunk_folder(str(tmp_path / "raw"), str(tmp_path / "out"), progress=False)


def test_shards_are_disjoint_and_cover_everything():
    items = [f"v{i}" for i in range(11)]
    shards = [select_shard(items, *parse_shard(f"{i}/3")) for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(items) and all(len(s) in (3, 4) for s in shards)
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_resize_cli_runs_one_shard(raw_dir, tmp_path):
    assert video_resize.main(["--input", str(raw_dir), "--output", str(tmp_path), "--short-side", "16",
                              "--shard", "1/2", "--no-progress"]) == 0
    assert listing(tmp_path) == [os.path.join("sub", "portrait.mp4")]   # sorted inputs, every 2nd from 1


def test_both_tools_share_the_encoder_and_batch_options():
    for tool in (video_chunk, video_resize):
        args = tool.build_parser().parse_args(["--input", "x", "--output", "y", "--crf", "18", "--shard", "1/4"])
        assert (args.crf, args.preset, args.workers, args.shard, args.no_progress) == (18, "veryfast", 1, (1, 4),
                                                                                       False)


def test_cli_help_and_bad_shard():
    result = subprocess.run([sys.executable, "-m", "utils.video_chunk", "--help"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    assert "--shard INDEX/COUNT" in result.stdout and "--chunk-len" in result.stdout
    with pytest.raises(SystemExit):
        video_resize.main(["--input", "x", "--output", "y", "--shard", "2/2"])


# ---------------------------------------------------------------- preprocessing: VFR sources and colour tags
def test_resize_keeps_every_frame_of_a_vfr_source_on_its_nominal_grid(tmp_path):
    """A 30 fps capture that dropped frames (average 26.5 fps): every source frame is kept, gaps hold the frame."""
    dropped = {3, 7, 8, 20, 21, 22, 40}
    kept = [k for k in range(60) if k not in dropped]
    src, dst = tmp_path / "raw" / "phone.mp4", tmp_path / "resized" / "phone.mp4"
    os.makedirs(src.parent)
    with av.open(str(src), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 90000)
        stream.options = {"crf": "10", "bf": "2", "g": "10", "threads": "1"}
        for k in kept:
            frame = av.VideoFrame.from_ndarray(coded_frame(k, 24, 32), format="rgb24")
            frame.pts, frame.time_base = 3000 * k, Fraction(1, 90000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert video_resize.resize_video(str(src), str(dst), short_side=24, threads=1) == 60
    with av.open(str(dst)) as container:
        assert container.streams.video[0].average_rate == 30
        codes = [code_of(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert codes == [max(k for k in kept if k <= n) for n in range(60)]
    assert sorted(set(codes)) == kept


def write_flat_yuv(path, yuv, colour: ColourTags, size=(48, 64), frames=4):
    """Frames of one flat Y'CbCr colour, in a stream tagged with ``colour``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width = size
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "4", "threads": "1"}
        ctx = stream.codec_context
        ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc = (
            colour.range, colour.space, colour.primaries, colour.trc)
        for k in range(frames):
            frame = av.VideoFrame(size[1], size[0], "yuv420p")
            for plane, value in zip(frame.planes, yuv):
                plane.update(np.full(plane.buffer_size, value, np.uint8))
            frame.pts, frame.color_range, frame.colorspace = k, colour.range, colour.space
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def decoded_rgb(path) -> tuple[ColourTags, np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return ColourTags.of(stream), next(container.decode(stream)).to_ndarray(format="rgb24")[4:-4, 4:-4]


def true_rgb(yuv, colour: ColourTags) -> np.ndarray:
    """RGB of a Y'CbCr triple by the standard equations for the tags' matrix (BT.709 or BT.601) and range."""
    kr, kb = (0.2126, 0.0722) if colour.space == 1 else (0.299, 0.114)
    y, cb, cr = (float(v) for v in yuv)
    if colour.range == 2:
        y, cb, cr = y, cb - 128, cr - 128
    else:
        y, cb, cr = (y - 16) * 255 / 219, (cb - 128) * 255 / 224, (cr - 128) * 255 / 224
    r, b = y + 2 * (1 - kr) * cr, y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.array([r, g, b]), 0, 255)


@pytest.mark.parametrize("colour", [ColourTags(range=2, space=1, primaries=1, trc=1),   # BT.709 full range
                                    ColourTags(range=1, space=1, primaries=1, trc=1),   # BT.709 limited range
                                    ColourTags(range=2, space=5, primaries=5, trc=6)])  # BT.601 full range
def test_resize_and_chunking_keep_colour_tags_and_colours(tmp_path, colour):
    src = tmp_path / "raw" / "v.mp4"
    write_flat_yuv(src, (110, 190, 165), colour)
    expected_rgb = true_rgb((110, 190, 165), colour)
    tags, rgb = decoded_rgb(src)
    assert tags == colour and np.abs(rgb.astype(int) - expected_rgb).max() <= 2
    resized = tmp_path / "resized" / "v.mp4"
    video_resize.resize_video(str(src), str(resized), short_side=24, threads=1)
    video_chunk.chunk_video(str(resized), str(tmp_path / "chunks" / "v"), chunk_len=0.2, threads=1)
    for path in (resized, tmp_path / "chunks" / "v" / "1.mp4"):
        tags, out = decoded_rgb(path)
        assert tags == colour
        assert np.abs(out.astype(int) - expected_rgb).max() <= 3, path
    for backend in ("decord", "pyav"):
        frames = ChunkedVideoReader(str(tmp_path / "chunks"), chunk_len=0.2, backend=backend).read_frames("v", [0.25])
        assert np.abs(frames[0, 4:-4, 4:-4].numpy().astype(int) - expected_rgb).max() <= 3, backend
