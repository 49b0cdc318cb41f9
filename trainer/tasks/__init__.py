"""Tasks: a model, its objective, its data and its evaluators behind one ``training_step`` (``TASKS``).

Each task module registers its classes when imported; :data:`utils.registry.TASKS` lists them all.
"""
from trainer.tasks.base import StepContext, StepOutput, Task
from trainer.tasks.egoclip import EgoClipPretraining

__all__ = ["Task", "StepOutput", "StepContext", "EgoClipPretraining"]
