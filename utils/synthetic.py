"""Synthetic EgoClip / EgoMCQ dataset in EgoVLP's exact on-disk format (the embedded demo dataset).

    python -m utils.synthetic --out data/synthetic [--seed 0 --num-videos 30 --num-mcq-videos 12 ...]

Writes ``videos/<video_uid>/<k>.mp4`` (H.264 chunks of ``chunk_len`` seconds, so clips cross chunk
boundaries), ``meta/egoclip.csv`` (TAB-separated, EgoClip columns), ``meta/egomcq.json`` and
``meta/taxonomy.json``. Metadata is a pure function of the arguments (byte-identical per seed).

Content. Each video has a plain grey background and 2-3 objects; an object is a colour x shape
and its noun is that combination ("red circle"; noun id = colour_index * num_shapes + shape_index).
A narrated clip shows one object doing one action and the verb is the action ("#C C moves the red
circle to the left"); the clip window is exactly the action. Actions come in pairs that no single
frame separates: direction (left/right, up/down), speed (moves vs nudges: large vs small
displacement over the clip), size change (stretches vs squeezes) and event order (puts down: absent
then present; picks up: present then absent). With ``num_verbs=14`` four temporal-scale verbs are added:
taps (the object vanishes on 2 consecutive frames in the middle half of the clip) vs holds (nothing changes),
which sparse frame sampling (4 frames of a 30-frame clip) usually cannot tell apart, and moves to the left /
right and back (out to the middle of the clip and back: the same start and end, a similar path), which only the
order of the clip's halves separates. Between clips the last state is held. Several clips
of a video share its objects, so intra-video questions need the action. Clips last 1-4 s
(log-uniform) with 0-0.8 s idle between them, so ~20 % of adjacent narrations are under 2 s apart;
at the default 15 fps ~95 % of clips hold at least 16 frames.

Splits. ``num_videos`` videos are narrated in egoclip.csv; ``num_mcq_videos`` held-out videos make
egomcq.json: per clip one inter-video question (types=1; 4 distractor clips from 4 other held-out
videos showing other objects) and, when the video has 4 clips with other actions, one intra-video
question (types=2; 4 distractors from the same video with different verbs, often the same object).
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.egoclip_format import EGOCLIP_COLUMNS, chunk_of_frame
from utils.video_io import H264Writer, atomic_dir, atomic_file, run_jobs

COLOURS = (("red", (220, 50, 50)), ("green", (50, 190, 70)), ("blue", (60, 90, 235)),
           ("yellow", (235, 215, 50)), ("magenta", (210, 70, 210)), ("cyan", (60, 210, 215)))
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
# (verb name, narration phrase); the verb id is the position in this list.
VERBS = (("move_left", "moves the {noun} to the left"), ("move_right", "moves the {noun} to the right"),
         ("lift", "lifts the {noun}"), ("lower", "lowers the {noun}"),
         ("put_down", "puts down the {noun}"), ("pick_up", "picks up the {noun}"),
         ("stretch", "stretches the {noun}"), ("squeeze", "squeezes the {noun}"),
         ("nudge_left", "nudges the {noun} slightly to the left"),
         ("nudge_right", "nudges the {noun} slightly to the right"),
         # temporal-scale verbs (off by default, see DEFAULT_NUM_VERBS)
         ("tap", "taps the {noun}"), ("hold", "holds the {noun}"),
         ("left_and_back", "moves the {noun} to the left and back"),
         ("right_and_back", "moves the {noun} to the right and back"))
DEFAULT_NUM_VERBS = 10  # the demo set's verbs; 14 adds the temporal-scale verbs
FINE_TEMPORAL_VERBS = ("tap", "hold")  # a tap hides the object for 2 frames: sparse frame samples miss it
LONG_RANGE_VERBS = ("left_and_back", "right_and_back")  # no net displacement: only the order of the halves differs
NARRATION_SOURCE = "narration_pass_1"


@dataclass(frozen=True)
class ClipPlan:
    """One narrated action on frames ``[start_frame, end_frame)``.

    The object is drawn at centre ``(x0, y0) -> (x1, y1)`` and radius ``r0 -> r1`` (pixels, linear in
    the clip phase u in [0, 1]; with ``out_and_back`` the centre goes to ``(x1, y1)`` at u = 0.5 and back) and is
    visible while ``show_from <= u < show_until`` (1.0 = to the end) except while ``hide_from <= u < hide_until``.
    """
    start_frame: int
    end_frame: int
    verb: int
    noun: int
    x0: float
    y0: float
    x1: float
    y1: float
    r0: float
    r1: float
    show_from: float
    show_until: float
    hide_from: float = 2.0
    hide_until: float = 2.0
    out_and_back: bool = False

    def state(self, frame: int) -> tuple[bool, float, float, float]:
        """``(visible, cx, cy, radius)`` at video frame ``frame`` (held after the clip ends)."""
        u = min(1.0, max(0.0, (frame - self.start_frame) / max(1, self.end_frame - self.start_frame - 1)))
        visible = (self.show_from <= u and (u < self.show_until or self.show_until >= 1.0)
                   and not self.hide_from <= u < self.hide_until)
        p = 1.0 - abs(2.0 * u - 1.0) if self.out_and_back else u
        return (visible, self.x0 + (self.x1 - self.x0) * p, self.y0 + (self.y1 - self.y0) * p,
                self.r0 + (self.r1 - self.r0) * u)


@dataclass(frozen=True)
class VideoPlan:
    """Everything needed to render one video: uid, length in frames, background RGB and its clips."""
    uid: str
    num_frames: int
    background: tuple[int, int, int]
    clips: tuple[ClipPlan, ...]


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes of the synthetic set (see :func:`generate` for the meaning of each field)."""
    seed: int = 0
    num_videos: int = 30
    num_mcq_videos: int = 12
    clips_per_video: tuple[int, int] = (10, 14)
    objects_per_video: tuple[int, int] = (2, 3)
    clip_duration: tuple[float, float] = (1.0, 4.0)
    idle_gap: tuple[float, float] = (0.0, 0.8)
    chunk_len: float = 10.0
    fps: int = 15
    frame_size: tuple[int, int] = (64, 64)
    num_colours: int = 4
    num_shapes: int = 3
    num_verbs: int = DEFAULT_NUM_VERBS
    object_size: float = 0.18  # object radius as a fraction of the short side (stretch/squeeze x0.5..1.5)

    def validate(self) -> None:
        checks = [
            (1 <= self.num_colours <= len(COLOURS), f"num_colours must be in [1, {len(COLOURS)}]"),
            (1 <= self.num_shapes <= len(SHAPES), f"num_shapes must be in [1, {len(SHAPES)}]"),
            (2 <= self.num_verbs <= len(VERBS), f"num_verbs must be in [2, {len(VERBS)}]"),
            (self.num_videos >= 1, "num_videos must be >= 1"),
            (self.num_mcq_videos == 0 or self.num_mcq_videos >= 5, "num_mcq_videos must be 0 or >= 5"),
            (1 <= self.clips_per_video[0] <= self.clips_per_video[1],
             "clips_per_video must be (lo, hi), 1 <= lo <= hi"),
            (1 <= self.objects_per_video[0] <= self.objects_per_video[1] <= self.num_nouns,
             "objects_per_video must be (lo, hi) with 1 <= lo <= hi <= number of nouns"),
            (0 < self.clip_duration[0] <= self.clip_duration[1],
             "clip_duration must be (lo, hi) seconds, 0 < lo <= hi"),
            (0 <= self.idle_gap[0] <= self.idle_gap[1], "idle_gap must be (lo, hi) seconds, 0 <= lo <= hi"),
            (self.chunk_len > 0 and self.fps > 0, "chunk_len and fps must be positive"),
            (0.05 <= self.object_size <= 0.2, "object_size must be in [0.05, 0.2] of the short side"),
            (all(s >= 16 and s % 2 == 0 for s in self.frame_size), "frame_size must be even and >= 16"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"synthetic dataset config: {message} (got {self})")

    @property
    def num_nouns(self) -> int:
        return self.num_colours * self.num_shapes

    def noun_name(self, noun: int) -> str:
        return f"{COLOURS[noun // self.num_shapes][0]} {SHAPES[noun % self.num_shapes]}"


def _action(rng: np.random.Generator, verb: str, height: int, width: int, object_size: float,
            num_frames: int) -> dict[str, float]:
    """Random geometry of one ``num_frames``-frame action (keys of :class:`ClipPlan` from ``x0`` on), kept inside
    the frame."""
    base = object_size * min(height, width)
    margin = 1.5 * base + 1
    r = base * rng.uniform(0.9, 1.1)
    x, y = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
    geometry = dict(x0=x, y0=y, x1=x, y1=y, r0=r, r1=r, show_from=0.0, show_until=1.0)
    direction = {"move_left": (-1, 0), "move_right": (1, 0), "lift": (0, -1), "lower": (0, 1),
                 "nudge_left": (-1, 0), "nudge_right": (1, 0), "left_and_back": (-1, 0), "right_and_back": (1, 0)}
    if verb in direction:
        dx, dy = direction[verb]
        extent = width if dx else height
        fraction = rng.uniform(0.08, 0.16) if verb.startswith("nudge") else rng.uniform(0.38, 0.55)
        distance = min(fraction * extent, extent - 2 * margin)
        low = margin + distance if dx + dy < 0 else margin
        start = rng.uniform(low, low + max(0.0, extent - 2 * margin - distance))
        key = "x" if dx else "y"
        geometry[f"{key}0"], geometry[f"{key}1"] = start, start + (dx + dy) * distance
        geometry["out_and_back"] = verb.endswith("_and_back")
    elif verb == "tap":  # hidden on 2 consecutive frames in the middle half of the clip
        last = max(1, num_frames - 1)
        first = int(rng.integers(num_frames // 4, max(num_frames // 4 + 1, 3 * num_frames // 4 - 1)))
        geometry["hide_from"], geometry["hide_until"] = first / last, (first + 2) / last
    elif verb in ("put_down", "pick_up"):
        geometry["show_from" if verb == "put_down" else "show_until"] = rng.uniform(0.3, 0.7)
    elif verb in ("stretch", "squeeze"):
        small, large = base * rng.uniform(0.5, 0.65), base * rng.uniform(1.3, 1.5)
        geometry["r0"], geometry["r1"] = (small, large) if verb == "stretch" else (large, small)
    return geometry


def _plan_video(config: SyntheticConfig, index: int) -> VideoPlan:
    """The plan of video ``index`` (a pure function of the seed and the index)."""
    rng = np.random.default_rng([config.seed, 0, index])
    uid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    height, width = config.frame_size

    def seconds(bounds: tuple[float, float], log_uniform: bool = False) -> int:
        """A random duration in ``bounds`` seconds (uniform or log-uniform), in whole frames."""
        value = np.exp(rng.uniform(*np.log(bounds))) if log_uniform else rng.uniform(*bounds)
        return max(0, round(value * config.fps))

    nouns = rng.choice(config.num_nouns, size=rng.integers(config.objects_per_video[0],
                                                           config.objects_per_video[1] + 1), replace=False)
    frame = seconds((0.5, 1.5))
    clips = []
    for _ in range(rng.integers(config.clips_per_video[0], config.clips_per_video[1] + 1)):
        duration = max(2, seconds(config.clip_duration, log_uniform=True))
        verb, noun = int(rng.integers(config.num_verbs)), int(rng.choice(nouns))
        clips.append(ClipPlan(frame, frame + duration, verb, noun, **_action(rng, VERBS[verb][0], height, width,
                                                                         config.object_size, duration)))
        frame += duration + seconds(config.idle_gap)
    background = tuple(int(v) for v in rng.integers(70, 140) + rng.integers(-12, 13, size=3))
    return VideoPlan(uid, frame + seconds((0.5, 1.5)), background, tuple(clips))


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Pixels of ``shape`` of radius ``r`` given offsets ``dx``/``dy`` from its centre."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    if shape == "triangle":
        return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.8)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    return ((np.abs(dx) <= 0.35 * r) & (np.abs(dy) <= r)) | ((np.abs(dy) <= 0.35 * r) & (np.abs(dx) <= r))


def render_frames(plan: VideoPlan, config: SyntheticConfig):
    """Yield the RGB uint8 ``[H, W, 3]`` frames of ``plan`` in order."""
    height, width = config.frame_size
    yy, xx = np.ogrid[:height, :width]
    current = None
    upcoming = list(plan.clips)
    for frame in range(plan.num_frames):
        if upcoming and frame >= upcoming[0].start_frame:
            current = upcoming.pop(0)
        image = np.empty((height, width, 3), np.uint8)
        image[:] = plan.background
        if current is not None:
            visible, cx, cy, r = current.state(frame)
            if visible:
                colour = COLOURS[current.noun // config.num_shapes][1]
                image[_shape_mask(SHAPES[current.noun % config.num_shapes], xx - cx, yy - cy, r)] = colour
        yield image


def write_video(plan: VideoPlan, config: SyntheticConfig, videos_dir: str) -> int:
    """Render and encode ``plan`` as ``videos_dir/<uid>/<k>.mp4`` chunks; returns the number of chunks."""
    height, width = config.frame_size
    chunks = 0
    frames = enumerate(render_frames(plan, config))
    with atomic_dir(os.path.join(videos_dir, plan.uid)) as tmp:
        for chunk, group in itertools.groupby(frames, key=lambda item: chunk_of_frame(item[0], config.fps,
                                                                                      config.chunk_len)):
            with H264Writer(os.path.join(tmp, f"{chunk}.mp4"), config.fps, width, height, crf=18,
                            preset="veryfast", gop=2 * config.fps, threads=1) as writer:
                for _, image in group:
                    writer.write(image)
            chunks += 1
    return chunks


def _seconds(frame: int, fps: int) -> float:
    return round(frame / fps, 6)


def _clip_rows(plans: list[VideoPlan], config: SyntheticConfig, first_idx: int) -> list[list[dict]]:
    """EgoClip rows (column -> value) of every clip, grouped by video; ``clip_idx`` counts from ``first_idx``."""
    rows, idx = [], first_idx
    for plan in plans:
        video_rows = []
        for ind, clip in enumerate(plan.clips):
            phrase = VERBS[clip.verb][1].format(noun=config.noun_name(clip.noun))
            video_rows.append(dict(zip(EGOCLIP_COLUMNS, (
                idx, plan.uid, _seconds(plan.num_frames, config.fps), NARRATION_SOURCE, ind,
                round((clip.start_frame + clip.end_frame) / 2 / config.fps, 6),
                _seconds(clip.start_frame, config.fps), _seconds(clip.end_frame, config.fps),
                f"#C C {phrase}", f"[{clip.verb}]", f"[{clip.noun}]"))))
            idx += 1
        rows.append(video_rows)
    return rows


def _mcq_items(videos: list[list[dict]], seed: int) -> list[dict]:
    """EgoMCQ items: per clip an inter-video question and, when possible, an intra-video one."""
    rng = np.random.default_rng([seed, 1])
    items = []
    for v, clips in enumerate(videos):
        others = [o for o in range(len(videos)) if o != v]
        for query in clips:
            distractors = []
            for o in rng.permutation(others):
                candidates = [c for c in videos[o] if c["tag_noun"] != query["tag_noun"]]
                if candidates:
                    distractors.append(candidates[rng.integers(len(candidates))])
                if len(distractors) == 4:
                    items.append(_question(query, distractors, 1, rng))
                    break
            same_video = [c for c in clips if c["tag_verb"] != query["tag_verb"]]
            if len(same_video) >= 4:
                picks = rng.choice(len(same_video), size=4, replace=False)
                items.append(_question(query, [same_video[i] for i in sorted(picks)], 2, rng))
    return items


def _question(query: dict, distractors: list[dict], types: int, rng: np.random.Generator) -> dict:
    answer = int(rng.integers(5))
    choices = list(distractors)
    choices.insert(answer, query)
    return {"query": query, "choices": {str(i): row for i, row in enumerate(choices)}, "answer": answer,
            "types": types}


def _write_text(path: str, text: str) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _csv_text(rows: list[dict]) -> str:
    lines = ["\t".join(EGOCLIP_COLUMNS)]
    lines += ["\t".join(str(row[column]) for column in EGOCLIP_COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


def _taxonomy(config: SyntheticConfig, train: list[VideoPlan], mcq: list[VideoPlan]) -> dict:
    return {
        "verbs": [name for name, _ in VERBS[:config.num_verbs]],
        "nouns": [config.noun_name(n) for n in range(config.num_nouns)],
        "chunk_len": config.chunk_len,
        "fps": config.fps,
        "frame_size": list(config.frame_size),
        "seed": config.seed,
        "verb_phrases": {name: phrase for name, phrase in VERBS[:config.num_verbs]},
        "narration_template": "#C C {phrase}",
        "colours": {name: list(rgb) for name, rgb in COLOURS[:config.num_colours]},
        "shapes": list(SHAPES[:config.num_shapes]),
        "noun_id": "colour_index * num_shapes + shape_index",
        "train_videos": [p.uid for p in train],
        "mcq_videos": [p.uid for p in mcq],
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
    }


def generate(out_dir: str, seed: int = 0, num_videos: int = 30, num_mcq_videos: int = 12,
             clips_per_video: tuple[int, int] = (10, 14), objects_per_video: tuple[int, int] = (2, 3),
             clip_duration: tuple[float, float] = (1.0, 4.0), idle_gap: tuple[float, float] = (0.0, 0.8),
             chunk_len: float = 10.0, fps: int = 15, frame_size: int | tuple[int, int] = 64,
             num_colours: int = 4, num_shapes: int = 3, num_verbs: int = DEFAULT_NUM_VERBS, object_size: float = 0.18,
             workers: int = 1, write_videos: bool = True, progress: bool = False) -> dict:
    """Write the synthetic dataset under ``out_dir``; returns a summary dict (counts, sizes).

    ``num_videos`` narrated training videos (egoclip.csv) and ``num_mcq_videos`` held-out videos
    (egomcq.json), each with ``clips_per_video`` clips of ``clip_duration`` seconds separated by
    ``idle_gap`` seconds, ``objects_per_video`` objects out of ``num_colours x num_shapes`` nouns and
    ``num_verbs`` actions; frames ``frame_size`` (int or (H, W)) at ``fps``, chunks of ``chunk_len`` s.
    Objects have a radius of ``object_size`` × the short side: at 64 px and 16-px patches, 0.18 (a 23-px object)
    keeps shapes tellable apart; at 0.12 a tiny model learns colour but hardly shape.
    ``workers`` processes encode videos; ``write_videos=False`` writes the metadata only.
    """
    size = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
    config = SyntheticConfig(seed, num_videos, num_mcq_videos, tuple(clips_per_video), tuple(objects_per_video),
                             tuple(clip_duration), tuple(idle_gap), float(chunk_len), int(fps), size,
                             num_colours, num_shapes, num_verbs, float(object_size))
    config.validate()
    plans = [_plan_video(config, i) for i in range(num_videos + num_mcq_videos)]
    train, mcq = plans[:num_videos], plans[num_videos:]
    train_rows = [row for video in _clip_rows(train, config, 0) for row in video]
    mcq_videos = _clip_rows(mcq, config, len(train_rows))
    items = _mcq_items(mcq_videos, seed) if mcq else []
    meta = os.path.join(out_dir, "meta")
    _write_text(os.path.join(meta, "egoclip.csv"), _csv_text(train_rows))
    _write_text(os.path.join(meta, "egomcq.json"), json.dumps({str(i): q for i, q in enumerate(items)}, indent=1))
    _write_text(os.path.join(meta, "taxonomy.json"), json.dumps(_taxonomy(config, train, mcq), indent=1))
    chunks = 0
    if write_videos:
        job = functools.partial(write_video, config=config, videos_dir=os.path.join(out_dir, "videos"))
        chunks = sum(run_jobs(job, plans, workers, desc="synthetic videos", progress=progress))
    return {
        "out_dir": str(out_dir), "num_videos": len(train), "num_mcq_videos": len(mcq),
        "num_clips": len(train_rows), "num_mcq_clips": sum(len(v) for v in mcq_videos),
        "num_inter": sum(q["types"] == 1 for q in items), "num_intra": sum(q["types"] == 2 for q in items),
        "num_chunks": chunks, "duration_sec": _seconds(sum(p.num_frames for p in plans), config.fps),
        "num_verbs": config.num_verbs, "num_nouns": config.num_nouns,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (videos/ and meta/ are written in it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-videos", type=int, default=30, help="narrated training videos (egoclip.csv)")
    parser.add_argument("--num-mcq-videos", type=int, default=12, help="held-out videos for egomcq.json (0 or >= 5)")
    parser.add_argument("--clips-per-video", type=int, nargs=2, default=(10, 14), metavar=("MIN", "MAX"))
    parser.add_argument("--chunk-len", type=float, default=10.0, help="seconds per video chunk")
    parser.add_argument("--fps", type=int, default=15, help="frames per second (15: a 1.07 s clip has 16 frames)")
    parser.add_argument("--size", type=int, nargs="+", default=[64], help="frame size: S or H W (even)")
    parser.add_argument("--num-colours", type=int, default=4, help=f"at most {len(COLOURS)}")
    parser.add_argument("--num-shapes", type=int, default=3, help=f"at most {len(SHAPES)}")
    parser.add_argument("--num-verbs", type=int, default=DEFAULT_NUM_VERBS,
                        help=f"at most {len(VERBS)}; {len(VERBS)} adds tap/hold and left/right-and-back")
    parser.add_argument("--object-size", type=float, default=0.18, help="object radius / short side")
    parser.add_argument("--workers", type=int, default=1, help="processes encoding videos")
    parser.add_argument("--metadata-only", action="store_true", help="write meta/ only, no videos")
    return parser



# A smaller set for quick runs (examples with --small, tests).
SMALL_DATASET = {"num_videos": 6, "num_mcq_videos": 5, "clips_per_video": (6, 8)}


def ensure_dataset(root, small: bool = False, log=print) -> None:
    """Generate the synthetic dataset in ``root`` (seed 0; ``small``: SMALL_DATASET) unless it is there already."""
    root = Path(root)
    if (root / "meta" / "egomcq.json").exists():
        log(f"using the synthetic dataset in {root}")
        return
    log(f"generating the {'small ' if small else ''}synthetic dataset in {root} ...")
    summary = generate(str(root), seed=0, **(SMALL_DATASET if small else {}))
    log(f"  {summary['num_clips']} training clips in {summary['num_videos']} videos, "
        f"{summary['num_inter'] + summary['num_intra']} EgoMCQ questions")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if len(args.size) not in (1, 2):
        raise SystemExit("--size takes S or H W")
    summary = generate(args.out, seed=args.seed, num_videos=args.num_videos, num_mcq_videos=args.num_mcq_videos,
                       clips_per_video=tuple(args.clips_per_video), chunk_len=args.chunk_len, fps=args.fps,
                       frame_size=args.size[0] if len(args.size) == 1 else tuple(args.size),
                       num_colours=args.num_colours, num_shapes=args.num_shapes, num_verbs=args.num_verbs,
                       object_size=args.object_size,
                       workers=args.workers, write_videos=not args.metadata_only, progress=True)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
