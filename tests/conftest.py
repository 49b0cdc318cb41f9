"""Fixtures shared by the test modules."""
import pytest

from utils.synthetic import generate


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A tiny synthetic EgoClip/EgoMCQ set (4 training videos, 5 MCQ videos, 32 px, 8 fps)."""
    root = tmp_path_factory.mktemp("tiny_synthetic")
    generate(str(root), seed=1, num_videos=4, num_mcq_videos=5, clips_per_video=(5, 6), chunk_len=6.0, fps=8,
             frame_size=32, clip_duration=(1.0, 2.0))
    return root
