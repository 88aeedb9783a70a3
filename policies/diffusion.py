"""Conditional VP-SDE diffusion policy over action chunks (epsilon prediction).

Horizons (T_o observations condition a chunk of H actions; the env loop executes some of them):

    step:     t-T_o+1 ... t-1   t   t+1 ... t+H-1
    obs:      |------ T_o ------|                      -> cond = flatten(normalise(obs))
    actions:                    |-------- H --------|  -> x_0 [H, action_dim], normalised

Training is denoising score matching with epsilon prediction (OTPR appendix eq. 21): for
t ~ U[t_min, T], eps ~ N(0, I), x_t = alpha_t x_0 + sigma_t eps, minimise
||eps_theta(x_t, t, cond) - eps||^2; the score is -eps_theta / sigma_t.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from policies.base import ScorePolicy
from policies.normalizer import MinMaxNormalizer
from policies.samplers import (
    SPACINGS,
    StepCoefficients,
    ddim_coefficients,
    ddim_sample,
    dpm_solver_pp_2m_sample,
    euler_maruyama_coefficients,
    euler_maruyama_sample,
    gaussian_log_prob,
    gaussian_step_mean,
    run_gaussian_chain,
    scale_noise,
    time_grid,
)
from policies.sde import VPSDE, generator_device

SAMPLERS = ("ddim", "euler_maruyama", "dpm_solver_pp_2m")
WEIGHT_NORMS = ("none", "batch_mean")


@dataclass
class ChainResult:
    """A recorded denoising chain for B states x L candidates, K steps (normalised space).

    xs: [B, L, K + 1, H, action_dim], xs[:, :, 0] = x_T ~ N(0, I), xs[:, :, K] the last sample
        (unclipped); means: [B, L, K, H, action_dim] the Gaussian mean of step k;
    stds: [K] the std of step k; log_probs: [B, L, K] log N(xs[:, :, k+1]; means[:, :, k], std_k^2)
        summed over the chunk; times: [K + 1] the float64 grid (step k: times[k] -> times[k+1]);
    actions: [B, L, H, action_dim] raw actions (clipped in normalised space if clip_sample).
    """

    xs: Tensor
    means: Tensor
    stds: Tensor
    log_probs: Tensor
    times: Tensor
    actions: Tensor


class DiffusionPolicy(ScorePolicy):
    """VP-SDE epsilon-prediction policy eps_theta(x, t, cond); DDIM / EM / DPM-Solver++ sampling.

    Args:
        obs_dim, action_dim: per-step observation and action sizes.
        obs_horizon: T_o, the number of observations in the condition.
        horizon: H, the action chunk length.
        net: a module ``net(x [N, H, action_dim], t [N], cond [N, T_o * obs_dim]) -> eps_hat``.
        sde: the VP-SDE noise schedule.
        sampler: ``ddim``, ``euler_maruyama`` or ``dpm_solver_pp_2m``.
        num_steps: denoising steps (network calls) per sample.
        eta: DDIM stochasticity (0 = deterministic, 1 = DDPM-like); ignored by other samplers.
        clip_sample: clamp the data prediction and the final sample to [-1, 1] (normalised).
        min_std: floor of each step's noise std (DPPO's ``min_sampling_denoising_std``); with
            DDIM eta = 0 the steps are deterministic (std 0) and the step log-probability is
            undefined unless ``min_std > 0``.
        spacing: time grid, ``time_uniform`` or ``logsnr_uniform``; default ``logsnr_uniform``
            for DPM-Solver++ and ``time_uniform`` otherwise.
        temperature: scale of x_T and of every step's injected noise (``samplers.scale_noise``);
            1 is the sampler as derived, < 1 draws nearer the mode. Step log-probabilities
            (``sample_chain``, ``step_log_prob``) use the scaled stds, so they stay those of the
            chain that was drawn.
        device: where the network, normaliser and samples live. Noise comes from a given
            generator on that generator's device (``sde.generator_device``): a CPU generator
            serves a policy on any device.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        obs_horizon: int,
        horizon: int,
        net: nn.Module,
        sde: VPSDE,
        sampler: str = "ddim",
        num_steps: int = 10,
        eta: float = 0.0,
        clip_sample: bool = True,
        min_std: float = 0.0,
        spacing: str | None = None,
        temperature: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        for key, v in (
            ("obs_dim", obs_dim),
            ("action_dim", action_dim),
            ("obs_horizon", obs_horizon),
            ("horizon", horizon),
            ("num_steps", num_steps),
        ):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"DiffusionPolicy: {key} must be an int >= 1, got {v!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"DiffusionPolicy: sampler={sampler!r}; expected one of {SAMPLERS}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"DiffusionPolicy: eta must lie in [0, 1], got {eta}")
        if min_std < 0.0:
            raise ValueError(f"DiffusionPolicy: min_std must be >= 0, got {min_std}")
        if not 0.0 <= temperature <= 1.0:
            raise ValueError(f"DiffusionPolicy: temperature must lie in [0, 1], got {temperature}")
        if spacing is None:
            spacing = "logsnr_uniform" if sampler == "dpm_solver_pp_2m" else "time_uniform"
        if spacing not in SPACINGS:
            raise ValueError(f"DiffusionPolicy: spacing={spacing!r}; expected one of {SPACINGS}")
        if not isinstance(sde, VPSDE):
            raise TypeError(f"DiffusionPolicy: sde must be a VPSDE, got {type(sde)}")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.obs_horizon, self.horizon = obs_horizon, horizon
        self.sde = sde
        self.sampler = sampler
        self.num_steps = num_steps
        self.eta = float(eta)
        self.clip_sample = clip_sample
        self.min_std = float(min_std)
        self.temperature = float(temperature)
        self.spacing = spacing
        self.net = net.to(device)
        self.normalizer = MinMaxNormalizer(obs_dim, action_dim, device=device)

    @property
    def cond_dim(self) -> int:
        return self.obs_horizon * self.obs_dim

    @property
    def _clip_x0(self) -> float | None:
        return 1.0 if self.clip_sample else None

    # --- input checks -------------------------------------------------------------------------
    def _check_obs(self, obs: Tensor, where: str) -> None:
        expected = (self.obs_horizon, self.obs_dim)
        if not isinstance(obs, Tensor) or obs.dim() != 3 or tuple(obs.shape[1:]) != expected:
            shape = list(obs.shape) if isinstance(obs, Tensor) else type(obs).__name__
            raise ValueError(
                f"DiffusionPolicy.{where}: obs must be a tensor [B, T_o={expected[0]}, "
                f"obs_dim={expected[1]}], got {shape}"
            )

    def _check_chunk(self, x: Tensor, batch: int, name: str, where: str) -> None:
        expected = (batch, self.horizon, self.action_dim)
        if not isinstance(x, Tensor) or tuple(x.shape) != expected:
            shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"DiffusionPolicy.{where}: {name} must be a tensor [B={batch}, H={self.horizon}, "
                f"action_dim={self.action_dim}], got {shape}"
            )

    def _cond(self, obs: Tensor) -> Tensor:
        return self.normalizer.normalize_obs(obs.to(self.device)).flatten(1)

    # --- training -------------------------------------------------------------------------------
    def per_sample_dsm_loss(
        self, obs: Tensor, actions: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Per-sample epsilon loss [B]: mean over the chunk of (eps_theta(x_t, t, c) - eps)^2.

        Draws t ~ U[t_min, T] ([B]) first, then eps ~ N(0, I) ([B, H, action_dim]), both from
        ``generator`` when given.
        """
        self._check_obs(obs, "compute_dsm_loss")
        self._check_chunk(actions, obs.shape[0], "actions", "compute_dsm_loss")
        x0 = self.normalizer.normalize_action(actions.to(self.device))
        cond = self._cond(obs)
        t = self.sde.sample_time(x0.shape[0], generator=generator, device=self.device)
        where = generator_device(generator, self.device)
        noise = torch.randn(x0.shape, generator=generator, device=where, dtype=x0.dtype)
        noise = noise.to(self.device)
        x_t = self.sde.perturb(x0, t, noise)
        eps_hat = self.net(x_t, t, cond)
        if eps_hat.shape != x0.shape:
            raise ValueError(
                f"DiffusionPolicy: net returned shape {list(eps_hat.shape)}, expected "
                f"{list(x0.shape)}"
            )
        return ((eps_hat - noise) ** 2).mean(dim=(1, 2))

    def compute_dsm_loss(
        self,
        obs: Tensor,
        actions: Tensor,
        weights: Tensor | None = None,
        weight_norm: str = "none",
        generator: torch.Generator | None = None,
        weight_clip: float | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Weighted denoising score matching loss (OTPR eq. 10 with weights w_i = H(s_i, a_i)).

        loss = 1/B sum_i w~_i l_i, l_i the per-sample epsilon loss (``per_sample_dsm_loss``),
        where w~ = w for ``weight_norm="none"`` (w = 1 when ``weights`` is None) and
        w~ = w / mean(w) for ``"batch_mean"``, which makes the loss the weighted mean
        sum_i w_i l_i / sum_i w_i: its scale no longer depends on the scale of H, so one
        learning rate fits every lambda. ``batch_mean`` needs w >= 0; all-zero weights give a
        zero loss (not NaN). Weights are detached: the policy never back-propagates into
        whatever produced them. ``weight_clip`` caps w~ (after normalisation), as AWR and CRR
        cap exp-advantage weights: when H is sparse (few pairs of a batch with H > 0), the
        normalised weights of those few reach 1 / (nonzero fraction), and an uncapped step
        fits a handful of pairs.

        Args:
            obs: raw [B, T_o, obs_dim]; actions: raw [B, H, action_dim]; weights: [B] or None.
        Returns:
            (loss, info) with info keys ``actor/dsm``, ``actor/dsm_unweighted``,
            ``actor/weight_mean``, ``actor/weight_max``.
        """
        if weight_norm not in WEIGHT_NORMS:
            raise ValueError(
                f"compute_dsm_loss: weight_norm={weight_norm!r}; expected one of {WEIGHT_NORMS}"
            )
        losses = self.per_sample_dsm_loss(obs, actions, generator=generator)
        b = losses.shape[0]
        if weights is None:
            w = torch.ones_like(losses)
        else:
            if not isinstance(weights, Tensor) or tuple(weights.shape) != (b,):
                shape = list(weights.shape) if isinstance(weights, Tensor) else type(weights)
                raise ValueError(f"compute_dsm_loss: weights must be a tensor [B={b}], got {shape}")
            w = weights.detach().to(device=losses.device, dtype=losses.dtype)
            if not torch.isfinite(w).all():
                raise ValueError("compute_dsm_loss: weights contain NaN or inf")
        raw_mean, raw_max = float(w.mean()), float(w.max())
        if weight_norm == "batch_mean":
            if (w < 0).any():
                raise ValueError("compute_dsm_loss: weight_norm='batch_mean' needs weights >= 0")
            w = w / raw_mean if raw_mean > 0.0 else torch.zeros_like(w)
        if weight_clip is not None:
            if weight_clip <= 0:
                raise ValueError(f"compute_dsm_loss: weight_clip must be > 0, got {weight_clip}")
            w = w.clamp(max=weight_clip)
        loss = (w * losses).mean()
        info = {
            "actor/dsm": float(loss.detach()),
            "actor/dsm_unweighted": float(losses.detach().mean()),
            "actor/weight_mean": raw_mean,
            "actor/weight_max": raw_max,
        }
        return loss, info

    # --- sampling ---------------------------------------------------------------------------------
    def _eps_fn(self, cond: Tensor):
        def eps_fn(x: Tensor, t: Tensor) -> Tensor:
            return self.net(x, t, cond)

        return eps_fn

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        shape = (n, self.horizon, self.action_dim)
        where = generator_device(generator, self.device)
        noise = torch.randn(shape, generator=generator, device=where).to(self.device)
        return noise * self.temperature

    def _repeated_cond(self, obs: Tensor, num_samples: int, where: str) -> Tensor:
        self._check_obs(obs, where)
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"DiffusionPolicy.{where}: num_samples must be an int >= 1")
        return self._cond(obs).repeat_interleave(num_samples, dim=0)

    @contextmanager
    def deterministic(self) -> Iterator[DiffusionPolicy]:
        """Within the block, sample with no injected noise: DDIM with eta = 0 and no std floor
        (DPPO's evaluation, ``deterministic=True``); only x_T is drawn. DPM-Solver++ is
        deterministic already. Euler-Maruyama has no noise-free form and raises ValueError."""
        if self.sampler == "euler_maruyama":
            raise ValueError(
                "DiffusionPolicy.deterministic: the euler_maruyama sampler injects noise at every "
                "step by construction; use ddim or dpm_solver_pp_2m"
            )
        saved = self.eta, self.min_std
        self.eta, self.min_std = 0.0, 0.0
        try:
            yield self
        finally:
            self.eta, self.min_std = saved

    @torch.no_grad()
    def sample(
        self,
        obs: Tensor,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        x_T: Tensor | None = None,
    ) -> Tensor:
        """Raw obs [B, T_o, obs_dim] -> raw actions [B, num_samples, H, action_dim].

        The B * num_samples chains run as one batch: one network call per denoising step,
        whatever num_samples is. ``x_T`` [B, num_samples, H, action_dim], if given, is the
        chains' starting noise (as drawn: the temperature does not rescale it) instead of a
        draw from ``generator``; with a deterministic sampler (DDIM eta = 0, DPM-Solver) the
        chunk is then a function of (obs, x_T), the latent a noise-space policy steers.
        """
        return self._draw(obs, num_samples, generator, x_T, self.num_steps, "sample")

    def rsample(
        self,
        obs: Tensor,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        num_steps: int | None = None,
    ) -> Tensor:
        """``sample`` with gradients: the chunks [B, num_samples, H, action_dim] are a
        differentiable function of the network's parameters, back-propagated through every
        denoising step (the injected noise is drawn, then held fixed: a reparameterised
        sample, as Diffusion-QL trains its actor through the reverse chain). ``num_steps``
        shortens the chain (None: ``self.num_steps``); the memory grows with it.
        """
        steps = self.num_steps if num_steps is None else num_steps
        return self._draw(obs, num_samples, generator, None, steps, "rsample")

    def _draw(
        self,
        obs: Tensor,
        num_samples: int,
        generator: torch.Generator | None,
        x_T: Tensor | None,
        num_steps: int,
        where: str,
    ) -> Tensor:
        cond = self._repeated_cond(obs, num_samples, where)
        eps_fn = self._eps_fn(cond)
        if x_T is None:
            x_T = self._noise(cond.shape[0], generator)
        else:
            shape = (obs.shape[0], num_samples, self.horizon, self.action_dim)
            if tuple(x_T.shape) != shape:
                raise ValueError(f"{where}: x_T has shape {tuple(x_T.shape)}, expected {shape}")
            x_T = x_T.reshape(-1, self.horizon, self.action_dim).to(self.device)
        common = dict(num_steps=num_steps, spacing=self.spacing, clip_x0=self._clip_x0)
        noise = dict(min_std=self.min_std, generator=generator, temperature=self.temperature)
        if self.sampler == "ddim":
            x = ddim_sample(eps_fn, self.sde, x_T, eta=self.eta, **noise, **common)
        elif self.sampler == "euler_maruyama":
            x = euler_maruyama_sample(eps_fn, self.sde, x_T, **noise, **common)
        else:
            x = dpm_solver_pp_2m_sample(eps_fn, self.sde, x_T, **common)
        actions = self.normalizer.unnormalize_action(x)
        return actions.view(obs.shape[0], num_samples, self.horizon, self.action_dim)

    def predict_action(self, obs: Tensor) -> Tensor:
        """Raw obs [B, T_o, obs_dim] -> one raw action chunk each, [B, H, action_dim]."""
        return self.sample(obs, num_samples=1)[:, 0]

    # --- chains and step log-probabilities (DPPO / SODP) --------------------------------------
    def _times(self) -> Tensor:
        return time_grid(self.sde, self.num_steps, self.spacing)

    def _step_coefficients(self, t: Tensor, s: Tensor) -> StepCoefficients:
        if self.sampler == "ddim":
            coef = ddim_coefficients(self.sde, t, s, eta=self.eta, min_std=self.min_std)
        elif self.sampler == "euler_maruyama":
            coef = euler_maruyama_coefficients(self.sde, t, s, min_std=self.min_std)
        else:
            raise ValueError(
                "DiffusionPolicy: step log-probabilities need a single-step Gaussian sampler "
                "('ddim' or 'euler_maruyama'); 'dpm_solver_pp_2m' is a deterministic multistep "
                "ODE solver"
            )
        coef = scale_noise(coef, self.temperature)
        if float(coef.std.min()) <= 0.0:
            raise ValueError(
                f"DiffusionPolicy: sampler {self.sampler!r} with eta={self.eta}, "
                f"temperature={self.temperature} has a deterministic step (std 0), so the step "
                "log-probability is undefined; set eta > 0 and temperature > 0, or min_std > 0"
            )
        return coef

    @torch.no_grad()
    def sample_chain(
        self, obs: Tensor, num_samples: int = 1, generator: torch.Generator | None = None
    ) -> ChainResult:
        """Sample like ``sample`` and record every x_k, step mean, std and log-probability."""
        cond = self._repeated_cond(obs, num_samples, "sample_chain")
        times = self._times()
        coefs = self._step_coefficients(times[:-1], times[1:])
        x_T = self._noise(cond.shape[0], generator)
        x, chain = run_gaussian_chain(
            self._eps_fn(cond), x_T, times, coefs, self._clip_x0, generator, record=True
        )
        k = self.num_steps
        log_probs = torch.stack(
            [gaussian_log_prob(chain.xs[i + 1], chain.means[i], chain.stds[i]) for i in range(k)],
            dim=1,
        )
        if self._clip_x0 is not None:
            x = x.clamp(-self._clip_x0, self._clip_x0)
        b, n = obs.shape[0], num_samples
        chunk = (self.horizon, self.action_dim)
        return ChainResult(
            xs=chain.xs.transpose(0, 1).reshape(b, n, k + 1, *chunk),
            means=chain.means.transpose(0, 1).reshape(b, n, k, *chunk),
            stds=chain.stds,
            log_probs=log_probs.reshape(b, n, k),
            times=times,
            actions=self.normalizer.unnormalize_action(x).view(b, n, *chunk),
        )

    def step_mean_std(self, obs: Tensor, x_k: Tensor, k: int | Tensor) -> tuple[Tensor, Tensor]:
        """Mean [N, H, action_dim] and std (broadcastable) of step k under the current network.

        obs: raw [N, T_o, obs_dim]; x_k: normalised [N, H, action_dim]; k: an int or a [N]
        tensor of step indices in [0, num_steps). Differentiable in the network parameters.
        """
        self._check_obs(obs, "step_log_prob")
        self._check_chunk(x_k, obs.shape[0], "x_k", "step_log_prob")
        times = self._times()
        k_t = torch.as_tensor(k, dtype=torch.long)
        if k_t.dim() not in (0, 1) or (k_t.dim() == 1 and k_t.shape[0] != obs.shape[0]):
            raise ValueError(f"step_log_prob: k must be an int or a [N={obs.shape[0]}] tensor")
        if (k_t < 0).any() or (k_t >= self.num_steps).any():
            raise ValueError(f"step_log_prob: k must lie in [0, {self.num_steps}), got {k}")
        k_t = k_t.cpu()
        t, s = times[k_t], times[k_t + 1]
        coef = self._step_coefficients(t, s)
        cond = self._cond(obs)
        x_k = x_k.to(self.device)
        t_vec = t.to(dtype=x_k.dtype, device=self.device).expand(x_k.shape[0])
        eps = self.net(x_k, t_vec, cond)

        def col(v: Tensor) -> Tensor:
            v = v.to(dtype=x_k.dtype, device=self.device)
            return v if v.dim() == 0 else v.view(-1, 1, 1)

        mean = gaussian_step_mean(
            x_k, eps, col(coef.c_x), col(coef.c_eps), col(coef.alpha_t), col(coef.sigma_t),
            clip_x0=self._clip_x0,
        )  # fmt: skip
        return mean, col(coef.std)

    def step_log_prob(self, obs: Tensor, x_k: Tensor, x_next: Tensor, k: int | Tensor) -> Tensor:
        """log p_theta(x_next | x_k, obs) of denoising step k, summed over the chunk: [N].

        Recomputes the Gaussian step of ``sample_chain`` under the current network, for
        PPO-style ratios exp(log p_new - log p_old). Shapes as in ``step_mean_std``.
        """
        mean, std = self.step_mean_std(obs, x_k, k)
        self._check_chunk(x_next, obs.shape[0], "x_next", "step_log_prob")
        return gaussian_log_prob(x_next.to(self.device), mean, std)
