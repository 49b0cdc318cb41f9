"""CLEP end to end on the synthetic set: generate it in Ego4D's formats, preprocess, train, evaluate zero-shot.

    python examples/clep_synthetic.py [--data data/synthetic_clep] [--epochs 8] [--device cpu]

1. ``utils.synthetic_clep`` writes narration.json, ego4d.json, ``<video_uid>.pt`` features and Kinetics- and
   Charades-Ego-style labelled sets (10 concepts seen through a random linear map) under ``<data>/raw``;
2. ``data_loader.clep_preprocess.preprocess`` (what ``run/preprocess_clep.py`` runs) writes ``<data>/processed``
   with the hash text encoder (the set's text vectors are defined through it);
3. untrained models (5 random inits) are evaluated, then ``configs/clep/synthetic.json`` is trained with the
   shared engine and evaluated again: zero-shot top-1 on the Kinetics-style set and Charades-style mAP (ego
   videos, class names).

About half a minute on 2 CPU cores.
"""
import argparse
import contextlib
import copy
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from data_loader.clep_preprocess import preprocess  # noqa: E402
from model.sentence_encoders import HashTextEncoder  # noqa: E402
from trainer import launch  # noqa: E402
from trainer.evaluation import evaluate_task  # noqa: E402
from utils.config import ConfigParser, set_by_path  # noqa: E402
from utils.config_files import load_config_file  # noqa: E402
from utils.synthetic_clep import SyntheticCLEPConfig, generate, preprocess_inputs  # noqa: E402

SHOWN = {"loader0/top1": "K400-style zero-shot top-1 (%)", "loader0/top5": "K400-style zero-shot top-5 (%)",
         "loader1/mAP_ego_name": "Charades-style mAP, ego videos, class names (%)"}
UNTRAINED_DRAWS = 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic_clep")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    data = Path(args.data)
    synthetic = SyntheticCLEPConfig()
    if not (data / "raw" / "narration.json").is_file():
        generate(data / "raw", synthetic)
    preprocess(data / "processed", encoder=HashTextEncoder(synthetic.text_dim), **preprocess_inputs(data / "raw"))

    config = load_config_file(str(ROOT / "configs/clep/synthetic.json"))
    set_by_path(config, "data_loader.args.root", str(data / "processed"))
    set_by_path(config, "valid_data_loader", [
        {**entry, "args": {**entry["args"], "root": str(data / "processed" / Path(entry["args"]["root"]).name)}}
        for entry in config["valid_data_loader"]])
    set_by_path(config, "trainer.epochs", args.epochs)

    ctx = SimpleNamespace(device=torch.device(args.device), autocast=contextlib.nullcontext)
    draws = []
    for seed in range(UNTRAINED_DRAWS):  # one draw is coarse: a class's clips share their prediction
        torch.manual_seed(seed)
        task = launch.build_task(ConfigParser(copy.deepcopy(config), device=args.device), torch.device(args.device),
                                 splits=("val",))
        draws.append(evaluate_task(task, "val", ctx, show_progress=False))
    untrained = {key: sum(draw[key] for draw in draws) / len(draws) for key in SHOWN}
    run = ConfigParser(config, source="configs/clep/synthetic.json", device=args.device)
    trained = launch.train(run)
    print(f"{'metric':<50} {'untrained':>10} {'trained':>10}   (untrained: mean of {UNTRAINED_DRAWS} inits)")
    for key, name in SHOWN.items():
        print(f"{name:<50} {untrained[key]:>10.1f} {trained[key]:>10.1f}")
    print(f"chance top-1: {100 / synthetic.num_concepts:.1f} %; run dir: {run.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
