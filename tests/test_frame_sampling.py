"""Frame sampling (EgoVLP segments, nested multi-scale) and the seconds <-> frame / chunk arithmetic."""
from fractions import Fraction

import numpy as np
import pytest

from data_loader.frame_sampling import sample_frame_indices, sample_multiscale_indices
from utils.egoclip_format import (chunk_index, chunk_of_frame, first_frame_of_chunk, seconds_to_frame_range,
                                  time_to_frame)

NTSC = float(Fraction(30000, 1001))


@pytest.mark.parametrize("num_frames, start, end, expected", [
    (4, 0, 16, [1, 5, 9, 13]),                       # segments [0,4) [4,8) ...: middles
    (8, 44, 75, [45, 48, 52, 56, 60, 64, 68, 72]),    # floor(linspace) boundaries, uneven segments
    (4, 10, 12, [10, 10, 11, 11]),                   # fewer frames than segments: frames repeat
    (3, 5, 6, [5, 5, 5]),                            # one-frame clip
    (1, 0, 10, [4]),
])
def test_uniform_takes_segment_middles(num_frames, start, end, expected):
    assert sample_frame_indices(num_frames, start, end, "uniform") == expected


def test_rand_covers_every_frame_of_each_segment_including_the_last():
    rng = np.random.default_rng(0)
    draws = np.array([sample_frame_indices(4, 0, 16, "rand", rng) for _ in range(400)])
    for segment in range(4):
        assert set(draws[:, segment].tolist()) == set(range(4 * segment, 4 * segment + 4))


@pytest.mark.parametrize("num_frames, start, end", [(8, 0, 8), (16, 0, 5), (4, 7, 8), (16, 3, 19)])
def test_rand_never_fails_on_one_frame_segments(num_frames, start, end):
    rng = np.random.default_rng(1)
    for _ in range(50):
        indices = sample_frame_indices(num_frames, start, end, "rand", rng)
        assert len(indices) == num_frames
        assert all(start <= i < end for i in indices)
        assert indices == sorted(indices)
    if end - start == num_frames:
        assert indices == list(range(start, end))


def test_rand_is_reproducible_with_a_seeded_generator():
    a = sample_frame_indices(16, 0, 1000, "rand", np.random.default_rng(7))
    b = sample_frame_indices(16, 0, 1000, "rand", np.random.default_rng(7))
    c = sample_frame_indices(16, 0, 1000, "rand", np.random.default_rng(8))
    assert a == b and a != c


def test_nested_uniform_exact_indices_and_subsets():
    indices = sample_multiscale_indices((4, 8, 16), 0, 160, "uniform")
    fine = list(range(4, 160, 10))
    assert indices[16] == fine
    assert indices[8] == fine[1::2] == [14, 34, 54, 74, 94, 114, 134, 154]
    assert indices[4] == fine[2::4] == [24, 64, 104, 144]
    assert list(indices) == [4, 8, 16]


def test_nested_rand_coarse_scales_pick_one_fine_index_per_group():
    rng = np.random.default_rng(3)
    for _ in range(100):
        indices = sample_multiscale_indices([16, 4, 8], 20, 95, "rand", rng)
        fine = indices[16]
        assert fine == sorted(fine) and all(20 <= i < 95 for i in fine)
        for scale in (4, 8):
            group = 16 // scale
            assert len(indices[scale]) == scale
            assert all(indices[scale][j] in fine[j * group:(j + 1) * group] for j in range(scale))


def test_nested_finest_scale_equals_plain_sampling():
    plain = sample_frame_indices(16, 5, 300, "rand", np.random.default_rng(11))
    nested = sample_multiscale_indices((4, 8, 16), 5, 300, "rand", np.random.default_rng(11))
    assert nested[16] == plain


@pytest.mark.parametrize("call", [
    lambda: sample_frame_indices(4, 0, 10, "middle"),
    lambda: sample_frame_indices(4, 5, 5, "uniform"),
    lambda: sample_frame_indices(0, 0, 10, "uniform"),
    lambda: sample_multiscale_indices((), 0, 10, "uniform"),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("start, end, fps, expected", [
    (1.5, 2.5, NTSC, (44, 75)),
    (0.3, 0.7, 10, (3, 7)),       # 0.3 * 10 is 2.999... in floating point
    (-0.4, 0.25, 10, (0, 3)),
    (2.0, 2.0, 10, (20, 21)),     # empty window: one frame
    (0.05, 0.11, 10, (0, 2)),
])
def test_seconds_to_frame_range(start, end, fps, expected):
    assert seconds_to_frame_range(start, end, fps) == expected


def test_time_to_frame_is_exact_on_frame_boundaries():
    assert [time_to_frame(i / 30, 30) for i in range(300)] == list(range(300))
    assert time_to_frame(2.0, NTSC) == 59          # frame 59 shows until 2.0020 s
    assert time_to_frame(2.0021, NTSC) == 60


def test_chunk_arithmetic_is_consistent():
    assert chunk_index(599.9999, 600) == 0 and chunk_index(600.0, 600) == 1
    assert first_frame_of_chunk(1, NTSC, 2.0) == 60 and first_frame_of_chunk(1, 10, 2.0) == 20
    assert [chunk_of_frame(g, NTSC, 2.0) for g in (59, 60, 119, 120)] == [0, 1, 1, 2]
    for fps, chunk_len in [(NTSC, 2.0), (10, 2.0), (30, 600.0), (12, 0.5), (25, 3.3)]:
        for frame in range(0, 2000, 7):
            chunk = chunk_of_frame(frame, fps, chunk_len)
            first, next_first = (first_frame_of_chunk(c, fps, chunk_len) for c in (chunk, chunk + 1))
            assert first <= frame < next_first
