"""model.metrics.classification: top-k on hand examples, Charades mAP against scikit-learn and closed cases."""
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from model.metric import charades_map, topk_accuracy
from model.metrics.classification import average_precision, topk_hits


def test_topk_on_a_hand_example():
    scores = np.array([[0.9, 0.05, 0.05],     # label 0: rank 1
                       [0.5, 0.3, 0.2],       # label 1: rank 2
                       [0.1, 0.6, 0.3]])      # label 0: rank 3
    labels = np.array([0, 1, 0])
    assert topk_hits(scores, labels, ks=(1, 2, 3)) == {1: 1, 2: 2, 3: 3}
    assert topk_accuracy(torch.tensor(scores), torch.tensor(labels), ks=(1, 2)) == pytest.approx(
        {"top1": 100 / 3, "top2": 200 / 3})


def test_topk_ties_favour_the_lower_class():
    assert topk_hits(np.array([[1.0, 1.0]]), np.array([0]), ks=(1,)) == {1: 1}
    assert topk_hits(np.array([[1.0, 1.0]]), np.array([1]), ks=(1,)) == {1: 0}


def test_average_precision_hand_values():
    # ranked positives at 1 and 3: (1/1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True])) == pytest.approx(5 / 6)
    assert np.isnan(average_precision(np.array([0.9, 0.8]), np.array([False, False])))


def test_charades_map_equals_sklearn_on_tie_free_scores():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((40, 6))                       # continuous: no ties
    labels = (rng.random((40, 6)) < 0.3).astype(int)
    unlabelled = ~labels.any(axis=1)                             # videos without labels are ranked last
    assert 0 < unlabelled.sum() < 40
    result = charades_map(scores, labels)
    ranked_last = scores.copy()
    ranked_last[unlabelled] = scores.min() - 1
    expected = [average_precision_score(labels[:, c], ranked_last[:, c]) for c in range(6)]
    np.testing.assert_allclose(result["per_class_ap"], expected, rtol=1e-12)
    assert result["mAP"] == pytest.approx(100 * np.mean(expected))


def test_charades_map_perfect_ranking_and_undefined_classes():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    perfect = charades_map(labels + 0.1 * np.arange(4)[:, None], labels)
    assert perfect["mAP"] == pytest.approx(100.0)
    assert np.isnan(perfect["per_class_ap"][2]) and perfect["classes_scored"] == 2
    # An unlabelled video scoring highest is still ranked last: it cannot lower any class's AP.
    scores = labels.astype(float)
    scores[3] = 10.0
    assert charades_map(scores, labels)["mAP"] == pytest.approx(100.0)


def test_charades_map_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"scores \(2, 3\) and labels \(2, 4\)"):
        charades_map(np.zeros((2, 3)), np.zeros((2, 4)))
