"""The interface between the loop and a fine-tuning algorithm, and the registry of algorithms.

The loop (``otpr.loop.Trainer``) owns the envs, the replay, the run directory, the schedule and
the logs; it knows no algorithm by name. Per iteration it calls::

    for each decision:  actions, info = algo.act(obs, explore=True)     # collection
                        ... env.step(actions[:, :T_a]) ...
                        algo.observe(Step(...))                          # what happened
    metrics = algo.update(data, iteration)                               # the learning step
    every eval_every:   algo.act(obs, explore=False, generator=g)        # evaluation

and saves ``algo.modules()`` (safetensors), ``algo.optimizers()`` and ``algo.generators()``
in checkpoints. Adding an algorithm is one module holding a config dataclass (a subclass of
``otpr.config.AlgoConfig``) and a subclass of :class:`Algorithm`, registered with
:func:`register_algo`, plus ``configs/algo/<name>.yaml``; the loop does not change.

Every algorithm fine-tunes the same kind of policy: this base builds the diffusion policy, its
fine-tuning optimizer and the optional average of its weights (``algo.ema_decay``), and gives
behaviour cloning (:meth:`Algorithm.pretrain_step`). An algorithm adds its own networks in its
``__init__`` after calling this one's.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from envs.base import TaskSpec
from otpr.buffer import TrainingData
from otpr.config import AlgoConfig, Config, ConfigError
from policies.diffusion import DiffusionPolicy
from policies.ema import EMA
from policies.factory import build_policy


@dataclass
class Step:
    """The outcome of one collection decision for every env member (arrays over members).

    ``reward`` is the executed part's discounted, scaled reward; ``discount`` is gamma ** (env
    steps taken); ``terminated`` is what the learners treat as terminal (a time limit counts
    only with ``task.timeout_is_terminal``); ``done`` ends the episode either way; ``next_obs``
    is the true next observation (the final one where an episode ended).
    """

    obs: np.ndarray
    actions: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    terminated: np.ndarray
    done: np.ndarray
    next_obs: np.ndarray


class Algorithm(ABC):
    """One fine-tuning method: how it acts, what it records, how it learns, what it saves.

    Args:
        cfg: the run's config; ``cfg.algo`` is this algorithm's registered config class.
        spec: the task's dimensions.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[AlgoConfig]] = AlgoConfig

    def __init__(self, cfg: Config, spec: TaskSpec) -> None:
        self.cfg = cfg
        self.spec = spec
        self.device = torch.device(cfg.device)
        t, a = cfg.task, cfg.algo
        self.act_steps = t.act_steps
        self.policy = build_policy(
            cfg.policy, spec.obs_dim, spec.action_dim, t.obs_history, t.horizon, cfg.device
        )
        self.state_dim = t.obs_history * spec.obs_dim
        self.exec_dim = t.act_steps * spec.action_dim
        self.actor_optimizer = torch.optim.Adam(self.policy.parameters(), lr=a.actor_lr)
        # The averaged copy shares the normaliser: it is fitted once, on the demos, for both.
        self.ema = EMA(self.policy, a.ema_decay) if a.ema_decay > 0 else None
        if self.ema is not None:
            self.ema.model.normalizer = self.policy.normalizer
        # collection noise (evaluation passes a generator of its own)
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)

    # ------------------------------------------------------------------ the policy
    @property
    def acting_policy(self) -> DiffusionPolicy:
        """The weights that are evaluated: the average when ``algo.ema_decay > 0``, else the
        trained network."""
        return self.policy if self.ema is None else self.ema.model

    def after_policy_step(self) -> None:
        """Fold the trained weights into the average (after every policy gradient step)."""
        if self.ema is not None:
            self.ema.update(self.policy)

    def pretrain_step(
        self, obs: Tensor, actions: Tensor, optimizer: torch.optim.Optimizer
    ) -> dict[str, float]:
        """One behaviour-cloning DSM step (unweighted) on raw (obs, chunk) pairs."""
        loss, info = self.policy.compute_dsm_loss(obs, actions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.after_policy_step()
        out = {"pretrain/dsm": loss.item()}
        out.update({f"pretrain/{k.split('/')[-1]}": v for k, v in info.items() if "/" in k})
        return out

    # ------------------------------------------------------------------ representations
    def state(self, obs: Tensor) -> Tensor:
        """Raw obs [B, T_o, obs_dim] -> normalised flat state [B, T_o * obs_dim]."""
        return self.policy.normalizer.normalize_obs(obs).flatten(1)

    def executed(self, actions: Tensor) -> Tensor:
        """Raw chunks [..., H, action_dim] -> normalised executed part [..., T_a * action_dim]."""
        part = self.policy.normalizer.normalize_action(actions[..., : self.act_steps, :])
        return part.flatten(-2)

    def transitions(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """A replay batch of raw chunk transitions as a critic sees them: normalised flat
        ``obs`` / ``next_obs`` (:meth:`state`), the normalised executed part ``act``
        (:meth:`executed`), and ``reward``, ``terminated``, ``discount`` as stored."""
        return {
            "obs": self.state(batch["obs"]),
            "act": self.executed(batch["actions"]),
            "reward": batch["reward"],
            "next_obs": self.state(batch["next_obs"]),
            "terminated": batch["terminated"],
            "discount": batch["discount"],
        }

    def critic_then_actor(self, data: TrainingData, iteration: int) -> dict[str, float]:
        """``algo.critic_updates_per_iter`` steps of ``update_critic`` on replay batches, then,
        after the warm-up, ``algo.actor_updates_per_iter`` steps of ``update_actor`` on
        :meth:`actor_pairs` (the update of IDQL and Diffusion-QL)."""
        a = self.cfg.algo
        metrics: dict[str, float] = {}
        tic = time.perf_counter()
        for _ in range(a.critic_updates_per_iter):
            metrics.update(self.update_critic(data.batch(a.critic_batch_size)))
        metrics["perf/time_critic_s"] = time.perf_counter() - tic
        if iteration < a.warmup_iterations:
            return metrics
        tic = time.perf_counter()
        for _ in range(a.actor_updates_per_iter):
            obs, act, _ = self.actor_pairs(
                data, a.actor_batch_size, a.demo_fraction, recent=a.actor_recent
            )
            metrics.update(self.update_actor(obs, act))
        metrics["perf/time_actor_s"] = time.perf_counter() - tic
        return metrics

    def actor_pairs(
        self, data: TrainingData, size: int, demo_fraction: float, recent: int = 0
    ) -> tuple[Tensor, Tensor, int]:
        """Raw (obs [B, T_o, D], chunk [B, H, A]) pairs for a policy step: ``size - n`` replay
        pairs (the ``recent`` newest only when > 0) followed by ``n = round(demo_fraction *
        size)`` pairs of ``TrainingData.demo_batch`` (demos, and with ``algo.success_to_demos``
        the run's successful episodes). Returns (obs, chunks, n)."""
        num_demo = int(round(demo_fraction * size))
        batch = data.batch(size - num_demo, recent=recent)
        obs, act = batch["obs"], batch["actions"]
        if num_demo:
            d_obs, d_act = data.demo_batch(num_demo)
            obs = torch.cat([obs, d_obs.to(obs.device)])
            act = torch.cat([act, d_act.to(act.device)])
        return obs, act, num_demo

    # ------------------------------------------------------------------ what the loop calls
    def prepare(self, demo_obs: np.ndarray, demo_act: np.ndarray) -> None:  # noqa: B027 (a hook)
        """Called once the policy's normaliser is fitted on the demo windows and again after
        weights are loaded (the normaliser comes with them). Default: nothing."""

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, explore: bool, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Chunks [B, H, A] (raw units) for raw observations [B, T_o, D], and numbers the loop
        sums over an iteration's decisions. Collection (``explore``) draws from the algorithm's
        generator; evaluation from ``generator`` (seeded per evaluation). Default: one sample
        of the acting policy."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        gen = self.generator if generator is None else generator
        chunks = self.acting_policy.sample(obs_t, num_samples=1, generator=gen)[:, 0]
        return chunks.cpu().numpy(), {}

    def observe(self, step: Step) -> None:  # noqa: B027 (an optional hook)
        """The outcome of the last collection ``act`` (the loop stores it in the replay too).
        Default: nothing."""

    @abstractmethod
    def update(self, data: TrainingData, iteration: int) -> dict[str, float]:
        """The learning step after an iteration's collection (``iteration`` counts from 0);
        returns namespaced metrics (``critic/...``, ``actor/...``, ``perf/time_*_s``)."""

    def eval_settings(self) -> dict[str, Any]:
        """What an evaluation's number depends on in this algorithm's acting, besides the
        weights and the sampler."""
        return {"eval_mode": "single", "eval_num_samples": 1}

    # ------------------------------------------------------------------ checkpoints
    def modules(self) -> dict[str, torch.nn.Module]:
        """Networks saved as safetensors: ``policy`` (trained), ``policy_ema`` (its average,
        when kept) and the algorithm's own."""
        out: dict[str, torch.nn.Module] = {"policy": self.policy}
        if self.ema is not None:
            out["policy_ema"] = self.ema.model
        return out

    def optimizers(self) -> dict[str, Any]:
        """Objects with ``state_dict`` / ``load_state_dict`` kept in ``training_state``."""
        out: dict[str, Any] = {"actor": self.actor_optimizer}
        if self.ema is not None:
            out["policy_ema"] = self.ema
        return out

    def generators(self) -> dict[str, torch.Generator]:
        """Torch generators whose states a resume restores."""
        return {"agent": self.generator}


_REGISTRY: dict[str, type[Algorithm]] = {}


def register_algo(
    name: str, config_class: type[AlgoConfig]
) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Class decorator: make ``algo=<name>`` build this class, with ``config_class`` (a
    subclass of ``AlgoConfig`` whose ``name`` defaults to ``name``) as its config schema::

        @register_algo("mine", MyConfig)
        class Mine(Algorithm): ...
    """

    if not (isinstance(config_class, type) and issubclass(config_class, AlgoConfig)):
        raise TypeError(f"register_algo({name!r}): config_class must subclass AlgoConfig")
    if config_class().name != name:
        raise ValueError(f"register_algo({name!r}): {config_class.__name__}.name must be {name!r}")

    def wrap(cls: type[Algorithm]) -> type[Algorithm]:
        if not issubclass(cls, Algorithm):
            raise TypeError(f"register_algo({name!r}): {cls.__name__} must subclass Algorithm")
        cls.name, cls.config_class = name, config_class
        _REGISTRY[name] = cls
        _store_schema(name, config_class)
        return cls

    return wrap


def _store_schema(name: str, config_class: type[AlgoConfig]) -> None:
    """Hydra's schema for ``configs/algo/<name>.yaml`` (whose defaults list names it)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="algo", name=f"schema_{name}", node=config_class)


def registered() -> list[str]:
    """The names ``algo=`` accepts."""
    return sorted(_REGISTRY)


def algo_class(name: str) -> type[Algorithm]:
    if name not in _REGISTRY:
        raise ConfigError(f"algo.name: unknown algorithm {name!r}; registered: {registered()}")
    return _REGISTRY[name]


def config_class(name: str) -> type[AlgoConfig]:
    """The config schema of a registered algorithm (``ConfigError`` naming the key if none)."""
    return algo_class(name).config_class


def make_algorithm(cfg: Config, spec: TaskSpec) -> Algorithm:
    """The registered algorithm of ``cfg.algo.name``, built for this run."""
    cls = algo_class(cfg.algo.name)
    if not isinstance(cfg.algo, cls.config_class):
        raise ConfigError(
            f"algo: algo.name={cfg.algo.name!r} needs a {cls.config_class.__name__}, got "
            f"{type(cfg.algo).__name__}"
        )
    return cls(cfg, spec)


def finite_or_raise(metrics: dict[str, float], where: str = "") -> dict[str, float]:
    """Refuse to continue on a non-finite training metric (a loss that became NaN or inf):
    ``FloatingPointError`` naming every such metric and ``where`` (e.g. ``"iteration 3"``)."""
    import math

    bad = [
        k
        for k, v in metrics.items()
        if isinstance(v, (float, np.floating)) and not math.isfinite(float(v))
    ]
    if bad:
        at = f" at {where}" if where else ""
        shown = ", ".join(f"{k}={float(metrics[k])}" for k in bad)
        raise FloatingPointError(f"non-finite training metrics{at}: {shown}; the run stops here")
    return metrics
