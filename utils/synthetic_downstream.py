"""Synthetic downstream sets in the real on-disk formats: EK-100 multi-instance retrieval, Charades-Ego and
Ego4D moments / NLQ, drawn like the synthetic EgoClip set (same objects and actions, so a model pretrained on that
set has learnt what they look like).

    python -m utils.synthetic_downstream ek100 --out data/synthetic_ek100
    python -m utils.synthetic_downstream charades --out data/synthetic_charades
    python -m utils.synthetic_downstream ego4d --out data/synthetic_ego4d

EK-100 (``ek100``): ``videos/<pid>/<vid>.MP4`` (one H.264 file per video, not chunked) and ``annotations/``
holding ``EPIC_100_retrieval_{train,test}.csv`` (15 columns), ``EPIC_100_retrieval_{train,test}_sentence.csv``
(one row per distinct narration, named by its first clip) and
``relevancy/caption_relevancy_EPIC_100_retrieval_{train,test}.pkl`` (pickled float array [clips, sentences],
``R = ½·[same verb class] + ½·|N_i ∩ N_j| / |N_i ∪ N_j|`` over the noun classes), and beside ``annotations/``
``EPIC_100_{verb,noun}_classes.csv`` (``id``, ``key``, ``instances``, ``category``).

It is a transfer, as real EK-100 is to Ego4D: the clips show the pretraining's actions on its coloured shapes,
but the narrations are kitchen-style and worded differently (``EK100_VERBS``: "take red plate", "grab red plate",
"put down green funnel on blue box" against the pretraining's "#C C picks up the red circle"). A verb class (one
per synthetic action, EPIC-style key such as ``take`` or ``slide-left``) has 2-3 phrasings, so several distinct
sentences of a class have relevance 1 to a clip; a noun class is a colour x shape named ``<colour> <kitchen
object>`` (circle -> plate, square -> box, triangle -> funnel); half of the put / take clips show a second, static
object and name it ("... on blue box", two noun classes). Zero-shot, a pretrained model can match only the words
the two vocabularies share (colours, directions, "pick up", "lower"); fine-tuning has to learn the rest. Defaults:
30 training videos (~210 clips) and 10 test videos (~70 clips, ~60 sentences), written in seconds; the clips use
the 10 default synthetic actions.

Charades-Ego (``charades``): ``videos/<id>.mp4``, ``CharadesEgo_v1_{train,test}_only1st.csv`` (``id``,
``script``, ``actions`` = ``c007 1.20 3.40;...``, ``length``) and ``Charades_v1_classes.txt``; a class is an
(action, object) pair named by its narration phrase.

Ego4D (``ego4d``): full-length ``videos/<video_uid>.mp4`` and ``annotations/moments_{train,val}.json`` /
``nlq_{train,val}.json`` (``videos[].clips[]`` with ``clip_uid``, ``video_start_sec``, ``video_end_sec``; NLQ
clips carry ``annotations[].language_queries[].query``).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import pickle
import sys

import numpy as np

from utils.synthetic import COLOURS, SHAPES, VERBS, SyntheticConfig, VideoPlan, _plan_video, _shape_mask, render_frames
from utils.video_io import H264Writer, atomic_file

EK100_COLUMNS = ("narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
                 "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
                 "noun_class", "all_nouns", "all_noun_classes")
EK100_FRAME_RATE = 60  # the frame numbering of the start_frame / stop_frame columns (RGB frames at 60 fps)


def write_video_file(plan: VideoPlan, config: SyntheticConfig, path: str, frames=None) -> None:
    """Encode ``frames`` (default: ``render_frames(plan, config)``) into one H.264 file at ``path`` (written
    atomically)."""
    height, width = config.frame_size
    with atomic_file(path) as tmp:
        with H264Writer(tmp, config.fps, width, height, crf=18, preset="veryfast", gop=2 * config.fps,
                        threads=1) as writer:
            for image in frames if frames is not None else render_frames(plan, config):
                writer.write(image)


def _write_text(path: str, text: str) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _csv(rows: list[dict], columns, delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _timestamp(seconds: float) -> str:
    """``HH:MM:SS.ff`` (EK-100's clip boundary format)."""
    hours, rest = divmod(round(seconds * 100), 360000)
    minutes, rest = divmod(rest, 6000)
    return f"{hours:02d}:{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}"


def _config(seed: int, fps: int, frame_size: int, clips_per_video, clip_duration) -> SyntheticConfig:
    config = SyntheticConfig(seed=seed, num_videos=1, num_mcq_videos=0, clips_per_video=tuple(clips_per_video),
                             clip_duration=tuple(clip_duration), fps=fps, frame_size=(frame_size, frame_size))
    config.validate()
    return config


def jpose_relevancy(clip_verbs, clip_nouns, sentence_verbs, sentence_nouns) -> np.ndarray:
    """``R[i, j] = ½·[verb_i = verb_j] + ½·|N_i ∩ N_j| / |N_i ∪ N_j|`` (float64 [clips, sentences])."""
    rel = np.zeros((len(clip_verbs), len(sentence_verbs)))
    for i, (verb, nouns) in enumerate(zip(clip_verbs, clip_nouns)):
        for j, (s_verb, s_nouns) in enumerate(zip(sentence_verbs, sentence_nouns)):
            union = set(nouns) | set(s_nouns)
            rel[i, j] = 0.5 * (verb == s_verb) + 0.5 * (len(set(nouns) & set(s_nouns)) / len(union) if union else 0)
    return rel


# EK-100 vocabulary, keyed by the synthetic action it names: (verb class key, ((verb as written, narration
# template), ...)). Keys and templates are kitchen-style and differ from the pretraining narrations (a few words,
# e.g. "left" or "pick up", overlap, as Ego4D and EPIC-Kitchens share some words); a class has 2-3 phrasings.
EK100_VERBS = {
    "move_left": ("slide-left", (("slide", "slide {noun} left"), ("push", "push {noun} to the left"))),
    "move_right": ("slide-right", (("slide", "slide {noun} right"), ("push", "push {noun} to the right"))),
    "lift": ("raise", (("raise", "raise {noun}"), ("hold-up", "hold up {noun}"))),
    "lower": ("lower", (("lower", "lower {noun}"), ("bring-down", "bring down {noun}"))),
    "put_down": ("put", (("put", "put {noun}"), ("place", "place {noun}"), ("put-down", "put down {noun}"))),
    "pick_up": ("take", (("take", "take {noun}"), ("grab", "grab {noun}"), ("pick-up", "pick up {noun}"))),
    "stretch": ("open", (("open", "open {noun}"), ("unfold", "unfold {noun}"))),
    "squeeze": ("close", (("close", "close {noun}"), ("fold", "fold {noun}"))),
    "nudge_left": ("shift-left", (("shift", "shift {noun} left a little"), ("adjust", "adjust {noun} left"))),
    "nudge_right": ("shift-right", (("shift", "shift {noun} right a little"), ("adjust", "adjust {noun} right"))),
}
# Two-noun narrations ("put red plate on blue box"): the second noun is a static object shown beside the first.
EK100_PLACE_TEMPLATES = {"put_down": "{narration} on {place}", "pick_up": "{narration} from {place}"}
EK100_OBJECTS = ("plate", "box", "funnel", "sponge", "bowl")  # the kitchen noun of each synthetic shape


def ek100_noun_name(noun: int, config: SyntheticConfig) -> str:
    """``<colour> <kitchen object>`` of synthetic noun ``noun`` (noun class = the synthetic noun id)."""
    return f"{COLOURS[noun // config.num_shapes][0]} {EK100_OBJECTS[noun % config.num_shapes]}"


@dataclasses.dataclass(frozen=True)
class Place:
    """A static object (noun id, centre, radius in pixels) shown during one clip: the second noun of its narration."""
    noun: int
    x: float
    y: float
    r: float


def _ek100_annotations(config: SyntheticConfig, plan: VideoPlan, index: int, place_prob: float):
    """Per clip of ``plan``: ``(verb written, narration, noun classes, Place or None)``; a pure function of the
    seed and the video index. A ``put_down`` / ``pick_up`` clip gets a place with probability ``place_prob`` (none
    when no position keeps it clear of the object)."""
    rng = np.random.default_rng([config.seed, 3, index])
    height, width = config.frame_size
    out = []
    for clip in plan.clips:
        action = VERBS[clip.verb][0]
        _, phrasings = EK100_VERBS[action]
        written, template = phrasings[int(rng.integers(len(phrasings)))]
        narration = template.format(noun=ek100_noun_name(clip.noun, config))
        nouns, place = [clip.noun], None
        if action in EK100_PLACE_TEMPLATES and rng.random() < place_prob:
            noun = int(rng.choice([n for n in range(config.num_nouns) if n != clip.noun]))
            r = 0.8 * config.object_size * min(height, width)
            for _ in range(100):
                x, y = rng.uniform(r + 2, width - r - 2), rng.uniform(r + 2, height - r - 2)
                if np.hypot(x - clip.x0, y - clip.y0) >= 1.3 * (max(clip.r0, clip.r1) + r):  # shapes reach 1.28 r
                    place = Place(noun, x, y, r)
                    break
            if place is not None:
                narration = EK100_PLACE_TEMPLATES[action].format(narration=narration,
                                                                 place=ek100_noun_name(noun, config))
                nouns.append(noun)
        out.append((written, narration, nouns, place))
    return out


def render_with_places(plan: VideoPlan, config: SyntheticConfig, places: dict[int, Place]):
    """The frames of ``plan`` with ``places[k]`` drawn during clip ``k``."""
    height, width = config.frame_size
    yy, xx = np.ogrid[:height, :width]
    spans = [(plan.clips[k].start_frame, plan.clips[k].end_frame, place) for k, place in places.items()]
    for frame, image in enumerate(render_frames(plan, config)):
        for start, end, place in spans:
            if start <= frame < end:
                mask = _shape_mask(SHAPES[place.noun % config.num_shapes], xx - place.x, yy - place.y, place.r)
                image[mask] = COLOURS[place.noun // config.num_shapes][1]
        yield image


def _ek100_rows(plans: list[VideoPlan], annotations: list, config: SyntheticConfig) -> list[dict]:
    rows = []
    for plan, clips in zip(plans, annotations):
        participant = plan.uid.split("_")[0]
        for k, (clip, (written, narration, nouns, _)) in enumerate(zip(plan.clips, clips)):
            start, stop = clip.start_frame / config.fps, clip.end_frame / config.fps
            names = [ek100_noun_name(n, config) for n in nouns]
            rows.append({
                "narration_id": f"{plan.uid}_{k}", "participant_id": participant, "video_id": plan.uid,
                "narration_timestamp": _timestamp(start) + "0", "start_timestamp": _timestamp(start),
                "stop_timestamp": _timestamp(stop), "start_frame": round(start * EK100_FRAME_RATE) + 1,
                "stop_frame": round(stop * EK100_FRAME_RATE), "narration": narration, "verb": written,
                "verb_class": clip.verb, "noun": names[0], "noun_class": nouns[0], "all_nouns": str(names),
                "all_noun_classes": str(nouns)})
    return rows


def _sentences(rows: list[dict], train: bool) -> list[dict]:
    """One sentence per distinct narration, named by the first clip that has it."""
    seen = {}
    for row in rows:
        seen.setdefault(row["narration"], row)
    sentences = []
    for narration, row in seen.items():
        sentence = {"narration_id": row["narration_id"], "narration": narration}
        if train:
            sentence.update(verb_class=row["verb_class"], noun_classes=row["all_noun_classes"], verb=row["verb"],
                            nouns=row["all_nouns"])
        sentences.append(sentence)
    return sentences


def generate_ek100(out_dir: str, seed: int = 0, num_train_videos: int = 30, num_test_videos: int = 10,
                   clips_per_video: tuple[int, int] = (6, 8), clip_duration: tuple[float, float] = (1.6, 3.0),
                   fps: int = 10, frame_size: int = 64, place_prob: float = 0.5, write_videos: bool = True) -> dict:
    """Write a synthetic EK-100 MIR set under ``out_dir`` (see the module docstring); returns counts.

    Videos of participants P01, P02, ... (two videos each) at ``fps`` (10: clip times on a 0.1 s grid, exact in
    the 2-decimal timestamps); ``place_prob``: the share of put / take clips with a second noun."""
    config = _config(seed, fps, frame_size, clips_per_video, clip_duration)
    plans = [dataclasses.replace(_plan_video(config, i), uid=f"P{i // 2 + 1:02d}_{i % 2 + 1:02d}")
             for i in range(num_train_videos + num_test_videos)]
    annotations = [_ek100_annotations(config, plan, i, place_prob) for i, plan in enumerate(plans)]
    meta_dir = os.path.join(out_dir, "annotations")
    summary = {"out_dir": str(out_dir)}
    for split, lo, hi in (("train", 0, num_train_videos), ("test", num_train_videos, len(plans))):
        rows = _ek100_rows(plans[lo:hi], annotations[lo:hi], config)
        sentences = _sentences(rows, split == "train")
        verbs = [row["verb_class"] for row in rows]
        nouns = [clip_nouns for clips in annotations[lo:hi] for _, _, clip_nouns, _ in clips]
        row_of = {row["narration_id"]: i for i, row in enumerate(rows)}
        named = [row_of[s["narration_id"]] for s in sentences]
        relevancy = jpose_relevancy(verbs, nouns, [verbs[i] for i in named], [nouns[i] for i in named])
        _write_text(os.path.join(meta_dir, f"EPIC_100_retrieval_{split}.csv"), _csv(rows, EK100_COLUMNS))
        _write_text(os.path.join(meta_dir, f"EPIC_100_retrieval_{split}_sentence.csv"),
                    _csv(sentences, list(sentences[0])))
        pkl = os.path.join(meta_dir, "relevancy", f"caption_relevancy_EPIC_100_retrieval_{split}.pkl")
        with atomic_file(pkl) as tmp, open(tmp, "wb") as f:
            pickle.dump(relevancy, f)
        summary[f"{split}_clips"], summary[f"{split}_sentences"] = len(rows), len(sentences)
        summary[f"{split}_two_noun_clips"] = sum(len(n) > 1 for n in nouns)
    verb_rows = [{"id": v, "key": EK100_VERBS[VERBS[v][0]][0], "category": "synthetic",
                  "instances": str([written for written, _ in EK100_VERBS[VERBS[v][0]][1]])}
                 for v in range(config.num_verbs)]
    noun_rows = [{"id": n, "key": ":".join(reversed(ek100_noun_name(n, config).split())), "category": "synthetic",
                  "instances": str([ek100_noun_name(n, config)])} for n in range(config.num_nouns)]
    for name, rows in (("verb", verb_rows), ("noun", noun_rows)):
        _write_text(os.path.join(out_dir, f"EPIC_100_{name}_classes.csv"), _csv(rows, ("id", "key", "instances",
                                                                                        "category")))
    if write_videos:
        for plan, clips in zip(plans, annotations):
            places = {k: place for k, (*_, place) in enumerate(clips) if place is not None}
            write_video_file(plan, config, os.path.join(out_dir, "videos", plan.uid.split("_")[0], f"{plan.uid}.MP4"),
                             render_with_places(plan, config, places))
    return summary


def charades_class_names(config: SyntheticConfig) -> list[str]:
    """Class ``verb * num_nouns + noun``: the narration phrase of that action on that object."""
    return [VERBS[verb][1].format(noun=config.noun_name(noun))
            for verb in range(config.num_verbs) for noun in range(config.num_nouns)]


def generate_charades(out_dir: str, seed: int = 0, num_train_videos: int = 8, num_test_videos: int = 24,
                      clips_per_video: tuple[int, int] = (3, 5), clip_duration: tuple[float, float] = (1.6, 3.0),
                      fps: int = 10, frame_size: int = 64, write_videos: bool = True) -> dict:
    """Write a synthetic Charades-Ego set under ``out_dir`` (see the module docstring); returns counts.

    Each narrated clip of a video is one action; the last test video's ``actions`` field is left empty (a video
    without labels, as real Charades has)."""
    config = _config(seed, fps, frame_size, clips_per_video, clip_duration)
    names = charades_class_names(config)
    _write_text(os.path.join(out_dir, "Charades_v1_classes.txt"),
                "".join(f"c{i:03d} {name}\n" for i, name in enumerate(names)))
    plans = [dataclasses.replace(_plan_video(config, 1000 + i), uid=f"SYN{i:03d}EGO")
             for i in range(num_train_videos + num_test_videos)]
    summary = {"out_dir": str(out_dir), "num_classes": len(names)}
    for split, split_plans in (("train", plans[:num_train_videos]), ("test", plans[num_train_videos:])):
        rows = []
        for plan in split_plans:
            actions = [(clip.verb * config.num_nouns + clip.noun, clip.start_frame / fps, clip.end_frame / fps)
                       for clip in plan.clips]
            unlabelled = split == "test" and plan is split_plans[-1]
            rows.append({"id": plan.uid, "subject": "S00", "scene": "synthetic", "script": "; ".join(
                names[c] for c, _, _ in actions), "objects": "", "descriptions": "",
                "actions": "" if unlabelled else ";".join(f"c{c:03d} {a:.2f} {b:.2f}" for c, a, b in actions),
                "length": f"{plan.num_frames / fps:.2f}"})
        _write_text(os.path.join(out_dir, f"CharadesEgo_v1_{split}_only1st.csv"), _csv(rows, list(rows[0])))
        summary[f"{split}_videos"] = len(rows)
    if write_videos:
        for plan in plans:
            write_video_file(plan, config, os.path.join(out_dir, "videos", f"{plan.uid}.mp4"))
    return summary


def generate_ego4d(out_dir: str, seed: int = 0, num_videos: int = 3, clips_per_video: tuple[int, int] = (4, 6),
                   clip_duration: tuple[float, float] = (1.6, 3.0), fps: int = 10, frame_size: int = 64,
                   write_videos: bool = True) -> dict:
    """Write a synthetic Ego4D episodic-memory set under ``out_dir`` (see the module docstring); returns counts.

    Each full-length video gets two annotated clips (its first and second half, ``video_start_sec`` /
    ``video_end_sec`` in the video); video ``i`` goes to split ``train`` if even, else ``val``. NLQ queries ask
    where the narrated actions happened; the moments files hold the same clips (as in Ego4D, a clip can be in
    both benchmarks)."""
    config = _config(seed, fps, frame_size, clips_per_video, clip_duration)
    plans = [_plan_video(config, 2000 + i) for i in range(num_videos)]
    splits: dict[str, list] = {"train": [], "val": []}
    for i, plan in enumerate(plans):
        duration = plan.num_frames / fps
        halves = [(0.0, round(duration / 2, 2)), (round(duration / 2, 2), round(duration - 0.05, 2))]
        clips = []
        for k, (start, end) in enumerate(halves):
            actions = [c for c in plan.clips if start <= c.start_frame / fps < end]
            queries = [{"query": f"where did I see the {config.noun_name(c.noun)}?"} for c in actions[:2]]
            clips.append({"clip_uid": f"{plan.uid[:8]}-clip{k}", "video_start_sec": start, "video_end_sec": end,
                          "annotations": [{"language_queries": queries}]})
        splits["train" if i % 2 == 0 else "val"].append({"video_uid": plan.uid, "clips": clips})
    annotations = os.path.join(out_dir, "annotations")
    for split, videos in splits.items():
        for benchmark in ("moments", "nlq"):
            _write_text(os.path.join(annotations, f"{benchmark}_{split}.json"),
                        json.dumps({"version": "synthetic", "videos": videos}, indent=1))
    if write_videos:
        for plan in plans:
            write_video_file(plan, config, os.path.join(out_dir, "videos", f"{plan.uid}.mp4"))
    return {"out_dir": str(out_dir), "videos": len(plans), "clips": 2 * len(plans)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.synthetic_downstream", description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmark", choices=["ek100", "charades", "ego4d"])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    generators = {"ek100": generate_ek100, "charades": generate_charades, "ego4d": generate_ego4d}
    print(json.dumps(generators[args.benchmark](args.out, seed=args.seed), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
