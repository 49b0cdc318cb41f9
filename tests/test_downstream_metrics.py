"""EK-100 MIR metrics (mAP, nDCG over graded relevance) and the max-margin ranking losses, against
hand-computed values and independent closed forms."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, ndcg_score

from model.loss import AdaptiveMaxMarginRankingLoss, MaxMarginRankingLoss, NormSoftmaxLoss
from model.metric import ek100_mir_metrics
from model.metrics.retrieval import average_precision_rows, ndcg_rows
from utils.registry import LOSSES

LOG3 = math.log2(3)


def test_partial_relevance_adds_to_the_numerator():
    # ranked relevances [0.5, 1]: AP = (0.5 + 1) / 2 / 1 = 0.75
    assert average_precision_rows(np.array([[0.9, 0.1]]), np.array([[0.5, 1.0]]))[0] == pytest.approx(0.75)
    # ranked [0, 1, 1]: (1/2 + 2/3) / 2
    ap = average_precision_rows(np.array([[0.3, 0.9, 0.1]]), np.array([[1.0, 0.0, 1.0]]))[0]
    assert ap == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_ndcg_is_cut_at_the_number_of_relevant_items():
    # relevances [0.5, 1, 0] ranked as given: k = 2; DCG = 0.5 + 1/log2(3), ideal 1 + 0.5/log2(3)
    value = ndcg_rows(np.array([[0.9, 0.8, 0.1]]), np.array([[0.5, 1.0, 0.0]]))[0]
    assert value == pytest.approx((0.5 + 1 / LOG3) / (1 + 0.5 / LOG3))
    # the only relevant item ranked second: k = 1, so nothing within the cut scores
    assert ndcg_rows(np.array([[0.9, 0.8]]), np.array([[0.0, 0.3]]))[0] == 0.0


def test_both_directions_hand_computed():
    sim = np.array([[0.1, 0.9], [0.2, 0.8]])
    rel = np.array([[1.0, 0.5], [0.0, 1.0]])
    m = ek100_mir_metrics(sim, rel)
    assert m["mAP_V2T"] == pytest.approx(100 * (0.75 + 1.0) / 2)
    assert m["mAP_T2V"] == pytest.approx(100 * (0.5 + 0.75) / 2)
    assert m["mAP_AVG"] == pytest.approx((87.5 + 62.5) / 2)
    partial = (0.5 + 1 / LOG3) / (1 + 0.5 / LOG3)
    assert m["nDCG_V2T"] == pytest.approx(100 * (partial + 1.0) / 2)
    assert m["nDCG_T2V"] == pytest.approx(100 * (0.0 + partial) / 2)
    assert m["nDCG_AVG"] == pytest.approx((m["nDCG_V2T"] + m["nDCG_T2V"]) / 2)
    assert list(m)[:6] == ["mAP_V2T", "mAP_T2V", "mAP_AVG", "nDCG_V2T", "nDCG_T2V", "nDCG_AVG"]
    torch_m = ek100_mir_metrics(torch.tensor(sim, dtype=torch.float64), torch.tensor(rel))
    assert torch_m == m


def test_undefined_queries_omit_or_propagate():
    sim = np.array([[0.9, 0.1], [0.2, 0.8]])
    rel = np.array([[1.0, 0.0], [0.5, 0.0]])  # row 1 has no exact 1; column 1 is all zero
    omit = ek100_mir_metrics(sim, rel)
    assert omit["mAP_V2T"] == pytest.approx(100.0) and omit["skipped_mAP_V2T"] == 1
    assert omit["mAP_T2V"] == pytest.approx(100.0) and omit["skipped_mAP_T2V"] == 1
    assert omit["skipped_nDCG_V2T"] == 0 and omit["skipped_nDCG_T2V"] == 1
    # row 1: k = 1, its 0.5 item ranked second -> 0; row 0 -> 1
    assert omit["nDCG_V2T"] == pytest.approx(50.0)
    propagate = ek100_mir_metrics(sim, rel, nan_policy="propagate")
    assert math.isnan(propagate["mAP_V2T"]) and math.isnan(propagate["mAP_AVG"])
    assert math.isnan(propagate["nDCG_T2V"]) and propagate["nDCG_V2T"] == pytest.approx(50.0)
    assert not any(key.startswith("skipped") for key in propagate)
    with pytest.raises(ValueError, match="nan_policy"):
        ek100_mir_metrics(sim, rel, nan_policy="ignore")
    with pytest.raises(ValueError, match="shape"):
        ek100_mir_metrics(sim, rel[:, :1])


def test_ties_keep_input_order():
    tied = np.array([[0.5, 0.5, 0.5]])
    # relevant item last among three tied items: ranked [0, 0, 1] -> AP 1/3; first -> 1
    assert average_precision_rows(tied, np.array([[0.0, 0.0, 1.0]]))[0] == pytest.approx(1 / 3)
    assert average_precision_rows(tied, np.array([[1.0, 0.0, 0.0]]))[0] == pytest.approx(1.0)
    # T2V ranks rows of a column in row order
    m = ek100_mir_metrics(np.full((2, 1), 0.3), np.array([[0.0], [1.0]]))
    assert m["mAP_T2V"] == pytest.approx(50.0)


def test_tie_free_binary_relevance_equals_scikit_learn():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(7, 11))
    rel = (rng.random((7, 11)) < 0.4).astype(float)
    rel[:, 0] = 1.0  # every row has a relevant item
    expected = [average_precision_score(rel[q], sim[q]) for q in range(7)]
    np.testing.assert_allclose(average_precision_rows(sim, rel), expected, rtol=1e-12)


def test_tie_free_all_positive_relevance_ndcg_equals_scikit_learn():
    rng = np.random.default_rng(1)
    sim = rng.normal(size=(5, 9))
    rel = rng.uniform(0.1, 1.0, size=(5, 9))  # every item relevant: the cut is the whole list
    expected = [ndcg_score(rel[q:q + 1], sim[q:q + 1]) for q in range(5)]
    np.testing.assert_allclose(ndcg_rows(sim, rel), expected, rtol=1e-12)


def test_blocks_of_rows_give_the_same_values(monkeypatch):
    rng = np.random.default_rng(2)
    sim, rel = rng.normal(size=(13, 6)), np.round(rng.random((13, 6)) * 2) / 2
    whole = ek100_mir_metrics(sim, rel)
    monkeypatch.setattr("model.metrics.retrieval.ROWS_PER_BLOCK", 4)
    assert ek100_mir_metrics(sim, rel) == pytest.approx(whole, nan_ok=True)


def _loop_max_margin(sim, margins):
    pairs = [(i, j) for i in range(len(sim)) for j in range(len(sim)) if i != j]
    terms = [max(0.0, margins[i] - (sim[i, i] - sim[i, j])) for i, j in pairs]
    terms += [max(0.0, margins[i] - (sim[i, i] - sim[j, i])) for i, j in pairs]
    return sum(terms) / len(terms)


def test_max_margin_hand_value_and_loop_formula():
    sim = torch.tensor([[0.5, 0.4], [0.1, 0.6]])
    # the only active term: relu(0.2 - (0.5 - 0.4)) = 0.1, over 2n(n-1) = 4 terms
    assert MaxMarginRankingLoss(0.2)(sim).item() == pytest.approx(0.025)
    sim = torch.randn(5, 5, generator=torch.Generator().manual_seed(0)) * 0.3
    assert MaxMarginRankingLoss(0.2)(sim).item() == pytest.approx(_loop_max_margin(sim.numpy(), [0.2] * 5),
                                                                   rel=1e-6)


def test_diagonal_terms_are_excluded():
    sim = torch.eye(4) - 5 * (1 - torch.eye(4))  # matches far above every other pair
    assert MaxMarginRankingLoss(0.2)(sim).item() == 0.0  # with the diagonal terms it would be positive


def test_adaptive_margin_scales_each_row():
    sim = torch.randn(4, 4, generator=torch.Generator().manual_seed(3)) * 0.2
    weight = torch.tensor([1.0, 0.5, 0.25, 0.75])
    expected = _loop_max_margin(sim.numpy(), (0.2 * weight).tolist())
    assert AdaptiveMaxMarginRankingLoss(0.2)(sim, weight).item() == pytest.approx(expected, rel=1e-6)
    assert AdaptiveMaxMarginRankingLoss(0.2)(sim, torch.ones(4)).item() == pytest.approx(
        MaxMarginRankingLoss(0.2)(sim).item())
    with pytest.raises(ValueError, match="3 weights for 4 pairs"):
        AdaptiveMaxMarginRankingLoss()(sim, torch.ones(3))


def test_ranking_losses_are_registered_and_differentiable():
    for name in ("MaxMarginRankingLoss", "AdaptiveMaxMarginRankingLoss", "NormSoftmaxLoss"):
        assert name in LOSSES
    sim = (torch.randn(3, 3, generator=torch.Generator().manual_seed(4)) * 0.1).requires_grad_()
    MaxMarginRankingLoss()(sim).backward()
    assert sim.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="square"):
        MaxMarginRankingLoss()(torch.zeros(2, 3))
    assert NormSoftmaxLoss(0.05)(torch.eye(3)).item() < NormSoftmaxLoss(0.05)(torch.zeros(3, 3)).item()
