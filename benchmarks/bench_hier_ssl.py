"""Does self-supervised training help? kNN top-1 of trained vs randomly initialised hierarchical encoders.

For each seed: synthetic moving-square videos (class = direction × speed, 8 classes; utils/synthetic_ssl.py) are
generated, the config is trained through ``trainer.launch.train`` (the shared engine, exactly as
``run/train.py`` does), and the weighted-kNN top-1 (k 20, T 0.07; test windows against training windows) of the
final level's features is compared with that of the same encoder before training (same seed, same init).

Usage: python benchmarks/bench_hier_ssl.py [--configs hierarchical siamese_vicreg --seeds 0 1 2 --epochs 16]
Writes benchmarks/results/hier_ssl.json and prints a table.
"""
import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine_info, write_report  # noqa: E402
from trainer import launch  # noqa: E402
from trainer.evaluation import evaluate_task  # noqa: E402
from trainer.state import seed_everything  # noqa: E402
from trainer.tasks.base import StepContext  # noqa: E402
from utils.config import ConfigParser  # noqa: E402
from utils.config_files import load_config_file  # noqa: E402
from utils.synthetic_ssl import generate_ssl_h5  # noqa: E402


def configured(name: str, data: dict, seed: int, epochs: int, save_dir: str) -> dict:
    config = copy.deepcopy(load_config_file(os.path.join(ROOT, "configs", "hier_ssl", f"{name}.json")))
    config["data_loader"]["args"]["source"] = {"h5": str(data["train"])}
    config["valid_data_loader"]["args"]["source"] = {"h5": str(data["test"])}
    config["valid_data_loader"]["args"]["bank_source"] = {"h5": str(data["train"])}
    config["hooks"] = [{"type": "Evaluate", "args": {"exponential_base": 100.0, "monitor": "max knn_top1"}}]
    config["trainer"].update(epochs=epochs, seed=seed, save_dir=save_dir, tqdm=False, log_every=1000)
    return config


def random_init_knn(config: dict) -> float:
    parser = ConfigParser(copy.deepcopy(config), device="cpu")
    seed_everything(config["trainer"]["seed"])  # as launch.start_run does before building the task
    task = launch.build_task(parser, torch.device("cpu"), splits=("val",))
    ctx = StepContext(device=torch.device("cpu"), global_step=0, epoch=0, total_epochs=0, total_steps=0)
    return evaluate_task(task, "val", ctx, show_progress=False)["knn_top1"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["hierarchical", "siamese_vicreg"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "hier_ssl.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {"machine": machine_info(torch=torch.__version__), "epochs": args.epochs,
              "data": "160 train / 80 test videos, 24 frames of 16x16, 8 classes (4 directions x 2 speeds); "
                      "windows of 8 frames every 4 (train) / 8 (test)", "chance_top1": 12.5, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            rows = []
            for seed in args.seeds:
                data = generate_ssl_h5(os.path.join(tmp, f"data{seed}"), num_frames=24, seed=seed)
                config = configured(name, data, seed, args.epochs, os.path.join(tmp, "runs"))
                before = random_init_knn(config)
                start = time.perf_counter()
                metrics = launch.train(ConfigParser(copy.deepcopy(config), device="cpu", run_id=f"{name}_{seed}"))
                seconds = time.perf_counter() - start
                rows.append({"seed": seed, "random_init_knn_top1": before, "trained_knn_top1": metrics["knn_top1"],
                             "trained_knn_top5": metrics["knn_top5"], "train_seconds": round(seconds, 1)})
                print(f"{name:16s} seed {seed}: kNN top-1 random {before:5.1f} -> trained {metrics['knn_top1']:5.1f}"
                      f" ({seconds:.0f} s)", flush=True)
            margins = [r["trained_knn_top1"] - r["random_init_knn_top1"] for r in rows]
            report["results"][name] = {"runs": rows, "mean_margin": statistics.mean(margins),
                                       "min_margin": min(margins)}
    write_report(report, args.out)
    for name, result in report["results"].items():
        print(f"{name:16s} margin over random init: mean {result['mean_margin']:.1f}, "
              f"min {result['min_margin']:.1f} points")


if __name__ == "__main__":
    main()
