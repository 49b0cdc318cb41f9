"""Action recognition by video-text matching (Charades-Ego): class names are the texts.

Training batches pair each trimmed clip with its class name (``text``) and use the retrieval objective (EgoVLP:
``NormSoftmaxLoss`` over the gathered batch). Evaluation scores each video against every class-name prompt,
encoded by the text tower alone: ``scores`` [B, C] = cosine(video, prompt) — zero-shot with a pretrained
model, or after fine-tuning.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.tasks.base import StepContext
from trainer.tasks.retrieval import VideoTextRetrieval, encode_text, encode_video
from utils.charades_meta import read_classes
from utils.registry import TASKS

PROMPT_BATCH = 64  # class-name prompts encoded at once


@TASKS.register("Recognition")
class VideoTextRecognition(VideoTextRetrieval):
    """Args: ``classes_file`` (``cXXX name`` lines, the class order of the labels), ``prompt`` (format string
    of each class name, default the name itself; EgoVLP adds no ``#C C`` prefix)."""

    consistent_keys = (("task.args.classes_file", "data_loader.args.classes_file",
                        "valid_data_loader.args.classes_file"),)

    def __init__(self, model, objective=None, classes_file: str = "", prompt: str = "{}"):
        super().__init__(model, objective)
        self.prompts = [prompt.format(name) for name in read_classes(classes_file)]
        self._prompt_embeds = None

    def evaluators(self, split: str) -> list:
        self._prompt_embeds = None  # the model may have changed since the last evaluation
        return super().evaluators(split)

    def prompt_embeddings(self, device) -> torch.Tensor:
        """Unit-norm text embeddings [C, D] of the class prompts (computed once per evaluation)."""
        if self._prompt_embeds is None:
            parts = [encode_text(self.model, self.prompts[i:i + PROMPT_BATCH], device)
                     for i in range(0, len(self.prompts), PROMPT_BATCH)]
            self._prompt_embeds = F.normalize(torch.cat(parts).float(), dim=-1, eps=1e-8)
        return self._prompt_embeds

    def evaluation_step(self, batch: dict, ctx: StepContext) -> dict:
        video = F.normalize(encode_video(self.model, batch["video"], ctx.device).float(), dim=-1, eps=1e-8)
        return {"scores": video @ self.prompt_embeddings(ctx.device).t()}
