"""Optimizer parameter groups: weight decay on weights only, a separate rate for new parameters, frozen ones."""
from __future__ import annotations

from torch import nn


def build_param_groups(model: nn.Module, base_lr: float, weight_decay: float, options) -> list[dict]:
    """AdamW groups: decayed weights; biases/norms without decay; new parameters (``options.new_param_patterns``,
    e.g. the fusion weights) at ``base_lr * new_param_lr_scale`` with ``new_param_weight_decay``."""
    groups = {"decay": [], "no_decay": [], "new": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if any(pattern in name for pattern in options.new_param_patterns):
            groups["new"].append(param)
        elif options.weight_decay_exclude_norm_bias and (param.ndim <= 1 or name.endswith(".bias")):
            groups["no_decay"].append(param)
        else:
            groups["decay"].append(param)
    return [g for g in (
        {"name": "decay", "params": groups["decay"], "weight_decay": weight_decay},
        {"name": "no_decay", "params": groups["no_decay"], "weight_decay": 0.0},
        {"name": "new", "params": groups["new"], "weight_decay": options.new_param_weight_decay,
         "lr": base_lr * options.new_param_lr_scale},
    ) if g["params"]]


def freeze_parameters(model: nn.Module, patterns: list[str]) -> int:
    """Stop training the parameters whose name contains one of ``patterns``; returns how many values were frozen.
    A pattern that names no parameter is an error (a typo would otherwise train everything)."""
    frozen = 0
    for pattern in patterns:
        matched = [p for name, p in model.named_parameters() if pattern in name]
        if not matched:
            raise ValueError(f"trainer.frozen_param_patterns: {pattern!r} matches no parameter of "
                             f"{type(model).__name__}")
        for param in matched:
            frozen += param.numel() if param.requires_grad else 0
            param.requires_grad_(False)
    return frozen
