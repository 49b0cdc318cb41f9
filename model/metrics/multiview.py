"""Multi-view (video-level) accuracy: the log-probabilities of all windows of a video are averaged."""
from __future__ import annotations

import torch


def multiview_accuracy(log_probs: torch.Tensor, labels: torch.Tensor, video_ids: torch.Tensor) -> float:
    """Percent of videos whose mean window log-probabilities ``[N, C]`` rank their label first; each video
    counts once. The windows of one video must share its label (ValueError naming the video otherwise)."""
    videos, inverse = torch.unique(video_ids, return_inverse=True)
    summed = torch.zeros(len(videos), log_probs.shape[1], dtype=torch.float64).index_add_(0, inverse,
                                                                                          log_probs.double())
    counts = torch.bincount(inverse, minlength=len(videos)).double()
    video_labels = torch.full((len(videos),), -1, dtype=torch.long).scatter_(0, inverse, labels.long())
    if not torch.equal(video_labels[inverse], labels.long()):
        bad = int(videos[inverse[video_labels[inverse] != labels.long()][0]])
        raise ValueError(f"video {bad}: its windows carry different labels")
    mean = summed / counts[:, None]
    return 100.0 * (mean.argmax(dim=1) == video_labels).double().mean().item()
