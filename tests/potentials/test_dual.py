"""The L2-regularised OT dual against POT's exact solver and its numerical guards."""

import math

import numpy as np
import ot
import pytest
import torch

from potentials.dual import compatibility, dual_loss


def _pot_plan(cost: np.ndarray, lam: float) -> np.ndarray:
    n, m = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    return ot.smooth.smooth_ot_dual(
        a, b, cost, reg=2 * lam * n * m, reg_type="l2", numItermax=10000, stopThr=1e-15
    )


@pytest.mark.parametrize("lam", [0.01, 0.1])
def test_tabular_plan_matches_pot(lam, solve_tabular):
    n, m = 7, 11
    cost_np = np.random.default_rng(0).random((n, m))
    cost = torch.tensor(cost_np)
    u, v = solve_tabular(cost, lam)
    plan = (compatibility(u[:, None], v[None, :], cost, lam) / (n * m)).numpy()
    pot = _pot_plan(cost_np, lam)
    assert np.abs(plan - pot).sum() / np.abs(pot).sum() <= 1e-3
    # The optimum is a coupling of the uniform marginals, and sparse at small lam.
    np.testing.assert_allclose(plan.sum(1), 1.0 / n, rtol=1e-4)
    np.testing.assert_allclose(plan.sum(0), 1.0 / m, rtol=1e-4)
    if lam == 0.01:
        assert (pot > 0).mean() < 0.5


def test_dual_objective_equals_pot_objective():
    """Same potentials, same objective: -dual_loss == POT's dual with reg = 2 lam n m."""
    n, m, lam = 5, 8, 0.03
    rng = np.random.default_rng(1)
    cost, alpha, beta = rng.random((n, m)), rng.normal(size=n), rng.normal(size=m)
    regul = ot.smooth.SquaredL2(gamma=2 * lam * n * m)
    pot_obj, _, _ = ot.smooth.dual_obj_grad(
        alpha, beta, np.full(n, 1 / n), np.full(m, 1 / m), cost, regul
    )
    ours = -dual_loss(torch.tensor(alpha), torch.tensor(beta), torch.tensor(cost), lam)
    assert float(ours) == pytest.approx(pot_obj, rel=1e-12)


def test_dual_loss_closed_form_with_mask():
    u = torch.tensor([1.0, 0.0])
    v = torch.tensor([0.5, 2.0, -1.0])
    cost = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    lam = 0.25
    # slacks (u+v-c)_+ = [[1.5, 2, 0], [0, 2, 0]]; masked squares sum 1.5^2 + 2^2 = 6.25.
    expected = -(0.5 + 0.5 - 1 / (4 * lam) * 6.25 / 6)
    assert float(dual_loss(u, v, cost, lam, mask)) == pytest.approx(expected, rel=1e-6)
    h = compatibility(u[:, None], v[None, :], cost, lam)
    torch.testing.assert_close(h, torch.tensor([[3.0, 4.0, 0.0], [0.0, 4.0, 0.0]]))


def test_compatibility_broadcasts_over_samples():
    u = torch.tensor([[1.0], [2.0]])  # [B, 1]
    v = torch.tensor([[0.0, 1.0, 2.0], [0.0, -3.0, 1.0]])  # [B, L]
    cost = torch.ones(2, 3)
    h = compatibility(u, v, cost, lam=0.5)
    torch.testing.assert_close(h, torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0]]))


def test_small_lam_float32_finite_and_accurate():
    """lam = 1e-5 on realistic float32 inputs stays finite and matches float64."""
    g = torch.Generator().manual_seed(0)
    n, m = 256, 256
    cost = 3.0 * torch.randn(n, m, generator=g)
    u, v = 2.0 * torch.randn(n, generator=g), 2.0 * torch.randn(m, generator=g)
    lam = 1e-5
    loss32 = dual_loss(u, v, cost, lam)
    loss64 = dual_loss(u.double(), v.double(), cost.double(), lam)
    assert math.isfinite(float(loss32))
    assert float(loss32) == pytest.approx(float(loss64), rel=1e-5)
    u.requires_grad_(True)
    dual_loss(u, v, cost, lam).backward()
    assert torch.isfinite(u.grad).all()


@pytest.mark.parametrize(
    ("which", "match"),
    [("u", r"\bu is not finite"), ("v", r"\bv is not finite"), ("cost", "cost is not finite")],
)
def test_non_finite_inputs_raise_with_name(which, match):
    args = {"u": torch.zeros(3), "v": torch.zeros(4), "cost": torch.zeros(3, 4)}
    args[which] = args[which].clone()
    args[which].view(-1)[1] = float("nan") if which != "v" else float("inf")
    with pytest.raises(FloatingPointError, match=match):
        dual_loss(args["u"], args["v"], args["cost"], lam=1e-5)


def test_penalty_overflow_raises_with_name():
    u = torch.full((3,), 1e20)  # finite, but its squared slack / (4 lam) overflows float32
    with pytest.raises(FloatingPointError, match="penalty is not finite"):
        dual_loss(u, torch.zeros(4), torch.zeros(3, 4), lam=1e-5)


@pytest.mark.parametrize("lam", [0.0, -0.1, float("nan")])
def test_bad_lam_raises(lam):
    with pytest.raises(ValueError, match="lam"):
        dual_loss(torch.zeros(3), torch.zeros(4), torch.zeros(3, 4), lam)
    with pytest.raises(ValueError, match="lam"):
        compatibility(torch.zeros(3, 1), torch.zeros(1, 4), torch.zeros(3, 4), lam)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"cost must have shape \[n, m\] = \[3, 4\]"):
        dual_loss(torch.zeros(3), torch.zeros(4), torch.zeros(4, 3), 0.1)
    with pytest.raises(ValueError, match="mask must have shape"):
        dual_loss(torch.zeros(3), torch.zeros(4), torch.zeros(3, 4), 0.1, torch.ones(3))
