"""Multi-scale EgoClip/EgoMCQ: every clip as nested 4/8/16-frame (or configured) views of one decode.

Train item: ``{'video': {'frames_4': [4, 3, R, R], 'frames_8': ..., 'frames_16': ...},
'scale_mask': bool [S], 'text', 'meta', 'verb_vec', 'noun_vec'}``; val/test item: ``video`` as
``{'frames_<s>': [5, s, 3, R, R]}`` and ``scale_mask`` ``[5, S]`` (one row per choice).
"""
from __future__ import annotations

import numpy as np

from data_loader.EgoClip_EgoMCQ_dataset import EgoClip_EgoMCQ
from data_loader.metadata import ClipRow
from data_loader.transforms import VideoTransform

DEFAULT_SCALES = [4, 8, 16]


class MultiScaleEgoClip_EgoMCQ(EgoClip_EgoMCQ):
    """:class:`EgoClip_EgoMCQ` returning the multi-scale frames dict (see that class for the arguments).

    ``video_params['scales']`` (default [4, 8, 16]) sets the views; ``num_frames`` is their maximum.
    ``video_params['short_clip_policy']``: 'pad' (clips with fewer distinct frames than a scale repeat
    their last frame; every scale usable) or 'skip' (those scales are masked out in ``scale_mask``).
    """

    def __init__(self, dataset_name: str = "EgoClip", video_params: dict | None = None,
                 data_dir: str = "data/synthetic/videos", meta_dir: str = "data/synthetic/meta",
                 split: str = "train", tsfms: VideoTransform | None = None,
                 reader: dict | str | None = None, neg_param: float | None = None, seed: int = 0):
        video_params = dict(video_params or {})
        if video_params.get("scales") is None:
            video_params["scales"] = list(DEFAULT_SCALES)
        finest = max(video_params["scales"], default=0)
        video_params.setdefault("num_frames", finest)
        if video_params["num_frames"] != finest:
            raise ValueError(f"video_params.num_frames {video_params['num_frames']} must equal the largest "
                             f"scale {finest} (or be left out)")
        super().__init__(dataset_name, video_params, data_dir, meta_dir, split, tsfms, reader, neg_param, seed)

    def _get_video(self, clip: ClipRow, rng: np.random.Generator) -> dict:
        frames, scale_mask = self._get_video_multiscale(clip, rng)
        return {"video": frames, "scale_mask": scale_mask}
