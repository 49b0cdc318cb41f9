"""The ``trainer`` section of a config, as a dataclass (the config validator checks keys and types here)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class TrainerOptions:
    """Options of one training run. Steps are optimizer steps; times are seconds."""

    epochs: int = 10
    save_dir: str = "saved"
    save_period: int = 1                 # keep checkpoint-epoch{N}.pth every N epochs (latest.pth always)
    monitor: str = "max intra_video_acc"  # "<max|min> <metric>" for model_best.pth, or "off"
    init_val: bool = False               # validate before the first epoch
    val_every: int = 1                   # validate every N epochs
    log_every: int = 10                  # TensorBoard scalars every N steps
    max_steps_per_epoch: Optional[int] = None
    amp: str = "auto"                    # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | none
    grad_accum_steps: int = 1
    grad_clip: float = 0.0               # max grad norm; 0 disables clipping
    max_nan_steps: int = 5               # consecutive non-finite losses before the run stops
    seed: int = 0
    auto_resume: bool = False            # resume from <run_dir>/latest.pth if it exists
    find_unused_parameters: bool = False
    weight_decay_exclude_norm_bias: bool = True
    new_param_patterns: list = field(default_factory=lambda: ["fusion"])
    new_param_lr_scale: float = 1.0      # lr multiplier for parameters matching new_param_patterns
    new_param_weight_decay: float = 0.0
    tqdm: bool = True

    def __post_init__(self):
        if self.amp not in ("auto", "bf16", "fp16", "none"):
            raise ValueError(f"trainer.amp must be auto|bf16|fp16|none, got '{self.amp}'")
        if self.monitor != "off":
            mode, _, metric = self.monitor.partition(" ")
            if mode not in ("max", "min") or not metric:
                raise ValueError(f"trainer.monitor must be 'max <metric>', 'min <metric>' or 'off', got '{self.monitor}'")
        if self.grad_accum_steps < 1 or self.epochs < 1:
            raise ValueError("trainer.grad_accum_steps and trainer.epochs must be >= 1")

    @property
    def monitor_mode_metric(self) -> tuple[str, str]:
        mode, _, metric = self.monitor.partition(" ")
        return mode, metric
