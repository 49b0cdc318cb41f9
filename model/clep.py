"""CLEP: two projection towers over precomputed sentence embeddings and video features, a learnable logit scale,
and the symmetric contrastive objective with hard, soft or BCE targets.

``S = scale · T Vᵀ`` (rows text, columns video), ``L = ½[CE(S, targets) + CE(Sᵀ, targetsᵀ)]``. The logit scale
is a parameter ``s`` initialised to ln(1/0.07) and clamped to [0, ln 100] after every optimizer step (a hook does
it); the multiplier is ``exp(s)`` in mode 'exp' (CLIP, 14.3 at the start, at most 100; the default) or ``s`` itself in
mode 'raw' (what Ego4D's CLEP code does: 2.66 to 4.61, so the "temperature" is not CLIP's; with its unnormalised
embeddings the embedding norms carry the scale).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from model.distributed_gather import all_gather_tensor, all_gather_with_grad, gather_batch_sizes
from model.losses.contrastive import contrastive_loss, similarity_targets
from utils.registry import LOSSES, MODELS

CLIP_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100)


class LogitScale(nn.Module):
    """A learnable logit scale ``s`` (0-d parameter): ``forward()`` is ``exp(s)`` ('exp') or ``s`` ('raw');
    :meth:`clamp_` keeps ``s`` in ``[minimum, maximum]``."""

    def __init__(self, mode: Literal["raw", "exp"] = "exp", init: float = CLIP_LOGIT_SCALE,
                 minimum: float = 0.0, maximum: float = MAX_LOGIT_SCALE):
        super().__init__()
        if mode not in ("raw", "exp"):
            raise ValueError(f"logit scale mode must be 'raw' or 'exp', got {mode!r}")
        self.mode, self.minimum, self.maximum = mode, float(minimum), float(maximum)
        self.value = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> torch.Tensor:
        return self.value.exp() if self.mode == "exp" else self.value

    @torch.no_grad()
    def clamp_(self) -> None:
        self.value.clamp_(self.minimum, self.maximum)


def projection_tower(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear → ReLU → Linear, Xavier-uniform weights with gain √2 (ReLU), zero biases."""
    tower = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
    for layer in (tower[0], tower[2]):
        nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain("relu"))
        nn.init.zeros_(layer.bias)
    return tower


def normalize_classifier(class_embeddings: torch.Tensor, mode: Literal["per_class", "per_dimension"]):
    """Zero-shot classifier [C, D] from projected class-prompt embeddings [C, D].

    'per_class' L2-normalises each class vector (CLIP), so scores are cosines. 'per_dimension' normalises each
    embedding dimension across the classes (what Ego4D's CLEP evaluation does, ``normalize(W.T, dim=-1)``); it
    rescales dimensions against each other and changes the predictions."""
    if mode == "per_class":
        return F.normalize(class_embeddings, dim=-1)
    if mode == "per_dimension":
        return F.normalize(class_embeddings, dim=0)
    raise ValueError(f"classifier normalisation must be 'per_class' or 'per_dimension', got {mode!r}")


@MODELS.register()
class CLEPTwoTower(nn.Module):
    """Text tower ``[.., text_dim] → [.., embed_dim]``, video tower ``[.., video_dim] → [.., embed_dim]`` (each
    Linear–ReLU–Linear through ``hidden_dim``) and a :class:`LogitScale`. Ego4D CLEP: 768 (all-mpnet-base-v2)
    and 1536 (Omnivore Swin-L) in, 1536 hidden and out."""

    def __init__(self, text_dim: int = 768, video_dim: int = 1536, hidden_dim: int = 1536, embed_dim: int = 1536,
                 logit_scale_mode: Literal["raw", "exp"] = "exp", logit_scale_init: float = CLIP_LOGIT_SCALE,
                 logit_scale_max: float = MAX_LOGIT_SCALE):
        super().__init__()
        self.text_proj = projection_tower(text_dim, hidden_dim, embed_dim)
        self.visual_proj = projection_tower(video_dim, hidden_dim, embed_dim)
        self.logit_scale = LogitScale(logit_scale_mode, logit_scale_init, maximum=logit_scale_max)

    def forward(self, text: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(text_embeds [B, embed_dim], video_embeds [B, embed_dim])``."""
        return self.text_proj(text), self.visual_proj(video)

    def zero_shot_logits(self, video: torch.Tensor, class_text: torch.Tensor,
                         classifier_norm: Literal["per_class", "per_dimension"] = "per_class") -> torch.Tensor:
        """``scale · normalize(visual_proj(video)) · Wᵀ``: video [..., video_dim], class_text [C, text_dim] →
        [..., C], with W from :func:`normalize_classifier`."""
        classifier = normalize_classifier(self.text_proj(class_text), classifier_norm)
        return self.logit_scale() * F.normalize(self.visual_proj(video), dim=-1) @ classifier.t()


@LOSSES.register()
class CLEPLoss(nn.Module):
    """``½[CE(S, Y) + CE(Sᵀ, Yᵀ)]`` over the global batch (gathered over ranks, gradients flowing back to each).

    Args:
        targets: 'hard' (the matching pair), 'soft' (cross-entropy against text-similarity targets) or 'bce'
            (binary cross-entropy with logits against the same targets as 'soft', or the diagonal).
        normalize_embeddings: L2-normalise both towers' outputs first, so the logits are scaled cosines as in CLIP
            (Ego4D's ``norm_logits``, off in its recipe).
        soft_threshold: affinity ``(cos(t_i, t_j) + 1) / 2`` of the ``text_no_tag`` embeddings at or above which
            a pair is a positive ('soft' and 'bce'); None with 'bce': the diagonal only.
        soft_weighting: positives weighted by their affinity ('similarity') or 1 ('binary').
        normalize_targets: 'soft': divide each target row by its sum (False: upstream, see contrastive_loss).

    ``forward(text_embeds, video_embeds, scale, text_no_tag=None) -> (loss, components)``; components:
    ``clep`` (the loss, detached).
    """

    def __init__(self, targets: Literal["hard", "soft", "bce"] = "hard", normalize_embeddings: bool = True,
                 soft_threshold: float | None = 0.95, soft_weighting: Literal["similarity", "binary"] = "similarity",
                 normalize_targets: bool = True):
        super().__init__()
        if targets not in ("hard", "soft", "bce"):
            raise ValueError(f"CLEPLoss: targets must be 'hard', 'soft' or 'bce', got {targets!r}")
        if targets == "soft" and soft_threshold is None:
            raise ValueError("CLEPLoss: targets='soft' needs a soft_threshold")
        self.targets, self.normalize_embeddings = targets, normalize_embeddings
        self.soft_threshold, self.soft_weighting, self.normalize_targets = soft_threshold, soft_weighting, \
            normalize_targets

    def target_weights(self, text_no_tag: torch.Tensor | None, size: int, device) -> torch.Tensor | None:
        if self.targets == "hard" or (self.targets == "bce" and self.soft_threshold is None):
            return None if self.targets == "hard" else torch.eye(size, device=device)
        if text_no_tag is None:
            raise ValueError(f"CLEPLoss(targets={self.targets!r}) needs the batch's 'text_no_tag' embeddings")
        unit = F.normalize(text_no_tag.float(), dim=-1)
        return similarity_targets(unit @ unit.t(), self.soft_threshold, self.soft_weighting)

    def forward(self, text_embeds, video_embeds, scale, text_no_tag=None):
        device = video_embeds.device
        with torch.autocast(device_type=device.type, enabled=False):
            sizes = gather_batch_sizes(video_embeds.shape[0], device)
            text = all_gather_with_grad(text_embeds, sizes).float()
            video = all_gather_with_grad(video_embeds, sizes).float()
            if self.normalize_embeddings:
                text, video = F.normalize(text, dim=-1), F.normalize(video, dim=-1)
            no_tag = None if text_no_tag is None else all_gather_tensor(text_no_tag.to(device).float(), sizes)
            weights = self.target_weights(no_tag, text.shape[0], device)
            loss = contrastive_loss(text @ video.t(), weights, scale=scale.float(), reduction="mean_dirs",
                                    targets=self.targets, normalize_targets=self.normalize_targets)
        return loss, {"clep": loss.detach()}
