"""Video feature extraction for Ego4D EgoMQ / EgoNLQ (VSGN, VSLNet): one ``<clip_uid>.pt`` per clip.

For each clip of the annotation files (see :mod:`data_loader.ego4d_windows` for the windows), the feature of a
window of F frames is the model's video embedding (video [CLS] → ``vid_proj``, not normalised):
``<out_dir>/<clip_uid>.pt`` holds a FloatTensor [N, D] with every one of the N windows (no zero tail), and
``<out_dir>/feature_shapes.json`` maps each clip to N. With ``query_features``, the NLQ queries' text embeddings
go to ``<out_dir>/<query_features>`` as ``{query: FloatTensor [1, D]}``.

Work is streamed (``windows_per_batch`` windows decoded and encoded at a time, never a whole clip in memory),
resumable (a clip whose file exists is skipped; files are written atomically, so an interrupted clip leaves none)
and sharded: clips sorted by uid, rank r of W (and ``--shard i/n`` of separate jobs) takes every (W·n)-th.
"""
from __future__ import annotations

import json
import logging
import os

import torch
from tqdm import tqdm

from data_loader.ego4d_windows import FEATURES_PER_SECOND, EpisodicClip, read_clips, read_queries, window_times
from data_loader.transforms import EvalVideoTransform
from data_loader.video_backends import BACKENDS, VideoReadError
from data_loader.video_files import VideoFileReader
from trainer.tasks.base import Task
from trainer.tasks.retrieval import encode_text, encode_video
from utils import distributed
from utils.registry import TASKS
from utils.video_io import atomic_file, select_shard

logger = logging.getLogger(__name__)

QUERY_BATCH = 64


def save_atomic(obj, path: str) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


@TASKS.register("FeatureExtraction")
class FeatureExtraction(Task):
    """Args:
        annotations: moments / nlq json files. video_dir: ``<video_uid><video_ext>`` full-length videos.
        out_dir: where the features go. num_frames: F frames per window (EgoVLP 4).
        features_per_second: the sampling rate of windows (EgoVLP 1.87). input_res: frame size (resize the short
        side, centre crop). windows_per_batch: windows decoded and encoded at once. reader, decode_size: video
        backend and decode-time scaling. query_features: file name of the NLQ query features (None: none).
        shard: ``(index, count)``: this job's share of the clips when ``count`` separate jobs run (each may itself
        run on several ranks).
    """

    def __init__(self, model, objective=None, annotations: list[str] = (), video_dir: str = "", out_dir: str = "",
                 num_frames: int = 4, features_per_second: float = FEATURES_PER_SECOND, input_res: int = 224,
                 windows_per_batch: int = 16, reader: str = "decord", decode_size: int | None = None,
                 video_ext: str = ".mp4", query_features: str | None = "nlq_query_features.pt",
                 shard: tuple[int, int] = (0, 1)):
        super().__init__(model, objective)
        if reader not in BACKENDS:
            raise ValueError(f"reader must be one of {BACKENDS}, got {reader!r}")
        if num_frames < 1 or windows_per_batch < 1 or features_per_second <= 0:
            raise ValueError("num_frames and windows_per_batch must be >= 1 and features_per_second > 0")
        self.annotations, self.video_dir, self.out_dir = list(annotations), video_dir, out_dir
        self.num_frames, self.features_per_second = int(num_frames), float(features_per_second)
        self.windows_per_batch, self.video_ext, self.query_features = int(windows_per_batch), video_ext, query_features
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be [index, count] with 0 <= index < count, got {shard}")
        self.shard = (int(shard[0]), int(shard[1]))
        self.transform = EvalVideoTransform(input_res, resize_short=input_res, center_crop=input_res)
        self.reader = VideoFileReader(video_dir, backend=reader, decode_size=decode_size)

    def feature_path(self, clip_uid: str) -> str:
        return os.path.join(self.out_dir, f"{clip_uid}.pt")

    @torch.no_grad()
    def clip_features(self, clip: EpisodicClip, device, progress: tqdm | None = None) -> torch.Tensor:
        """FloatTensor [N, D] of ``clip``'s windows, computed ``windows_per_batch`` windows at a time (``progress``
        is advanced by each window)."""
        times = window_times(clip.start, clip.end, self.num_frames, self.features_per_second)
        if len(times) == 0:
            raise ValueError(f"{clip.source}: clip {clip.clip_uid} ({clip.end - clip.start:.3f} s) is shorter than "
                             f"one window of {self.num_frames} frames at {self.features_per_second} features/s")
        video = clip.video_uid + self.video_ext
        features = []
        for lo in range(0, len(times), self.windows_per_batch):
            window_batch = times[lo:lo + self.windows_per_batch]
            try:
                frames = self.reader.read_frames(video, window_batch.ravel().tolist())
            except VideoReadError as err:
                raise VideoReadError(f"{clip.source} (clip {clip.clip_uid}): {err}") from err
            frames = self.transform(frames)  # [k * F, 3, R, R]
            frames = frames.view(len(window_batch), self.num_frames, *frames.shape[1:])
            features.append(encode_video(self.model, frames, device).float().cpu())
            if progress is not None:
                progress.update(len(window_batch))
        return torch.cat(features)

    @torch.no_grad()
    def query_embeddings(self, queries: list[str], device) -> dict[str, torch.Tensor]:
        """``{query: FloatTensor [1, D]}`` from the text tower alone."""
        result = {}
        for lo in range(0, len(queries), QUERY_BATCH):
            batch = queries[lo:lo + QUERY_BATCH]
            embeds = encode_text(self.model, batch, device).float().cpu()
            result.update({query: embeds[i:i + 1].clone() for i, query in enumerate(batch)})
        return result

    def extract(self, device, show_progress: bool = True) -> dict:
        """Extract this process's share of the clips (and, on the first process, the query features); returns
        ``{'clips', 'extracted', 'skipped', 'windows'}`` counts of this process."""
        self.eval()
        os.makedirs(self.out_dir, exist_ok=True)
        clips = read_clips(self.annotations)
        rank, world = distributed.get_rank(), distributed.get_world_size()
        shard = self.shard
        mine = select_shard(clips, shard[0] * world + rank, shard[1] * world)
        todo = [clip for clip in mine if not os.path.isfile(self.feature_path(clip.clip_uid))]
        total = sum(len(window_times(c.start, c.end, self.num_frames, self.features_per_second)) for c in todo)
        logger.info("feature extraction: %d clips in %d files, %d for this process, %d to do (%d windows)",
                    len(clips), len(self.annotations), len(mine), len(todo), total)
        with tqdm(total=total, unit="window", desc="features", disable=not show_progress) as bar:
            for clip in todo:
                bar.set_postfix_str(clip.clip_uid[:12])
                save_atomic(self.clip_features(clip, device, bar), self.feature_path(clip.clip_uid))
        if self.query_features and rank == 0 and shard[0] == 0:
            path = os.path.join(self.out_dir, self.query_features)
            if not os.path.isfile(path):
                save_atomic(self.query_embeddings(read_queries(self.annotations), device), path)
        distributed.barrier()
        if rank == 0:
            self.write_shapes(clips)
        return {"clips": len(mine), "extracted": len(todo), "skipped": len(mine) - len(todo), "windows": total}

    def write_shapes(self, clips: list[EpisodicClip]) -> None:
        """``feature_shapes.json`` ``{clip_uid: N}`` of every clip whose feature file exists."""
        shapes = {c.clip_uid: len(window_times(c.start, c.end, self.num_frames, self.features_per_second))
                  for c in clips if os.path.isfile(self.feature_path(c.clip_uid))}
        with atomic_file(os.path.join(self.out_dir, "feature_shapes.json")) as tmp:
            with open(tmp, "w") as f:
                json.dump(shapes, f, indent=0, sort_keys=True)
