"""VP-SDE: closed-form marginals against a Monte Carlo simulation of the forward SDE."""

import math

import pytest
import torch

from policies.sde import VPSDE


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_sde_marginals_match_closed_form(schedule):
    """Euler-Maruyama on dx = -beta x / 2 dt + sqrt(beta) dw from x0 vs N(alpha_t x0, sigma_t^2)."""
    sde = VPSDE(schedule)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -0.8, 0.0], dtype=torch.float64)
    n_paths, dt = 10000, 1e-3
    checkpoints = {100: 0.1, 300: 0.3, 600: 0.6, 900: 0.9}
    x = x0.expand(n_paths, 3).clone()
    found = {}
    for i in range(max(checkpoints)):
        t = torch.tensor(i * dt, dtype=torch.float64)
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        x = x + sde.drift(x, t) * dt + sde.diffusion(t) * math.sqrt(dt) * noise
        if i + 1 in checkpoints:
            found[checkpoints[i + 1]] = x.clone()
    for t, xt in found.items():
        tt = torch.tensor(t, dtype=torch.float64)
        mean_ref = sde.alpha(tt) * x0
        std_ref = sde.sigma(tt)
        # standard error of the mean is sigma / sqrt(10000) <= 0.01; allow 3-4 s.e.
        assert torch.allclose(xt.mean(0), mean_ref, atol=0.035), (schedule, t)
        assert torch.allclose(xt.std(0), std_ref.expand(3), atol=0.02), (schedule, t)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_identities(schedule):
    sde = VPSDE(schedule)
    t = torch.linspace(sde.t_min, sde.T, 50, dtype=torch.float64, requires_grad=True)
    log_alpha = sde.log_alpha(t)
    # beta(t) = -2 d log(alpha_t) / dt
    (grad,) = torch.autograd.grad(log_alpha.sum(), t)
    torch.testing.assert_close(sde.beta(t), -2.0 * grad)
    t = t.detach()
    torch.testing.assert_close(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, torch.ones_like(t))
    lam = sde.lambda_t(t)
    assert (lam[1:] < lam[:-1]).all()  # strictly decreasing
    torch.testing.assert_close(lam, torch.log(sde.alpha(t) / sde.sigma(t)))
    torch.testing.assert_close(sde.inverse_lambda(lam), t, atol=1e-9, rtol=0)
    assert float(sde.alpha(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(1.0)


def test_linear_matches_otpr_eq20():
    """alpha_t = exp(h/2), sigma_t^2 = 1 - exp(h), h = -t^2 (bmax - bmin)/2 - t bmin."""
    sde = VPSDE("linear", beta_min=0.1, beta_max=20.0)
    t = torch.tensor([0.05, 0.5, 1.0], dtype=torch.float64)
    h = -(t**2) * (20.0 - 0.1) / 2 - t * 0.1
    torch.testing.assert_close(sde.alpha(t), torch.exp(h / 2))
    torch.testing.assert_close(sde.sigma(t) ** 2, 1 - torch.exp(h))


def test_cosine_matches_nichol_dhariwal():
    """alpha_t^2 = f(t)/f(0) with f(t) = cos^2(pi/2 (t + s)/(1 + s)), s = 0.008."""
    sde = VPSDE("cosine")
    assert sde.T == pytest.approx(0.9946)
    t = torch.tensor([0.0, 0.25, 0.5, 0.9], dtype=torch.float64)
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(sde.alpha(t) ** 2, f / f[0])


def test_eps_reparameterisation():
    sde = VPSDE()
    x0 = torch.randn(4, 3, 2, dtype=torch.float64)
    eps = torch.randn_like(x0)
    t = torch.tensor([0.01, 0.2, 0.5, 0.99], dtype=torch.float64)
    xt = sde.perturb(x0, t, eps)
    torch.testing.assert_close(sde.eps_to_x0(xt, eps, t), x0)
    # score of N(alpha x0, sigma^2): -(x - alpha x0) / sigma^2 = -eps / sigma
    ref = -(xt - sde.alpha(t)[:, None, None] * x0) / sde.sigma(t)[:, None, None] ** 2
    torch.testing.assert_close(sde.eps_to_score(eps, t), ref)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule": "quadratic"}, "schedule"),
        ({"beta_min": 5.0, "beta_max": 1.0}, "beta_min"),
        ({"t_min": 0.0}, "t_min"),
        ({"schedule": "cosine", "t_min": 0.999}, "t_min"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VPSDE(**kwargs)
