"""Does multi-scale temporal modelling help? Four recipes, the same data and budget, several seeds: EgoMCQ accuracy.

    python benchmarks/bench_multiscale_effect.py [--seeds 0 1 2] [--epochs N] [--jobs 2]

Recipes (all from the demo configs, differing only where named):
  (a) multiscale_temporal: multi-scale 4+8+16 frames, temporal consistency term, temperature 0.07 -> 0.03
      (configs/demo/multiscale_demo.json)
  (b) multiscale: (a) without the temporal term (loss.args.consistency_weight 0)
  (c) single4: single-scale FrozenInTime on 4 frames, EgoNCE with the same temperature schedule
      (configs/demo/egoclip_demo.json)
  (d) single16: (c) on 16 frames
Every recipe uses the temporal-pair sampler, the same optimiser, schedule, epochs and optimizer steps; a seed sets
the initialisation, batch order and augmentation (the data are the same for all runs).

Data: the synthetic EgoClip/EgoMCQ set with the four temporal-scale verbs (``utils.synthetic`` with
``num_verbs=14``, seed 0, demo size): "taps" (the object vanishes for 2 frames: 4 frames sampled from a 2-s clip
usually miss it) vs "holds"; "moves ... to the left/right and back" (same start and end; only the order of the
clip's halves tells them apart) besides the ten demo verbs. The questions come from held-out videos and the
final weights are scored (no checkpoint is chosen on them). Intra-video accuracy is also reported on the
questions whose query is a fine-temporal verb (``fine/``) or a long-range-order verb (``order/``).

Each run is a subprocess (``--jobs`` at a time, one thread each) whose result is kept in ``--work`` under a hash of
its config, so an interrupted benchmark resumes where it stopped and a changed recipe is run again. Writes
benchmarks/results/multiscale_effect.json (every run, mean ± std per recipe, Welch's t-test of (a) against each
other recipe) and multiscale_effect.png.
"""
import argparse
import copy
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine_info, write_report  # noqa: E402
from utils.config_files import load_config_file  # noqa: E402
from utils.synthetic import VERBS, generate  # noqa: E402

RECIPES = {
    "multiscale_temporal": "(a) multi-scale 4+8+16, temporal term, temperature schedule",
    "multiscale": "(b) multi-scale 4+8+16, no temporal term",
    "single4": "(c) single-scale, 4 frames",
    "single16": "(d) single-scale, 16 frames",
}
QUERY_GROUPS = {"fine": r"\b(taps|holds)\b", "order": r"(left|right) and back"}  # query texts of those verbs
METRICS = ("inter_video_acc", "intra_video_acc", "fine/intra_video_acc", "order/intra_video_acc")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
STEPS_PER_EPOCH = 18  # a cap; every recipe gets what the temporal-pair sampler yields (15 batches of 16 here)


def recipe_config(recipe: str, data: str, seed: int, epochs: int, save_dir: str) -> dict:
    """The config dict of one run of ``recipe``."""
    name = "multiscale_demo" if recipe.startswith("multiscale") else "egoclip_demo"
    config = copy.deepcopy(load_config_file(os.path.join(ROOT, "configs", "demo", f"{name}.json")))
    for section in ("data_loader", "valid_data_loader"):
        config[section]["args"].update(data_dir=os.path.join(data, "videos"), meta_dir=os.path.join(data, "meta"))
    config["data_loader"]["args"]["sampler"] = "temporal_pair"
    if recipe == "multiscale":
        config["loss"]["args"]["consistency_weight"] = 0.0
    if recipe == "single16":
        for params in (config["arch"]["args"]["video_params"], config["data_loader"]["args"]["video_params"],
                       config["valid_data_loader"]["args"]["video_params"]):
            params["num_frames"] = 16
    config.pop("metrics", None)
    config["evaluators"] = [{"type": "EgoMCQ", "args": {"query_groups": QUERY_GROUPS}}]
    config["name"] = f"{recipe}_seed{seed}"
    config["trainer"].update(epochs=epochs, val_every=epochs, seed=seed, save_dir=save_dir, tqdm=False,
                             max_steps_per_epoch=STEPS_PER_EPOCH)
    return config


def config_fingerprint(recipe: str, data: str, seed: int, epochs: int) -> str:
    """8 hex digits of the run's config: a kept result is reused only while its recipe is unchanged."""
    config = recipe_config(recipe, data, seed, epochs, save_dir="")
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]


def run_one(recipe: str, seed: int, epochs: int, data: str, work: str, out: str) -> None:
    """Train one recipe with one seed (in this process) and write its final metrics to ``out``."""
    import torch

    from trainer.launch import train
    from utils.config import ConfigParser

    torch.set_num_threads(1)
    config = recipe_config(recipe, data, seed, epochs, os.path.join(work, "runs"))
    start = time.perf_counter()
    metrics = train(ConfigParser(config, device="cpu", run_id=f"{recipe}_seed{seed}"))
    result = {"recipe": recipe, "seed": seed, "train_seconds": round(time.perf_counter() - start, 1),
              **{k: v for k, v in metrics.items() if k.endswith("_acc") or k.endswith("_questions")}}
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)


def run_all(recipes, seeds, epochs, data, work, jobs) -> list[dict]:
    """Every (recipe, seed) run, ``jobs`` subprocesses at a time; finished runs are read back, not rerun."""
    pending, results, running = [], [], []
    for recipe in recipes:
        for seed in seeds:
            fingerprint = config_fingerprint(recipe, data, seed, epochs)
            out = os.path.join(work, f"{recipe}_seed{seed}_epochs{epochs}_{fingerprint}.json")
            if os.path.exists(out):
                print(f"{recipe} seed {seed}: done before ({out})", flush=True)
            else:
                pending.append((recipe, seed, out))
            results.append(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    while pending or running:
        while pending and len(running) < jobs:
            recipe, seed, out = pending.pop(0)
            log = open(out.replace(".json", ".log"), "w")
            cmd = [sys.executable, os.path.abspath(__file__), "--one", recipe, str(seed), "--epochs", str(epochs),
                   "--data", data, "--work", work, "--out-run", out]
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), recipe, seed, out,
                            log))
            print(f"{recipe} seed {seed}: started (log {log.name})", flush=True)
        time.sleep(2)
        for entry in list(running):
            proc, recipe, seed, out, log = entry
            if proc.poll() is None:
                continue
            running.remove(entry)
            log.close()
            if proc.returncode != 0:
                for other in running:
                    other[0].terminate()
                raise SystemExit(f"{recipe} seed {seed} failed (exit {proc.returncode}); see {log.name}")
            with open(out) as f:
                result = json.load(f)
            print(f"{recipe} seed {seed}: inter {result['inter_video_acc']:.1f} %, intra {result['intra_video_acc']:.1f}"
                  f" % ({result['train_seconds'] / 60:.1f} min)", flush=True)
    runs = []
    for out in results:
        with open(out) as f:
            runs.append(json.load(f))
    return runs


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (None without scipy or with fewer than 2 runs a side)."""
    try:
        from scipy.stats import ttest_ind
    except ImportError:
        return None
    if len(a) < 2 or len(b) < 2:
        return None
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def summarise(runs: list[dict], recipes) -> dict:
    """Mean ± std per recipe and metric, and (a) against each other recipe."""
    summary = {}
    for recipe in recipes:
        rows = [r for r in runs if r["recipe"] == recipe]
        summary[recipe] = {m: {"mean": statistics.mean(r[m] for r in rows),
                               "std": statistics.stdev(r[m] for r in rows) if len(rows) > 1 else 0.0,
                               "runs": [r[m] for r in rows]} for m in METRICS}
    reference = recipes[0]
    comparisons = {}
    for recipe in recipes[1:]:
        comparisons[recipe] = {}
        for m in METRICS:
            a, b = summary[reference][m]["runs"], summary[recipe][m]["runs"]
            p = welch_p(a, b)
            diff = statistics.mean(a) - statistics.mean(b)
            verdict = ("no significant difference" if p is None or p >= 0.05 else
                       f"{reference} {'higher' if diff > 0 else 'lower'} (p < 0.05)")
            comparisons[recipe][m] = {"difference": diff, "welch_p": p, "verdict": verdict}
    return {"per_recipe": summary, f"{reference}_vs": comparisons}


def plot(summary: dict, recipes, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / len(recipes)
    for i, recipe in enumerate(recipes):
        xs = [k + (i - (len(recipes) - 1) / 2) * width for k in range(len(METRICS))]
        stats = [summary[recipe][m] for m in METRICS]
        ax.bar(xs, [s["mean"] for s in stats], width, yerr=[s["std"] for s in stats], capsize=3,
               label=RECIPES[recipe])
        for x, s in zip(xs, stats):
            ax.scatter([x] * len(s["runs"]), s["runs"], s=8, color="black", zorder=3)
    ax.axhline(20.0, color="grey", linestyle="--", linewidth=1, label="chance (20 %)")
    ax.set_xticks(range(len(METRICS)))
    ax.set_xticklabels(["inter-video", "intra-video", "intra: taps/holds", "intra: left/right and back"])
    ax.set_ylabel("EgoMCQ accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    ax.set_title("mean ± std over seeds (dots: single runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo config's epochs")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--data", default=os.path.join(ROOT, "data", "synthetic_scales"))
    parser.add_argument("--work", default=os.path.join(ROOT, "saved", "bench_multiscale_effect"))
    parser.add_argument("--out", default=os.path.join(RESULTS, "multiscale_effect.json"))
    parser.add_argument("--one", nargs=2, metavar=("RECIPE", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--out-run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    epochs = args.epochs or load_config_file(os.path.join(ROOT, "configs", "demo", "multiscale_demo.json"))[
        "trainer"]["epochs"]
    if args.one:
        run_one(args.one[0], int(args.one[1]), epochs, args.data, args.work, args.out_run)
        return 0
    if not os.path.exists(os.path.join(args.data, "meta", "egomcq.json")):
        print(f"generating the synthetic set with temporal-scale verbs in {args.data} ...", flush=True)
        generate(args.data, seed=0, num_verbs=len(VERBS), workers=2)
    os.makedirs(args.work, exist_ok=True)
    start = time.time()
    runs = run_all(args.recipes, args.seeds, epochs, args.data, args.work, args.jobs)
    with open(os.path.join(args.data, "meta", "taxonomy.json")) as f:
        taxonomy = json.load(f)
    report = {"machine": machine_info(), "epochs": epochs, "max_steps_per_epoch": STEPS_PER_EPOCH,
              "seeds": args.seeds, "data": {"verbs": taxonomy["verbs"], "train_videos": len(taxonomy["train_videos"]),
                                            "mcq_videos": len(taxonomy["mcq_videos"])},
              "query_groups": QUERY_GROUPS, "recipes": {r: RECIPES[r] for r in args.recipes},
              "wall_minutes": round((time.time() - start) / 60, 1), "runs": runs,
              **summarise(runs, args.recipes)}
    write_report(report, args.out)
    plot(report["per_recipe"], args.recipes, os.path.splitext(args.out)[0] + ".png")
    print(f"\n{'recipe':<22}" + "".join(f"{m:>24}" for m in METRICS))
    for recipe in args.recipes:
        stats = report["per_recipe"][recipe]
        print(f"{recipe:<22}" + "".join(f"{stats[m]['mean']:>17.1f} ± {stats[m]['std']:4.1f}" for m in METRICS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
