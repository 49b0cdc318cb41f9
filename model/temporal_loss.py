"""Temporal consistency between clips that are close in time in the same video.

Two names are re-exported here for code that imports them from this module, each resolved on first
access (module ``__getattr__``): ``EnhancedEgoNCEWithTemporal`` (the trainer-facing objective, in
``model.loss``, which imports this module) and ``TemporalPairBatchSampler`` (in
``data_loader.samplers``; importing the model package never imports the data package).
"""
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

EMBEDDING_CHOICES = ('fused', 'per_scale', 'cross_scale')
LOSS_TYPES = ('cosine', 'contrastive')


class TemporalConsistencyLoss(nn.Module):
    """Pulls together the video embeddings of temporally adjacent clips.

    Args:
        lambda_start, lambda_end: weight schedule endpoints, see ``lambda_at``.
        max_time_gap: pairs with ``|dt| > max_time_gap`` seconds are ignored.
        loss_type: 'cosine' — mean over pairs of ``1 - cos(v_i, v_j)`` (in [0, 2]). It is
            minimised by mapping every clip to the same vector, so on its own it rewards
            collapse; it relies on EgoNCE to keep embeddings apart.
            'contrastive' — for each pair, InfoNCE with the partner as the positive and
            every other clip of the batch as a negative (both directions, averaged); a
            collapsed embedding scores log(B - 1), so it does not reward collapse.
        temperature: softmax temperature of 'contrastive' (unused by 'cosine').
        embeddings: which embeddings are compared: 'fused' (the model's output),
            'per_scale' (each scale with itself, averaged over scales) or 'cross_scale'
            (v_i at scale s against v_j at scale s' for every ordered pair s != s', averaged).
    """

    def __init__(self, lambda_start: float = 0.1, lambda_end: float = 0.3, max_time_gap: float = 2.0,
                 loss_type: Literal[LOSS_TYPES] = 'cosine', temperature: float = 0.1,
                 embeddings: Literal[EMBEDDING_CHOICES] = 'fused'):
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"TemporalConsistencyLoss: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if embeddings not in EMBEDDING_CHOICES:
            raise ValueError(f"TemporalConsistencyLoss: embeddings must be one of {EMBEDDING_CHOICES}, "
                             f"got {embeddings!r}")
        if temperature <= 0:
            raise ValueError(f"TemporalConsistencyLoss: temperature must be > 0, got {temperature}")
        self.lambda_start = float(lambda_start)
        self.lambda_end = float(lambda_end)
        self.max_time_gap = float(max_time_gap)
        self.loss_type = loss_type
        self.temperature = float(temperature)
        self.embeddings = embeddings

    def lambda_at(self, epoch, total_epochs):
        """Weight for 0-based ``epoch`` of ``total_epochs``: lambda_start at epoch 0, linear to
        lambda_end at the last epoch (``total_epochs - 1``), clamped outside that range."""
        if total_epochs < 1:
            raise ValueError(f"TemporalConsistencyLoss.lambda_at: total_epochs must be >= 1, got {total_epochs}")
        progress = min(max(epoch / max(total_epochs - 1, 1), 0.0), 1.0)
        return self.lambda_start + (self.lambda_end - self.lambda_start) * progress

    def valid_pairs(self, temporal_pairs, batch_size, device=None):
        """LongTensor [P', 2] of the (i, j) rows of ``temporal_pairs`` [P, 3] with |dt| <= max_time_gap.

        ``temporal_pairs``: tensor or sequence of (i, j, dt) rows, i and j batch positions.
        """
        pairs = torch.as_tensor(temporal_pairs, dtype=torch.float32)
        if pairs.numel() == 0:
            return torch.zeros((0, 2), dtype=torch.long, device=device)
        if pairs.ndim != 2 or pairs.shape[1] != 3:
            raise ValueError(f"temporal_pairs must have shape [P, 3] rows (i, j, dt), got {tuple(pairs.shape)}")
        index = pairs[:, :2].long()
        bad = (index < 0).any(dim=1) | (index >= batch_size).any(dim=1) | (index[:, 0] == index[:, 1])
        if bad.any():
            row = int(bad.nonzero()[0])
            raise ValueError(f"temporal_pairs row {row} {pairs[row].tolist()} is not a pair of two different "
                             f"clips of the batch of {batch_size}")
        keep = pairs[:, 2].abs() <= self.max_time_gap
        return index[keep].to(device)

    def forward(self, video_embeds, temporal_pairs, scale_embeds=None):
        """Scalar float32 loss; 0 (no NaN) when no pair is within ``max_time_gap``.

        video_embeds: [B, D] fused embeddings; scale_embeds: {scale: [B, D]} (needed for
        'per_scale' and 'cross_scale'); temporal_pairs: [P, 3] rows (i, j, dt).
        """
        pairs = self.valid_pairs(temporal_pairs, video_embeds.shape[0], device=video_embeds.device)
        return self.loss_on_pairs(video_embeds, pairs, scale_embeds)

    def loss_on_pairs(self, video_embeds, pairs, scale_embeds=None):
        """Like ``forward`` for pairs already filtered by ``valid_pairs`` (LongTensor [P, 2])."""
        if pairs.shape[0] == 0:
            return torch.zeros((), dtype=torch.float32, device=video_embeds.device)
        if self.embeddings == 'fused':
            return self._pair_loss(video_embeds, video_embeds, pairs)
        if not scale_embeds:
            raise ValueError(f"TemporalConsistencyLoss(embeddings={self.embeddings!r}) needs scale_embeds")
        scales = [scale_embeds[s] for s in sorted(scale_embeds)]
        if self.embeddings == 'per_scale':
            losses = [self._pair_loss(v, v, pairs) for v in scales]
        else:
            if len(scales) < 2:
                raise ValueError("TemporalConsistencyLoss(embeddings='cross_scale') needs at least 2 scales, "
                                 f"got {sorted(scale_embeds)}")
            losses = [self._pair_loss(a, b, pairs)
                      for ia, a in enumerate(scales) for ib, b in enumerate(scales) if ia != ib]
        return torch.stack(losses).mean()

    def _pair_loss(self, anchors, partners, pairs):
        """Loss between anchors[i] and partners[j] for each (i, j) row of ``pairs`` [P, 2].

        'contrastive' also scores anchors[j] against partners[i] (each clip of a pair is an anchor once).
        """
        anchors = F.normalize(anchors.float(), dim=-1)
        partners = F.normalize(partners.float(), dim=-1)
        first, second = pairs[:, 0], pairs[:, 1]
        if self.loss_type == 'cosine':
            return (1.0 - (anchors[first] * partners[second]).sum(-1)).mean()
        anchor_rows = torch.cat([first, second])
        targets = torch.cat([second, first])
        logits = anchors[anchor_rows] @ partners.t() / self.temperature
        is_self = torch.arange(partners.shape[0], device=logits.device)[None, :] == anchor_rows[:, None]
        logits = logits.masked_fill(is_self, float('-inf'))
        return F.cross_entropy(logits, targets)


def __getattr__(name):
    """The lazy re-exports named in the module docstring."""
    if name == 'TemporalPairBatchSampler':
        from data_loader.samplers import TemporalPairBatchSampler
        return TemporalPairBatchSampler
    if name == 'EnhancedEgoNCEWithTemporal':
        from model.loss import EnhancedEgoNCEWithTemporal
        return EnhancedEgoNCEWithTemporal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
