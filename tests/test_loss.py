import math

import pytest
import torch
import torch.nn.functional as F

from model.loss import (EgoNCE, EgoNCEObjective, EnhancedEgoNCEWithTemporal, MultiScaleEgoNCE, NormSoftmaxLoss,
                        multi_positive_nce)
from model.temporal_loss import EnhancedEgoNCEWithTemporal as TemporalModuleAlias

SIM_3X3 = [[0.9, 0.1, 0.3],
           [0.2, 0.8, 0.4],
           [0.5, 0.0, 0.7]]


def direct_multi_positive_nce(sim, positives, temperature):
    """Multi-positive NCE written out with math.exp over python lists (similarities s, positives P, temperature t):

        -1/n sum_i log(sum_{j: P_ij} e^(s_ij/t) / sum_j e^(s_ij/t))
        -1/n sum_j log(sum_{i: P_ij} e^(s_ij/t) / sum_i e^(s_ij/t))
    """
    n = len(sim)
    loss = 0.0
    for i in range(n):
        row = [math.exp(sim[i][j] / temperature) for j in range(n)]
        loss -= math.log(sum(row[j] for j in range(n) if positives[i][j]) / sum(row)) / n
    for j in range(n):
        col = [math.exp(sim[i][j] / temperature) for i in range(n)]
        loss -= math.log(sum(col[i] for i in range(n) if positives[i][j]) / sum(col)) / n
    return loss


def multi_hot(rows, num_classes):
    vec = torch.zeros(len(rows), num_classes)
    for r, classes in enumerate(rows):
        vec[r, list(classes)] = 1.0
    return vec


# clip:      0        1      2      3      4 (untagged)
VERBS = [{0}, {0}, {0}, {1}, set()]
NOUNS = [{0, 1}, {1}, {2}, {0}, set()]


def pairs_to_mask(pairs, n=5):
    mask = torch.eye(n, dtype=torch.bool)
    for i, j in pairs:
        mask[i, j] = mask[j, i] = True
    return mask


@pytest.mark.parametrize('temperature', [0.05, 0.5])
def test_identity_mask_matches_direct_formula_and_infonce(temperature):
    sim = torch.tensor(SIM_3X3, dtype=torch.float64)
    identity = [[i == j for j in range(3)] for i in range(3)]
    expected = direct_multi_positive_nce(SIM_3X3, identity, temperature)

    egonce = EgoNCE(temperature=temperature, noun=False, verb=False)(sim)
    norm_softmax = NormSoftmaxLoss(temperature=temperature)(sim)
    labels = torch.arange(3)
    infonce = F.cross_entropy(sim / temperature, labels) + F.cross_entropy(sim.t() / temperature, labels)

    assert egonce.item() == pytest.approx(expected, rel=1e-6)
    assert norm_softmax.item() == pytest.approx(expected, rel=1e-6)
    assert infonce.item() == pytest.approx(expected, rel=1e-6)


def test_egonce_3x3_with_tag_positives_matches_direct_formula():
    # clips 0 and 2 share verb 3 and noun 5; clip 1 shares only the verb with them.
    verb = multi_hot([{3}, {3}, {3, 4}], 6)
    noun = multi_hot([{5}, {1}, {5, 2}], 7)
    positives = [[True, False, True], [False, True, False], [True, False, True]]
    expected = direct_multi_positive_nce(SIM_3X3, positives, 0.1)

    loss = EgoNCE(temperature=0.1)(torch.tensor(SIM_3X3), verb, noun)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.dtype == torch.float32


def test_positive_masks_mark_exactly_the_shared_tags():
    verb, noun = multi_hot(VERBS, 3), multi_hot(NOUNS, 4)
    both = EgoNCE(noun=True, verb=True).positive_mask(5, verb, noun)
    noun_only = EgoNCE(noun=True, verb=False).positive_mask(5, None, noun)
    verb_only = EgoNCE(noun=False, verb=True).positive_mask(5, verb, None)
    neither = EgoNCE(noun=False, verb=False).positive_mask(5, verb, noun)

    assert torch.equal(both, pairs_to_mask([(0, 1)]))
    assert torch.equal(noun_only, pairs_to_mask([(0, 1), (0, 3)]))
    assert torch.equal(verb_only, pairs_to_mask([(0, 1), (0, 2), (1, 2)]))
    assert torch.equal(neither, torch.eye(5, dtype=torch.bool))


def test_untagged_clips_give_finite_loss_and_gradient():
    sim = torch.randn(5, 5, requires_grad=True)
    loss = EgoNCE()(sim, torch.zeros(5, 3), torch.zeros(5, 4))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(sim.grad).all()
    assert loss.item() == pytest.approx(NormSoftmaxLoss()(sim).item(), rel=1e-6)


def test_adding_positives_never_raises_the_loss():
    generator = torch.Generator().manual_seed(0)
    sim = torch.rand(6, 6, generator=generator) * 2 - 1
    mask = torch.eye(6, dtype=torch.bool)
    previous = EgoNCE(noun=False, verb=False)(sim).item()
    for i, j in [(0, 1), (2, 5), (0, 3), (4, 1), (3, 5)]:
        mask[i, j] = mask[j, i] = True
        current = multi_positive_nce(sim, mask, 0.05).item()
        assert current <= previous + 1e-7
        previous = current


def test_missing_tag_vector_is_a_clear_error():
    with pytest.raises(ValueError, match='noun_vec'):
        EgoNCE(noun=True, verb=True)(torch.eye(3), torch.ones(3, 2), None)
    with pytest.raises(ValueError, match='square'):
        NormSoftmaxLoss()(torch.zeros(2, 3))


def test_bf16_similarities_give_float32_loss():
    sim = torch.tensor(SIM_3X3)
    loss = NormSoftmaxLoss(temperature=0.5)(sim.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(NormSoftmaxLoss(temperature=0.5)(sim).item(), rel=2e-2)


def embeddings(n=4, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator), torch.randn(n, dim, generator=generator)


def test_objective_without_temporal_is_egonce_on_cosine_sim():
    text, video = embeddings()
    verb, noun = multi_hot(VERBS[:4], 3), multi_hot(NOUNS[:4], 4)
    sim = F.normalize(text, dim=-1) @ F.normalize(video, dim=-1).t()
    expected = EgoNCE(temperature=0.07)(sim, verb, noun)

    total, parts = EgoNCEObjective(temperature=0.07)(text, video, verb, noun)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {'egonce', 'temporal', 'lambda', 'temperature', 'num_pairs'}
    assert parts['temporal'].item() == 0.0 and parts['lambda'] == 0.0 and parts['temperature'] == 0.07


def test_objective_weights_temporal_by_consistency_weight_times_lambda_schedule():
    text, video = embeddings()
    pairs = torch.tensor([[0, 1, 0.5], [1, 2, 1.0], [2, 3, 9.0]])
    objective = MultiScaleEgoNCE(consistency_weight=0.5, noun=False, verb=False,
                                 temporal={'lambda_start': 0.2, 'lambda_end': 0.6, 'max_time_gap': 2.0})
    total, parts = objective(text, video, temporal_pairs=pairs, epoch=2, total_epochs=3)

    expected_temporal = objective.temporal_loss(video, pairs)
    assert parts['lambda'] == pytest.approx(0.5 * 0.6)
    assert parts['num_pairs'] == 2
    assert parts['temporal'].item() == pytest.approx(expected_temporal.item(), rel=1e-6)
    assert total.item() == pytest.approx(parts['egonce'].item() + 0.3 * expected_temporal.item(), rel=1e-6)


def test_objective_follows_temperature_schedule_and_round_trips_its_state():
    text, video = embeddings()
    schedule = {'initial_temp': 0.1, 'final_temp': 0.01, 'total_steps': 100}
    objective = MultiScaleEgoNCE(noun=False, verb=False, temperature_schedule=schedule)
    _, parts = objective(text, video, step=50)
    sim = F.normalize(text, dim=-1) @ F.normalize(video, dim=-1).t()
    assert parts['temperature'] == pytest.approx(0.055)
    assert parts['egonce'].item() == pytest.approx(NormSoftmaxLoss(0.055)(sim).item(), rel=1e-6)

    resumed = MultiScaleEgoNCE(noun=False, verb=False, temperature_schedule=schedule)
    resumed.load_state_dict(objective.state_dict())
    assert resumed.temperature_scheduler.current_step == 50
    assert resumed.temperature_scheduler.temperature == pytest.approx(0.055)


def test_objective_rejects_unknown_option_keys():
    with pytest.raises(ValueError, match="'temporal'.*lambda_begin|lambda_begin.*'temporal'"):
        MultiScaleEgoNCE(temporal={'lambda_begin': 0.1})
    with pytest.raises(ValueError, match='temperature_schedule'):
        MultiScaleEgoNCE(temperature_schedule={'steps': 10})


def test_objective_under_bf16_autocast_is_float32_and_differentiable():
    text, video = embeddings()
    text.requires_grad_(True)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        projected = text @ torch.eye(8)
        assert projected.dtype == torch.bfloat16
        total, parts = MultiScaleEgoNCE(noun=False, verb=False)(
            projected, video.bfloat16(), temporal_pairs=torch.tensor([[0, 1, 0.1]]))
    total.backward()
    assert total.dtype == torch.float32 and torch.isfinite(text.grad).all()
    assert parts['num_pairs'] == 1


def test_config_loss_names_compute_the_documented_objectives():
    text, video = embeddings()
    verb, noun = multi_hot(VERBS[:4], 3), multi_hot(NOUNS[:4], 4)
    pairs = torch.tensor([[0, 1, 0.5], [2, 3, 1.0]])
    options = {'consistency_weight': 0.5, 'temporal': {'lambda_start': 0.4, 'lambda_end': 0.4}}
    expected, expected_parts = MultiScaleEgoNCE(**options)(text, video, verb, noun, temporal_pairs=pairs)
    assert expected_parts['temporal'].item() > 0
    for where, objective_class in [('model.loss', EnhancedEgoNCEWithTemporal),
                                   ('model.temporal_loss', TemporalModuleAlias)]:
        total, _ = objective_class(**options)(text, video, verb, noun, temporal_pairs=pairs)
        assert total.item() == pytest.approx(expected.item(), rel=1e-6), where

    baseline, parts = EgoNCEObjective()(text, video, verb, noun, temporal_pairs=pairs)
    assert parts['temporal'].item() == 0.0
    assert baseline.item() == pytest.approx(expected_parts['egonce'].item(), rel=1e-6)
