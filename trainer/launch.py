"""What the ``run/`` scripts share: process group, run dir, logging, and building the task from the config."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Callable

from model.checkpoint import summarise_keys
from trainer.engine import Engine, TrainingInterrupted
from trainer.evaluation import evaluate_task
from trainer.state import seed_everything
from trainer.tasks.base import StepContext
from utils import distributed
from utils.config import ConfigParser
from utils.logger import setup_logging

logger = logging.getLogger(__name__)


def start_run(config: ConfigParser) -> distributed.DistInfo:
    """Join the process group, make the run dir (rank 0, shared with all ranks), set up logging and seeds."""
    info = distributed.init_distributed(config.device)
    run_dir = config.make_run_dir(create=info.is_main)
    config.run_dir = Path(distributed.broadcast_object(str(run_dir)))
    setup_logging(config.run_dir, rank=info.rank)
    seed_everything(config.trainer_options.seed + info.rank)
    logger.info("run dir %s; %d process(es); device %s; config %s", config.run_dir, info.world_size,
                info.device, config.source)
    return info


@contextlib.contextmanager
def distributed_run(config: ConfigParser):
    """:func:`start_run`, then leave the process group: after a barrier on success, at once on failure."""
    info = start_run(config)
    try:
        yield info
    except BaseException:
        distributed.cleanup(failed=True)
        raise
    distributed.cleanup()


def build_task(config: ConfigParser, device, splits=("train", "val")):
    """The task the config names (``task.type``; EgoClip pretraining when absent), on ``device``."""
    task_cls = config.task_class()
    task = task_cls.from_config(config, splits=splits).to(device)
    n_params = sum(p.numel() for p in task.model.parameters())
    logger.info("task %s, model %s: %.2f M parameters", task_cls.__name__, config["arch"]["type"], n_params / 1e6)
    return task


def _check_resume_path(config: ConfigParser) -> None:
    """Fail before anything is built (and before a run dir exists) when ``-r/--resume`` names no file."""
    if config.resume is not None and not Path(config.resume).is_file():
        raise FileNotFoundError(f"--resume {config.resume}: no such checkpoint file")


def train(config: ConfigParser, engine_cls=Engine) -> dict:
    """Build the task from ``config`` and train it with ``engine_cls``; returns the last evaluation metrics."""
    _check_resume_path(config)
    with distributed_run(config) as info:
        task = build_task(config, info.device)
        engine = engine_cls(task, config, info, config.run_dir)
        resume = config.resume
        latest = config.run_dir / "latest.pth"
        # rank 0 decides, so ranks with a node-local save_dir still agree
        if resume is None and config.trainer_options.auto_resume and distributed.broadcast_object(latest.exists()):
            resume = latest
        try:
            if resume is not None:
                engine.resume(resume)
            metrics = engine.train()
        except TrainingInterrupted as stop:
            logger.warning("%s", stop)
            return {}
        finally:
            engine.release_ddp()  # before distributed_run leaves the process group
        if info.is_main and metrics:
            write_json(config.run_dir / "final_metrics.json", metrics)
        return metrics


def evaluate(config: ConfigParser, results_name: str = "eval_results.json") -> dict:
    """Load ``config.resume`` (our checkpoint, EgoVLP's, or a bare state dict) into the task's model and run
    its evaluators on the validation loaders; writes ``<run dir>/<results_name>`` and prints a table.

    Weights the checkpoint lacks (left as initialised) or had to be resized are listed under
    ``load_warnings`` in the results and printed: the checkpoint may not be of this architecture."""
    _check_resume_path(config)
    with distributed_run(config) as info:
        task = build_task(config, info.device, splits=("val",))
        warnings = []
        if config.resume:
            warnings = load_warnings(task.load_pretrained(config.resume))
        else:
            logger.warning("no --resume checkpoint given: evaluating the model as initialised")
        for warning in warnings:
            logger.warning("%s: %s", config.resume, warning)
        ctx = StepContext(device=info.device, global_step=0, epoch=0, total_epochs=0, total_steps=0)
        results = evaluate_task(task, "val", ctx, config.trainer_options.tqdm)
        if info.is_main:
            write_json(config.run_dir / results_name,
                       {"checkpoint": str(config.resume), "load_warnings": warnings, **results})
            print(format_results(results, warnings), file=sys.stdout, flush=True)
        return results


def load_warnings(report) -> list[str]:
    """What a weight load adapted: parameters missing from the checkpoint, tensors resized to fit."""
    warnings = []
    if getattr(report, "missing", None):
        warnings.append(f"not in the checkpoint, left as initialised: {summarise_keys(report.missing)}")
    warnings.extend(f"resized {message}" for message in getattr(report, "resized", None) or [])
    return warnings


def format_results(results: dict, warnings=()) -> str:
    """Human-readable table: accuracies in percent (with the question count where known), other metrics."""
    lines = [f"WARNING: {warning}" for warning in warnings] + ["Evaluation results:"]
    for key in sorted(k for k, v in results.items() if isinstance(v, float)):
        count = results.get(key.replace("_acc", "_questions")) if key.endswith("_acc") else None
        unit = " %" if key.endswith("_acc") else ""
        lines.append(f"  {key:<28} {results[key]:7.2f}{unit}" + (f"   ({count} questions)" if count else ""))
    return "\n".join(lines)


def run_script(action: Callable[[ConfigParser], object], description: str, purpose: str = "train") -> None:
    """What a ``run/`` script does: parse the command line into a config (a bad config: one line, exit 2), run
    ``action(config)``, and exit (0, or 1 after printing the traceback) in a way that is safe under torchrun."""
    config = ConfigParser.from_args(description=description, purpose=purpose)
    try:
        action(config)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: B036  (printed like an uncaught exception, then a clean exit code)
        traceback.print_exc()
        code = 1
    distributed.exit_process(code)


def write_json(path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")
