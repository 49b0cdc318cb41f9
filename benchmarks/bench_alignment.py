"""Learning benchmark of the temporal-alignment system on synthetic procedural videos (CPU, a few minutes).

For each alignment loss (configs/align/{tcc,lav,vava,gtcc,gtcc_single_head}.json) and each seed, a fresh
synthetic dataset is written (``utils.synthetic_procedural`` defaults, that seed: 2 tasks × 40 videos) and the
config is trained through the engine (``trainer.launch.train``, the same path as ``run/train.py``). Kendall's
τ of the test videos is measured before training (the untrained encoder, ``init_val``) and after. For the
progress head (configs/align/tcc_progress.json), the action-level online progress error of the head is compared
with the constant-0.5 baseline's. Pass criteria: τ after > τ before + 0.05 on every seed, and head error ≤
constant error / 2.

Usage: python benchmarks/bench_alignment.py [--seeds 0 1 2 --epochs 10 --losses tcc lav vava gtcc --threads 1]
Writes benchmarks/results/alignment.json and prints a summary. Seeds can run in separate processes
(``--seeds 1 --out /tmp/seed1.json``) and be combined with ``--merge /tmp/seed*.json``.
"""
import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine_info, write_report  # noqa: E402
from trainer import launch  # noqa: E402
from utils.config import ConfigParser  # noqa: E402
from utils.config_files import load_config_file  # noqa: E402
from utils.synthetic_procedural import make_procedural  # noqa: E402


def run_config(name: str, data_dir: Path, seed: int, epochs: int, work: Path) -> dict:
    """Train ``configs/align/<name>.json`` on the dataset in ``data_dir``; ``{'before': metrics, 'after': ...}``."""
    config = copy.deepcopy(load_config_file(ROOT / f"configs/align/{name}.json"))
    for section in ("data_loader", "valid_data_loader"):
        config[section]["args"].update(task_file=str(data_dir / "egoprocel.json"),
                                       features_dir=str(data_dir / "features"))
    config["trainer"].update(epochs=epochs, val_every=epochs, init_val=True, seed=seed,
                             save_dir=str(work / "runs"), tqdm=False, log_every=1000, monitor="off")
    parser = ConfigParser(config, source=f"{name}.json", device="cpu", run_id=f"{name}_seed{seed}")
    start = time.perf_counter()
    after = launch.train(parser)
    seconds = time.perf_counter() - start
    log = (parser.run_dir / "train.log").read_text()
    before_line = next(line for line in log.splitlines() if "evaluation (val) after epoch 0:" in line)
    before = {k: float(v) for k, v in (item.strip().rsplit(" ", 1)
                                       for item in before_line.split("after epoch 0:")[1].split(","))}
    return {"before": before, "after": after, "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--progress-epochs", type=int, default=30, help="0 skips the progress head")
    parser.add_argument("--losses", nargs="*", default=["tcc", "lav", "vava", "gtcc", "gtcc_single_head"])
    parser.add_argument("--progress-config", default="tcc_progress")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/alignment.json"))
    parser.add_argument("--merge", nargs="+", help="combine the results of these reports (one per seed) instead")
    args = parser.parse_args(argv)
    if args.merge:
        reports = [json.loads(Path(path).read_text()) for path in args.merge]
        results = {"alignment": {}, "progress": {}}
        for report in reports:
            for name, per_seed in report["results"]["alignment"].items():
                results["alignment"].setdefault(name, {}).update(per_seed)
            results["progress"].update(report["results"]["progress"])
        seeds = sorted({int(s) for report in reports for s in report["seeds"]})
        return finish(results, seeds, reports[0]["epochs"], reports[0]["progress_epochs"], args.out)
    torch.set_num_threads(args.threads)
    results = {"alignment": {}, "progress": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in args.seeds:
            data_dir = work / f"data{seed}"
            make_procedural(data_dir, seed=seed)
            for name in args.losses:
                run = run_config(name, data_dir, seed, args.epochs, work)
                results["alignment"].setdefault(name, {})[seed] = {
                    "tau_untrained": run["before"]["kendalls_tau"], "tau_trained": run["after"]["kendalls_tau"],
                    "tau_wild_untrained": run["before"]["kendalls_tau_wild"],
                    "tau_wild_trained": run["after"]["kendalls_tau_wild"],
                    "phase_acc_100_trained": run["after"]["phase_acc_100"], "epochs": args.epochs,
                    "seconds": run["seconds"]}
                print(f"seed {seed} {name}: tau {run['before']['kendalls_tau']:.3f} -> "
                      f"{run['after']['kendalls_tau']:.3f} ({run['seconds']} s)", flush=True)
            if not args.progress_epochs:
                continue
            run = run_config(args.progress_config, data_dir, seed, args.progress_epochs, work)
            results["progress"][seed] = {
                "ope_action_head": run["after"]["ope_action_head"],
                "ope_action_constant": run["after"]["ope_action_constant"],
                "ope_action_geodesic": run["after"]["ope_action_geodesic"],
                "ope_action_head_untrained": run["before"]["ope_action_head"], "epochs": args.progress_epochs,
                "config": args.progress_config,
                "seconds": run["seconds"]}
            print(f"seed {seed} progress head: OPE {run['after']['ope_action_head']:.3f} vs constant "
                  f"{run['after']['ope_action_constant']:.3f}", flush=True)
    return finish(results, args.seeds, args.epochs, args.progress_epochs, args.out)


def finish(results: dict, seeds: list, epochs: int, progress_epochs: int, out: str) -> int:
    """Checks and means over seeds; writes the report; exit status 0 when every check passes."""
    checks = {name: all(r["tau_trained"] > r["tau_untrained"] + 0.05 for r in per_seed.values())
              for name, per_seed in results["alignment"].items()}
    checks["progress_head_2x_better_than_constant"] = all(
        r["ope_action_head"] <= r["ope_action_constant"] / 2 for r in results["progress"].values())
    summary = {name: {"tau_untrained_mean": float(np.mean([r["tau_untrained"] for r in per_seed.values()])),
                      "tau_trained_mean": float(np.mean([r["tau_trained"] for r in per_seed.values()]))}
               for name, per_seed in results["alignment"].items()}
    summary["progress"] = {key: float(np.mean([r[key] for r in results["progress"].values()]))
                           for key in ("ope_action_head", "ope_action_constant", "ope_action_geodesic")}
    report = {"benchmark": "alignment learning on synthetic procedural videos", "seeds": seeds,
              "epochs": epochs, "progress_epochs": progress_epochs, "results": results,
              "summary": summary, "checks": checks,
              "machine": machine_info(torch=torch.__version__)}
    write_report(report, out)
    print(json.dumps({"summary": summary, "checks": checks}, indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
