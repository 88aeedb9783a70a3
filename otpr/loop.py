"""The offline-to-online loop: pretrain by behaviour cloning, then fine-tune with OTPR.

One iteration (OTPR Algorithm 1, with the potentials warm-started instead of rebuilt)::

    collect   steps_per_iter decisions per env: L candidates per state in one batched call,
              one resampled by the guidance weights, T_a of its H actions executed
    critic    critic_updates_per_iter IQL steps on replay        (every iteration)
    ot        ot.steps_per_iter dual steps on replay states x actions   (every iteration, H only)
    actor     actor_updates_per_iter guidance-weighted DSM steps on replay (+ demo) pairs; pairs
              whose state leaves the demos' span are skipped; with success_to_demos the
              demo part also draws pairs of successful online episodes
    eval      every eval_every iterations, on a fixed evaluation seed range

Resume: a run directory that holds ``checkpoints/last`` continues from it (networks,
optimizers, RNG states, replay, counters, metrics truncated to the checkpoint). Episodes that
were in progress when the run stopped are restarted from a fresh reset. ``run`` holds the run
directory's lock (``checkpoint.RunLock``) while it trains, so a second process is refused.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import envs
from otpr import checkpoint as ckpt_io
from otpr.agent import OTPRAgent, finite_or_raise
from otpr.buffer import ReplayBuffer
from otpr.config import Config, to_dict
from otpr.data import make_windows
from otpr.demos import demo_transitions, load_demos, task_spec_of
from otpr.logger import MetricsLogger
from otpr.ppo import ChainPPO


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Owns the agent, the replay, the envs and the run directory of one run."""

    def __init__(self, cfg: Config, run_dir: str | Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        t = cfg.task
        self.spec = task_spec_of(cfg)
        self.demos = load_demos(cfg, self.spec, progress=cfg.progress)
        self.agent = OTPRAgent(cfg, self.spec)
        # algo=dppo: the policy is updated by PPO through its denoising chain (otpr/ppo.py)
        # instead of OTPR's weighted DSM; the replay still records every transition.
        self.ppo = (
            ChainPPO(cfg, self.agent.state, self.agent.state_dim)
            if cfg.algo.name == "dppo"
            else None
        )
        self.demo_obs, self.demo_act = make_windows(self.demos, t.obs_history, t.horizon)
        self.agent.policy.normalizer.fit(self.demo_obs, self.demo_act)
        self._set_keypoints()
        self.buffer = ReplayBuffer(
            cfg.algo.buffer_capacity,
            (t.obs_history, self.spec.obs_dim),
            (t.horizon, self.spec.action_dim),
        )
        if cfg.algo.demos_in_replay:
            demo = demo_transitions(self.demos, t.obs_history, t.horizon, t.act_steps, t.gamma)
            demo["reward"] = demo["reward"] * t.reward_scale
            self.buffer.add(**demo)
        self.rng = np.random.default_rng(cfg.seed)
        self.state: dict[str, Any] = {
            "phase": "init",
            "iteration": 0,
            "env_steps": 0,
            "episodes": 0,
            "pretrain_steps": 0,
            "wall_time_s": 0.0,
            "evals": [],
            "success_ids": [],
        }
        self.logger = MetricsLogger(
            self.run_dir, cfg.tensorboard, to_dict(cfg) if cfg.wandb else None
        )
        self._train_env = None
        self._eval_env = None
        self._obs: np.ndarray | None = None
        self._ep_return: np.ndarray | None = None
        self._ep_ids: list[list[int]] = []
        self._t0 = time.time()
        self._wall_at_start = 0.0

    # ------------------------------------------------------------------ setup helpers
    def _set_keypoints(self) -> None:
        obs = torch.as_tensor(self.demo_obs, device=self.agent.device)
        act = torch.as_tensor(self.demo_act, device=self.agent.device)
        self.agent.potentials.set_keypoints(self.agent.state(obs), self.agent.executed(act))

    def _make_env(self, num_envs: int, seed: int, retry_failed_starts: int = 0) -> Any:
        t = self.cfg.task
        return envs.make(
            t.name,
            num_envs=num_envs,
            seed=seed,
            obs_history=t.obs_history,
            act_steps=t.act_steps,
            max_episode_steps=t.max_episode_steps,
            vectorization=t.vectorization,
            retry_failed_starts=retry_failed_starts,
            **t.env_kwargs,
        )

    @property
    def train_env(self) -> Any:
        if self._train_env is None:
            n = self.cfg.task.num_envs
            # Training members are seeded seed * num_envs + i: disjoint across run seeds.
            seed = self.cfg.seed * n
            self._train_env = self._make_env(n, seed, self.cfg.algo.retry_failed_starts)
            self._obs, _ = self._train_env.reset(seed=seed + 7919 * self.state["episodes"])
            self._ep_return = np.zeros(n)
            self._ep_ids = [[] for _ in range(n)]
        return self._train_env

    @property
    def eval_env(self) -> Any:
        if self._eval_env is None:
            self._eval_env = self._make_env(self.cfg.task.eval_num_envs, self.cfg.task.eval_seed)
        return self._eval_env

    def close(self) -> None:
        for env in (self._train_env, self._eval_env):
            if env is not None:
                env.close()
        self.logger.close()

    # ------------------------------------------------------------------ checkpoints
    def save(self, evaluated: bool = False) -> Path:
        """A full checkpoint (resume point), or with ``evaluated`` the weights alone under
        ``checkpoints/evaluated/`` (``ckpt_io.save_evaluated``)."""
        self.state["wall_time_s"] = self.wall_time()
        meta = {
            "task": self.cfg.task.name,
            "suite": self.spec.suite,
            "obs_dim": self.spec.obs_dim,
            "action_dim": self.spec.action_dim,
            "obs_horizon": self.cfg.task.obs_history,
            "horizon": self.cfg.task.horizon,
            "act_steps": self.cfg.task.act_steps,
            "obs_keys": list(self.spec.obs_keys),
            "max_episode_steps": self.cfg.task.max_episode_steps,
            "phase": self.state["phase"],
            "iteration": self.state["iteration"],
            "env_steps": self.state["env_steps"],
        }
        name = f"step_{self.state['env_steps']:012d}_it{self.state['iteration']:05d}"
        modules = {**self.agent.modules(), **(self.ppo.modules() if self.ppo else {})}
        if evaluated:
            return ckpt_io.save_evaluated(
                self.run_dir, name, to_dict(self.cfg), meta, modules, self.state
            )
        rng = ckpt_io.rng_state(self._generators())
        rng["loop_numpy"] = self.rng.bit_generator.state
        return ckpt_io.save_checkpoint(
            self.run_dir,
            name,
            to_dict(self.cfg),
            meta,
            modules,
            self._optimizers(),
            rng,
            self.buffer.state_dict(),
            self.state,
        )

    def restore(self, path: str | Path, weights_only: bool = False) -> None:
        """Load a checkpoint: weights only (start fine-tuning from a pretrained policy, its acting
        weights when this run keeps no average of its own, its trained ones with
        ``weights=trained``) or all (resume)."""
        ckpt = ckpt_io.resolve(path)
        meta = ckpt_io.read_meta(ckpt)
        for key in ("obs_dim", "action_dim"):
            if meta[key] != getattr(self.spec, key):
                raise ValueError(
                    f"{ckpt}: checkpoint {key}={meta[key]} does not match task "
                    f"{self.cfg.task.name!r} ({getattr(self.spec, key)})"
                )
        modules = self.agent.modules()
        ema = self.agent.ema
        acting = ckpt_io.acting_weights(ckpt)  # the weights that were evaluated
        source = ckpt_io.policy_weights(ckpt, self.cfg.weights)  # those a new run starts from
        has_average = acting == "policy_ema"
        if ema is not None and not has_average and not weights_only:
            raise ValueError(
                f"{ckpt}: no policy_ema.safetensors, but this run has algo.ema_decay="
                f"{self.cfg.algo.ema_decay}; resume it with the config it was saved with"
            )
        # A weights-only start puts the checkpoint's `weights` (as load_policy reads them) in
        # the trained network; this run's own average continues the checkpoint's only when that
        # run kept one and its acting weights are asked for, else it starts at the loaded ones.
        continue_average = ema is not None and has_average and self.cfg.weights == "acting"
        if weights_only and not continue_average:
            modules.pop("policy_ema", None)
            modules[source] = modules.pop("policy")
        if self.ppo is not None and not weights_only:
            modules.update(self.ppo.modules())  # a pretrained policy comes without V: fresh V
        ckpt_io.load_modules(ckpt, modules)
        if ema is not None and weights_only:
            if not continue_average:
                ema.reset_to(self.agent.policy)
            # the loaded weights are trained ones, not a random start the warm-up forgets fast
            ema.end_warmup()
        self._set_keypoints()
        if weights_only:
            # This run starts at these weights: keep their evaluation (the one at the
            # checkpoint's own env step; 0 for a pretrained checkpoint) as its starting level,
            # and only if it was measured as this run measures and of the weights loaded (an
            # average's evaluation says nothing of the trained weights next to it).
            loop = ckpt_io.read_loop_state(ckpt, missing_ok=True)
            at, settings = loop.get("env_steps", 0), self.eval_settings()
            kept = [
                dict(e, env_steps=0, iteration=0)
                for e in loop.get("evals", [])
                if e["env_steps"] == at and e.get("eval_settings") == settings
            ]
            self.state["evals"] = kept[-1:] if source == acting else []
            self.state["phase"] = "pretrained"
            return
        ts = ckpt_io.load_training_state(ckpt)
        for name, opt in self._optimizers().items():
            opt.load_state_dict(ts["optimizers"][name])
        ckpt_io.set_rng_state(ts["rng"], self._generators())
        self.rng.bit_generator.state = ts["rng"]["loop_numpy"]
        if ts["replay"] is not None:
            self.buffer.load_state_dict(ts["replay"])
        self.state = ts["loop"]
        self.state.setdefault("success_ids", [])  # checkpoints from before success_to_demos
        self._wall_at_start = float(self.state.get("wall_time_s", 0.0))
        self._t0 = time.time()
        self.logger.truncate_after(self.state["env_steps"])

    def _optimizers(self) -> dict[str, Any]:
        """What ``training_state`` keeps of the agent and, with algo=dppo, of V."""
        return {**self.agent.optimizers(), **(self.ppo.optimizers() if self.ppo else {})}

    def _generators(self) -> dict[str, torch.Generator]:
        out = {"agent": self.agent.generator, "potentials": self.agent.potentials.generator}
        if self.ppo is not None:
            out["ppo"] = self.ppo.generator  # minibatch order
        return out

    def wall_time(self) -> float:
        return self._wall_at_start + time.time() - self._t0

    # ------------------------------------------------------------------ phases
    def behaviour_cloning(self) -> None:
        """``algo.pretrain_steps`` DSM steps on the demo windows (cosine-decayed AdamW)."""
        a = self.cfg.algo
        policy = self.agent.policy
        opt = torch.optim.AdamW(policy.parameters(), lr=a.pretrain_lr, weight_decay=1e-6)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(a.pretrain_steps, 1))
        obs = torch.as_tensor(self.demo_obs, device=self.agent.device)
        act = torch.as_tensor(self.demo_act, device=self.agent.device)
        bar = tqdm(
            range(a.pretrain_steps), desc="pretrain", disable=not self.cfg.progress, leave=False
        )
        for step in bar:
            idx = torch.as_tensor(self.rng.integers(0, len(obs), a.pretrain_batch_size))
            info = self.agent.pretrain_step(obs[idx], act[idx], opt)
            sched.step()
            if step % 100 == 0 or step == a.pretrain_steps - 1:
                finite_or_raise(info)
                self.logger.log(
                    {"env_steps": 0, "iteration": 0, "pretrain_step": step, **info}, step=step
                )
        self.state["pretrain_steps"] = a.pretrain_steps
        self.state["phase"] = "pretrained"

    def pretrain(self) -> dict[str, float]:
        """Behaviour cloning, then the pretrained evaluation and a checkpoint."""
        self.behaviour_cloning()
        result = self.evaluate_point()
        self.save()
        return result

    def evaluate_point(self) -> dict[str, float]:
        """A point of the run's curve: ``evaluate``, then (``algo.keep_evaluated``) the weights
        it measured, kept under ``checkpoints/evaluated/``."""
        result = self.evaluate()
        if self.cfg.algo.keep_evaluated:
            self.save(evaluated=True)
        return result

    def eval_settings(self) -> dict[str, Any]:
        """What an evaluation's number depends on besides the weights (stored with each record,
        so a fine-tuning run re-measures a pretrained level taken under other settings)."""
        t, a, p = self.cfg.task, self.cfg.algo, self.cfg.policy
        policy = self.agent.acting_policy
        with self._evaluation_sampling(policy):  # the sampler as evaluation runs it
            eta, min_std = policy.eta, policy.min_std
        settings = {
            "protocol": 2,  # 2: policy noise seeded from eval_seed (session 3)
            "eval_seed": t.eval_seed,
            "eval_episodes": t.eval_episodes,
            "eval_num_envs": t.eval_num_envs,  # member i runs seed + i: which episodes are drawn
            "eval_mode": a.eval_mode,
            "eval_num_samples": a.eval_num_samples if a.eval_mode == "best" else 1,
            "sampler": [p.sampler, p.num_steps, eta],
            "max_episode_steps": t.max_episode_steps,
        }
        if a.ema_decay > 0:  # the averaged weights act (absent: the trained ones, as before)
            settings["ema_decay"] = a.ema_decay
        if p.temperature != 1.0:  # absent: temperature 1, as before the setting existed
            settings["temperature"] = p.temperature
        if min_std > 0:  # absent: no floor, as before the setting existed
            settings["min_std"] = min_std
        return settings

    def _evaluation_sampling(self, policy: Any) -> Any:
        """The context evaluation samples in: noise-free under ``algo.eval_deterministic``."""
        return policy.deterministic() if self.cfg.algo.eval_deterministic else nullcontext()

    def evaluate(self) -> dict[str, float]:
        """Success rate, return and subtasks over ``eval_episodes`` on the fixed eval seeds
        (env and policy noise both seeded from ``task.eval_seed``)."""
        t = self.cfg.task
        env = self.eval_env
        n = t.eval_num_envs
        quota = math.ceil(t.eval_episodes / n)
        obs, _ = env.reset(seed=t.eval_seed)
        # Policy noise seeded per evaluation too: an evaluation is a function of the weights.
        generator = torch.Generator(device="cpu").manual_seed(t.eval_seed)
        done_count = np.zeros(n, int)
        ret = np.zeros(n)
        results: list[tuple[int, int, float, float, float]] = []
        policy = self.agent.acting_policy
        policy.eval()
        with self._evaluation_sampling(policy):
            while (done_count < quota).any():
                actions, _ = self.agent.act(obs, explore=False, generator=generator)
                obs, reward, term, trunc, info = env.step(actions[:, : t.act_steps])
                ret += reward
                for i in np.flatnonzero(term | trunc):
                    if done_count[i] < quota:
                        fin = info["final_info"]
                        results.append(
                            (
                                int(done_count[i]),
                                int(i),
                                float(fin["success"][i]),
                                float(ret[i]),
                                float(fin["num_subtasks"][i]),
                            )
                        )
                        done_count[i] += 1
                    ret[i] = 0.0
        policy.train()
        results = sorted(results)[: t.eval_episodes]
        arr = np.asarray([r[2:] for r in results])
        out = {
            "eval/success": float(arr[:, 0].mean()),
            "eval/return": float(arr[:, 1].mean()),
            "eval/num_subtasks": float(arr[:, 2].mean()),
            "eval/episodes": len(results),
        }
        record = {"env_steps": self.state["env_steps"], "iteration": self.state["iteration"], **out}
        self.state["evals"].append(dict(record, eval_settings=self.eval_settings()))
        self.logger.log(dict(record, wall_time_s=self.wall_time()), step=self.state["env_steps"])
        return out

    def collect(self) -> dict[str, float]:
        """``steps_per_iter`` decisions in every training env, stored as chunk transitions."""
        t, a = self.cfg.task, self.cfg.algo
        env = self.train_env
        gammas = t.gamma ** np.arange(t.act_steps)
        successes, returns, timing = [], [], defaultdict(float)
        fresh_successes = []  # episodes on a fresh start (algo.retry_failed_starts)
        fallback = 0.0
        for _ in range(a.steps_per_iter):
            tic = time.perf_counter()
            if self.ppo is not None:
                # the trained weights collect: PPO's ratio is taken against them
                actions = self.ppo.act(self.agent.policy, self._obs, self.agent.generator)
                info = {}
            else:
                actions, info = self.agent.act(self._obs, explore=True)
            timing["perf/time_sample_s"] += time.perf_counter() - tic
            fallback += info.get("sampler/uniform_fallback", 0.0)
            tic = time.perf_counter()
            next_obs, reward, term, trunc, infos = env.step(actions[:, : t.act_steps])
            timing["perf/time_env_s"] += time.perf_counter() - tic
            done = term | trunc
            learn_term = term | (trunc & t.timeout_is_terminal)  # what the learners see
            rewards = (
                np.array(infos["rewards"])
                if "rewards" in infos
                else np.zeros((len(done), t.act_steps))
            )
            steps = np.array(infos["steps"]) if "steps" in infos else np.zeros(len(done), int)
            true_next = next_obs.copy()
            for i in range(len(done)):  # the rows buffer.add below writes, the last one included
                self._ep_ids[i].append(self.buffer.total_added + i)
            if done.any():
                fin = infos["final_info"]
                for i in np.flatnonzero(done):
                    rewards[i] = fin["rewards"][i]
                    steps[i] = fin["steps"][i]
                    true_next[i] = infos["final_obs"][i]
                    successes.append(float(fin["success"][i]))
                    if "attempt" in fin and fin["attempt"][i] == 0:
                        fresh_successes.append(float(fin["success"][i]))
                    returns.append(self._ep_return[i] + reward[i])
                    if a.success_to_demos and fin["success"][i]:
                        self.state["success_ids"].extend(self._ep_ids[i])
                    self._ep_ids[i] = []
            disc_reward = (rewards * gammas[None]).sum(1) * t.reward_scale
            if self.ppo is not None:
                self.ppo.record(disc_reward, t.gamma**steps, learn_term, done, true_next)
            self.buffer.add(
                obs=self._obs,
                actions=actions,
                reward=disc_reward,
                discount=t.gamma ** steps.astype(np.float64),
                next_obs=true_next,
                terminated=learn_term.astype(np.float32),
            )
            self._ep_return = np.where(done, 0.0, self._ep_return + reward)
            self.state["env_steps"] += int(steps.sum())
            self.state["episodes"] += int(done.sum())
            self._obs = next_obs
        out = dict(timing)
        out["sampler/uniform_fallback"] = fallback
        if successes:
            out["train/success"] = float(np.mean(successes))
            out["train/return"] = float(np.mean(returns))
            out["train/episodes"] = len(successes)
        if fresh_successes:
            out["train/first_try_success"] = float(np.mean(fresh_successes))
            out["train/first_try_episodes"] = len(fresh_successes)
        return out

    def _batch(self, size: int, recent: int = 0) -> dict[str, torch.Tensor]:
        return self.buffer.sample(size, self.rng, self.agent.device, recent=recent)

    def _demo_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(obs, chunk) pairs drawn uniformly from the demo windows and, with
        ``algo.success_to_demos``, the replay pairs of successful online episodes."""
        ids = self.state["success_ids"]
        if ids and self.buffer.total_added - ids[0] > self.buffer.capacity:
            # drop pairs the ring buffer has overwritten (ids are in insertion order)
            oldest = self.buffer.total_added - self.buffer.capacity
            self.state["success_ids"] = ids = [k for k in ids if k >= oldest]
        num_demo = len(self.demo_obs)
        idx = self.rng.integers(0, num_demo + len(ids), size)
        own = idx >= num_demo
        obs = torch.as_tensor(self.demo_obs[np.where(own, 0, idx)])
        act = torch.as_tensor(self.demo_act[np.where(own, 0, idx)])
        if own.any():
            rows = np.array([ids[k] for k in idx[own] - num_demo]) % self.buffer.capacity
            obs[torch.as_tensor(own)] = torch.as_tensor(self.buffer.data["obs"][rows])
            act[torch.as_tensor(own)] = torch.as_tensor(self.buffer.data["actions"][rows])
        return obs, act

    def update(self) -> dict[str, float]:
        """Critic and potentials, then (after warm-up) the actor; with algo=dppo, V and (after
        warm-up) PPO on the iteration's rollout."""
        a, o = self.cfg.algo, self.cfg.ot
        if self.ppo is not None:
            tic = time.perf_counter()
            train_actor = self.state["iteration"] >= a.warmup_iterations
            out = self.ppo.update(
                self.agent.policy,
                self.agent.actor_optimizer,
                train_actor,
                bc_batch=lambda: self._demo_batch(a.ppo_bc_batch_size),
                after_step=self.agent.after_policy_step,
            )
            return {**out, "perf/time_actor_s": time.perf_counter() - tic}
        metrics: dict[str, float] = {}
        timing = defaultdict(float)
        tic = time.perf_counter()
        for _ in range(a.critic_updates_per_iter):
            metrics.update(self.agent.update_critic(self._batch(a.critic_batch_size)))
        timing["perf/time_critic_s"] = time.perf_counter() - tic
        if a.guidance == "H":
            # The potentials track the critic from the first iteration, so that H is fitted
            # (not 50 steps old) when the actor starts using it after the warm-up.
            tic = time.perf_counter()
            for _ in range(o.steps_per_iter):
                s = self._batch(o.batch_size)["obs"]
                act = self._batch(o.batch_size)["actions"]
                metrics.update(self.agent.update_potentials(s, act))
            timing["perf/time_potentials_s"] = time.perf_counter() - tic
        if self.state["iteration"] < a.warmup_iterations:
            return {**metrics, **timing}
        tic = time.perf_counter()
        n_demo = int(round(a.demo_fraction * a.actor_batch_size))
        n_own = a.actor_batch_size - n_demo
        if a.actor_targets == "resampled":
            states = self._batch(a.actor_target_states, recent=a.actor_recent)["obs"]
            t_obs, t_act, t_w = self.agent.resampled_targets(states)
            timing["perf/time_actor_targets_s"] = time.perf_counter() - tic
        for _ in range(a.actor_updates_per_iter):
            if a.actor_targets == "resampled":
                idx = torch.as_tensor(self.rng.integers(0, len(t_obs), n_own))
                obs, act, w = t_obs[idx], t_act[idx], t_w[idx]
            else:
                batch = self._batch(n_own, recent=a.actor_recent)
                obs, act, w = batch["obs"], batch["actions"], None
            if n_demo:
                d_obs, d_act = self._demo_batch(n_demo)
                d_obs, d_act = d_obs.to(obs.device), d_act.to(act.device)
                obs, act = torch.cat([obs, d_obs]), torch.cat([act, d_act])
                if w is not None:
                    w = torch.cat([w, self.agent.pair_weights(d_obs, d_act)])
            # replay targets: weights of the whole (replay + demo) batch in one call
            metrics.update(self.agent.update_actor(obs, act, w))
        timing["perf/time_actor_s"] = time.perf_counter() - tic
        return {**metrics, **timing}

    def finetune(self) -> None:
        a = self.cfg.algo
        bar = tqdm(
            total=a.iterations,
            initial=self.state["iteration"],
            desc="fine-tune",
            disable=not self.cfg.progress,
            leave=False,
        )
        while self.state["iteration"] < a.iterations:
            tic = time.time()
            steps_before = self.state["env_steps"]
            metrics = self.collect()
            metrics.update(self.update())
            finite_or_raise(metrics)
            self.state["iteration"] += 1
            it = self.state["iteration"]
            elapsed = time.time() - tic
            metrics["perf/env_steps_per_s"] = (self.state["env_steps"] - steps_before) / elapsed
            metrics["perf/iteration_s"] = elapsed
            record = {"env_steps": self.state["env_steps"], "iteration": it, **metrics}
            self.logger.log(
                dict(record, wall_time_s=self.wall_time()), step=self.state["env_steps"]
            )
            self.state["phase"] = "finetune"
            if it % a.eval_every == 0 or it == a.iterations:
                res = self.evaluate_point()
                bar.set_postfix(success=f"{res['eval/success']:.2f}")
            if it % a.checkpoint_every == 0 or it == a.iterations:
                self.save()
            bar.update(1)
        bar.close()
        self.state["phase"] = "done"

    def summary(self) -> dict[str, Any]:
        evals = self.state["evals"]
        pre = next((e for e in evals if e["env_steps"] == 0), None)
        final = evals[-1] if evals else None
        last_settings = final.get("eval_settings") if final else None
        guided = {  # what OT guidance the run used; DPPO uses none
            "guidance": self.cfg.algo.guidance,
            "masked": self.cfg.ot.masked,
            "actor_targets": self.cfg.algo.actor_targets,
        }
        return {
            "task": self.cfg.task.name,
            "algo": self.cfg.algo.name,
            **(guided if self.ppo is None else {}),
            "seed": self.cfg.seed,
            "num_demos": len(self.demos),
            "demo_success": float(np.mean([bool(ep.success) for ep in self.demos])),
            "pretrained_success": pre["eval/success"] if pre else None,
            "final_success": final["eval/success"] if final else None,
            "pretrained_return": pre["eval/return"] if pre else None,
            "final_return": final["eval/return"] if final else None,
            "best_success": max(e["eval/success"] for e in evals) if evals else None,
            # evaluations measured otherwise than the last one (a run resumed with other
            # evaluation settings): their numbers do not compare with the final one
            "evals_under_other_settings": [
                e["env_steps"] for e in evals if e.get("eval_settings") != last_settings
            ],
            "env_steps": self.state["env_steps"],
            "iterations": self.state["iteration"],
            "eval_episodes": self.cfg.task.eval_episodes,
            "wall_time_s": round(self.wall_time(), 1),
        }


def run(
    cfg: Config, run_dir: str | Path, stages: tuple[str, ...] = ("pretrain", "finetune")
) -> dict[str, Any]:
    """Run the configured stages in ``run_dir`` (resuming if it holds a checkpoint)."""
    from otpr.report import write_report

    lock = ckpt_io.RunLock(run_dir)  # one training process per run directory
    lock.acquire()
    try:
        trainer = Trainer(cfg, run_dir)
        try:
            (trainer.run_dir / "config.yaml").write_text(_yaml(to_dict(cfg)))
            has_ckpt = (trainer.run_dir / "checkpoints" / "last").exists()
            if cfg.resume and has_ckpt:
                trainer.restore(trainer.run_dir)
            elif cfg.checkpoint is not None:
                trainer.restore(cfg.checkpoint, weights_only=True)
            if "pretrain" in stages and trainer.state["phase"] == "init":
                trainer.pretrain()
            if "finetune" in stages and cfg.algo.iterations > 0:
                if trainer.state["phase"] == "init":
                    raise ValueError(
                        "fine-tuning needs a pretrained policy: run the pretrain stage or pass "
                        "checkpoint=<pretrained run dir>"
                    )
                if not any(e["env_steps"] == 0 for e in trainer.state["evals"]):
                    trainer.evaluate_point()
                trainer.finetune()
            summary = trainer.summary()
            write_report(trainer.run_dir, summary)
            return summary
        finally:
            trainer.close()
    finally:
        lock.release()


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
