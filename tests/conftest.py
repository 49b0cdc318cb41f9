"""Synthetic data sets shared by the test modules (generated once per session, read-only)."""
import pytest

from utils.synthetic import generate


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """Root (Path) of a tiny synthetic EgoClip/EgoMCQ set: 4 training videos, 5 MCQ videos, 32 px, 8 fps,
    6 s chunks, clips of 1-2 s (8-16 frames)."""
    root = tmp_path_factory.mktemp("tiny_synthetic")
    generate(str(root), seed=1, num_videos=4, num_mcq_videos=5, clips_per_video=(5, 6), chunk_len=6.0, fps=8,
             frame_size=32, clip_duration=(1.0, 2.0))
    return root


@pytest.fixture(scope="session")
def synthetic(tiny_synthetic):
    """``tiny_synthetic`` under the name the tests of tests/test_trainer.py take."""
    return tiny_synthetic


@pytest.fixture(scope="session")
def long_clip_synthetic(tmp_path_factory):
    """A small synthetic EgoClip/EgoMCQ set whose every clip holds at least 16 frames: 3 training videos,
    5 MCQ videos, 32 px, 10 fps, clips of 1.6-4 s, ``chunk_len`` 5 s.

    A dict: ``root`` (Path), ``data_dir`` and ``meta_dir`` (str), ``chunk_len`` (seconds).
    """
    root = tmp_path_factory.mktemp("long_clip_synthetic")
    chunk_len = 5.0
    generate(str(root), seed=0, num_videos=3, num_mcq_videos=5, clips_per_video=(4, 5), chunk_len=chunk_len, fps=10,
             frame_size=32, clip_duration=(1.6, 4.0))
    return {"data_dir": str(root / "videos"), "meta_dir": str(root / "meta"), "root": root, "chunk_len": chunk_len}


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny models gain nothing from two, and on a loaded 2-core machine two
    threads make small matrix products many times slower."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
