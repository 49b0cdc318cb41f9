import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.temporal_loss import TemporalConsistencyLoss

ROOT = Path(__file__).resolve().parents[1]
# Unit vectors in the plane at known angles: cos between rows is cos(angle difference).
ANGLES = [0.0, math.pi / 3, math.pi, math.pi / 2]


def plane_vectors(angles=ANGLES, scale=1.0):
    return scale * torch.tensor([[math.cos(a), math.sin(a)] for a in angles])


def test_cosine_is_zero_on_identical_and_two_on_opposite_embeddings():
    loss = TemporalConsistencyLoss(loss_type='cosine')
    same = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    opposite = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    pair = torch.tensor([[0, 1, 0.5]])
    assert loss(same, pair).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(opposite, pair).item() == pytest.approx(2.0, abs=1e-6)


def test_cosine_is_the_mean_over_pairs():
    loss = TemporalConsistencyLoss(loss_type='cosine')
    pairs = torch.tensor([[0, 1, 1.0], [0, 2, 0.0], [1, 3, 2.0]])
    expected = ((1 - math.cos(math.pi / 3)) + 2.0 + (1 - math.cos(math.pi / 6))) / 3
    assert loss(plane_vectors(scale=3.0), pairs).item() == pytest.approx(expected, rel=1e-6)


def test_pairs_over_the_time_gap_are_ignored():
    loss = TemporalConsistencyLoss(max_time_gap=2.0)
    video = plane_vectors()
    kept = torch.tensor([[0, 1, 0.5], [1, 3, -2.0]])
    with_far = torch.cat([kept, torch.tensor([[0, 2, 2.5], [2, 3, -7.0]])])
    assert loss(video, with_far).item() == pytest.approx(loss(video, kept).item(), rel=1e-7)
    assert torch.equal(loss.valid_pairs(with_far, 4), torch.tensor([[0, 1], [1, 3]]))


@pytest.mark.parametrize('loss_type', ['cosine', 'contrastive'])
@pytest.mark.parametrize('pairs', [torch.zeros(0, 3), [], torch.tensor([[0, 1, 5.0]])])
def test_no_pair_within_the_gap_gives_zero_without_nan(loss_type, pairs):
    video = torch.randn(3, 4, requires_grad=True)
    value = TemporalConsistencyLoss(loss_type=loss_type, max_time_gap=2.0)(video, pairs)
    assert value.item() == 0.0 and not torch.isnan(value)


def test_contrastive_matches_direct_infonce_in_both_directions():
    temperature = 0.5
    video = plane_vectors()
    loss = TemporalConsistencyLoss(loss_type='contrastive', temperature=temperature)

    def direct(anchor, positive):
        others = [k for k in range(4) if k != anchor]
        logits = {k: math.cos(ANGLES[anchor] - ANGLES[k]) / temperature for k in others}
        return -math.log(math.exp(logits[positive]) / sum(math.exp(v) for v in logits.values()))

    expected = (direct(0, 1) + direct(1, 0)) / 2
    assert loss(video, torch.tensor([[0, 1, 0.2]])).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_does_not_reward_collapse():
    collapsed = torch.ones(5, 3)
    loss = TemporalConsistencyLoss(loss_type='contrastive')(collapsed, torch.tensor([[0, 1, 0.0]]))
    assert loss.item() == pytest.approx(math.log(4), rel=1e-6)


def test_per_scale_averages_each_scale():
    generator = torch.Generator().manual_seed(0)
    scales = {4: torch.randn(4, 6, generator=generator), 8: torch.randn(4, 6, generator=generator)}
    pairs = torch.tensor([[0, 1, 0.1], [2, 3, 0.3]])
    fused = TemporalConsistencyLoss(embeddings='fused')
    per_scale = TemporalConsistencyLoss(embeddings='per_scale')
    expected = (fused(scales[4], pairs) + fused(scales[8], pairs)) / 2
    assert per_scale(torch.zeros(4, 6), pairs, scales).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cross_scale_compares_one_scale_with_the_other():
    coarse = plane_vectors([0.0, 0.0])
    fine = plane_vectors([math.pi / 2, math.pi])
    loss = TemporalConsistencyLoss(embeddings='cross_scale', loss_type='cosine')
    value = loss(torch.zeros(2, 2), torch.tensor([[0, 1, 0.1]]), {4: coarse, 16: fine})
    # (coarse_0 vs fine_1) = 1 - cos(pi) = 2; (fine_0 vs coarse_1) = 1 - cos(pi/2) = 1
    assert value.item() == pytest.approx(1.5, rel=1e-6)


def test_scale_options_need_scale_embeddings():
    pairs = torch.tensor([[0, 1, 0.1]])
    with pytest.raises(ValueError, match='scale_embeds'):
        TemporalConsistencyLoss(embeddings='per_scale')(torch.randn(2, 3), pairs)
    with pytest.raises(ValueError, match='2 scales'):
        TemporalConsistencyLoss(embeddings='cross_scale')(torch.randn(2, 3), pairs, {4: torch.randn(2, 3)})


def test_lambda_schedule_endpoints_and_clamping():
    loss = TemporalConsistencyLoss(lambda_start=0.1, lambda_end=0.3)
    assert loss.lambda_at(0, 11) == pytest.approx(0.1)
    assert loss.lambda_at(5, 11) == pytest.approx(0.2)
    assert loss.lambda_at(10, 11) == pytest.approx(0.3)
    assert loss.lambda_at(25, 11) == pytest.approx(0.3)
    assert loss.lambda_at(0, 1) == pytest.approx(0.1)


def test_bad_pairs_and_options_are_clear_errors():
    loss = TemporalConsistencyLoss()
    with pytest.raises(ValueError, match='row 1'):
        loss(torch.randn(3, 2), torch.tensor([[0, 1, 0.1], [1, 3, 0.1]]))
    with pytest.raises(ValueError, match=r'\[P, 3\]'):
        loss(torch.randn(3, 2), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match='loss_type'):
        TemporalConsistencyLoss(loss_type='l2')
    with pytest.raises(ValueError, match='embeddings'):
        TemporalConsistencyLoss(embeddings='all')


def test_gradient_pulls_pair_together():
    video = plane_vectors([0.0, math.pi / 2, math.pi]).requires_grad_(True)
    TemporalConsistencyLoss(loss_type='cosine')(video, torch.tensor([[0, 1, 0.0]])).backward()
    moved = F.normalize(video.detach() - 0.1 * video.grad, dim=-1)
    assert torch.dot(moved[0], moved[1]) > 0.0
    assert torch.equal(video.grad[2], torch.zeros(2))


def test_model_package_imports_without_the_data_package_and_re_exports_the_sampler():
    code = ("import sys, model.model, model.loss, model.temporal_loss as t\n"
            "assert not [m for m in sys.modules if m.startswith('data_loader')], 'model imported data_loader'\n"
            "from data_loader.samplers import TemporalPairBatchSampler\n"
            "assert t.TemporalPairBatchSampler is TemporalPairBatchSampler\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
