"""Preprocessing for CLEP training on precomputed video features (``run/preprocess_clep.py``).

Inputs: Ego4D's ``narration.json`` and ``ego4d.json``, a folder of ``<video_uid>.pt`` feature files (float
``[T, D]``, e.g. Omnivore Swin-L, 1.875 rows/s), a text encoder, and optionally Kinetics-400-style and
Charades-Ego-style labelled feature sets. Output folder:

* ``narrations.csv`` — one row per kept narration (``video_uid, narration_pass, timestamp_sec,
  narration_text``), both passes; each video's rows together, sorted by time;
* ``video_features.hdf5`` — one float32 ``[T, D]`` dataset per video (``H5FeatureStore``);
* ``narration_text.hdf5`` / ``narration_text_no_tag.hdf5`` — per video ``[n, E]``: the embeddings of its
  narrations in table order, with ``#C``/``#O``/``#unsure`` substituted by words / stripped;
* ``k400/`` and ``charades/`` — ``features.hdf5``, ``labels.csv`` (``key, labels`` = ';'-separated class ids,
  ``ego``) and ``classes.pt`` (``{'names': [C], 'prompts': {prompt name: [C, E] tensor}}``);
* ``preprocess_report.json`` — what was kept and what was skipped, with counts.

Every stage streams (``narration.json`` member by member, the table in chunks) and resumes: the table is
written once, and the HDF5 writers skip the videos they already hold, so a rerun continues where an
interrupted one stopped.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from data_loader.feature_store import FolderFeatureStore, H5FeatureWriter
from utils.charades_meta import read_charades_csv, read_classes
from utils.json_stream import iter_object_members
from utils.text import normalize_narration

logger = logging.getLogger(__name__)

NARRATION_COLUMNS = ["video_uid", "narration_pass", "timestamp_sec", "narration_text"]
PASSES = ("narration_pass_1", "narration_pass_2")
SPLIT_KEYS = ("split_em", "split_fho", "split_av")
K400_PROMPTS = {"name": "{}", "person_doing": "The person in this video is doing {}"}
CHARADES_PROMPTS = {"name": "{}", "camera_wearer": "Camera wearer is {}", "person": "The person in this video is {}"}


@dataclass
class NarrationFilter:
    """Ego4D CLEP's filters: videos in an excluded split of any benchmark, narrations under ``min_words``."""

    min_words: int = 5
    excluded_splits: tuple[str, ...] = ("val", "test")


def excluded_videos(ego4d_json: str | os.PathLike, splits) -> set[str]:
    """Uids of ``ego4d.json`` videos whose ``split_em``, ``split_fho`` or ``split_av`` is in ``splits``."""
    videos = json.loads(Path(ego4d_json).read_text()).get("videos")
    if not isinstance(videos, list):
        raise ValueError(f"{ego4d_json}: expected a 'videos' list")
    excluded = set()
    for i, video in enumerate(videos):
        if "video_uid" not in video:
            raise ValueError(f"{ego4d_json}: videos[{i}] has no 'video_uid'")
        if any(video.get(key) in splits for key in SPLIT_KEYS):
            excluded.add(video["video_uid"])
    return excluded


def video_narrations(path, uid: str, entry) -> list[tuple[str, float, str]]:
    """``(pass, timestamp_sec, text)`` of both passes of one ``narration.json`` member, sorted by time;
    ValueError naming the file, the video and the narration when an entry is malformed."""
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: '{uid}' must map to an object with narration passes")
    rows = []
    for name in PASSES:
        narrations = (entry.get(name) or {}).get("narrations", [])
        for i, item in enumerate(narrations):
            where = f"{path}: '{uid}'.{name}.narrations[{i}]"
            if not isinstance(item, dict) or "timestamp_sec" not in item or "narration_text" not in item:
                raise ValueError(f"{where} needs 'timestamp_sec' and 'narration_text', got {item!r:.200}")
            ts, text = item["timestamp_sec"], item["narration_text"]
            if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
                raise ValueError(f"{where}: 'timestamp_sec' must be a finite number, got {ts!r}")
            if not isinstance(text, str):
                raise ValueError(f"{where}: 'narration_text' must be a string, got {text!r:.100}")
            rows.append((name, float(ts), text))
    return sorted(rows, key=lambda row: row[1])


def write_narration_table(narration_json, ego4d_json, feature_dir, out_csv, rules: NarrationFilter,
                          skip_missing_features: bool = False) -> dict:
    """Stream ``narration.json`` into ``out_csv`` (kept narrations, each video's rows together and sorted by
    time) and return the counts.

    A video with narrations but no ``<uid>.pt`` in ``feature_dir`` fails the stage, naming the files,
    unless ``skip_missing_features`` (then it is dropped and counted)."""
    excluded = excluded_videos(ego4d_json, rules.excluded_splits) if ego4d_json else set()
    features = FolderFeatureStore(feature_dir)
    counts = {"videos_kept": 0, "narrations_kept": 0, "videos_excluded_split": 0, "videos_without_narrations": 0,
              "videos_missing_features": 0, "narrations_short": 0}
    missing = []
    tmp = Path(f"{out_csv}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(NARRATION_COLUMNS)
        for uid, entry in tqdm(iter_object_members(narration_json), desc="narration.json", unit=" videos"):
            rows = video_narrations(narration_json, uid, entry)
            if uid in excluded:
                counts["videos_excluded_split"] += 1
                continue
            kept = [row for row in rows if len(row[2].split()) >= rules.min_words]
            counts["narrations_short"] += len(rows) - len(kept)
            if not kept:
                counts["videos_without_narrations"] += 1
                continue
            if uid not in features:
                counts["videos_missing_features"] += 1
                missing.append(str(Path(feature_dir) / f"{uid}.pt"))
                continue
            writer.writerows([uid, *row] for row in kept)
            counts["videos_kept"] += 1
            counts["narrations_kept"] += len(kept)
    if missing and not skip_missing_features:
        tmp.unlink()
        raise FileNotFoundError(f"{narration_json}: {len(missing)} narrated video(s) have no feature file, e.g. "
                                f"{', '.join(missing[:5])} (pass --skip-missing-features to drop them)")
    os.replace(tmp, out_csv)
    return counts


def iter_video_groups(table_csv, chunksize: int = 100_000):
    """``(uid, DataFrame of its rows)`` from the table (each video's rows together), read in chunks."""
    pending, seen = None, set()
    for chunk in pd.read_csv(table_csv, chunksize=chunksize, keep_default_na=False,
                             dtype={"video_uid": str, "narration_pass": str, "narration_text": str}):
        if pending is not None:
            chunk = pd.concat([pending, chunk])
        uids = chunk["video_uid"].to_numpy()
        starts = np.flatnonzero(np.r_[True, uids[1:] != uids[:-1]])
        for begin, end in zip(starts[:-1], starts[1:]):
            uid = uids[begin]
            if uid in seen:
                raise ValueError(f"{table_csv}: the rows of '{uid}' are not together")
            seen.add(uid)
            yield uid, chunk.iloc[begin:end]
        pending = chunk.iloc[starts[-1]:]
    if pending is not None and len(pending):
        yield pending["video_uid"].iloc[0], pending


def copy_video_features(table_csv, feature_dir, out_h5, expected_dim: int | None = None) -> int:
    """Copy the features of the table's videos into ``out_h5`` (resumable); returns their width D.

    A file that is not a [T, D] tensor, or whose D differs from the first video's (or ``expected_dim``),
    fails naming the file."""
    store = FolderFeatureStore(feature_dir)
    uids = list(dict.fromkeys(uid for chunk in pd.read_csv(table_csv, usecols=["video_uid"], dtype=str,
                                                           chunksize=500_000) for uid in chunk["video_uid"].unique()))
    dim = expected_dim
    with H5FeatureWriter(out_h5) as out:
        for uid in tqdm(uids, desc="video features", unit=" videos"):
            if uid in out:
                dim = dim or int(_h5_width(out_h5, uid))
                continue
            features = store.read(uid)
            dim = _check_width(features, dim, Path(feature_dir) / f"{uid}.pt")
            out.write(uid, features)
    return dim


def _h5_width(path, key) -> int:
    import h5py
    with h5py.File(path, "r") as f:
        return f[key].shape[1]


def _check_width(features: np.ndarray, dim: int | None, path) -> int:
    if len(features) == 0:
        raise ValueError(f"{path}: the feature array has no rows")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(f"{path}: features are {features.shape[1]}-d, expected {dim}-d like the other videos")
    return features.shape[1]


def encode_narrations(table_csv, encoder, out_dir, batch_size: int = 1024) -> None:
    """Write both embeddings of every narration of the table (resumable per video; ``batch_size`` texts per
    encoder call). Empty text after tag removal fails naming the video and time."""
    out_dir = Path(out_dir)
    total = sum(1 for _ in open(table_csv, "rb")) - 1
    with H5FeatureWriter(out_dir / "narration_text.hdf5") as tagged, \
            H5FeatureWriter(out_dir / "narration_text_no_tag.hdf5") as untagged, \
            tqdm(total=total, desc="narration embeddings", unit=" narrations") as bar:
        pending: list[tuple[str, list[str], list[str]]] = []

        def flush():
            texts = [t for _, subs, strips in pending for t in subs + strips]
            vectors = encoder.encode(texts)
            start = 0
            for uid, subs, _ in pending:
                n = len(subs)
                for writer, block in ((tagged, vectors[start:start + n]), (untagged, vectors[start + n:start + 2 * n])):
                    if uid not in writer:  # an interrupted run may have written one of the two
                        writer.write(uid, block)
                start += 2 * n
                bar.update(n)
            pending.clear()

        for uid, rows in iter_video_groups(table_csv):
            if uid in tagged and uid in untagged:
                bar.update(len(rows))
                continue
            texts = rows["narration_text"].tolist()
            stripped = [normalize_narration(t, "strip") for t in texts]
            for text, ts in zip(stripped, rows["timestamp_sec"]):
                if not text:
                    raise ValueError(f"{table_csv}: narration of '{uid}' at {ts} s is empty once tags are removed")
            pending.append((uid, [normalize_narration(t, "substitute") for t in texts], stripped))
            if sum(len(p[1]) for p in pending) >= batch_size:
                flush()
        if pending:
            flush()


def clean_label(name: str) -> str:
    """A class name as prompt text: quotes removed, underscores as spaces, whitespace collapsed."""
    return " ".join(name.replace('"', "").replace("'", "").replace("_", " ").split())


def _write_labelled_set(out: Path, items, classes: list[str], prompts: dict, feature_dir, encoder,
                        expected_dim: int | None) -> dict:
    """``items``: (key, class ids, ego). Features of missing keys are skipped and counted."""
    out.mkdir(parents=True, exist_ok=True)
    store = FolderFeatureStore(feature_dir)
    kept, missing = [], []
    with H5FeatureWriter(out / "features.hdf5") as writer:
        for key, labels, ego in tqdm(items, desc=out.name, unit=" videos"):
            if key not in store:
                missing.append(key)
                continue
            if key not in writer:
                features = store.read(key)
                expected_dim = _check_width(features, expected_dim, Path(feature_dir) / f"{key}.pt")
                writer.write(key, features)
            kept.append((key, ";".join(str(c) for c in labels), int(ego)))
    if missing:
        logger.warning("%s: %d labelled videos have no feature file in %s and are skipped, e.g. %s", out.name,
                       len(missing), feature_dir, ", ".join(missing[:3]))
    pd.DataFrame(kept, columns=["key", "labels", "ego"]).to_csv(out / "labels.csv", index=False)
    embeddings = {name: torch.from_numpy(encoder.encode([template.format(c) for c in classes]))
                  for name, template in prompts.items()}
    torch.save({"names": classes, "prompts": embeddings}, out / "classes.pt")
    return {"videos_kept": len(kept), "videos_missing_features": len(missing), "classes": len(classes)}


def k400_key(row) -> str:
    """A Kinetics clip's feature key: the ``key`` column, else ``<youtube_id>_<time_start:06d>_<time_end:06d>``."""
    if "key" in row and isinstance(row["key"], str):
        return row["key"]
    return f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"


def preprocess_k400(labels_csv, feature_dir, out: Path, encoder, expected_dim=None) -> dict:
    table = pd.read_csv(labels_csv)
    if "label" not in table:
        raise ValueError(f"{labels_csv}: needs a 'label' column")
    names = table["label"].astype(str).map(clean_label)
    classes = sorted(names.unique())
    index = {name: i for i, name in enumerate(classes)}
    items = [(k400_key(row), [index[name]], False) for (_, row), name in zip(table.iterrows(), names)]
    return _write_labelled_set(out, items, classes, K400_PROMPTS, feature_dir, encoder, expected_dim)


def preprocess_charades(test_csv, classes_txt, feature_dir, out: Path, encoder, expected_dim=None) -> dict:
    """Charades-Ego videos (``id``, ``actions`` of ``CharadesEgo_v1_test.csv``; ids ending in ``EGO`` are
    egocentric) with the class names of ``Charades_v1_classes.txt``, cleaned like the Kinetics labels."""
    classes = [clean_label(name) for name in read_classes(str(classes_txt))]
    table = read_charades_csv(str(test_csv), len(classes))
    items = [(video, sorted({cls for cls, _, _ in actions}), video.endswith("EGO"))
             for video, actions in zip(table["id"], table["action_list"])]
    return _write_labelled_set(out, items, classes, CHARADES_PROMPTS, feature_dir, encoder, expected_dim)


def preprocess(out_dir, narration_json, feature_dir, encoder, ego4d_json=None, rules: NarrationFilter | None = None,
               skip_missing_features: bool = False, batch_size: int = 1024, k400: dict | None = None,
               charades: dict | None = None) -> dict:
    """Every stage into ``out_dir``; returns (and writes to ``preprocess_report.json``) the counts.

    ``k400``: ``{'labels_csv', 'feature_dir'}``; ``charades``: ``{'test_csv', 'classes_txt', 'feature_dir'}``.
    A rerun skips the finished stages and videos."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_path, table = out / "preprocess_report.json", out / "narrations.csv"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if not table.is_file():
        report["narrations"] = write_narration_table(narration_json, ego4d_json, feature_dir, table,
                                                     rules or NarrationFilter(), skip_missing_features)
        report_path.write_text(json.dumps(report, indent=1))
    logger.info("narrations: %s", report.get("narrations"))
    dim = copy_video_features(table, feature_dir, out / "video_features.hdf5")
    encode_narrations(table, encoder, out, batch_size)
    report.update(feature_dim=dim, text_dim=int(encoder.dim))
    if k400:
        report["k400"] = preprocess_k400(k400["labels_csv"], k400["feature_dir"], out / "k400", encoder, dim)
    if charades:
        report["charades"] = preprocess_charades(charades["test_csv"], charades["classes_txt"],
                                                 charades["feature_dir"], out / "charades", encoder, dim)
    report_path.write_text(json.dumps(report, indent=1))
    return report
