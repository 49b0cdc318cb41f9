"""Multi-scale variant of the trainer: frames-dict inputs, per-scale embeddings for the temporal loss,
fusion weights in TensorBoard. Everything else is :class:`trainer.trainer_egoclip.Multi_Trainer_dist`."""
from __future__ import annotations

from trainer.trainer_egoclip import Multi_Trainer_dist


class MultiScale_Trainer_dist(Multi_Trainer_dist):
    """Trains MultiScaleFrozenInTime; ``batch['video']`` is ``{'frames_4': [B,4,3,R,R], ...}``."""

    forward_method = "forward_with_scales"

    def prepare_inputs(self, batch: dict) -> dict:
        inputs = {"text": self.model.tokenize(batch["text"], device=self.device),
                  "video": {k: v.to(self.device, non_blocking=True) for k, v in batch["video"].items()}}
        if batch.get("scale_mask") is not None:
            inputs["scale_mask"] = batch["scale_mask"].to(self.device, non_blocking=True)
        return inputs

    def extra_scalars(self, outputs: dict) -> dict:
        """Mean fusion weight of each scale over the batch (``fusion/weight_s{S}``)."""
        weights = outputs["fusion_weights"].detach().float().reshape(-1, len(self.model.scales)).mean(0)
        return {f"fusion/weight_s{s}": w.item() for s, w in zip(self.model.scales, weights)}


MultiScaleEgoClipTrainer = MultiScale_Trainer_dist
