"""Multi-scale pretraining: MultiScaleFrozenInTime (4/8/16 frames, fused) + EgoNCE + temporal consistency.

    python run/train_multiscale_egoclip.py -c configs/pt/multiscale_egoclip.json [--lr 1e-5 --bs 8 --cw 0.2]
    torchrun --nnodes N --nproc_per_node 8 run/train_multiscale_egoclip.py -c configs/pt/multiscale_egoclip.json
"""
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.launch import run_script, train  # noqa: E402
from trainer.trainer_multiscale_egoclip import MultiScale_Trainer_dist  # noqa: E402

if __name__ == "__main__":
    run_script(functools.partial(train, engine_cls=MultiScale_Trainer_dist), __doc__)
