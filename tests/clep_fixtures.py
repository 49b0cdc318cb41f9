"""A small synthetic CLEP set, raw and preprocessed, shared by the CLEP test modules."""
from pathlib import Path

import pytest

from data_loader.clep_preprocess import preprocess
from model.sentence_encoders import HashTextEncoder
from utils.synthetic_clep import SyntheticCLEPConfig, generate, preprocess_inputs

SMALL = SyntheticCLEPConfig(num_concepts=10, num_videos=14, num_val_videos=2, k400_clips_per_class=3,
                            charades_clips=16, seed=3)


class CountingEncoder(HashTextEncoder):
    """The hash encoder, counting texts; ``fail_after`` calls it raises (an interrupted run)."""

    def __init__(self, dim, fail_after=None):
        super().__init__(dim)
        self.calls, self.texts, self.fail_after = 0, 0, fail_after

    def encode(self, texts):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.calls += 1
        self.texts += len(texts)
        return super().encode(texts)


@pytest.fixture(scope="session")
def clep_raw(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("clep_raw"), SMALL)


@pytest.fixture(scope="session")
def clep_processed(clep_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clep_processed")
    preprocess(out, encoder=HashTextEncoder(SMALL.text_dim), batch_size=64, **preprocess_inputs(clep_raw))
    return out
