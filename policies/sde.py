"""Continuous-time variance-preserving SDE (VP-SDE) with closed-form marginals.

Forward SDE (Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 11):

    dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,        t in [0, T]

Its transition kernel is Gaussian, p_{t|0}(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I), with

    log alpha_t = -1/2 int_0^t beta(u) du,      sigma_t = sqrt(1 - alpha_t^2).

* ``linear``: beta(t) = beta_min + t (beta_max - beta_min), so
  log alpha_t = h(t) / 2 with h(t) = -t^2 (beta_max - beta_min) / 2 - t beta_min
  (OTPR appendix, eq. 20).
* ``cosine``: the continuous form of Nichol & Dhariwal (2021) used by DPM-Solver's
  ``NoiseScheduleVP``: log alpha_t = log cos(pi/2 (t + s)/(1 + s)) - log cos(pi/2 s/(1 + s)),
  s = 0.008. alpha_t reaches 0 at t = 1, so, as in DPM-Solver, the schedule ends at
  T = 0.9946 instead of 1 (``VPSDE.T``); samplers start from ``sde.T``.

The half log-SNR lambda_t = log(alpha_t / sigma_t) is strictly decreasing, and its inverse
(``inverse_lambda``) gives the logSNR-uniform time grids of DPM-Solver (Lu et al. 2022a, eq. 3.3
and appendix D.2 for the closed forms used here).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCHEDULES = ("linear", "cosine")
COSINE_T_MAX = 0.9946  # DPM-Solver's end time for the cosine schedule


class VPSDE:
    """VP-SDE noise schedule with closed-form alpha_t, sigma_t, lambda_t and their inverses.

    Args:
        schedule: ``"linear"`` or ``"cosine"``.
        beta_min, beta_max: the linear schedule's beta(0) and beta(1) (ignored for cosine).
        cosine_s: the cosine schedule's offset s.
        t_min: the smallest time; DSM draws t ~ U[t_min, T] and samplers stop at t_min.
        device: device of the tensors this object creates (time grids).
    """

    def __init__(
        self,
        schedule: str = "linear",
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        cosine_s: float = 0.008,
        t_min: float = 1e-3,
        device: torch.device | str = "cpu",
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"VPSDE: schedule={schedule!r}; expected one of {SCHEDULES}")
        if schedule == "linear" and not 0.0 <= beta_min < beta_max:
            raise ValueError(
                f"VPSDE: need 0 <= beta_min < beta_max, got beta_min={beta_min}, "
                f"beta_max={beta_max}"
            )
        if cosine_s <= 0.0:
            raise ValueError(f"VPSDE: cosine_s must be > 0, got {cosine_s}")
        self.schedule = schedule
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.cosine_s = float(cosine_s)
        self.T = 1.0 if schedule == "linear" else COSINE_T_MAX
        if not 0.0 < t_min < self.T:
            raise ValueError(f"VPSDE: t_min must lie in (0, T={self.T}), got {t_min}")
        self.t_min = float(t_min)
        self.device = torch.device(device)
        angle_0 = self.cosine_s / (1.0 + self.cosine_s) * math.pi / 2
        self._cos_log_alpha_0 = math.log(math.cos(angle_0))

    def __repr__(self) -> str:
        if self.schedule == "linear":
            return (
                f"VPSDE(linear, beta_min={self.beta_min}, beta_max={self.beta_max}, "
                f"t_min={self.t_min})"
            )
        return f"VPSDE(cosine, s={self.cosine_s}, T={self.T}, t_min={self.t_min})"

    # --- schedule -------------------------------------------------------------------------
    def log_alpha(self, t: Tensor) -> Tensor:
        """log alpha_t, the log of the marginal mean coefficient."""
        if self.schedule == "linear":
            return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        angle = (t + self.cosine_s) / (1.0 + self.cosine_s) * (math.pi / 2)
        return torch.log(torch.cos(angle)) - self._cos_log_alpha_0

    def beta(self, t: Tensor) -> Tensor:
        """beta(t) = -2 d log(alpha_t) / dt."""
        if self.schedule == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        angle = (t + self.cosine_s) / (1.0 + self.cosine_s) * (math.pi / 2)
        return torch.tan(angle) * (math.pi / (1.0 + self.cosine_s))

    def alpha(self, t: Tensor) -> Tensor:
        """Marginal mean coefficient alpha_t = exp(log alpha_t)."""
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        """Marginal std sigma_t = sqrt(1 - alpha_t^2) (computed with expm1 for small t)."""
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def lambda_t(self, t: Tensor) -> Tensor:
        """Half log-SNR lambda_t = log(alpha_t / sigma_t)."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    def inverse_lambda(self, lam: Tensor) -> Tensor:
        """The t with lambda_t = lam (DPM-Solver's ``NoiseScheduleVP.inverse_lambda``)."""
        # log alpha as a function of lambda: alpha^2 = 1 / (1 + exp(-2 lambda)).
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)
        if self.schedule == "linear":
            # Root t >= 0 of (b1 - b0) t^2 + 2 b0 t - 4c = 0 with c = -log_alpha, written without
            # cancellation: t = tmp / (sqrt(b0^2 + tmp) + b0) / (b1 - b0), tmp = 4 (b1 - b0) c.
            tmp = 2.0 * (self.beta_max - self.beta_min) * (-2.0 * log_alpha)
            delta = self.beta_min**2 + tmp
            return tmp / (torch.sqrt(delta) + self.beta_min) / (self.beta_max - self.beta_min)
        cos_arg = torch.exp(log_alpha + self._cos_log_alpha_0)
        return torch.arccos(cos_arg) * 2.0 * (1.0 + self.cosine_s) / math.pi - self.cosine_s

    # --- SDE terms and reparameterisation --------------------------------------------------
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(x, t) = -1/2 beta(t) x; ``t`` broadcasts against ``x`` (shape [B] or scalar)."""
        return -0.5 * _expand(self.beta(t), x) * x

    def diffusion(self, t: Tensor) -> Tensor:
        """g(t) = sqrt(beta(t))."""
        return torch.sqrt(self.beta(t))

    def perturb(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = alpha_t x_0 + sigma_t eps (OTPR appendix, below eq. 20); ``t`` has shape [B]."""
        return _expand(self.alpha(t), x0) * x0 + _expand(self.sigma(t), x0) * noise

    def eps_to_score(self, eps: Tensor, t: Tensor) -> Tensor:
        """Score of the marginal from an epsilon prediction: grad log p_t(x) = -eps / sigma_t."""
        return -eps / _expand(self.sigma(t), eps)

    def eps_to_x0(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """Data prediction (Tweedie) x_0 = (x_t - sigma_t eps) / alpha_t."""
        return (x - _expand(self.sigma(t), x) * eps) / _expand(self.alpha(t), x)

    def sample_time(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """t ~ U[t_min, T], shape [batch_size], on ``device`` (default ``self.device``); drawn
        where ``generator`` lives (``generator_device``)."""
        device = self.device if device is None else device
        u = torch.rand(batch_size, generator=generator, device=generator_device(generator, device))
        return self.t_min + (self.T - self.t_min) * u.to(device)


def generator_device(
    generator: torch.Generator | None, device: torch.device | str
) -> torch.device | str:
    """Where a draw from ``generator`` is made: on the generator's own device, then moved to
    ``device`` by the caller; without a generator, on ``device`` (torch's default generator
    there). So the CPU generators that the algorithms and evaluations seed, and checkpoints
    keep, serve a policy on any device, and one seed draws the same noise on every device."""
    return device if generator is None else generator.device


def _expand(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample [B] (or scalar) tensor to broadcast over ``like``'s trailing dims."""
    if v.dim() == 0:
        return v
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))
