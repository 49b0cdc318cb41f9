"""Evaluators (reset / process / compute), registered in ``utils.registry.EVALUATORS``."""
from trainer.evaluators.egomcq import EgoMCQEvaluator

__all__ = ["EgoMCQEvaluator"]
