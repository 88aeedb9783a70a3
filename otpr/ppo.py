"""PPO through the denoising chain (DPPO, Ren et al. 2024): ``algo=dppo``.

Two nested MDPs. Each env decision draws a chunk by K Gaussian denoising steps; every step
x_k -> x_{k+1} is an action of the inner MDP, with log-probability under the current network
(``DiffusionPolicy.step_mean_std``). The env decision earns the chunk's discounted reward. One
advantage per decision (GAE over decisions, V(s) from ``critics.StateValue``) is shared by its K
steps, discounted by ``ppo_denoising_gamma`` per step before the last:

    decision t:   x_0 (noise) -> x_1 -> ... -> x_K = chunk -> env executes T_a steps -> r_t
    step k gets   A_t * gamma_d^(K - 1 - k)   and ratio clip c_k: base at k = 0 -> ppo_clip at K - 1

As DPPO computes them (``model/diffusion/diffusion_ppo.py``): a step's log-probability is the
MEAN over the executed part of the chunk (its first T_a rows, all action dims) of the
per-element Gaussian log-density clamped to [-5, 2], so ratios stay near 1 and the clip ranges
are per element; advantages are standardised over the rollout; the loss is the clipped surrogate
max(-A r, -A clip(r, 1 - c_k, 1 + c_k)), plus, with ``algo.ppo_bc_coef`` > 0, that weight
times the DSM loss on a fresh batch of demo (and successful-episode) pairs: SODP's
behaviour-cloning regulariser (eq. 14-15), off in plain DPPO. Every step's std is floored by
``policy.min_std``, in collection and in the log-probabilities alike. Evaluation samples
without noise (DDIM eta 0, no floor) under ``algo.eval_deterministic``, on in ``algo=dppo`` as
DPPO evaluates. All K steps are fine-tuned (DPPO can freeze the earliest ones with a copy of
the base network; this does not).

The loop (``otpr.loop.Trainer``) steps the envs; this module records the chains, computes the
advantages and updates the policy and V. Truncation is not termination: a decision cut by the
time limit bootstraps from V of its final observation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from critics.value import StateValue
from otpr.config import Config
from policies.diffusion import DiffusionPolicy

LOG_PROB_RANGE = (-5.0, 2.0)  # DPPO's clamp of per-element log-densities


def gae(
    reward: Tensor,
    value: Tensor,
    next_value: Tensor,
    terminated: Tensor,
    done: Tensor,
    discount: Tensor,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates over a rollout of T decisions x N envs (all [T, N]).

    delta_t = r_t + discount_t (1 - terminated_t) V(s'_t) - V(s_t), with s'_t the decision's
    true next observation (the final one when the episode ended there);
    A_t = delta_t + discount_t lam (1 - done_t) A_{t+1}, and A after the last decision is 0.
    ``discount_t`` is gamma ** (env steps the decision took). Returns (advantages, returns =
    advantages + values).
    """
    shapes = {tuple(x.shape) for x in (reward, value, next_value, terminated, done, discount)}
    if len(shapes) != 1 or reward.dim() != 2:
        raise ValueError(f"gae: every input must be the same [T, N] shape, got {sorted(shapes)}")
    delta = reward + discount * (1.0 - terminated) * next_value - value
    adv = torch.zeros_like(reward)
    running = torch.zeros_like(reward[0])
    for t in reversed(range(reward.shape[0])):
        running = delta[t] + discount[t] * lam * (1.0 - done[t]) * running
        adv[t] = running
    return adv, adv + value


def clip_schedule(num_steps: int, final: float, base: float, rate: float) -> Tensor:
    """Ratio clip range per denoising step [K]: ``base`` at the first step, ``final`` at the
    last, exponential in between (DPPO: base + (final - base) (e^{rate u} - 1) / (e^rate - 1),
    u = k / (K - 1))."""
    if num_steps == 1:
        return torch.tensor([final])
    u = torch.arange(num_steps, dtype=torch.float64) / (num_steps - 1)
    clip = base + (final - base) * torch.expm1(rate * u) / math.expm1(rate)
    return clip.float()


def step_log_prob(x_next: Tensor, mean: Tensor, std: Tensor, act_steps: int) -> Tensor:
    """DPPO's per-step log-probability [N]: the per-element Gaussian log-density of x_next
    ([N, H, A]) clamped to [-5, 2] and averaged over the first ``act_steps`` rows."""
    std = torch.as_tensor(std, dtype=x_next.dtype, device=x_next.device)
    dens = -0.5 * ((x_next - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
    dens = dens.expand_as(x_next)[:, :act_steps].clamp(*LOG_PROB_RANGE)
    return dens.flatten(1).mean(1)


def compute_policy_loss(
    log_prob: Tensor, old_log_prob: Tensor, advantage: Tensor, clip: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate mean(max(-A r, -A clip(r, 1 - c, 1 + c))), r = exp(new - old);
    all inputs [B] (``clip`` per sample)."""
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()
    loss = torch.max(-advantage * ratio, -advantage * torch.clamp(ratio, 1 - clip, 1 + clip))
    with torch.no_grad():
        info = {
            "ppo/approx_kl": float(((ratio - 1) - log_ratio).mean()),
            "ppo/clip_frac": float(((ratio - 1).abs() > clip).float().mean()),
            "ppo/ratio": float(ratio.mean()),
        }
    return loss.mean(), info


class ChainPPO:
    """DPPO's rollout storage and update for one run (the loop owns envs and the policy).

    Args:
        cfg: the run's config (``algo.ppo_*``, ``task.act_steps``).
        state_fn: raw obs [B, T_o, D] -> the normalised flat state V sees.
        state_dim: size of that state.
    """

    def __init__(self, cfg: Config, state_fn: Callable[[Tensor], Tensor], state_dim: int) -> None:
        self.cfg = cfg
        self.state_fn = state_fn
        a = cfg.algo
        self.value = StateValue(state_dim, a.ppo_value_hidden, a.ppo_value_lr, cfg.device)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)  # minibatch order
        self._clear()

    def _clear(self) -> None:
        self._rows: dict[str, list[Tensor]] = {
            k: []
            for k in ("obs", "xs", "log_prob", "reward", "discount", "terminated", "done", "next")
        }

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"value": self.value}

    def optimizers(self) -> dict[str, Any]:
        return {"value": self.value.optimizer}

    # ------------------------------------------------------------------ collection
    @torch.no_grad()
    def act(
        self, policy: DiffusionPolicy, obs: np.ndarray, generator: torch.Generator
    ) -> np.ndarray:
        """Chunks [N, H, A] (raw) for raw obs [N, T_o, D]; records the chains."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.value_device)
        chain = policy.sample_chain(obs_t, 1, generator=generator)
        xs = chain.xs[:, 0]  # [N, K + 1, H, A]
        t_a = self.cfg.task.act_steps
        log_prob = torch.stack(
            [
                step_log_prob(xs[:, k + 1], chain.means[:, 0, k], chain.stds[k], t_a)
                for k in range(xs.shape[1] - 1)
            ],
            dim=1,
        )
        self._rows["obs"].append(obs_t)
        self._rows["xs"].append(xs)
        self._rows["log_prob"].append(log_prob)
        return chain.actions[:, 0].cpu().numpy()

    @property
    def value_device(self) -> torch.device:
        return next(self.value.parameters()).device

    def record(
        self,
        reward: np.ndarray,
        discount: np.ndarray,
        terminated: np.ndarray,
        done: np.ndarray,
        next_obs: np.ndarray,
    ) -> None:
        """The outcome of the last ``act``: per env member, the chunk's discounted reward, gamma
        ** (its env steps), terminated, done (terminated or truncated) and the true next obs."""
        dev = self.value_device
        for key, x in (
            ("reward", reward),
            ("discount", discount),
            ("terminated", terminated),
            ("done", done),
        ):
            self._rows[key].append(torch.as_tensor(np.asarray(x, np.float32), device=dev))
        self._rows["next"].append(torch.as_tensor(next_obs, dtype=torch.float32, device=dev))

    # ------------------------------------------------------------------ update
    def update(
        self,
        policy: DiffusionPolicy,
        optimizer: torch.optim.Optimizer,
        train_actor: bool,
        bc_batch: Callable[[], tuple[Tensor, Tensor]] | None = None,
        after_step: Callable[[], None] | None = None,
    ) -> dict[str, float]:
        """Advantages of the recorded rollout, then ``ppo_epochs`` passes of V and (when
        ``train_actor``) policy minibatch steps; clears the rollout. ``bc_batch`` draws the raw
        (obs, chunk) pairs of the behaviour-cloning term, needed when ``algo.ppo_bc_coef`` > 0;
        ``after_step`` runs after every policy step (the loop folds the weights into an EMA)."""
        a = self.cfg.algo
        if a.ppo_bc_coef > 0 and bc_batch is None:
            raise ValueError("ChainPPO.update: algo.ppo_bc_coef > 0 needs bc_batch")
        rows = {k: torch.stack(v) for k, v in self._rows.items()}  # [T, N, ...]
        self._clear()
        if not len(rows["obs"]):
            return {}
        t_len, n = rows["reward"].shape
        obs = rows["obs"].flatten(0, 1)
        states = self.state_fn(obs)
        with torch.no_grad():
            value = self.value(states).view(t_len, n)
            next_value = self.value(self.state_fn(rows["next"].flatten(0, 1))).view(t_len, n)
        adv, ret = gae(
            rows["reward"],
            value,
            next_value,
            rows["terminated"],
            rows["done"],
            rows["discount"],
            a.ppo_gae_lambda,
        )
        adv, ret = adv.flatten(), ret.flatten()
        raw_adv_std = float(adv.std()) if adv.numel() > 1 else 0.0
        if a.ppo_norm_advantages and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        xs = rows["xs"].flatten(0, 1)  # [B, K + 1, H, A]
        old = rows["log_prob"].flatten(0, 1)  # [B, K]
        num_k = old.shape[1]
        clips = clip_schedule(num_k, a.ppo_clip, a.ppo_clip_base, a.ppo_clip_rate).to(adv)
        step_discount = a.ppo_denoising_gamma ** torch.arange(num_k - 1, -1, -1).to(adv)
        total = obs.shape[0] * num_k
        size = min(a.ppo_minibatch_size, total)
        metrics: dict[str, list[float]] = {}

        def log(info: dict[str, float]) -> None:
            for key, v in info.items():
                metrics.setdefault(key, []).append(v)

        stopped = 0.0
        for _ in range(a.ppo_epochs):
            order = torch.randperm(total, generator=self.generator)
            epoch_kl = []
            for start in range(0, total - size + 1, size):
                idx = order[start : start + size].to(adv.device)
                b, k = idx // num_k, idx % num_k
                log(self.value.update(states[b], ret[b]))
                if not train_actor:
                    continue
                mean, std = policy.step_mean_std(obs[b], xs[b, k], k)
                new = step_log_prob(xs[b, k + 1], mean, std, self.cfg.task.act_steps)
                loss, info = compute_policy_loss(
                    new, old[b, k], adv[b] * step_discount[k], clips[k]
                )
                info["ppo/policy_loss"] = float(loss.detach())
                if a.ppo_bc_coef > 0:
                    bc_obs, bc_act = bc_batch()
                    bc_loss, _ = policy.compute_dsm_loss(bc_obs, bc_act)
                    loss = loss + a.ppo_bc_coef * bc_loss
                    info["ppo/bc_loss"] = float(bc_loss.detach())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if a.ppo_max_grad_norm > 0:
                    norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), a.ppo_max_grad_norm)
                    info["ppo/grad_norm"] = float(norm)
                optimizer.step()
                if after_step is not None:
                    after_step()
                log(info)
                epoch_kl.append(info["ppo/approx_kl"])
            if a.ppo_target_kl > 0 and epoch_kl and float(np.mean(epoch_kl)) > a.ppo_target_kl:
                stopped = 1.0
                break
        out = {k: float(np.mean(v)) for k, v in metrics.items()}
        out.update(
            {
                "ppo/advantage_std": raw_adv_std,
                "ppo/return_mean": float(ret.mean()),
                "ppo/early_stop": stopped,
                "ppo/samples": float(total),
            }
        )
        return out
