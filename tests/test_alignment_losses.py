"""Alignment losses: closed forms and invariants of soft-DTW, TCC, LAV, Sinkhorn/VAVA and GTCC."""
import math

import pytest
import torch

from model.losses.alignment.base import ordered_pairs
from model.losses.alignment.gmm_fit import discretised_gaussians, fit_discrete_gmm
from model.losses.alignment.gtcc import GTCCLoss, drop_mixture, window_mask
from model.losses.alignment.lav import LAVLoss, gtcc_repo_idm, inverse_difference_moment
from model.losses.alignment.sinkhorn import sinkhorn_log
from model.losses.alignment.soft_dtw import soft_dtw
from model.losses.alignment.tcc import TCCLoss, tcc_pair
from model.losses.alignment.vava import VAVALoss, prior_mix, vava_transport

F64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ----------------------------------------------------------------------------- soft-DTW
@pytest.mark.parametrize("n, m, delannoy", [(1, 1, 1), (2, 2, 3), (3, 3, 13), (2, 4, 7), (4, 2, 7)])
def test_soft_dtw_zero_cost_is_minus_gamma_log_delannoy(n, m, delannoy):
    for gamma in (0.1, 1.0):
        value = soft_dtw(torch.zeros(n, m, dtype=F64), gamma)
        assert value.item() == pytest.approx(-gamma * math.log(delannoy), abs=1e-12)


def test_soft_dtw_gradcheck_and_small_gamma_limit():
    cost = torch.rand(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: soft_dtw(c, 0.3), (cost,))
    assert soft_dtw(torch.tensor([[2.5]], dtype=F64), 1e-4).item() == pytest.approx(2.5)
    # gamma -> 0: the hard DTW on a 2x2 matrix (best path 0 -> 0 via the diagonal)
    hard = torch.tensor([[0.0, 5.0], [5.0, 1.0]], dtype=F64)
    assert soft_dtw(hard, 1e-3).item() == pytest.approx(1.0, abs=1e-6)


def test_soft_dtw_prefers_the_same_order():
    u = randn(8, 3)
    cost = lambda a, b: (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)  # noqa: E731
    assert soft_dtw(cost(u, u), 0.1) < soft_dtw(cost(u, u.flip(0)), 0.1)


# ----------------------------------------------------------------------------- TCC
@pytest.mark.parametrize("variant", ["regression_mse_var", "regression_mse", "classification", "huber"])
@pytest.mark.parametrize("form", ["reference", "gtcc_repo"])
def test_tcc_is_invariant_to_the_order_of_v(variant, form):
    u, v = randn(7, 4, seed=1), randn(9, 4, seed=2)
    permuted = v[torch.randperm(9, generator=torch.Generator().manual_seed(3))]
    assert tcc_pair(u, v, variant, form=form).item() == pytest.approx(tcc_pair(u, permuted, variant,
                                                                               form=form).item(), rel=1e-12)


def test_tcc_collapsed_closed_form():
    n, lam = 6, 1e-3
    collapsed = torch.ones(n, 4, dtype=F64)
    t = torch.arange(n, dtype=F64) / n
    expected = 1 + lam * math.log(t.var(unbiased=False).item())
    assert tcc_pair(collapsed, torch.ones(5, 4, dtype=F64), lam=lam).item() == pytest.approx(expected, rel=1e-12)
    separated = torch.eye(n, dtype=F64) * 3
    assert tcc_pair(separated, separated, lam=lam) < tcc_pair(collapsed, collapsed, lam=lam)


def test_tcc_repo_form_adds_self_pairs():
    u, v = randn(5, 3, seed=4), randn(6, 3, seed=5)
    loss, logs = TCCLoss(form="gtcc_repo")([u, v])
    pairs = [tcc_pair(a, b, form="gtcc_repo") for a, b in [(u, u), (u, v), (v, u), (v, v)]]
    assert loss.item() == pytest.approx(torch.stack(pairs).mean().item(), rel=1e-12)
    assert ordered_pairs(3) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert set(logs) == {"align_tcc"}


# ----------------------------------------------------------------------------- LAV
def test_idm_of_a_collapsed_sequence():
    length, sigma, margin = 9, 2, 2.0
    collapsed = torch.ones(length, 3, dtype=F64)
    t = torch.arange(length, dtype=F64) / length
    expected = sum((1 + (t[i] - t[j]) ** 2) * margin for i in range(length) for j in range(length)
                   if abs(i - j) > sigma)
    assert inverse_difference_moment(collapsed, sigma, margin).item() == pytest.approx(expected.item(), rel=1e-12)


def test_lav_prefers_the_same_order_and_repo_window_term_has_no_gradient():
    u = randn(10, 4, seed=6)
    shuffled = u[torch.randperm(10, generator=torch.Generator().manual_seed(7))]
    loss = LAVLoss(sigma=2)
    assert loss([u, u])[0] < loss([u, shuffled])[0]
    x = randn(5, 3, seed=8).requires_grad_()
    gtcc_repo_idm(x, window=10).backward()   # every pair inside the window: a constant
    assert torch.count_nonzero(x.grad) == 0


def test_lav_training_decreases_the_loss():
    torch.manual_seed(0)
    base = randn(8, 6, seed=9)
    videos = [base + 0.1 * randn(8, 6, seed=10 + k) for k in range(2)]
    encoder = torch.nn.Linear(6, 4).double()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    loss_fn = LAVLoss(sigma=2)
    losses = []
    for _ in range(30):
        loss, _ = loss_fn([encoder(v) for v in videos])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


# ----------------------------------------------------------------------------- Sinkhorn / VAVA
def test_sinkhorn_uniform_plan_for_constant_cost_and_marginals():
    plan = sinkhorn_log(torch.full((4, 6), 3.0, dtype=F64), reg=0.5)
    assert torch.allclose(plan, torch.full((4, 6), 1 / 24, dtype=F64))
    cost = torch.rand(5, 7, dtype=F64, generator=torch.Generator().manual_seed(0))
    plan = sinkhorn_log(cost, reg=0.1, n_iters=200)
    assert torch.allclose(plan.sum(1), torch.full((5,), 1 / 5, dtype=F64), atol=1e-9)
    assert torch.allclose(plan.sum(0), torch.full((7,), 1 / 7, dtype=F64), atol=1e-9)


def test_sinkhorn_small_reg_on_a_permutation_cost_gives_the_permutation():
    perm = torch.tensor([2, 0, 3, 1])
    cost = 1 - torch.eye(4, dtype=F64)[perm]
    plan = sinkhorn_log(cost, reg=0.01, n_iters=50)
    assert torch.allclose(plan, torch.eye(4, dtype=F64)[perm] / 4, atol=1e-9)


def test_vava_virtual_frame_absorbs_the_background_frame():
    base = torch.nn.functional.normalize(randn(12, 8, seed=11), dim=-1)
    u = base.clone()
    u[5] = -3 * base.mean(0) / base.mean(0).norm()      # far from every frame of V
    _, plan = vava_transport(u, base, step=0)
    virtual_share = plan[1:, 0] / plan[1:].sum(1)
    assert virtual_share.argmax().item() == 5
    assert virtual_share[5] > 5 * torch.cat([virtual_share[:5], virtual_share[6:]]).max()


def test_vava_schedule_and_order_preference():
    assert prior_mix(0) == 0.999 and prior_mix(10 ** 8) == 0.001
    assert prior_mix(100) < prior_mix(10)
    angle = torch.arange(12, dtype=F64) / 4               # a smooth path on the unit circle
    u = torch.stack([angle.cos(), angle.sin()], dim=1)
    shuffled = u[torch.randperm(12, generator=torch.Generator().manual_seed(13))]
    assert vava_transport(u, u, step=0)[0] < vava_transport(u, shuffled, step=0)[0]
    loss = VAVALoss(normalize=False)
    assert loss([u, u])[0] < loss([u, shuffled])[0]


# ----------------------------------------------------------------------------- GTCC
def test_gmm_recovers_a_bimodal_distribution_and_a_single_gaussian():
    two = 0.5 * discretised_gaussians(torch.tensor([[5.0]], dtype=F64), torch.tensor([[2.0]], dtype=F64), 24) \
        + 0.5 * discretised_gaussians(torch.tensor([[17.0]], dtype=F64), torch.tensor([[2.0]], dtype=F64), 24)
    fit = fit_discrete_gmm(two[:, 0], 2, iterations=50)
    assert sorted(fit.means[0].tolist()) == pytest.approx([5.0, 17.0], abs=1.0)
    one = discretised_gaussians(torch.tensor([[9.0]], dtype=F64), torch.tensor([[4.0]], dtype=F64), 24)[:, 0]
    fit = fit_discrete_gmm(one, 1, iterations=50)
    assert fit.means.item() == pytest.approx(9.0, abs=1e-3)
    assert fit.variances.item() == pytest.approx(4.0, rel=1e-2)
    assert not fit.means.requires_grad
    alpha = one.clone().requires_grad_()
    fit_discrete_gmm(alpha, 1, iterations=5, differentiable=True).means.sum().backward()
    assert alpha.grad.abs().sum() > 0


def test_drop_mixture_and_window_mask():
    align = torch.tensor([0.5, 2.0])
    assert torch.equal(drop_mixture(align, torch.ones(2)), align)
    assert torch.equal(drop_mixture(align, torch.zeros(2)), 1 / align)
    anchors = torch.arange(10)
    for seed in range(20):
        inside = window_mask(anchors, 10, 4, torch.Generator().manual_seed(seed))
        assert inside[anchors, anchors].all() and (inside.sum(1) <= 4).all()
        for row in inside:                                 # contiguous runs (cut at the ends of the video)
            frames = row.nonzero().flatten()
            assert frames.max() - frames.min() + 1 == len(frames)


@pytest.mark.parametrize("form", ["reference", "gtcc_repo"])
def test_gtcc_is_finite_differentiable_and_uses_the_drop_context(form):
    videos = [randn(10, 4, seed=20 + k).requires_grad_() for k in range(2)]
    contexts = [randn(5, seed=30 + k) for k in range(2)]
    loss_fn = GTCCLoss(num_components=3, window_fraction=0.5, form=form)
    plain, _ = loss_fn(videos)
    with_drop, _ = loss_fn(videos, contexts=contexts, epoch=0)
    assert torch.isfinite(plain) and torch.isfinite(with_drop) and plain.item() != with_drop.item()
    with_drop.backward()
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in videos)
    # repo keep-weight floor: gamma^(epoch+1) = 1 with keep_gamma 1, i.e. no dropping at all
    no_drop = GTCCLoss(num_components=3, window_fraction=0.5, form="gtcc_repo", keep_gamma=1.0)
    if form == "gtcc_repo":
        assert no_drop(videos, contexts=contexts)[0].item() == pytest.approx(no_drop(videos)[0].item(), rel=1e-12)
