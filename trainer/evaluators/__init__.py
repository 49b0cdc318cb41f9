"""Evaluators (reset / process / compute), registered in ``utils.registry.EVALUATORS``."""
from trainer.evaluators.egomcq import EgoMCQEvaluator
from trainer.evaluators.zero_shot import CharadesZeroShot, ZeroShotTopK  # noqa: F401
from trainer.evaluators.ek100_mir import EK100MIRRetrieval  # noqa: F401
from trainer.evaluators.charades_ego import CharadesEgoMAP  # noqa: F401

__all__ = ["EgoMCQEvaluator"]
