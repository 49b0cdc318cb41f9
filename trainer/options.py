"""The ``trainer`` section of a config, as a dataclass (the config validator checks keys, types and ranges here)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

from utils.config_schema import Bounds

Positive = Annotated[int, Bounds(1)]


@dataclass
class TrainerOptions:
    """Options of one training run. Steps are optimizer steps; times are seconds."""

    epochs: Positive = 10
    save_dir: str = "saved"
    save_period: Positive = 1             # keep checkpoint-epoch{N}.pth every N epochs (latest.pth always)
    monitor: str = "max intra_video_acc"  # "<max|min> <metric>" for model_best.pth, or "off"
    init_val: bool = False                # validate before the first epoch
    val_every: Positive = 1               # validate every N epochs and after the last
    log_every: Positive = 10              # TensorBoard scalars every N steps
    max_steps_per_epoch: Annotated[Optional[int], Bounds(1)] = None  # None: the whole loader
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    grad_accum_steps: Positive = 1
    grad_clip: Annotated[float, Bounds(0)] = 0.0  # max grad norm; 0 disables clipping
    max_nan_steps: Positive = 5           # consecutive non-finite losses before the run stops
    seed: int = 0
    auto_resume: bool = False             # resume from <run_dir>/latest.pth if it exists
    find_unused_parameters: bool = False
    weight_decay_exclude_norm_bias: bool = True
    new_param_patterns: list = field(default_factory=lambda: ["fusion"])
    new_param_lr_scale: Annotated[float, Bounds(0)] = 1.0  # lr multiplier for new_param_patterns parameters
    new_param_weight_decay: float = 0.0
    frozen_param_patterns: list = field(default_factory=list)  # parameters whose name contains one are not trained
    tqdm: bool = True

    def __post_init__(self):
        if self.monitor != "off":
            mode, _, metric = self.monitor.partition(" ")
            if mode not in ("max", "min") or not metric:
                raise ValueError(f"'trainer.monitor' must be 'max <metric>', 'min <metric>' or 'off', "
                                 f"got '{self.monitor}'")
