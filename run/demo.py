"""The demo: generate the synthetic EgoClip/EgoMCQ set if absent, train on CPU, evaluate EgoMCQ.

    python run/demo.py [--data data/synthetic] [--baseline] [--set trainer.epochs=5]

Trains the multi-scale model (configs/demo/multiscale_demo.json); ``--baseline`` also trains the
single-scale FrozenInTime baseline (configs/demo/egoclip_demo.json) on the same data and budget. Each
model's best checkpoint is then evaluated on egomcq.json and the accuracies are printed next to chance.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.launch import evaluate, train  # noqa: E402
from utils.config import ConfigParser, set_by_path  # noqa: E402
from utils.synthetic import ensure_dataset  # noqa: E402

MULTISCALE = "multi-scale (4+8+16 frames)"
RUNS = {
    MULTISCALE: ROOT / "configs/demo/multiscale_demo.json",
    "single-scale baseline (4 frames)": ROOT / "configs/demo/egoclip_demo.json",
}


def load_config(path: Path, data: Path, overrides: list[str], device: str, run_id: str | None = None,
                purpose: str = "train", resume: str | None = None) -> ConfigParser:
    args = argparse.Namespace(set=overrides)
    parser = ConfigParser.from_file(path, overrides=args, device=device, run_id=run_id, purpose=purpose,
                                    resume=resume)
    for section in ("data_loader", "valid_data_loader"):
        set_by_path(parser.config, f"{section}.args.data_dir", str(data / "videos"))
        set_by_path(parser.config, f"{section}.args.meta_dir", str(data / "meta"))
    return parser


def main(argv=None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--data", default="data/synthetic", help="synthetic dataset folder (generated if absent)")
    cli.add_argument("--baseline", action="store_true", help="also train the single-scale baseline")
    cli.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="config override")
    cli.add_argument("-d", "--device", default="auto")
    args = cli.parse_args(argv)
    data = Path(args.data)
    ensure_dataset(data, log=lambda line: print(line, flush=True))
    results = {}
    for label, config_path in RUNS.items():
        if label != MULTISCALE and not args.baseline:
            continue
        print(f"\n== training {label}: {config_path.relative_to(ROOT)}", flush=True)
        start = time.time()
        config = load_config(config_path, data, args.set, args.device)
        train(config)
        minutes = (time.time() - start) / 60
        best = config.run_dir / "model_best.pth"
        print(f"== evaluating {best}", flush=True)
        eval_config = load_config(config_path, data, args.set, args.device, run_id=f"{config.run_dir.name}_egomcq",
                                  purpose="eval", resume=str(best))
        results[label] = (evaluate(eval_config, results_name="egomcq_results.json"), minutes)
    print("\nEgoMCQ on the synthetic demo set (chance: 20.0 %)")
    for label, (metrics, minutes) in results.items():
        print(f"  {label:<34} inter-video {metrics['inter_video_acc']:5.1f} %   "
              f"intra-video {metrics['intra_video_acc']:5.1f} %   (trained {minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
