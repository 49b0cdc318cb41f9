"""data_loader.feature_store: the row rule for time windows, both backends, resumable writing, fork safety."""
import json
import pickle

import numpy as np
import pytest
import torch

from data_loader.feature_store import (FeatureStoreKeyError, FolderFeatureStore, H5FeatureStore, H5FeatureWriter,
                                       feature_slice, open_feature_store, write_feature_store)


@pytest.mark.parametrize("t1, t2, num_rows, expected", [
    (0.0, 4.0, 100, (0, 8)),        # narration at 2 s, half-width 2 s, 1.875 rows/s
    (1.184, 1.384, 100, (2, 3)),    # a 0.2 s window inside one row
    (50.0, 60.0, 10, (9, 10)),      # past the end: the last row
    (-3.0, 0.1, 10, (0, 1)),        # before the start: the first row
])
def test_feature_slice_rows(t1, t2, num_rows, expected):
    assert feature_slice(t1, t2, 1.875, num_rows) == expected


def test_feature_slice_rejects_empty_arrays():
    with pytest.raises(ValueError, match="no rows"):
        feature_slice(0, 1, 1.875, 0)


def _arrays():
    rng = np.random.default_rng(0)
    return {"video_a": rng.standard_normal((7, 3)).astype(np.float32),
            "video_b": np.arange(12, dtype=np.float64).reshape(4, 3)}


def test_hdf5_round_trip_and_row_reads(tmp_path):
    arrays = _arrays()
    store = write_feature_store(arrays.items(), tmp_path / "features.hdf5")
    assert store.keys() == ["video_a", "video_b"]
    assert json.loads((tmp_path / "features.hdf5.keys.json").read_text()) == ["video_a", "video_b"]
    np.testing.assert_array_equal(store["video_a"], arrays["video_a"])
    assert store.read("video_b", 1, 3).dtype == np.float32
    np.testing.assert_array_equal(store.read("video_b", 1, 3), arrays["video_b"][1:3])
    assert store.num_rows("video_a") == 7
    with pytest.raises(FeatureStoreKeyError, match="features.hdf5 has no key 'video_c'"):
        store.read("video_c")


def test_hdf5_writer_resumes_and_drops_half_written_keys(tmp_path):
    import h5py
    path = tmp_path / "features.hdf5"
    with H5FeatureWriter(path) as out:
        out.write("done", np.ones((2, 3)))
    with h5py.File(path, "a") as raw:                       # what a kill between create and mark leaves
        raw.create_dataset("half", data=np.zeros((1, 3)))
    with H5FeatureWriter(path) as out:
        assert "done" in out and "half" not in out
        out.write("half", np.full((2, 3), 5.0))
        with pytest.raises(KeyError, match="already holds 'done'"):
            out.write("done", np.ones((2, 3)))
    store = H5FeatureStore(path)
    assert store.keys() == ["done", "half"]
    np.testing.assert_array_equal(store["half"], np.full((2, 3), 5.0, dtype=np.float32))


def test_hdf5_store_pickles_without_its_handle(tmp_path):
    store = write_feature_store(_arrays().items(), tmp_path / "f.h5")
    store.read("video_a")                                    # opens the file in this process
    clone = pickle.loads(pickle.dumps(store))                # what a spawned DataLoader worker receives
    assert clone._file is None
    np.testing.assert_array_equal(clone["video_b"], store["video_b"])


def test_hdf5_store_in_forked_workers(tmp_path):
    arrays = _arrays()
    store = write_feature_store(arrays.items(), tmp_path / "f.h5")
    store.read("video_a")                                    # a handle opened before the fork
    loader = torch.utils.data.DataLoader(["video_a", "video_b"] * 4, batch_size=None, num_workers=2,
                                         collate_fn=lambda key: store.read(key).sum(),
                                         multiprocessing_context="fork")
    sums = [float(s) for s in loader]
    assert sums == pytest.approx([arrays["video_a"].sum(), arrays["video_b"].sum()] * 4, rel=1e-6)


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_folder_store(tmp_path, suffix):
    arrays = _arrays()
    for key, array in arrays.items():
        if suffix == ".pt":
            torch.save(torch.from_numpy(array), tmp_path / f"{key}.pt")
        else:
            np.save(tmp_path / f"{key}.npy", array)
    (tmp_path / "notes.txt").write_text("not a feature file")
    store = open_feature_store(tmp_path, suffix)
    assert isinstance(store, FolderFeatureStore) and store.keys() == ["video_a", "video_b"]
    np.testing.assert_array_equal(store.read("video_b", 2), arrays["video_b"][2:].astype(np.float32))
    assert store.num_rows("video_a") == 7
    with pytest.raises(FeatureStoreKeyError, match=f"no file 'missing{suffix}'"):
        store.read("missing")


def test_folder_store_names_a_bad_file(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "flat.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    store = FolderFeatureStore(tmp_path)
    with pytest.raises(ValueError, match=r"flat.pt: features must be \[T, D\], got shape \(3,\)"):
        store.read("flat")
    with pytest.raises(ValueError, match="cannot read features from .*broken.pt"):
        store.read("broken")


def test_open_missing_store_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.hdf5 does not exist"):
        open_feature_store(tmp_path / "nowhere.hdf5")
    with pytest.raises(FileNotFoundError, match="feature folder .*nowhere does not exist"):
        open_feature_store(tmp_path / "nowhere")
