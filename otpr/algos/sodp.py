"""SODP (Fan et al. 2025), fine-tuning a planner pretrained on sub-optimal data: ``algo=sodp``.

The paper (``../shared/papers/000_*.txt``, sec. 3.2 and appendix B, E) pretrains one diffusion
planner on many tasks' sub-optimal (T_o states -> T_p actions) pairs without rewards or task
ids (``otpr-pretrain task=mt10``), then fine-tunes it on each task with rewards. Fine-tuning
treats the K denoising steps of a decision as a K-step MDP (eq. 9) whose only reward is the
executed chunk's return r(a^0_t) = sum of its T_a steps' rewards (discounted by ``task.gamma``;
the paper uses gamma = 1), and improves it with PPO's clipped ratio per step (eq. 12): no critic
and no advantage estimator (appendix F), the chunk's return standardised over the rollout is the
advantage of all K steps. To it is added ``algo.reg_coef`` (lambda, 1.0 in the paper) times one
regulariser, ``algo.regularizer``::

    bc    (eq. 14-15) DSM on (obs, chunk) pairs of the target buffer: the best recent episodes
    none  (eq. 12 alone; DDPO / DPPO without regularisation)
    kl    (appendix E, eq. 23, DPOK) KL(p_theta(x_{k+1} | x_k) || p_pre(x_{k+1} | x_k)) of the
          step on the minibatch's own x_k, against a frozen copy of the planner as fine-tuning
          began
    pl    (appendix E, eq. 24, DLPO) the pretraining loss (DSM) on the planner's own samples: the
          rollout's executed chunks

Target buffer (Algorithm 1, "trajectory-level buffer"): every finished training episode enters
with its return (the sum of its chunk rewards); the target set is the ``algo.target_episodes``
highest-return episodes among the ``algo.target_window`` most recent (ties: the newer), and BC
draws its pairs uniformly from them. It is seeded by ``algo.n_init`` episodes of the pretrained
planner: the policy is not updated until that many episodes have finished, so the first
N_init episodes are the pretrained planner's own rollouts (N_init in {10, 20} in the paper).

Where this follows the toolkit rather than the paper: the planner is the toolkit's VP-SDE policy
(continuous time; the paper's K = 100 discrete pretraining steps have no counterpart, its 10
DDIM steps with eta = 1 do: ``policy.num_steps``, ``policy.eta``); each step's std is floored
by ``policy.min_std`` (a step log-probability needs std > 0, as in DPPO); the step
log-probability, clip range and minibatch loop are DPPO's (``otpr/algos/chain_ppo.py``: the
per-element mean log-density over the executed rows, so one clip range ``algo.clip`` per
element); the KL is per element of the chunk (mean, not sum, over its H x A entries and over
the minibatch's steps: the sum of eq. 23 over k divided by K H A); the fine-tuning learning rate
decays by ``algo.lr_decay`` per iteration, constant by default (the paper decays it
exponentially at a rate it does not state); "several proficient trajectories generated at the
beginning of each iteration" (sec. 3.2) are not drawn: the target buffer learns from the
training episodes alone.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from envs.base import TaskSpec
from otpr.algos.base import Algorithm, Step, register_algo
from otpr.algos.chain_ppo import (
    ChainBatch,
    Regulariser,
    bc_regulariser,
    clip_schedule,
    record_chain,
    update_chain_policy,
)
from otpr.buffer import TrainingData
from otpr.config import AlgoConfig, Config, _check, _one_of
from policies.diffusion import DiffusionPolicy

REGULARIZERS = ("bc", "none", "kl", "pl")


# ---------------------------------------------------------------------- losses
def compute_kl_loss(mean: Tensor, ref_mean: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean, std^2) || N(ref_mean, std^2)) per element, averaged over every element:
    mean((mean - ref_mean)^2 / (2 std^2)). The two steps share their std (the schedule's, the
    same for both networks), so the KL of eq. 23 reduces to the squared distance of the means.
    ``mean``, ``ref_mean`` [M, H, A]; ``std`` broadcastable."""
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    return ((mean - ref_mean) ** 2 / (2 * std**2)).expand_as(mean).mean()


def compute_pl_loss(
    policy: DiffusionPolicy, obs: Tensor, chunks: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """The pretraining loss on the planner's own samples (eq. 24): the unweighted DSM loss of
    ``policy`` on raw (obs [M, T_o, D], chunk [M, H, A]) pairs it generated."""
    loss, _ = policy.compute_dsm_loss(obs, chunks, generator=generator)
    return loss


# ---------------------------------------------------------------------- target buffer
@dataclass
class TargetEpisode:
    """One finished training episode as the target buffer keeps it."""

    obs: Tensor
    """Raw observation windows of its decisions [L, T_o, D]."""
    chunks: Tensor
    """The raw chunks it executed [L, H, A]."""
    ret: float
    """Its return: the sum of its chunk rewards."""
    order: int
    """How many episodes entered before it (recency)."""


class TargetBuffer:
    """SODP's target buffer: the ``size`` highest-return episodes among the ``window`` most
    recent ones (ties: the newer wins). Its state is tensors and plain numbers."""

    def __init__(self, size: int, window: int) -> None:
        if not 1 <= size <= window:
            raise ValueError(f"TargetBuffer: need 1 <= size <= window, got {size}, {window}")
        self.size, self.window = size, window
        self.recent: deque[TargetEpisode] = deque(maxlen=window)
        self.seen = 0

    def add(self, obs: Tensor, chunks: Tensor, ret: float) -> None:
        """A finished episode (its decisions' windows and chunks, its return)."""
        if len(obs) != len(chunks) or len(obs) == 0:
            raise ValueError(
                f"TargetBuffer.add: {len(obs)} windows and {len(chunks)} chunks; need as many, > 0"
            )
        self.recent.append(TargetEpisode(obs.cpu(), chunks.cpu(), float(ret), self.seen))
        self.seen += 1

    def selected(self) -> list[TargetEpisode]:
        """The target set, best first: the top ``size`` of the window by (return, recency)."""
        ranked = sorted(self.recent, key=lambda ep: (ep.ret, ep.order), reverse=True)
        return ranked[: self.size]

    def pairs(self) -> tuple[Tensor, Tensor]:
        """The (obs [P, T_o, D], chunk [P, H, A]) pairs of the target set (P = 0 when empty)."""
        chosen = self.selected()
        if not chosen:
            return torch.zeros(0), torch.zeros(0)
        return torch.cat([ep.obs for ep in chosen]), torch.cat([ep.chunks for ep in chosen])

    def state_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "episodes": [
                {"obs": ep.obs, "chunks": ep.chunks, "ret": ep.ret, "order": ep.order}
                for ep in self.recent
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent.clear()
        for ep in state["episodes"]:
            self.recent.append(
                TargetEpisode(ep["obs"], ep["chunks"], float(ep["ret"]), int(ep["order"]))
            )
        self.seen = int(state["seen"])


class _Progress:
    """What SODP carries between iterations besides networks: the target buffer, each env
    member's episode so far, and whether the KL reference has been taken. Saved in the
    checkpoint's training state (``Algorithm.optimizers``), so a resume continues exactly."""

    def __init__(self, target: TargetBuffer, num_envs: int) -> None:
        self.target = target
        self.running: list[dict[str, list]] = [self._empty() for _ in range(num_envs)]
        self.reference_ready = False

    @staticmethod
    def _empty() -> dict[str, list]:
        return {"obs": [], "chunks": [], "reward": []}

    def observe(self, step: Step) -> None:
        """Extend each member's episode by its decision; hand finished ones to the target."""
        if len(step.done) != len(self.running):
            raise ValueError(f"SODP: {len(step.done)} env members, expected {len(self.running)}")
        obs = torch.as_tensor(np.asarray(step.obs, np.float32))
        chunks = torch.as_tensor(np.asarray(step.actions, np.float32))
        for i, ep in enumerate(self.running):
            ep["obs"].append(obs[i])
            ep["chunks"].append(chunks[i])
            ep["reward"].append(float(step.reward[i]))
            if step.done[i]:
                ret = sum(ep["reward"])
                self.target.add(torch.stack(ep["obs"]), torch.stack(ep["chunks"]), ret)
                self.running[i] = self._empty()

    def state_dict(self) -> dict[str, Any]:
        running = [
            {
                "obs": torch.stack(ep["obs"]) if ep["obs"] else torch.zeros(0),
                "chunks": torch.stack(ep["chunks"]) if ep["chunks"] else torch.zeros(0),
                "reward": list(ep["reward"]),
            }
            for ep in self.running
        ]
        return {
            "target": self.target.state_dict(),
            "running": running,
            "reference_ready": self.reference_ready,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        self.running = [
            {
                "obs": list(ep["obs"].unbind(0)) if ep["reward"] else [],
                "chunks": list(ep["chunks"].unbind(0)) if ep["reward"] else [],
                "reward": [float(r) for r in ep["reward"]],
            }
            for ep in state["running"]
        ]
        self.reference_ready = bool(state["reference_ready"])


# ---------------------------------------------------------------------- config
@dataclass
class SODPConfig(AlgoConfig):
    """SODP fine-tuning: PPO on the denoising chain with the chunk's return as reward, plus a
    regulariser. Defaults follow the paper's appendix B (lambda = 1, N_init = 10, lr 1e-5,
    batch 256) and DPPO's per-element clip."""

    name: str = "sodp"
    """sodp."""
    regularizer: str = "bc"
    """bc (the paper's: DSM on the target buffer) | none | kl (to the pretrained planner) | pl
    (the pretraining loss on the planner's own samples)."""
    reg_coef: float = 1.0
    """lambda: weight of the regulariser."""
    n_init: int = 10
    """N_init: episodes of the pretrained planner that seed the target buffer before the first
    policy update."""
    target_episodes: int = 10
    """Episodes in the target set (the best by return)."""
    target_window: int = 50
    """The target set is chosen among this many most recent episodes."""
    bc_batch_size: int = 256
    """Target pairs per behaviour-cloning term."""
    steps_per_iter: int = 19
    """Decisions per env per iteration (19 x T_a = 8 covers a 150-step Meta-World episode)."""
    warmup_iterations: int = 0
    """Iterations without policy updates (N_init already holds the first ones back)."""
    actor_lr: float = 1e-5
    """Learning rate of the planner during fine-tuning (the paper's 1e-5)."""
    lr_decay: float = 1.0
    """The learning rate of iteration i is ``actor_lr * lr_decay ** i`` (the paper decays it
    exponentially without stating the rate; 1: constant, the default)."""
    eval_deterministic: bool = True
    """Evaluate noise-free (DDIM eta 0, no floor)."""
    epochs: int = 10
    """Passes over each iteration's rollout."""
    minibatch_size: int = 256
    """(decision, denoising step) samples per policy gradient step (the paper's batch 256)."""
    clip: float = 0.01
    """Ratio clip range epsilon, per element of the executed chunk (DPPO's log-probability)."""
    denoising_gamma: float = 1.0
    """An earlier denoising step's reward is discounted by this per step before the last (the
    paper's gamma = 1: every step gets the chunk's return)."""
    norm_rewards: bool = True
    """Standardise the rollout's chunk returns."""
    target_kl: float = 1.0
    """Stop an iteration's epochs once the mean approximate KL exceeds this (0: never)."""
    max_grad_norm: float = 1.0
    """Clip of the policy gradient norm (0: none)."""
    demos_in_replay: bool = False
    """SODP learns from its rollouts and target buffer only, never from the replay."""
    buffer_capacity: int = 10_000
    """The loop's replay (unused by SODP): kept small."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of(self.regularizer, "algo.regularizer", REGULARIZERS)
        _check(self.reg_coef >= 0, "algo.reg_coef", "must be >= 0")
        _check(self.n_init >= 0, "algo.n_init", "must be >= 0")
        for key in ("target_episodes", "bc_batch_size", "epochs", "minibatch_size"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        _check(
            self.target_window >= self.target_episodes,
            "algo.target_window",
            f"must be >= algo.target_episodes={self.target_episodes}",
        )
        _check(self.clip > 0, "algo.clip", "must be > 0")
        _check(0 < self.lr_decay <= 1, "algo.lr_decay", "must be in (0, 1]")
        _check(0 <= self.denoising_gamma <= 1, "algo.denoising_gamma", "must be in [0, 1]")
        for key in ("target_kl", "max_grad_norm"):
            _check(getattr(self, key) >= 0, f"algo.{key}", "must be >= 0 (0: off)")

    def check(self, cfg: Config) -> None:
        _one_of(cfg.policy.sampler, "policy.sampler (algo=sodp)", ("ddim", "euler_maruyama"))
        _check(
            cfg.policy.min_std > 0,
            "policy.min_std",
            "must be > 0 with algo=sodp (every denoising step needs a log-probability)",
        )

    def shrink_for_debug(self) -> None:
        self.n_init = min(self.n_init, 2)
        self.epochs = min(self.epochs, 2)
        self.minibatch_size = min(self.minibatch_size, 64)
        self.bc_batch_size = min(self.bc_batch_size, 64)

    def describe(self, cfg: Config) -> dict[str, Any]:
        return {"regularizer": self.regularizer}


# ---------------------------------------------------------------------- algorithm
@register_algo("sodp", SODPConfig)
class SODP(Algorithm):
    """SODP's rollout storage, target buffer and update. The trained weights collect (PPO's
    ratio is taken against them); with ``regularizer=kl`` a frozen copy of the planner as
    fine-tuning began is the reference (saved as ``policy_reference``)."""

    def __init__(self, cfg: Config, spec: TaskSpec) -> None:
        super().__init__(cfg, spec)
        a = cfg.algo
        self.ppo_generator = torch.Generator().manual_seed(cfg.seed + 1)  # minibatch order
        self.progress = _Progress(
            TargetBuffer(a.target_episodes, a.target_window), cfg.task.num_envs
        )
        self.reference: DiffusionPolicy | None = None
        if a.regularizer == "kl":
            self.reference = copy.deepcopy(self.policy).requires_grad_(False)
        self._clear()

    def _clear(self) -> None:
        self._rows: dict[str, list[Tensor]] = {
            k: [] for k in ("obs", "xs", "log_prob", "chunks", "reward")
        }

    @property
    def target(self) -> TargetBuffer:
        return self.progress.target

    # ------------------------------------------------------------------ collection
    @torch.no_grad()
    def act(
        self, obs: np.ndarray, explore: bool, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Collection: one chunk [N, H, A] per member from the trained weights, its chain
        recorded (the first collection takes the KL reference); evaluation: one sample of the
        acting policy."""
        if not explore:
            return super().act(obs, explore, generator)
        if self.reference is not None and not self.progress.reference_ready:
            self.reference.load_state_dict(self.policy.state_dict())  # the planner as it starts
            self.progress.reference_ready = True
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        chunks, xs, log_prob = record_chain(self.policy, obs_t, self.generator, self.act_steps)
        self._rows["obs"].append(obs_t)
        self._rows["xs"].append(xs)
        self._rows["log_prob"].append(log_prob)
        self._rows["chunks"].append(chunks)
        return chunks.cpu().numpy(), {}

    def observe(self, step: Step) -> None:
        reward = np.asarray(step.reward, np.float32)
        self._rows["reward"].append(torch.as_tensor(reward, device=self.device))
        self.progress.observe(step)

    # ------------------------------------------------------------------ update
    def update(self, data: TrainingData, iteration: int) -> dict[str, float]:
        """PPO + regulariser on the iteration's rollout once ``algo.n_init`` episodes seeded
        the target buffer (and after ``algo.warmup_iterations``); clears the rollout."""
        a = self.cfg.algo
        tic = time.perf_counter()
        lr = a.actor_lr * a.lr_decay**iteration  # from the iteration alone: a resume is exact
        for group in self.actor_optimizer.param_groups:
            group["lr"] = lr
        seeded = self.target.seen >= a.n_init
        out = self.update_rollout(
            train_actor=seeded and iteration >= a.warmup_iterations, rng=data.rng
        )
        out["sodp/target_return"] = float(np.mean([ep.ret for ep in self.target.selected()] or [0]))
        out["sodp/episodes_seen"] = float(self.target.seen)
        out["sodp/lr"] = lr
        return {**out, "perf/time_actor_s": time.perf_counter() - tic}

    def update_rollout(self, train_actor: bool, rng: np.random.Generator) -> dict[str, float]:
        """Chunk returns of the recorded rollout as advantages, then ``epochs`` passes of policy
        minibatch steps (when ``train_actor``); clears the rollout. ``rng`` draws the target
        pairs of the BC term."""
        a = self.cfg.algo
        rows = {k: torch.stack(v) for k, v in self._rows.items() if v}  # [T, N, ...]
        self._clear()
        if "obs" not in rows or not train_actor:
            return {}
        reward = rows["reward"].flatten()
        adv = reward
        if a.norm_rewards and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        old = rows["log_prob"].flatten(0, 1)
        num_k = old.shape[-1]
        clips = clip_schedule(num_k, a.clip, a.clip, 1.0).to(adv)
        step_discount = a.denoising_gamma ** torch.arange(num_k - 1, -1, -1).to(adv)
        obs = rows["obs"].flatten(0, 1)
        batch = ChainBatch(obs, rows["xs"].flatten(0, 1), old, adv)
        out = update_chain_policy(
            self.policy,
            self.actor_optimizer,
            batch,
            clips,
            step_discount,
            self.act_steps,
            a,
            self.ppo_generator,
            regulariser=self.regulariser(batch, rows["chunks"].flatten(0, 1), rng),
            after_step=self.after_policy_step,
        )
        out["sodp/chunk_return"] = float(reward.mean())
        return out

    def regulariser(
        self, batch: ChainBatch, chunks: Tensor, rng: np.random.Generator
    ) -> Regulariser | None:
        """``algo.reg_coef`` times the ``algo.regularizer`` term for this rollout (None: none,
        or BC while the target buffer is empty). ``chunks`` [B, H, A]: the raw chunks the
        rollout executed (PL's samples)."""
        a, policy = self.cfg.algo, self.policy
        if a.regularizer == "none" or a.reg_coef == 0:
            return None
        if a.regularizer == "bc":
            t_obs, t_act = self.target.pairs()
            if len(t_obs) == 0:
                return None

            def draw() -> tuple[Tensor, Tensor]:
                idx = torch.as_tensor(rng.integers(0, len(t_obs), a.bc_batch_size))
                return t_obs[idx].to(self.device), t_act[idx].to(self.device)

            return bc_regulariser(policy, draw, a.reg_coef)
        if a.regularizer == "kl":
            reference = self.reference

            def kl(b: Tensor, k: Tensor, mean: Tensor, std: Tensor) -> tuple[Tensor, dict]:
                with torch.no_grad():
                    ref_mean, _ = reference.step_mean_std(batch.obs[b], batch.xs[b, k], k)
                loss = compute_kl_loss(mean, ref_mean, std)
                return a.reg_coef * loss, {"sodp/kl": float(loss.detach())}

            return kl

        def pl(b: Tensor, k: Tensor, mean: Tensor, std: Tensor) -> tuple[Tensor, dict]:
            loss = compute_pl_loss(policy, batch.obs[b], chunks[b])
            return a.reg_coef * loss, {"sodp/pl_loss": float(loss.detach())}

        return pl

    # ------------------------------------------------------------------ checkpoints
    def modules(self) -> dict[str, torch.nn.Module]:
        out = super().modules()
        if self.reference is not None:
            out["policy_reference"] = self.reference
        return out

    def optimizers(self) -> dict[str, Any]:
        return {**super().optimizers(), "sodp_progress": self.progress}

    def generators(self) -> dict[str, torch.Generator]:
        return {**super().generators(), "ppo": self.ppo_generator}
