"""The one distributed trainer for EgoClip pretraining (EgoVLP's ``Multi_Trainer_dist`` role).

Variants override small hooks (:attr:`forward_method`, :meth:`prepare_inputs`, :meth:`extra_scalars`);
the loop, checkpointing, resume, validation, logging and preemption handling live here only.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from trainer.egomcq_eval import evaluate_loaders
from trainer.state import capture_rng, load_training_checkpoint, restore_rng, save_atomic
from utils import distributed
from utils.distributed import DistInfo

logger = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """Raised after a preemption signal: a checkpoint was written and the run can be resumed."""


class _ForwardAdapter(nn.Module):
    """Routes DDP's ``forward`` to the model method that returns every training output."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, data):
        return getattr(self.model, self.method)(data)


class _SkipFirstBatches:
    """A batch sampler without its first ``skip`` batches (resuming in the middle of an epoch)."""

    def __init__(self, batch_sampler, skip: int):
        self.batch_sampler, self.skip = batch_sampler, skip

    def __iter__(self):
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.skip:
                yield batch

    def __len__(self):
        return max(0, len(self.batch_sampler) - self.skip)


SCENE_NEGATIVE_KEYS = ("video", "text", "verb_vec", "noun_vec", "scale_mask")


def _concat_batch(first, second):
    if isinstance(first, list):
        return first + list(second)
    if isinstance(first, dict):
        return {key: torch.cat([first[key], second[key]]) for key in first}
    return torch.cat([first, second])


def append_scene_negatives(batch: dict) -> dict:
    """EgoVLP's scene-aware negatives (dataset ``neg_param``): the ``*_neg`` clips appended after the batch's own
    clips, so the loss sees 2B clips; ``temporal_pairs`` index the first B and stay valid."""
    if "video_neg" not in batch:
        return batch
    merged = dict(batch)
    for key in SCENE_NEGATIVE_KEYS:
        if f"{key}_neg" in batch:
            merged[key] = _concat_batch(batch[key], batch[f"{key}_neg"])
    return merged


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


class Multi_Trainer_dist:
    """Trains a FrozenInTime-style model with an EgoNCE-style objective on one or many processes.

    Args:
        model: unwrapped model on ``dist_info.device`` (``tokenize``, ``compute_text``, ``compute_video``).
        loss_fn: objective called as ``loss_fn(text_embeds, video_embeds, verb_vec=, noun_vec=, temporal_pairs=,
            scale_embeds=, step=, epoch=, total_epochs=) -> (loss, components)``.
        optimizer: built on the model's parameters.
        config: the run's ConfigParser (``trainer_options``, ``init_obj('lr_scheduler', ...)``, resume path).
        dist_info: rank, world size and device of this process.
        train_loaders: one or more training loaders (several are zipped, one optimizer step per batch).
        valid_loaders: EgoMCQ loaders (may be empty).
        run_dir: where checkpoints, logs and TensorBoard files go.
    """

    forward_method = "forward"

    def __init__(self, model, loss_fn, optimizer, config, dist_info: DistInfo, train_loaders: list[DataLoader],
                 valid_loaders: list[DataLoader], run_dir: Path):
        self.model, self.loss_fn, self.optimizer, self.config = model, loss_fn, optimizer, config
        self.options = config.trainer_options
        self.dist, self.device, self.run_dir = dist_info, dist_info.device, Path(run_dir)
        self.train_loaders, self.valid_loaders = list(train_loaders), list(valid_loaders)
        self.steps_per_epoch = min(len(loader) for loader in self.train_loaders)
        if self.options.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, self.options.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise ValueError("the training loader yields no batch: the dataset is smaller than one batch per rank")
        micro_per_epoch = self.steps_per_epoch * len(self.train_loaders)
        self.total_steps = self.options.epochs * micro_per_epoch // self.options.grad_accum_steps
        self.lr_scheduler = (config.init_obj("lr_scheduler", optimizer, total_steps=self.total_steps)
                             if config.get("lr_scheduler") else None)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.train_model = _ForwardAdapter(model, self.forward_method)
        if dist_info.distributed:
            self.train_model = DistributedDataParallel(
                self.train_model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.options.find_unused_parameters)
        self.epoch, self.batch_in_epoch, self.global_step, self.micro_step = 1, 0, 0, 0
        self.monitor_best = None
        self.consecutive_nonfinite = 0
        self.stop_requested = False
        self._resume_rng = None  # this rank's RNG state from a checkpoint, restored when the epoch starts
        self.writer = self._tensorboard_writer()

    # ------------------------------------------------------------------ hooks
    def prepare_inputs(self, batch: dict) -> dict:
        """Model inputs on the device: tokens and video ``[B, T, 3, R, R]``."""
        return {"text": self.model.tokenize(batch["text"], device=self.device),
                "video": batch["video"].to(self.device, non_blocking=True)}

    def outputs_to_dict(self, outputs) -> dict:
        """The forward's result as ``{'text_embeds', 'video_embeds', ...}``."""
        if isinstance(outputs, dict):
            return outputs
        text_embeds, video_embeds = outputs
        return {"text_embeds": text_embeds, "video_embeds": video_embeds}

    def extra_scalars(self, outputs: dict) -> dict:
        """More TensorBoard scalars for a step (e.g. fusion weights)."""
        return {}

    # ------------------------------------------------------------------ setup helpers
    def _amp_dtype(self):
        amp = self.options.amp
        if amp == "auto":
            return torch.bfloat16 if self.device.type == "cuda" else None
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _tensorboard_writer(self):
        if not self.dist.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _scalar(self, tag: str, value, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, float(value), step)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        rng = capture_rng()
        all_rng = [None] * self.dist.world_size
        if self.dist.distributed:
            dist.all_gather_object(all_rng, rng)
        else:
            all_rng = [rng]
        return {
            "arch": self.config["arch"]["type"],
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step, "micro_step": self.micro_step,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler else None,
            "loss": self.loss_fn.state_dict() if hasattr(self.loss_fn, "state_dict") else {},
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "monitor_best": self.monitor_best,
            "rng": all_rng,
            "world_size": self.dist.world_size,
            "config": self.config.config,
        }

    def save_checkpoint(self, names: list[str]) -> None:
        """Write the training state to each of ``names`` in the run dir (rank 0 writes; all ranks take part)."""
        state = self.state()
        if self.dist.is_main:
            for name in names:
                save_atomic(state, self.run_dir / name)
            logger.info("saved %s (epoch %d, step %d)", ", ".join(names), self.epoch, self.global_step)
        distributed.barrier()

    def resume(self, path) -> None:
        """Continue from one of our checkpoints at the same step, schedules, sampler epoch and RNG state."""
        ckpt = load_training_checkpoint(path)
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.lr_scheduler and ckpt["lr_scheduler"]:
            self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if ckpt.get("loss") and hasattr(self.loss_fn, "load_state_dict"):
            self.loss_fn.load_state_dict(ckpt["loss"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.batch_in_epoch = ckpt["epoch"], ckpt["batch_in_epoch"]
        self.global_step, self.micro_step = ckpt["global_step"], ckpt["micro_step"]
        self.monitor_best = ckpt["monitor_best"]
        if ckpt["world_size"] == self.dist.world_size:
            self._resume_rng = ckpt["rng"][self.dist.rank]
        else:
            logger.warning("checkpoint was written by %d processes, resuming with %d: data order and RNG differ",
                           ckpt["world_size"], self.dist.world_size)
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        logger.info("resumed from %s at epoch %d, batch %d, step %d", path, self.epoch, self.batch_in_epoch,
                    self.global_step)

    # ------------------------------------------------------------------ signals
    def _request_stop(self, signum, frame):
        logger.warning("received %s: saving a checkpoint at the next step and exiting", signal.Signals(signum).name)
        self.stop_requested = True

    def _install_signal_handlers(self):
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            previous[sig] = signal.signal(sig, self._request_stop)
        return previous

    # ------------------------------------------------------------------ loop
    def train(self) -> dict:
        """Run the remaining epochs; returns the last validation metrics."""
        previous_handlers = self._install_signal_handlers()
        metrics = {}
        try:
            if self.options.init_val and self.global_step == 0:
                metrics = self.validate()
            while self.epoch <= self.options.epochs:
                self.train_epoch()
                if self.valid_loaders and self.epoch % self.options.val_every == 0:
                    metrics = self.validate()
                    self._update_best(metrics)
                names = ["latest.pth"]
                if self.epoch % self.options.save_period == 0:
                    names.append(f"checkpoint-epoch{self.epoch}.pth")
                self.save_checkpoint(names)
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            if self.writer is not None:
                self.writer.flush()
        return metrics

    def _epoch_iterators(self):
        iterators = []
        for loader in self.train_loaders:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(self.epoch)
            if self.batch_in_epoch:
                loader = DataLoader(loader.dataset, batch_sampler=_SkipFirstBatches(loader.batch_sampler,
                                                                                    self.batch_in_epoch),
                                    collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                                    pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
                                    generator=loader.generator)
            iterators.append(iter(loader))
        if self._resume_rng is not None:  # after creating the iterators, which draw seeds from the global RNG
            restore_rng(self._resume_rng)
            self._resume_rng = None
        return iterators

    def train_epoch(self) -> None:
        self.model.train()
        iterators = self._epoch_iterators()
        bar = tqdm(total=self.steps_per_epoch, initial=self.batch_in_epoch, desc=f"epoch {self.epoch}",
                   disable=not (self.dist.is_main and self.options.tqdm), dynamic_ncols=True)
        wait_start = time.perf_counter()
        while self.batch_in_epoch < self.steps_per_epoch:
            batches = [next(it) for it in iterators]
            data_time = time.perf_counter() - wait_start
            step_start = time.perf_counter()
            for batch in batches:
                loss, components, outputs = self.train_step(batch)
            self.batch_in_epoch += 1
            step_time = time.perf_counter() - step_start
            samples = sum(len(b["text"]) for b in batches) * self.dist.world_size
            speed = samples / max(step_time + data_time, 1e-9)
            logged_step = outputs is not None and (self.global_step % self.options.log_every == 0 or
                                                   self.batch_in_epoch == self.steps_per_epoch)
            if self.dist.is_main and logged_step:  # (no outputs: a skipped non-finite step)
                self._log_step(loss, components, outputs, speed, data_time / max(step_time + data_time, 1e-9))
            bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{speed:.1f}")
            bar.update(1)
            if self._agree(self.stop_requested):
                bar.close()
                self.save_checkpoint(["latest.pth"])
                raise TrainingInterrupted(f"stopped by signal at epoch {self.epoch}, batch {self.batch_in_epoch}; "
                                          f"resume with -r {self.run_dir / 'latest.pth'}")
            wait_start = time.perf_counter()
        bar.close()

    def _agree(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        if not self.dist.distributed:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def train_step(self, batch: dict):
        """Forward, loss, backward and (at the accumulation boundary) an optimizer step.

        Returns ``(loss as float, components, outputs)``; a non-finite loss skips the step on every rank.
        """
        batch = append_scene_negatives(batch)
        accum = self.options.grad_accum_steps
        boundary = (self.micro_step + 1) % accum == 0
        skip_grad_sync = self.dist.distributed and not boundary
        with self.train_model.no_sync() if skip_grad_sync else contextlib.nullcontext():
            with self.autocast():
                outputs = self.outputs_to_dict(self.train_model(self.prepare_inputs(batch)))
                loss, components = self.loss_fn(
                    outputs["text_embeds"], outputs["video_embeds"],
                    verb_vec=self._on_device(batch["verb_vec"]), noun_vec=self._on_device(batch["noun_vec"]),
                    temporal_pairs=self._on_device(batch.get("temporal_pairs")), scale_embeds=outputs.get("scale_embeds"),
                    step=self.global_step, epoch=self.epoch - 1, total_epochs=self.options.epochs)
            if self._agree(not torch.isfinite(loss).item()):
                self._skip_nonfinite(loss)
                del outputs  # holds the autograd graph; free it before the next forward
                return float("nan"), components, None
            self.consecutive_nonfinite = 0
            backward_loss = loss / accum
            (self.scaler.scale(backward_loss) if self.scaler else backward_loss).backward()
        self.micro_step += 1
        if boundary:
            self._optimizer_step()
        return loss.item(), components, outputs

    def _on_device(self, tensor):
        return None if tensor is None else tensor.to(self.device, non_blocking=True)

    def _optimizer_step(self) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.options.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.lr_scheduler:
            self.lr_scheduler.step()
        self.global_step += 1

    def _skip_nonfinite(self, loss) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.micro_step = 0 if self.options.grad_accum_steps > 1 else self.micro_step
        self.consecutive_nonfinite += 1
        logger.warning("non-finite loss (%s) at epoch %d, step %d: step skipped (%d in a row, limit %d)",
                       loss.item(), self.epoch, self.global_step, self.consecutive_nonfinite,
                       self.options.max_nan_steps)
        if self.consecutive_nonfinite >= self.options.max_nan_steps:
            self.save_checkpoint(["latest.pth"])
            raise RuntimeError(f"{self.consecutive_nonfinite} consecutive non-finite losses at step "
                               f"{self.global_step}; stopped. Checkpoint: {self.run_dir / 'latest.pth'}. "
                               "Lower the learning rate, enable grad_clip, or check the data.")

    def _log_step(self, loss, components: dict, outputs: dict, speed: float, wait_fraction: float) -> None:
        step = self.global_step
        self._scalar("loss/total", loss, step)
        for key, value in components.items():
            group = {"lambda": "schedule", "temperature": "schedule", "num_pairs": "data"}.get(key, "loss")
            self._scalar(f"{group}/{key}", value, step)
        for group in self.optimizer.param_groups:
            self._scalar(f"schedule/lr_{group.get('name', 'group')}", group["lr"], step)
        self._scalar("perf/samples_per_s", speed, step)
        self._scalar("perf/data_wait_fraction", wait_fraction, step)
        for key, value in self.extra_scalars(outputs).items():
            self._scalar(key, value, step)
        logger.info("epoch %d step %d/%d loss %.4f %s | %.1f samples/s, %.0f%% waiting for data",
                    self.epoch, self.batch_in_epoch, self.steps_per_epoch, loss,
                    " ".join(f"{k} {float(v):.4g}" for k, v in components.items()), speed, 100 * wait_fraction)

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict:
        metrics = evaluate_loaders(self.model, self.valid_loaders, self.device, self.autocast, self.options.tqdm)
        for key, value in metrics.items():
            if not key.endswith("_questions"):
                self._scalar(f"val/{key}", value, self.global_step)
        logger.info("EgoMCQ after epoch %d: %s", self.epoch - 1 if self.global_step == 0 else self.epoch,
                    ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k.endswith("_acc")))
        return metrics

    def _update_best(self, metrics: dict) -> None:
        if self.options.monitor == "off":
            return
        mode, key = self.options.monitor_mode_metric
        if key not in metrics:
            raise KeyError(f"trainer.monitor names '{key}', but validation reports {sorted(metrics)}")
        value = metrics[key]
        if math.isnan(value):
            return
        improved = self.monitor_best is None or (value > self.monitor_best if mode == "max" else value < self.monitor_best)
        if improved:
            self.monitor_best = value
            self.save_checkpoint(["model_best.pth"])
            logger.info("new best %s = %.2f (epoch %d)", key, value, self.epoch)


EgoClipTrainer = Multi_Trainer_dist
