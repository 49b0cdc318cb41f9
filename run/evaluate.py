"""Evaluate a checkpoint with the evaluators of any task a config names (EgoMCQ for EgoClip pretraining).

    python run/evaluate.py -c configs/eval/egomcq.json --resume path/to/checkpoint.pth

Prints the metrics and writes them to <run dir>/eval_results.json.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.launch import evaluate, run_script  # noqa: E402

if __name__ == "__main__":
    run_script(evaluate, __doc__, purpose="eval")
