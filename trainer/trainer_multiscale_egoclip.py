"""``MultiScale_Trainer_dist``: the engine under the multi-scale script's name. Single- and multi-scale
EgoClip pretraining are one task (:class:`trainer.tasks.egoclip.EgoClipPretraining`), which reads the
frames dict, the per-scale embeddings and the fusion weights itself."""
from trainer.trainer_egoclip import Multi_Trainer_dist


class MultiScale_Trainer_dist(Multi_Trainer_dist):
    """The engine under the multi-scale name (``run/train_multiscale_egoclip.py``)."""
