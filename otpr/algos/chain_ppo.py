"""PPO through a diffusion policy's denoising chain: the parts DPPO and SODP share.

Both treat the K denoising steps of one env decision as an inner MDP whose actions are the
steps x_k -> x_{k+1}, each with a Gaussian log-probability under the current network
(``DiffusionPolicy.step_mean_std``), and improve it with PPO's clipped surrogate per step::

    decision:   x_0 (noise) -> x_1 -> ... -> x_K = chunk -> env executes T_a steps -> reward
    step k:     ratio r_k = p_theta(x_{k+1} | x_k, s) / p_old(x_{k+1} | x_k, s)
                loss_k = max(-A_k r_k, -A_k clip(r_k, 1 - c_k, 1 + c_k)) + regulariser

They differ in the advantage A_k (DPPO: GAE over decisions with a learned V(s); SODP: the
executed chunk's own return, no critic) and in the regulariser (DPPO: none or the
behaviour-cloning term; SODP: behaviour cloning on its target buffer, a KL to the pretrained
network, or the pretraining loss), which the algorithms pass in.

Here: :func:`record_chain` (a collection draw with its chain and step log-probabilities),
:func:`step_log_prob` and :func:`clip_schedule` as DPPO computes them, the clipped surrogate
:func:`compute_policy_loss`, the behaviour-cloning term :func:`bc_regulariser` (SODP eq. 14-15,
DPPO's ``algo.bc_coef``), and the minibatch loop :func:`update_chain_policy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from policies.diffusion import DiffusionPolicy

LOG_PROB_RANGE = (-5.0, 2.0)  # DPPO's clamp of per-element log-densities


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


@torch.no_grad()
def record_chain(
    policy: DiffusionPolicy, obs: Tensor, generator: torch.Generator, act_steps: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One collection draw per state: (raw chunks [N, H, A], the chain xs [N, K + 1, H, A]
    (normalised), the step log-probabilities [N, K] of :func:`step_log_prob`)."""
    chain = policy.sample_chain(obs, 1, generator=generator)
    xs = chain.xs[:, 0]
    log_prob = torch.stack(
        [
            step_log_prob(xs[:, k + 1], chain.means[:, 0, k], chain.stds[k], act_steps)
            for k in range(xs.shape[1] - 1)
        ],
        dim=1,
    )
    return chain.actions[:, 0], xs, log_prob


@contextmanager
def std_floor(policy: DiffusionPolicy, min_std: float) -> Iterator[DiffusionPolicy]:
    """Within the block, every denoising step's std is floored at exactly ``min_std`` (0: no
    floor); the policy's own ``min_std`` is restored afterwards, also on an error."""
    saved = policy.min_std
    policy.min_std = float(min_std)
    try:
        yield policy
    finally:
        policy.min_std = saved


def floored_std(policy: DiffusionPolicy, min_std: float) -> AbstractContextManager[DiffusionPolicy]:
    """Within the block, every denoising step's std is floored at ``min_std`` (or the policy's
    own ``min_std`` where larger): for drawing and scoring chains whose step log-probabilities
    a PPO update needs, from a policy that otherwise samples without a floor."""
    return std_floor(policy, max(policy.min_std, float(min_std)))


# (b [M] decision rows, k [M] steps, the step's mean [M, H, A] and std under the current
# network) -> (the weighted term added to the loss, its metrics)
Regulariser = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, dict[str, float]]]


def bc_regulariser(
    policy: DiffusionPolicy, draw: Callable[[], tuple[Tensor, Tensor]], coef: float
) -> Regulariser:
    """The behaviour-cloning term: ``coef`` times the unweighted DSM loss of the policy on
    raw (obs, chunk) pairs from ``draw()``, a fresh batch per policy step (SODP eq. 14-15, with
    the pairs from its target buffer; DPPO's ``algo.bc_coef`` with demo pairs). Logs
    ``ppo/bc_loss`` (the DSM loss before the weight)."""

    def term(b: Tensor, k: Tensor, mean: Tensor, std: Tensor) -> tuple[Tensor, dict[str, float]]:
        obs, chunks = draw()
        loss, _ = policy.compute_dsm_loss(obs, chunks)
        return coef * loss, {"ppo/bc_loss": float(loss.detach())}

    return term


def sum_of(*terms: Regulariser | None) -> Regulariser | None:
    """The regulariser adding up ``terms`` (and their metrics); None where none is given."""
    active = [t for t in terms if t is not None]
    if len(active) <= 1:
        return active[0] if active else None

    def term(b: Tensor, k: Tensor, mean: Tensor, std: Tensor) -> tuple[Tensor, dict[str, float]]:
        total, info = None, {}
        for t in active:
            x, i = t(b, k, mean, std)
            total = x if total is None else total + x
            info.update(i)
        return total, info

    return term


@dataclass
class ChainBatch:
    """A rollout's chains as PPO updates on them: B decisions of K steps."""

    obs: Tensor
    """Raw observations [B, T_o, obs_dim]."""
    xs: Tensor
    """The chains, normalised [B, K + 1, H, action_dim] (xs[:, 0] the noise)."""
    old_log_prob: Tensor
    """Step log-probabilities at collection [B, K] (:func:`step_log_prob`)."""
    advantage: Tensor
    """Advantage of each decision [B], shared by its K steps (discounted per step)."""


class ChainPPOSettings(Protocol):
    """The config keys :func:`update_chain_policy` reads (DPPOConfig and SODPConfig have them)."""

    epochs: int
    minibatch_size: int
    max_grad_norm: float
    target_kl: float


def update_chain_policy(
    policy: DiffusionPolicy,
    optimizer: torch.optim.Optimizer,
    batch: ChainBatch,
    clips: Tensor,
    step_discount: Tensor,
    act_steps: int,
    settings: ChainPPOSettings,
    generator: torch.Generator,
    regulariser: Regulariser | None = None,
    before_step: Callable[[Tensor], dict[str, float]] | None = None,
    after_step: Callable[[], None] | None = None,
    train_actor: bool = True,
) -> dict[str, float]:
    """``settings.epochs`` passes of minibatch steps over the (decision, denoising step) pairs.

    Each step: ``before_step(b)`` (e.g. DPPO's V update on the minibatch's decisions), then,
    when ``train_actor``, the clipped surrogate of step k with advantage A_b gamma_d^(K-1-k)
    (``step_discount[k]``) and clip ``clips[k]``, plus ``regulariser``'s term, one optimizer
    step (gradient norm clipped at ``settings.max_grad_norm`` when > 0) and ``after_step()``.
    The epochs stop early once an epoch's mean approximate KL exceeds ``settings.target_kl``
    (> 0). The minibatch order draws from ``generator``. Returns the metrics averaged over the
    steps, with ``ppo/early_stop`` and ``ppo/samples``.
    """
    obs, xs, old, adv = batch.obs, batch.xs, batch.old_log_prob, batch.advantage
    num_k = old.shape[1]
    total = obs.shape[0] * num_k
    size = min(settings.minibatch_size, total)
    metrics: dict[str, list[float]] = {}

    def log(info: dict[str, float]) -> None:
        for key, v in info.items():
            metrics.setdefault(key, []).append(v)

    stopped = 0.0
    for _ in range(settings.epochs):
        order = torch.randperm(total, generator=generator)
        epoch_kl = []
        for start in range(0, total - size + 1, size):
            idx = order[start : start + size].to(adv.device)
            b, k = idx // num_k, idx % num_k
            if before_step is not None:
                log(before_step(b))
            if not train_actor:
                continue
            mean, std = policy.step_mean_std(obs[b], xs[b, k], k)
            new = step_log_prob(xs[b, k + 1], mean, std, act_steps)
            loss, info = compute_policy_loss(new, old[b, k], adv[b] * step_discount[k], clips[k])
            info["ppo/policy_loss"] = float(loss.detach())
            if regulariser is not None:
                term, reg_info = regulariser(b, k, mean, std)
                loss = loss + term
                info.update(reg_info)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.max_grad_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), settings.max_grad_norm)
                info["ppo/grad_norm"] = float(norm)
            optimizer.step()
            if after_step is not None:
                after_step()
            log(info)
            epoch_kl.append(info["ppo/approx_kl"])
        if settings.target_kl > 0 and epoch_kl and float(np.mean(epoch_kl)) > settings.target_kl:
            stopped = 1.0
            break
    out = {k: float(np.mean(v)) for k, v in metrics.items()}
    out.update({"ppo/early_stop": stopped, "ppo/samples": float(total)})
    return out
