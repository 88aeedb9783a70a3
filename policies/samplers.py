"""Reverse-time samplers for a VP-SDE, written as pure functions over an ``eps_fn(x, t) -> eps``.

``eps_fn`` takes x of shape [N, ...] and t of shape [N] (continuous time in [t_min, T]) and
returns the noise prediction eps_hat(x, t) with x's shape. The score is -eps_hat / sigma_t.

All samplers walk a time grid T = t_0 > t_1 > ... > t_K = t_min (``time_grid``) and make exactly
one ``eps_fn`` call per step, so K network calls per sample batch.

The single-step samplers (DDIM and Euler-Maruyama) share one Gaussian step form

    x_{k+1} = mean + std * z,    mean = c_x * x_k + c_eps * eps_hat(x_k, t_k),    z ~ N(0, I),

whose coefficients come from ``ddim_coefficients`` / ``euler_maruyama_coefficients``; ``ddim_step``
and ``euler_maruyama_step`` return (mean, std) for one step, so a policy-gradient method can
evaluate log N(x_{k+1}; mean, std^2 I) (``gaussian_log_prob``).

Clipping (``clip_x0=c``): the data prediction x0_hat = (x - sigma_t eps_hat) / alpha_t is clamped
to [-c, c] and eps_hat recomputed from it, eps = (x - alpha_t x0_hat) / sigma_t (diffusers'
``DDIMScheduler`` with ``clip_sample=True, use_clipped_model_output=True``); the returned sample
is clamped to [-c, c] as well.

Temperature (``temperature=tau``, ``scale_noise``): the injected step noise is multiplied by tau,
and the policy draws x_T ~ N(0, tau^2 I). tau = 1 is the sampler as derived; tau < 1 draws chunks
nearer the mode (low-temperature sampling; at tau = 0 every sampler returns a deterministic
function of the observation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from policies.sde import VPSDE, generator_device

EpsFn = Callable[[Tensor, Tensor], Tensor]
SPACINGS = ("time_uniform", "logsnr_uniform")


def time_grid(
    sde: VPSDE, num_steps: int, spacing: str = "time_uniform", device: torch.device | str = "cpu"
) -> Tensor:
    """Decreasing float64 times [num_steps + 1] from ``sde.T`` to ``sde.t_min``.

    ``time_uniform`` spaces t evenly; ``logsnr_uniform`` spaces lambda_t evenly
    (DPM-Solver, Lu et al. 2022a, section 3.3), mapped back with ``sde.inverse_lambda``.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"time_grid: num_steps must be an int >= 1, got {num_steps!r}")
    if spacing not in SPACINGS:
        raise ValueError(f"time_grid: spacing={spacing!r}; expected one of {SPACINGS}")
    t_end = torch.tensor([sde.T, sde.t_min], dtype=torch.float64, device=device)
    if spacing == "time_uniform":
        return torch.linspace(sde.T, sde.t_min, num_steps + 1, dtype=torch.float64, device=device)
    lam = sde.lambda_t(t_end)
    grid = sde.inverse_lambda(
        torch.linspace(float(lam[0]), float(lam[1]), num_steps + 1, dtype=torch.float64)
    ).to(device)
    grid[0], grid[-1] = sde.T, sde.t_min  # remove round-off at the ends
    return grid


@dataclass(frozen=True)
class StepCoefficients:
    """One Gaussian reverse step: mean = c_x x + c_eps eps_hat, then x_next = mean + std z.

    ``alpha_t``/``sigma_t`` are the current time's marginal coefficients (used to clip the data
    prediction). Fields are float64 tensors of a common shape ([K] for a grid, [N] per sample).
    """

    c_x: Tensor
    c_eps: Tensor
    std: Tensor
    alpha_t: Tensor
    sigma_t: Tensor


def ddim_coefficients(
    sde: VPSDE, t: Tensor, s: Tensor, eta: float = 0.0, min_std: float = 0.0
) -> StepCoefficients:
    """DDIM step from t to s < t (Song et al. 2021a, eq. 12, in continuous VP time).

    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - std^2) eps_hat + std z, with
    std = eta * (sigma_s / sigma_t) * sqrt(1 - alpha_t^2 / alpha_s^2) (eq. 16); eta = 1 is the
    ancestral (DDPM-like) step, eta = 0 the deterministic one. ``min_std`` floors only the injected
    noise, not the eta-dependent direction term, as DPPO's ``min_sampling_denoising_std`` does.
    """
    t, s = t.double(), s.double()
    a_t, sig_t = sde.alpha(t), sde.sigma(t)
    a_s, sig_s = sde.alpha(s), sde.sigma(s)
    std = eta * sig_s / sig_t * torch.sqrt(torch.clamp(1.0 - (a_t / a_s) ** 2, min=0.0))
    direction = torch.sqrt(torch.clamp(sig_s**2 - std**2, min=0.0))
    c_x = a_s / a_t
    c_eps = direction - a_s * sig_t / a_t
    return StepCoefficients(c_x, c_eps, torch.clamp(std, min=min_std), a_t, sig_t)


def euler_maruyama_coefficients(
    sde: VPSDE, t: Tensor, s: Tensor, min_std: float = 0.0
) -> StepCoefficients:
    """Euler-Maruyama step of the reverse SDE dx = [f(x,t) - g(t)^2 score] dt + g(t) dw_bar.

    With dt = s - t < 0, f = -beta x / 2, g^2 = beta, score = -eps_hat / sigma_t
    (Song et al. 2021b, eq. 6):  x_s = x + (beta/2 x - beta eps_hat / sigma_t)(t - s)
    + sqrt(beta (t - s)) z, all evaluated at the step's start t.
    """
    t, s = t.double(), s.double()
    dt = t - s
    beta = sde.beta(t)
    sig_t = sde.sigma(t)
    c_x = 1.0 + 0.5 * beta * dt
    c_eps = -beta * dt / sig_t
    std = torch.clamp(torch.sqrt(beta * dt), min=min_std)
    return StepCoefficients(c_x, c_eps, std, sde.alpha(t), sig_t)


def scale_noise(coef: StepCoefficients, temperature: float) -> StepCoefficients:
    """The same steps with their injected noise std multiplied by ``temperature`` (the mean,
    which carries the learned score, is unchanged)."""
    if temperature == 1.0:
        return coef
    return replace(coef, std=coef.std * temperature)


def gaussian_step_mean(
    x: Tensor,
    eps: Tensor,
    c_x: Tensor | float,
    c_eps: Tensor | float,
    alpha_t: Tensor | float,
    sigma_t: Tensor | float,
    clip_x0: float | None = None,
) -> Tensor:
    """mean = c_x x + c_eps eps, with eps recomputed from a clamped x0_hat when ``clip_x0``."""
    if clip_x0 is not None:
        x0 = ((x - sigma_t * eps) / alpha_t).clamp(-clip_x0, clip_x0)
        eps = (x - alpha_t * x0) / sigma_t
    return c_x * x + c_eps * eps


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor | float) -> Tensor:
    """log N(x; mean, std^2 I) summed over all dims but the first: shape [N]."""
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    log_density = (
        -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2.0 * math.pi)
    ).expand_as(x)
    return log_density.reshape(x.shape[0], -1).sum(dim=1)


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    """Cast a float64 coefficient ([N] or scalar) to ``like``'s dtype, broadcastable over it."""
    v = v.to(dtype=like.dtype, device=like.device)
    if v.dim() == 0:
        return v
    return v.reshape(v.shape + (1,) * (like.dim() - 1))


def _apply_step(
    eps_fn: EpsFn, x: Tensor, t: Tensor, coef: StepCoefficients, clip_x0: float | None
) -> tuple[Tensor, Tensor]:
    t_vec = t.to(dtype=x.dtype, device=x.device).expand(x.shape[0])
    eps = eps_fn(x, t_vec)
    c = [_per_sample(v, x) for v in (coef.c_x, coef.c_eps, coef.alpha_t, coef.sigma_t)]
    return gaussian_step_mean(x, eps, *c, clip_x0=clip_x0), _per_sample(coef.std, x)


def ddim_step(
    eps_fn: EpsFn,
    sde: VPSDE,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    eta: float = 0.0,
    clip_x0: float | None = None,
    min_std: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """One DDIM step: (mean, std) of x_s given x_t; ``t``, ``s`` scalar or per-sample [N]."""
    t, s = torch.as_tensor(t), torch.as_tensor(s)
    coef = ddim_coefficients(sde, t, s, eta=eta, min_std=min_std)
    return _apply_step(eps_fn, x, t, coef, clip_x0)


def euler_maruyama_step(
    eps_fn: EpsFn,
    sde: VPSDE,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    clip_x0: float | None = None,
    min_std: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """One reverse-SDE Euler-Maruyama step: (mean, std) of x_s given x_t."""
    t, s = torch.as_tensor(t), torch.as_tensor(s)
    coef = euler_maruyama_coefficients(sde, t, s, min_std=min_std)
    return _apply_step(eps_fn, x, t, coef, clip_x0)


@dataclass
class GaussianChain:
    """A recorded run of a single-step sampler (normalised space, N = batch of the run).

    xs: [K + 1, N, ...] with xs[0] = x_T and xs[K] the unclipped final sample;
    means: [K, N, ...] the mean of step k's Gaussian; stds: [K] its std;
    times: [K + 1] float64 grid (step k goes from times[k] to times[k + 1]).
    """

    xs: Tensor
    means: Tensor
    stds: Tensor
    times: Tensor


def run_gaussian_chain(
    eps_fn: EpsFn,
    x_T: Tensor,
    times: Tensor,
    coefs: StepCoefficients,
    clip_x0: float | None = None,
    generator: torch.Generator | None = None,
    record: bool = False,
) -> tuple[Tensor, GaussianChain | None]:
    """Run the Gaussian steps given per-step coefficients (fields of shape [K]).

    The per-step coefficients are turned into Python floats once, so each step costs one
    ``eps_fn`` call and a few element-wise ops. Returns the final (unclipped) x and, if
    ``record``, the whole chain.
    """
    n = x_T.shape[0]
    num_steps = times.shape[0] - 1
    t_list = times.tolist()
    c_x, c_eps, std, a_t, s_t = (
        v.tolist() for v in (coefs.c_x, coefs.c_eps, coefs.std, coefs.alpha_t, coefs.sigma_t)
    )
    x = x_T
    xs, means = [x], []
    for k in range(num_steps):
        t_vec = torch.full((n,), t_list[k], dtype=x.dtype, device=x.device)
        eps = eps_fn(x, t_vec)
        mean = gaussian_step_mean(x, eps, c_x[k], c_eps[k], a_t[k], s_t[k], clip_x0)
        if std[k] > 0.0:
            where = generator_device(generator, x.device)
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=where)
            x = mean + std[k] * noise.to(x.device)
        else:
            x = mean
        if record:
            xs.append(x)
            means.append(mean)
    if not record:
        return x, None
    chain = GaussianChain(torch.stack(xs), torch.stack(means), coefs.std.clone(), times)
    return x, chain


def _final_clip(x: Tensor, clip_x0: float | None) -> Tensor:
    return x if clip_x0 is None else x.clamp(-clip_x0, clip_x0)


def ddim_sample(
    eps_fn: EpsFn,
    sde: VPSDE,
    x_T: Tensor,
    num_steps: int = 10,
    eta: float = 0.0,
    spacing: str = "time_uniform",
    clip_x0: float | None = None,
    min_std: float = 0.0,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """DDIM (Song et al. 2021a) from x_T over ``num_steps`` steps; see ``ddim_step``.
    ``temperature`` scales each step's injected noise (x_T is the caller's)."""
    times = time_grid(sde, num_steps, spacing)
    coefs = ddim_coefficients(sde, times[:-1], times[1:], eta=eta, min_std=min_std)
    coefs = scale_noise(coefs, temperature)
    x, _ = run_gaussian_chain(eps_fn, x_T, times, coefs, clip_x0, generator)
    return _final_clip(x, clip_x0)


def euler_maruyama_sample(
    eps_fn: EpsFn,
    sde: VPSDE,
    x_T: Tensor,
    num_steps: int = 10,
    spacing: str = "time_uniform",
    clip_x0: float | None = None,
    min_std: float = 0.0,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Euler-Maruyama on the reverse SDE; see ``euler_maruyama_coefficients``.
    ``temperature`` scales each step's injected noise (x_T is the caller's)."""
    times = time_grid(sde, num_steps, spacing)
    coefs = euler_maruyama_coefficients(sde, times[:-1], times[1:], min_std=min_std)
    coefs = scale_noise(coefs, temperature)
    x, _ = run_gaussian_chain(eps_fn, x_T, times, coefs, clip_x0, generator)
    return _final_clip(x, clip_x0)


def dpm_solver_pp_2m_sample(
    eps_fn: EpsFn,
    sde: VPSDE,
    x_T: Tensor,
    num_steps: int = 10,
    spacing: str = "logsnr_uniform",
    clip_x0: float | None = None,
    lower_order_final: bool = True,
) -> Tensor:
    """DPM-Solver++(2M): multistep second-order solver of the diffusion ODE in data prediction.

    Lu et al. 2022b ("DPM-Solver++", Algorithm 2). With h_i = lambda_{t_i} - lambda_{t_{i-1}},
    r_i = h_{i-1} / h_i and x0_i the (clipped) data prediction at t_{i-1}:

        D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1}      (D_1 = x0_1: first step is 1st order)
        x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i

    ``lower_order_final`` makes the last step first order when num_steps < 15 (as DPM-Solver and
    diffusers do), which stabilises very few steps. Deterministic: no (mean, std) per step.
    """
    times = time_grid(sde, num_steps, spacing)
    alpha, sigma, lam = sde.alpha(times), sde.sigma(times), sde.lambda_t(times)
    h = (lam[1:] - lam[:-1]).tolist()
    ratio = (sigma[1:] / sigma[:-1]).tolist()
    phi = (-alpha[1:] * torch.expm1(-(lam[1:] - lam[:-1]))).tolist()
    a_list, s_list, t_list = alpha.tolist(), sigma.tolist(), times.tolist()
    n = x_T.shape[0]
    x = x_T
    x0_prev: Tensor | None = None
    for i in range(num_steps):
        t_vec = torch.full((n,), t_list[i], dtype=x.dtype, device=x.device)
        eps = eps_fn(x, t_vec)
        x0 = (x - s_list[i] * eps) / a_list[i]
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        final_first_order = lower_order_final and i == num_steps - 1 and num_steps < 15
        if x0_prev is None or final_first_order:
            d = x0
        else:
            r = h[i - 1] / h[i]
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        x = ratio[i] * x + phi[i] * d
        x0_prev = x0
    return _final_clip(x, clip_x0)
