"""What the ``run/`` scripts share: process group, run dir, logging, and building every part from the config."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

from trainer.egomcq_eval import evaluate_loaders
from trainer.state import seed_everything
from trainer.trainer_egoclip import TrainingInterrupted, build_param_groups
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


def build_model(config: ConfigParser, device):
    model = config.init_obj("arch").to(device)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model %s: %.2f M parameters", config["arch"]["type"], n_params / 1e6)
    return model


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


def train(config: ConfigParser, trainer_cls) -> dict:
    """Build model, loaders, objective and optimizer from ``config`` and train with ``trainer_cls``."""
    with distributed_run(config) as info:
        model = build_model(config, info.device)
        train_loaders = config.init_all("data_loader")
        valid_loaders = config.init_all("valid_data_loader")
        loss_fn = config.init_obj("loss").to(info.device)
        opt_args = config["optimizer"].get("args", {})
        groups = build_param_groups(model, opt_args.get("lr", 1e-3), opt_args.get("weight_decay", 0.0),
                                    config.trainer_options)
        optimizer = config.init_obj("optimizer", groups)
        trainer = trainer_cls(model, loss_fn, optimizer, config, info, train_loaders, valid_loaders, config.run_dir)
        resume = config.resume
        latest = config.run_dir / "latest.pth"
        # rank 0 decides, so ranks with a node-local save_dir still agree
        if resume is None and config.trainer_options.auto_resume and distributed.broadcast_object(latest.exists()):
            resume = latest
        if resume is not None:
            trainer.resume(resume)
        try:
            metrics = trainer.train()
        except TrainingInterrupted as stop:
            logger.warning("%s", stop)
            return {}
        if info.is_main and metrics:
            write_json(config.run_dir / "final_metrics.json", metrics)
        return metrics


def evaluate(config: ConfigParser) -> dict:
    """Load ``config.resume`` (our checkpoint, EgoVLP's, or a bare state dict) and evaluate EgoMCQ."""
    with distributed_run(config) as info:
        model = build_model(config, info.device)
        if config.resume:
            model.load_weights(config.resume)  # strict: only parameters the architecture adds may be missing
        else:
            logger.warning("no --resume checkpoint given: evaluating the model as initialised")
        results = evaluate_loaders(model, config.init_all("valid_data_loader"), info.device)
        if info.is_main:
            write_json(config.run_dir / "egomcq_results.json", {"checkpoint": str(config.resume), **results})
            print(format_egomcq(results), file=sys.stdout, flush=True)
        return results


def format_egomcq(results: dict) -> str:
    """Human-readable accuracy table (chance is 20 %)."""
    lines = ["EgoMCQ accuracy (chance 20.0 %):"]
    for key in sorted(k for k in results if k.endswith("_acc")):
        questions = results.get(key.replace("_acc", "_questions"), "")
        lines.append(f"  {key:<28} {results[key]:6.2f} %   ({questions} questions)")
    return "\n".join(lines)


def write_json(path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")
