"""Samplers with exact scores: a 2-D Gaussian mixture and a 1-D Gaussian (exact ODE solution)."""

import math

import pytest
import torch

from policies.samplers import (
    ddim_coefficients,
    ddim_sample,
    ddim_step,
    dpm_solver_pp_2m_sample,
    euler_maruyama_sample,
    euler_maruyama_step,
    gaussian_log_prob,
    scale_noise,
    time_grid,
)
from policies.sde import VPSDE

WEIGHTS = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
MEANS = torch.tensor([[-0.6, -0.5], [0.6, -0.5], [0.0, 0.6]], dtype=torch.float64)
COMP_STD = 0.1


def mixture_eps_fn(sde: VPSDE):
    """Exact eps = -sigma_t * score of the VP-perturbed mixture.

    p_t = sum_k w_k N(alpha_t mu_k, (alpha_t^2 s^2 + sigma_t^2) I), so
    score = -sum_k r_k(x) (x - alpha_t mu_k) / v_t with responsibilities r_k.
    """

    def eps_fn(x, t):
        a = sde.alpha(t.double())[:, None, None]
        s = sde.sigma(t.double())[:, None]
        var = a[:, :, 0] ** 2 * COMP_STD**2 + s**2  # [N, 1]
        diff = x.double()[:, None, :] - a * MEANS[None]  # [N, K, 2]
        logits = torch.log(WEIGHTS)[None] - 0.5 * (diff**2).sum(-1) / var
        resp = torch.softmax(logits, dim=1)
        score = -(resp[..., None] * diff).sum(1) / var
        return (-s * score).to(x.dtype)

    return eps_fn


def assign(x):
    return ((x.double()[:, None] - MEANS[None]) ** 2).sum(-1).argmin(1)


SAMPLERS = {
    "ddim_eta0": lambda eps, sde, x, g: ddim_sample(eps, sde, x, 20, eta=0.0),
    "ddim_eta1": lambda eps, sde, x, g: ddim_sample(eps, sde, x, 50, eta=1.0, generator=g),
    "euler_maruyama": lambda eps, sde, x, g: euler_maruyama_sample(eps, sde, x, 100, generator=g),
    "dpm_solver_pp_2m": lambda eps, sde, x, g: dpm_solver_pp_2m_sample(eps, sde, x, 20),
}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_recovers_mixture_weights(name, schedule):
    sde = VPSDE(schedule)
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(4000, 2, generator=gen)
    x = SAMPLERS[name](mixture_eps_fn(sde), sde, x_T, gen)
    labels = assign(x)
    fractions = torch.bincount(labels, minlength=3).double() / x.shape[0]
    assert (fractions - WEIGHTS).abs().max() < 0.05, fractions
    # and each component's samples are centred on it with roughly its spread
    for k in range(3):
        resid = x.double()[labels == k] - MEANS[k]
        assert resid.mean(0).abs().max() < 0.05
        assert 0.07 < resid.std(0).mean() < 0.14


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_deterministic_samplers_converge_to_exact_ode_map(schedule):
    """For data N(m, s^2) the probability-flow ODE maps x_T to
    alpha_t m + v_t (x_T - alpha_T m) / v_T, v_t = sqrt(alpha_t^2 s^2 + sigma_t^2), exactly.
    DDIM is first order (error halves when steps double), DPM-Solver++(2M) second order."""
    sde = VPSDE(schedule)
    m, s = 0.7, 0.2

    def eps_fn(x, t):
        a, sg = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        return sg * (x - a * m) / (a**2 * s**2 + sg**2)

    def v(t):
        return torch.sqrt(sde.alpha(t) ** 2 * s**2 + sde.sigma(t) ** 2)

    x_T = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    t_end, t_min = (torch.tensor(v, dtype=torch.float64) for v in (sde.T, sde.t_min))
    exact = sde.alpha(t_min) * m + v(t_min) * (x_T - sde.alpha(t_end) * m) / v(t_end)

    def err(fn, n):
        return float((fn(eps_fn, sde, x_T, n) - exact).abs().max())

    def dpm(*a):
        return dpm_solver_pp_2m_sample(*a, lower_order_final=False)

    ddim_20, ddim_40 = err(ddim_sample, 20), err(ddim_sample, 40)
    dpm_20, dpm_40 = err(dpm, 20), err(dpm, 40)
    assert 1.6 < ddim_20 / ddim_40 < 2.4
    assert dpm_20 / dpm_40 > 3.0
    assert dpm_20 < ddim_20 / 5
    assert ddim_sample(eps_fn, sde, x_T, 1000).sub(exact).abs().max() < 1e-2


def test_gaussian_log_prob_matches_torch_normal():
    gen = torch.Generator().manual_seed(1)
    x, mean = torch.randn(2, 5, 4, 3, generator=gen)
    for std in (0.3, torch.tensor(0.05), torch.rand(5, 1, 1, generator=gen) + 0.1):
        ref = torch.distributions.Normal(mean, std).log_prob(x).sum(dim=(1, 2))
        torch.testing.assert_close(gaussian_log_prob(x, mean, std), ref)


@pytest.mark.parametrize("kind", ["ddim", "euler_maruyama"])
def test_step_functions_give_gaussian_transition(kind):
    """The (mean, std) of one step: sampling from it reproduces the sampler's own step."""
    sde = VPSDE()
    eps_fn = mixture_eps_fn(sde)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grid = time_grid(sde, 10)
    t, s = grid[3], grid[4]
    if kind == "ddim":
        mean, std = ddim_step(eps_fn, sde, x, t, s, eta=1.0)
        # closed form of DDIM with eta = 1 (DDPM posterior std)
        a_t, a_s, sg_t, sg_s = sde.alpha(t), sde.alpha(s), sde.sigma(t), sde.sigma(s)
        ref_std = sg_s / sg_t * torch.sqrt(1 - (a_t / a_s) ** 2)
        x0 = (x - sg_t * eps_fn(x, t.expand(6))) / a_t
        ref_mean = a_s * x0 + torch.sqrt(sg_s**2 - ref_std**2) * eps_fn(x, t.expand(6))
    else:
        mean, std = euler_maruyama_step(eps_fn, sde, x, t, s)
        dt, beta = t - s, sde.beta(t)
        score = -eps_fn(x, t.expand(6)) / sde.sigma(t)
        ref_mean = x - (-0.5 * beta * x - beta * score) * dt
        ref_std = torch.sqrt(beta * dt)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(std, ref_std)
    # per-sample times give the same step as a shared scalar time
    if kind == "ddim":
        mean_vec, std_vec = ddim_step(eps_fn, sde, x, t.expand(6), s.expand(6), eta=1.0)
    else:
        mean_vec, std_vec = euler_maruyama_step(eps_fn, sde, x, t.expand(6), s.expand(6))
    torch.testing.assert_close(mean_vec, mean)
    torch.testing.assert_close(std_vec.flatten(), std.expand(6))


def test_ddim_eta0_is_deterministic_and_min_std_floors_noise():
    sde = VPSDE()
    grid = time_grid(sde, 5)
    c = ddim_coefficients(sde, grid[:-1], grid[1:], eta=0.0)
    assert (c.std == 0).all()
    c = ddim_coefficients(sde, grid[:-1], grid[1:], eta=0.0, min_std=0.1)
    assert torch.allclose(c.std, torch.full_like(c.std, 0.1))


def test_time_grids():
    for schedule in ("linear", "cosine"):
        sde = VPSDE(schedule)
        for spacing in ("time_uniform", "logsnr_uniform"):
            g = time_grid(sde, 7, spacing)
            assert g.shape == (8,) and g[0] == sde.T and g[-1] == sde.t_min
            assert (g[1:] < g[:-1]).all()
        lam = sde.lambda_t(time_grid(sde, 7, "logsnr_uniform"))
        torch.testing.assert_close(lam.diff(), lam.diff()[:1].expand(7))
    with pytest.raises(ValueError, match="spacing"):
        time_grid(VPSDE(), 5, "quadratic")
    with pytest.raises(ValueError, match="num_steps"):
        time_grid(VPSDE(), 0)


def test_clip_bounds_samples():
    sde = VPSDE()
    far = lambda x, t: torch.zeros_like(x)  # noqa: E731 - eps = 0 means x0_hat = x / alpha_t
    x_T = 3.0 * torch.ones(4, 2)
    for fn in (ddim_sample, dpm_solver_pp_2m_sample):
        x = fn(far, sde, x_T, 5, clip_x0=1.0)
        assert x.abs().max() <= 1.0
        assert fn(far, sde, x_T, 5).abs().max() > 100.0  # unclipped x0_hat = 3 / alpha_T
    assert math.isfinite(float(euler_maruyama_sample(far, sde, x_T, 5, clip_x0=1.0).max()))


def test_scale_noise_scales_only_the_injected_noise():
    sde = VPSDE()
    times = time_grid(sde, 5, "time_uniform")
    coef = ddim_coefficients(sde, times[:-1], times[1:], eta=1.0)
    assert scale_noise(coef, 1.0) is coef
    half = scale_noise(coef, 0.5)
    torch.testing.assert_close(half.std, coef.std * 0.5)
    for key in ("c_x", "c_eps", "alpha_t", "sigma_t"):
        assert torch.equal(getattr(half, key), getattr(coef, key))
