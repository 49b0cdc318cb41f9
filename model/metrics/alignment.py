"""Frame-level alignment metrics between two embedded videos (numpy or torch inputs, numpy outputs).

* Kendall's τ: every frame of U is matched to its nearest frame of V (squared Euclidean); τ between the frame
  order and the matched order (1: order kept, −1: reversed).
* τ in the wild: the same on alignable (non-background) frames only, ``(C − D) / (n(n−1)/2)``.
* Enclosed area error: for each alignable frame of U, how far (in frames of V, divided by V's length) its match
  lies from the nearest frame of V showing the same action.
* Phase classification: an SVC on standardised frame embeddings, fitted on training videos, scored on test ones;
  few-shot: the same fitted on k random training videos per episode.
* Phase progression: R² of a linear regression from embeddings to in-action progress, fitted on training videos.
* Drop detection: precision, recall, F1 and accuracy of predicting background frames as "dropped".
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy.stats import kendalltau


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def nearest_neighbours(u, v) -> np.ndarray:
    """``[N]``: index of the nearest row of ``v [M, D]`` for each row of ``u [N, D]`` (squared Euclidean)."""
    u, v = as_numpy(u), as_numpy(v)
    dist = (u * u).sum(1)[:, None] - 2 * u @ v.T + (v * v).sum(1)[None, :]
    return dist.argmin(axis=1)


def kendalls_tau(u, v, stride: int = 1) -> float:
    """Kendall's τ of the nearest-neighbour alignment of every ``stride``-th frame of U into V; NaN when undefined
    (fewer than 2 frames, or all matched to one frame)."""
    u, v = as_numpy(u)[::stride], as_numpy(v)[::stride]
    if len(u) < 2:
        return float("nan")
    matches = nearest_neighbours(u, v)
    if np.all(matches == matches[0]):
        return float("nan")
    return float(kendalltau(np.arange(len(u)), matches).statistic)


def concordance_tau(order: np.ndarray) -> float:
    """``(concordant − discordant) / (n(n−1)/2)`` of the pairs ``i < j`` of ``order`` (ties count as neither)."""
    n = len(order)
    if n < 2:
        return float("nan")
    sign = np.sign(order[None, :] - order[:, None])
    return float(np.triu(sign, k=1).sum() / (n * (n - 1) / 2))


def kendalls_tau_wild(u, v, labels_u, labels_v) -> float:
    """τ on alignable frames: frames of U with a label > 0 matched among the frames of V with a label > 0."""
    keep_u, keep_v = np.asarray(labels_u) > 0, np.asarray(labels_v) > 0
    if keep_u.sum() < 2 or keep_v.sum() < 1:
        return float("nan")
    return concordance_tau(nearest_neighbours(as_numpy(u)[keep_u], as_numpy(v)[keep_v]))


def enclosed_area_error(u, v, labels_u, labels_v) -> float:
    """Mean over alignable frames of U (whose action V also shows) of ``|match − nearest same-action frame| / M``,
    matches taken among V's alignable frames; NaN when no frame qualifies."""
    labels_u, labels_v = np.asarray(labels_u), np.asarray(labels_v)
    frames_v = np.flatnonzero(labels_v > 0)
    if len(frames_v) == 0:
        return float("nan")
    matches = frames_v[nearest_neighbours(as_numpy(u), as_numpy(v)[frames_v])]
    errors = []
    for i in np.flatnonzero(labels_u > 0):
        same = np.flatnonzero(labels_v == labels_u[i])
        if len(same):
            errors.append(np.abs(same - matches[i]).min() / len(labels_v))
    return float(np.mean(errors)) if errors else float("nan")


def _select_videos(num_videos: int, fraction: float, seed: int) -> np.ndarray:
    count = max(1, math.ceil(fraction * num_videos - 1e-9))
    return np.random.default_rng(seed).permutation(num_videos)[:count]


def svc_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Accuracy on the test frames of an SVC (one-vs-one) fitted on standardised training frames; a single training
    class predicts that class everywhere."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    if len(np.unique(train_y)) < 2:
        return float(np.mean(test_y == train_y[0]))
    model = make_pipeline(StandardScaler(), SVC(decision_function_shape="ovo")).fit(train_x, train_y)
    return float(np.mean(model.predict(test_x) == test_y))


def _frames(embeddings: Sequence, labels: Sequence, videos) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([as_numpy(embeddings[i]) for i in videos]),
            np.concatenate([np.asarray(labels[i]) for i in videos]))


def phase_classification(train_embeddings: Sequence, train_labels: Sequence, test_embeddings: Sequence,
                         test_labels: Sequence, fractions: Sequence[float] = (0.1, 0.5, 1.0), seed: int = 0
                         ) -> dict[float, float]:
    """``{fraction: accuracy}``: an SVC (one-vs-one, on standardised embeddings) fitted on the frames of that
    fraction of the training videos (at least one, chosen with ``seed``), scored on every test frame."""
    test_x, test_y = _frames(test_embeddings, test_labels, range(len(test_embeddings)))
    return {fraction: svc_accuracy(*_frames(train_embeddings, train_labels,
                                            _select_videos(len(train_embeddings), fraction, seed)), test_x, test_y)
            for fraction in fractions}


def few_shot_classification(train_embeddings: Sequence, train_labels: Sequence, test_embeddings: Sequence,
                            test_labels: Sequence, shots: Sequence[int] = (1, 2, 5), episodes: int = 50,
                            seed: int = 42) -> dict[int, tuple[float, float]]:
    """``{shots: (mean accuracy, 95 % CI half-width)}`` over ``episodes`` episodes, each fitting the SVC on
    ``shots`` random training videos (fewer when the task has fewer) and scoring every test frame."""
    rng = np.random.default_rng(seed)
    test_x, test_y = _frames(test_embeddings, test_labels, range(len(test_embeddings)))
    result = {}
    for k in shots:
        accuracies = [svc_accuracy(*_frames(train_embeddings, train_labels,
                                            rng.permutation(len(train_embeddings))[:k]), test_x, test_y)
                      for _ in range(episodes)]
        half_width = 1.96 * np.std(accuracies, ddof=1) / np.sqrt(episodes) if episodes > 1 else float("nan")
        result[k] = (float(np.mean(accuracies)), float(half_width))
    return result


def phase_progression_r2(train_embeddings: Sequence, train_progress: Sequence, test_embeddings: Sequence,
                         test_progress: Sequence) -> float:
    """R² on test frames of a linear regression (fitted on training frames) from embedding to progress; frames
    whose progress is NaN (background) are left out."""
    from sklearn.linear_model import LinearRegression

    def stack(embeddings, progress):
        x = np.concatenate([as_numpy(e) for e in embeddings])
        y = np.concatenate([np.asarray(p, dtype=float) for p in progress])
        keep = ~np.isnan(y)
        return x[keep], y[keep]

    x, y = stack(train_embeddings, train_progress)
    test_x, test_y = stack(test_embeddings, test_progress)
    if len(y) < 2 or len(test_y) < 2:
        return float("nan")
    return float(LinearRegression().fit(x, y).score(test_x, test_y))


def drop_counts(predicted_drop, background) -> np.ndarray:
    """``[tp, fp, fn, tn]`` of frame-wise drop predictions against background (the frames that should drop)."""
    predicted, truth = np.asarray(predicted_drop, bool), np.asarray(background, bool)
    return np.array([(predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum(),
                     (~predicted & ~truth).sum()], dtype=float)


def drop_prf1(counts: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and accuracy in percent from summed :func:`drop_counts` (NaN where undefined)."""
    tp, fp, fn, tn = counts
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
    return {"drop_precision": 100 * precision, "drop_recall": 100 * recall, "drop_f1": 100 * f1,
            "drop_accuracy": 100 * (tp + tn) / counts.sum() if counts.sum() else float("nan")}
