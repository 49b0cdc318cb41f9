"""Everything together through the real trainer: a short multi-scale run with temporal pairs on synthetic data.

    python examples/temporal_training_integration.py [--data data/synthetic] [--small] [--out DIR]
        [--epochs 2 --steps-per-epoch 4 --batch-size 8 --text tiny|minilm --init-val]

Builds a config dict (the same sections as configs/demo/multiscale_demo.json, with a tiny model):
MultiScaleEgoClipDataLoader + TemporalPairBatchSampler (training), the EgoMCQ loader (validation),
MultiScaleFrozenInTime, MultiScaleEgoNCE (cosine temperature schedule, temporal consistency with the
lambda schedule), AdamW with warmup + cosine LR. It prints what the parts are, then runs
``trainer.launch.train(ConfigParser(config), MultiScale_Trainer_dist)`` -- exactly what
``run/train_multiscale_egoclip.py`` does -- for ``--epochs`` epochs of at most ``--steps-per-epoch``
steps, validating on EgoMCQ after the last epoch (and before the first with ``--init-val``). Then it
prints the EgoMCQ accuracies, the run directory (checkpoints, train.log, config.json) and a summary of
the TensorBoard scalars. A run this short does not learn much; ``make demo`` trains for real.
The dataset is generated in ``--data`` if absent (``--small``: a small one). About a minute on 2 CPU cores.
"""
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from examples.common import example_parser, synthetic_data  # noqa: E402
from model.presets import TEXT_PRESETS  # noqa: E402
from trainer.launch import format_results, train  # noqa: E402
from trainer.trainer_multiscale_egoclip import MultiScale_Trainer_dist  # noqa: E402
from utils.config import ConfigParser  # noqa: E402
from utils.distributed import resolve_device  # noqa: E402


def parse_args(argv=None):
    parser = example_parser(__doc__)
    parser.add_argument("--out", default=None, help="save_dir for the run (default: a new temporary folder, kept)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=4, help="trainer.max_steps_per_epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--scales", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--input-res", type=int, default=32)
    parser.add_argument("--text", choices=sorted(TEXT_PRESETS), default="tiny",
                        help="tiny: a 1-layer random BERT; minilm: the offline pretrained all-MiniLM-L6-v2")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--cw", type=float, default=1.0, help="temporal consistency weight")
    parser.add_argument("--pair-ratio", type=float, default=0.3)
    parser.add_argument("--max-gap", type=float, default=2.0)
    parser.add_argument("--init-val", action="store_true", help="also validate before training")
    parser.add_argument("-d", "--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_config(args, data: Path, save_dir: Path) -> dict:
    video = {"input_res": args.input_res, "scales": args.scales, "loading": "strict"}
    loader = {"data_dir": str(data / "videos"), "meta_dir": str(data / "meta"), "video_params": video,
              "num_workers": 0, "seed": args.seed}
    return {
        "name": "temporal_integration",
        "arch": {"type": "MultiScaleFrozenInTime", "args": {
            "video_params": {"model": "SpaceTimeTransformer", "arch_config": "tiny", "embed_dim": 64,
                             "patch_size": 16, "input_res": args.input_res, "num_frames": max(args.scales),
                             "pretrained": False},
            "text_params": TEXT_PRESETS[args.text], "projection_dim": 64, "scales": args.scales,
            "fusion_type": "learned_weighted"}},
        "data_loader": {"type": "MultiScaleEgoClipDataLoader", "args": {
            **loader, "split": "train", "batch_size": args.batch_size, "sampler": "temporal_pair",
            "temporal_pair_ratio": args.pair_ratio, "max_temporal_gap": args.max_gap,
            "tsfm_params": {"hflip_prob": 0.0}}},  # the synthetic narrations say "left" and "right"
        "valid_data_loader": {"type": "MultiScaleEgoClipDataLoader", "args": {
            **loader, "split": "val", "batch_size": 8, "shuffle": False}},
        "optimizer": {"type": "AdamW", "args": {"lr": args.lr, "weight_decay": 0.01}},
        "lr_scheduler": {"type": "WarmupDecaySchedule", "args": {"warmup_steps": 2, "decay": "cosine",
                                                                 "min_lr_ratio": 0.05}},
        "loss": {"type": "MultiScaleEgoNCE", "args": {
            "consistency_weight": args.cw,
            # the schedule's total_steps is left out: the engine sets it to the run's step count
            "temperature_schedule": {"initial_temp": 0.1, "final_temp": 0.05},
            "temporal": {"lambda_start": 0.1, "lambda_end": 0.3, "max_time_gap": args.max_gap,
                         "loss_type": "contrastive"}}},
        "metrics": ["egomcq_accuracy"],
        "trainer": {"epochs": args.epochs, "max_steps_per_epoch": args.steps_per_epoch, "save_dir": str(save_dir),
                    "save_period": args.epochs, "val_every": args.epochs, "init_val": args.init_val,
                    "monitor": "max inter_video_acc", "log_every": 1, "tqdm": False, "seed": args.seed},
    }


def training_loader(config: ConfigParser):
    """The training loader (metadata only) and the steps per epoch the run will take."""
    loader = config.init_obj("data_loader")
    return loader, min(len(loader), config.trainer_options.max_steps_per_epoch)


def describe(config: ConfigParser, loader, steps: int) -> None:
    """Print the dataset, sampler, model, loss and trainer the run uses."""
    sampler = loader.batch_sampler
    loss = config["loss"]["args"]
    print(f"dataset   : {type(loader.dataset).__name__}, {len(loader.dataset)} clips, scales "
          f"{loader.dataset.video_params['scales']}, {loader.dataset.verb_dim} verbs / {loader.dataset.noun_dim} nouns")
    print(f"sampler   : {type(sampler).__name__}, {len(sampler)} batches of {sampler.batch_size} per epoch, "
          f">= {sampler.pairs_per_batch} adjacent pairs (<= {sampler.max_temporal_gap:g} s) in each; "
          f"{steps} steps per epoch used")
    print(f"model     : {config['arch']['type']}, scales {config['arch']['args']['scales']}, "
          f"fusion {config['arch']['args']['fusion_type']}")
    print(f"loss      : {config['loss']['type']}, temperature {loss['temperature_schedule']}, "
          f"consistency_weight {loss['consistency_weight']}, temporal {loss['temporal']}")
    print(f"trainer   : {MultiScale_Trainer_dist.__name__}, {config.trainer_options.epochs} epochs, "
          f"device {resolve_device(config.device)}\n", flush=True)


def print_tensorboard(log_dir: Path) -> None:
    logging.getLogger("tensorboard").setLevel(logging.WARNING)
    events = EventAccumulator(str(log_dir))
    events.Reload()
    tags = sorted(t for t in events.Tags()["scalars"] if not t.startswith("val/scale"))
    print(f"\nTensorBoard scalars (first -> last logged value; per-scale val/ tags left out). "
          f"View them with: tensorboard --logdir {log_dir}")
    for tag in tags:
        points = events.Scalars(tag)
        print(f"  {tag:<26} step {points[0].step:>3}: {points[0].value:<10.4g} -> "
              f"step {points[-1].step:>3}: {points[-1].value:.4g}")


def main(argv=None):
    args = parse_args(argv)
    data = synthetic_data(args)
    save_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="egovlp_integration_"))
    config = ConfigParser(build_config(args, data, save_dir), source="temporal_training_integration.py",
                          device=args.device)
    loader, steps = training_loader(config)
    describe(config, loader, steps)
    metrics = train(config, MultiScale_Trainer_dist)
    print("\n" + format_results(metrics))
    run_dir = config.run_dir
    print(f"\nrun directory: {run_dir}")
    for path in sorted(run_dir.iterdir()):
        size = f"{path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "folder"
        print(f"  {path.name:<28} {size}")
    print_tensorboard(run_dir / "tensorboard")
    print(f"\nresume with: python run/train_multiscale_egoclip.py -c {run_dir / 'config.json'} "
          f"-r {run_dir / 'latest.pth'} --set trainer.epochs={args.epochs + 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
