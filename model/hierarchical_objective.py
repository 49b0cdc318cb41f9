"""The hierarchical prediction objective: every level predicts its neighbours (up, down, sideways in time).

For active levels ``g`` of a :class:`model.hierarchical.HierarchicalVideoEncoder` (outputs arranged in groups,
see :func:`sequence_view`):

- **up** (every level but the last; next level ``h``): ``pred = P_up(agg_g)`` per item of ``h``'s token
  sequence. If ``h`` is non-causal the target is ``agg_h`` repeated per item; if causal, item ``t`` predicts
  ``h``'s token ``t − 1`` (which has not seen item ``t``), and the first item gets no loss.
- **down** (every level but the first; level below ``l``): non-causal ``g``: ``pred = P_down(agg_g + PE[p])``
  for one uniformly random item ``p`` per group, target ``agg_l[p]``; causal ``g``: ``pred = P_down(tokens_g)``
  and token ``t`` predicts ``agg_l`` item ``t + 1``, the last token gets no loss.
- **side** (levels whose aggregates form a sequence of ``n > 1`` items): ``pred = P_side(agg_g[i] +
  relPE[p_i − i])``, target ``agg_g[p_i]`` with ``p_i ~ round(N(i, max(i, n − i)/std_divisor))`` in ``[0, n)``,
  ``p_i ≠ i``.

Targets from another level are detached (``detach_targets``): each level trains as a separate network. Each
direction's loss is one of :data:`model.losses.ssl.PREDICTION_LOSSES`; VICReg skips the target's variance and
covariance terms when the target carries no gradient. The total is ``Σ w_{g,dir} · L`` over trainable levels;
weights anneal linearly to 1: ``w ← round(w − (w − 1)/(E + 1 − e), 3)`` after each epoch ``e ≤ E``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.hierarchical import HierarchicalVideoEncoder, PositionConditioner, Predictor
from model.losses.ssl import PREDICTION_LOSSES, vicreg
from utils.registry import LOSSES

DIRECTIONS = ("up", "down", "side")


@dataclass(frozen=True)
class PlanEntry:
    """One prediction: ``level`` predicts ``target`` in ``direction``; ``shift`` is the index offset of the
    target item relative to the predicting item (−1 up into a causal level, +1 down from a causal level, else 0)."""

    level: str
    direction: str
    target: str
    shift: int


def prediction_plan(levels: list[str], causal: dict[str, bool], directions=DIRECTIONS,
                    side_levels: tuple[str, ...] = ()) -> list[PlanEntry]:
    """The predictions among ``levels`` (ordered bottom-up); side only for ``side_levels``."""
    plan = []
    for i, level in enumerate(levels):
        if "up" in directions and i + 1 < len(levels):
            above = levels[i + 1]
            plan.append(PlanEntry(level, "up", above, -1 if causal[above] else 0))
        if "down" in directions and i > 0:
            plan.append(PlanEntry(level, "down", levels[i - 1], 1 if causal[level] else 0))
        if "side" in directions and level in side_levels:
            plan.append(PlanEntry(level, "side", level, 0))
    return plan


def shifted_pairs(pred: torch.Tensor, target: torch.Tensor, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Align item ``t`` of ``pred [..., n, D]`` with item ``t + shift`` of ``target [..., n, D]``; items whose
    partner falls outside ``[0, n)`` are dropped (shift −1: the first prediction; +1: the last)."""
    if shift == 0:
        return pred, target
    n = pred.shape[-2]
    if shift < 0:
        return pred[..., -shift:, :], target[..., :n + shift, :]
    return pred[..., :n - shift, :], target[..., shift:, :]


def sample_side_positions(n: int, shape: tuple[int, ...], std_divisor: float = 3.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """``p [*shape, n]``: for each item ``i`` a partner ``round(N(i, max(i, n − i)/std_divisor))`` redrawn until
    it lies in ``[0, n)`` and differs from ``i`` (after 20 rounds, a uniform other item)."""
    if n < 2:
        raise ValueError("side prediction needs sequences of at least 2 items")
    index = torch.arange(n).expand(*shape, n)
    std = torch.maximum(index, n - index).float() / std_divisor
    positions = index.clone()
    invalid = torch.ones(index.shape, dtype=torch.bool)
    for _ in range(20):
        draw = torch.round(index + std * torch.randn(index.shape, generator=generator)).long()
        positions = torch.where(invalid, draw, positions)
        invalid = (positions < 0) | (positions >= n) | (positions == index)
        if not invalid.any():
            return positions
    other = (index + 1 + torch.randint(n - 1, index.shape, generator=generator)) % n
    return torch.where(invalid, other, positions)


def annealed_weight(initial: float, epoch: int, anneal_epochs: int) -> float:
    """The loss weight used in (1-based) ``epoch``: ``initial`` annealed after each of the epochs before it,
    ``w ← round(w − (w − 1)/(E + 1 − e), 3)`` for ``e = 1 … min(epoch − 1, E)``; exactly 1 from epoch E + 1."""
    weight = float(initial)
    for e in range(1, min(epoch - 1, anneal_epochs) + 1):
        weight = round(weight - (weight - 1) / (anneal_epochs + 1 - e), 3)
    return weight


def sequence_view(name: str, agg: torch.Tensor, clips: int) -> torch.Tensor:
    """A level's aggregates as items of the next level's token sequences ``[B, G, n, D]``: space
    ``[B, T, D]`` → ``[B, C, T/C, D]``, time ``[B, C, D]`` → ``[B, 1, C, D]``, clip ``[B, D]`` → ``[B, 1, 1, D]``."""
    if name == "space":
        return agg.reshape(agg.shape[0], clips, -1, agg.shape[-1])
    if name == "time":
        return agg.unsqueeze(1)
    return agg[:, None, None]


def grouped_tokens(name: str, outputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Level ``name``'s ``(agg [B, G, D], tokens [B, G, n, D])`` for time (G = C) and clip (G = 1)."""
    agg, tokens = outputs["agg"][name], outputs["tokens"][name]
    if name == "clip":
        return agg.unsqueeze(1), tokens.unsqueeze(1)
    return agg, tokens


@LOSSES.register("HierarchicalPrediction")
class HierarchicalPredictionObjective(nn.Module):
    """Up/down/side prediction losses of a hierarchical encoder (see the module docstring).

    Args:
        loss: per-direction loss, ``"vicreg" | "mse" | "cosine" | "soft_ce"``.
        loss_args: keyword arguments of that loss (e.g. VICReg weights).
        directions: which of up/down/side to use.
        weights: initial weight per ``"<level>/<direction>"`` (default 1), annealed to 1 over ``anneal_epochs``.
        anneal_epochs: E of the annealing; 0 keeps the weights.
        std_divisor: spread of the side partner's distance.
        down_conditioning: ``"abs"`` (item position) or ``"2d"`` (item position and group) for non-causal levels.
        detach_targets: targets from another level carry no gradient.
        predictor_hidden: hidden width of every predictor (default 2 × input width).
        output_batchnorm: BatchNorm on predictor outputs.

    Call :meth:`bind` with the encoder to create the predictors (the task does it).
    """

    def __init__(self, loss: str = "vicreg", loss_args: dict | None = None, directions: list = DIRECTIONS,
                 weights: dict | None = None, anneal_epochs: int = 0, std_divisor: float = 3.0,
                 down_conditioning: str = "abs", detach_targets: bool = True, predictor_hidden: int | None = None,
                 output_batchnorm: bool = False):
        super().__init__()
        if loss not in PREDICTION_LOSSES:
            raise ValueError(f"loss must be one of {sorted(PREDICTION_LOSSES)}, got {loss!r}")
        unknown = set(directions) - set(DIRECTIONS)
        if unknown:
            raise ValueError(f"unknown directions {sorted(unknown)}; choose from {list(DIRECTIONS)}")
        if down_conditioning not in ("abs", "2d"):
            raise ValueError(f"down_conditioning must be 'abs' or '2d', got {down_conditioning!r}")
        self.loss_name, self.loss_args = loss, dict(loss_args or {})
        self.directions, self.weights = tuple(directions), dict(weights or {})
        self.anneal_epochs, self.std_divisor = anneal_epochs, std_divisor
        self.down_conditioning, self.detach_targets = down_conditioning, detach_targets
        self.predictor_hidden, self.output_batchnorm = predictor_hidden, output_batchnorm
        self.predictors = nn.ModuleDict()
        self.conditioners = nn.ModuleDict()
        self.causal: dict[str, bool] = {}

    def bind(self, encoder: HierarchicalVideoEncoder) -> None:
        """Create the predictors of every level of ``encoder`` (active or not)."""
        names, dims = encoder.level_names, encoder.dims
        self.causal = {name: encoder.levels[name].causal for name in names}
        max_items = {name: encoder.levels[name].max_tokens for name in names}  # items per group of each level
        groups = {"time": max_items.get("clip", 1), "clip": 1}
        sequence = {"space": max_items.get("time", 1), "time": max_items.get("clip", 1), "clip": 1}
        self.side_levels = tuple(name for name in names if sequence[name] > 1)
        for entry in prediction_plan(names, self.causal, self.directions, self.side_levels):
            key = f"{entry.level}_{entry.direction}"
            self.predictors[key] = Predictor(dims[entry.level], dims[entry.target], self.predictor_hidden,
                                             self.output_batchnorm)
            if entry.direction == "down" and not self.causal[entry.level]:
                self.conditioners[key] = PositionConditioner(self.down_conditioning, max_items[entry.level],
                                                             dims[entry.level], groups[entry.level])
            elif entry.direction == "side":
                self.conditioners[key] = PositionConditioner("rel", sequence[entry.level], dims[entry.level])

    def level_parameters(self, name: str) -> list[nn.Parameter]:
        """Predictor and conditioner parameters of level ``name``."""
        modules = [m for key, m in [*self.predictors.items(), *self.conditioners.items()]
                   if key.rpartition("_")[0] == name]
        return [p for m in modules for p in m.parameters()]

    def weight(self, level: str, direction: str, epoch: int) -> float:
        return annealed_weight(self.weights.get(f"{level}/{direction}", 1.0), epoch, self.anneal_epochs)

    def _loss(self, pred, target):
        kwargs = dict(self.loss_args)
        if self.loss_name == "vicreg":
            kwargs["target_regularised"] = not target.requires_grad
        return PREDICTION_LOSSES[self.loss_name](pred, target, **kwargs)

    def _cross(self, tensor):
        return tensor.detach() if self.detach_targets else tensor

    def pairs(self, entry: PlanEntry, outputs: dict, clips: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target) of one plan entry, aligned item by item."""
        key = f"{entry.level}_{entry.direction}"
        predictor = self.predictors[key]
        agg = outputs["agg"]
        if entry.direction == "up":
            source = sequence_view(entry.level, agg[entry.level], clips)          # [B, G, n, D_g]
            target_agg, target_tokens = grouped_tokens(entry.target, outputs)
            pred = predictor(source)
            if self.causal[entry.target]:
                return shifted_pairs(pred, self._cross(target_tokens), entry.shift)
            return pred, self._cross(target_agg).unsqueeze(2).expand_as(pred)
        if entry.direction == "down":
            level_agg, level_tokens = grouped_tokens(entry.level, outputs)         # [B, G, D], [B, G, n, D]
            below = self._cross(sequence_view(entry.target, agg[entry.target], clips))  # [B, G, n, D_l]
            if self.causal[entry.level]:
                return shifted_pairs(predictor(level_tokens), below, entry.shift)
            b, g, n = below.shape[:3]
            position = torch.randint(n, (b, g), device=below.device)
            group = torch.arange(g, device=below.device).expand(b, g)
            pred = predictor(level_agg + self.conditioners[key](position, group=group))
            target = below.gather(2, position[:, :, None, None].expand(b, g, 1, below.shape[-1])).squeeze(2)
            return pred, target
        items = sequence_view(entry.level, agg[entry.level], clips)                # side: [B, G, n, D]
        n = items.shape[2]
        partner = sample_side_positions(n, items.shape[:2], self.std_divisor).to(items.device)
        index = torch.arange(n, device=items.device).expand_as(partner)
        pred = predictor(items + self.conditioners[key](partner, source=index))
        target = items.gather(2, partner[..., None].expand_as(items))
        return pred, target

    def forward(self, outputs: dict, levels: list[str], clips: int, epoch: int = 1,
                trainable: set[str] | None = None) -> tuple[torch.Tensor, dict]:
        """``(total loss, {"<level>_<direction>": loss, "weight_<level>_<direction>": w})`` for the active
        ``levels``; only levels in ``trainable`` (default all) count in the total."""
        side = tuple(name for name in self.side_levels if sequence_view(name, outputs["agg"][name], clips).shape[2] > 1)
        total, components = None, {}
        for entry in prediction_plan(levels, self.causal, self.directions, side):
            if trainable is not None and entry.level not in trainable:
                continue
            pred, target = self.pairs(entry, outputs, clips)
            if pred.numel() == 0:
                continue
            name = f"{entry.level}_{entry.direction}"
            weight = self.weight(entry.level, entry.direction, epoch)
            value = self._loss(pred, target)
            components[name], components[f"weight_{name}"] = value.detach(), weight
            total = weight * value if total is None else total + weight * value
        if total is None:
            raise ValueError(f"no prediction loss for levels {levels} (trainable: {trainable}); "
                             "enable more directions or levels")
        return total, components


@LOSSES.register("SiameseVICReg")
class SiameseVICRegObjective(nn.Module):
    """The siamese baseline: VICReg between projections of two windows of one video.

    ``projector = Linear(D → hidden) → BatchNorm → ReLU → Linear(→ out_dim)`` on the encoder's features (the
    final active level's aggregate); weights ``sim``/``std``/``cov`` (upstream baseline 5/5/1)."""

    two_views = True

    def __init__(self, hidden: int = 128, out_dim: int = 128, sim_weight: float = 5.0, std_weight: float = 5.0,
                 cov_weight: float = 1.0):
        super().__init__()
        self.hidden, self.out_dim = hidden, out_dim
        self.weights = dict(sim_weight=sim_weight, std_weight=std_weight, cov_weight=cov_weight)
        self.projector = None

    def bind(self, encoder: HierarchicalVideoEncoder) -> None:
        self.top_level = encoder.level_names[-1]
        self.projector = nn.Sequential(nn.Linear(encoder.final_dim, self.hidden), nn.BatchNorm1d(self.hidden),
                                       nn.ReLU(), nn.Linear(self.hidden, self.out_dim))

    def level_parameters(self, name: str) -> list[nn.Parameter]:
        """The projector belongs to the top level."""
        return list(self.projector.parameters()) if name == self.top_level else []

    def forward(self, features_a: torch.Tensor, features_b: torch.Tensor) -> tuple[torch.Tensor, dict]:
        x, y = self.projector(features_a), self.projector(features_b)
        loss = vicreg(x, y, **self.weights)
        return loss, {"vicreg": loss.detach(), "feature_std": x.detach().std(dim=0).mean()}
