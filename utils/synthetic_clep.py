"""A synthetic Ego4D-CLEP set in the real file formats, with a known answer.

K latent concepts ("cut onion", "wash cup", ...). Concept k's text vector ``c_k`` is the hash-encoder
embedding of its words (:class:`model.sentence_encoders.HashTextEncoder`, the encoder the preprocessing uses for
this set); its visual vector is ``A·c_k`` for a fixed random matrix ``A`` [video_dim, text_dim] that the model
never sees. Each video is a timeline of concept segments; its feature rows, at 1.875 rows/s (Omnivore's
30 fps / stride 16), are the active concept's visual vector plus Gaussian noise. Narrations sit at segment
mid-points and say the concept's words among filler words (``"#C C cut the onion near the ..."``), so a model
that maps narration embeddings onto features through ``A`` classifies unseen label prompts zero-shot.

Written under ``out_dir``:

* ``narration.json`` (both passes), ``ego4d.json`` (a few videos in the val split, which preprocessing drops),
  ``features/<video_uid>.pt`` (float32 [T, video_dim]);
* ``k400/`` — one concept per clip: ``features/<key>.pt`` and a Kinetics-style ``labels.csv``
  (label, youtube_id, time_start, time_end, split; key ``<youtube_id>_<start:06d>_<end:06d>``);
* ``charades/`` — clips with several concepts: ``features/<id>.pt``, ``CharadesEgo_v1_test.csv`` (``id``,
  ``actions`` = ``"c003 1.0 5.3;c007 5.3 9.0"``; ids ending in ``EGO`` are egocentric) and
  ``Charades_v1_classes.txt`` (``c003 <name>`` lines).

    python -m utils.synthetic_clep --out data/synthetic_clep [--concepts 10 --videos 40]
"""
from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.sentence_encoders import HashTextEncoder

FEATURES_PER_SECOND = 1.875
VERBS = ["cut", "wash", "open", "stir", "pour", "fold", "carry", "peel", "wipe", "press", "lift", "sweep"]
NOUNS = ["onion", "cup", "door", "soup", "water", "shirt", "box", "apple", "table", "button", "bucket", "floor"]
FILLER = ["near", "the", "with", "left", "right", "hand", "slowly", "again", "on", "kitchen", "small", "big",
          "a", "from", "into", "then", "over", "some", "other", "counter"]


@dataclass
class SyntheticCLEPConfig:
    """Sizes and noise of the set. ``text_dim`` must equal the hash encoder's dim used to preprocess it."""

    num_concepts: int = 10
    num_videos: int = 40
    num_val_videos: int = 4           # marked split_em='val' in ego4d.json: dropped by preprocessing
    segments_per_video: tuple[int, int] = (8, 14)
    segment_seconds: tuple[float, float] = (4.0, 10.0)
    narrations_per_segment: int = 2   # pass 1 at the mid-point, pass 2 just after it
    text_dim: int = 64
    video_dim: int = 96
    feature_noise: float = 0.3
    k400_clips_per_class: int = 6
    charades_clips: int = 40
    seed: int = 0


def concept_names(num_concepts: int) -> list[str]:
    if not 1 <= num_concepts <= len(VERBS):
        raise ValueError(f"num_concepts must be in 1..{len(VERBS)}, got {num_concepts}")
    return [f"{VERBS[k]} {NOUNS[k]}" for k in range(num_concepts)]


class _Generator:
    def __init__(self, config: SyntheticCLEPConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.names = concept_names(config.num_concepts)
        text = HashTextEncoder(config.text_dim).encode(self.names).astype(np.float64)    # c_k [K, text_dim]
        mixing = self.rng.standard_normal((config.video_dim, config.text_dim)) / np.sqrt(config.text_dim)
        self.visual = text @ mixing.T                                                    # A·c_k [K, video_dim]
        self.visual /= np.linalg.norm(self.visual, axis=1, keepdims=True)

    def timeline(self, num_segments: int) -> list[tuple[int, float, float]]:
        """(concept, start s, end s) segments, back to back from 0."""
        low, high = self.config.segment_seconds
        segments, start = [], 0.0
        for _ in range(num_segments):
            end = start + float(self.rng.uniform(low, high))
            segments.append((int(self.rng.integers(self.config.num_concepts)), start, end))
            start = end
        return segments

    def features(self, segments) -> torch.Tensor:
        """Rows at 1.875/s: row r is the visual vector of the concept active at r / 1.875 s, plus noise."""
        num_rows = int(np.ceil(segments[-1][2] * FEATURES_PER_SECOND))
        rows = np.zeros((num_rows, self.config.video_dim))
        for r in range(num_rows):
            t = r / FEATURES_PER_SECOND
            concept = next((c for c, s, e in segments if s <= t < e), segments[-1][0])
            rows[r] = self.visual[concept]
        rows += self.config.feature_noise * self.rng.standard_normal(rows.shape) / np.sqrt(self.config.video_dim)
        return torch.from_numpy(rows.astype(np.float32))

    def narration(self, concept: int) -> str:
        verb, noun = self.names[concept].split()
        filler = " ".join(self.rng.choice(FILLER, size=int(self.rng.integers(2, 5))))
        subject = "#C C" if self.rng.random() < 0.8 else "#O The man"
        return f"{subject} {verb} the {noun} {filler}"


def _write_video_set(gen: _Generator, out: Path) -> tuple[dict, list]:
    cfg = gen.config
    narrations, videos = {}, []
    (out / "features").mkdir(parents=True, exist_ok=True)
    for v in range(cfg.num_videos):
        uid = f"{v:08d}-clep-synthetic"
        segments = gen.timeline(int(gen.rng.integers(cfg.segments_per_video[0], cfg.segments_per_video[1] + 1)))
        torch.save(gen.features(segments), out / "features" / f"{uid}.pt")
        passes = {"narration_pass_1": [], "narration_pass_2": []}
        for concept, start, end in segments:
            for n in range(cfg.narrations_per_segment):
                mid = (start + end) / 2 + n * 0.25 * (end - start) / cfg.narrations_per_segment
                key = f"narration_pass_{1 + n % 2}"
                passes[key].append({"timestamp_sec": round(mid, 4), "timestamp_frame": int(mid * 30),
                                    "narration_text": gen.narration(concept), "annotation_uid": f"{uid}-{key}"})
        narrations[uid] = {key: {"narrations": items, "summaries": []} for key, items in passes.items()}
        split = "val" if v < cfg.num_val_videos else "train"
        videos.append({"video_uid": uid, "duration_sec": segments[-1][2], "split_em": split,
                       "split_fho": "train" if split == "train" else None, "split_av": None})
    return narrations, videos


def _write_k400(gen: _Generator, out: Path) -> None:
    (out / "features").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, name in enumerate(gen.names):
        for i in range(gen.config.k400_clips_per_class):
            youtube_id, start = f"yt{k:02d}x{i:03d}", int(gen.rng.integers(0, 300))
            segments = [(k, 0.0, float(gen.rng.uniform(6.0, 10.0)))]
            torch.save(gen.features(segments), out / "features" / f"{youtube_id}_{start:06d}_{start + 10:06d}.pt")
            label = name.replace(" ", "_") if i % 2 else f'"{name}"'  # Kinetics-style underscores and quotes
            rows.append([label, youtube_id, start, start + 10, "val"])
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["label", "youtube_id", "time_start", "time_end", "split"], *rows])


def _write_charades(gen: _Generator, out: Path) -> None:
    (out / "features").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(gen.config.charades_clips):
        segments = gen.timeline(int(gen.rng.integers(1, 4)))
        video_id = f"CH{i:03d}" + ("EGO" if i % 2 else "")
        torch.save(gen.features(segments), out / "features" / f"{video_id}.pt")
        actions = ";".join(f"c{c:03d} {s:.1f} {e:.1f}" for c, s, e in segments)
        rows.append([video_id, "synthetic", actions])
    with open(out / "CharadesEgo_v1_test.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "scene", "actions"], *rows])
    (out / "Charades_v1_classes.txt").write_text("".join(f"c{k:03d} {name}\n" for k, name in enumerate(gen.names)))


def generate(out_dir: str | Path, config: SyntheticCLEPConfig | None = None) -> Path:
    """Write the set under ``out_dir`` (see the module docstring); returns ``out_dir`` as a Path."""
    config = config or SyntheticCLEPConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = _Generator(config)
    narrations, videos = _write_video_set(gen, out)
    (out / "narration.json").write_text(json.dumps(narrations))
    (out / "ego4d.json").write_text(json.dumps({"videos": videos}))
    _write_k400(gen, out / "k400")
    _write_charades(gen, out / "charades")
    (out / "synthetic_config.json").write_text(json.dumps(vars(config), indent=1))
    return out


def preprocess_inputs(out_dir: str | Path) -> dict:
    """Keyword arguments of :func:`data_loader.clep_preprocess.preprocess` for a set written by :func:`generate`
    (all but ``out_dir`` and ``encoder``)."""
    root = Path(out_dir)
    return {"narration_json": root / "narration.json", "feature_dir": root / "features",
            "ego4d_json": root / "ego4d.json",
            "k400": {"labels_csv": root / "k400" / "labels.csv", "feature_dir": root / "k400" / "features"},
            "charades": {"test_csv": root / "charades" / "CharadesEgo_v1_test.csv",
                         "classes_txt": root / "charades" / "Charades_v1_classes.txt",
                         "feature_dir": root / "charades" / "features"}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/synthetic_clep")
    parser.add_argument("--concepts", type=int, default=10)
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = generate(args.out, SyntheticCLEPConfig(num_concepts=args.concepts, num_videos=args.videos, seed=args.seed))
    print(f"synthetic CLEP set written to {out}; preprocess it with --text-encoder hash:"
          f"{SyntheticCLEPConfig.text_dim}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
