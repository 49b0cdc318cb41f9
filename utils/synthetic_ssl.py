"""Synthetic videos for self-supervised video learning: a square moving over a noisy background.

The class is the motion, direction (right, left, down, up) × speed (``speeds``, pixels per frame), so a frame on
its own says nothing about the class and reversing time turns right into left: temporal order matters. Start
position and noise level vary per video (optionally colour, size and background too). The square wraps around.

Writes what the loaders of :mod:`data_loader.ssl_video` read:

- :func:`write_ssl_h5`: an HDF5 file per split, one uint8 ``[T, H, W, 3]`` dataset per video named
  ``"{i}_{label}"``;
- :func:`write_ssl_video_files`: chunked mp4 files ``<root>/videos/<uid>/0.mp4`` plus ``<root>/<split>.csv``
  (``video_uid,label,num_frames,fps``).

``python -m utils.synthetic_ssl OUT_DIR`` writes ``OUT_DIR/{train,test}.h5`` in a few seconds.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import h5py
import numpy as np

DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx): right, left, down, up


def num_classes(speeds=(1, 2)) -> int:
    return len(DIRECTIONS) * len(speeds)


def moving_square_videos(num_videos: int, num_frames: int = 16, size: int = 16, speeds=(1, 2), seed: int = 0,
                         vary_appearance: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(videos uint8 [N, T, size, size, 3], labels int64 [N])``; label = direction index · len(speeds) + speed
    index; classes are balanced (cycled) and the generator is fixed by ``seed``. Start position and noise level
    vary per video; with ``vary_appearance`` also the square's colour and size and the background colour (a
    nuisance that two windows of one video share)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(num_videos) % num_classes(speeds)
    rng.shuffle(labels)
    videos = np.empty((num_videos, num_frames, size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        (dy, dx), speed = DIRECTIONS[label // len(speeds)], speeds[label % len(speeds)]
        side = int(rng.integers(size // 5, size // 3 + 1)) if vary_appearance else size // 4
        colour = rng.integers(120, 256, 3) if vary_appearance else np.full(3, 230)
        background = rng.integers(0, 90, 3) if vary_appearance else np.full(3, 40)
        noise = rng.uniform(0, 40)
        y0, x0 = rng.integers(0, size, 2)
        for t in range(num_frames):
            frame = background + noise * rng.standard_normal((size, size, 3))
            ys = (y0 + dy * speed * t + np.arange(side)) % size
            xs = (x0 + dx * speed * t + np.arange(side)) % size
            frame[np.ix_(ys, xs)] = colour
            videos[i, t] = np.clip(frame, 0, 255).astype(np.uint8)
    return videos, labels.astype(np.int64)


def write_ssl_h5(path: str | os.PathLike, videos: np.ndarray, labels: np.ndarray) -> Path:
    """One dataset ``"{i}_{label}"`` (uint8 ``[T, H, W, 3]``) per video."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for i, (video, label) in enumerate(zip(videos, labels)):
            f.create_dataset(f"{i}_{int(label)}", data=video)
    return path


def write_ssl_video_files(root: str | os.PathLike, split: str, videos: np.ndarray, labels: np.ndarray,
                          fps: int = 8) -> Path:
    """``root/videos/<split>_<i>/0.mp4`` (H.264, one chunk) and ``root/<split>.csv``; returns the csv path."""
    import av

    root = Path(root)
    rows = ["video_uid,label,num_frames,fps"]
    for i, (video, label) in enumerate(zip(videos, labels)):
        uid = f"{split}_{i}"
        (root / "videos" / uid).mkdir(parents=True, exist_ok=True)
        with av.open(str(root / "videos" / uid / "0.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width = video.shape[1:3]
            stream.pix_fmt = "yuv444p"
            stream.options = {"qp": "0"}
            for frame in video:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        rows.append(f"{uid},{int(label)},{len(video)},{fps}")
    csv = root / f"{split}.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def generate_ssl_h5(out_dir: str | os.PathLike, num_train: int = 160, num_test: int = 80, num_frames: int = 24,
                    size: int = 16, speeds=(1, 2), seed: int = 0) -> dict[str, Path]:
    """``{"train": out_dir/train.h5, "test": out_dir/test.h5}`` with different videos (seeds) per split."""
    out = {}
    for split, count, offset in (("train", num_train, 0), ("test", num_test, 1)):
        videos, labels = moving_square_videos(count, num_frames, size, speeds, seed=2 * seed + offset)
        out[split] = write_ssl_h5(Path(out_dir) / f"{split}.h5", videos, labels)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--num-train", type=int, default=160)
    parser.add_argument("--num-test", type=int, default=80)
    parser.add_argument("--num-frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = generate_ssl_h5(args.out_dir, args.num_train, args.num_test, args.num_frames, args.size, seed=args.seed)
    print("\n".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
