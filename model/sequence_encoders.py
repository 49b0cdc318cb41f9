"""Frame-feature encoders for temporal alignment: ``[T, D_in]`` per-frame features → ``[T, D]`` embeddings.

* :class:`StackingEncoder`: 1-D temporal convolutions (kernel 3), channels halving from the input size down to
  the output size (at least ``num_layers`` layers).
* :class:`MLPEncoder`: a per-frame MLP.
* :class:`MultiHeadFusion` (MCN): L head MLPs on the base embedding; per frame, an attention MLP over the
  concatenated head outputs gives softmax weights over the heads and the output is their weighted sum.
* :class:`DropContextHead`: a per-frame MLP averaged over the frames of a video, ``c(V) ∈ R^{D+1}``, for GTCC's
  drop probability ``sigmoid([u; 1]ᵀ c(V))``.
* :class:`AlignmentEncoder`: the config-facing model (``MODELS``) combining them with an optional progress head.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal, Sequence

import torch
from torch import nn

from model.progress import ProgressHead
from utils.config_schema import ArgsOf, Bounds
from utils.registry import MODELS


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU, final_activation: bool = False) -> nn.Sequential:
    """Linear layers through ``sizes`` with ``activation`` between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2 or final_activation:
            layers.append(activation())
    return nn.Sequential(*layers)


def halving_widths(input_dim: int, output_dim: int, num_layers: int) -> list[int]:
    """Output channels of each conv layer: halve from ``input_dim`` until ``output_dim``, padded with
    ``output_dim`` to ``num_layers`` layers (the last is always ``output_dim``)."""
    widths, width = [], input_dim
    while width // 2 > output_dim:
        width //= 2
        widths.append(width)
    widths += [output_dim] * max(num_layers - len(widths), 1)
    return widths


class StackingEncoder(nn.Module):
    """Temporal conv stack: ``[T, input_dim]`` → ``[T, output_dim]`` (length kept, ReLU between layers)."""

    def __init__(self, input_dim: int, output_dim: int = 128, num_layers: int = 7, kernel_size: int = 3):
        super().__init__()
        widths = [input_dim] + halving_widths(input_dim, output_dim, num_layers)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv1d(fan_in, fan_out, kernel_size, padding=kernel_size // 2))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.t().unsqueeze(0)).squeeze(0).t()


class MLPEncoder(nn.Module):
    """Per-frame MLP ``input_dim → hidden_dim (× num_layers − 1) → output_dim``."""

    def __init__(self, input_dim: int, output_dim: int = 128, num_layers: int = 3, hidden_dim: int = 512):
        super().__init__()
        self.layers = mlp([input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MultiHeadFusion(nn.Module):
    """MCN fusion of ``num_heads`` heads ``D → head_hidden → D`` with per-frame attention weights.

    ``forward(x [T, D])`` → ``(fused [T, D], weights [T, L])``; the weights of every frame sum to 1. Heads are kept
    in a ModuleList built in index order, so parameter names and outputs are the same in every run.
    """

    def __init__(self, dim: int, num_heads: int, head_hidden: Sequence[int] = (512, 128, 256),
                 attention_hidden: Sequence[int] = (512, 1024, 512)):
        super().__init__()
        self.heads = nn.ModuleList([mlp([dim, *head_hidden, dim]) for _ in range(num_heads)])
        self.attention = mlp([dim * num_heads, *attention_hidden, num_heads], activation=nn.Tanh)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = torch.stack([head(x) for head in self.heads], dim=1)             # [T, L, D]
        weights = self.attention(outputs.flatten(1)).softmax(dim=-1)                # [T, L]
        return (weights.unsqueeze(-1) * outputs).sum(dim=1), weights


class DropContextHead(nn.Module):
    """``[T, D]`` → ``c(V) [D+1]``: a per-frame MLP ``D → hidden → D+1`` averaged over frames.

    The last layer starts at zero weights and a bias of ``logit(initial_drop)`` on the constant channel, so every
    frame starts with drop probability ``initial_drop``. Started near 0.5, GTCC's ``(1 − P)·L + P/L`` sits at its
    stationary point ``L = 1`` where P gets no gradient, and alignment stalls.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (256, 1024, 512, 256), initial_drop: float = 0.02):
        super().__init__()
        if not 0 < initial_drop < 1:
            raise ValueError(f"initial_drop must be in (0, 1), got {initial_drop}")
        self.net = mlp([dim, *hidden, dim + 1])
        last = self.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        with torch.no_grad():
            last.bias[-1] = math.log(initial_drop / (1 - initial_drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=0)


@MODELS.register()
class AlignmentEncoder(nn.Module):
    """Embeds each video of a batch frame by frame; optional MCN heads, drop context and progress head.

    Args:
        input_dim: per-frame feature size (2048 for EgoProceL's ResNet-50 features).
        output_dim: embedding size D (128).
        encoder: 'stacking' (temporal convs) or 'mlp'. num_layers: layers of the encoder. hidden_dim: MLP width.
        num_heads: MCN heads (1 = no fusion; EgoProceL uses one per task). head_hidden, attention_hidden: MCN MLPs.
        drop_context: build the GTCC drop-context head. context_hidden: its MLP. initial_drop: its drop
            probability at initialisation.
        progress_head: ``ProgressHead`` args (``hidden``, ``mlp_hidden``) to build the learnable progress head, or
            None.

    ``forward(features: list of [T_i, input_dim])`` → ``{'embeddings': [T_i, D] list, 'contexts': [D+1] list or
    None, 'head_weights': [T_i, L] list or None}``.
    """

    def __init__(self, input_dim: Annotated[int, Bounds(1)], output_dim: Annotated[int, Bounds(1)] = 128,
                 encoder: Literal["stacking", "mlp"] = "stacking", num_layers: Annotated[int, Bounds(1)] = 7,
                 hidden_dim: Annotated[int, Bounds(1)] = 512, num_heads: Annotated[int, Bounds(1)] = 1,
                 head_hidden: list[int] = (512, 128, 256), attention_hidden: list[int] = (512, 1024, 512),
                 drop_context: bool = False, context_hidden: list[int] = (256, 1024, 512, 256),
                 initial_drop: Annotated[float, Bounds(0, 1)] = 0.02,
                 progress_head: Annotated[dict | None, ArgsOf(ProgressHead)] = None):
        super().__init__()
        self.input_dim, self.output_dim = input_dim, output_dim
        if encoder == "stacking":
            self.base = StackingEncoder(input_dim, output_dim, num_layers)
        elif encoder == "mlp":
            self.base = MLPEncoder(input_dim, output_dim, num_layers, hidden_dim)
        else:
            raise ValueError(f"encoder must be 'stacking' or 'mlp', got {encoder!r}")
        self.fusion = MultiHeadFusion(output_dim, num_heads, head_hidden, attention_hidden) if num_heads > 1 else None
        self.drop_context = DropContextHead(output_dim, context_hidden, initial_drop) if drop_context else None
        self.progress_head = (ProgressHead(output_dim, **(progress_head or {}))
                              if progress_head is not None else None)

    def encode(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One video ``[T, input_dim]`` → ``(embeddings [T, D], head weights [T, L] or None)``."""
        if features.dim() != 2 or features.shape[1] != self.input_dim:
            raise ValueError(f"AlignmentEncoder expects [T, {self.input_dim}] features, got {tuple(features.shape)}")
        x = self.base(features)
        if self.fusion is None:
            return x, None
        return self.fusion(x)

    def forward(self, features: list[torch.Tensor]) -> dict:
        encoded = [self.encode(f) for f in features]
        embeddings = [e for e, _ in encoded]
        return {"embeddings": embeddings,
                "contexts": [self.drop_context(e) for e in embeddings] if self.drop_context is not None else None,
                "head_weights": [w for _, w in encoded] if self.fusion is not None else None}
