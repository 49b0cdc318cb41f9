"""The one training engine: it knows tasks, optimizers and hooks, nothing about any model or loss.

Per micro-batch it calls ``task.training_step(batch, ctx)`` (under autocast and DDP), back-propagates the
returned loss, and at the accumulation boundary steps every optimizer and LR schedule. Around that: non-finite
losses are skipped on every rank (and stop the run after ``max_nan_steps`` in a row), SIGTERM/SIGUSR1 end the
run with a checkpoint at the next step, and a checkpoint resumes at the exact step with the same RNG state.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import signal
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from data_loader.worker_signals import PREEMPTION_SIGNALS, start_iterator
from trainer.evaluation import EvaluationInterrupted, evaluate_task, format_metrics
from trainer.hooks import build_hooks, hook_keys
from trainer.param_groups import freeze_parameters
from trainer.state import (capture_all_ranks_rng, load_training_checkpoint, remove_stale_temporaries, restore_rng,
                           resumed_epoch_loader, save_atomic)
from trainer.tasks.base import StepContext
from utils import distributed
from utils.distributed import DistInfo

logger = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """Raised after a preemption signal: a checkpoint was written and the run can be resumed."""


class _TrainingStep(nn.Module):
    """What DDP wraps: its forward is the task's training step, so every parameter the step uses is synced."""

    def __init__(self, task: nn.Module):
        super().__init__()
        self.task = task

    def forward(self, batch, ctx):
        output = self.task.training_step(batch, ctx)
        return output.loss, output


def _shutdown(iterators) -> None:
    """Stop DataLoader workers now (an exception's traceback would otherwise keep them alive until exit)."""
    for iterator in iterators:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class Engine:
    """Trains a :class:`trainer.tasks.base.Task` on one or many processes.

    Args:
        task: the task on ``dist_info.device``; its 'train' loaders are zipped (one micro-step per batch).
        config: the run's ConfigParser (``trainer_options``, ``optimizer``, ``lr_scheduler``, ``hooks``).
        dist_info: rank, world size and device of this process.
        run_dir: where checkpoints, logs and TensorBoard files go.
    """

    def __init__(self, task, config, dist_info: DistInfo, run_dir: Path):
        self.task, self.config, self.options = task, config, config.trainer_options
        self.dist, self.device, self.run_dir = dist_info, dist_info.device, Path(run_dir)
        self.train_loaders = list(task.loaders("train"))
        if not self.train_loaders:
            raise ValueError("the task has no training loader (config section 'data_loader')")
        self.steps_per_epoch = min(len(loader) for loader in self.train_loaders)
        if self.options.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, self.options.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise ValueError("the training loader yields no batch: the dataset is smaller than one batch per rank")
        micro_per_epoch = self.steps_per_epoch * len(self.train_loaders)
        self.total_steps = self.options.epochs * micro_per_epoch // self.options.grad_accum_steps
        for module in task.modules():  # every schedule spans the whole run
            if hasattr(module, "set_total_steps"):
                module.set_total_steps(self.total_steps)
        if self.options.frozen_param_patterns:
            frozen = freeze_parameters(task.model, self.options.frozen_param_patterns)
            logger.info("frozen: %.2f M parameter values matching %s", frozen / 1e6,
                        self.options.frozen_param_patterns)
        self.optimizers, self.lr_schedulers = self._build_optimizers()
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.step_module = _TrainingStep(task)
        if dist_info.distributed:
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.options.find_unused_parameters)
        self.hooks = build_hooks(config, task)
        self.epoch, self.batch_in_epoch, self.global_step, self.micro_step = 1, 0, 0, 0
        self.consecutive_nonfinite = 0
        self.stop_requested = False
        self.last_metrics: dict = {}
        self.evaluations = 0  # evaluations run by this process (hooks draw or report after new ones)
        self._resume_rng = None  # this rank's RNG state from a checkpoint, restored when the epoch starts
        self.writer = self._tensorboard_writer()

    def release_ddp(self) -> None:
        """Drop the DDP wrapper now. Its reducer must be freed while the process group still exists: freed
        after ``destroy_process_group`` (when the engine goes out of scope) it can deadlock joining a gloo thread."""
        if isinstance(self.step_module, DistributedDataParallel):
            self.step_module = self.step_module.module
            gc.collect()

    # ------------------------------------------------------------------ setup
    def _build_optimizers(self):
        args = self.config["optimizer"].get("args", {})
        groups = self.task.optimizer_groups(args.get("lr", 1e-3), args.get("weight_decay", 0.0), self.options)
        optimizers = {name: self.config.init_obj("optimizer", param_groups) for name, param_groups in groups.items()}
        schedulers = {}
        if self.config.get("lr_scheduler"):
            schedulers = {name: self.config.init_obj("lr_scheduler", opt, total_steps=self.total_steps)
                          for name, opt in optimizers.items()}
        return optimizers, schedulers

    def _amp_dtype(self):
        amp = self.options.amp
        if amp == "auto":
            return torch.bfloat16 if self.device.type == "cuda" else None
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def context(self) -> StepContext:
        return StepContext(device=self.device, global_step=self.global_step, epoch=self.epoch,
                           total_epochs=self.options.epochs, total_steps=self.total_steps, autocast=self.autocast)

    def _tensorboard_writer(self):
        if not self.dist.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def scalar(self, tag: str, value, step: int | None = None) -> None:
        """Write one TensorBoard scalar (rank 0 only) at ``step`` (default: the current optimizer step)."""
        if self.writer is not None:
            self.writer.add_scalar(tag, float(value), self.global_step if step is None else step)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        optimizers = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        return {
            "arch": self.config["arch"]["type"],
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step, "micro_step": self.micro_step,
            **self.task.checkpoint_state(),
            "optimizer": next(iter(optimizers.values())),  # EgoVLP's key: the (first) optimizer
            "optimizers": optimizers,
            "lr_scheduler": {name: s.state_dict() for name, s in self.lr_schedulers.items()} or None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "hooks": {key: hook.state_dict() for key, hook in zip(hook_keys(self.hooks), self.hooks)},
            "rng": capture_all_ranks_rng(self.dist),
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
        self.task.load_checkpoint_state(ckpt)
        saved_optimizers = ckpt.get("optimizers") or {"main": ckpt["optimizer"]}
        if set(saved_optimizers) != set(self.optimizers):
            raise ValueError(f"{path}: checkpoint has optimizers {sorted(saved_optimizers)}, the task builds "
                             f"{sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(saved_optimizers[name])
        saved_schedules = ckpt.get("lr_scheduler") or {}
        for name, scheduler in self.lr_schedulers.items():
            if name in saved_schedules:
                scheduler.load_state_dict(saved_schedules[name])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        saved_hooks = ckpt.get("hooks") or {}
        for key, hook in zip(hook_keys(self.hooks), self.hooks):
            if key in saved_hooks:
                hook.load_state_dict(saved_hooks[key])
        unused = sorted(set(saved_hooks) - set(hook_keys(self.hooks)))
        if unused:
            logger.warning("%s holds state of hooks this run does not have: %s", path, unused)
        self.epoch, self.batch_in_epoch = ckpt["epoch"], ckpt["batch_in_epoch"]
        self.global_step, self.micro_step = ckpt["global_step"], ckpt["micro_step"]
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

    def stop_agreed(self) -> bool:
        """True on every rank once any rank received a stop request."""
        return distributed.any_rank(self.stop_requested)

    def _interrupted(self) -> TrainingInterrupted:
        return TrainingInterrupted(f"stopped by signal at epoch {self.epoch}, batch {self.batch_in_epoch}; "
                                   f"resume with -r {self.run_dir / 'latest.pth'}")

    # ------------------------------------------------------------------ loop
    def train(self) -> dict:
        """Run the remaining epochs; returns the last evaluation metrics."""
        previous = {sig: signal.signal(sig, self._request_stop) for sig in PREEMPTION_SIGNALS}
        if self.dist.is_main:
            remove_stale_temporaries(self.run_dir)
        try:
            self._call_hooks("before_train")
            while self.epoch <= self.options.epochs:
                self._call_hooks("before_epoch")
                self.train_epoch()
                names = ["latest.pth"]
                if self.epoch % self.options.save_period == 0:
                    names.append(f"checkpoint-epoch{self.epoch}.pth")
                self.save_checkpoint(names)  # before evaluation: a stop during it loses no training
                self._call_hooks("after_epoch")
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._call_hooks("after_train")
        except EvaluationInterrupted:
            raise self._interrupted() from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            # persistent workers ignore SIGTERM, so the interpreter's exit handler could not stop them
            _shutdown(getattr(loader, "_iterator", None) for loader in self.train_loaders)
            if self.writer is not None:
                self.writer.flush()
        return self.last_metrics

    def _call_hooks(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self)

    def evaluate(self, split: str = "val") -> dict:
        """Evaluate the task on ``split`` (every rank takes part); logs ``val/<metric>`` scalars."""
        metrics = evaluate_task(self.task, split, self.context(), self.options.tqdm, lambda: self.stop_requested)
        for key, value in metrics.items():
            if isinstance(value, float):
                self.scalar(f"{split}/{key}", value)
        logger.info("evaluation (%s) after epoch %d: %s", split, self.epoch - (self.batch_in_epoch == 0),
                    format_metrics(metrics))
        self.last_metrics = metrics
        self.evaluations += 1
        return metrics

    def _epoch_iterators(self):
        iterators = []
        for loader in self.train_loaders:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(self.epoch)
            iterators.append(start_iterator(resumed_epoch_loader(loader, self.batch_in_epoch)))
        if self._resume_rng is not None:  # after creating the iterators, which may draw from the global RNG
            restore_rng(self._resume_rng)
            self._resume_rng = None
        return iterators

    def train_epoch(self) -> None:
        self.task.train()
        iterators = self._epoch_iterators()
        bar = tqdm(total=self.steps_per_epoch, initial=self.batch_in_epoch, desc=f"epoch {self.epoch}",
                   disable=not (self.dist.is_main and self.options.tqdm), dynamic_ncols=True)
        try:
            wait_start = time.perf_counter()
            while self.batch_in_epoch < self.steps_per_epoch:
                batches = [next(it) for it in iterators]
                data_time = time.perf_counter() - wait_start
                self._call_hooks("before_step")
                step_start = time.perf_counter()
                results = [self.train_step(batch) for batch in batches]
                self.batch_in_epoch += 1
                step_time = time.perf_counter() - step_start
                self._call_hooks("after_step")
                samples = sum(num_samples for _, num_samples, _ in results) * self.dist.world_size
                speed = samples / max(step_time + data_time, 1e-9)
                loss = sum(loss for loss, _, _ in results) / len(results)
                finite = all(logs is not None for _, _, logs in results)  # None: a skipped non-finite step
                logged = finite and (self.global_step % self.options.log_every == 0
                                     or self.batch_in_epoch == self.steps_per_epoch)
                if self.dist.is_main and logged:
                    self._log_step(loss, results, speed, data_time / max(step_time + data_time, 1e-9))
                bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{speed:.1f}")
                bar.update(1)
                if self.stop_agreed():
                    bar.close()
                    self.save_checkpoint(["latest.pth"])
                    raise self._interrupted()
                wait_start = time.perf_counter()
        except BaseException:
            _shutdown(iterators)  # persistent workers stay up between epochs, but not after a failure
            raise
        finally:
            bar.close()

    def train_step(self, batch):
        """Forward, loss, backward and (at the accumulation boundary) an optimizer step.

        Returns ``(loss as float, samples in this process's batch, logs)``; a non-finite loss skips the step on
        every rank and returns None logs.
        """
        accum = self.options.grad_accum_steps
        boundary = (self.micro_step + 1) % accum == 0
        skip_grad_sync = self.dist.distributed and not boundary
        with self.step_module.no_sync() if skip_grad_sync else contextlib.nullcontext():
            with self.autocast():
                loss, output = self.step_module(batch, self.context())
            if distributed.any_rank(not torch.isfinite(loss).item()):
                self._skip_nonfinite(loss)
                del loss, output  # they hold the autograd graph; free it before the next forward
                return float("nan"), 0, None
            self.consecutive_nonfinite = 0
            backward_loss = loss / accum
            (self.scaler.scale(backward_loss) if self.scaler else backward_loss).backward()
        self._call_hooks("after_backward")
        self.micro_step += 1
        if boundary:
            self._optimizer_step()
        return loss.item(), output.num_samples, output.logs

    def _optimizer_step(self) -> None:
        if self.scaler:
            for opt in self.optimizers.values():
                self.scaler.unscale_(opt)
        if self.options.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.task.parameters(), self.options.grad_clip)
        for opt in self.optimizers.values():
            if self.scaler:
                self.scaler.step(opt)
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.update()
        for scheduler in self.lr_schedulers.values():
            scheduler.step()
        self.global_step += 1

    def _skip_nonfinite(self, loss) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.micro_step = 0 if self.options.grad_accum_steps > 1 else self.micro_step
        self.consecutive_nonfinite += 1
        logger.warning("non-finite loss (%s) at epoch %d, step %d: step skipped (%d in a row, limit %d)",
                       loss.item(), self.epoch, self.global_step, self.consecutive_nonfinite,
                       self.options.max_nan_steps)
        if self.consecutive_nonfinite >= self.options.max_nan_steps:
            # The weights that produced these losses may have diverged: the last good latest.pth is kept.
            raise RuntimeError(f"{self.consecutive_nonfinite} consecutive non-finite losses at step "
                               f"{self.global_step}; stopped. Last good checkpoint (if any): "
                               f"{self.run_dir / 'latest.pth'}. Lower the learning rate, enable grad_clip, "
                               "or check the data.")

    def _log_step(self, loss: float, results: list, speed: float, wait_fraction: float) -> None:
        self.scalar("loss/total", loss)
        for i, (_, _, logs) in enumerate(results):
            prefix = "" if len(results) == 1 else f"loader{i}/"
            for tag, value in logs.items():
                self.scalar(prefix + tag, value)
        for opt_name, opt in self.optimizers.items():
            opt_prefix = "" if len(self.optimizers) == 1 else f"{opt_name}_"
            for group in opt.param_groups:
                self.scalar(f"schedule/lr_{opt_prefix}{group.get('name', 'group')}", group["lr"])
        self.scalar("perf/samples_per_s", speed)
        self.scalar("perf/data_wait_fraction", wait_fraction)
        summary = " ".join(f"{tag.rpartition('/')[2]} {float(v):.4g}" for tag, v in results[-1][2].items())
        logger.info("epoch %d step %d/%d loss %.4f %s | %.1f samples/s, %.0f%% waiting for data",
                    self.epoch, self.batch_in_epoch, self.steps_per_epoch, loss, summary, speed, 100 * wait_fraction)
