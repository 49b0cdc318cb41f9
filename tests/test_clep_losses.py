"""The contrastive loss family: closed forms, EgoNCE equivalence, soft / BCE targets, CLEP's loss module."""
import math

import pytest
import torch
import torch.nn.functional as F

from model.clep import CLEPLoss
from model.loss import EgoNCE
from model.losses.contrastive import contrastive_loss, similarity_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models


@pytest.mark.parametrize("batch,scale", [(2, 1.0), (5, 2.659), (16, 4.605)])
def test_orthonormal_pairs_give_the_closed_form(batch, scale):
    sim = torch.eye(batch, dtype=torch.float64)  # text_i = video_i, rows orthonormal
    expected = math.log(1 + (batch - 1) * math.exp(-scale))
    assert contrastive_loss(sim, scale=scale).item() == pytest.approx(expected, abs=1e-12)
    assert contrastive_loss(sim, scale=scale, reduction="sum_dirs").item() == pytest.approx(2 * expected, abs=1e-12)


@pytest.mark.parametrize("batch", [1, 3, 128])
def test_identical_rows_give_log_batch(batch):
    sim = torch.full((batch, batch), 0.37, dtype=torch.float64)
    assert contrastive_loss(sim, scale=7.0).item() == pytest.approx(math.log(batch), abs=1e-12)


def test_egonce_with_the_diagonal_only_is_twice_the_clep_loss_at_scale_one_over_tau():
    sim = torch.randn(9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).tanh()
    tau = 0.05
    egonce = EgoNCE(temperature=tau, noun=False, verb=False)(sim)
    assert egonce.item() == pytest.approx(2 * contrastive_loss(sim, scale=1 / tau).item(), abs=1e-9)


def test_hard_diagonal_targets_are_cross_entropy_with_arange_and_with_eye():
    logits = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    arange = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, arange) + F.cross_entropy(logits.t(), arange))
    eye = torch.eye(6, dtype=torch.float64)
    with_eye = 0.5 * (F.cross_entropy(logits, eye) + F.cross_entropy(logits.t(), eye))
    assert contrastive_loss(logits, scale=1.0).item() == pytest.approx(expected.item(), abs=1e-12)
    assert contrastive_loss(logits, eye, scale=1.0, targets="soft").item() == pytest.approx(with_eye.item(), abs=1e-12)


def test_soft_targets_with_threshold_one_are_the_hard_targets():
    generator = torch.Generator().manual_seed(2)
    text = F.normalize(torch.randn(8, 16, dtype=torch.float64, generator=generator), dim=1)
    sim = torch.randn(8, 8, dtype=torch.float64, generator=generator)
    targets = similarity_targets(text @ text.t(), threshold=1.0)
    assert torch.equal(targets, torch.eye(8, dtype=targets.dtype))
    soft = contrastive_loss(sim, targets, scale=3.0, targets="soft")
    assert soft.item() == pytest.approx(contrastive_loss(sim, scale=3.0).item(), abs=1e-12)


def test_duplicate_captions_become_shared_positives():
    text = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]]), dim=1)
    binary = similarity_targets(text @ text.t(), threshold=0.95, weighting="binary")
    assert binary.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    weighted = similarity_targets(text @ text.t(), threshold=0.5)   # affinity (0.6 + 1) / 2 = 0.8 kept
    assert weighted[0, 1].item() == pytest.approx(0.8) and weighted[1, 1].item() == 1.0


def test_soft_targets_are_row_normalised_unless_upstream_behaviour_is_asked_for():
    sim = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    weights = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.float64)
    log_p_rows, log_p_cols = F.log_softmax(sim, dim=1), F.log_softmax(sim.t(), dim=1)
    normalised = -0.5 * ((weights / weights.sum(1, keepdim=True) * log_p_rows).sum(1).mean()
                         + (weights / weights.sum(1, keepdim=True) * log_p_cols).sum(1).mean())
    raw = -0.5 * ((weights * log_p_rows).sum(1).mean() + (weights * log_p_cols).sum(1).mean())
    assert contrastive_loss(sim, weights, scale=1.0, targets="soft").item() == pytest.approx(normalised.item())
    assert contrastive_loss(sim, weights, scale=1.0, targets="soft", normalize_targets=False).item() == \
        pytest.approx(raw.item())


def test_bce_targets_average_both_directions():
    sim = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    eye = torch.eye(4, dtype=torch.float64)
    expected = F.binary_cross_entropy_with_logits(2 * sim, eye)  # symmetric targets: both directions agree
    assert contrastive_loss(sim, eye, scale=2.0, targets="bce").item() == pytest.approx(expected.item())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="exactly one of scale and temperature"):
        contrastive_loss(torch.eye(2), scale=1.0, temperature=0.1)
    with pytest.raises(ValueError, match="square"):
        contrastive_loss(torch.zeros(2, 3), scale=1.0)
    with pytest.raises(ValueError, match="targets must be"):
        contrastive_loss(torch.eye(2), scale=1.0, targets="focal")


def test_clep_loss_uses_the_scale_it_is_given_and_gradients_reach_it():
    generator = torch.Generator().manual_seed(5)
    text, video = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    scale = torch.tensor(2.659, requires_grad=True)
    loss, components = CLEPLoss(normalize_embeddings=False)(text, video, scale)
    assert loss.item() == pytest.approx(contrastive_loss(text @ video.t(), scale=2.659).item(), rel=1e-6)
    assert components["clep"].item() == loss.item()
    loss.backward()
    assert scale.grad is not None and scale.grad.item() != 0


def test_clep_soft_loss_reads_the_untagged_text_and_needs_it():
    generator = torch.Generator().manual_seed(6)
    text, video = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    no_tag = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])  # rows 0 and 2 are duplicates
    loss, _ = CLEPLoss(targets="soft", soft_threshold=0.95, normalize_embeddings=False)(text, video, torch.tensor(1.0),
                                                                                   text_no_tag=no_tag)
    weights = similarity_targets(F.normalize(no_tag, dim=1) @ F.normalize(no_tag, dim=1).t(), 0.95)
    assert weights[0, 2] == 1 and weights[0, 1] == 0
    assert loss.item() == pytest.approx(contrastive_loss(text @ video.t(), weights, scale=1.0, targets="soft").item())
    with pytest.raises(ValueError, match="text_no_tag"):
        CLEPLoss(targets="soft")(text, video, torch.tensor(1.0))
