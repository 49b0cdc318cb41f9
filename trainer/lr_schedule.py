"""Per-step learning-rate schedules (config section ``lr_scheduler``)."""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from utils.registry import LR_SCHEDULES


@LR_SCHEDULES.register()
class WarmupDecaySchedule(LambdaLR):
    """Linear warmup over ``warmup_steps`` optimizer steps, then cosine / linear / constant decay.

    The multiplier goes 0 → 1 during warmup, then 1 → ``min_lr_ratio`` at ``total_steps``.
    ``total_steps`` is filled in by the trainer (epochs × steps per epoch).
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0,
                 decay: str = "cosine", min_lr_ratio: float = 0.0):
        if decay not in ("cosine", "linear", "constant"):
            raise ValueError(f"lr_scheduler.args.decay must be cosine|linear|constant, got '{decay}'")
        self.total_steps, self.warmup_steps = max(1, total_steps), max(0, warmup_steps)
        self.decay, self.min_lr_ratio = decay, min_lr_ratio
        super().__init__(optimizer, self.multiplier)

    def multiplier(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if self.decay == "cosine" else 1 - progress
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * shape
