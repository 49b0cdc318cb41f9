"""The demo: generate the synthetic EgoClip/EgoMCQ set if absent, train on CPU, evaluate EgoMCQ.

    python run/demo.py [--data data/synthetic] [--baseline] [--set trainer.epochs=5]

Trains the multi-scale model (configs/demo/multiscale_demo.json); ``--baseline`` also trains the
single-scale FrozenInTime baseline (configs/demo/egoclip_demo.json) on the same data and budget. Training ends
with an evaluation of the final weights on egomcq.json (no checkpoint is chosen on the questions); its
accuracies are printed next to chance and written to <run dir>/egomcq_results.json, with the path of the run's
learning curves and the command that re-evaluates the saved weights.
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.launch import train  # noqa: E402
from utils.config import ConfigParser, set_by_path  # noqa: E402
from utils.synthetic import ensure_dataset  # noqa: E402

MULTISCALE = "multi-scale (4+8+16 frames)"
RUNS = {
    MULTISCALE: ROOT / "configs/demo/multiscale_demo.json",
    "single-scale baseline (4 frames)": ROOT / "configs/demo/egoclip_demo.json",
}


def load_config(path: Path, data: Path, overrides: list[str], device: str) -> ConfigParser:
    """The training config at ``path`` with ``--set`` overrides, reading the synthetic set in ``data``."""
    args = argparse.Namespace(set=overrides)
    parser = ConfigParser.from_file(path, overrides=args, device=device)
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
    demo_start = time.time()
    data = Path(args.data)
    ensure_dataset(data, log=lambda line: print(line, flush=True))
    results = {}
    for label, config_path in RUNS.items():
        if label != MULTISCALE and not args.baseline:
            continue
        print(f"\n== training {label}: {config_path.relative_to(ROOT)}", flush=True)
        start = time.time()
        config = load_config(config_path, data, args.set, args.device)
        metrics = train(config)  # the last evaluation: the final weights, after the last epoch
        if "inter_video_acc" not in metrics:
            print(f"error: {label}: training ended without a final EgoMCQ evaluation (see {config.run_dir})",
                  file=sys.stderr)
            return 1
        (config.run_dir / "egomcq_results.json").write_text(json.dumps(metrics, indent=1))
        results[label] = (metrics, (time.time() - start) / 60, config_path, config.run_dir)
    print(f"\nEgoMCQ on the synthetic demo set (chance: 20.0 %; {(time.time() - demo_start) / 60:.1f} min in all)")
    for label, (metrics, minutes, config_path, run_dir) in results.items():
        print(f"  {label:<34} inter-video {metrics['inter_video_acc']:5.1f} %   "
              f"intra-video {metrics['intra_video_acc']:5.1f} %   (trained and evaluated in {minutes:.1f} min)")
        print(f"  {'':<34} learning curves: {run_dir / 'curves.png'}")
        print(f"  {'':<34} re-evaluate: python run/evaluate.py -c {config_path.relative_to(ROOT)} "
              f"--resume {run_dir / 'latest.pth'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
