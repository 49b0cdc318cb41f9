"""Tasks: a model, its objective, its data and its evaluators behind one ``training_step`` (``TASKS``)."""
from trainer.tasks.base import StepContext, StepOutput, Task
from trainer.tasks.egoclip import EgoClipPretraining
from trainer.tasks.clep import CLEPTraining  # noqa: F401
from trainer.tasks.retrieval import VideoTextRetrieval  # noqa: F401
from trainer.tasks.recognition import VideoTextRecognition  # noqa: F401
from trainer.tasks.extract import FeatureExtraction  # noqa: F401

__all__ = ["Task", "StepOutput", "StepContext", "EgoClipPretraining"]
