"""EgoVLP's trainer name: ``Multi_Trainer_dist`` is the engine (:class:`trainer.engine.Engine`); what is
specific to EgoClip pretraining lives in the task :class:`trainer.tasks.egoclip.EgoClipPretraining`."""
from trainer.engine import Engine, TrainingInterrupted
from trainer.param_groups import build_param_groups
from trainer.tasks.egoclip import append_scene_negatives

__all__ = ["Multi_Trainer_dist", "TrainingInterrupted", "build_param_groups", "append_scene_negatives"]


class Multi_Trainer_dist(Engine):
    """The engine under EgoVLP's name (``run/train_egoclip.py``); any task the config names trains with it."""
