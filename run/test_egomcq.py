"""Evaluate a checkpoint (ours, EgoVLP's released one, or a bare state dict) on EgoMCQ.

    python run/test_egomcq.py -c configs/eval/egomcq.json --resume path/to/egovlp.pth

Prints inter-video and intra-video accuracy (and per-scale accuracy for multi-scale models) and writes
them to <run dir>/egomcq_results.json.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.launch import evaluate  # noqa: E402
from utils.config import ConfigParser  # noqa: E402

if __name__ == "__main__":
    evaluate(ConfigParser.from_args(description=__doc__, purpose="eval"), results_name="egomcq_results.json")
