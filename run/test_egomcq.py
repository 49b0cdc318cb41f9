"""Evaluate a checkpoint (ours, EgoVLP's released one, or a bare state dict) on EgoMCQ.

    python run/test_egomcq.py -c configs/eval/egomcq.json --resume path/to/egovlp.pth

Prints inter-video and intra-video accuracy (and per-scale accuracy for multi-scale models) and writes
them to <run dir>/egomcq_results.json.
"""
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.launch import evaluate, run_script  # noqa: E402

if __name__ == "__main__":
    run_script(functools.partial(evaluate, results_name="egomcq_results.json"), __doc__, purpose="eval")
