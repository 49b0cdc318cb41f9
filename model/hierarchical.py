"""Hierarchical factorised video transformer: patches of a frame → frames of a clip → clips of a video.

Levels (any prefix of ``space``, ``time``, ``clip``; each a pre-norm transformer with learnable absolute
positional embeddings, a final LayerNorm and, unless causal, a CLS aggregation token):

- ``space``: tokens = the patches of one frame, batched over ``B·T`` frames; aggregate = CLS → ``[B, T, D_s]``.
- ``time``: tokens = the ``F = T / C`` frames of one of ``C`` clips, batched over ``B·C``; → ``[B, C, D_t]``.
- ``clip``: tokens = the ``C`` clips of the video; → ``[B, D_c]``.

A causal level (upper-triangular mask) has no CLS; its aggregate is its last token, the only one that has seen
every input. Linear projections join levels of different widths; with ``detach`` every level reads the level
below through ``detach()``, so each level trains as a separate network. An optional 3-D convolutional stem
(two separable 3-D convolutions, spatial stride 4) runs before patchifying.

:meth:`HierarchicalVideoEncoder.forward` returns ``{"agg": {level: ...}, "tokens": {level: ...}}`` for every
active level, so self-supervised objectives, probes and multi-scale fusion read any level through one interface.
Positional tables are allocated for the largest size a run uses (``max_tokens``); a curriculum activates levels
and longer token ranges (:meth:`set_stage`, :meth:`reset_rows`) without changing any parameter's shape.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.registry import MODELS

LEVEL_ORDER = ("space", "time", "clip")


class Attention(nn.Module):
    """Multi-head self-attention with ``heads × head_dim`` inner width; ``causal`` masks the future."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        """x [N, L, dim] → [N, L, dim]."""
        n, length, _ = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        mask = None
        if causal:  # an explicit -inf mask: every backend computes the same masked softmax
            mask = torch.full((length, length), float("-inf"), device=x.device, dtype=q.dtype).triu(1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(n, length, self.heads * self.head_dim))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))`` (GELU)."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, head_dim, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x, causal: bool):
        x = x + self.attn(self.norm1(x), causal)
        return x + self.mlp(self.norm2(x))


class LevelTransformer(nn.Module):
    """One level: ``[N, L, dim]`` tokens → ``(aggregate [N, dim], tokens [N, L, dim])``.

    Args:
        dim, depth, heads, head_dim, mlp_dim: width, blocks, attention heads and their width, FFN width.
        max_tokens: the longest token sequence this level will read (positional rows; CLS adds one).
        causal: token t attends to tokens ≤ t only; no CLS, the aggregate is the last token.
        dropout: attention and FFN dropout.
    """

    def __init__(self, dim: int, depth: int = 1, heads: int = 2, head_dim: int = 16, mlp_dim: int | None = None,
                 max_tokens: int = 16, causal: bool = False, dropout: float = 0.0):
        super().__init__()
        self.dim, self.causal, self.max_tokens = dim, causal, max_tokens
        self.cls_token = None if causal else nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, max_tokens + (0 if causal else 1), dim))
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, head_dim, mlp_dim or 2 * dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    @property
    def has_cls(self) -> bool:
        return self.cls_token is not None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, length, _ = x.shape
        if length > self.max_tokens:
            raise ValueError(f"{length} tokens, but this level's positional table holds {self.max_tokens} "
                             "(raise its max_tokens)")
        if self.has_cls:  # row 0 is the CLS position, rows 1.. the tokens
            x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        x = self.dropout(x + self.pos_embedding[:, :x.shape[1]])
        for block in self.blocks:
            x = block(x, self.causal)
        x = self.norm(x)
        if self.has_cls:
            return x[:, 0], x[:, 1:]
        return x[:, -1], x


class Conv3dStem(nn.Module):
    """Separable 3-D convolutions with spatial stride 4: ``[B, 3, T, H, W]`` → ``[B, channels, T, H/4, W/4]``."""

    def __init__(self, in_channels: int = 3, channels: int = 32):
        super().__init__()
        mid = channels // 2
        self.layers = nn.Sequential(
            nn.Conv3d(in_channels, mid, (1, 5, 5), stride=(1, 2, 2), padding=(0, 2, 2)),
            nn.Conv3d(mid, mid, (5, 1, 1), padding=(2, 0, 0)), nn.BatchNorm3d(mid), nn.ReLU(),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(mid, channels, (1, 3, 3), padding=(0, 1, 1)),
            nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)), nn.BatchNorm3d(channels), nn.ReLU())

    def forward(self, x):
        return self.layers(x)


class Predictor(nn.Module):
    """``Linear(d → hidden) → BatchNorm → GELU → Linear(→ d_out, no bias)`` [→ BatchNorm]; any leading dims."""

    def __init__(self, dim_in: int, dim_out: int, hidden: int | None = None, output_batchnorm: bool = False):
        super().__init__()
        hidden = hidden or 2 * dim_in
        self.fc1, self.bn = nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, dim_out, bias=False)
        self.out_bn = nn.BatchNorm1d(dim_out) if output_batchnorm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        y = self.fc2(F.gelu(self.bn(self.fc1(x.reshape(-1, x.shape[-1])))))
        if self.out_bn is not None:
            y = self.out_bn(y)
        return y.reshape(*shape, -1)


class PositionConditioner(nn.Module):
    """Learnable embeddings that tell a predictor which position to predict, added to its input.

    ``kind``: ``"abs"`` (position p of n: table ``[n, dim]``), ``"rel"`` (offset p − i of two positions among n:
    table ``[2n − 1, dim]``), ``"2d"`` (position p of n in group g of ``n_groups``: a token part of ⌊2·dim/3⌋
    dims concatenated with a group part of the rest).
    """

    def __init__(self, kind: str, n: int, dim: int, n_groups: int = 1):
        super().__init__()
        if kind not in ("abs", "rel", "2d"):
            raise ValueError(f"position conditioning must be 'abs', 'rel' or '2d', got {kind!r}")
        self.kind, self.n = kind, n
        token_dim = dim if kind != "2d" else (2 * dim) // 3
        self.table = nn.Parameter(torch.randn(2 * n - 1 if kind == "rel" else n, token_dim) * 0.02)
        self.group_table = nn.Parameter(torch.randn(n_groups, dim - token_dim) * 0.02) if kind == "2d" else None

    def forward(self, position: torch.Tensor, source: torch.Tensor | None = None,
                group: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings ``[..., dim]`` for integer ``position`` (and ``source`` for "rel", ``group`` for "2d")."""
        if self.kind == "rel":
            return self.table[position - source + self.n - 1]
        if self.kind == "2d":
            return torch.cat([self.table[position], self.group_table[group]], dim=-1)
        return self.table[position]


@MODELS.register("HierarchicalVideoEncoder")
class HierarchicalVideoEncoder(nn.Module):
    """Patch → frame → clip encoder; see the module docstring.

    Args:
        levels: ordered level configs, a prefix of space/time/clip: ``{"name", "dim", "depth", "heads",
            "head_dim", "mlp_dim", "causal"}``; space also takes nothing else (its token count is the number of
            patches), time ``max_tokens`` (most frames per clip), clip ``max_tokens`` (most clips).
        image_size: frame side in pixels (square frames).
        patch_size: patch side, in pixels of the stem's output.
        in_channels: input channels.
        stem_channels: 0 for no stem (patches of the raw frame), else the channels of the 3-D conv stem.
        clips: clips per video (``C``; the time level's batch factor) at the start.
        active_levels: how many levels run at the start (default all); a curriculum raises it.
        detach: every level reads a detached copy of the level below.
        output_batchnorm: BatchNorm on every level's aggregate.
        dropout: dropout in every level.

    Input ``video [B, T, 3, H, W]`` (float). Output of :meth:`forward`: ``agg`` space ``[B, T, D_s]``, time
    ``[B, C, D_t]``, clip ``[B, D_c]``; ``tokens`` space ``[B, T, N, D_s]`` (patches), time ``[B, C, F, D_t]``,
    clip ``[B, C, D_c]``; and ``inputs`` (what each level above space read, after projection).
    """

    def __init__(self, levels: list[dict], image_size: int = 16, patch_size: int = 4, in_channels: int = 3,
                 stem_channels: int = 0, clips: int = 1, active_levels: int | None = None, detach: bool = True,
                 output_batchnorm: bool = False, dropout: float = 0.0):
        super().__init__()
        names = [level["name"] for level in levels]
        if not names or tuple(names) != LEVEL_ORDER[:len(names)]:
            raise ValueError(f"levels must be a prefix of {list(LEVEL_ORDER)}, got {names}")
        feature_side = image_size // 4 if stem_channels else image_size
        if feature_side % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide the {feature_side}-pixel feature map")
        self.patch_size, self.detach = patch_size, detach
        self.num_patches = (feature_side // patch_size) ** 2
        channels = stem_channels or in_channels
        self.stem = Conv3dStem(in_channels, stem_channels) if stem_channels else None
        self.level_names = names
        self.dims = {level["name"]: level["dim"] for level in levels}
        self.patch_embed = nn.Linear(patch_size * patch_size * channels, self.dims["space"])
        self.levels = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        self.agg_norms = nn.ModuleDict()
        for i, spec in enumerate(levels):
            spec = dict(spec)
            name = spec.pop("name")
            max_tokens = self.num_patches if name == "space" else spec.pop("max_tokens")
            self.levels[name] = LevelTransformer(max_tokens=max_tokens, dropout=dropout, **spec)
            if i:
                below = self.dims[names[i - 1]]
                self.projections[name] = nn.Linear(below, spec["dim"]) if below != spec["dim"] else nn.Identity()
            if output_batchnorm:
                self.agg_norms[name] = nn.BatchNorm1d(spec["dim"])
        self.clips = clips
        self.active_levels = len(names) if active_levels is None else active_levels

    # ------------------------------------------------------------------ curriculum
    @property
    def active(self) -> list[str]:
        return self.level_names[:self.active_levels]

    @property
    def final_dim(self) -> int:
        return self.dims[self.active[-1]]

    def set_stage(self, active_levels: int, clips: int) -> None:
        """Run the first ``active_levels`` levels with ``clips`` clips per video."""
        if not 1 <= active_levels <= len(self.level_names):
            raise ValueError(f"active_levels must be in 1..{len(self.level_names)}, got {active_levels}")
        self.active_levels, self.clips = active_levels, clips

    def level_parameters(self, name: str) -> list[nn.Parameter]:
        """The parameters that belong to level ``name`` (space also owns the stem and the patch embedding)."""
        modules = [self.levels[name]]
        if name in self.projections:
            modules.append(self.projections[name])
        if name in self.agg_norms:
            modules.append(self.agg_norms[name])
        if name == self.level_names[0]:
            modules += [m for m in (self.stem, self.patch_embed) if m is not None]
        return [p for m in modules for p in m.parameters()]

    # ------------------------------------------------------------------ forward
    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` → patch embeddings ``[B, T, N, D_s]`` (``b f (h p1)(w p2) c → b f (h w)(p1 p2 c)``)."""
        b, t = video.shape[:2]
        if self.stem is not None:
            video = self.stem(video.transpose(1, 2)).transpose(1, 2)
        c, h, w = video.shape[2:]
        p = self.patch_size
        x = video.reshape(b, t, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 4, 6, 2)
        return self.patch_embed(x.reshape(b, t, (h // p) * (w // p), p * p * c))

    def _aggregate(self, name: str, agg: torch.Tensor) -> torch.Tensor:
        if name not in self.agg_norms:
            return agg
        return self.agg_norms[name](agg.reshape(-1, agg.shape[-1])).reshape(agg.shape)

    def forward(self, video: torch.Tensor) -> dict:
        b, t = video.shape[:2]
        out = {"agg": {}, "tokens": {}, "inputs": {}}
        patches = self.patchify(video)
        agg, tokens = self.levels["space"](patches.flatten(0, 1))
        out["agg"]["space"] = self._aggregate("space", agg.view(b, t, -1))
        out["tokens"]["space"] = tokens.view(b, t, *tokens.shape[1:])
        below = out["agg"]["space"]
        for name in self.active[1:]:
            x = self.projections[name](below.detach() if self.detach else below)
            if name == "time":
                if t % self.clips:
                    raise ValueError(f"{t} frames do not split into {self.clips} clips")
                x = x.reshape(b * self.clips, t // self.clips, -1)
            out["inputs"][name] = x
            agg, tokens = self.levels[name](x)
            if name == "time":
                agg, tokens = agg.view(b, self.clips, -1), tokens.view(b, self.clips, *tokens.shape[1:])
            out["agg"][name] = self._aggregate(name, agg)
            out["tokens"][name] = tokens
            below = out["agg"][name]
        return out

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """The embedding of each video ``[B, D]``: the final active level's aggregate (clips/frames averaged)."""
        agg = self(video)["agg"][self.active[-1]]
        return agg if agg.dim() == 2 else agg.mean(dim=1)

    def scale_embeddings(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{level: [B, D_level]}``: every active level's aggregate averaged over its groups, for fusion heads."""
        return {name: agg if agg.dim() == 2 else agg.mean(dim=1) for name, agg in self(video)["agg"].items()}

    @torch.no_grad()
    def reset_rows(self, name: str, start: int, generator: torch.Generator) -> list[tuple[nn.Parameter, slice]]:
        """Fresh positional rows ``start:`` of level ``name`` (the rows a longer sequence starts to use); rows
        before ``start`` keep their values exactly. Returns ``[(parameter, rows)]`` that were re-initialised."""
        level = self.levels[name]
        first = start + (1 if level.has_cls else 0)
        table = level.pos_embedding
        rows = slice(first, table.shape[1])
        fresh = torch.randn(table[:, rows].shape, generator=generator).clamp_(-2, 2).mul_(0.02)
        table[:, rows] = fresh.to(table)
        return [(table, rows)]


def grow_positional_embeddings(old_state: dict, model: nn.Module) -> list[str]:
    """Load a state dict from a smaller model: positional tables that grew get the old rows copied into their
    first rows (new rows keep their initialisation), everything else of matching shape is copied, missing keys
    (new levels) stay as initialised. Returns the keys that were grown."""
    state = model.state_dict()
    grown = []
    for key, value in old_state.items():
        if key not in state:
            continue
        target = state[key]
        if key.endswith("pos_embedding") and value.shape[1] < target.shape[1]:
            target[:, :value.shape[1]] = value
            grown.append(key)
        elif value.shape == target.shape:
            target.copy_(value)
        else:
            raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)} does not fit {tuple(target.shape)}")
    model.load_state_dict(state)
    return grown


__all__ = ["Attention", "Block", "LevelTransformer", "Conv3dStem", "Predictor", "PositionConditioner",
           "HierarchicalVideoEncoder", "grow_positional_embeddings", "LEVEL_ORDER"]
