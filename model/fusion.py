"""Fusion of per-scale video embeddings into one embedding.

- 'learned_weighted': one weight per scale, softmax over S learned logits (initialised equal).
- 'attention': per-sample weights, softmax over S of `logit_s + score(e_s + scale_embed_s)`, where a
  small MLP scores each scale's embedding; the scorer's last layer starts at zero, so the weights
  start equal as well.

Both honour a per-sample usable-scale mask: masked scales get weight exactly 0 and the rest
renormalise (a softmax over the usable scales only).
"""
import torch
from torch import nn

FUSION_TYPES = ('learned_weighted', 'attention')


class ScaleFusion(nn.Module):
    """Weighted sum over scales: `[B, S, D]` embeddings (+ `[B, S]` or `[S]` bool mask) -> `[B, D]`, `[B, S]`."""

    def __init__(self, num_scales, embed_dim, fusion_type='learned_weighted'):
        super().__init__()
        if fusion_type not in FUSION_TYPES:
            raise ValueError(f"fusion_type must be one of {FUSION_TYPES}, got {fusion_type!r}")
        self.fusion_type = fusion_type
        self.scale_logits = nn.Parameter(torch.zeros(num_scales))
        if fusion_type == 'attention':
            hidden_dim = max(embed_dim // 2, 1)
            self.scale_embed = nn.Parameter(torch.zeros(num_scales, embed_dim))
            nn.init.trunc_normal_(self.scale_embed, std=0.02)
            self.scorer = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, hidden_dim), nn.Tanh(),
                                        nn.Linear(hidden_dim, 1))
            nn.init.zeros_(self.scorer[-1].weight)
            nn.init.zeros_(self.scorer[-1].bias)

    def get_fusion_weights(self):
        """Sample-independent scale weights `[S]` (softmax of the learned logits; for 'attention' the prior part)."""
        return self.scale_logits.softmax(dim=0)

    def weights(self, scale_embeds, usable=None):
        """Fusion weights `[B, S]` for `scale_embeds [B, S, D]`; `usable` `[B, S]` or `[S]` bool, True = usable."""
        batch, num_scales = scale_embeds.shape[:2]
        logits = self.scale_logits.expand(batch, num_scales)
        if self.fusion_type == 'attention':
            logits = logits + self.scorer(scale_embeds + self.scale_embed).squeeze(-1)
        if usable is None:
            return logits.softmax(dim=1)
        usable = usable.to(device=logits.device, dtype=torch.bool).expand(batch, num_scales)
        empty_rows = (~usable.any(dim=1)).nonzero().flatten().tolist()
        if empty_rows:
            raise ValueError(f"scale mask leaves no usable scale for batch rows {empty_rows}")
        return logits.masked_fill(~usable, float('-inf')).softmax(dim=1)

    def forward(self, scale_embeds, usable=None):
        """Fused embedding `[B, D]` and the weights `[B, S]` used."""
        weights = self.weights(scale_embeds, usable)
        fused = (weights.unsqueeze(-1) * scale_embeds).sum(dim=1)
        return fused, weights
