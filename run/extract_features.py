"""Extract Ego4D EgoMQ / EgoNLQ video features (and NLQ query features) with the task a config names.

    python run/extract_features.py -c configs/ego4d/extract_features.json --resume path/to/egovlp.pth
    torchrun --nproc_per_node 8 run/extract_features.py -c CONFIG --resume CKPT       # clips sharded over ranks
    python run/extract_features.py -c CONFIG --resume CKPT --set task.args.shard=[3,16]   # job 3 of 16

Writes <out_dir>/<clip_uid>.pt ([N, D] per clip), feature_shapes.json and the query features; run it again to
resume (finished clips are skipped).
"""
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.launch import build_task, distributed_run, load_warnings, run_script  # noqa: E402
from utils import distributed  # noqa: E402

logger = logging.getLogger("extract_features")


def extract(config) -> dict:
    if config.resume is not None and not Path(config.resume).is_file():
        raise FileNotFoundError(f"--resume {config.resume}: no such checkpoint file")
    with distributed_run(config) as info:
        task = build_task(config, info.device, splits=())
        if config.resume:
            for warning in load_warnings(task.load_pretrained(config.resume)):
                logger.warning("%s: %s", config.resume, warning)
        else:
            logger.warning("no --resume checkpoint given: features of the model as configured")
        summary = task.extract(info.device, show_progress=config.trainer_options.tqdm and distributed.is_main_process())
        logger.info("rank %d: %s", info.rank, summary)
        return summary


if __name__ == "__main__":
    run_script(extract, __doc__, purpose="extract")
