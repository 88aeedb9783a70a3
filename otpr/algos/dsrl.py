"""DSRL (Wagenmaker et al. 2025), RL in a frozen diffusion policy's noise space: ``algo=dsrl``.

The pretrained diffusion policy stays FROZEN and is used as a deterministic map from its initial
noise: DDIM with eta 0 (or DPM-Solver) from a given x_T, ``chunk = pi_dp(s, w)``
(``DiffusionPolicy.sample(obs, x_T=w)`` under ``deterministic()``). A SAC agent acts in that
noise space: its action is x_T itself, the whole chunk's noise ``[H, action_dim]`` flattened,
bounded as w = b tanh(u), u ~ N(m(s), sigma(s)^2) (``policies.TanhGaussianActor``, b =
``algo.noise_bound``); the env executes the first T_a rows of the decoded chunk::

    s_t --SAC actor--> w_t in (-b, b)^(H x A) --pi_dp(s_t, w_t), DDIM eta 0--> chunk [H, A]
        --env executes rows 0 .. T_a-1--> r_t (discounted over the T_a steps), s_{t+1}

Two variants (``algo.variant``):

``sac`` (DSRL-SAC): the env seen through the frozen policy is an MDP over noise actions. Twin
Q(s, w) with target copies learns by TD on the algorithm's own record of (s, w, r, discount, s',
terminated): the noise each collection ``act`` drew, paired with the outcome the loop passes to
``observe``. With w' ~ pi(.|s') and ``discount`` = gamma^(env steps of the decision)::

    y = r + discount (1 - terminated) min_i Q'_i(s', w')          (algo.backup_entropy=false)
    y = r + discount (1 - terminated) (min_i Q'_i(s', w') - alpha log pi(w'|s'))   (true)
    critic: 1/2 sum_i mean (Q_i(s, w) - y)^2
    actor:  mean(alpha log pi(w|s) - min_i Q_i(s, w)),   w ~ pi(.|s) reparameterised
    alpha:  -mean(log alpha (log pi(w|s) + target_entropy))      (SAC's automatic temperature)

``na`` (DSRL-NA, noise-aliased): Q^A(s, a) on the executed part of real chunks learns by the
same TD on the loop's replay (the demo transitions too, whose noise is unknown), its next action
decoded from the actor's noise, a' = pi_dp(s', w'). A noise-space Q^W is distilled from it on
noises w ~ N(0, I) clipped to +-b, so noises that decode to the same chunk share one value::

    distill: 1/2 sum_i mean (Q^W_i(s, w) - Q^A_i(s, pi_dp(s, w)))^2

and the SAC actor maximises min_i Q^W_i(s, w) with the entropy term above.

Warm-up (``algo.warmup_iterations``): the critics (and Q^W) learn, the actor and alpha wait;
collection meanwhile draws from the untrained actor, w = b tanh(u) with u ~ N(~0, ~1): near the
base policy's own N(0, I) noise (DSRL's initial rollouts draw N(0, I) clipped to +-b).

Evaluation is deterministic: the actor's mean noise b tanh(m(s)), decoded; the evaluation
generator is not drawn from. At the start m(s) ~ 0, so the first evaluation is the base
policy's chunk from x_T = 0.

Representations: the actor and the critics see the normalised flat state (``Algorithm.state``);
Q(s, w) and Q^W see w / b in (-1, 1); Q^A sees the normalised executed part of the chunk
(``Algorithm.executed``). Truncation is not termination: a decision cut by the time limit
bootstraps from its true final observation (``Step.terminated`` is the learners' terminal).

Checkpoints: ``policy`` (the frozen base, as pretrained), ``noise_actor``, ``noise_critic``,
``action_critic`` (na) and ``temperature`` as safetensors; their optimizers and, with ``sac``,
the noise record in ``training_state``. The fine-tuned behaviour is ``policy`` and
``noise_actor`` together: ``load_policy`` alone gives the base policy; ``otpr-eval`` loads every
acting network of the checkpoint, the noise actor included.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from critics.twin_q import TwinQ
from envs.base import TaskSpec
from otpr.algos.base import Algorithm, Step, register_algo
from otpr.buffer import ReplayBuffer, TrainingData
from otpr.config import AlgoConfig, Config, _check, _one_of
from policies.tanh_gaussian import TanhGaussianActor

VARIANTS = ("sac", "na")


# ---------------------------------------------------------------------- the losses (pure)
def compute_critic_loss(
    q: Tensor,
    reward: Tensor,
    discount: Tensor,
    terminated: Tensor,
    next_q: Tensor,
    next_log_prob: Tensor,
    alpha: float,
) -> tuple[Tensor, dict[str, float]]:
    """SAC's TD loss of twin heads ``q`` [2, B] towards
    y = r + discount (1 - terminated) (min_i next_q_i - alpha next_log_prob), all others [B]
    (``next_q`` [2, B] of the target heads at (s', w'), w' ~ pi(.|s')); the loss is
    1/2 sum_i mean_B (q_i - y)^2 and y carries no gradient."""
    with torch.no_grad():
        soft_next = next_q.min(dim=0).values - alpha * next_log_prob
        target = reward + discount * (1.0 - terminated) * soft_next
    loss = 0.5 * (q - target[None]).square().mean(dim=1).sum()
    return loss, {
        "critic/q_loss": float(loss.detach()),
        "critic/q_mean": float(q.detach().min(dim=0).values.mean()),
        "critic/target_mean": float(target.mean()),
    }


def compute_actor_loss(
    q: Tensor, log_prob: Tensor, alpha: float
) -> tuple[Tensor, dict[str, float]]:
    """SAC's actor loss mean(alpha log pi(w|s) - min_i q_i), ``q`` [2, B] at the actor's own
    reparameterised samples w, ``log_prob`` [B] their log-densities."""
    loss = (alpha * log_prob - q.min(dim=0).values).mean()
    return loss, {
        "actor/loss": float(loss.detach()),
        "actor/entropy": float(-log_prob.detach().mean()),
    }


def compute_temperature_loss(
    log_alpha: Tensor, log_prob: Tensor, target_entropy: float
) -> tuple[Tensor, dict[str, float]]:
    """SAC's automatic temperature: -mean(log alpha (log pi + target_entropy)), log pi
    detached, so alpha grows while the policy's entropy -log pi is below the target."""
    loss = -(log_alpha * (log_prob.detach() + target_entropy)).mean()
    return loss, {"actor/alpha": float(log_alpha.detach().exp())}


def compute_distill_loss(q_noise: Tensor, q_action: Tensor) -> tuple[Tensor, dict[str, float]]:
    """DSRL-NA's distillation: head i of Q^W(s, w) regresses on head i of Q^A(s, pi_dp(s, w)),
    1/2 sum_i mean_B (q_noise_i - q_action_i)^2 (both [2, B]; ``q_action`` detached)."""
    loss = 0.5 * (q_noise - q_action.detach()).square().mean(dim=1).sum()
    return loss, {
        "distill/loss": float(loss.detach()),
        "distill/q_noise_mean": float(q_noise.detach().min(dim=0).values.mean()),
    }


# ---------------------------------------------------------------------- parts
class Temperature(nn.Module):
    """SAC's entropy temperature, learned as log alpha."""

    def __init__(self, init_alpha: float, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha), device=device))

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())


class NoiseReplay:
    """DSRL-SAC's record of (obs, noise, reward, discount, next_obs, terminated): a
    ``ReplayBuffer`` whose ``actions`` are the noises; its state is tensors and plain
    numbers (a checkpoint's ``training_state`` takes nothing else)."""

    def __init__(
        self, capacity: int, obs_shape: tuple[int, ...], noise_shape: tuple[int, ...]
    ) -> None:
        self.buffer = ReplayBuffer(capacity, obs_shape, noise_shape)

    def __len__(self) -> int:
        return len(self.buffer)

    def add(self, **batch: np.ndarray) -> None:
        self.buffer.add(**batch)

    def sample(
        self, size: int, rng: np.random.Generator, device: torch.device | str
    ) -> dict[str, Tensor]:
        return self.buffer.sample(size, rng, device)

    def state_dict(self) -> dict[str, Any]:
        state = self.buffer.state_dict()
        state["arrays"] = {k: torch.from_numpy(v) for k, v in state["arrays"].items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        arrays = {k: np.asarray(v) for k, v in state["arrays"].items()}
        self.buffer.load_state_dict({**state, "arrays": arrays})


# ---------------------------------------------------------------------- config
@dataclass
class DSRLConfig(AlgoConfig):
    """DSRL: SAC over the frozen diffusion policy's initial noise. Defaults follow DSRL's
    configs (noise bound 1.5, target entropy 0, Polyak 0.005, learning rates 3e-4, alpha from
    1) with smaller networks and fewer gradient steps per sample."""

    name: str = "dsrl"
    """dsrl."""
    variant: str = "sac"
    """sac: Q on (state, noise) by TD on the noises drawn | na: noise-aliased, Q on (state,
    decoded chunk) by TD on the replay, distilled into Q on (state, noise)."""
    noise_bound: float = 1.5
    """b: the actor's noise lies in (-b, b) per element (w = b tanh(u))."""
    eval_deterministic: bool = True
    """Must be true: the decoder is DDIM with eta 0 (or DPM-Solver) in collection and
    evaluation alike, and evaluation acts with the actor's mean noise."""
    actor_lr: float = 3e-4
    """Learning rate of the SAC noise actor (the diffusion policy is frozen)."""
    actor_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Noise actor MLP widths."""
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Q MLP widths (each twin head)."""
    critic_lr: float = 3e-4
    """Learning rate of the critics (Q, Q^A and Q^W)."""
    alpha_lr: float = 3e-4
    """Learning rate of log alpha."""
    init_alpha: float = 1.0
    """Starting entropy temperature."""
    backup_entropy: bool = False
    """Whether the TD target carries SAC's entropy bonus -alpha log pi(w'|s'). Off by default:
    where a sparse reward ends the episode on success (Meta-World and robosuite here), the bonus
    (~0.7 nats per noise element at the start, ~20 per chunk) makes every continuing decision
    worth tens while a success is worth its reward 1, so the soft critic learns that succeeding
    costs and the actor steers away from it. DSRL's reference keeps the bonus but never ends an
    episode early (reward r - 1, a fixed horizon); the actor and alpha keep the entropy term
    either way."""
    target_entropy: float = 0.0
    """Entropy target of the squashed noise action w / b in (-1, 1)^(H A) (DSRL: 0; SAC's
    usual choice would be -H A)."""
    polyak: float = 0.005
    """Target-Q Polyak rate."""
    batch_size: int = 256
    """Transitions per gradient step."""
    updates_per_iter: int = 320
    """Critic (and, after the warm-up, actor and alpha) gradient steps per iteration: one per
    collected transition at 8 envs x 40 decisions (DSRL's reference takes 5)."""
    distill_updates_per_iter: int = 160
    """variant=na: Q^W distillation steps per iteration (DSRL: half the critic's)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of(self.variant, "algo.variant", VARIANTS)
        _check(
            self.eval_deterministic,
            "algo.eval_deterministic",
            "must be true with algo=dsrl (the frozen policy decodes the noise with DDIM eta 0)",
        )
        for key in ("noise_bound", "critic_lr", "alpha_lr", "init_alpha"):
            _check(getattr(self, key) > 0, f"algo.{key}", "must be > 0")
        _check(0.0 < self.polyak <= 1.0, "algo.polyak", "must be in (0, 1]")
        _check(self.batch_size >= 1, "algo.batch_size", "must be >= 1")
        for key in ("updates_per_iter", "distill_updates_per_iter"):
            _check(getattr(self, key) >= 0, f"algo.{key}", "must be >= 0")
        for key in ("actor_hidden", "critic_hidden"):
            _check(all(h > 0 for h in getattr(self, key)), f"algo.{key}", "widths must be > 0")

    def check(self, cfg: Config) -> None:
        _one_of(
            cfg.policy.sampler,
            "policy.sampler (algo=dsrl: the chunk must be a function of the noise)",
            ("ddim", "dpm_solver_pp_2m"),
        )

    def shrink_for_debug(self) -> None:
        self.updates_per_iter = min(self.updates_per_iter, 5)
        self.distill_updates_per_iter = min(self.distill_updates_per_iter, 5)
        self.batch_size = min(self.batch_size, 64)

    def describe(self, cfg: Config) -> dict[str, Any]:
        return {"variant": self.variant}


# ---------------------------------------------------------------------- the algorithm
@register_algo("dsrl", DSRLConfig)
class DSRL(Algorithm):
    """The frozen diffusion policy as a noise-to-chunk decoder, and SAC in its noise space."""

    def __init__(self, cfg: Config, spec: TaskSpec) -> None:
        super().__init__(cfg, spec)
        a, t = cfg.algo, cfg.task
        self.variant = a.variant
        self.bound = float(a.noise_bound)
        self.noise_shape = (t.horizon, spec.action_dim)
        noise_dim = t.horizon * spec.action_dim
        self.actor = TanhGaussianActor(
            self.state_dim, noise_dim, a.actor_hidden, self.bound, cfg.device
        )
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=a.actor_lr)
        self.temperature = Temperature(a.init_alpha, cfg.device)
        self.alpha_opt = torch.optim.Adam(self.temperature.parameters(), lr=a.alpha_lr)
        na, dev = self.variant == "na", cfg.device
        # sac: Q(s, w) learned by TD (with targets); na: Q^W(s, w) distilled (none needed)
        self.noise_critic = TwinQ(
            self.state_dim, noise_dim, a.critic_hidden, a.critic_lr, a.polyak, not na, dev
        )
        self.action_critic = (
            TwinQ(self.state_dim, self.exec_dim, a.critic_hidden, a.critic_lr, a.polyak, True, dev)
            if na
            else None
        )
        self.noise_replay = (
            None
            if na
            else NoiseReplay(a.buffer_capacity, (t.obs_history, spec.obs_dim), self.noise_shape)
        )
        # the learner's own draws (next noises, actor samples, distillation noises)
        self.sac_generator = torch.Generator().manual_seed(cfg.seed + 2)
        self._pending: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ the frozen decoder
    @torch.no_grad()
    def decode(self, obs: Tensor, noise: Tensor) -> Tensor:
        """The frozen policy's chunks [B, H, A] (raw units) for raw obs [B, T_o, D] from the
        initial noises [B, H * A] (or [B, H, A]): DDIM with eta 0, a function of (obs, noise)."""
        policy = self.acting_policy
        x_t = noise.reshape(noise.shape[0], 1, *self.noise_shape).to(self.device)
        with policy.deterministic():
            return policy.sample(obs.to(self.device), 1, x_T=x_t)[:, 0]

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(
        self, obs: np.ndarray, explore: bool, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Collection: a noise sample of the actor (from the algorithm's generator), recorded
        for ``observe``; evaluation: the actor's mean noise (deterministic, ``generator``
        unused). Either way the frozen policy decodes it into the chunk."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        states = self.state(obs_t)
        if explore:
            noise, _ = self.actor(states, generator=self.generator)
            if self.noise_replay is not None:
                self._pending = (np.array(obs, np.float32), noise.cpu().numpy())
        else:
            noise = self.actor.mean_action(states)
        return self.decode(obs_t, noise).cpu().numpy(), {}

    def observe(self, step: Step) -> None:
        """variant=sac: the outcome of the last collection ``act`` joins the noise record as
        (obs, that act's noise, reward, discount, next_obs, terminated)."""
        if self.noise_replay is None:
            return
        pending, self._pending = self._pending, None
        if pending is None or not np.array_equal(pending[0], step.obs):
            raise RuntimeError(
                "DSRL.observe: the step is not the outcome of the last collection act() (each "
                "act(explore=True) is followed by the observe of its own step)"
            )
        n = len(step.obs)
        self.noise_replay.add(
            obs=step.obs,
            actions=pending[1].reshape(n, *self.noise_shape),
            reward=np.asarray(step.reward, np.float32),
            discount=np.asarray(step.discount, np.float32),
            next_obs=step.next_obs,
            terminated=np.asarray(step.terminated, np.float32),
        )

    def eval_settings(self) -> dict[str, Any]:
        return {"eval_mode": "noise_mean", "eval_num_samples": 1, "noise_bound": self.bound}

    # ------------------------------------------------------------------ updates
    def _td_step(
        self,
        critic: TwinQ,
        batch: dict[str, Tensor],
        action: Tensor,
        next_action_of: Callable[[Tensor, Tensor], Tensor],
    ) -> dict[str, float]:
        """One TD step of ``critic`` on ``action`` [B, d] at the batch's states; the next
        action is ``next_action_of(raw next_obs, noise)`` of the actor's noise at s'."""
        states, next_states = self.state(batch["obs"]), self.state(batch["next_obs"])
        with torch.no_grad():
            next_noise, next_log_prob = self.actor(next_states, generator=self.sac_generator)
            next_action = next_action_of(batch["next_obs"], next_noise)
            next_q = critic.target(next_states, next_action)
        alpha = self.temperature.alpha if self.cfg.algo.backup_entropy else 0.0
        loss, info = compute_critic_loss(
            critic(states, action),
            batch["reward"],
            batch["discount"],
            batch["terminated"],
            next_q,
            next_log_prob,
            alpha,
        )
        critic.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        critic.optimizer.step()
        critic.update_targets()
        return info

    def update_critic(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """variant=sac: one TD step of Q(s, w) on a batch of the noise record."""
        noise = batch["actions"].flatten(1)
        return self._td_step(
            self.noise_critic, batch, noise / self.bound, lambda _obs, w: w / self.bound
        )

    def update_action_critic(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """variant=na: one TD step of Q^A(s, a) on a batch of the loop's replay (raw chunks);
        the next action is the decoded chunk of the actor's noise at s'."""
        return self._td_step(
            self.action_critic,
            batch,
            self.executed(batch["actions"]),
            lambda obs, w: self.executed(self.decode(obs, w)),
        )

    def update_actor(self, obs: Tensor) -> dict[str, float]:
        """One SAC actor step on min_i Q_i(s, w) (Q^W for na) and one temperature step, at
        raw obs [B, T_o, D]."""
        states = self.state(obs)
        noise, log_prob = self.actor(states, generator=self.sac_generator)
        q = self.noise_critic(states, noise / self.bound)
        loss, info = compute_actor_loss(q, log_prob, self.temperature.alpha)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        t_loss, t_info = compute_temperature_loss(
            self.temperature.log_alpha, log_prob, self.cfg.algo.target_entropy
        )
        self.alpha_opt.zero_grad(set_to_none=True)
        t_loss.backward()
        self.alpha_opt.step()
        info.update(t_info)
        info["actor/noise_abs_mean"] = float(noise.detach().abs().mean())
        return info

    def distill_noises(self, size: int) -> Tensor:
        """Noises for distillation: w ~ N(0, I) [size, H * A] clipped to +-b."""
        dim = self.noise_shape[0] * self.noise_shape[1]
        w = torch.randn((size, dim), generator=self.sac_generator)
        return w.clamp(-self.bound, self.bound).to(self.device)

    @torch.no_grad()
    def distill_targets(self, obs: Tensor, noise: Tensor) -> Tensor:
        """Q^A(s, pi_dp(s, w)) of both heads [2, B] for raw obs and noises [B, H * A]."""
        chunks = self.decode(obs, noise)
        return self.action_critic(self.state(obs), self.executed(chunks))

    def update_distill(self, obs: Tensor) -> dict[str, float]:
        """variant=na: one step of Q^W(s, w) towards Q^A(s, pi_dp(s, w)) at raw obs."""
        noise = self.distill_noises(obs.shape[0])
        target = self.distill_targets(obs, noise)
        q = self.noise_critic(self.state(obs), noise / self.bound)
        loss, info = compute_distill_loss(q, target)
        self.noise_critic.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.noise_critic.optimizer.step()
        return info

    def update(self, data: TrainingData, iteration: int) -> dict[str, float]:
        """``updates_per_iter`` critic steps, each followed (after the warm-up) by an actor and
        temperature step on the same states; then, for na, the distillation steps. Metrics
        are means over the iteration."""
        a = self.cfg.algo
        train_actor = iteration >= a.warmup_iterations
        logged: dict[str, list[float]] = defaultdict(list)
        timing: dict[str, float] = {}

        def log(info: dict[str, float]) -> None:
            for key, value in info.items():
                logged[key].append(value)

        tic = time.perf_counter()
        for _ in range(a.updates_per_iter):
            if self.variant == "sac":
                batch = self.noise_replay.sample(a.batch_size, data.rng, self.device)
                log(self.update_critic(batch))
            else:
                batch = data.batch(a.batch_size)
                log(self.update_action_critic(batch))
            if train_actor:
                log(self.update_actor(batch["obs"]))
        timing["perf/time_critic_actor_s"] = time.perf_counter() - tic
        if self.variant == "na":
            tic = time.perf_counter()
            for _ in range(a.distill_updates_per_iter):
                log(self.update_distill(data.batch(a.batch_size)["obs"]))
            timing["perf/time_distill_s"] = time.perf_counter() - tic
        out = {k: float(np.mean(v)) for k, v in logged.items()}
        out["actor/alpha"] = self.temperature.alpha
        return {**out, **timing}

    # ------------------------------------------------------------------ checkpoints
    def modules(self) -> dict[str, torch.nn.Module]:
        out = {
            **super().modules(),
            "noise_actor": self.actor,
            "noise_critic": self.noise_critic,
            "temperature": self.temperature,
        }
        if self.action_critic is not None:
            out["action_critic"] = self.action_critic
        return out

    def optimizers(self) -> dict[str, Any]:
        out = {
            **super().optimizers(),
            "noise_actor": self.actor_opt,
            "noise_critic": self.noise_critic.optimizer,
            "temperature": self.alpha_opt,
        }
        if self.action_critic is not None:
            out["action_critic"] = self.action_critic.optimizer
        if self.noise_replay is not None:
            out["noise_replay"] = self.noise_replay
        return out

    def generators(self) -> dict[str, torch.Generator]:
        return {**super().generators(), "sac": self.sac_generator}
