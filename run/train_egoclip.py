"""Baseline EgoVLP pretraining: FrozenInTime + EgoNCE on EgoClip, EgoMCQ validation.

    python run/train_egoclip.py -c configs/pt/egoclip.json [--lr 3e-5 --bs 16 --set trainer.epochs=5]
    torchrun --nproc_per_node 8 run/train_egoclip.py -c configs/pt/egoclip.json
"""
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.launch import run_script, train  # noqa: E402
from trainer.trainer_egoclip import Multi_Trainer_dist  # noqa: E402

if __name__ == "__main__":
    run_script(functools.partial(train, engine_cls=Multi_Trainer_dist), __doc__)
