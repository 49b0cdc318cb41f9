"""Train any task a config names (``task.type``; EgoClip pretraining when the config has no ``task``).

    python run/train.py -c configs/pt/multiscale_egoclip.json [--lr 1e-5 --bs 8 --set trainer.epochs=5]
    torchrun --nnodes N --nproc_per_node 8 run/train.py -c CONFIG [--run-id $SLURM_JOB_ID]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.launch import run_script, train  # noqa: E402

if __name__ == "__main__":
    run_script(train, __doc__)
